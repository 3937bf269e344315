"""The raster outputs of a run (issue 19) in QGIS: the probability GeoTIFF shown as a heat map under the polygons,
the polygon-id GeoTIFF coloured per id (so touching polygons are told apart) and added hidden.

Why hidden: the polygons above already show every id (the vector layer's ``id`` column is the same number); the ids
raster is for other tools (training masks, zonal statistics), and shown on top it would cover the probability map
and the imagery. It is styled anyway, so that turning it on shows distinguishable ids at once.
"""

from __future__ import annotations

from qgis.core import (
    QgsColorRampShader,
    QgsPalettedRasterRenderer,
    QgsProcessingLayerPostProcessorInterface,
    QgsProject,
    QgsRasterLayer,
    QgsRasterShader,
    QgsSingleBandPseudoColorRenderer,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtGui import QColor

from .label_colours import label_colour
from .layers import result_group
from .result import SegmentResult

# Probability → colour: transparent at 0 (the imagery shows), warmer and more opaque towards 1 (r, g, b, alpha).
HEAT = ((0.0, (255, 255, 178, 0)), (0.5, (253, 141, 60, 150)), (1.0, (189, 0, 38, 220)))
ID_FIELD, LABEL_FIELD = "id", "label"


def tr(text: str) -> str:
    return QCoreApplication.translate("SegEarth", text)


def style_probability(layer: QgsRasterLayer) -> None:
    """Band 1 (the first prompt's probability, 0–1) as a heat map; nodata (-1, invalid scene) stays transparent."""
    ramp = QgsColorRampShader(0.0, 1.0)
    ramp.setColorRampType(QgsColorRampShader.Type.Interpolated)
    ramp.setColorRampItemList([QgsColorRampShader.ColorRampItem(value, QColor(*rgba), f"{value:g}")
                               for value, rgba in HEAT])
    shader = QgsRasterShader()
    shader.setRasterShaderFunction(ramp)
    renderer = QgsSingleBandPseudoColorRenderer(layer.dataProvider(), 1, shader)
    renderer.setClassificationMin(0.0)
    renderer.setClassificationMax(1.0)
    layer.setRenderer(renderer)
    layer.triggerRepaint()


def polygon_ids(layer: QgsVectorLayer) -> dict[int, str]:
    """``{id: label}`` of the result layer's polygons (attributes only; no geometry is read)."""
    from qgis.core import QgsFeatureRequest

    names = layer.fields().names()
    if ID_FIELD not in names:
        return {}
    request = QgsFeatureRequest().setFlags(QgsFeatureRequest.Flag.NoGeometry)
    request.setSubsetOfAttributes([n for n in (ID_FIELD, LABEL_FIELD) if n in names], layer.fields())
    has_label = LABEL_FIELD in names
    return {int(f[ID_FIELD]): str(f[LABEL_FIELD]) if has_label else "" for f in layer.getFeatures(request)
            if f[ID_FIELD] is not None}


def style_labels(layer: QgsRasterLayer, ids: dict[int, str]) -> None:
    """One class per polygon id (its colour hashed from the id, so neighbours differ; named "id (label)"); 0 (no
    polygon) and nodata have no class, so they stay transparent."""
    classes = [QgsPalettedRasterRenderer.Class(i, QColor(*label_colour(f"polygon {i}")),
                                               f"{i} ({label})" if label else str(i)) for i, label in sorted(ids.items())]
    layer.setRenderer(QgsPalettedRasterRenderer(layer.dataProvider(), 1, classes))
    layer.triggerRepaint()


def add_raster_outputs(result: SegmentResult, name: str, polygons: QgsVectorLayer,
                       project: QgsProject | None = None) -> list[QgsRasterLayer]:
    """Load the run's probability and ids GeoTIFFs (those it wrote) under its polygon layer in the SegEarth group:
    the probability shown as a heat map, the ids hidden (see the module's docstring)."""
    project = project or QgsProject.instance()
    group = result_group(project)
    node = group.findLayer(polygons.id())
    index = group.children().index(node) + 1 if node is not None else 0
    added = []
    for path, what, visible in ((result.raster_out, tr("probability"), True),
                                (result.labels_out, tr("polygon ids"), False)):
        if not path:
            continue
        layer = QgsRasterLayer(path, f"{name} — {what}", "gdal")
        if not layer.isValid():
            raise OSError(tr("The engine wrote {0} but QGIS cannot open it.").format(path))
        if visible:
            style_probability(layer)
        else:
            style_labels(layer, polygon_ids(polygons))
        project.addMapLayer(layer, False)
        group.insertLayer(index, layer).setItemVisibilityChecked(visible)
        index += 1
        added.append(layer)
    return added


class RasterStyler(QgsProcessingLayerPostProcessorInterface):
    """Styles a Processing raster output when QGIS loads it: the probability as a heat map, or the ids per polygon
    (``ids``: ``{id: label}``, from the polygons the algorithm wrote)."""

    _alive: list["RasterStyler"] = []  # the Python side must outlive the algorithm run (see layers.LabelStyler)

    def __init__(self, ids: dict[int, str] | None = None) -> None:
        super().__init__()
        self.ids = ids

    @classmethod
    def create(cls, ids: dict[int, str] | None = None) -> "RasterStyler":
        styler = cls(ids)
        cls._alive[:] = [*cls._alive[-15:], styler]
        return styler

    def postProcessLayer(self, layer, context, feedback) -> None:  # noqa: N802 - QGIS API
        if isinstance(layer, QgsRasterLayer):
            if self.ids is None:
                style_probability(layer)
            else:
                style_labels(layer, self.ids)
