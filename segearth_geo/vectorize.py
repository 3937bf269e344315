"""Masks -> polygons, and what is measured on polygons (labels, areas, simplification).

Polygons are built in *processing-grid pixel coordinates* (``x`` = column, ``y`` = row,
both integers on pixel edges) and moved to map coordinates only once, at the end, by
:func:`to_map`. Integer pixel coordinates are exact in float64, so pieces of one object
vectorised in neighbouring chip cores share bit-identical edges and can be merged
exactly (see :mod:`segearth_geo.stitch`). Connectivity is 4 (pixels touching only at a
corner belong to different polygons), everywhere.
"""

from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass

import numpy as np
import rasterio.features
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from segearth_geo.errors import UsageError
from segearth_geo.polygonize import polygonize

_SCALE_TOLERANCE = 0.01  # projected CRSs whose areal scale error is below this use planar areas
# rasterio.features.rasterize hides a warning about its own in-memory dataset with warnings.catch_warnings, which
# is not thread-safe: run by several vectoriser threads at once, one thread's exit restores the process's warning
# filters while another is inside, so the warning escapes at random and filters can be left changed. One at a time.
_RASTERIZE = threading.Lock()


def normalise_label(text: str) -> str:
    """The stitching key of a phrase: lower case, trimmed, inner whitespace collapsed; text that is not
    valid Unicode (a lone surrogate from undecodable bytes) is kept as ``\\udcXX`` escapes, so it can be written."""
    text = str(text).encode("utf-8", "backslashreplace").decode("utf-8")
    return re.sub(r"\s+", " ", text).strip().lower()


@dataclass
class Piece:
    """One 4-connected region of a label's thresholded mask inside one chip core.

    Stored compactly, because a scene's pieces are all kept until stitching ends: the
    rings as ``int32`` pixel-corner coordinates (8 bytes per vertex, about half of a GEOS
    polygon, and exact); the shapely polygon is built only on demand.

    Attributes:
        rings: exterior then holes, each ``int32`` ``(n, 2)`` of ``(col, row)`` corners, closed.
        prob_sum: sum of the probabilities of its pixels.
        pixels: number of its pixels.
    """

    rings: list[np.ndarray]
    prob_sum: float
    pixels: int

    @property
    def bounds(self) -> tuple[int, int, int, int]:
        """``(min col, min row, max col, max row)`` in pixel-corner coordinates."""
        lo, hi = self.rings[0].min(axis=0), self.rings[0].max(axis=0)
        return int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1])

    @property
    def geometry(self) -> shapely.Polygon:
        """The piece as a shapely polygon in processing-grid pixel coordinates (built on each call)."""
        rings = [shapely.linearrings(r.astype(np.float64)) for r in self.rings]
        return shapely.polygons(rings[0], holes=rings[1:] or None)

    @classmethod
    def from_polygon(cls, polygon: shapely.Polygon, prob_sum: float, pixels: int) -> Piece:
        """A piece from an integer-coordinate shapely polygon (e.g. a union of pieces)."""
        rings = [polygon.exterior, *polygon.interiors]
        return cls([np.asarray(r.coords, dtype=np.float64).astype(np.int32) for r in rings], prob_sum, pixels)


def _ring_area2(ring: np.ndarray) -> int:
    """Twice the absolute area of a closed integer ring (shoelace, exact in int64)."""
    x, y = ring[:, 0].astype(np.int64), ring[:, 1].astype(np.int64)
    return abs(int(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1])))


def mask_pieces(mask: np.ndarray, probability: np.ndarray, origin: tuple[int, int]) -> list[Piece]:
    """Vectorise a boolean ``mask`` ``(h, w)`` whose top-left pixel is grid pixel ``origin``.

    ``origin`` is ``(col, row)``; ``probability`` ``(h, w)`` gives each piece's
    ``prob_sum``. Returns one :class:`Piece` per 4-connected region, in GDAL's scan order.
    """
    if not mask.any():
        return []
    # Polygons in chip-core pixel corners (identity transform: exact small integers).
    shapes = polygonize(mask)
    rings_flat, ring_owner = shapely.get_rings(shapes, return_index=True)
    coords, vertex_ring = shapely.get_coordinates(rings_flat, return_index=True)  # (v, 2), (v,)
    ring_arrays = np.split(coords.astype(np.int32) + np.array(origin, dtype=np.int32),
                           np.cumsum(np.bincount(vertex_ring, minlength=len(rings_flat)))[:-1])
    rings: list[list[np.ndarray]] = [[] for _ in shapes]
    for owner, ring in zip(ring_owner.tolist(), ring_arrays):
        rings[owner].append(ring)
    # A piece's area in pixel units is exactly its pixel count.
    pixels = [(_ring_area2(r[0]) - sum(_ring_area2(h) for h in r[1:])) // 2 for r in rings]
    values = probability[mask]  # (n,) probabilities of the masked pixels
    lo, hi = float(values.min()), float(values.max())
    if len(rings) == 1 or lo == hi:  # one piece, or a constant (binary) mask: no burning needed
        sums = [float(values.sum(dtype=np.float64))] if len(rings) == 1 else [lo * n for n in pixels]
        return [Piece(r, s, n) for r, s, n in zip(rings, sums, pixels)]
    # Burn each polygon's number back (pixel-centre rule: exact for pixel-edge polygons) to
    # sum the probabilities per piece; ids: (h, w) int32, 0 outside the mask.
    # Shapes and transform are both shifted by one pixel: rasterio warns (NotGeoreferencedWarning) on an
    # identity transform, and a warnings filter is process-global, so not safe in the vectoriser thread.
    shifted = shapely.transform(shapes, lambda xy: xy + 1.0)
    with _RASTERIZE:
        ids = rasterio.features.rasterize(zip(shifted, range(1, len(shapes) + 1)), out_shape=mask.shape,
                                          transform=Affine.translation(1.0, 1.0), fill=0, dtype="int32")
    sums = np.bincount(ids[mask], weights=values, minlength=len(rings) + 1)
    return [Piece(r, float(sums[i + 1]), pixels[i]) for i, r in enumerate(rings)]


def canonical(geoms: np.ndarray) -> np.ndarray:
    """Valid polygons in shapely's normal form (for exact comparison), collinear vertices removed."""
    geoms = drop_collinear(np.asarray(geoms, dtype=object))
    invalid = ~shapely.is_valid(geoms)
    if invalid.any():
        geoms[invalid] = shapely.make_valid(geoms[invalid])
    return shapely.normalize(geoms)


def drop_collinear(geoms: np.ndarray) -> np.ndarray:
    """Polygons ``(n,)`` with every vertex where a ring goes straight on removed; exact.

    Meant for integer pixel-corner coordinates (GDAL's polygons, unions of pieces), where
    the cross product of neighbouring edges is exact in float64. The point set is unchanged
    (unlike ``shapely.simplify(g, 0)``, which is also much slower); non-polygons are returned
    as they are.
    """
    out = np.asarray(geoms, dtype=object).copy()
    is_poly = (shapely.get_type_id(out) == 3) & ~shapely.is_empty(out)
    polys = out[is_poly]
    if len(polys) == 0:
        return out
    # rings: exterior then holes of each polygon, in order; ring_owner: (r,) polygon of each ring
    rings, ring_owner = shapely.get_rings(polys, return_index=True)
    coords, vertex_ring = shapely.get_coordinates(rings, return_index=True)  # (v, 2), (v,)
    # Drop each ring's closing vertex, then compare every vertex with its cyclic neighbours.
    n_per_ring = np.bincount(vertex_ring, minlength=len(rings))
    first = np.concatenate([[0], np.cumsum(n_per_ring)[:-1]])
    last = first + n_per_ring - 1
    open_ = np.ones(len(coords), dtype=bool)
    open_[last] = False
    coords, vertex_ring = coords[open_], vertex_ring[open_]
    n = n_per_ring - 1
    first = np.concatenate([[0], np.cumsum(n)[:-1]])
    pos = np.arange(len(coords)) - first[vertex_ring]
    prev = first[vertex_ring] + (pos - 1) % n[vertex_ring]
    nxt = first[vertex_ring] + (pos + 1) % n[vertex_ring]
    d_in, d_out = coords - coords[prev], coords[nxt] - coords
    keep = d_in[:, 0] * d_out[:, 1] - d_in[:, 1] * d_out[:, 0] != 0
    if keep.all():
        return out
    kept_ring = vertex_ring[keep]
    if np.bincount(kept_ring, minlength=len(rings)).min() < 3:  # degenerate ring: leave these as they are
        return out
    # Close each ring again by repeating its first kept vertex.
    kept = coords[keep]
    ring_first = np.flatnonzero(np.r_[True, kept_ring[1:] != kept_ring[:-1]])
    order = np.argsort(np.r_[kept_ring, kept_ring[ring_first]], kind="stable")
    closed = np.r_[kept, kept[ring_first]][order]
    new_rings = shapely.linearrings(closed, indices=np.r_[kept_ring, kept_ring[ring_first]][order])
    out[is_poly] = shapely.polygons(new_rings, indices=ring_owner)
    return out


def to_map(geoms: np.ndarray, transform: Affine) -> np.ndarray:
    """Apply the processing-grid ``transform`` (pixel -> map) to pixel-coordinate geometries."""
    a, b, c, d, e, f = transform.a, transform.b, transform.c, transform.d, transform.e, transform.f

    def affine(xy: np.ndarray) -> np.ndarray:  # xy: (n, 2) pixel coords -> (n, 2) map coords
        x, y = xy[:, 0], xy[:, 1]
        return np.column_stack([a * x + b * y + c, d * x + e * y + f])

    return shapely.normalize(shapely.transform(np.asarray(geoms, dtype=object), affine))


def simplify_coverage(geoms: np.ndarray, tolerance: float) -> np.ndarray:
    """Simplify polygons of **one** label (disjoint, so a coverage) keeping shared topology.

    ``tolerance`` is in map units (roughly the square root of the largest triangle area
    removed, GEOS coverage simplification). Results are valid; polygons that would
    collapse are returned empty (callers drop them).
    """
    if tolerance < 0 or not math.isfinite(tolerance):
        raise UsageError(f"simplify must be a non-negative tolerance in map units, got {tolerance!r}")
    if len(geoms) == 0 or tolerance == 0:
        return np.asarray(geoms, dtype=object)
    simplified = shapely.coverage_simplify(np.asarray(geoms, dtype=object), tolerance)
    simplified = shapely.make_valid(simplified)
    # make_valid may return a collection; keep its polygonal part as one (multi)polygon.
    return np.array([_polygonal(g) for g in simplified], dtype=object)


def _polygonal(geom: shapely.Geometry) -> shapely.Geometry:
    if isinstance(geom, (shapely.Polygon, shapely.MultiPolygon)):
        return geom
    parts = [p for p in shapely.get_parts(geom) if isinstance(p, shapely.Polygon) and not p.is_empty]
    return shapely.MultiPolygon(parts) if parts else shapely.Polygon()


def area_m2(geoms: np.ndarray, crs: CRS | None) -> np.ndarray:
    """True areas in m² of map-coordinate polygons in ``crs``.

    * geographic CRS: geodesic area on the CRS's ellipsoid (``pyproj.Geod``);
    * projected CRS whose areal scale at the polygons' centre is within 1 % of 1 (UTM,
      national grids): planar area times the square of the linear unit in metres;
    * other projected CRSs (Web Mercator away from the equator): geodesic area after
      transforming to the CRS's geographic CRS;
    * no CRS: ``nan`` (pixel coordinates have no ground size).
    """
    geoms = np.asarray(geoms, dtype=object)
    if crs is None:
        return np.full(len(geoms), np.nan)
    if len(geoms) == 0:
        return np.zeros(0)
    from pyproj import CRS as ProjCRS
    from pyproj import Proj, Transformer

    pcrs = ProjCRS.from_user_input(crs.to_wkt())
    geod = pcrs.get_geod() or ProjCRS.from_epsg(4326).get_geod()
    if pcrs.is_geographic:  # rasterio/GDAL hand over geographic coordinates as (lon, lat)
        return np.array([abs(geod.geometry_area_perimeter(g)[0]) for g in geoms])
    unit = pcrs.axis_info[0].unit_conversion_factor if pcrs.axis_info else 1.0
    geographic = pcrs.geodetic_crs or ProjCRS.from_epsg(4326)
    to_lonlat = Transformer.from_crs(pcrs, geographic, always_xy=True)
    minx, miny, maxx, maxy = shapely.total_bounds(geoms)
    lon, lat = to_lonlat.transform((minx + maxx) / 2, (miny + maxy) / 2)
    try:
        scale = Proj(pcrs).get_factors(lon, lat).areal_scale
    except Exception:  # noqa: BLE001 - pyproj raises several types; no factor -> geodesic, always right
        scale = math.inf
    if math.isfinite(scale) and abs(scale - 1.0) <= _SCALE_TOLERANCE:
        return shapely.area(geoms) * unit * unit

    def project(xy: np.ndarray) -> np.ndarray:  # (n, 2) map -> (n, 2) lon, lat
        lon_, lat_ = to_lonlat.transform(xy[:, 0], xy[:, 1])
        return np.column_stack([lon_, lat_])

    lonlat = shapely.transform(geoms, project)
    return np.array([abs(geod.geometry_area_perimeter(g)[0]) for g in lonlat])


def window_box(window: Window) -> shapely.Polygon:
    """The footprint of a pixel ``window`` as a polygon in pixel coordinates."""
    col, row = float(window.col_off), float(window.row_off)
    return shapely.box(col, row, col + float(window.width), row + float(window.height))
