"""The zoom pyramid's geometry (levels, areas, chip selection, coverage) and prompt kinds: pure functions."""

from __future__ import annotations

import numpy as np
import pytest
import shapely

from segearth_geo.chips import chip_grid
from segearth_geo.prediction import Target
from segearth_geo.zoom.areas import (
    EVIDENCE_THRESHOLD,
    MARGIN,
    candidate_area,
    chip_scores,
    cover_at_least,
    coverage,
    evidence_area,
    grid_box,
)
from segearth_geo.zoom.evidence import BLOCK, FLOOR, EvidenceSink
from segearth_geo.zoom.levels import MIN_FACTOR, base_level, chip_at, chips_in_area, coarse_level, plan_levels
from segearth_geo.zoom.prompts import prompt_kind, relevant


# ---------------------------------------------------------------------------------------------- levels
def test_level_zero_is_the_grid_runs_grid():
    base = base_level(900, 600, 64, 8)
    assert [(c.index, c.window, c.core) for c in base.chips()] == \
        [(c.index, c.window, c.core) for c in chip_grid(900, 600, 64, 8)]
    assert (base.sx, base.sy, base.factor) == (1.0, 1.0, 1.0)


def test_overview_fits_one_chip_when_the_model_can_see_that_coarse():
    levels = plan_levels(4096, 2048, 256, 32, max_factor=100, step=4)
    top = levels[-1]
    assert max(top.width, top.height) == 256 and len(top.chips()) == 1
    assert top.factor == pytest.approx(16, rel=0.01)
    assert [round(lv.factor) for lv in levels] == [1, 4, 16]  # each level 4x finer; last jump < 2·step


def test_overview_is_a_small_grid_at_the_models_coarsest_resolution():
    levels = plan_levels(4096, 4096, 256, 32, max_factor=4, step=2)
    assert [round(lv.factor) for lv in levels] == [1, 2, 4]
    top = levels[-1]
    assert (top.width, top.height) == (1024, 1024) and len(top.chips()) == 25


def test_no_zoom_when_the_overview_would_not_be_coarser_than_min_factor():
    assert len(plan_levels(300, 200, 256, 32, max_factor=8, step=2)) == 1  # fits one chip at 1.17x
    assert len(plan_levels(4096, 4096, 256, 32, max_factor=1.5, step=2)) == 1
    assert len(plan_levels(4096, 4096, 256, 32, max_factor=MIN_FACTOR, step=2)) == 2


def test_coarse_pixels_map_exactly_onto_base_pixels():
    level = coarse_level(1, 1001, 999, 4.0, 64)
    assert level.width * level.sx == pytest.approx(1001) and level.height * level.sy == pytest.approx(999)
    last = level.box_to_base(level.width - 1, level.height - 1, level.width, level.height)
    assert last.bounds[2:] == pytest.approx((1001, 999))


def test_chip_at_equals_the_grids_chip():
    level = base_level(700, 500, 64, 8)
    for chip in level.chips():
        assert chip_at(level, chip.index) == chip


# ---------------------------------------------------------------------------------------------- chips of an area
@pytest.mark.parametrize("seed", range(12))
def test_selected_cores_cover_the_area_and_nothing_else_is_selected(seed):
    """Exact at level 0: the selected cores cover the area; every other core meets it with zero area."""
    rng = np.random.default_rng(seed)
    level = base_level(int(rng.integers(200, 700)), int(rng.integers(200, 700)), 64, int(rng.integers(0, 16)))
    parts = []
    for _ in range(int(rng.integers(1, 4))):
        x0, y0 = rng.uniform(-50, level.width), rng.uniform(-50, level.height)
        parts.append(shapely.box(x0, y0, x0 + rng.uniform(1, 200), y0 + rng.uniform(1, 200)))
    area = shapely.intersection(shapely.union_all(parts), grid_box(level))
    chosen = chips_in_area(level, area)
    cores = level.cores(level.chips())
    chosen_ids = {c.index for c in chosen}
    covered = shapely.union_all(level.cores(chosen)) if chosen else shapely.Polygon()
    assert shapely.difference(area, covered).area == pytest.approx(0, abs=1e-9)
    for chip, core in zip(level.chips(), cores):
        overlap = shapely.intersection(core, area).area
        assert (overlap > 0) == (chip.index in chosen_ids), chip.index
    assert [c.index for c in chosen] == sorted(chosen_ids)


def test_an_area_on_a_core_edge_selects_no_neighbour():
    level = base_level(256, 64, 64, 0)  # cores [0,64) [64,128) ...
    line_touch = shapely.box(10, 10, 64, 20)  # ends exactly on the edge between chips 0 and 1
    assert [c.index for c in chips_in_area(level, line_touch)] == [0]
    assert chips_in_area(level, shapely.Polygon()) == []


# ---------------------------------------------------------------------------------------------- evidence and areas
def test_evidence_blocks_hold_the_max_probability_of_relevant_targets_only():
    level = base_level(128, 128, 64, 0)
    sink = EvidenceSink(level.width, level.height, "all the ships", prompt_kind("all the ships"), 0.5)
    chip = level.chips()[0]
    prob = np.zeros((64, 64), np.float32)
    prob[10, 21] = 0.3  # block (2, 5)
    road = np.full((64, 64), 0.9, np.float32)
    sink.add(chip, [Target("ship", prob), Target("road", road)], np.ones((64, 64), bool))
    blocks, own = sink.blocks()
    assert own and blocks == {(10 // BLOCK, 21 // BLOCK): pytest.approx(0.3)}
    assert max(sink.any_blocks.values()) == pytest.approx(0.9)


def test_evidence_falls_back_to_every_answer_when_none_names_the_prompt():
    level = base_level(64, 64, 64, 0)
    sink = EvidenceSink(64, 64, "where could a boat sail?", prompt_kind("where could a boat sail?"), 0.5)
    sink.add(level.chips()[0], [Target("water", np.full((64, 64), 0.8, np.float32))], np.ones((64, 64), bool))
    blocks, own = sink.blocks()
    assert not own and len(blocks) == (64 // BLOCK) ** 2


def test_invalid_pixels_are_no_evidence():
    level = base_level(64, 64, 64, 0)
    sink = EvidenceSink(64, 64, "all the ships", prompt_kind("all the ships"), 0.5)
    valid = np.zeros((64, 64), bool)
    valid[:, :8] = True  # only the first two block columns are valid
    sink.add(level.chips()[0], [Target("ship", np.full((64, 64), 0.9, np.float32))], valid)
    blocks, _ = sink.blocks()
    assert {c for _, c in blocks} == {0, 1} and len(blocks) == 2 * (64 // BLOCK)
    assert all(v >= FLOOR for v in blocks.values())


def test_evidence_area_is_the_dilated_union_of_blocks_above_the_threshold():
    level = coarse_level(1, 1000, 1000, 4.0, 64)  # 250 x 250 level px, 4 base px each
    blocks = {(10, 10): 0.9, (10, 11): EVIDENCE_THRESHOLD, (40, 40): EVIDENCE_THRESHOLD / 2}
    area = evidence_area(blocks, level)
    x0, y0 = (10 * BLOCK - MARGIN) * 4, (10 * BLOCK - MARGIN) * 4
    x1, y1 = (12 * BLOCK + MARGIN) * 4, (11 * BLOCK + MARGIN) * 4
    assert area.equals(shapely.box(x0, y0, x1, y1))
    assert evidence_area({}, level).is_empty


def test_candidate_area_is_clipped_to_the_grid():
    level = base_level(100, 100, 64, 0)
    area = candidate_area(shapely.box(90, 90, 99, 99), level)
    assert area.equals(shapely.box(90 - MARGIN, 90 - MARGIN, 100, 100))


def test_min_coverage_adds_the_strongest_evidence_first_then_row_major():
    fine = base_level(256, 256, 64, 0)  # 16 chips of 64 x 64 px, each 1/16 of the grid
    coarse = coarse_level(1, 256, 256, 2.0, 64)
    every = fine.chips()
    blocks = {(15, 15): 0.2}  # coarse px 60..64 -> base px 120..128: chip (1, 1) = index 5
    scores = chip_scores(blocks, coarse, fine, every)
    assert np.flatnonzero(scores).tolist() == [5]
    chosen = cover_at_least(3 / 16, fine, [every[0]], scores, every)
    assert [c.index for c in chosen] == [0, 1, 5]  # chip 5 by evidence, then chip 1 (row-major)
    assert coverage(fine, chosen) == pytest.approx(3 / 16)
    assert coverage(fine, cover_at_least(1.0, fine, [], scores, every)) == 1.0


# ---------------------------------------------------------------------------------------------- prompts
@pytest.mark.parametrize(("prompt", "referring", "criterion"), [
    ("the largest airplane", True, "largest"),
    ("Segment the left-most ship.", True, "leftmost"),
    ("the ground track field far from the tall buildings", True, None),
    ("all the ships", False, None),
    ("buildings", False, None),
    ("Where could a plane land?", False, None),
    ("every largest tree", False, None),  # "every" asks for all of them
])
def test_prompt_kind(prompt, referring, criterion):
    kind = prompt_kind(prompt)
    assert (kind.referring, kind.criterion) == (referring, criterion)


def test_relevant_labels_share_a_content_word():
    assert relevant("ship", "all the ships") and relevant("ship bow", "Segment all the ships.")
    assert relevant("largest airplane", "the largest airplane") and relevant("airplane", "the largest airplane")
    assert not relevant("road", "all the ships") and not relevant("parking lot", "the largest airplane")
    assert relevant("", "all the ships") and relevant("All the ships", "all the ships")


# ---------------------------------------------------------------------------------------------- candidates
def _candidate(x, y, side, score=0.8, pixels=None):
    from segearth_geo.zoom.candidates import Candidate

    return Candidate(shapely.box(x, y, x + side, y + side), score, "ship", side * side if pixels is None else pixels)


def test_candidates_rank_by_the_criterion_and_drop_specks():
    from segearth_geo.zoom.candidates import KEPT, MIN_CANDIDATE, rank_candidates

    speck = _candidate(0, 0, 3, pixels=MIN_CANDIDATE - 1)  # leftmost, but noise
    found = [_candidate(50, 0, 10), speck, _candidate(20, 0, 5), _candidate(90, 0, 30), _candidate(70, 0, 8)]
    leftmost = rank_candidates(found, prompt_kind("the leftmost ship"))
    assert [c.geometry.bounds[0] for c in leftmost] == [20, 50, 70] and len(leftmost) == KEPT
    assert rank_candidates(found, prompt_kind("the largest ship"))[0].geometry.bounds[0] == 90
    confident = rank_candidates([_candidate(0, 0, 10, 0.6), _candidate(40, 0, 10, 0.9)],
                                prompt_kind("the ship next to the pier"))
    assert confident[0].score == 0.9


def test_keep_pick_keeps_the_first_confirmed_candidate_and_its_fragments():
    import geopandas as gpd

    from segearth_geo.zoom.candidates import keep_pick

    frame = gpd.GeoDataFrame({"label": ["ship", "road", "ship", "ship"], "pixels": [1, 2, 3, 4]},
                             geometry=[shapely.box(100, 0, 110, 10), shapely.box(0, 0, 10, 10),
                                       shapely.box(200, 0, 210, 10), shapely.box(212, 0, 220, 10)])
    kind = prompt_kind("the leftmost ship")
    kept, ok = keep_pick(frame, [shapely.box(0, 0, 10, 10), shapely.box(195, 0, 215, 5)], "the leftmost ship", kind)
    assert ok and kept["pixels"].tolist() == [3, 4]  # no ship under the first pick; the second's two fragments
    empty, ok = keep_pick(frame, [shapely.box(500, 0, 510, 10)], "the leftmost ship", kind)
    assert not ok and empty.empty


# ---------------------------------------------------------------------------------------------- SynthEarth
def test_sparse_harbour_has_a_few_ships_far_apart(tmp_path):
    import geopandas as gpd

    from segearth_geo.synthetic import write_scene

    summary = write_scene(tmp_path, 2048, 2048, seed=7, theme="harbour", sparse=True, compress="deflate")
    objects = gpd.read_file(summary.truth_path, layer="objects")
    ships = objects[objects["label"] == "ship"]
    assert 3 <= len(ships) <= 6
    water = objects[objects["label"] == "water"].geometry.union_all()
    assert water.area > 0.6 * 1024 * 1024  # most of the 1024 m x 1024 m scene is sea
    distances = [a.distance(b) for i, a in enumerate(ships.geometry) for b in ships.geometry[i + 1:]]
    assert min(distances) > 20
    again = write_scene(tmp_path / "again", 2048, 2048, seed=7, theme="harbour", sparse=True, compress="deflate")
    assert again.path.read_bytes() == summary.path.read_bytes()
    with pytest.raises(Exception, match="no sparse variant"):
        write_scene(tmp_path / "city", 512, 512, theme="city", sparse=True)


def test_multiscale_samples_keep_the_nominal_samples_and_draw_coarser_ones():
    from segearth_geo.synthetic.dataset import MULTISCALE_GSDS, multiscale_samples, split_sample

    samples = multiscale_samples("val", chip_size=128, seed=0, n=40)
    gsds = [samples.gsd(i) for i in range(40)]
    assert set(gsds) <= set(MULTISCALE_GSDS) and len(set(gsds)) > 1
    first_nominal = gsds.index(0.5)
    assert np.array_equal(samples[first_nominal].image, split_sample("val", 0, first_nominal, 128).image)
    coarse = samples[gsds.index(2.0)]
    assert coarse.image.shape == (128, 128, 3) and all(m.shape == (128, 128) for m in coarse.masks)


def test_the_criterion_is_measured_again_on_the_full_resolution_polygons():
    import geopandas as gpd

    from segearth_geo.zoom.candidates import keep_pick

    # the overview ranked the left airplane first (a near tie at 2 m); at full resolution the right one is larger
    frame = gpd.GeoDataFrame({"label": ["airplane", "airplane"], "pixels": [100, 121]},
                             geometry=[shapely.box(0, 0, 10, 10), shapely.box(50, 0, 61, 11)])
    picks = [shapely.box(1, 1, 9, 9), shapely.box(51, 1, 60, 10)]
    kept, ok = keep_pick(frame, picks, "the largest airplane", prompt_kind("the largest airplane"), lambda g: g)
    assert ok and kept["pixels"].tolist() == [121]
    first, _ = keep_pick(frame, picks, "the airplane near the hangar", prompt_kind("the airplane near the hangar"))
    assert first["pixels"].tolist() == [100]  # no criterion the engine can measure: the best-ranked candidate
