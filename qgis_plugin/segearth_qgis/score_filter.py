"""The dock's score filter: a slider that shows only the last result layer's polygons whose score is at least the
chosen value, live, as a layer filter (the layer's subset string: nothing is re-run, the GeoPackage keeps every
polygon), so users trade precision for recall the way SAM3 users expect. It says what it filters: "Score ≥ 0.60: 12
of 40 polygons shown"; its tooltip names the layer.
"""

from __future__ import annotations

from qgis.core import QgsProject, QgsVectorLayer
from qgis.PyQt.QtCore import QCoreApplication, Qt
from qgis.PyQt.QtWidgets import QHBoxLayout, QLabel, QSlider, QVBoxLayout, QWidget

from .core.score_filter import SCORE_FIELD, STEPS, minimum_score, shown_text, subset_string


def tr(text: str) -> str:
    return QCoreApplication.translate("SegEarth", text)


class ScoreFilterWidget(QWidget):
    """A slider (0–1 in steps of 0.01) and the line saying what it shows; disabled until :meth:`attach`."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.layer: QgsVectorLayer | None = None
        self.total: int | None = None
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setObjectName("score_filter_slider")
        self.slider.setRange(0, STEPS)
        self.slider.setSingleStep(1)
        self.slider.setPageStep(10)
        self.slider.valueChanged.connect(self.apply)
        self.label = QLabel()
        self.label.setWordWrap(True)
        column = QVBoxLayout(self)
        column.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        row.addWidget(QLabel(tr("Score filter")))
        row.addWidget(self.slider, 1)
        column.addLayout(row)
        column.addWidget(self.label)
        QgsProject.instance().layerWillBeRemoved.connect(self._removed)
        self.detach()

    @property
    def minimum(self) -> float:
        return minimum_score(self.slider.value())

    def set_minimum(self, value: float) -> None:
        """Move the slider to ``value`` (0–1); the filter follows at once."""
        self.slider.setValue(int(round(value * STEPS)))

    def attach(self, layer: QgsVectorLayer) -> None:
        """Filter ``layer`` from now on (the slider back at 0: every polygon shown); a layer without a score column
        leaves the slider disabled."""
        self.detach()
        if SCORE_FIELD not in layer.fields().names():
            return
        layer.setSubsetString("")
        self.layer, self.total = layer, layer.featureCount()
        layer.willBeDeleted.connect(self.detach)
        self.setEnabled(True)
        self.setToolTip(tr("Shows only the polygons of “{0}” (the last result layer) whose score is at least this; "
                           "a layer filter: nothing is re-run and the file keeps every polygon").format(layer.name()))
        self.apply()

    def detach(self) -> None:
        """Stop filtering (the layer keeps its current filter) and disable the slider."""
        layer, self.layer, self.total = self.layer, None, None
        if layer is not None:
            try:
                layer.willBeDeleted.disconnect(self.detach)
            except (TypeError, RuntimeError):  # already disconnected, or the layer is gone
                pass
        self.slider.blockSignals(True)
        self.slider.setValue(0)
        self.slider.blockSignals(False)
        self.setEnabled(False)
        self.setToolTip(tr("Filters the next result layer by score, without re-running"))
        self.label.setText(shown_text(0.0, None, None))

    def apply(self, *_args) -> None:
        """Set the layer's subset string for the slider's value and say how many polygons it shows."""
        minimum = self.minimum
        if self.layer is None:
            self.label.setText(shown_text(minimum, None, None))
            return
        self.layer.setSubsetString(subset_string(minimum))
        self.layer.triggerRepaint()
        self.label.setText(shown_text(minimum, self.layer.featureCount(), self.total))

    def _removed(self, layer_id: str) -> None:
        if self.layer is not None and self.layer.id() == layer_id:
            self.detach()

    def release(self) -> None:
        """Detach and drop the project connection (the dock is going away)."""
        try:
            QgsProject.instance().layerWillBeRemoved.disconnect(self._removed)
        except TypeError:
            pass
        self.detach()
