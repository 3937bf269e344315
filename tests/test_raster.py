"""Scene opening and windowed reads on real rasters written by the tests."""

from __future__ import annotations

import math

import numpy as np
import pytest
import rasterio
import rasterio.warp
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import Geod
from rasterio.enums import ColorInterp
from rasterio.transform import from_origin
from rasterio.windows import Window

from segearth_geo.chips import chip_grid
from segearth_geo.errors import UsageError
from segearth_geo.raster import open_scene
from tests.geo_fixtures import (
    UTM,
    UTM_ORIGIN,
    WGS84_ORIGIN,
    pattern,
    write_alpha,
    write_geographic,
    write_internal_mask,
    write_nodata_collar,
    write_raster,
    write_uint16_bgrn,
    write_utm,
    write_web_mercator,
)

GEOD = Geod(ellps="WGS84")


def read_all(reader) -> tuple[np.ndarray, np.ndarray]:
    s = reader.scene
    return reader.read(Window(0, 0, s.width, s.height))


def stitch_chips(reader, chip_size: int, overlap: int) -> np.ndarray:
    """Paste every chip's core into one ``(h, w, 3)`` array."""
    s = reader.scene
    out = np.full((s.height, s.width, 3), -1, dtype=np.int16)
    for chip in chip_grid(s.width, s.height, chip_size, overlap):
        rgb, _ = reader.read(chip.window)
        assert rgb.shape == (chip.window.height, chip.window.width, 3)
        c, lc = chip.core, chip.core_in_chip
        out[c.row_off : c.row_off + c.height, c.col_off : c.col_off + c.width] = rgb[
            lc.row_off : lc.row_off + lc.height, lc.col_off : lc.col_off + lc.width
        ]
    return out


# --- georeferencing and grid ---------------------------------------------------------------


def test_utm_scene_is_the_source_grid(tmp_path) -> None:
    path = write_utm(tmp_path / "utm.tif", 300, 200)
    with open_scene(path) as reader:
        s = reader.scene
        rgb, valid = read_all(reader)
    assert s.crs.to_epsg() == 32633
    assert s.transform == from_origin(*UTM_ORIGIN, 0.5, 0.5)
    assert (s.width, s.height) == (300, 200)
    assert s.gsd == pytest.approx(0.5) and s.gsd_xy == pytest.approx((0.5, 0.5))
    assert s.bands == (1, 2, 3) and s.dtype == "uint8" and s.stretch is None and s.mask == "none"
    np.testing.assert_array_equal(rgb, pattern(3, 200, 300).transpose(1, 2, 0))
    assert valid.all()


def test_odd_size_chips_reassemble_the_scene(tmp_path) -> None:
    path = write_utm(tmp_path / "odd.tif", 257, 131)
    with open_scene(path) as reader:
        stitched = stitch_chips(reader, chip_size=64, overlap=12)
    np.testing.assert_array_equal(stitched, pattern(3, 131, 257).transpose(1, 2, 0))


def test_gsd_resampling_keeps_map_positions(tmp_path) -> None:
    # One bright 2-pixel-wide column at source columns 150-151 (x = origin + 75.0 .. 76.0 m).
    data = np.zeros((1, 100, 300), dtype=np.uint8)
    data[:, :, 150:152] = 200
    path = write_raster(tmp_path / "col.tif", data, crs=UTM, transform=from_origin(*UTM_ORIGIN, 0.5, 0.5))
    with open_scene(path, gsd=1.0) as reader:
        s = reader.scene
        rgb, _ = read_all(reader)
    assert (s.width, s.height) == (150, 50)
    assert s.transform == from_origin(*UTM_ORIGIN, 1.0, 1.0)
    assert s.gsd == pytest.approx(1.0)
    bright = np.flatnonzero(rgb[10, :, 0] > 100)
    x_left, _ = s.transform @ (bright[0], 0)
    assert list(bright) == [75] and x_left == UTM_ORIGIN[0] + 75.0


@pytest.mark.parametrize("gsd", [0.3, 0.75, 1.3])
def test_resampled_chips_equal_one_resampled_read(tmp_path, gsd: float) -> None:
    path = write_utm(tmp_path / "u.tif", 301, 203)
    with open_scene(path, gsd=gsd) as reader:
        s = reader.scene
        full, _ = read_all(reader)
        stitched = stitch_chips(reader, chip_size=48, overlap=8)
        # the grid covers exactly the raster: processing transform maps its far corner onto the source's
        assert s.transform @ (s.width, s.height) == pytest.approx(from_origin(*UTM_ORIGIN, 0.5, 0.5) @ (301, 203))
    assert (s.width, s.height) == (round(301 * 0.5 / gsd), round(203 * 0.5 / gsd))
    np.testing.assert_array_equal(stitched, full)


def test_geographic_gsd_uses_metres_per_degree_at_centre(tmp_path) -> None:
    path = write_geographic(tmp_path / "geo.tif", 300, 200, deg=1e-5)
    with open_scene(path) as reader:
        native = reader.scene
    lon_c, lat_c = WGS84_ORIGIN[0] + 150e-5, WGS84_ORIGIN[1] - 100e-5
    gx = GEOD.inv(lon_c - 5e-4, lat_c, lon_c + 5e-4, lat_c)[2] / 100  # metres per 1e-5 degree of longitude
    gy = GEOD.inv(lon_c, lat_c - 5e-4, lon_c, lat_c + 5e-4)[2] / 100
    assert native.crs.to_epsg() == 4326
    assert native.gsd_xy == pytest.approx((gx, gy), rel=1e-3)
    with open_scene(path, gsd=1.0) as reader:
        s = reader.scene
        rgb, valid = read_all(reader)
    assert (s.width, s.height) == (round(300 * gx), round(200 * gy))
    assert s.gsd_xy == pytest.approx((1.0, 1.0), rel=0.01)
    assert s.transform @ (0, 0) == pytest.approx(WGS84_ORIGIN)
    assert s.transform @ (s.width, s.height) == pytest.approx((WGS84_ORIGIN[0] + 300e-5, WGS84_ORIGIN[1] - 200e-5))
    assert rgb.shape == (s.height, s.width, 3) and valid.all()


def test_web_mercator_gsd_is_ground_distance(tmp_path) -> None:
    path = write_web_mercator(tmp_path / "wm.tif", 300, 200, step=0.5)
    with open_scene(path) as reader:
        s = reader.scene
    # ground length of the middle row, measured geodesically, over its pixel count
    west, y = s.transform @ (0, 100)
    east, _ = s.transform @ (300, 100)
    (lon0, lon1), (lat0, lat1) = rasterio.warp.transform(s.crs, "EPSG:4326", [west, east], [y, y])
    ground = GEOD.inv(lon0, lat0, lon1, lat1)[2] / 300
    assert ground == pytest.approx(0.5 * math.cos(math.radians(lat0)), rel=5e-3)  # spherical-Mercator rule
    assert s.gsd_xy[0] == pytest.approx(ground, rel=1e-3)
    with open_scene(path, gsd=0.5) as reader:
        assert reader.scene.width == round(300 * ground / 0.5)


# --- bands and radiometry ------------------------------------------------------------------


def test_uint16_default_rgb_from_colour_interpretation_and_scene_stretch(tmp_path) -> None:
    path = write_uint16_bgrn(tmp_path / "bgrn.tif", 257, 131)
    data = pattern(4, 131, 257, "uint16").astype(np.float64)
    with open_scene(path) as reader:
        s = reader.scene
        rgb, _ = read_all(reader)
        corner, _ = reader.read(Window(200, 100, 57, 31))  # a chip far from the scene's centre
    assert s.bands == (3, 2, 1) and s.dtype == "uint16"
    expected_stretch = [tuple(np.percentile(data[b - 1], (2, 98))) for b in s.bands]
    np.testing.assert_allclose(np.array(s.stretch), np.array(expected_stretch), rtol=1e-6)  # (3, 2): lo, hi per band
    lo, hi = s.stretch[0]
    expected_red = np.clip((data[2] - lo) * 255 / (hi - lo) + 0.5, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(rgb[..., 0], expected_red)
    # the stretch is the scene's, not the chip's: the same pixels read the same in any window
    np.testing.assert_array_equal(corner, rgb[100:131, 200:257])


def test_stretch_from_decimated_read_of_a_large_scene(tmp_path) -> None:
    data = pattern(1, 300, 2600, "uint16")
    path = write_raster(tmp_path / "wide.tif", data, crs=UTM, transform=from_origin(*UTM_ORIGIN, 1, 1))
    with open_scene(path) as reader:
        lo, hi = reader.scene.stretch[0]
    exact_lo, exact_hi = np.percentile(data, (2, 98))
    span = exact_hi - exact_lo
    assert abs(lo - exact_lo) < 0.02 * span and abs(hi - exact_hi) < 0.02 * span


@pytest.mark.parametrize(
    ("bands", "expected"),
    [("4,3,2", (4, 3, 2)), ((4,), (4, 4, 4)), ([1, 2], (1, 2, 1)), ("2", (2, 2, 2))],
)
def test_band_selection(tmp_path, bands, expected) -> None:
    path = write_uint16_bgrn(tmp_path / "bgrn.tif", 40, 30)
    with open_scene(path, bands=bands) as reader:
        rgb, _ = read_all(reader)
        s = reader.scene
    assert s.bands == expected and len(s.stretch) == 3
    if expected[0] == expected[1] == expected[2]:
        assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()


@pytest.mark.parametrize(("bands", "message"), [("5", "band 5 does not exist.*4 bands"), ("0,1,2", "band 0"),
                                                 ("1,2,3,4", "got 4"), ("a,b", "comma-separated")])
def test_bad_band_selection(tmp_path, bands, message) -> None:
    path = write_uint16_bgrn(tmp_path / "bgrn.tif", 40, 30)
    with pytest.raises(UsageError, match=message):
        with open_scene(path, bands=bands):
            pass


def test_single_and_two_band_rasters_default_to_grey(tmp_path) -> None:
    for count in (1, 2):
        path = write_utm(tmp_path / f"b{count}.tif", 50, 40, count=count)
        with open_scene(path) as reader:
            rgb, _ = read_all(reader)
            assert reader.scene.bands == (1, 1, 1)
        np.testing.assert_array_equal(rgb[..., 2], pattern(count, 40, 50)[0])


# --- validity ------------------------------------------------------------------------------


def interior(height: int, width: int, collar: int) -> np.ndarray:
    inside = np.zeros((height, width), dtype=bool)
    inside[collar:-collar, collar:-collar] = True
    return inside


def test_nodata_collar_is_invalid(tmp_path) -> None:
    path = write_nodata_collar(tmp_path / "nd.tif", 120, 90, collar=10)
    with open_scene(path) as reader:
        rgb, valid = read_all(reader)
        assert reader.scene.mask == "nodata" and reader.scene.nodata == 0
    np.testing.assert_array_equal(valid, interior(90, 120, 10))
    assert (rgb[~valid] == 0).all()


def test_nodata_collar_excluded_from_stretch(tmp_path) -> None:
    path = write_nodata_collar(tmp_path / "nd16.tif", 120, 90, collar=20, nodata=0, dtype="uint16")
    with open_scene(path) as reader:
        lo, _ = reader.scene.stretch[0]
    data = pattern(3, 90, 120, "uint16")[0][interior(90, 120, 20)]
    assert lo == pytest.approx(np.percentile(data, 2))


def test_alpha_band_masks_and_is_not_a_colour(tmp_path) -> None:
    path = write_alpha(tmp_path / "rgba.tif", 120, 90, collar=10)
    with open_scene(path) as reader:
        rgb, valid = read_all(reader)
        s = reader.scene
    assert s.bands == (1, 2, 3) and s.mask == "alpha"
    np.testing.assert_array_equal(valid, interior(90, 120, 10))
    np.testing.assert_array_equal(rgb[valid], pattern(4, 90, 120).transpose(1, 2, 0)[..., :3][valid])


def test_internal_mask_band(tmp_path) -> None:
    path, expected = write_internal_mask(tmp_path / "mask.tif", 120, 90)
    with open_scene(path) as reader:
        _, valid = read_all(reader)
        assert reader.scene.mask == "mask"
    np.testing.assert_array_equal(valid, expected)


def test_float_nan_is_invalid(tmp_path) -> None:
    data = pattern(3, 30, 40, "float32")
    data[1, 5:10, 5:10] = np.nan
    path = write_raster(tmp_path / "f.tif", data, crs=UTM, transform=from_origin(*UTM_ORIGIN, 1, 1))
    with open_scene(path) as reader:
        rgb, valid = read_all(reader)
        assert reader.scene.stretch is not None
    assert (~valid).sum() == 25 and not valid[5:10, 5:10].any()
    assert rgb[valid].max() == 255 and rgb[valid].min() == 0


# --- bbox ----------------------------------------------------------------------------------


def test_bbox_in_scene_crs_crops_to_whole_pixels(tmp_path) -> None:
    path = write_utm(tmp_path / "utm.tif", 300, 200)
    x0, y0 = UTM_ORIGIN
    with open_scene(path, bbox=(x0 + 10.2, y0 - 50.0, x0 + 40.0, y0 - 20.1)) as reader:
        s = reader.scene
        rgb, _ = read_all(reader)
    assert s.source_window == Window(20, 40, 60, 60)  # rounded outward to whole source pixels
    assert s.transform @ (0, 0) == (x0 + 10.0, y0 - 20.0)
    np.testing.assert_array_equal(rgb, pattern(3, 200, 300).transpose(1, 2, 0)[40:100, 20:80])


def test_bbox_in_other_crs_is_transformed_and_clipped(tmp_path) -> None:
    path = write_utm(tmp_path / "utm.tif", 300, 200)
    with rasterio.open(path) as ds:
        bounds = ds.bounds
    # a lon/lat box around the raster's west half, reaching beyond its north and west edges
    (lon0, lon1), (lat0, lat1) = rasterio.warp.transform(
        UTM, "EPSG:4326", [bounds.left - 30, bounds.left + 75], [bounds.bottom + 20, bounds.top + 30]
    )
    with open_scene(path, bbox=(lon0, lat0, lon1, lat1), bbox_crs="EPSG:4326") as reader:
        s = reader.scene
    assert s.crs.to_epsg() == 32633  # the scene stays in the raster's CRS
    assert s.source_window.col_off == 0 and s.source_window.row_off == 0  # clipped at the raster edge
    # east edge at +75 m = 150 px; north-south: 80 m = 160 px, plus a few pixels because the
    # lon/lat box is slightly rotated in UTM (grid convergence) and its envelope is taken
    assert 148 <= s.source_window.width <= 154 and 160 <= s.source_window.height <= 170


def test_bbox_outside_raster_is_a_usage_error(tmp_path) -> None:
    path = write_utm(tmp_path / "utm.tif", 30, 20)
    with pytest.raises(UsageError, match="does not overlap"):
        with open_scene(path, bbox=(0, 0, 10, 10)):
            pass
    with pytest.raises(UsageError, match="does not overlap"):
        with open_scene(path, bbox=(0, 0, 1, 1), bbox_crs="EPSG:4326"):
            pass


# --- bad arguments ------------------------------------------------------------------------


@pytest.mark.parametrize("gsd", [0, -1.0, float("nan")])
def test_bad_gsd(tmp_path, gsd) -> None:
    with pytest.raises(UsageError, match="gsd"):
        with open_scene(write_utm(tmp_path / "u.tif", 20, 20), gsd=gsd):
            pass


def test_window_outside_grid(tmp_path) -> None:
    with open_scene(write_utm(tmp_path / "u.tif", 20, 20)) as reader:
        with pytest.raises(UsageError, match="inside"):
            reader.read(Window(10, 10, 20, 20))


def test_colorinterp_alpha_only_excluded_from_default(tmp_path) -> None:
    # grey + alpha (like a LA PNG): band 1 grey, band 2 alpha
    data = np.stack([pattern(1, 20, 30)[0], np.full((20, 30), 255, np.uint8)])
    path = write_raster(tmp_path / "la.tif", data, crs=UTM, transform=from_origin(*UTM_ORIGIN, 1, 1),
                        colorinterp=[ColorInterp.gray, ColorInterp.alpha], alpha="YES")
    with open_scene(path) as reader:
        assert reader.scene.bands == (1, 1, 1) and reader.scene.mask == "alpha"


@pytest.mark.parametrize("dtype", ["int16", "uint16", "int32", "float32"])
def test_stretch_table_and_arithmetic_agree(tmp_path, dtype) -> None:
    data = (pattern(3, 30, 40, "float32") * 3000 - (1000 if dtype != "uint16" else 0)).astype(dtype)
    path = write_raster(tmp_path / "s.tif", data, crs=UTM, transform=from_origin(*UTM_ORIGIN, 1, 1))
    with open_scene(path) as reader:
        rgb, _ = read_all(reader)
        stretch = reader.scene.stretch
    for band in range(3):
        lo, hi = stretch[band]
        expected = np.clip((data[band].astype(np.float64) - lo) * 255 / (hi - lo) + 0.5, 0, 255).astype(np.uint8)
        np.testing.assert_array_equal(rgb[..., band], expected)


def test_bbox_crs_needs_a_bbox_and_a_known_crs(tmp_path) -> None:
    path = write_utm(tmp_path / "u.tif", 20, 20)
    with pytest.raises(UsageError, match="without a bbox"):
        with open_scene(path, bbox_crs="EPSG:4326"):
            pass
    with pytest.raises(UsageError, match="unknown CRS"):
        with open_scene(path, bbox=(0, 0, 1, 1), bbox_crs="EPSG:99999999"):
            pass
    with pytest.raises(UsageError, match="minx < maxx"):
        with open_scene(path, bbox=(5, 0, 1, 1)):
            pass


@pytest.fixture(scope="module")
def utm_301x203(tmp_path_factory):
    return write_utm(tmp_path_factory.mktemp("prop") / "u.tif", 301, 203)


@settings(max_examples=40, deadline=None)
@given(
    x0=st.floats(-20, 140), y0=st.floats(-20, 90), w=st.floats(1, 200), h=st.floats(1, 120),
    gsd=st.one_of(st.none(), st.floats(0.2, 3.0)),
)
def test_grid_transform_maps_exactly_onto_the_bbox_window(utm_301x203, x0, y0, w, h, gsd) -> None:
    ox, oy = UTM_ORIGIN
    bbox = (ox + x0, oy - y0 - h, ox + x0 + w, oy - y0)  # metres right of / below the origin
    try:
        context = open_scene(utm_301x203, bbox=bbox, gsd=gsd)
        reader = context.__enter__()
    except UsageError:
        # only when the bbox misses the 150.5 x 101.5 m raster
        assert x0 + w <= 0 or x0 >= 150.5 or y0 + h <= 0 or y0 >= 101.5
        return
    try:
        s = reader.scene
        src = s.source_window
        source_transform = from_origin(*UTM_ORIGIN, 0.5, 0.5)
        # the grid's corners are exactly the source window's corners
        assert s.transform @ (0, 0) == pytest.approx(source_transform @ (src.col_off, src.row_off), abs=1e-6)
        far = source_transform @ (src.col_off + src.width, src.row_off + src.height)
        assert s.transform @ (s.width, s.height) == pytest.approx(far, abs=1e-6)
        # the window covers the part of the bbox inside the raster, by less than one pixel more
        # (a bbox edge within float noise, 1e-6 m, of a pixel edge counts as on it)
        left, bottom, right, top = s.bounds
        e = 1e-6
        assert left - e <= max(bbox[0], ox) < left + 0.5 and right - 0.5 < min(bbox[2], ox + 150.5) <= right + e
        assert bottom - e <= max(bbox[1], oy - 101.5) < bottom + 0.5 and top - 0.5 < min(bbox[3], oy) <= top + e
        if gsd is not None:  # the asked GSD, to within one pixel over the extent
            assert abs(s.gsd_xy[0] - gsd) <= gsd / s.width + 1e-9 or s.width == 1
        rgb, _ = reader.read(Window(0, 0, s.width, s.height))
        assert rgb.shape == (s.height, s.width, 3)
    finally:
        context.__exit__(None, None, None)


@pytest.mark.parametrize("bands, gsd", [(None, None), ((3, 1, 2), None), (None, 0.7), ((2, 3, 1), 0.35)])
def test_uint8_reads_straight_into_hwc_equal_gdal_band_reads(tmp_path, bands, gsd) -> None:
    """The uint8 fast path (GDAL writes the (h, w, 3) layout) gives exactly GDAL's own band reads."""
    path = write_utm(tmp_path / "u.tif", 301, 203)
    window = Window(7, 5, 90, 61)
    with open_scene(path, bands=bands, gsd=gsd) as reader, rasterio.open(path) as ds:
        assert reader.scene.mask == "none"
        rgb, valid = reader.read(window)
        src = reader.source_window(window)
        kwargs = {} if gsd is None else {"out_shape": (3, 61, 90), "resampling": reader._resampling}
        expected = ds.read(list(reader.scene.bands), window=src, **kwargs)  # (3, h, w)
    assert rgb.shape == (61, 90, 3) and rgb.flags.c_contiguous and valid.all()
    np.testing.assert_array_equal(rgb, expected.transpose(1, 2, 0))
