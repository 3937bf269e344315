"""``regularize`` / ``smooth`` from every entry point: the Python API (right angles on the ground in any CRS,
areas measured again), batch jobs (each scene's file post-processed like ``segment``), the worker and the CLI."""

from __future__ import annotations

import threading

import geopandas as gpd
import numpy as np
import pytest
import rasterio.features
import shapely
from rasterio.transform import from_origin
from shapely import affinity

import segearth_geo as sg
from segearth_geo.batch import run_batch
from segearth_geo.errors import UsageError
from segearth_geo.output import read_run
from segearth_geo.params import SegmentParams
from segearth_geo.vectorize import area_m2
from segearth_geo.worker.handlers import HANDLERS, WorkerState
from segearth_geo.worker.protocol import Request
from tests.geo_fixtures import UTM, UTM_ORIGIN, WGS84, WGS84_ORIGIN, write_raster
from tests.segmenters import ColourSegmenter
from tests.test_postprocess import corner_angles

H, W = 220, 300


def _houses_image() -> np.ndarray:
    """Red rotated houses (two of them sharing a wall) on grey."""
    houses = [affinity.rotate(shapely.box(35, 37, 115, 87), 28, origin=(100, 62)),
              affinity.rotate(shapely.box(115, 37, 165, 87), 28, origin=(100, 62)),
              affinity.rotate(shapely.box(165, 150, 235, 190), -15)]  # all inside the scene: no clipped corner
    red = rasterio.features.rasterize([(h, 1) for h in houses], out_shape=(H, W)).astype(bool)
    image = np.full((3, H, W), 40, np.uint8)
    image[0][red] = 210
    return image


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pp_entry")
    utm = write_raster(folder / "utm.tif", _houses_image(), crs=UTM, transform=from_origin(*UTM_ORIGIN, 0.5, 0.5))
    # 60° north: a degree of longitude is half a degree of latitude on the ground, so pixels 2e-5 x 1e-5 deg
    # are square on the ground and a right angle there is no right angle in degrees
    lonlat = write_raster(folder / "lonlat.tif", _houses_image(), crs=WGS84,
                          transform=from_origin(WGS84_ORIGIN[0], 60.0, 2e-5, 1e-5))
    return utm, lonlat


def test_api_regularizes_with_right_angles_on_the_ground_and_true_areas(scenes):
    utm, lonlat = scenes
    for path, crs in ((utm, UTM), (lonlat, WGS84)):
        raw = sg.segment_raster(path, "red", segmenter=ColourSegmenter(64), overlap=8)
        square = sg.segment_raster(path, "red", segmenter=ColourSegmenter(64), overlap=8, regularize=True)
        assert len(square) == len(raw) == 2  # the two houses sharing a wall are one red polygon
        np.testing.assert_allclose(square["area_m2"], area_m2(square.geometry.values, square.crs), rtol=1e-9)
        assert (square["pixels"] == raw["pixels"]).all()  # the mask pixels each polygon came from
        metric = square.to_crs(32632 if crs == WGS84 else UTM)  # right angles are measured on the ground
        for polygon in metric.geometry:
            angles = corner_angles(polygon)
            assert np.all(np.abs(angles - 90) < 1.0), angles
        assert np.all(np.abs(square["area_m2"] / raw["area_m2"] - 1) < 0.05)


def test_batch_scene_files_are_post_processed_like_segment(scenes, tmp_path):
    utm, lonlat = scenes
    report = run_batch([str(utm), str(lonlat)], ["red"], tmp_path / "job", segmenter=ColourSegmenter(64),
                       chips_per_unit=3, overlap=8, smooth=True)
    assert report.ok
    for scene in report.scenes:
        got = gpd.read_file(scene.outputs["red"], layer="segments")
        want = sg.segment_raster(scene.source, "red", segmenter=ColourSegmenter(64), overlap=8, smooth=True)
        assert list(got["id"]) == list(range(1, len(got) + 1))
        assert got["model"].unique().tolist() == ["tests.segmenters.ColourSegmenter"]  # batch names the class
        assert len(got) == len(want)
        for a, b in zip(got.geometry, want.geometry):
            assert a.symmetric_difference(b).area <= 1e-9 * max(a.area, 1e-12) + 1e-12
        assert read_run(scene.outputs["red"])["parameters"]["smooth"] is True


def test_worker_request_smooths_and_refuses_both_at_once(scenes, tmp_path):
    utm, _ = scenes
    fields = {"raster": str(utm), "prompt": "red", "output": str(tmp_path / "o.gpkg"), "overlap": 8, "smooth": True}
    handler = HANDLERS["segment"]
    request = Request(id=1, key="1", type="segment", fields=fields, arguments=handler.check(fields))
    kind, reply = handler.run(WorkerState(segmenter=ColourSegmenter(64)), request, threading.Event(),
                              lambda *a, **k: None)
    assert kind == "result" and reply["count"] == 2
    smooth = gpd.read_file(tmp_path / "o.gpkg", layer="segments")
    assert all(len(p.exterior.coords) > 20 and p.is_valid for p in smooth.geometry)  # rounded, not boxes
    with pytest.raises(UsageError, match='"regularize" .* and "smooth" .* exclude each other'):
        handler.check({**fields, "regularize": True})
    with pytest.raises(UsageError, match='"regularize_iou" acts only with "regularize"'):
        handler.check({**fields, "smooth": False, "regularize_iou": 0.9})


def test_params_name_the_options_as_each_entry_point_does():
    with pytest.raises(UsageError, match="--regularize .* and --smooth"):
        SegmentParams(regularize=True, smooth=True).check("cli")
    with pytest.raises(UsageError, match="regularize_iou must be an IoU between 0 and 1"):
        SegmentParams(regularize=True, regularize_iou=1.2).check()
    assert SegmentParams(regularize=True, regularize_iou=0.9).check().changed() == {"regularize": True,
                                                                                    "regularize_iou": 0.9}
