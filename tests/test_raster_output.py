"""Raster outputs (segearth_geo.raster_output): the stitched probability and the polygon-id rasters, from every
entry point, compared pixel for pixel with what they must hold."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.features
import shapely
from rasterio.transform import from_origin
from shapely import affinity

from segearth_geo.chips import chip_grid
from segearth_geo.engine import segment_scene
from segearth_geo.errors import ModelError, OutputNameError, UsageError
from segearth_geo.params import SegmentParams
from segearth_geo.prediction import ChipPrediction, Target
from segearth_geo.worker.handlers import HANDLERS, WorkerState
from segearth_geo.worker.protocol import Request
from tests.geo_fixtures import UTM, UTM_ORIGIN, write_raster
from tests.segmenters import ColourSegmenter, FailingSegmenter

SEGMENTERS = Path(__file__).resolve().parent / "segmenters.py"
H, W = 200, 300
TRANSFORM = from_origin(*UTM_ORIGIN, 0.5, 0.5)


class ChipMeanSegmenter:
    """Red pixels with a probability that depends on the whole chip (its mean red): overlapping chips disagree,
    so the raster shows which chip owns each pixel."""

    chip_size = 64

    def segment(self, chips, prompt):
        out = []
        for chip in chips:
            red = chip[..., 0].astype(np.float32)
            level = np.float32(0.55 + 0.4 * red.mean() / 255)
            out.append(ChipPrediction("[SEG]", [Target("red thing", np.where(red > 128, level, 0.1).astype(np.float32))]))
        return out


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    """Red shapes (one crossing many chip borders, two touching) and a nodata collar on the left."""
    shapes = [affinity.rotate(shapely.box(30, 30, 150, 80), 25), shapely.box(170, 40, 210, 110),
              shapely.box(210, 40, 260, 110), shapely.Point(120, 150).buffer(35)]
    red = rasterio.features.rasterize([(s, 1) for s in shapes], out_shape=(H, W)).astype(bool)
    image = np.full((3, H, W), 30, np.uint8)
    image[0][red] = 220
    image[2][110:180, 200:280] = 200  # a blue field
    valid = np.ones((H, W), bool)
    valid[:, :12] = False
    return write_raster(tmp_path_factory.mktemp("raster_out") / "scene.tif", image, crs=UTM, transform=TRANSFORM,
                        mask=valid)


def _valid(scene: Path) -> np.ndarray:
    with rasterio.open(scene) as ds:
        return ds.read_masks(1) > 0


def _rasterized(segments, prompt: str, shape=(H, W), transform=TRANSFORM) -> np.ndarray:
    """The vector output of one prompt burnt in one go, ids in increasing order (the larger id wins)."""
    rows = segments[segments["prompt"] == prompt].sort_values("id")
    if not len(rows):
        return np.zeros(shape, np.int32)
    return rasterio.features.rasterize(zip(rows.geometry, rows["id"]), out_shape=shape, transform=transform,
                                       dtype="int32")


@pytest.mark.parametrize("post", [{}, {"regularize": True}, {"smooth": True}, {"simplify": 1.0}])
def test_labels_raster_is_the_vector_output_pixel_for_pixel(scene, tmp_path, post):
    labels = tmp_path / "labels.tif"
    result = segment_scene(scene, ["red", "blue"], ColourSegmenter(64),
                           SegmentParams(overlap=8, labels_out=str(labels), **post), out=tmp_path / "out.gpkg")
    segments = result.segments
    assert list(segments["id"]) == list(range(1, len(segments) + 1)) and len(segments) >= 4
    valid = _valid(scene)
    with rasterio.open(labels) as ds:
        assert ds.count == 2 and ds.descriptions == ("red", "blue") and ds.dtypes == ("int32", "int32")
        assert ds.nodata == -1 and ds.crs.to_epsg() == 32633 and ds.transform == TRANSFORM
        for band, prompt in ((1, "red"), (2, "blue")):
            got = ds.read(band)
            want = _rasterized(segments, prompt)
            want[~valid] = -1
            np.testing.assert_array_equal(got, want)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.tif", "out.gpkg"]  # no temporaries left


def test_probability_raster_is_owned_by_the_core_chips(scene, tmp_path):
    prob_path, labels = tmp_path / "prob.tif", tmp_path / "labels.tif"
    segmenter = ChipMeanSegmenter()
    result = segment_scene(scene, "red", segmenter, SegmentParams(overlap=16, raster_out=str(prob_path),
                                                                 labels_out=str(labels)))
    valid = _valid(scene)
    with rasterio.open(scene) as ds:
        image = ds.read().transpose(1, 2, 0) * valid[..., None]  # the engine reads invalid pixels as 0
    want = np.full((H, W), -1.0, np.float32)
    for chip in chip_grid(W, H, 64, 16):  # each pixel: the value of the chip whose core holds it
        w, c = chip.window, chip.core
        (target,) = segmenter.segment([image[w.row_off:w.row_off + w.height, w.col_off:w.col_off + w.width]],
                                      "red")[0].targets
        r0, c0 = c.row_off - w.row_off, c.col_off - w.col_off
        want[c.row_off:c.row_off + c.height, c.col_off:c.col_off + c.width] = \
            target.probability[r0:r0 + c.height, c0:c0 + c.width]
    want[~valid] = -1
    with rasterio.open(prob_path) as ds:
        got = ds.read(1)
        assert ds.dtypes == ("float32",) and ds.nodata == -1 and ds.descriptions == ("red",)
        assert ds.tags()["SEGEARTH_MODEL"] == "ChipMeanSegmenter"
        assert json.loads(ds.tags()["SEGEARTH_PARAMETERS"])["overlap"] == 16
    np.testing.assert_array_equal(got, want)
    assert len(np.unique(got[got > 0.5])) > 3  # chips really disagree: ownership was tested
    with rasterio.open(labels) as ds:  # thresholded probability = the polygons, exactly (no post-processing)
        np.testing.assert_array_equal(ds.read(1) > 0, got >= np.float32(0.5))
    assert len(result.segments) == 3  # the rotated bar, the two touching boxes (one polygon), the disc


def test_outputs_are_cloud_optimized_with_overviews_in_the_gsd_grid(tmp_path):
    big = np.full((3, 600, 700), 30, np.uint8)
    big[0, 100:500, 150:650] = 220
    path = write_raster(tmp_path / "big.tif", big, crs=UTM, transform=TRANSFORM)
    prob, labels = tmp_path / "p.tif", tmp_path / "l.tif"
    segment_scene(path, "red", ColourSegmenter(64), SegmentParams(gsd=1.0, raster_out=str(prob),
                                                                 labels_out=str(labels)))
    for out in (prob, labels):
        with rasterio.open(out) as ds:
            assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
            assert ds.tags(ns="IMAGE_STRUCTURE").get("COMPRESSION") == "DEFLATE"
            assert (ds.width, ds.height) == (350, 300) and ds.transform.a == 1.0  # the --gsd grid
            assert ds.overviews(1) == [2] and ds.block_shapes[0] == (256, 256)


def test_bad_raster_outputs_are_refused_before_any_work(scene, tmp_path):
    existing = tmp_path / "taken.tif"
    existing.write_bytes(b"keep")
    with pytest.raises(OutputNameError, match="raster_out .* exists"):
        segment_scene(scene, "red", FailingSegmenter(), SegmentParams(raster_out=str(existing)))
    with pytest.raises(OutputNameError, match="labels_out must name a GeoTIFF"):
        segment_scene(scene, "red", FailingSegmenter(), SegmentParams(labels_out=str(tmp_path / "l.png")))
    with pytest.raises(OutputNameError, match="also another output"):
        segment_scene(scene, "red", FailingSegmenter(), SegmentParams(raster_out=str(tmp_path / "same.tif"),
                                                                     labels_out=str(tmp_path / "same.tif")))
    assert existing.read_bytes() == b"keep"


def test_a_failed_run_leaves_no_raster_and_no_temporary(scene, tmp_path):
    with pytest.raises(ModelError):
        segment_scene(scene, "red", FailingSegmenter(), SegmentParams(raster_out=str(tmp_path / "p.tif"),
                                                                     labels_out=str(tmp_path / "l.tif")))
    import gc

    gc.collect()  # the traceback kept the run's frame (and its temporaries) alive until here
    assert list(tmp_path.iterdir()) == []


def test_worker_request_writes_rasters_and_names_them(scene, tmp_path):
    fields = {"raster": str(scene), "prompt": "red", "output": str(tmp_path / "o.gpkg"), "overlap": 8,
              "raster_out": str(tmp_path / "p.tif"), "labels_out": str(tmp_path / "l.tif"), "regularize": True}
    handler = HANDLERS["segment"]
    request = Request(id=1, key="1", type="segment", fields=fields, arguments=handler.check(fields))
    kind, reply = handler.run(WorkerState(segmenter=ColourSegmenter(64)), request, threading.Event(),
                              lambda *a, **k: None)
    assert kind == "result" and reply["raster_out"] == str(tmp_path / "p.tif")
    assert reply["labels_out"] == str(tmp_path / "l.tif") and (tmp_path / "l.tif").is_file()
    with pytest.raises(UsageError, match='"raster_out" must be'):
        handler.check({**fields, "raster_out": 3})


@pytest.mark.parametrize("segmenter, prompts", [(ChipMeanSegmenter(), ["red"]),
                                                (ColourSegmenter(64), ["red", "blue"])])
def test_batch_rasters_equal_segment_pixel_for_pixel_and_survive_resume(scene, tmp_path, segmenter, prompts):
    from segearth_geo.batch import run_batch

    want_prob, want_labels = tmp_path / "p.tif", tmp_path / "l.tif"
    segment_scene(scene, prompts, segmenter, SegmentParams(overlap=16, raster_out=str(want_prob),
                                                           labels_out=str(want_labels)))
    job = tmp_path / "job"

    def run():
        return run_batch([str(scene)], prompts, job, segmenter=segmenter, overlap=16, chips_per_unit=3,
                         raster_out="probability.tif", labels_out="ids.tif")

    report = run()
    (done,) = report.scenes
    assert report.ok and done.units > 3  # the scene's rasters come from several units' shards
    folder = job / "results" / done.name
    assert done.rasters == {"raster_out": str(folder / "probability.tif"), "labels_out": str(folder / "ids.tif")}
    assert "Rasters in each done scene's folder: probability.tif (probabilities), ids.tif (polygon ids)." \
        in report.to_text()

    def same(got: Path, want: Path) -> None:
        with rasterio.open(got) as g, rasterio.open(want) as w:
            assert (g.count, g.dtypes, g.nodata, g.crs, g.transform, g.descriptions) == \
                (w.count, w.dtypes, w.nodata, w.crs, w.transform, w.descriptions)
            assert g.overviews(1) == w.overviews(1)
            np.testing.assert_array_equal(g.read(), w.read())

    same(folder / "probability.tif", want_prob)
    same(folder / "ids.tif", want_labels)
    import geopandas as gpd

    ids = set(gpd.read_file(done.outputs[prompts[0]], layer="segments")["id"])
    with rasterio.open(folder / "ids.tif") as ds:
        assert set(np.unique(ds.read(1))) - {0, -1} == ids  # the files' ids, and only those
    # Raster shards are as large as the rasters: gone once the scene's rasters are written. A raster deleted later
    # is written again by running the scene's units again.
    assert not list((job / "shards").rglob("*.tif"))
    (folder / "ids.tif").unlink()
    again = run()
    assert again.ok and again.units_run == done.units
    same(folder / "probability.tif", want_prob)
    same(folder / "ids.tif", want_labels)
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_a_lost_raster_shard_runs_its_unit_again(scene, tmp_path):
    from segearth_geo.batch import run_batch
    from segearth_geo.errors import Cancelled

    want = tmp_path / "p.tif"
    segment_scene(scene, ["red"], ColourSegmenter(64), SegmentParams(overlap=16, raster_out=str(want)))
    job, finished = tmp_path / "job", []

    def stop_after_two_units(event) -> None:
        if event.kind == "unit":
            finished.append(event)
            if len(finished) == 2:
                raise Cancelled("stopped by the test")

    def run(progress=False):
        return run_batch([str(scene)], ["red"], job, segmenter=ColourSegmenter(64), overlap=16, chips_per_unit=3,
                         raster_out="probability.tif", progress=progress)

    with pytest.raises(Cancelled):
        run(stop_after_two_units)
    shards = sorted((job / "shards").rglob("*.tif"))
    assert len(shards) >= 2  # the finished units' raster shards, kept until the scene is written
    shards[0].unlink()
    report = run()
    (done,) = report.scenes
    assert report.ok and report.units_run == done.units - len(shards) + 1  # the unit whose shard was lost, again
    with rasterio.open(job / "results" / done.name / "probability.tif") as got, rasterio.open(want) as expected:
        np.testing.assert_array_equal(got.read(), expected.read())


def test_batch_raster_names_are_refused_in_one_line(scene, tmp_path):
    from segearth_geo.batch import run_batch

    for value in (str(tmp_path / "l.tif"), "ids.png", "sub/ids.tif"):
        with pytest.raises(UsageError, match="labels_out in a batch job is a file name ending in .tif"):
            run_batch([str(scene)], ["red"], tmp_path / "job", segmenter=ColourSegmenter(64), labels_out=value)
    with pytest.raises(UsageError, match="raster_out and labels_out name the same file"):
        run_batch([str(scene)], ["red"], tmp_path / "job", segmenter=ColourSegmenter(64), raster_out="a.tif",
                  labels_out="A.tif")
    assert not (tmp_path / "job").exists()


def test_cli_writes_every_output(scene, tmp_path):
    out, prob, labels = tmp_path / "o.gpkg", tmp_path / "p.tif", tmp_path / "l.tif"
    cmd = [sys.executable, "-m", "segearth_geo_cli.main", "segment", str(scene), "red", "-o", str(out),
           "--model", f"{SEGMENTERS}:colour_small", "--overlap", "8", "--regularize", "--regularize-iou", "0.6",
           "--raster-out", str(prob), "--labels-out", str(labels)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert done.returncode == 0, done.stderr
    assert out.is_file() and prob.is_file() and labels.is_file()
    bad = subprocess.run([*cmd[:-4], "--regularize-iou", "1.5"], capture_output=True, text=True, timeout=120,
                         check=False)
    assert bad.returncode == 2 and "--regularize-iou must be an IoU between 0 and 1" in bad.stderr
    assert "Traceback" not in bad.stderr
