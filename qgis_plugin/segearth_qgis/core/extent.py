"""From what the user chose in QGIS to a file and a bbox the engine can read (main thread only).

* The area (visible canvas extent or a drawn rectangle, both in the canvas CRS) is
  transformed to the raster layer's CRS and clipped to the layer's extent.
* Layers with a local GDAL file are sent as that file plus a bbox.
* Other layers (XYZ, WMS, …) are rendered for the area into a temporary GeoTIFF, which is sent
  instead: at the chosen GSD, else at the layer's own resolution (:mod:`.resolution`); a
  whole-layer run on an unbounded layer is refused.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
import time

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsProject,
    QgsRasterFileWriter,
    QgsRasterLayer,
    QgsRasterPipe,
    QgsRectangle,
)
from qgis.PyQt.QtCore import QCoreApplication

from .parameters import SCOPE_DRAWN, SCOPE_LAYER, SCOPE_VISIBLE, SegmentParameters, raster_paths
from .resolution import EffectiveGsd, effective_gsd

# Largest raster the plugin renders from a non-file layer (pixels); beyond this, ask for a coarser GSD.
MAX_RENDER_PIXELS = 8192 * 8192
# A non-file layer whose extent spans more than this many degrees of longitude is "unbounded".
_WORLD_DEGREES = 300.0


class ScopeError(ValueError):
    """The chosen layer/area cannot be segmented; the message is shown to the user."""


def tr(text: str) -> str:
    return QCoreApplication.translate("SegEarth", text)


def layer_file(layer: QgsRasterLayer) -> str | None:
    """The local file behind a GDAL raster layer, or ``None`` (web services, memory…)."""
    if layer.providerType() != "gdal":
        return None
    path = layer.source().split("|")[0]
    return path if os.path.isfile(path) else None


def crs_id(crs: QgsCoordinateReferenceSystem) -> str:
    """A CRS string the engine (pyproj/rasterio) understands: the authid, else WKT."""
    return crs.authid() or crs.toWkt()


def to_layer_crs(rect: QgsRectangle, source_crs: QgsCoordinateReferenceSystem, layer: QgsRasterLayer,
                 project: QgsProject) -> QgsRectangle:
    """``rect`` (in ``source_crs``) as a bounding box in the layer's CRS (densified edges)."""
    if source_crs == layer.crs():
        return QgsRectangle(rect)
    transform = QgsCoordinateTransform(source_crs, layer.crs(), project)
    return transform.transformBoundingBox(rect)


def is_unbounded(layer: QgsRasterLayer) -> bool:
    """True for layers with no meaningful finite extent (XYZ/WMS world layers, empty extents)."""
    extent = layer.extent()
    if extent.isEmpty() or not all(math.isfinite(v) for v in (extent.xMinimum(), extent.yMinimum(),
                                                              extent.xMaximum(), extent.yMaximum())):
        return True
    if layer_file(layer) is not None:
        return False
    to_wgs84 = QgsCoordinateTransform(layer.crs(), QgsCoordinateReferenceSystem("EPSG:4326"), QgsProject.instance())
    try:
        geographic = to_wgs84.transformBoundingBox(extent)
    except Exception:  # noqa: BLE001 - a transform failure means the extent is not usable either
        return True
    return geographic.width() >= _WORLD_DEGREES


def render_to_geotiff(layer: QgsRasterLayer, extent: QgsRectangle, units_per_pixel: float, path: str) -> str:
    """Render ``layer`` over ``extent`` (layer CRS) at ``units_per_pixel`` to a GeoTIFF at ``path`` (main thread)."""
    cols = max(1, int(round(extent.width() / units_per_pixel)))
    rows = max(1, int(round(extent.height() / units_per_pixel)))
    if cols * rows > MAX_RENDER_PIXELS:
        raise ScopeError(tr("The area is too large to render at this GSD ({0} × {1} px); zoom in or "
                            "set a coarser GSD.").format(cols, rows))
    provider = layer.dataProvider()
    pipe = QgsRasterPipe()
    if not pipe.set(provider.clone()):
        raise ScopeError(tr("Cannot read layer '{0}' for rendering.").format(layer.name()))
    renderer = layer.renderer()
    if renderer is not None and provider.bandCount() not in (3, 4):
        # Single-band or paletted services: render their colours, not raw values.
        pipe.set(renderer.clone())
    writer = QgsRasterFileWriter(path)
    writer.setOutputFormat("GTiff")
    error = writer.writeRaster(pipe, cols, rows, extent, layer.crs(), QgsProject.instance().transformContext())
    if error != QgsRasterFileWriter.WriterError.NoError or not os.path.isfile(path):
        raise ScopeError(tr("Rendering layer '{0}' to a temporary GeoTIFF failed (error {1}).")
                         .format(layer.name(), int(error)))
    return path


def output_path(project: QgsProject, prompt: str, layer_name: str) -> str:
    """A new GeoPackage path (no file of that name, nor its rasters' names, exists): next to the saved project file,
    else in a temporary folder."""
    folder = project.absolutePath() if project.fileName() else os.path.join(tempfile.gettempdir(), "segearth")
    os.makedirs(folder, exist_ok=True)
    slug = re.sub(r"[^A-Za-z0-9]+", "_", f"{layer_name}_{prompt}").strip("_")[:40] or "result"
    stamp = time.strftime("%Y%m%d_%H%M%S")
    base = os.path.join(folder, f"segearth_{slug}_{stamp}")
    path, n = base + ".gpkg", 1
    while any(os.path.exists(p) for p in (path, *raster_paths(path))):  # nor the run's rasters (if asked for)
        n += 1
        path = f"{base}_{n}.gpkg"
    return path


def area_in_layer(layer: QgsRasterLayer, scope: str, area: QgsRectangle | None,
                  area_crs: QgsCoordinateReferenceSystem | None, project: QgsProject) -> QgsRectangle | None:
    """The chosen area in the layer's CRS, clipped to the layer; ``None`` for the whole layer.

    Raises:
        ScopeError: unknown scope, no area drawn, or an area that does not overlap the layer.
    """
    if scope not in (SCOPE_VISIBLE, SCOPE_LAYER, SCOPE_DRAWN):
        raise ScopeError(tr("Unknown scope {0!r}.").format(scope))
    if scope == SCOPE_LAYER:
        return None
    if area is None or area.isEmpty():
        raise ScopeError(tr("Draw a rectangle on the map first.") if scope == SCOPE_DRAWN
                         else tr("The map canvas has no visible extent."))
    rect = to_layer_crs(area, area_crs or layer.crs(), layer, project).intersect(layer.extent())
    if rect.isEmpty():
        raise ScopeError(tr("The chosen area does not overlap layer '{0}'.").format(layer.name()))
    return rect


def model_view(layer: QgsRasterLayer, rect: QgsRectangle | None, gsd: float | None, model_gsd: tuple | None,
               project: QgsProject) -> EffectiveGsd:
    """The GSD the model will see of ``layer`` over ``rect`` (layer CRS; ``None``: the whole layer)."""
    if rect is None and is_unbounded(layer):
        raise ScopeError(tr("Layer '{0}' has no finite extent (web tiles or service); a whole-layer run "
                            "is not possible. Use the visible extent or draw a rectangle.").format(layer.name()))
    return effective_gsd(layer, rect or layer.extent(), gsd, model_gsd, layer_file(layer) is None, project)


def build_parameters(
    layer: QgsRasterLayer,
    scope: str,
    prompt: str,
    *,
    area: QgsRectangle | None = None,
    area_crs: QgsCoordinateReferenceSystem | None = None,
    options: dict | None = None,
    model_gsd: tuple[float, float] | None = None,
    output: str | None = None,
    project: QgsProject | None = None,
) -> SegmentParameters:
    """Resolve the user's choices into :class:`SegmentParameters` (may render a temporary GeoTIFF).

    Args:
        layer: the raster layer to segment.
        scope: ``visible``, ``layer`` or ``drawn``.
        area: the canvas extent or the drawn rectangle, in ``area_crs`` (ignored for ``layer``).
        options: the run options' request fields (``parameters.request_options``); ``gsd`` in m/px.
        model_gsd: the model's training GSD range (m/px): a web layer is rendered at its finest tile level not
            finer than its low end.
    """
    project = project or QgsProject.instance()
    prompt = (prompt or "").strip()
    if layer is None or not layer.isValid():
        raise ScopeError(tr("Choose a valid raster layer."))
    if not prompt:
        raise ScopeError(tr("Type a prompt first, e.g. 'segment the buildings'."))
    options = dict(options or {})
    rect = area_in_layer(layer, scope, area, area_crs, project)
    view = model_view(layer, rect, options.get("gsd"), model_gsd, project)
    params = SegmentParameters(raster="", prompt=prompt, output=output or output_path(project, prompt, layer.name()),
                               layer_name=layer.name(), options=options, gsd=view.metres)
    path = layer_file(layer)
    if path is not None:
        params.raster = path
        if rect is not None:
            params.bbox = (rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum())
            params.bbox_crs = crs_id(layer.crs())
        return params
    # Web or in-memory layer: render the area to a temporary GeoTIFF in the layer's CRS.
    handle, rendered = tempfile.mkstemp(prefix="segearth_render_", suffix=".tif")
    os.close(handle)
    params.temporary_files.append(rendered)
    try:
        render_to_geotiff(layer, rect or layer.extent(), view.units_per_pixel, rendered)
    except ScopeError:
        params.remove_temporary_files()
        raise
    params.raster = rendered
    params.options.pop("gsd", None)  # already rendered at it
    return params
