"""Settings (engine command, model, device and the model's load options) stored in QgsSettings, and the dialog
that edits them: "Browse…" for the engine program and for a checkpoint folder, what each named model is for (the
demo's notice included), and "Test engine", which runs the configured engine in the background and says its
version, its device and which models are downloaded — or, in one line, why it cannot run."""

from __future__ import annotations

import os
import shlex

from qgis.core import Qgis, QgsApplication, QgsMessageLog, QgsSettings, QgsTask
from qgis.gui import QgsAuthConfigSelect
from qgis.PyQt.QtCore import QCoreApplication, Qt
from qgis.PyQt.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
)

from .core.engine_client import SAM3_OUTPUTS, EngineSettings
from .core.engine_probe import PROBE_TIMEOUT, ProbeReport, probe_engine
from .core.known_models import MODEL_ALIASES, MODEL_GSD, MODEL_USES, format_range, model_notice
from .core.messages import LOG_TAG, short_message

_KEY = "segearth/"
DEVICES = ("auto", "cpu", "cuda", "mps")
WARNING_STYLE = "color: #b35900; font-weight: bold;"  # the demo's notice, a GSD far from the model's


def tr(text: str) -> str:
    return QCoreApplication.translate("SegEarth", text)


DTYPES = ("", "float32", "bfloat16", "float16")  # "": the engine's default for the device
# Prompt templates of the backends that take one (SegEarth-R1, SegEarth-R2); "": the checkpoint's own.
TEMPLATES = ("", "referring", "reasoning", "training", "training-vision-tags", "llama2", "llama2-question")
SAM3_CHOICES = ("", *SAM3_OUTPUTS)  # "": the engine's default (instances)
_NUMBERS = {"batch_size": int, "score_threshold": float, "cache_mb": float, "presence_threshold": float}


def _number(value, kind):
    try:
        return None if value in (None, "") else kind(value)
    except (TypeError, ValueError):
        return None


def load_engine_settings() -> EngineSettings:
    settings = QgsSettings()
    default = EngineSettings()
    options = {name: _number(settings.value(_KEY + name, ""), kind) for name, kind in _NUMBERS.items()}
    return EngineSettings(
        command=str(settings.value(_KEY + "engine_command", default.command)),
        model=str(settings.value(_KEY + "model", default.model)),
        device=str(settings.value(_KEY + "device", default.device)),
        dtype=str(settings.value(_KEY + "dtype", "")) or None,
        template=str(settings.value(_KEY + "template", "")) or None,
        sam3_output=str(settings.value(_KEY + "sam3_output", "")) or None,
        authcfg=str(settings.value(_KEY + "authcfg", "")) or None,
        **options,
    )


def save_engine_settings(engine: EngineSettings) -> None:
    settings = QgsSettings()
    settings.setValue(_KEY + "engine_command", engine.command)
    settings.setValue(_KEY + "model", engine.model)
    settings.setValue(_KEY + "device", engine.device)
    for name in EngineSettings.LOAD_OPTIONS:
        value = getattr(engine, name)
        settings.setValue(_KEY + name, "" if value is None else str(value))
    settings.setValue(_KEY + "authcfg", engine.authcfg or "")  # only the id: the token stays in the auth database


class SettingsDialog(QDialog):
    """Edits :class:`EngineSettings`; ``engine_settings()`` returns what the user entered."""

    def __init__(self, parent=None, current: EngineSettings | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(tr("SegEarth settings"))
        current = current or load_engine_settings()
        self.probe_task: QgsTask | None = None
        self.probe_timeout = PROBE_TIMEOUT
        self.probe: ProbeReport | None = None
        layout = QFormLayout(self)
        explanation = QLabel(tr("The model runs in a separate engine process (install it with "
                                "'pip install segearth-geo'); QGIS never loads torch."))
        explanation.setWordWrap(True)
        layout.addRow(explanation)
        self._add_engine_and_model(layout, current)
        self.device_combo = QComboBox()
        self.device_combo.setEditable(True)
        self.device_combo.addItems(list(DEVICES))
        self.device_combo.setCurrentText(current.device)
        layout.addRow(tr("Device"), self.device_combo)
        self._add_load_options(layout, current)
        self.auth_select = QgsAuthConfigSelect(self)
        self.auth_select.setConfigId(current.authcfg or "")
        self.auth_select.setToolTip(tr("Model server only (model http://HOST:PORT or https://HOST:PORT): the "
                                       "authentication configuration (type 'Esri token', or 'Basic' with the token "
                                       "as password) holding the server's token."))
        layout.addRow(tr("Server token"), self.auth_select)
        self.test_button = QPushButton(tr("Test engine"))
        self.test_button.setToolTip(tr("Run the engine command (--version, models --json) and show its version, "
                                       "device and downloaded models"))
        self.test_button.clicked.connect(self.test_engine)
        self.probe_label = QLabel(tr("Not tested yet."))
        self.probe_label.setWordWrap(True)
        self.probe_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        test_row = QHBoxLayout()
        test_row.addWidget(self.test_button)
        test_row.addWidget(self.probe_label, 1)
        layout.addRow(test_row)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addRow(buttons)
        self.show_model_hint()

    def _add_engine_and_model(self, layout: QFormLayout, current: EngineSettings) -> None:
        """The engine command and the model, each with "Browse…", and the line saying what the model is for."""
        self.command_edit = QLineEdit(current.command)
        self.command_edit.setToolTip(tr("Program that runs the engine, e.g. 'segearth-geo' or "
                                        "'/path/to/python -m segearth_geo_cli.main'."))
        self.command_browse = QPushButton(tr("Browse…"))
        self.command_browse.setToolTip(tr("Choose the segearth-geo program (in the engine's environment's bin/ "
                                          "or Scripts\\ folder)"))
        self.command_browse.clicked.connect(self.browse_command)
        layout.addRow(tr("Engine command"), _row(self.command_edit, self.command_browse))
        self.model_combo = QComboBox()  # the known models, or any other spec typed in
        self.model_combo.setEditable(True)
        self.model_combo.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        for index, alias in enumerate(MODEL_ALIASES):
            self.model_combo.addItem(alias)
            self.model_combo.setItemData(index, _model_tooltip(alias, None), Qt.ItemDataRole.ToolTipRole)
        self.model_combo.setCurrentText(current.model)
        self.model_combo.setToolTip(tr("A known model from the list, or type a checkpoint folder, a Hugging Face "
                                       "repo id, 'file.py:factory', or a model server: https://HOST:PORT."))
        self.model_edit = self.model_combo.lineEdit()
        self.model_browse = QPushButton(tr("Browse…"))
        self.model_browse.setToolTip(tr("Choose a checkpoint folder (it holds config.json)"))
        self.model_browse.clicked.connect(self.browse_model)
        layout.addRow(tr("Model"), _row(self.model_combo, self.model_browse))
        self.model_hint = QLabel()
        self.model_hint.setWordWrap(True)
        layout.addRow("", self.model_hint)
        self.model_combo.currentTextChanged.connect(lambda _text: self.show_model_hint())

    # -- browse ---------------------------------------------------------------------------------
    def browse_command(self) -> None:
        start = os.path.dirname(self.engine_settings().command.strip().strip('"'))
        path, _ = QFileDialog.getOpenFileName(self, tr("The segearth-geo program"), start)
        if path:
            needs_quotes = any(c.isspace() for c in path)
            self.command_edit.setText((f'"{path}"' if os.name == "nt" else shlex.quote(path)) if needs_quotes else path)

    def browse_model(self) -> None:
        current = self.model_combo.currentText().strip()
        folder = QFileDialog.getExistingDirectory(self, tr("A checkpoint folder"),
                                                  current if os.path.isdir(current) else "")
        if folder:
            self.model_combo.setCurrentText(folder)

    # -- what the model is ----------------------------------------------------------------------
    def show_model_hint(self) -> None:
        """The line under the model: what a named model is for (the demo's notice in warning colours), its
        training GSD and, once tested, whether it is downloaded; what other specs mean."""
        model = self.model_combo.currentText().strip()
        alias = model.lower()
        if alias in MODEL_USES:
            text = f"{MODEL_USES[alias]} · trained on {format_range(MODEL_GSD[alias])}"
            row = self.probe.row(alias) if self.probe else None
            if row is not None:
                text += f" · downloaded: {row.get('cached', '?')}"
        elif model.lower().startswith(("http://", "https://")):
            text = tr("a model server: it runs the model on its own machine (set its token below)")
        elif os.path.isdir(model):
            text = tr("a checkpoint folder: the engine picks the backend from its config.json")
        else:
            text = tr("a Hugging Face repo id (downloaded on first use), a checkpoint folder or 'file.py:factory'")
        self.model_hint.setText(text)
        self.model_hint.setStyleSheet(WARNING_STYLE if model_notice(model) else "")

    # -- test engine ----------------------------------------------------------------------------
    def test_engine(self) -> QgsTask:
        """Run ``--version`` and ``models --json`` of the configured engine in a background task."""
        settings, timeout = self.engine_settings(), self.probe_timeout
        self.test_button.setEnabled(False)
        self.probe_label.setStyleSheet("")
        self.probe_label.setText(tr("Testing {0}…").format(settings.command))
        self.probe_task = QgsTask.fromFunction(tr("SegEarth: test engine"),
                                               lambda task: probe_engine(settings, timeout),
                                               on_finished=self._tested)
        QgsApplication.taskManager().addTask(self.probe_task)
        return self.probe_task

    def _tested(self, exception, report: ProbeReport | None = None) -> None:
        self.probe_task = None
        try:
            self.test_button.setEnabled(True)
        except RuntimeError:  # the dialog was closed while the engine was being tested
            return
        if exception is not None:
            QgsMessageLog.logMessage(tr("Test engine: {0}").format(exception), LOG_TAG, Qgis.MessageLevel.Warning)
            self.probe_label.setStyleSheet(WARNING_STYLE)
            self.probe_label.setText("✗ " + short_message(str(exception)))
            self.probe_label.setToolTip(str(exception))
            return
        self.probe = report
        self.probe_label.setText("✓ " + report.summary())
        self.probe_label.setToolTip("")
        for index, alias in enumerate(MODEL_ALIASES):
            self.model_combo.setItemData(index, _model_tooltip(alias, report.row(alias)), Qt.ItemDataRole.ToolTipRole)
        self.show_model_hint()

    def _add_load_options(self, layout: QFormLayout, current: EngineSettings) -> None:
        """The model's load options; each shows "default" until set (then the engine's default applies)."""
        self.dtype_combo = QComboBox()
        self.dtype_combo.addItems([tr("default") if d == "" else d for d in DTYPES])
        self.dtype_combo.setCurrentIndex(DTYPES.index(current.dtype) if current.dtype in DTYPES else 0)
        self.dtype_combo.setToolTip(tr("Compute dtype (default: bfloat16 on CUDA, float32 elsewhere)."))
        layout.addRow(tr("Precision"), self.dtype_combo)
        self.batch_spin = QSpinBox()
        self.batch_spin.setRange(0, 1024)
        self.batch_spin.setSpecialValueText(tr("default"))
        self.batch_spin.setValue(current.batch_size or 0)
        self.batch_spin.setToolTip(tr("Chips per forward pass of the model (default: the model's own)."))
        layout.addRow(tr("Batch size"), self.batch_spin)
        self.score_spin = _probability_spin(current.score_threshold, tr(
            "SAM3 only: keep instances whose detection score is above this (default 0.5). Other models refuse it."))
        layout.addRow(tr("Score threshold"), self.score_spin)
        self.cache_spin = QDoubleSpinBox()
        self.cache_spin.setRange(-1, 1e7)
        self.cache_spin.setDecimals(0)
        self.cache_spin.setSuffix(" MiB")
        self.cache_spin.setSpecialValueText(tr("default"))
        self.cache_spin.setValue(-1 if current.cache_mb is None else current.cache_mb)
        self.cache_spin.setToolTip(tr("Bound of the model's per-chip image cache, which makes a second prompt on "
                                      "the same view fast (default: fits the device; 0: off)."))
        layout.addRow(tr("Image cache"), self.cache_spin)
        self.template_combo = QComboBox()
        self.template_combo.setEditable(True)
        self.template_combo.addItems([tr("default") if t == "" else t for t in TEMPLATES])
        self.template_combo.setCurrentText(current.template or tr("default"))
        self.template_combo.setToolTip(tr("Prompt template of SegEarth-R1 (referring, reasoning) or SegEarth-R2 "
                                          "(training, llama2, ...); default: the checkpoint's own."))
        layout.addRow(tr("Prompt template"), self.template_combo)
        self._add_sam3_options(layout, current)

    def _add_sam3_options(self, layout: QFormLayout, current: EngineSettings) -> None:
        """SAM3's output and presence threshold (other models refuse them in one line when the engine starts)."""
        self.sam3_output_combo = QComboBox()
        self.sam3_output_combo.addItems([tr("default") if o == "" else o for o in SAM3_CHOICES])
        self.sam3_output_combo.setCurrentIndex(SAM3_CHOICES.index(current.sam3_output)
                                               if current.sam3_output in SAM3_CHOICES else 0)
        self.sam3_output_combo.setToolTip(tr("SAM3 only: what a concept found on a chip returns: its instances "
                                             "(default; buildings, cars), the semantic map (water, roads, forest, "
                                             "fields) or both. Other models refuse it."))
        layout.addRow(tr("SAM3 output"), self.sam3_output_combo)
        self.presence_spin = _probability_spin(current.presence_threshold, tr(
            "SAM3 only: a chip whose presence probability for a concept is below this returns nothing for it "
            "(default 0.5 for semantic maps). Other models refuse it."))
        layout.addRow(tr("Presence threshold"), self.presence_spin)

    def engine_settings(self) -> EngineSettings:
        template = self.template_combo.currentText().strip()
        return EngineSettings(command=self.command_edit.text().strip() or EngineSettings().command,
                              model=self.model_combo.currentText().strip() or EngineSettings().model,
                              device=self.device_combo.currentText().strip() or "auto",
                              dtype=DTYPES[self.dtype_combo.currentIndex()] or None,
                              batch_size=self.batch_spin.value() or None,
                              score_threshold=_optional(self.score_spin),
                              cache_mb=_optional(self.cache_spin),
                              template=None if template in ("", tr("default")) else template,
                              sam3_output=SAM3_CHOICES[self.sam3_output_combo.currentIndex()] or None,
                              presence_threshold=_optional(self.presence_spin),
                              authcfg=self.auth_select.configId() or None)


def _probability_spin(value: float | None, tooltip: str) -> QDoubleSpinBox:
    """A threshold between 0 and 0.99 that may be left at "default" (shown below 0; :func:`_optional` reads it)."""
    spin = QDoubleSpinBox()
    spin.setRange(-0.05, 0.99)
    spin.setSingleStep(0.05)
    spin.setSpecialValueText(tr("default"))
    spin.setValue(-0.05 if value is None else value)
    spin.setToolTip(tooltip)
    return spin


def _optional(spin: QDoubleSpinBox) -> float | None:
    """A spin box's value, ``None`` while it shows "default" (a value below 0)."""
    return None if spin.value() < 0 else spin.value()


def _row(*widgets) -> QHBoxLayout:
    row = QHBoxLayout()
    for index, widget in enumerate(widgets):
        row.addWidget(widget, 1 if index == 0 else 0)
    return row


def _model_tooltip(alias: str, row: dict | None) -> str:
    """What a named model is for and its training GSD; with the engine's ``models --json`` row, its hub id,
    licence, download size and whether it is downloaded."""
    lines = [f"{alias}: {MODEL_USES[alias]}", f"trained on {format_range(MODEL_GSD[alias])}"]
    if row is not None:
        lines += [f"hub id: {row.get('hub_id', '-')} · licence: {row.get('licence', '-')}",
                  f"size: {row.get('download', '-')} · downloaded: {row.get('cached', '?')}"]
    return "\n".join(lines)
