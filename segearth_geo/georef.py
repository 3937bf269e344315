"""Georeferencing maths of the processing grid: bbox -> source window, ground sampling distance, CRS input.

Pure functions over explicit values (dataset, transform, window, CRS); used by
:mod:`segearth_geo.raster`. Never imports torch.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Sequence

import rasterio
import rasterio.warp
from affine import Affine
from pyproj import CRS as ProjCRS
from pyproj import Geod
from pyproj.exceptions import CRSError as ProjCRSError
from rasterio.crs import CRS
from rasterio.errors import CRSError, RasterioError
from rasterio.windows import Window

from segearth_geo.errors import RasterError, UsageError

logger = logging.getLogger(__name__)

SCALE_TOLERANCE = 0.01  # projection scale errors below this are ignored for GSD


def bounds(transform: Affine, width: int, height: int) -> tuple[float, float, float, float]:
    """``(minx, miny, maxx, maxy)`` of a ``width`` x ``height`` pixel grid under ``transform``."""
    xs, ys = zip(*(transform @ (c, r) for c in (0, width) for r in (0, height)))
    return min(xs), min(ys), max(xs), max(ys)


def bbox_window(
    ds: rasterio.io.DatasetReader, source: str, bbox: Sequence[float] | None, bbox_crs: CRS | str | int | None
) -> Window:
    """Integer source-pixel window covering ``bbox`` (rounded outward), clipped to the raster."""
    full = Window(0, 0, ds.width, ds.height)
    if bbox is None:
        if bbox_crs is not None:
            raise UsageError("bbox_crs was given without a bbox")
        return full
    try:
        minx, miny, maxx, maxy = (float(v) for v in bbox)
    except (TypeError, ValueError):
        raise UsageError(f"bbox must be four numbers (minx, miny, maxx, maxy), got {bbox!r}") from None
    if not all(math.isfinite(v) for v in (minx, miny, maxx, maxy)):
        raise UsageError(f"bbox values must be finite numbers, got {tuple(bbox)}")
    if not (minx < maxx and miny < maxy):
        raise UsageError(f"bbox needs minx < maxx and miny < maxy, got {tuple(bbox)}")
    if bbox_crs is not None:
        crs_in = parse_crs(bbox_crs)
        if ds.crs is None:
            raise UsageError(f"{source} has no CRS, so a bbox in {bbox_crs} cannot be placed; give it in pixels")
        if crs_in != ds.crs:
            try:
                minx, miny, maxx, maxy = rasterio.warp.transform_bounds(crs_in, ds.crs, minx, miny, maxx, maxy)
            except (CRSError, RasterioError, ValueError, OverflowError) as exc:
                raise UsageError(f"bbox {tuple(bbox)} cannot be expressed in the raster's CRS: {exc}") from exc
            if not all(math.isfinite(v) for v in (minx, miny, maxx, maxy)):
                raise UsageError(f"bbox {tuple(bbox)} cannot be expressed in the raster's CRS {ds.crs}")
    inverse = ~ds.transform
    cols, rows = zip(*(inverse @ (x, y) for x in (minx, maxx) for y in (miny, maxy)))
    # A huge but finite bbox (±1e308) overflows to ±inf in the pixel maths: clamp to just outside the raster.
    cols = [min(max(c, -1.0), ds.width + 1.0) if not math.isnan(c) else math.nan for c in cols]
    rows = [min(max(r, -1.0), ds.height + 1.0) if not math.isnan(r) else math.nan for r in rows]
    if any(math.isnan(v) for v in (*cols, *rows)):
        raise UsageError(f"bbox {tuple(bbox)} cannot be placed on the raster's pixel grid")
    eps = 1e-6  # keep exact pixel edges from growing the window by one pixel
    col0 = max(0, math.floor(min(cols) + eps))
    row0 = max(0, math.floor(min(rows) + eps))
    col1 = min(ds.width, math.ceil(max(cols) - eps))
    row1 = min(ds.height, math.ceil(max(rows) - eps))
    if col1 <= col0 or row1 <= row0:
        extent = bounds(ds.transform, ds.width, ds.height)
        raise UsageError(
            f"bbox {tuple(bbox)}{' in ' + str(bbox_crs) if bbox_crs is not None else ''} does not overlap the raster, "
            f"whose bounds are ({', '.join(f'{v:.10g}' for v in extent)}) in {ds.crs or 'pixel coordinates'}"
            + _degrees_hint(bbox, bbox_crs, ds.crs)
        )
    return Window(col0, row0, col1 - col0, row1 - row0)


def _degrees_hint(bbox: Sequence[float], bbox_crs: Any, crs: CRS | None) -> str:
    """``"; did you mean …EPSG:4326?"`` when a bbox given in a projected raster's CRS looks like lon/lat degrees."""
    from segearth_geo.params import field_name  # params imports this package's chips module

    minx, miny, maxx, maxy = (float(v) for v in bbox)
    if bbox_crs is not None or crs is None or not crs.is_projected:
        return ""
    if not (-180 <= minx < maxx <= 180 and -90 <= miny < maxy <= 90):
        return ""
    return f"; these look like degrees: did you mean {field_name('bbox_crs')} EPSG:4326?"


def parse_crs(value: CRS | str | int) -> CRS:
    """A user-given CRS (``"EPSG:4326"``, ``4326``, WKT, PROJ string, CRS object); :class:`UsageError` if unknown."""
    if isinstance(value, CRS):
        return value
    try:
        # pyproj first: it fails quietly, where GDAL would also print its own error line
        return CRS.from_wkt(ProjCRS.from_user_input(value).to_wkt())
    except (ProjCRSError, CRSError) as exc:
        raise UsageError(f"unknown CRS {value!r} (use e.g. EPSG:4326): {exc}") from exc


def native_gsd(crs: CRS, transform: Affine, window: Window) -> tuple[float, float]:
    """Ground metres per source pixel along x and y at the centre of ``window``.

    Measured geodesically (WGS84) over a few pixels around the centre, so geographic CRSs
    and distorting projections (Web Mercator) give true ground distances. Projected CRSs
    whose local scale error is below ``SCALE_TOLERANCE`` (UTM, national grids) use their
    linear unit as is, so a 0.5 m UTM raster reports exactly 0.5 m.
    """
    step_x, step_y = abs(transform.a), abs(transform.e)
    cx, cy = transform @ (window.col_off + window.width / 2, window.row_off + window.height / 2)
    n = 8  # pixels measured on each axis
    xs = [cx - n * step_x / 2, cx + n * step_x / 2, cx, cx]
    ys = [cy, cy, cy - n * step_y / 2, cy + n * step_y / 2]
    try:
        unit = None if crs.is_geographic else crs.linear_units_factor[1]
    except CRSError:  # e.g. a local engineering CRS without a declared unit: take it as metres
        unit = 1.0
    try:
        lons, lats = rasterio.warp.transform(crs, CRS.from_epsg(4326), xs, ys)
        geod = Geod(ellps="WGS84")
        ground_x = geod.inv(lons[0], lats[0], lons[1], lats[1])[2] / n
        ground_y = geod.inv(lons[2], lats[2], lons[3], lats[3])[2] / n
    except (CRSError, RasterioError, ValueError) as exc:
        if unit is None:
            raise RasterError(f"cannot place the CRS {crs} on the WGS84 ellipsoid to measure its GSD: {exc}") from exc
        logger.debug("GSD of %s from its linear unit only: %s", crs, exc)
        return step_x * unit, step_y * unit
    if not (math.isfinite(ground_x) and math.isfinite(ground_y) and ground_x > 0 and ground_y > 0):
        if unit is None:
            raise RasterError(f"cannot measure the GSD of a raster in {crs} at ({cx}, {cy})")
        return step_x * unit, step_y * unit
    if unit is not None and all(
        abs(ground / (step * unit) - 1) < SCALE_TOLERANCE for ground, step in ((ground_x, step_x), (ground_y, step_y))
    ):
        return step_x * unit, step_y * unit
    return ground_x, ground_y
