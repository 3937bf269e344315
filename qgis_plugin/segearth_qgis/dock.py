"""The SegEarth dock: choose a raster and an area, type a prompt, run, see answers and the result layer.

It says what the user must know where they look: the engine's state (ready, or failed to start) and the model's
notice (the demo: "synthetic demo — not for real imagery"); before a run, the GSD the model will see next to the
model's training range (in warning colours when far outside); after a run, the engine's notes, a note when the
labels are not the prompt's words and what a zoom strategy did (strategy and why, chips per level, the fraction looked
at in full resolution). The result layer is styled by label; the score filter (``score_filter.py``) hides its
low-score polygons live; on request the probability and polygon-id GeoTIFFs are written next to the GeoPackage and
loaded under it (``core/raster_layers.py``). Errors are one short line in the message bar, in full in the log panel.
"""

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
from qgis.gui import QgsDockWidget, QgsMapLayerComboBox, QgsMapToolExtent
from qgis.PyQt.QtCore import QCoreApplication, Qt
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from .core.answers import answer_lines
from .core.engine_client import EngineClient, EngineError
from .core.extent import ScopeError, area_in_layer, build_parameters, model_view
from .core.known_models import format_gsd, format_range, gsd_warning, model_gsd_range, model_notice
from .core.layers import add_result_layer
from .core.messages import LOG_TAG, bar_message, short_message
from .core.parameters import SCOPE_DRAWN, SCOPE_LAYER, SCOPE_VISIBLE
from .core.raster_layers import add_raster_outputs
from .core.task import SegmentTask
from .run_options import RunOptionsWidget
from .score_filter import ScoreFilterWidget

_HISTORY_KEY = "segearth/prompt_history"
HISTORY_SIZE = 20
WARNING_STYLE = "color: #b35900; font-weight: bold;"
# Where the GSD the model sees comes from (core/resolution.py EffectiveGsd.how).
GSD_SOURCES = {
    "native": "the layer's own",
    "set": "as set",
    "tiles": "the layer's own tile level",
    "pixels": "the layer's own",
    "model": "the model's finest; the service has no resolution of its own",
    "view": "the view rendered 2048 px wide: changes with the zoom",
}


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
        canvas = self.iface.mapCanvas()
        canvas.extentsChanged.connect(self.show_gsd)
        canvas.destinationCrsChanged.connect(self.show_gsd)
        self.show_status()

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
        self.notice_label = _warning_label()  # the model's notice: "synthetic demo — not for real imagery"
        outer.addWidget(self.notice_label)
        self.run_time_label = QLabel(tr("Last run: none yet"))
        self.run_time_label.setWordWrap(True)
        self.run_time_label.setToolTip(tr("Wall time of the last run; a second prompt on the same extent reuses "
                                          "the model's per-chip image work and is faster"))
        outer.addWidget(self.run_time_label)
        outer.addLayout(self._build_form())
        self.run_options = RunOptionsWidget()
        self.run_options.changed.connect(self.show_gsd)
        outer.addWidget(self.run_options)
        self.rasters_check = QCheckBox(tr("Also write probability and polygon-id rasters"))
        self.rasters_check.setToolTip(tr("Two GeoTIFFs next to the GeoPackage, loaded under the result layer: the "
                                         "probability per pixel (0-1, shown as a heat map) and each polygon's id "
                                         "(the layer's id column; added hidden, coloured per id)"))
        outer.addWidget(self.rasters_check)
        self.gsd_label = QLabel()  # the GSD the model will see, and the model's range
        self.gsd_label.setWordWrap(True)
        outer.addWidget(self.gsd_label)
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
        self.notes_label = _warning_label()  # after a run: the engine's notes, labels the prompt does not name
        outer.addWidget(self.notes_label)
        self.zoom_label = QLabel()  # after a zoom/auto run: what ran and why, chips per level, full-resolution share
        self.zoom_label.setWordWrap(True)
        self.zoom_label.setVisible(False)
        outer.addWidget(self.zoom_label)
        self.score_filter = ScoreFilterWidget()
        outer.addWidget(self.score_filter)
        outer.addWidget(QLabel(tr("Model answers")))
        self.answers_view = QPlainTextEdit()
        self.answers_view.setReadOnly(True)
        outer.addWidget(self.answers_view, 1)
        scroll = QScrollArea(self)  # a short screen scrolls the panel instead of growing the main window
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)  # lines wrap instead
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setWidget(body)
        scroll.setMinimumWidth(body.minimumSizeHint().width() + scroll.verticalScrollBar().sizeHint().width())
        self.setWidget(scroll)

    def _build_form(self) -> QFormLayout:
        form = QFormLayout()
        self.layer_combo = QgsMapLayerComboBox()
        self.layer_combo.setFilters(QgsMapLayerProxyModel.Filter.RasterLayer)
        self.layer_combo.layerChanged.connect(self.show_gsd)
        form.addRow(tr("Raster"), self.layer_combo)
        scope_row = QHBoxLayout()
        self.scope_combo = QComboBox()
        self.scope_combo.addItem(tr("Visible map extent"), SCOPE_VISIBLE)
        self.scope_combo.addItem(tr("Whole layer"), SCOPE_LAYER)
        self.scope_combo.addItem(tr("Rectangle drawn on the map"), SCOPE_DRAWN)
        self.scope_combo.currentIndexChanged.connect(self.show_gsd)
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
        return form

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
        self.show_gsd()

    def chosen_area(self):
        """``(scope, area, area_crs)``: the area the user chose (``None`` for the whole layer) in ``area_crs``."""
        canvas = self.iface.mapCanvas()
        scope = self.scope_combo.currentData()
        area, area_crs = None, canvas.mapSettings().destinationCrs()
        if scope == SCOPE_VISIBLE:
            area = canvas.extent()
        elif scope == SCOPE_DRAWN:
            area, area_crs = self.drawn_rect, self.drawn_crs or area_crs
        return scope, area, area_crs

    # -- what the user must know ----------------------------------------------------------------
    def show_status(self) -> None:
        """The engine's state and the model's notice (from the engine once it runs, else the known models')."""
        client = self.client_factory()
        ready = client.ready if client.is_running() else None
        if ready:
            text = tr("Engine: ready on {0}, model {1}").format(ready.get("device"), ready.get("model"))
            notice = ready.get("notice")
        elif client.start_error:
            text, notice = tr("Engine: failed to start — see the SegEarth log"), model_notice(client.settings.model)
        else:
            text, notice = tr("Engine: not started (starts on first run)"), model_notice(client.settings.model)
        self.status_label.setText(text)
        self.status_label.setToolTip("" if ready else client.start_error or "")
        self.notice_label.setText(notice or "")
        self.notice_label.setVisible(bool(notice))
        self.show_gsd()

    def model_gsd(self) -> tuple[float, float] | None:
        """The model's training GSD range: the running engine's, else the known model's (``None``: unknown)."""
        client = self.client_factory()
        ready = client.ready if client.is_running() else None
        if ready:
            return tuple(ready["gsd_range"]) if ready.get("gsd_range") else None
        return model_gsd_range(client.settings.model)

    def show_gsd(self, *_args) -> None:
        """The GSD the model will see for the chosen layer, area and GSD option, next to the model's range."""
        layer = self.layer_combo.currentLayer()
        model_gsd = self.model_gsd()
        model_text = tr(" · model: {0}").format(format_range(model_gsd)) if model_gsd else ""
        warning = None
        if layer is None:
            text = tr("GSD: choose a raster layer")
        else:
            scope, area, area_crs = self.chosen_area()
            try:
                project = QgsProject.instance()
                view = model_view(layer, area_in_layer(layer, scope, area, area_crs, project),
                                  self.run_options.request_fields().get("gsd"), model_gsd, project)
            except ScopeError as exc:
                text = tr("GSD: – ({0})").format(short_message(str(exc), 80).rstrip("."))
            else:
                shown = format_gsd(view.metres) if view.metres else tr("unknown")
                text = tr("GSD: {0} ({1})").format(shown, tr(GSD_SOURCES[view.how]))
                warning = gsd_warning(view.metres, model_gsd)
        if warning:
            model_text += tr(" — {0} than the model was trained on: set a GSD in its range").format(tr(warning))
        self.gsd_label.setText(text + model_text)
        self.gsd_label.setStyleSheet(WARNING_STYLE if warning else "")

    def show_notes(self, notes: list[str]) -> None:
        for note in notes:
            QgsMessageLog.logMessage(note, LOG_TAG, Qgis.MessageLevel.Warning)
        self.notes_label.setText("\n".join(f"⚠ {note}" for note in notes))
        self.notes_label.setVisible(bool(notes))

    # -- engine ---------------------------------------------------------------------------------
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

    # -- run ------------------------------------------------------------------------------------
    def run(self) -> SegmentTask | None:
        """Start a run from the widgets' values; returns the queued task or ``None`` on a user error."""
        if self.task is not None:
            return None
        self.last_error = None
        self.show_notes([])
        scope, area, area_crs = self.chosen_area()
        prompt = self.prompt_combo.currentText().strip()
        try:
            params = build_parameters(self.layer_combo.currentLayer(), scope, prompt, area=area, area_crs=area_crs,
                                      options=self.run_options.request_fields(), model_gsd=self.model_gsd(),
                                      project=QgsProject.instance())
        except (ScopeError, OSError) as exc:
            self.report_error(str(exc))
            return None
        if self.rasters_check.isChecked():
            params.write_rasters_beside()
        client = self.client_factory()
        try:
            client.check()  # a missing engine program is reported here, not from the task
        except EngineError as exc:
            params.remove_temporary_files()
            self.report_error(str(exc))
            self.show_status()
            return None
        self.remember(prompt)
        self.zoom_label.setVisible(False)
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
            self._show_result(task)
        elif task.error:
            self.progress_bar.setValue(0)
            self.report_error(task.error)
        else:
            self.progress_bar.setValue(0)
            self.iface.messageBar().pushMessage(LOG_TAG, tr("Run cancelled; nothing was written."),
                                                Qgis.MessageLevel.Info, 5)
        self.show_status()

    def _show_result(self, task: SegmentTask) -> None:
        """Add the result layer; show the answers without markup, the notes, and a summary in the message bar."""
        result, prompt = task.result, task.params.prompt
        name = f"{task.params.layer_name}: {prompt}"
        try:
            self.last_layer = add_result_layer(result, name)
            add_raster_outputs(result, name, self.last_layer)
        except OSError as exc:
            self.report_error(str(exc))
            return
        self.score_filter.attach(self.last_layer)
        self.zoom_label.setText("\n".join(result.zoom.lines()) if result.zoom else "")
        self.zoom_label.setVisible(result.zoom is not None)
        self.progress_bar.setValue(100)
        self.answers_view.setPlainText("\n".join(answer_lines(result.answers)) or tr("(no answer)"))
        notes = result.remarks(prompt)
        self.show_notes(notes)
        summary = ", ".join(f"{label}: {n}" for label, n in sorted(result.polygons.items())) or tr("none")
        at = tr(" at {0}").format(format_gsd(task.params.gsd)) if task.params.gsd else ""
        message = tr("{0} polygons ({1}) in {2:.1f} s{3}").format(result.count, summary, result.seconds, at)
        reused = tr(", {0} chips' image work reused").format(result.reused_chips) if result.reused_chips else ""
        self.run_time_label.setText(tr("Last run: {0:.1f} s for “{1}”{2}").format(result.seconds, prompt, reused))
        QgsMessageLog.logMessage(tr("{0} on {1}").format(message, result.device), LOG_TAG, Qgis.MessageLevel.Info)
        if notes:
            message += tr(" — read the notes in the SegEarth panel")
        level = Qgis.MessageLevel.Warning if notes or result.notice else Qgis.MessageLevel.Success
        self.iface.messageBar().pushMessage(LOG_TAG, message, level, 8)

    def report_error(self, message: str) -> None:
        """One short line in the message bar; the full message in the log panel (tag "SegEarth")."""
        self.last_error = message
        QgsMessageLog.logMessage(message, LOG_TAG, Qgis.MessageLevel.Critical)
        self.iface.messageBar().pushMessage(LOG_TAG, bar_message(message), Qgis.MessageLevel.Critical, 10)

    def close_tools(self) -> None:
        """Remove the map tool and the canvas and project connections (called by the plugin's unload)."""
        self.score_filter.release()
        canvas = self.iface.mapCanvas()
        for signal in (canvas.extentsChanged, canvas.destinationCrsChanged):
            try:
                signal.disconnect(self.show_gsd)
            except TypeError:  # already disconnected
                pass
        if self.extent_tool is not None:
            if canvas.mapTool() is self.extent_tool:
                canvas.unsetMapTool(self.extent_tool)
            self.extent_tool.deleteLater()
            self.extent_tool = None
        if self.task is not None:
            self.task.on_finished = None  # the dock is going away; the task only cleans up
            self.task.cancel()
            self.task = None


def _warning_label() -> QLabel:
    label = QLabel()
    label.setWordWrap(True)
    label.setStyleSheet(WARNING_STYLE)
    label.setVisible(False)
    return label
