"""Result layers: one layer per run in the "SegEarth" group, coloured by label the same way everywhere.

:func:`style_by_label` is the one styling function (the dock's layers, Processing's outputs through
:class:`LabelStyler`); each label's colour comes from :func:`.label_colours.label_colour`, so a label has the same
colour in every run and in the engine's PNG previews.
"""

from __future__ import annotations

from qgis.core import (
    QgsCategorizedSymbolRenderer,
    QgsFillSymbol,
    QgsProcessingLayerPostProcessorInterface,
    QgsProject,
    QgsRendererCategory,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QCoreApplication

from .label_colours import label_colour
from .result import SegmentResult

GROUP_NAME = "SegEarth"
LABEL_FIELD = "label"
FILL_ALPHA = 110  # of 255: the imagery stays visible under the polygons


def tr(text: str) -> str:
    return QCoreApplication.translate("SegEarth", text)


def categorised_renderer(labels: list[str]) -> QgsCategorizedSymbolRenderer:
    """One category per label (sorted): a semi-transparent fill and a solid outline in the label's colour."""
    categories = []
    for label in sorted(labels):
        r, g, b = label_colour(label)
        symbol = QgsFillSymbol.createSimple({
            "color": f"{r},{g},{b},{FILL_ALPHA}",
            "outline_color": f"{r},{g},{b},255",
            "outline_width": "0.5",
        })
        categories.append(QgsRendererCategory(label, symbol, label))
    return QgsCategorizedSymbolRenderer(LABEL_FIELD, categories)


def style_by_label(layer: QgsVectorLayer) -> bool:
    """Categorise ``layer`` by its ``label`` field; ``False`` (layer untouched) when it has no labels."""
    index = layer.fields().indexOf(LABEL_FIELD)
    labels = sorted(str(v) for v in layer.uniqueValues(index) if v is not None) if index >= 0 else []
    if not labels:
        return False
    layer.setRenderer(categorised_renderer(labels))
    layer.triggerRepaint()
    return True


class LabelStyler(QgsProcessingLayerPostProcessorInterface):
    """Styles a Processing output by label when QGIS loads it: ``details.setPostProcessor(LabelStyler.create())``."""

    # QGIS takes the C++ object, but the Python side of the subclass must outlive the algorithm run (which may end
    # before QGIS loads its outputs): the latest stylers are kept here.
    _alive: list["LabelStyler"] = []

    @classmethod
    def create(cls) -> "LabelStyler":
        styler = cls()
        cls._alive[:] = [*cls._alive[-15:], styler]
        return styler

    def postProcessLayer(self, layer, context, feedback) -> None:  # noqa: N802 - QGIS API
        if isinstance(layer, QgsVectorLayer):
            style_by_label(layer)


def result_group(project: QgsProject):
    """The "SegEarth" layer-tree group (created at the top when missing)."""
    root = project.layerTreeRoot()
    group = root.findGroup(GROUP_NAME)
    if group is None:
        group = root.insertGroup(0, GROUP_NAME)
    return group


def add_result_layer(result: SegmentResult, name: str, project: QgsProject | None = None) -> QgsVectorLayer:
    """Load ``result`` as a vector layer, style it by label and add it to the SegEarth group."""
    project = project or QgsProject.instance()
    layer = QgsVectorLayer(result.uri, name, "ogr")
    if not layer.isValid():
        raise OSError(tr("The engine wrote {0} but QGIS cannot open it.").format(result.output))
    style_by_label(layer)
    project.addMapLayer(layer, False)
    result_group(project).insertLayer(0, layer)
    return layer
