"""Stitching chip masks: tiled == one untiled pass, order-free, objects across borders stay whole."""

from __future__ import annotations

import random

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from segearth_geo.chips import chip_grid
from segearth_geo.prediction import Target
from segearth_geo.stitch import Stitcher


def _probability_scene(height: int, width: int, seed: int) -> np.ndarray:
    """Float32 (h, w): blobs, a ring with a hole, diagonal contacts and noise, values in [0, 1]."""
    rng = np.random.default_rng(seed)
    prob = np.zeros((height, width), np.float32)
    rows, cols = np.mgrid[0:height, 0:width]
    for _ in range(6):
        r, c, radius = rng.integers(0, height), rng.integers(0, width), rng.integers(4, 25)
        prob[(rows - r) ** 2 + (cols - c) ** 2 < radius**2] = rng.uniform(0.55, 1.0)
    ring = ((rows - height // 2) ** 2 + (cols - width // 2) ** 2)
    prob[(ring < 40**2) & (ring >= 22**2)] = 0.9  # annulus crossing several chip borders
    prob[rng.random((height, width)) < 0.03] = 0.8  # specks, incl. corner-only contacts
    return prob


def _stitch(prob: np.ndarray, chip_size: int, overlap: int, valid: np.ndarray | None = None, order=None):
    height, width = prob.shape
    valid = np.ones_like(prob, dtype=bool) if valid is None else valid
    stitcher = Stitcher(width, height, threshold=0.5)
    chips = chip_grid(width, height, chip_size, overlap)
    for i in order if order is not None else range(len(chips)):
        chip = chips[i]
        rows = slice(chip.window.row_off, chip.window.row_off + chip.window.height)
        cols = slice(chip.window.col_off, chip.window.col_off + chip.window.width)
        stitcher.add(chip, [Target("Thing ", prob[rows, cols])], valid[rows, cols])
    return stitcher.finish(), len(chips)


def _same(tiled, whole) -> None:
    assert len(tiled) == len(whole)
    for a, b in zip(tiled, whole):
        assert a.label == b.label == "thing"
        assert a.pixels == b.pixels
        assert a.score == pytest.approx(b.score, rel=1e-9)
        assert shapely.equals_exact(a.geometry, b.geometry, tolerance=0), (a.geometry, b.geometry)


def test_tiled_equals_untiled_pass():
    prob = _probability_scene(150, 170, seed=1)
    tiled, n_chips = _stitch(prob, chip_size=40, overlap=10)
    whole, one = _stitch(prob, chip_size=512, overlap=0)
    assert n_chips > 16 and one == 1
    _same(tiled, whole)
    # and the pixels add up to the thresholded mask
    assert sum(r.pixels for r in tiled) == int((prob >= 0.5).sum())


def test_chip_order_does_not_matter():
    prob = _probability_scene(120, 130, seed=2)
    forward, n = _stitch(prob, chip_size=32, overlap=8)
    order = list(range(n))
    random.Random(0).shuffle(order)
    shuffled, _ = _stitch(prob, chip_size=32, overlap=8, order=order)
    _same(shuffled, forward)


def test_ring_across_borders_is_one_polygon_with_its_hole():
    rows, cols = np.mgrid[0:100, 0:100]
    d2 = (rows - 50) ** 2 + (cols - 50) ** 2
    prob = np.where((d2 < 40**2) & (d2 >= 15**2), 0.75, 0.0).astype(np.float32)
    regions, n = _stitch(prob, chip_size=30, overlap=6)
    assert n == 16
    assert len(regions) == 1
    polygon = regions[0].geometry
    assert polygon.is_valid and isinstance(polygon, shapely.Polygon)
    assert len(polygon.interiors) == 1
    assert polygon.area == regions[0].pixels == int((prob >= 0.5).sum())
    assert regions[0].score == pytest.approx(0.75)
    assert shapely.Polygon(polygon.interiors[0]).contains(shapely.Point(50, 50))


def test_invalid_pixels_are_never_covered():
    prob = np.ones((60, 70), np.float32)
    valid = np.ones((60, 70), bool)
    valid[:, :25] = False
    valid[40:, :] = False
    regions, _ = _stitch(prob, chip_size=20, overlap=4, valid=valid)
    assert len(regions) == 1
    assert shapely.equals(regions[0].geometry, shapely.box(25, 0, 70, 40))


def test_corner_contacts_stay_separate_like_one_pass():
    # Two squares touching only at a corner that lies exactly on a core boundary.
    prob = np.zeros((40, 40), np.float32)
    chips = chip_grid(40, 40, 24, 8)
    edge_col = chips[0].core.width  # first core boundary along x
    edge_row = edge_col
    prob[edge_row - 5:edge_row, edge_col - 5:edge_col] = 1
    prob[edge_row:edge_row + 5, edge_col:edge_col + 5] = 1
    tiled, _ = _stitch(prob, chip_size=24, overlap=8)
    whole, _ = _stitch(prob, chip_size=64, overlap=0)
    assert len(tiled) == 2
    _same(tiled, whole)


def test_same_label_targets_merge_by_maximum():
    chip = chip_grid(10, 10, 10, 0)[0]
    a = np.zeros((10, 10), np.float32)
    b = np.zeros((10, 10), np.float32)
    a[:, :5] = 0.6
    b[:, 3:] = 0.9
    stitcher = Stitcher(10, 10, threshold=0.5)
    labels = stitcher.add(chip, [Target("Car", a), Target(" car ", b), Target("", a)], np.ones((10, 10), bool))
    assert labels == ["car", "object"]
    regions = {r.label: r for r in stitcher.finish()}
    assert regions["car"].pixels == 100
    assert regions["car"].score == pytest.approx((30 * 0.6 + 70 * 0.9) / 100)
    assert regions["object"].pixels == 50


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    height=st.integers(5, 70),
    width=st.integers(5, 70),
    chip_size=st.integers(6, 30),
    overlap_frac=st.floats(0, 0.5),
    density=st.floats(0.2, 0.8),
)
def test_property_tiled_equals_untiled(seed, height, width, chip_size, overlap_frac, density):
    rng = np.random.default_rng(seed)
    prob = (rng.random((height, width)) < density).astype(np.float32) * rng.uniform(0.5, 1.0, (height, width))
    prob = prob.astype(np.float32)
    overlap = min(int(chip_size * overlap_frac), chip_size - 1)
    tiled, _ = _stitch(prob, chip_size, overlap)
    whole, _ = _stitch(prob, max(height, width), 0)
    _same(tiled, whole)
