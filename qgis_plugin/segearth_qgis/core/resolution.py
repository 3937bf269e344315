"""The ground sampling distance (GSD) the model will see, before anything runs (main thread, QGIS only).

* A layer with a local file is read by the engine at its own pixel size (or resampled to the GSD the user set):
  its GSD is the pixel size in ground metres at the area's centre, measured on the WGS84 ellipsoid as the engine
  does (``segearth_geo/georef.py::native_gsd``), so geographic CRSs and Web Mercator give true metres.
* Any other layer (XYZ, WMTS, WMS, …) is rendered to a GeoTIFF first. Without a GSD set it is rendered at its own
  resolution, never at one that depends on how far the view is zoomed: a tiled service at the finest tile level
  not finer than the model's lower GSD bound (the finest level when the bound is unknown); a layer with a pixel
  grid at its pixel size; a service without either at the model's lower bound, and only when even that is unknown
  at :data:`DEFAULT_RENDER_SIDE` pixels across the area.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsDistanceArea,
    QgsPointXY,
    QgsProject,
    QgsRasterDataProvider,
    QgsRasterLayer,
    QgsRectangle,
    QgsUnitTypes,
)

# Render size (long side, pixels) of a service with no resolution of its own when the model's GSD is unknown too.
DEFAULT_RENDER_SIDE = 2048
SCALE_TOLERANCE = 0.01  # the engine's: projected CRSs whose scale error is below this use their unit as is
_MEASURED_PIXELS = 8  # the engine measures the ground distance over this many pixels


@dataclass(frozen=True)
class EffectiveGsd:
    """The GSD the model will see for one layer and area.

    Attributes:
        metres: ground metres per pixel (geometric mean of x and y), ``None`` when it cannot be measured.
        how: where it comes from: ``"native"`` (the file's pixels), ``"set"`` (the GSD the user set), ``"tiles"``
            (a tiled service's own level), ``"pixels"`` (a non-file layer's pixel grid), ``"model"`` (a service
            without resolutions, at the model's lower bound), ``"view"`` (:data:`DEFAULT_RENDER_SIDE` across the area).
        units_per_pixel: the render resolution in layer units of a layer that is rendered (``None`` for files).
    """

    metres: float | None
    how: str
    units_per_pixel: float | None = None


def ground_metres_per_unit(crs: QgsCoordinateReferenceSystem, point: QgsPointXY, step: float,
                           project: QgsProject | None = None) -> tuple[float, float] | None:
    """Ground metres per map unit of ``crs`` along x and y at ``point``, measured over ``step`` units; ``None`` when
    the CRS cannot be placed on the ellipsoid. A projected CRS whose scale error is below :data:`SCALE_TOLERANCE`
    (UTM, national grids) gives its unit as is (a 0.5 m UTM raster is exactly 0.5 m, as in the engine)."""
    project = project or QgsProject.instance()
    measure = QgsDistanceArea()
    measure.setSourceCrs(crs, project.transformContext())
    if not measure.setEllipsoid("WGS84") or not measure.willUseEllipsoid():
        return None
    x, y = point.x(), point.y()
    try:
        ground_x = measure.measureLine(QgsPointXY(x - step / 2, y), QgsPointXY(x + step / 2, y)) / step
        ground_y = measure.measureLine(QgsPointXY(x, y - step / 2), QgsPointXY(x, y + step / 2)) / step
    except Exception:  # noqa: BLE001 - QgsCsException: the point is outside the CRS' area of use
        return None
    if not all(math.isfinite(g) and g > 0 for g in (ground_x, ground_y)):
        return None
    if not crs.isGeographic():
        unit = QgsUnitTypes.fromUnitToUnitFactor(crs.mapUnits(), QgsUnitTypes.DistanceUnit.DistanceMeters)
        if all(abs(g / unit - 1) < SCALE_TOLERANCE for g in (ground_x, ground_y)):
            return unit, unit
    return ground_x, ground_y


def _mean_scale(layer: QgsRasterLayer, area: QgsRectangle, units_per_pixel: float,
                project: QgsProject | None) -> float | None:
    """Ground metres per layer unit (geometric mean of x and y) at ``area``'s centre."""
    scale = ground_metres_per_unit(layer.crs(), area.center(), units_per_pixel * _MEASURED_PIXELS, project)
    return None if scale is None else math.sqrt(scale[0] * scale[1])


def pixel_size(layer: QgsRasterLayer) -> tuple[float, float] | None:
    """Layer units per pixel along x and y of a layer with a pixel grid (files, GDAL sources), else ``None``."""
    provider = layer.dataProvider()
    if provider is None or not int(provider.capabilities()) & QgsRasterDataProvider.Size or layer.width() <= 0:
        return None
    return layer.rasterUnitsPerPixelX(), layer.rasterUnitsPerPixelY()


def native_gsd(layer: QgsRasterLayer, area: QgsRectangle, project: QgsProject | None = None) -> float | None:
    """Ground metres per pixel of ``layer``'s own grid at the centre of ``area`` (layer CRS)."""
    size = pixel_size(layer)
    if size is None:
        return None
    scale = ground_metres_per_unit(layer.crs(), area.center(), max(size) * _MEASURED_PIXELS, project)
    return None if scale is None else math.sqrt(size[0] * scale[0] * size[1] * scale[1])


def tile_resolution(resolutions: list[float], scale: float, low: float | None) -> float:
    """The finest of ``resolutions`` (layer units per pixel) not finer than ``low`` ground metres (``scale``: ground
    metres per unit); the coarsest when all are finer, the finest when ``low`` is ``None``."""
    ordered = sorted(resolutions)
    if low is None:
        return ordered[0]
    fitting = [r for r in ordered if r * scale >= low * (1 - 1e-9)]
    return fitting[0] if fitting else ordered[-1]


def effective_gsd(layer: QgsRasterLayer, area: QgsRectangle, gsd: float | None, model_gsd: tuple | None,
                  rendered: bool, project: QgsProject | None = None) -> EffectiveGsd:
    """What the model will see of ``layer`` over ``area`` (layer CRS).

    Args:
        gsd: the GSD the user set (m/px), ``None`` for the layer's own.
        model_gsd: the model's training range ``(low, high)`` m/px, when known.
        rendered: whether the layer is rendered to a GeoTIFF (no local file) or read by the engine.
    """
    if not rendered:
        return EffectiveGsd(gsd, "set") if gsd else EffectiveGsd(native_gsd(layer, area, project), "native")
    probe = max(area.width(), area.height()) / DEFAULT_RENDER_SIDE or 1.0
    scale = _mean_scale(layer, area, probe, project)
    low = float(model_gsd[0]) if model_gsd else None
    if gsd:
        return EffectiveGsd(gsd, "set", gsd / scale if scale else gsd)
    resolutions = [r for r in (layer.dataProvider().nativeResolutions() or []) if r > 0]
    size = pixel_size(layer)
    if resolutions and scale:
        units = tile_resolution(resolutions, scale, low)
        return EffectiveGsd(units * scale, "tiles", units)
    if size is not None:
        units = math.sqrt(size[0] * size[1])
        return EffectiveGsd(native_gsd(layer, area, project), "pixels", units)
    if low is not None and scale:
        return EffectiveGsd(low, "model", low / scale)
    return EffectiveGsd(None if scale is None else probe * scale, "view", probe)
