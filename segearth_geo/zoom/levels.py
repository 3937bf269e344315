"""The zoom pyramid: levels of one processing grid, their readers, and which chips of a level an area needs.

Level 0 is the processing grid of a ``grid`` run (native resolution or ``gsd``, after the bbox crop), cut into
exactly the grid run's chips. Level ``k > 0`` covers the same area ``factor_k`` times coarser: a grid of
``round(W / f) × round(H / f)`` pixels read from the same source window with the same stretch and validity
rules (:class:`~segearth_geo.raster.SceneReader` resamples inside the read, averaging, so memory does not grow
with the scene). The coarsest level is the **overview**: the whole area in one chip, or — when that would be
coarser than the model can see (``max_factor``) — a small grid of chips at ``max_factor``.

Geometry between levels is carried in **level-0 pixel coordinates** ("base px", ``x`` = column, ``y`` = row):
a level pixel ``(c, r)`` covers base px ``[c·sx, (c+1)·sx) × [r·sy, (r+1)·sy)`` with ``sx = W / w`` and
``sy = H / h`` (exact ratios; the last level pixel ends exactly on the grid edge). At level 0 the scale is 1 and
every coordinate is an integer, so which chips an area selects is exact (:func:`chips_in_area`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import shapely
from affine import Affine

from segearth_geo.chips import Chip, axis_spans, chip_grid, default_overlap
from segearth_geo.raster import SceneReader

MIN_FACTOR = 2.0  # an overview less than 2x coarser than level 0 saves too little: such a run is a plain grid
DEFAULT_MAX_FACTOR = 4.0  # how much coarser than level 0 a model without a declared GSD range is trusted to see


@dataclass(frozen=True)
class Level:
    """One level of the pyramid.

    Attributes:
        index: 0 = full resolution (the grid's), higher = coarser; the coarsest is the overview.
        width, height: the level's grid in pixels.
        sx, sy: base px per level px along x and y (1 at level 0).
        chip_size, overlap: its chips (the overview segmenter's chip size above level 0).
    """

    index: int
    width: int
    height: int
    sx: float
    sy: float
    chip_size: int
    overlap: int

    @property
    def factor(self) -> float:
        """How much coarser than level 0 (geometric mean of ``sx`` and ``sy``)."""
        return math.sqrt(self.sx * self.sy)

    def chips(self) -> list[Chip]:
        """Every chip of this level's grid, row-major (level 0: exactly the grid run's chips)."""
        return chip_grid(self.width, self.height, self.chip_size, self.overlap)

    def to_base(self, geometry: shapely.Geometry) -> shapely.Geometry:
        """A geometry in this level's pixels → base px."""
        if self.index == 0:
            return geometry
        return shapely.transform(geometry, lambda xy: xy * np.array([self.sx, self.sy]))

    def box_to_base(self, minx: float, miny: float, maxx: float, maxy: float) -> shapely.Polygon:
        """A level-pixel box → the base-px box it covers."""
        return shapely.box(minx * self.sx, miny * self.sy, maxx * self.sx, maxy * self.sy)

    def cores(self, chips: list[Chip]) -> np.ndarray:
        """The chips' cores as base-px boxes ``(n,)``."""
        if not chips:
            return np.empty(0, dtype=object)
        bounds = np.array([(c.core.col_off, c.core.row_off, c.core.col_off + c.core.width,
                            c.core.row_off + c.core.height) for c in chips], dtype=np.float64)  # (n, 4) level px
        bounds *= np.array([self.sx, self.sy, self.sx, self.sy])
        return shapely.box(*bounds.T)

    def windows(self, chips: list[Chip]) -> np.ndarray:
        """The chips' windows (what the segmenter saw) as base-px boxes ``(n,)``."""
        if not chips:
            return np.empty(0, dtype=object)
        bounds = np.array([(c.window.col_off, c.window.row_off, c.window.col_off + c.window.width,
                            c.window.row_off + c.window.height) for c in chips], dtype=np.float64)
        bounds *= np.array([self.sx, self.sy, self.sx, self.sy])
        return shapely.box(*bounds.T)


def base_level(width: int, height: int, chip_size: int, overlap: int) -> Level:
    """Level 0: the grid run's processing grid and chips."""
    return Level(0, int(width), int(height), 1.0, 1.0, int(chip_size), int(overlap))


def coarse_level(index: int, width: int, height: int, factor: float, chip_size: int,
                 overlap: int | None = None) -> Level:
    """Level ``index`` of a ``width × height`` base grid, ``factor`` times coarser (grid rounded, at least 1 px)."""
    w = min(int(width), max(1, round(width / factor)))
    h = min(int(height), max(1, round(height / factor)))
    return Level(index, w, h, width / w, height / h, int(chip_size),
                 default_overlap(chip_size) if overlap is None else int(overlap))


def plan_levels(width: int, height: int, chip_size: int, overlap: int, *, max_factor: float, step: float,
                overview_chip_size: int | None = None) -> list[Level]:
    """The pyramid of a ``width × height`` grid, finest first: ``[level 0, …, overview]``.

    The overview's factor is what fits the whole area into one chip (``max(W, H) / chip``), capped at
    ``max_factor``; below it, each level is ``step`` times finer while it stays at least :data:`MIN_FACTOR`
    times coarser than level 0 (so the last jump, to level 0, is ``2`` to ``2·step``). A single level (a plain
    grid) when the overview would be less than :data:`MIN_FACTOR` times coarser.

    Args:
        chip_size, overlap: level 0's chips; ``overview_chip_size``: the chips of the levels above 0 (another
            overview segmenter), default ``chip_size`` (with its default overlap when it differs).
        max_factor: the coarsest factor the overview model is trusted at (``>= 1``).
        step: the factor between consecutive levels (``> 1``).
    """
    if step <= 1:
        raise ValueError(f"the zoom step must be > 1, got {step}")
    levels = [base_level(width, height, chip_size, overlap)]
    coarse_chip = int(overview_chip_size or chip_size)
    coarse_overlap = overlap if coarse_chip == chip_size else None
    top = min(max(width, height) / coarse_chip, max(1.0, float(max_factor)))
    if top < MIN_FACTOR:
        return levels
    factors = [top]
    while factors[-1] / step >= MIN_FACTOR:  # each level `step` times finer; the last jump to level 0 is < 2·step
        factors.append(factors[-1] / step)
    for index, factor in enumerate(reversed(factors), start=1):
        levels.append(coarse_level(index, width, height, factor, coarse_chip, coarse_overlap))
    return levels


def level_reader(base: SceneReader, level: Level) -> SceneReader:
    """A reader of ``level``'s grid over the same source window as ``base`` (level 0's reader).

    Same dataset, bands, stretch and validity rules; only the grid is coarser (GDAL averages inside each read).
    """
    if level.index == 0:
        return base
    scene = base.scene
    gsd_xy = None if scene.gsd_xy is None else (scene.gsd_xy[0] * level.sx, scene.gsd_xy[1] * level.sy)
    coarse = replace(scene, width=level.width, height=level.height,
                     transform=scene.transform * Affine.scale(level.sx, level.sy), gsd_xy=gsd_xy,
                     gsd=None if gsd_xy is None else math.sqrt(gsd_xy[0] * gsd_xy[1]))
    # The reader's dataset is shared on purpose: levels are read one after another, on one thread at a time.
    return base.regrid(coarse)


def chips_in_area(level: Level, area: shapely.Geometry) -> list[Chip]:
    """The chips of ``level`` whose core overlaps ``area`` (base px) with a positive area, row-major.

    The cores of the returned chips cover ``area`` ∩ grid; every other chip's core meets it at most along an
    edge or a corner. Built from the 1-D spans: only the rows and columns the area's bounds reach are tested.
    """
    if area is None or area.is_empty or area.area <= 0:
        return []
    cols = axis_spans(level.width, level.chip_size, level.overlap)
    rows = axis_spans(level.height, level.chip_size, level.overlap)
    minx, miny, maxx, maxy = area.bounds
    col_ids = [i for i, (_, _, c0, c1) in enumerate(cols) if c0 * level.sx < maxx and c1 * level.sx > minx]
    row_ids = [i for i, (_, _, r0, r1) in enumerate(rows) if r0 * level.sy < maxy and r1 * level.sy > miny]
    if not col_ids or not row_ids:
        return []
    candidates = [_chip(rows, cols, r, c) for r in row_ids for c in col_ids]
    cores = level.cores(candidates)
    shapely.prepare(area)
    hits = np.flatnonzero(shapely.intersects(area, cores))
    if len(hits):
        hits = hits[shapely.area(shapely.intersection(area, cores[hits])) > 0]
    return [candidates[i] for i in hits]


def chip_at(level: Level, index: int) -> Chip:
    """Chip ``index`` (row-major) of ``level``'s grid, without building the grid."""
    cols = axis_spans(level.width, level.chip_size, level.overlap)
    rows = axis_spans(level.height, level.chip_size, level.overlap)
    return _chip(rows, cols, index // len(cols), index % len(cols))


def _chip(rows: list, cols: list, r: int, c: int) -> Chip:
    from rasterio.windows import Window

    r0, r1, cr0, cr1 = rows[r]
    c0, c1, cc0, cc1 = cols[c]
    return Chip(index=r * len(cols) + c, window=Window(c0, r0, c1 - c0, r1 - r0),
                core=Window(cc0, cr0, cc1 - cc0, cr1 - cr0))


def neighbour_index(level: Level, index: int, d_row: int, d_col: int) -> int | None:
    """Row-major index of the chip ``(d_row, d_col)`` away from chip ``index``, ``None`` outside the grid."""
    n_cols = len(axis_spans(level.width, level.chip_size, level.overlap))
    n_rows = len(axis_spans(level.height, level.chip_size, level.overlap))
    r, c = divmod(index, n_cols)
    r, c = r + d_row, c + d_col
    if 0 <= r < n_rows and 0 <= c < n_cols:
        return r * n_cols + c
    return None


__all__ = ["DEFAULT_MAX_FACTOR", "Level", "MIN_FACTOR", "base_level", "chip_at", "chips_in_area", "coarse_level",
           "level_reader", "neighbour_index", "plan_levels"]
