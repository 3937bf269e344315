"""Masks -> polygons, map transforms, true areas in m², coverage simplification."""

from __future__ import annotations

import math
import sys
import warnings

import numpy as np
import pytest
import shapely
import shapely.geometry
from affine import Affine
from rasterio.crs import CRS

from segearth_geo.vectorize import (
    area_m2,
    mask_pieces,
    normalise_label,
    simplify_coverage,
    to_map,
)

# WGS84 ellipsoid
A = 6378137.0
F = 1 / 298.257223563
B = A * (1 - F)
E = math.sqrt(1 - (B / A) ** 2)


def _authalic_q(lat_deg: float) -> float:
    s = math.sin(math.radians(lat_deg))
    return s / (1 - E**2 * s**2) + math.log((1 + E * s) / (1 - E * s)) / (2 * E)


def ellipsoid_cell_area(lon0: float, lat0: float, lon1: float, lat1: float) -> float:
    """Exact area (m²) of a lon/lat rectangle on the WGS84 ellipsoid (closed-form, authalic)."""
    return B**2 / 2 * math.radians(lon1 - lon0) * (_authalic_q(lat1) - _authalic_q(lat0))


def test_normalise_label():
    assert normalise_label("  Tennis\tCOURT  ") == "tennis court"
    assert normalise_label("") == ""


def test_mask_pieces_regions_holes_and_sums():
    mask = np.zeros((12, 14), bool)
    mask[1:9, 1:9] = True
    mask[3:6, 3:6] = False  # hole
    mask[9, 9] = True  # touches the square only at a corner: its own piece
    prob = np.where(mask, 0.8, 0.1).astype(np.float32)
    prob[1, 1] = 1.0
    prob[9, 9] = 0.3
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no NotGeoreferencedWarning from burning the pieces back
        pieces = mask_pieces(mask, prob, origin=(100, 200))
    assert len(pieces) == 2
    square = max(pieces, key=lambda p: p.pixels)
    speck = min(pieces, key=lambda p: p.pixels)
    assert square.pixels == 64 - 9 and speck.pixels == 1
    assert square.prob_sum == pytest.approx(54 * 0.8 + 1.0) and speck.prob_sum == pytest.approx(0.3)
    assert len(square.geometry.interiors) == 1
    assert square.geometry.bounds == (101, 201, 109, 209)  # pixel edges, shifted by origin
    assert square.geometry.area == 55
    assert speck.geometry.equals(shapely.box(109, 209, 110, 210))


def test_to_map_applies_the_affine_once():
    transform = Affine(0.5, 0, 390000, 0, -0.5, 5820000)
    out = to_map([shapely.box(2, 4, 6, 10)], transform)[0]
    assert out.equals(shapely.box(390001, 5819995, 390003, 5819998))


def test_area_utm_is_planar_metres():
    box = shapely.box(390000, 5819000, 390100, 5819050)
    assert area_m2([box], CRS.from_epsg(32633))[0] == pytest.approx(5000.0)


def test_area_geographic_is_geodesic():
    cell = shapely.box(13.40, 52.50, 13.41, 52.51)
    expected = ellipsoid_cell_area(13.40, 52.50, 13.41, 52.51)
    got = area_m2([cell], CRS.from_epsg(4326))[0]
    assert got == pytest.approx(expected, rel=1e-6)
    # A 1-degree cell at the equator (~12 309 km²); edges densified so that the geodesic
    # polygon follows the parallels of the closed form.
    equator = area_m2([shapely.segmentize(shapely.box(0, 0, 1, 1), 0.001)], CRS.from_epsg(4326))[0]
    assert equator == pytest.approx(ellipsoid_cell_area(0, 0, 1, 1), rel=1e-6)
    assert 1.2308e10 < equator < 1.2310e10


def test_area_web_mercator_is_true_ground_area():
    # 100 m x 100 m in Web Mercator units near Berlin is ~ (100 cos(lat))² on the ground.
    from pyproj import Transformer

    x, y = Transformer.from_crs(4326, 3857, always_xy=True).transform(13.4, 52.5)
    got = area_m2([shapely.box(x, y, x + 100, y + 100)], CRS.from_epsg(3857))[0]
    assert got == pytest.approx((100 * math.cos(math.radians(52.5))) ** 2, rel=5e-3)


def test_area_without_crs_is_nan():
    assert np.isnan(area_m2([shapely.box(0, 0, 1, 1)], None)[0])


def test_simplify_coverage_keeps_valid_and_reduces_vertices():
    rows, cols = np.mgrid[0:80, 0:80]
    disc = (rows - 40) ** 2 + (cols - 40) ** 2 < 30**2
    ring = (rows - 40) ** 2 + (cols - 40) ** 2 < 10**2
    mask = disc & ~ring
    piece = mask_pieces(mask, mask.astype(np.float32), (0, 0))[0]
    other = mask_pieces(np.ones((5, 5), bool), np.ones((5, 5), np.float32), (0, 0))[0]
    out = simplify_coverage(np.array([piece.geometry, other.geometry], dtype=object), 2.0)
    assert all(g.is_valid for g in out)
    assert shapely.get_num_coordinates(out[0]) < shapely.get_num_coordinates(piece.geometry) / 2
    assert len(out[0].interiors) == 1
    assert out[0].area == pytest.approx(piece.geometry.area, rel=0.05)
    assert not shapely.intersects(out[0], out[1]) or shapely.intersection(out[0], out[1]).area == 0
    with pytest.raises(ValueError):
        simplify_coverage(out, -1)


def _rasterio_polygons(mask: np.ndarray) -> list[bytes]:
    import rasterio.features

    return [shapely.to_wkb(shapely.geometry.shape(g)) for g, _ in
            rasterio.features.shapes(mask.view(np.uint8), mask=mask, connectivity=4)]


@pytest.mark.parametrize("seed, density, shape", [(0, 0.45, (97, 131)), (1, 0.6, (40, 300)), (2, 0.05, (64, 64))])
def test_direct_gdal_polygonize_equals_rasterio_shapes(seed, density, shape):
    from segearth_geo.polygonize import _GDAL, polygonize

    mask = np.random.default_rng(seed).random(shape) < density  # holes, corner contacts, one-pixel pieces
    mask[5:9, 5:9] = True
    mask[6:8, 6:8] = False  # a ring around a hole
    direct = _GDAL.polygonize(np.ascontiguousarray(mask).view(np.uint8))
    if sys.platform.startswith("linux"):
        assert direct is not None, "the GIL-free polygonizer should find rasterio's libgdal on Linux"
    expected = _rasterio_polygons(mask)
    got = [shapely.to_wkb(g) for g in polygonize(mask)]
    assert got == expected  # same polygons, same vertices, same order
    if direct is not None:
        assert [shapely.to_wkb(g) for g in direct] == expected


def test_polygonize_of_a_non_contiguous_view_and_rasterio_fallback(monkeypatch):
    from segearth_geo import polygonize as module

    mask = np.zeros((30, 40), bool)
    mask[3:20, 5:35] = True
    mask[8:12, 10:15] = False
    view = mask[2:28:1, 4:38]  # not C-contiguous
    expected = _rasterio_polygons(np.ascontiguousarray(view))
    assert [shapely.to_wkb(g) for g in module.polygonize(view)] == expected
    monkeypatch.setattr(module._GDAL, "polygonize", lambda mask: None)  # e.g. not Linux
    assert [shapely.to_wkb(g) for g in module.polygonize(view)] == expected


def test_drop_collinear_matches_simplify_zero_and_keeps_the_point_set():
    import rasterio.features

    from segearth_geo.vectorize import drop_collinear

    mask = np.random.default_rng(3).random((120, 120)) < 0.55
    pieces = []
    for r0 in (0, 60):  # vectorise quadrants, then union: the union has collinear vertices on the cuts
        for c0 in (0, 60):
            quadrant = np.ascontiguousarray(mask[r0:r0 + 60, c0:c0 + 60])
            pieces += [shapely.geometry.shape(g) for g, _ in rasterio.features.shapes(
                quadrant.view(np.uint8), mask=quadrant, connectivity=4, transform=Affine.translation(c0, r0))]
    merged = shapely.get_parts(shapely.union_all(np.array(pieces, dtype=object)))
    dropped = drop_collinear(merged)
    assert shapely.get_num_coordinates(dropped).sum() < shapely.get_num_coordinates(merged).sum()
    assert shapely.equals(dropped, merged).all()
    assert (shapely.normalize(dropped) == shapely.normalize(shapely.simplify(merged, 0.0))).all()


def test_vectoriser_threads_leave_warnings_alone():
    """rasterio's rasterize hides a warning about its own in-memory dataset with catch_warnings, which races between
    threads (the warning escapes, an "ignore" can stay in the filters): vectoriser threads must not race there. In a
    subprocess, as pytest resets the filters around each test."""
    import subprocess

    script = """
import sys, threading, warnings
import numpy as np
from segearth_geo.vectorize import mask_pieces
before = list(warnings.filters)
rng = np.random.default_rng(0)
mask, prob = rng.random((64, 64)) > 0.6, rng.random((64, 64)).astype(np.float32)
threads = [threading.Thread(target=lambda: [mask_pieces(mask, prob, (0, 0)) for _ in range(100)]) for _ in range(4)]
[t.start() for t in threads]
[t.join() for t in threads]
print("filters kept" if warnings.filters == before else f"filters changed: {warnings.filters[:2]}")
"""
    done = subprocess.run([sys.executable, "-W", "default", "-c", script], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "filters kept" and "Warning" not in done.stderr, (done.stdout, done.stderr)
