"""What GIS users do with the polygons next: regularized building footprints and smooth natural outlines.

Both run on a run's final polygons, after the exact stitching (so they never bring back a seam), on every
polygon of the run together: polygons that touch (a party wall, a field boundary shared by two labels) are
changed along their shared edges once, so shared walls stay shared and no gap opens between neighbours
(:mod:`~segearth_geo.postprocess.topology`). A guard keeps the original of any polygon the change would spoil
(:mod:`~segearth_geo.postprocess.guard`): invalid, a new overlap, or an IoU with the original below the
bound (``regularize_iou`` for regularizing, :data:`SMOOTH_MIN_IOU` for smoothing). ``area_m2`` is measured
again on the new shapes; ``pixels`` stays the number of mask pixels each polygon came from (what its
``score`` averages over). The work happens in processing-grid pixels scaled to square ground pixels, so the
tolerances are in pixels and right angles are right on the ground, in any CRS. Deterministic.

* :func:`regularize_polygons` (``--regularize``): :mod:`~segearth_geo.postprocess.regularize`;
* :func:`smooth_polygons` (``--smooth``): :mod:`~segearth_geo.postprocess.smooth`;
* :func:`postprocess`: the run's table in, the table with the new shapes out (what the engine and batch call).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import shapely
from affine import Affine

from segearth_geo.postprocess.guard import reshape
from segearth_geo.postprocess.regularize import group_orientations, regularize_arcs, straighten
from segearth_geo.postprocess.smooth import smooth_arcs
from segearth_geo.postprocess.topology import GRID, build_topology, touching_groups

DEFAULT_REGULARIZE_IOU = 0.75  # a regularized footprint must keep this IoU with the mask's polygon
SMOOTH_MIN_IOU = 0.5  # smoothing may not shrink a polygon below this IoU (a few-pixel speck stays as it was)
CHUNK = 8192  # polygons changed at a time (bounds the working memory: arcs, runs, overlays)
CLUSTER_GAP = 4.0  # px: polygons closer than this are changed in one chunk (regularizing moves an edge ~1-2 px)


def regularize_polygons(polygons: np.ndarray, min_iou: float = DEFAULT_REGULARIZE_IOU) -> tuple[np.ndarray, np.ndarray]:
    """Regularize ``polygons`` ``(P,)`` (coordinates in square pixels); returns the new polygons and ``(P,)``
    bool "kept its original" (the guard refused the regularized shape)."""

    def run(part: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        topo = build_topology(part)
        straight = straighten(topo)
        theta = group_orientations(topo, straight)

        def change(topo_, frozen, arcs):
            return regularize_arcs(topo_, frozen, arcs, theta, straight)

        return reshape(part, change, min_iou, topo)

    return in_chunks(_snapped(polygons), run)


def smooth_polygons(polygons: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Smooth ``polygons`` ``(P,)`` (pixel coordinates); returns the new polygons and ``(P,)`` bool "kept"."""
    return in_chunks(_snapped(polygons), lambda part: reshape(part, smooth_arcs, SMOOTH_MIN_IOU, build_topology(part)))


def in_chunks(polygons: np.ndarray, run: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
              chunk: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``run`` over chunks of at most ``chunk`` polygons (more for one large cluster), so the working memory is
    that of a chunk, not of every polygon at once.

    A chunk holds whole **clusters**: polygons closer than :data:`CLUSTER_GAP` px are never split, so every pair
    that a change could bring into contact is checked inside one ``run``. A new overlap across clusters (a
    change that moved an edge further than that) is caught at the end and both groups keep their originals.
    """
    polygons = np.asarray(polygons, dtype=object)
    chunk = chunk or CHUNK
    if len(polygons) <= chunk:
        return run(polygons)
    clusters = touching_groups(polygons, distance=CLUSTER_GAP)
    order = np.argsort(clusters, kind="stable")
    bounds = np.flatnonzero(np.diff(clusters[order])) + 1
    out, kept = polygons.copy(), np.zeros(len(polygons), dtype=bool)
    batch: list[np.ndarray] = []
    size = 0
    for members in [*np.split(order, bounds), None]:
        if batch and (members is None or size + len(members) > chunk):
            idx = np.concatenate(batch)
            out[idx], kept[idx] = run(polygons[idx])
            batch, size = [], 0
        if members is not None:
            batch.append(members)
            size += len(members)
    _undo_cross_cluster_overlaps(polygons, out, kept, clusters)
    return out, kept


def _undo_cross_cluster_overlaps(old: np.ndarray, new: np.ndarray, kept: np.ndarray, clusters: np.ndarray) -> None:
    """Give both clusters of any new overlap between polygons of different clusters their originals back."""
    left, right = shapely.STRtree(new).query(new, predicate="intersects")
    other = clusters[left] != clusters[right]
    left, right = left[other], right[other]
    if len(left) == 0:
        return
    hit = ~shapely.touches(new[left], new[right])
    for cluster in np.unique(np.concatenate([clusters[left[hit]], clusters[right[hit]]])).tolist():
        members = clusters == cluster
        new[members], kept[members] = old[members], True


def _snapped(polygons: np.ndarray) -> np.ndarray:
    """Coordinates on :data:`GRID`, collinear vertices kept (they may be nodes of a neighbour)."""
    out = shapely.set_precision(np.asarray(polygons, dtype=object), GRID, mode="pointwise")
    return np.asarray(out, dtype=object)


def postprocess(segments: Any, transform: Affine, params: Any) -> Any:
    """The run's polygons (a GeoDataFrame in map coordinates of the processing grid ``transform``) regularized
    or smoothed as ``params`` (a :class:`~segearth_geo.params.SegmentParams`) asks; ``area_m2`` re-measured,
    ``min_area`` applied again. Returns ``segments`` itself when there is nothing to do."""
    from segearth_geo.vectorize import area_m2, to_map

    if not (params.regularize or params.smooth) or len(segments) == 0:
        return segments
    geoms = np.asarray(segments.geometry.values, dtype=object)
    todo = np.flatnonzero(shapely.get_type_id(geoms) == 3)
    scale = _square_pixels(segments.crs, transform, geoms[todo])  # (sx, sy): pixel -> square ground pixels
    to_work = ~transform
    work = shapely.transform(geoms[todo], lambda xy: _apply(to_work, xy) * scale)
    if params.regularize:
        iou = DEFAULT_REGULARIZE_IOU if params.regularize_iou is None else params.regularize_iou
        changed, _ = regularize_polygons(work, iou)
    else:
        changed, _ = smooth_polygons(work)
    geoms = geoms.copy()
    geoms[todo] = to_map(shapely.transform(changed, lambda xy: xy / scale), transform)
    out = segments.copy()
    out = out.set_geometry(np.asarray(geoms, dtype=object), crs=segments.crs)
    if "area_m2" in out:
        out["area_m2"] = area_m2(geoms, segments.crs)
        if params.min_area:
            out = out[out["area_m2"].to_numpy() >= float(params.min_area)]
    return out.reset_index(drop=True)


def _apply(affine: Affine, xy: np.ndarray) -> np.ndarray:
    a, b, c, d, e, f = affine.a, affine.b, affine.c, affine.d, affine.e, affine.f
    return np.column_stack([a * xy[:, 0] + b * xy[:, 1] + c, d * xy[:, 0] + e * xy[:, 1] + f])


def _square_pixels(crs: Any, transform: Affine, geoms: np.ndarray) -> np.ndarray:
    """``(2,)`` factors that make one processing pixel square on the ground (mean side 1) around ``geoms``: a
    geographic grid's pixels are narrower east-west than north-south away from the equator."""
    if crs is None or len(geoms) == 0:
        return np.ones(2)
    from rasterio.windows import from_bounds

    from segearth_geo.errors import RasterError
    from segearth_geo.georef import native_gsd

    try:
        from rasterio.crs import CRS

        window = from_bounds(*shapely.total_bounds(geoms), transform=transform)
        gx, gy = native_gsd(CRS.from_user_input(crs.to_wkt()), transform, window)  # a pyproj CRS from geopandas
    except (RasterError, ValueError):
        return np.ones(2)
    if not (math.isfinite(gx) and math.isfinite(gy) and gx > 0 and gy > 0):
        return np.ones(2)
    mean = math.sqrt(gx * gy)
    return np.array([gx / mean, gy / mean])


__all__ = ["DEFAULT_REGULARIZE_IOU", "SMOOTH_MIN_IOU", "in_chunks", "postprocess", "regularize_polygons",
           "smooth_polygons"]
