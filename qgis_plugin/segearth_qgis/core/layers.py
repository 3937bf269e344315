"""Adding a result GeoPackage to the project: one layer in the "SegEarth" group, coloured by label."""

from __future__ import annotations

from qgis.core import (
    QgsCategorizedSymbolRenderer,
    QgsFillSymbol,
    QgsProject,
    QgsRendererCategory,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtGui import QColor

from .result import SegmentResult

GROUP_NAME = "SegEarth"
# Distinct, colour-blind friendly (Okabe–Ito + extras); cycled when there are more labels.
PALETTE = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7",
           "#999999", "#882255", "#44AA99", "#117733", "#332288")


def tr(text: str) -> str:
    return QCoreApplication.translate("SegEarth", text)


def categorised_renderer(labels: list[str]) -> QgsCategorizedSymbolRenderer:
    """One category per label with a distinct semi-transparent fill and a solid outline."""
    categories = []
    for index, label in enumerate(sorted(labels)):
        colour = QColor(PALETTE[index % len(PALETTE)])
        symbol = QgsFillSymbol.createSimple({
            "color": f"{colour.red()},{colour.green()},{colour.blue()},110",
            "outline_color": colour.name(),
            "outline_width": "0.5",
        })
        categories.append(QgsRendererCategory(label, symbol, label))
    return QgsCategorizedSymbolRenderer("label", categories)


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
    field_index = layer.fields().indexOf("label")
    labels = sorted(str(v) for v in layer.uniqueValues(field_index)) if field_index >= 0 else []
    if labels:
        layer.setRenderer(categorised_renderer(labels))
    project.addMapLayer(layer, False)
    result_group(project).insertLayer(0, layer)
    return layer
