"""Settings (engine command, model, device) stored in QgsSettings, and the dialog that edits them."""

from __future__ import annotations

from qgis.core import QgsSettings
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
)

from .core.engine_client import EngineSettings

_KEY = "segearth/"
DEVICES = ("auto", "cpu", "cuda")
# The aliases of segearth_geo.model.registry.KNOWN_MODELS, in its order (QGIS never imports segearth_geo's model
# code; tests/test_plugin_model_list.py checks that this list equals the registry's).
MODEL_ALIASES = ("demo", "segearth-r1-earthreason", "segearth-r1-rrsisd", "sam3")


def tr(text: str) -> str:
    return QCoreApplication.translate("SegEarth", text)


def load_engine_settings() -> EngineSettings:
    settings = QgsSettings()
    default = EngineSettings()
    return EngineSettings(
        command=str(settings.value(_KEY + "engine_command", default.command)),
        model=str(settings.value(_KEY + "model", default.model)),
        device=str(settings.value(_KEY + "device", default.device)),
    )


def save_engine_settings(engine: EngineSettings) -> None:
    settings = QgsSettings()
    settings.setValue(_KEY + "engine_command", engine.command)
    settings.setValue(_KEY + "model", engine.model)
    settings.setValue(_KEY + "device", engine.device)


class SettingsDialog(QDialog):
    """Edits :class:`EngineSettings`; ``engine_settings()`` returns what the user entered."""

    def __init__(self, parent=None, current: EngineSettings | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(tr("SegEarth settings"))
        current = current or load_engine_settings()
        layout = QFormLayout(self)
        explanation = QLabel(tr("The model runs in a separate engine process (install it with "
                                "'pip install segearth-geo'); QGIS never loads torch."))
        explanation.setWordWrap(True)
        layout.addRow(explanation)
        self.command_edit = QLineEdit(current.command)
        self.command_edit.setToolTip(tr("Program that runs the engine, e.g. 'segearth-geo' or "
                                        "'/path/to/python -m segearth_geo_cli.main'."))
        layout.addRow(tr("Engine command"), self.command_edit)
        self.model_combo = QComboBox()  # the known models, or any other spec typed in
        self.model_combo.setEditable(True)
        self.model_combo.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.model_combo.addItems(list(MODEL_ALIASES))
        self.model_combo.setCurrentText(current.model)
        self.model_combo.setToolTip(tr("A known model from the list, or type a checkpoint folder, a Hugging Face "
                                       "repo id, or 'file.py:factory'."))
        self.model_edit = self.model_combo.lineEdit()
        layout.addRow(tr("Model"), self.model_combo)
        self.device_combo = QComboBox()
        self.device_combo.setEditable(True)
        self.device_combo.addItems(list(DEVICES))
        self.device_combo.setCurrentText(current.device)
        layout.addRow(tr("Device"), self.device_combo)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addRow(buttons)

    def engine_settings(self) -> EngineSettings:
        return EngineSettings(command=self.command_edit.text().strip() or EngineSettings().command,
                              model=self.model_combo.currentText().strip() or EngineSettings().model,
                              device=self.device_combo.currentText().strip() or "auto")
