"""The zoom strategy end to end on real GeoTIFFs, with the pixel-driven test segmenter (no model).

The :class:`~tests.segmenters.ColourSegmenter` sees a red square at every resolution (averaging keeps red the
strict maximum channel on a grey background), so the overview finds what level 0 then segments exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from rasterio.transform import from_origin

from segearth_geo.engine import segment_scene
from segearth_geo.params import SegmentParams
from segearth_geo.raster import open_scene
from segearth_geo.stitch import Stitcher
from segearth_geo.zoom.levels import base_level
from segearth_geo.zoom.localizer import Localization
from segearth_geo.zoom.prompts import prompt_kind
from segearth_geo.zoom.runner import _continuations, run_zoom
from tests.geo_fixtures import UTM, UTM_ORIGIN, write_raster
from tests.segmenters import ColourSegmenter, RecordingSegmenter

RED, GREY = (220, 30, 30), (90, 90, 90)
SQUARES = [(50, 60, 20), (300, 420, 40), (520, 800, 30)]  # (row, col, side): sparse red squares
BAR = (400, 100, 70, 18)  # (row, col, height, width): crosses a chip border


def _sparse(tmp_path, name="sparse.tif", height=600, width=900):
    data = np.empty((3, height, width), np.uint8)
    data[:] = np.array(GREY, np.uint8)[:, None, None]
    for r, c, s in SQUARES:
        data[:, r:r + s, c:c + s] = np.array(RED, np.uint8)[:, None, None]
    r, c, h, w = BAR
    data[:, r:r + h, c:c + w] = np.array(RED, np.uint8)[:, None, None]
    return write_raster(tmp_path / name, data, crs=UTM, transform=from_origin(*UTM_ORIGIN, 0.5, 0.5))


@pytest.fixture(scope="module")
def sparse(tmp_path_factory):
    return _sparse(tmp_path_factory.mktemp("zoom"))


def _same(a, b) -> bool:
    return len(a) == len(b) and all(x.equals(y) for x, y in zip(a.geometry, b.geometry)) and \
        a["label"].tolist() == b["label"].tolist() and a["pixels"].tolist() == b["pixels"].tolist()


def test_zoom_finds_every_sparse_object_exactly_as_the_grid_with_fewer_chips(sparse):
    grid = segment_scene(sparse, "all the red objects", ColourSegmenter(64))
    zoom = segment_scene(sparse, "all the red objects", ColourSegmenter(64), SegmentParams(strategy="zoom"))
    assert len(grid.segments) == 4 and _same(grid.segments, zoom.segments)
    stats = zoom.stats
    assert stats.strategy == "zoom" and len(stats.chips_per_level) == 2  # 4x overview (STEP), then level 0
    assert sum(stats.chips_per_level) < grid.stats.chips_processed / 3
    assert stats.chips_processed == stats.chips_per_level[0] and stats.chips_skipped == 0
    assert 0 < stats.full_res_fraction < 0.25
    # the chips layer lists every chip processed at every level: its row count is the work done
    assert zoom.chips.groupby("level").size().to_dict() == dict(enumerate(stats.chips_per_level))
    assert list(zoom.chips.columns) == ["chip", "prompt", "answer", "labels", "level", "geometry"]
    overview = zoom.chips[zoom.chips["level"] == 1].geometry.union_all()
    assert overview.equals(shapely.box(*grid.chips.total_bounds)) or \
        overview.symmetric_difference(shapely.box(*grid.chips.total_bounds)).area < 1e-6
    assert (grid.chips["level"] == 0).all()


def test_zoom_equals_grid_when_the_areas_cover_the_whole_scene(sparse):
    grid = segment_scene(sparse, ["all the red objects", "blue"], ColourSegmenter(64))
    full = segment_scene(sparse, ["all the red objects", "blue"], ColourSegmenter(64),
                         SegmentParams(strategy="zoom", min_coverage=1.0))
    assert _same(grid.segments, full.segments)
    assert full.stats.chips_per_level[0] == grid.stats.chips_processed and full.stats.full_res_fraction == 1.0
    level0 = full.chips[full.chips["level"] == 0].drop(columns="level").reset_index(drop=True)
    assert level0.drop(columns="geometry").equals(grid.chips.drop(columns=["geometry", "level"]))


def test_results_do_not_depend_on_batching_or_runs(sparse):
    runs = [segment_scene(sparse, "all the red objects", ColourSegmenter(64),
                          SegmentParams(strategy="zoom", batch_size=b)) for b in (1, 7, 7)]
    for other in runs[1:]:
        assert _same(runs[0].segments, other.segments)
        assert runs[0].chips.drop(columns="geometry").equals(other.chips.drop(columns="geometry"))


def test_chips_outside_the_areas_are_never_read_at_full_resolution(sparse):
    segmenter = RecordingSegmenter(64)
    result = segment_scene(sparse, "all the red objects", segmenter, SegmentParams(strategy="zoom", batch_size=1))
    assert len(segmenter.calls) == sum(result.stats.chips_per_level)
    level0 = result.chips[result.chips["level"] == 0]
    for r, c, s in SQUARES:  # every object lies inside the processed level-0 chips
        x0, y0 = UTM_ORIGIN[0] + c * 0.5, UTM_ORIGIN[1] - r * 0.5
        assert level0.geometry.union_all().contains(shapely.box(x0, y0 - s * 0.5, x0 + s * 0.5, y0))


def test_a_referring_prompt_gets_one_answer_for_the_whole_scene(sparse):
    grid = segment_scene(sparse, "the largest red object", ColourSegmenter(64))
    zoom = segment_scene(sparse, "the largest red object", ColourSegmenter(64), SegmentParams(strategy="zoom"))
    assert len(grid.segments) == 4  # one answer per chip that has one
    assert len(zoom.segments) == 1 and zoom.segments["pixels"].tolist() == [40 * 40]
    smallest = segment_scene(sparse, "the smallest red object", ColourSegmenter(64), SegmentParams(strategy="zoom"))
    assert smallest.segments["pixels"].tolist() == [20 * 20]
    leftmost = segment_scene(sparse, "the leftmost red object", ColourSegmenter(64), SegmentParams(strategy="zoom"))
    assert leftmost.segments.geometry.iloc[0].bounds[0] == pytest.approx(UTM_ORIGIN[0] + 60 * 0.5)


def test_auto_says_which_strategy_and_why(sparse, tmp_path):
    referring = segment_scene(sparse, "the largest red object", ColourSegmenter(64), SegmentParams(strategy="auto"))
    assert referring.stats.strategy == "zoom" and "instance-level" in referring.stats.strategy_reason
    sparse_all = segment_scene(sparse, "all the red objects", ColourSegmenter(64), SegmentParams(strategy="auto"))
    assert sparse_all.stats.strategy == "zoom" and "saw the target over" in sparse_all.stats.strategy_reason
    small = _sparse(tmp_path, "small.tif", 200, 300)
    tiny = segment_scene(small, "all the red objects", ColourSegmenter(64), SegmentParams(strategy="auto"))
    assert tiny.stats.strategy == "grid" and "fewer than" in tiny.stats.strategy_reason
    dense = np.empty((3, 600, 900), np.uint8)
    dense[:] = np.array(RED, np.uint8)[:, None, None]
    dense_path = write_raster(tmp_path / "dense.tif", dense, crs=UTM, transform=from_origin(*UTM_ORIGIN, 0.5, 0.5))
    busy = segment_scene(dense_path, "all the red objects", ColourSegmenter(64), SegmentParams(strategy="auto"))
    assert busy.stats.strategy == "grid" and "every chip" in busy.stats.strategy_reason
    assert busy.stats.chips_processed == busy.stats.chips_total and len(busy.stats.chips_per_level) == 2


def test_targets_seen_coarsely_but_not_confirmed_are_reported(tmp_path):
    """A checkerboard of green-ish and blue-ish pixels averages to red: red at every coarse level, never at 0."""
    data = np.empty((3, 600, 900), np.uint8)
    data[:] = np.array(GREY, np.uint8)[:, None, None]
    rows, cols = np.mgrid[0:60, 0:60]
    board = np.where(((rows + cols) % 2 == 0)[None], np.array([200, 255, 0])[:, None, None],
                     np.array([200, 0, 255])[:, None, None])
    data[:, 200:260, 300:360] = board
    path = write_raster(tmp_path / "ghost.tif", data, crs=UTM, transform=from_origin(*UTM_ORIGIN, 0.5, 0.5))
    result = segment_scene(path, "all the red objects", ColourSegmenter(64), SegmentParams(strategy="zoom"))
    assert result.segments.empty
    assert any("not confirmed at full resolution" in note for note in result.stats.notes), result.stats.notes


def test_nothing_seen_means_nothing_looked_at_unless_min_coverage(sparse):
    none = segment_scene(sparse, "all the blue objects", ColourSegmenter(64), SegmentParams(strategy="zoom"))
    assert none.segments.empty and none.stats.chips_per_level[0] == 0
    forced = segment_scene(sparse, "all the blue objects", ColourSegmenter(64),
                           SegmentParams(strategy="zoom", min_coverage=0.25))
    assert forced.stats.full_res_fraction >= 0.25


def test_a_polygon_reaching_an_unprocessed_chip_continues_there():
    base = base_level(256, 128, 64, 0)
    stitcher = Stitcher(256, 128, 0.5, default_label="all the red objects")
    chip = base.chips()[1]  # columns 64..128, row 0
    prob = np.zeros((64, 64), np.float32)
    prob[10:20, 50:64] = 1.0  # reaches the core's right edge (x = 128) -> chip 2
    from segearth_geo.prediction import Target

    stitcher.add(chip, [Target("red object", prob)], np.ones((64, 64), bool))
    kinds = [prompt_kind("all the red objects")]
    assert [c.index for c in _continuations(base, [stitcher], ["all the red objects"], kinds, {1})] == [2]
    assert _continuations(base, [stitcher], ["all the red objects"], kinds, {1, 2}) == []


class BoxLocalizer:
    """A localizer answering one fixed box (pixels of the image it is given) — or none."""

    overview_side, read_side = 512, 2048

    def __init__(self, box):
        self.box, self.images = box, []

    def localize(self, image, prompt):
        self.images.append(image.shape)
        return Localization(self.box, "scripted")

    def zoom_region(self, box, width, height):
        return box


def _run_with_localizer(path, prompt, localizer):
    params = SegmentParams(strategy="zoom").resolve(64)
    with open_scene(path) as reader:
        scene = reader.scene
        stitchers = [Stitcher(scene.width, scene.height, 0.5, default_label=prompt)]
        run = run_zoom(reader, ColourSegmenter(64), [prompt], params, stitchers, False, zoom_model=localizer)
    return run, stitchers[0].finish()


def test_a_localizer_box_is_segmented_at_full_resolution_and_nothing_else(sparse):
    r, c, s = SQUARES[1]
    run, regions = _run_with_localizer(sparse, "the largest red square", BoxLocalizer((c, r, c + s, r + s)))
    assert localizer_image(run) == (600, 900)
    assert run.chips_per_level[1] == 1 and 0 < run.chips_per_level[0] <= 4
    assert [reg.pixels for reg in regions] == [s * s]
    assert [g.bounds for g in run.picks[0]] == [(c, r, c + s, r + s)]


def test_no_box_from_the_localizer_segments_the_whole_area_and_says_so(sparse):
    run, regions = _run_with_localizer(sparse, "the big red square", BoxLocalizer(None))
    assert run.chips_per_level[0] == len(base_level(900, 600, 64, 8).chips())
    assert len(regions) == 4 and any("gave no box" in note for note in run.notes)


def localizer_image(run):
    level = run.levels[1].level
    return level.height, level.width
