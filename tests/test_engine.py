"""segment_raster() end to end on real GeoTIFFs written by the tests."""

from __future__ import annotations

import math
import threading

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import shapely
from rasterio.enums import ColorInterp
from rasterio.transform import from_origin

import segearth_geo as sg
from segearth_geo.errors import Cancelled, ModelError, OutputError, RasterError, UsageError
from segearth_geo.raster import SceneReader
from tests.geo_fixtures import (
    UTM,
    UTM_ORIGIN,
    WEB_MERCATOR,
    WEB_MERCATOR_ORIGIN,
    WGS84,
    WGS84_ORIGIN,
    write_png,
    write_raster,
)
from tests.segmenters import ColourSegmenter, EverythingSegmenter, FailingSegmenter, RecordingSegmenter, SlowSegmenter
from tests.test_vectorize import ellipsoid_cell_area

RED, BLUE, DARK = (200, 0, 0), (0, 0, 220), (20, 20, 20)


def _scene(height: int = 150, width: int = 230) -> np.ndarray:
    """uint8 (3, h, w): a red ring (hole in the middle) crossing chip borders, a small blue square,
    two red squares touching at a corner, on a dark background."""
    data = np.empty((3, height, width), np.uint8)
    data[:] = np.array(DARK, np.uint8)[:, None, None]
    data[:, 30:120, 40:200] = np.array(RED, np.uint8)[:, None, None]
    data[:, 60:90, 80:150] = np.array(DARK, np.uint8)[:, None, None]  # the hole
    data[:, 10:20, 10:20] = np.array(BLUE, np.uint8)[:, None, None]
    data[:, 125:135, 5:15] = np.array(RED, np.uint8)[:, None, None]
    data[:, 135:145, 15:25] = np.array(RED, np.uint8)[:, None, None]
    return data


def _utm(tmp_path, data=None, gsd=0.5, name="scene.tif", **kwargs):
    data = _scene() if data is None else data
    return write_raster(tmp_path / name, data, crs=UTM, transform=from_origin(*UTM_ORIGIN, gsd, gsd), **kwargs)


def test_utm_ring_is_one_polygon_with_hole_in_map_coordinates(tmp_path):
    path = _utm(tmp_path)
    gdf = sg.segment_raster(path, "red and blue", segmenter=ColourSegmenter(64), overlap=16)
    assert gdf.crs.to_string() == UTM
    assert list(gdf.columns[:5]) == ["label", "score", "area_m2", "pixels", "prompt"]
    red = gdf[gdf["label"] == "red object"].sort_values("pixels", ascending=False)
    assert len(red) == 3  # ring + two corner-touching squares
    ring = red.geometry.iloc[0]
    x0, y0 = UTM_ORIGIN
    outer = shapely.box(x0 + 40 * 0.5, y0 - 120 * 0.5, x0 + 200 * 0.5, y0 - 30 * 0.5)
    hole = shapely.box(x0 + 80 * 0.5, y0 - 90 * 0.5, x0 + 150 * 0.5, y0 - 60 * 0.5)
    assert ring.equals(outer.difference(hole)) and len(ring.interiors) == 1
    assert red["area_m2"].iloc[0] == pytest.approx((90 * 160 - 30 * 70) * 0.25)
    assert red["pixels"].iloc[0] == 90 * 160 - 30 * 70
    assert red["score"].iloc[0] == pytest.approx(200 / 255, rel=1e-6)
    blue = gdf[gdf["label"] == "blue object"]
    assert len(blue) == 1 and blue["area_m2"].iloc[0] == pytest.approx(25.0)
    assert set(gdf["prompt"]) == {"red and blue"}
    assert gdf.geometry.is_valid.all()
    assert gdf.attrs["segearth"]["chips_total"] == 15


def test_tiled_run_equals_untiled_run(tmp_path):
    path = _utm(tmp_path)
    tiled = sg.segment_raster(path, "red, blue", segmenter=ColourSegmenter(48), overlap=12)
    whole = sg.segment_raster(path, "red, blue", segmenter=ColourSegmenter(4096), overlap=0)
    assert tiled.attrs["segearth"]["chips_total"] > 20 and whole.attrs["segearth"]["chips_total"] == 1
    assert len(tiled) == len(whole) == 4
    assert list(tiled["label"]) == list(whole["label"])
    for a, b in zip(tiled.geometry, whole.geometry):
        assert shapely.equals_exact(a, b, tolerance=0)
    np.testing.assert_allclose(tiled["score"], whole["score"], rtol=1e-9)
    np.testing.assert_array_equal(tiled["pixels"], whole["pixels"])


def test_label_phrases_are_normalised(tmp_path):
    gdf = sg.segment_raster(_utm(tmp_path), "red", segmenter=ColourSegmenter(64, label_case="upper"), overlap=16)
    assert set(gdf["label"]) == {"red object"}


def test_geographic_area_is_geodesic(tmp_path):
    deg = 1e-5
    data = np.zeros((3, 60, 80), np.uint8)
    data[0, 10:50, 20:70] = 200
    path = write_raster(tmp_path / "geo.tif", data, crs=WGS84, transform=from_origin(*WGS84_ORIGIN, deg, deg))
    gdf = sg.segment_raster(path, "red", segmenter=ColourSegmenter(32), overlap=8)
    assert gdf.crs.to_epsg() == 4326 and len(gdf) == 1
    lon0, lat1 = WGS84_ORIGIN[0] + 20 * deg, WGS84_ORIGIN[1] - 10 * deg
    lon1, lat0 = WGS84_ORIGIN[0] + 70 * deg, WGS84_ORIGIN[1] - 50 * deg
    assert gdf.geometry.iloc[0].equals(shapely.box(lon0, lat0, lon1, lat1))
    assert gdf["area_m2"].iloc[0] == pytest.approx(ellipsoid_cell_area(lon0, lat0, lon1, lat1), rel=1e-5)


def test_web_mercator_area_is_ground_area(tmp_path):
    data = np.zeros((3, 64, 64), np.uint8)
    data[0, 12:52, 12:52] = 200  # 40 x 40 pixels of 0.5 projected metres
    path = write_raster(tmp_path / "wm.tif", data, crs=WEB_MERCATOR,
                        transform=from_origin(*WEB_MERCATOR_ORIGIN, 0.5, 0.5))
    gdf = sg.segment_raster(path, "red", segmenter=ColourSegmenter(32), overlap=8)
    assert gdf.crs.to_epsg() == 3857
    lat = math.degrees(math.atan(math.sinh(WEB_MERCATOR_ORIGIN[1] / 6378137.0)))
    assert gdf["area_m2"].iloc[0] == pytest.approx(400 * math.cos(math.radians(lat)) ** 2, rel=5e-3)


def test_uint16_four_band_scene_reaches_segmenter_as_uint8_rgb(tmp_path):
    data = np.full((4, 90, 130), 1000, np.uint16)  # blue, green, red, nir
    data[2, 20:70, 30:100] = 9000  # red band bright -> red object
    data[3] = 12000  # bright NIR must not matter: RGB comes from the colour interpretation
    interp = [ColorInterp.blue, ColorInterp.green, ColorInterp.red, ColorInterp.undefined]
    path = _utm(tmp_path, data, colorinterp=interp)
    segmenter = RecordingSegmenter(64)
    gdf = sg.segment_raster(path, "red", segmenter=segmenter, overlap=16)
    assert all(shape[2] == 3 for _, shapes, _ in segmenter.calls for shape in shapes)
    assert len(gdf) == 1 and gdf["pixels"].iloc[0] == 50 * 70


@pytest.mark.parametrize("kind", ["nodata", "alpha"])
def test_invalid_pixels_never_covered_and_invalid_chips_skipped(tmp_path, kind):
    height, width = 100, 200
    rgb = np.full((3, height, width), 90, np.uint8)
    valid = np.zeros((height, width), bool)
    valid[10:90, 100:190] = True  # left half fully invalid: whole chips there are skipped
    if kind == "nodata":
        rgb[:, ~valid] = 0
        path = _utm(tmp_path, rgb, nodata=0)
    else:
        alpha = np.where(valid, 255, 0).astype(np.uint8)[None]
        interp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
        path = _utm(tmp_path, np.concatenate([rgb, alpha]), colorinterp=interp)
    segmenter = EverythingSegmenter(40)
    gdf = sg.segment_raster(path, "everything", segmenter=segmenter, overlap=8, batch_size=1)
    stats = gdf.attrs["segearth"]
    assert stats["chips_skipped"] > 0
    assert segmenter.calls == stats["chips_processed"] == stats["chips_total"] - stats["chips_skipped"]
    x0, y0 = UTM_ORIGIN
    expected = shapely.box(x0 + 100 * 0.5, y0 - 90 * 0.5, x0 + 190 * 0.5, y0 - 10 * 0.5)
    assert len(gdf) == 1 and gdf.geometry.iloc[0].equals(expected)


def test_odd_size_is_fully_covered_once(tmp_path):
    data = np.full((3, 97, 131), 50, np.uint8)
    gdf = sg.segment_raster(_utm(tmp_path, data), "all", segmenter=EverythingSegmenter(32), overlap=5)
    x0, y0 = UTM_ORIGIN
    assert len(gdf) == 1
    assert gdf.geometry.iloc[0].equals(shapely.box(x0, y0 - 97 * 0.5, x0 + 131 * 0.5, y0))
    assert gdf["pixels"].iloc[0] == 97 * 131


def test_batches_and_read_ahead(tmp_path, monkeypatch):
    reads: list[tuple[float, str]] = []
    real_read = SceneReader.read

    def spy(self, window):  # records when and where reads happen; the real read still runs
        import time

        result = real_read(self, window)
        reads.append((time.perf_counter(), threading.current_thread().name))
        return result

    monkeypatch.setattr(SceneReader, "read", spy)
    segmenter = SlowSegmenter(48, seconds=0.05)
    gdf = sg.segment_raster(_utm(tmp_path), "red", segmenter=segmenter, overlap=12, batch_size=4)
    total = gdf.attrs["segearth"]["chips_total"]
    sizes = [n for n, _, _ in segmenter.calls]
    assert sum(sizes) == total and all(n == 4 for n in sizes[:-1]) and 1 <= sizes[-1] <= 4
    assert {name for _, name in reads} == {"segearth-chip-reader"}
    assert {name for _, _, name in segmenter.calls} == {threading.main_thread().name}
    # reading went on while the segmenter was busy
    busy = [t for t, _ in reads for start, end in segmenter.spans if start < t < end]
    assert busy


def test_progress_callback_and_cancel(tmp_path):
    seen = []
    sg.segment_raster(_utm(tmp_path), "red", segmenter=ColourSegmenter(64), overlap=16, batch_size=4,
                      progress=lambda done, total: seen.append((done, total)))
    assert seen[0] == (0, 15) and seen[-1] == (15, 15)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)

    def cancel(done, total):
        if done:
            raise Cancelled("stop")

    out = tmp_path / "cancelled.gpkg"
    with pytest.raises(Cancelled):
        sg.segment_raster(_utm(tmp_path), "red", segmenter=ColourSegmenter(64), overlap=16, out=out,
                          progress=cancel)
    assert not out.exists()


def test_bbox_in_other_crs_returns_source_crs(tmp_path):
    from pyproj import Transformer

    path = _utm(tmp_path)
    x0, y0 = UTM_ORIGIN
    to_wgs = Transformer.from_crs(UTM, WGS84, always_xy=True)
    lon0, lat0 = to_wgs.transform(x0, y0 - 150 * 0.5)
    lon1, lat1 = to_wgs.transform(x0 + 30 * 0.5, y0)  # left strip: the blue square and red squares
    gdf = sg.segment_raster(path, "red blue", segmenter=ColourSegmenter(64), overlap=16,
                            bbox=(lon0, lat0, lon1, lat1), bbox_crs="EPSG:4326")
    assert gdf.crs.to_string() == UTM
    assert set(gdf["label"]) == {"blue object", "red object"}
    assert (gdf.geometry.bounds["maxx"] <= x0 + 40 * 0.5).all()  # the ring (starting at col 40) is outside


def test_gsd_resampling_keeps_ground_geometry(tmp_path):
    gdf = sg.segment_raster(_utm(tmp_path), "blue", segmenter=ColourSegmenter(64), overlap=16, gsd=1.0)
    x0, y0 = UTM_ORIGIN
    assert len(gdf) == 1
    assert gdf.geometry.iloc[0].equals(shapely.box(x0 + 5, y0 - 10, x0 + 10, y0 - 5))
    assert gdf["area_m2"].iloc[0] == pytest.approx(25.0)


def test_min_area_and_simplify(tmp_path):
    data = np.full((3, 120, 120), 20, np.uint8)
    rows, cols = np.mgrid[0:120, 0:120]
    data[0][(rows - 60) ** 2 + (cols - 60) ** 2 < 45**2] = 200  # disc: 'staircase' outline
    data[0, 2:6, 2:6] = 200  # 16 px = 4 m²
    path = _utm(tmp_path, data)
    plain = sg.segment_raster(path, "red", segmenter=ColourSegmenter(64), overlap=16)
    assert len(plain) == 2
    big = sg.segment_raster(path, "red", segmenter=ColourSegmenter(64), overlap=16, min_area=10)
    assert len(big) == 1 and big["area_m2"].iloc[0] > 10
    simple = sg.segment_raster(path, "red", segmenter=ColourSegmenter(64), overlap=16, min_area=10, simplify=1.0)
    assert simple.geometry.is_valid.all()
    assert shapely.get_num_coordinates(simple.geometry.iloc[0]) < shapely.get_num_coordinates(big.geometry.iloc[0]) / 3
    assert simple["area_m2"].iloc[0] == pytest.approx(big["area_m2"].iloc[0], rel=0.03)


def test_png_without_georeferencing_runs_in_pixels(tmp_path, caplog):
    path = write_png(tmp_path / "plain.png", 90, 70)
    gdf = sg.segment_raster(path, "all", segmenter=EverythingSegmenter(32), overlap=4)
    assert gdf.crs is None and len(gdf) == 1
    assert np.isnan(gdf["area_m2"].iloc[0])
    assert gdf.geometry.iloc[0].area == 90 * 70
    assert "no coordinate reference system" in caplog.text
    with pytest.raises(UsageError, match="min_area"):
        sg.segment_raster(path, "all", segmenter=EverythingSegmenter(32), overlap=4, min_area=1)


def test_out_writes_gpkg_with_chips_layer(tmp_path):
    out = tmp_path / "res.gpkg"
    gdf = sg.segment_raster(_utm(tmp_path), "red", segmenter=ColourSegmenter(64), overlap=16, out=out)
    assert [n for n, _ in pyogrio.list_layers(out)] == ["segments", "chips", "run"]  # run: the run's description
    back = gpd.read_file(out, layer="segments")
    assert len(back) == len(gdf) and back.crs.to_string() == UTM
    chips = gpd.read_file(out, layer="chips")
    assert len(chips) == 15 and (chips["answer"] == "Sure, the red object [SEG].").all()
    assert chips.geometry.iloc[0].area == pytest.approx(64 * 64 * 0.25)
    with pytest.raises(OutputError, match="exists"):
        sg.segment_raster(_utm(tmp_path), "red", segmenter=ColourSegmenter(64), overlap=16, out=out)


def test_empty_result_still_has_columns(tmp_path):
    gdf = sg.segment_raster(_utm(tmp_path), "green", segmenter=ColourSegmenter(64), overlap=16,
                            out=tmp_path / "empty.gpkg")
    assert len(gdf) == 0 and {"label", "score", "area_m2", "prompt", "geometry"} <= set(gdf.columns)
    assert gdf.crs.to_string() == UTM


def test_bad_inputs(tmp_path):
    path = _utm(tmp_path)
    seg = ColourSegmenter(64)
    with pytest.raises(UsageError, match="prompt is empty"):
        sg.segment_raster(path, "  ", segmenter=seg, overlap=16)
    with pytest.raises(UsageError, match="threshold"):
        sg.segment_raster(path, "red", segmenter=seg, overlap=16, threshold=2)
    with pytest.raises(UsageError, match="band 7"):
        sg.segment_raster(path, "red", segmenter=seg, overlap=16, bands=(7, 2, 1))
    with pytest.raises(UsageError, match="does not overlap"):
        sg.segment_raster(path, "red", segmenter=seg, overlap=16, bbox=(0, 0, 10, 10))
    with pytest.raises(UsageError, match="overlap"):
        sg.segment_raster(path, "red", segmenter=seg, overlap=64)
    with pytest.raises(RasterError, match="not found"):
        sg.segment_raster(tmp_path / "missing.tif", "red", segmenter=seg)
    corrupt = tmp_path / "corrupt.tif"
    corrupt.write_bytes(b"II*\x00garbage")
    with pytest.raises(RasterError):
        sg.segment_raster(corrupt, "red", segmenter=seg)
    out = tmp_path / "never.gpkg"
    with pytest.raises(ModelError, match="simulated model crash"):
        sg.segment_raster(path, "red", segmenter=FailingSegmenter(64), overlap=16, out=out)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["corrupt.tif", "scene.tif"]


def test_segmenter_returning_wrong_shapes_is_refused(tmp_path):
    class Wrong(ColourSegmenter):
        def segment(self, chips, prompt):
            return [sg.ChipPrediction("x", [sg.Target("a", np.zeros((3, 3), np.float32))]) for _ in chips]

    with pytest.raises(ModelError, match="probability shape"):
        sg.segment_raster(_utm(tmp_path), "red", segmenter=Wrong(64), overlap=16)


@pytest.mark.parametrize("make", ["uint16_nodata", "jpeg_overviews", "png_world_file_crs"])
def test_info_segment_and_preview_leave_nothing_next_to_the_input(tmp_path, make):
    """GDAL may persist statistics/metadata in a ``.aux.xml`` sidecar (PAM); the library never does."""
    from segearth_geo.preview import render_preview
    from segearth_geo.summary import summarize_scene

    src_dir, out_dir = tmp_path / "input", tmp_path / "output"
    src_dir.mkdir()
    out_dir.mkdir()
    if make == "uint16_nodata":
        data = _scene().astype(np.uint16) * 40
        data[:, :5] = 0
        path = _utm(src_dir, data, nodata=0)
    elif make == "jpeg_overviews":
        path = _utm(src_dir, compress="jpeg", photometric="ycbcr", tiled=True, blockxsize=64, blockysize=64)
        import rasterio
        from rasterio.enums import Resampling

        with rasterio.open(path, "r+") as ds:
            ds.build_overviews([2], Resampling.average)
    else:
        path = write_png(src_dir / "scene.png", 230, 150, world_file=from_origin(*UTM_ORIGIN, 0.5, 0.5), crs=UTM)
    before = {p.name: p.read_bytes() for p in src_dir.iterdir()}

    summarize_scene(path)
    summarize_scene(path, gsd=0.8, bbox=(UTM_ORIGIN[0], UTM_ORIGIN[1] - 40, UTM_ORIGIN[0] + 60, UTM_ORIGIN[1]))
    gdf = sg.segment_raster(path, "red", segmenter=ColourSegmenter(64), overlap=16, out=out_dir / "out.gpkg")
    sg.segment_raster(path, "red", segmenter=ColourSegmenter(64), overlap=16, gsd=0.7)
    render_preview(path, gdf, out_dir / "preview.png")

    assert len(gdf) > 0
    assert {p.name: p.read_bytes() for p in src_dir.iterdir()} == before


def test_vectoriser_error_reaches_the_caller(tmp_path, monkeypatch):
    """An error in the vectoriser thread (here a simulated one) is re-raised, and no thread is left behind."""
    from segearth_geo.stitch import Stitcher

    calls = []

    def broken_add(self, chip, targets, valid):
        calls.append(chip.index)
        raise MemoryError("simulated")

    monkeypatch.setattr(Stitcher, "add", broken_add)
    with pytest.raises(MemoryError, match="simulated"):
        sg.segment_raster(_utm(tmp_path), "red", segmenter=ColourSegmenter(64), overlap=16, batch_size=2)
    assert calls
    assert not [t for t in threading.enumerate() if t.name.startswith("segearth-")]
