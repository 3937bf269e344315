"""The chip grid over a processing grid, and the core each chip owns.

Pure functions over integer pixel windows of the *processing grid* (the scene after bbox
crop and GSD resampling, see :mod:`segearth_geo.raster`). No I/O.

Layout along one axis of ``n`` pixels with chip side ``c`` and ``overlap`` ``o``:

* ``n <= c``: one chip covering the whole axis (a chip smaller than ``c``).
* otherwise chips start every ``c - o`` pixels and the last chip is shifted inward to
  end exactly at ``n``, so every chip is full size; the last overlap may be larger
  than ``o``, never smaller.

Ownership: two neighbouring chips share an overlap strip ``[start_next, end_prev)``;
the boundary between their cores is the middle of that strip. Splitting in the middle
gives each chip's core the largest possible distance to its own window edge
(``>= o // 2`` pixels of context on every inner side), which is where a segmenter is
least reliable; any other split would shorten one chip's context to favour the other.
The cores of consecutive chips touch, so cores partition the grid exactly: every
pixel is owned by exactly one chip, and the 2-D cores are the products of the 1-D ones.
"""

from __future__ import annotations

from dataclasses import dataclass

from rasterio.windows import Window

from segearth_geo.errors import UsageError


@dataclass(frozen=True)
class Chip:
    """One chip of the grid.

    Attributes:
        index: position in row-major order (0 = top-left).
        window: processing-grid pixels the segmenter sees; ``height, width <= chip_size``.
        core: the part of ``window`` this chip owns, in processing-grid pixels; the cores
            of all chips partition the grid.
    """

    index: int
    window: Window
    core: Window

    @property
    def core_in_chip(self) -> Window:
        """``core`` relative to the chip's own pixels (offsets into the chip's ``(h, w)`` array)."""
        return Window(
            self.core.col_off - self.window.col_off,
            self.core.row_off - self.window.row_off,
            self.core.width,
            self.core.height,
        )


def axis_spans(length: int, chip_size: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """Chip and core spans along one axis.

    Returns one ``(start, stop, core_start, core_stop)`` per chip, ordered by ``start``;
    ``stop - start == min(chip_size, length)`` and the ``[core_start, core_stop)``
    ranges partition ``[0, length)``.
    """
    _check_grid_args(length, chip_size, overlap)
    if length <= chip_size:
        return [(0, length, 0, length)]
    stride = chip_size - overlap
    count = -(-(length - chip_size) // stride) + 1  # ceil division
    starts = [i * stride for i in range(count - 1)] + [length - chip_size]
    # Boundary between chips i and i+1: middle of their overlap [starts[i+1], starts[i] + chip_size).
    bounds = [0] + [(starts[i + 1] + starts[i] + chip_size) // 2 for i in range(count - 1)] + [length]
    return [(s, s + chip_size, bounds[i], bounds[i + 1]) for i, s in enumerate(starts)]


def default_overlap(chip_size: int) -> int:
    """The overlap used when none is given: 1/8 of the chip side (128 px for 1024-px chips, 32 for 256).

    The one place this default lives: ``segment_raster``, the CLI, the worker and batch jobs all
    use it, so the same request gives the same polygons whichever way it arrives. An eighth of
    the side leaves every core at least 1/16 of the chip (64 px at 1024) away from its window's
    inner edges, where a segmenter sees too little context, for about 30 % more chips than no overlap.
    """
    return int(chip_size) // 8


def axis_count(length: int, chip_size: int, overlap: int) -> int:
    """Number of chips along one axis, without building them (``len(axis_spans(...))``)."""
    _check_grid_args(length, chip_size, overlap)
    if length <= chip_size:
        return 1
    return -(-(length - chip_size) // (chip_size - overlap)) + 1


def chip_count(width: int, height: int, chip_size: int, overlap: int) -> int:
    """Number of chips of :func:`chip_grid`, computed in constant time and memory."""
    return axis_count(width, chip_size, overlap) * axis_count(height, chip_size, overlap)


# What the engine keeps per chip until the end of a job: the chip and its window/core, the answer
# and labels of a processed chip, and its footprint polygon (measured: about 1.3 KiB; rounded up).
BYTES_PER_CHIP = 2048
MAX_CHIPS = 100_000  # default guard: ~100 Gpx of 1024-px chips, ~200 MB of bookkeeping


def check_grid(width: int, height: int, chip_size: int, overlap: int, max_chips: int | None = MAX_CHIPS) -> int:
    """Return the chip count of a grid, or raise :class:`UsageError` when it exceeds ``max_chips``.

    Called before any chip is built, so an absurd request (a ``gsd`` far finer than the
    raster's own, an overlap close to the chip size) fails at once with its numbers instead
    of exhausting memory. ``max_chips`` ``None`` or ``0`` disables the guard.
    """
    count = chip_count(width, height, chip_size, overlap)
    if max_chips and count > max_chips:
        from segearth_geo.params import field_name  # params imports this module

        gib = count * BYTES_PER_CHIP / 2**30
        raise UsageError(
            f"the job would cut a {width:,} x {height:,} px grid into {count:,} chips of {chip_size} px "
            f"(overlap {overlap} px), needing about {gib:,.1f} GiB for chip bookkeeping alone; the limit is "
            f"{max_chips:,} chips. Use a coarser gsd, a smaller bbox or a smaller overlap, or raise the limit "
            f"({field_name('max_chips')} N; 0 = no limit)"
        )
    return count


def chip_grid(width: int, height: int, chip_size: int, overlap: int) -> list[Chip]:
    """All chips of a ``width`` x ``height`` processing grid, in row-major order.

    Chips are ``chip_size`` square wherever the grid is at least that large along an
    axis; a grid smaller than a chip along an axis gives chips of the grid's size there.
    Neighbouring chips overlap by at least ``overlap`` pixels (more at the shifted-in
    last row/column). Raises :class:`UsageError` for a non-positive size or chip size,
    or an ``overlap`` outside ``[0, chip_size)``.
    """
    cols = axis_spans(width, chip_size, overlap)
    rows = axis_spans(height, chip_size, overlap)
    chips = []
    for r0, r1, cr0, cr1 in rows:
        for c0, c1, cc0, cc1 in cols:
            chips.append(
                Chip(
                    index=len(chips),
                    window=Window(c0, r0, c1 - c0, r1 - r0),
                    core=Window(cc0, cr0, cc1 - cc0, cr1 - cr0),
                )
            )
    return chips


def _check_grid_args(length: int, chip_size: int, overlap: int) -> None:
    if length < 1:
        raise UsageError(f"the processing grid is empty (size {length} px along one axis)")
    if chip_size < 1:
        raise UsageError(f"chip size must be a positive number of pixels, got {chip_size}")
    if not 0 <= overlap < chip_size:
        raise UsageError(f"overlap must be between 0 and chip size - 1 ({chip_size - 1}) pixels, got {overlap}")
