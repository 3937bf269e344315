"""Chip grid: full-size chips wherever possible, overlap honoured, cores partition the grid."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rasterio.windows import Window

from segearth_geo.chips import axis_spans, chip_grid
from segearth_geo.errors import UsageError


def _ownership_count(chips, width: int, height: int) -> np.ndarray:
    """How many cores cover each pixel, ``(height, width)``."""
    count = np.zeros((height, width), dtype=np.int32)
    for chip in chips:
        c = chip.core
        count[c.row_off : c.row_off + c.height, c.col_off : c.col_off + c.width] += 1
    return count


@settings(max_examples=300, deadline=None)
@given(
    length=st.integers(1, 5000),
    chip_size=st.integers(1, 1100),
    overlap_fraction=st.floats(0, 0.99),
)
def test_axis_spans_partition_and_full_size(length: int, chip_size: int, overlap_fraction: float) -> None:
    overlap = int(overlap_fraction * chip_size)
    spans = axis_spans(length, chip_size, overlap)
    # cores tile [0, length) in order, without gaps or overlaps, each non-empty
    assert spans[0][2] == 0 and spans[-1][3] == length
    for (_, _, _, core_stop), (_, _, core_start, _) in zip(spans, spans[1:]):
        assert core_stop == core_start
    for start, stop, core_start, core_stop in spans:
        assert 0 <= start <= core_start < core_stop <= stop <= length
        assert stop - start == min(chip_size, length)  # full size whenever the axis allows
    # neighbours overlap by at least `overlap`
    for (s0, e0, _, _), (s1, _, _, _) in zip(spans, spans[1:]):
        assert e0 - s1 >= overlap
        assert s1 > s0


@settings(max_examples=60, deadline=None)
@given(
    width=st.integers(1, 700),
    height=st.integers(1, 700),
    chip_size=st.integers(8, 256),
    overlap_fraction=st.floats(0, 0.9),
)
def test_cores_partition_grid_exactly(width: int, height: int, chip_size: int, overlap_fraction: float) -> None:
    overlap = int(overlap_fraction * chip_size)
    chips = chip_grid(width, height, chip_size, overlap)
    assert np.all(_ownership_count(chips, width, height) == 1)
    assert [c.index for c in chips] == list(range(len(chips)))
    for chip in chips:
        w, c = chip.window, chip.core
        assert (w.width, w.height) == (min(chip_size, width), min(chip_size, height))
        assert w.col_off <= c.col_off and c.col_off + c.width <= w.col_off + w.width
        assert w.row_off <= c.row_off and c.row_off + c.height <= w.row_off + w.height
        local = chip.core_in_chip
        assert (local.col_off + w.col_off, local.row_off + w.row_off) == (c.col_off, c.row_off)


def test_core_split_is_in_the_middle_of_the_overlap() -> None:
    chips = chip_grid(1900, 1024, 1024, 128)
    # two chips; the last is shifted inward to end at 1900, so the overlap [876, 1024) is
    # 148 px (>= 128) and the cores meet at its middle, 950
    assert [c.window.col_off for c in chips] == [0, 876]
    assert chips[0].core == Window(0, 0, 950, 1024)
    assert chips[1].core == Window(950, 0, 950, 1024)


def test_regular_grid_layout() -> None:
    chips = chip_grid(2816, 1024, 1024, 128)  # 2816 = 1024 + 2 * 896: three chips exactly
    assert [c.window.col_off for c in chips] == [0, 896, 1792]
    assert [(c.core.col_off, c.core.width) for c in chips] == [(0, 960), (960, 896), (1856, 960)]


def test_small_grid_gives_one_smaller_chip() -> None:
    (chip,) = chip_grid(300, 200, 1024, 128)
    assert chip.window == Window(0, 0, 300, 200) == chip.core


def test_row_major_order() -> None:
    chips = chip_grid(150, 150, 100, 10)
    assert [(c.window.row_off, c.window.col_off) for c in chips] == [(0, 0), (0, 50), (50, 0), (50, 50)]


@pytest.mark.parametrize(
    ("size", "chip_size", "overlap", "message"),
    [
        (100, 64, 64, "overlap"),
        (100, 64, -1, "overlap"),
        (100, 0, 0, "chip size"),
        (0, 64, 8, "empty"),
    ],
)
def test_bad_grid_arguments(size: int, chip_size: int, overlap: int, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        chip_grid(size, 50, chip_size, overlap)
