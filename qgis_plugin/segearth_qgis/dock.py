"""The SegEarth dock: choose a raster and an area, type a prompt, run, see answers and the result layer."""

from __future__ import annotations

from typing import Callable

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsMapLayerProxyModel,
    QgsMessageLog,
    QgsProject,
    QgsRectangle,
    QgsSettings,
    QgsTask,
    QgsVectorLayer,
)
from qgis.gui import QgsDockWidget, QgsDoubleSpinBox, QgsMapLayerComboBox, QgsMapToolExtent
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .core.engine_client import EngineClient, EngineError
from .core.extent import ScopeError, build_parameters
from .core.layers import add_result_layer
from .core.parameters import SCOPE_DRAWN, SCOPE_LAYER, SCOPE_VISIBLE
from .core.task import SegmentTask

LOG_TAG = "SegEarth"
_HISTORY_KEY = "segearth/prompt_history"
HISTORY_SIZE = 20


def tr(text: str) -> str:
    return QCoreApplication.translate("SegEarth", text)


class SegEarthDock(QgsDockWidget):
    """Dock widget; ``client_factory()`` returns the plugin's (shared) :class:`EngineClient`."""

    def __init__(self, iface, client_factory: Callable[[], EngineClient], parent=None) -> None:
        super().__init__(tr("SegEarth"), parent)
        self.setObjectName("SegEarthDock")
        self.iface = iface
        self.client_factory = client_factory
        self.task: SegmentTask | None = None
        self.last_layer: QgsVectorLayer | None = None
        self.last_error: str | None = None
        self.drawn_rect: QgsRectangle | None = None
        self.drawn_crs = None
        self.extent_tool: QgsMapToolExtent | None = None
        self.start_task: QgsTask | None = None
        self._build()

    # -- widgets --------------------------------------------------------------------------------
    def _build(self) -> None:
        body = QWidget(self)
        outer = QVBoxLayout(body)
        status_row = QHBoxLayout()
        self.status_label = QLabel(tr("Engine: not started"))
        self.status_label.setWordWrap(True)
        self.start_button = QPushButton(tr("Start engine"))
        self.start_button.setToolTip(tr("Start the engine and load the model now (else on the first run)"))
        self.start_button.clicked.connect(self.start_engine)
        status_row.addWidget(self.status_label, 1)
        status_row.addWidget(self.start_button)
        outer.addLayout(status_row)
        self.run_time_label = QLabel(tr("Last run: none yet"))
        self.run_time_label.setToolTip(tr("Wall time of the last run; a second prompt on the same extent reuses "
                                          "the model's per-chip image work and is faster"))
        outer.addWidget(self.run_time_label)
        form = QFormLayout()
        self.layer_combo = QgsMapLayerComboBox()
        self.layer_combo.setFilters(QgsMapLayerProxyModel.Filter.RasterLayer)
        form.addRow(tr("Raster"), self.layer_combo)
        scope_row = QHBoxLayout()
        self.scope_combo = QComboBox()
        self.scope_combo.addItem(tr("Visible map extent"), SCOPE_VISIBLE)
        self.scope_combo.addItem(tr("Whole layer"), SCOPE_LAYER)
        self.scope_combo.addItem(tr("Rectangle drawn on the map"), SCOPE_DRAWN)
        self.draw_button = QPushButton(tr("Draw"))
        self.draw_button.setToolTip(tr("Drag a rectangle on the map"))
        self.draw_button.clicked.connect(self.start_drawing)
        scope_row.addWidget(self.scope_combo, 1)
        scope_row.addWidget(self.draw_button)
        form.addRow(tr("Area"), scope_row)
        self.prompt_combo = QComboBox()
        self.prompt_combo.setEditable(True)
        self.prompt_combo.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.prompt_combo.lineEdit().setPlaceholderText(tr("e.g. segment every building"))
        self.prompt_combo.addItems(self.history())
        self.prompt_combo.setCurrentText("")
        form.addRow(tr("Prompt"), self.prompt_combo)
        self.gsd_spin = QgsDoubleSpinBox()
        self.gsd_spin.setRange(0.0, 10_000.0)
        self.gsd_spin.setDecimals(3)
        self.gsd_spin.setSpecialValueText(tr("native"))
        self.gsd_spin.setSuffix(" m/px")
        self.gsd_spin.setClearValue(0.0)
        form.addRow(tr("GSD"), self.gsd_spin)
        self.threshold_spin = QDoubleSpinBox()
        self.threshold_spin.setRange(0.01, 0.99)
        self.threshold_spin.setSingleStep(0.05)
        self.threshold_spin.setValue(0.5)
        form.addRow(tr("Threshold"), self.threshold_spin)
        self.min_area_spin = QgsDoubleSpinBox()
        self.min_area_spin.setRange(0.0, 1e9)
        self.min_area_spin.setSpecialValueText(tr("none"))
        self.min_area_spin.setSuffix(" m²")
        form.addRow(tr("Min area"), self.min_area_spin)
        self.simplify_spin = QgsDoubleSpinBox()
        self.simplify_spin.setRange(0.0, 1e6)
        self.simplify_spin.setDecimals(3)
        self.simplify_spin.setSpecialValueText(tr("none"))
        self.simplify_spin.setToolTip(tr("Simplification tolerance in the raster's map units"))
        form.addRow(tr("Simplify"), self.simplify_spin)
        outer.addLayout(form)
        buttons = QHBoxLayout()
        self.run_button = QPushButton(tr("Run"))
        self.run_button.clicked.connect(self.run)
        self.cancel_button = QPushButton(tr("Cancel"))
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        outer.addLayout(buttons)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 100)
        self.progress_bar.setValue(0)
        outer.addWidget(self.progress_bar)
        outer.addWidget(QLabel(tr("Model answers")))
        self.answers_view = QPlainTextEdit()
        self.answers_view.setReadOnly(True)
        outer.addWidget(self.answers_view, 1)
        self.setWidget(body)

    # -- prompt history -------------------------------------------------------------------------
    @staticmethod
    def history() -> list[str]:
        value = QgsSettings().value(_HISTORY_KEY, [])
        if isinstance(value, str):
            value = [value]
        return [str(v) for v in (value or [])][:HISTORY_SIZE]

    def remember(self, prompt: str) -> None:
        items = [prompt] + [p for p in self.history() if p != prompt]
        QgsSettings().setValue(_HISTORY_KEY, items[:HISTORY_SIZE])
        self.prompt_combo.blockSignals(True)
        self.prompt_combo.clear()
        self.prompt_combo.addItems(items[:HISTORY_SIZE])
        self.prompt_combo.setCurrentText(prompt)
        self.prompt_combo.blockSignals(False)

    # -- drawn rectangle ------------------------------------------------------------------------
    def start_drawing(self) -> None:
        canvas = self.iface.mapCanvas()
        if self.extent_tool is None:
            self.extent_tool = QgsMapToolExtent(canvas)
            self.extent_tool.extentChanged.connect(self.set_drawn_rect)
        canvas.setMapTool(self.extent_tool)

    def set_drawn_rect(self, rect: QgsRectangle, crs=None) -> None:
        """Store a rectangle in the canvas CRS (or ``crs``) and switch the scope to it."""
        self.drawn_rect = QgsRectangle(rect)
        self.drawn_crs = crs or self.iface.mapCanvas().mapSettings().destinationCrs()
        self.scope_combo.setCurrentIndex(self.scope_combo.findData(SCOPE_DRAWN))
        canvas = self.iface.mapCanvas()
        if self.extent_tool is not None and canvas.mapTool() is self.extent_tool:
            canvas.unsetMapTool(self.extent_tool)

    # -- run ------------------------------------------------------------------------------------
    def show_status(self) -> None:
        client = self.client_factory()
        ready = client.ready if client.is_running() else None
        if ready:
            self.status_label.setText(tr("Engine: ready on {0} (model {1})").format(ready.get("device"),
                                                                                  ready.get("model")))
        else:
            self.status_label.setText(tr("Engine: not started (starts on first run)"))

    def start_engine(self) -> QgsTask:
        """Start the worker and load the model in a background task; the status shows the device."""
        client = self.client_factory()
        self.status_label.setText(tr("Engine: starting…"))
        self.start_button.setEnabled(False)
        self.start_task = QgsTask.fromFunction(tr("SegEarth: start engine"), lambda task: client.start(),
                                               on_finished=self._engine_started)
        QgsApplication.taskManager().addTask(self.start_task)
        return self.start_task

    def _engine_started(self, exception, result=None) -> None:
        self.start_task = None
        self.start_button.setEnabled(True)
        if exception is not None:
            self.report_error(str(exception))
        self.show_status()

    def run(self) -> SegmentTask | None:
        """Start a run from the widgets' values; returns the queued task or ``None`` on a user error."""
        if self.task is not None:
            return None
        self.last_error = None
        canvas = self.iface.mapCanvas()
        scope = self.scope_combo.currentData()
        prompt = self.prompt_combo.currentText().strip()
        area, area_crs = None, canvas.mapSettings().destinationCrs()
        if scope == SCOPE_VISIBLE:
            area = canvas.extent()
        elif scope == SCOPE_DRAWN:
            area, area_crs = self.drawn_rect, self.drawn_crs or area_crs
        try:
            params = build_parameters(
                self.layer_combo.currentLayer(), scope, prompt, area=area, area_crs=area_crs,
                gsd=self.gsd_spin.value() or None, threshold=self.threshold_spin.value(),
                min_area=self.min_area_spin.value() or None, simplify=self.simplify_spin.value() or None,
                project=QgsProject.instance(),
            )
        except (ScopeError, OSError) as exc:
            self.report_error(str(exc))
            return None
        client = self.client_factory()
        try:
            client.settings.argv()  # a missing engine program is reported here, not from the task
        except EngineError as exc:
            params.remove_temporary_files()
            self.report_error(str(exc))
            return None
        self.remember(prompt)
        self.answers_view.clear()
        self.progress_bar.setValue(0)
        self.status_label.setText(tr("Engine: working…"))
        self.task = SegmentTask(client, params, on_finished=self._finished)
        self.task.progressChanged.connect(lambda value: self.progress_bar.setValue(int(value)))
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        QgsApplication.taskManager().addTask(self.task)
        return self.task

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def _finished(self, task: SegmentTask) -> None:
        self.task = None
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        if task.result is not None:
            result = task.result
            name = f"{task.params.layer_name}: {task.params.prompt}"
            try:
                self.last_layer = add_result_layer(result, name)
            except OSError as exc:
                self.report_error(str(exc))
            else:
                self.progress_bar.setValue(100)
                self.answers_view.setPlainText("\n".join(result.distinct_answers()) or tr("(no answer)"))
                summary = ", ".join(f"{label}: {n}" for label, n in sorted(result.polygons.items())) or tr("none")
                message = tr("{0} polygons ({1}) in {2:.1f} s on {3}").format(result.count, summary,
                                                                          result.seconds, result.device)
                reused = tr(", {0} chips' image work reused").format(result.reused_chips) if result.reused_chips else ""
                self.run_time_label.setText(tr("Last run: {0:.1f} s for “{1}”{2}").format(
                    result.seconds, task.params.prompt, reused))
                QgsMessageLog.logMessage(message, LOG_TAG, Qgis.MessageLevel.Info)
                self.iface.messageBar().pushMessage(LOG_TAG, message, Qgis.MessageLevel.Success, 5)
        elif task.error:
            self.progress_bar.setValue(0)
            self.report_error(task.error)
        else:
            self.progress_bar.setValue(0)
            self.iface.messageBar().pushMessage(LOG_TAG, tr("Run cancelled; nothing was written."),
                                                Qgis.MessageLevel.Info, 5)
        self.show_status()

    def report_error(self, message: str) -> None:
        self.last_error = message
        QgsMessageLog.logMessage(message, LOG_TAG, Qgis.MessageLevel.Critical)
        self.iface.messageBar().pushMessage(LOG_TAG, message, Qgis.MessageLevel.Critical, 10)

    def close_tools(self) -> None:
        """Remove the map tool (called by the plugin's unload)."""
        if self.extent_tool is not None:
            canvas = self.iface.mapCanvas()
            if canvas.mapTool() is self.extent_tool:
                canvas.unsetMapTool(self.extent_tool)
            self.extent_tool.deleteLater()
            self.extent_tool = None
        if self.task is not None:
            self.task.on_finished = None  # the dock is going away; the task only cleans up
            self.task.cancel()
            self.task = None

