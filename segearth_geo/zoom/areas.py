"""Areas of interest: from what a coarse level saw to the part of the next level that must be looked at.

All areas are shapely geometries in **base px** (level-0 pixel coordinates, see :mod:`segearth_geo.zoom.levels`),
clipped to the grid.

* :func:`evidence_area` — for "all X" prompts: every evidence block at or above the calibrated
  :data:`EVIDENCE_THRESHOLD`, dilated by :data:`MARGIN` level pixels (a square dilation: the blocks grow by the
  margin on every side) and merged. A chip is skipped at the next level only when no block within the margin of
  its core reached the threshold, i.e. when the coarse evidence says it is empty *with margin*.
* :func:`candidate_area` — for referring prompts: the one picked candidate's bounding box, dilated likewise.
* :func:`chip_scores` / :func:`cover_at_least` — ``min_coverage``: when the areas leave less than a fraction of
  the grid to be looked at in full resolution, more level-0 chips are added, those with the strongest evidence
  first (ties: row-major order), until the fraction is reached.
* :func:`coverage` — the fraction of the grid the processed level-0 chips' cores cover.

:data:`EVIDENCE_THRESHOLD` was calibrated with ``benchmarks/zoom.py --calibrate`` on SynthEarth scenes that are
not benchmark scenes (seeds 100-105: sparse harbour and rural, airport, harbour; 4096² px at 0.5 m; the bundled
demo model, overview at 2 m): for each of the 74 true objects of the asked category, the largest evidence over its
footprint at the overview. 98 % of them reach 0.715 (median 0.998); the threshold is half of that, 0.35 — a
margin under what true objects show, never the bare mask's 0.5. Below it lie about half of the evidence blocks
away from any true object (their median is 0.09), which is what the threshold saves.
"""

from __future__ import annotations

import math

import numpy as np
import shapely

from segearth_geo.chips import Chip
from segearth_geo.zoom.evidence import BLOCK, BlockMap
from segearth_geo.zoom.levels import Level

EVIDENCE_THRESHOLD = 0.35  # calibrated (module docstring): below it a block says "empty"
MARGIN = 8  # level pixels added around evidence and candidates (the coarse level's localisation error)


def grid_box(level: Level) -> shapely.Polygon:
    """The whole grid in base px."""
    return shapely.box(0, 0, level.width * level.sx, level.height * level.sy)


def evidence_area(blocks: BlockMap, level: Level, threshold: float = EVIDENCE_THRESHOLD,
                  margin: float = MARGIN) -> shapely.Geometry:
    """Blocks of ``level`` with evidence ``>= threshold``, each dilated by ``margin`` level px, merged (base px)."""
    keys = sorted(k for k, v in blocks.items() if v >= threshold)
    if not keys:
        return shapely.Polygon()
    rc = np.array(keys, dtype=np.float64)  # (n, 2) block row, col
    minx, miny = rc[:, 1] * BLOCK - margin, rc[:, 0] * BLOCK - margin
    maxx, maxy = (rc[:, 1] + 1) * BLOCK + margin, (rc[:, 0] + 1) * BLOCK + margin
    boxes = shapely.box(minx * level.sx, miny * level.sy, maxx * level.sx, maxy * level.sy)
    return shapely.intersection(shapely.union_all(boxes), grid_box(level))


def candidate_area(region: shapely.Geometry, level: Level, margin: float = MARGIN) -> shapely.Geometry:
    """A candidate region (base px) → its bounding box dilated by ``margin`` pixels of ``level``, clipped."""
    minx, miny, maxx, maxy = region.bounds
    box = shapely.box(minx - margin * level.sx, miny - margin * level.sy, maxx + margin * level.sx,
                      maxy + margin * level.sy)
    return shapely.intersection(box, grid_box(level))


def coverage(level: Level, chips: list[Chip]) -> float:
    """Fraction of ``level``'s grid covered by the cores of ``chips`` (cores never overlap)."""
    if not chips:
        return 0.0
    area = float(sum(c.core.width * c.core.height for c in chips))
    return area / float(level.width * level.height)


def chip_scores(blocks: BlockMap, coarse: Level, fine: Level, chips: list[Chip]) -> np.ndarray:
    """Per chip of ``fine`` ``(n,)``: the largest evidence of ``coarse``'s blocks overlapping its core (0 when none)."""
    scores = np.zeros(len(chips), dtype=np.float64)
    if not blocks or not chips:
        return scores
    keys = np.array(list(blocks), dtype=np.float64)  # (m, 2)
    values = np.array(list(blocks.values()), dtype=np.float64)
    boxes = shapely.box(keys[:, 1] * BLOCK * coarse.sx, keys[:, 0] * BLOCK * coarse.sy,
                        (keys[:, 1] + 1) * BLOCK * coarse.sx, (keys[:, 0] + 1) * BLOCK * coarse.sy)
    cores = fine.cores(chips)
    chip_idx, block_idx = shapely.STRtree(boxes).query(cores, predicate="intersects")
    inside = shapely.area(shapely.intersection(cores[chip_idx], boxes[block_idx])) > 0  # not a shared edge
    np.maximum.at(scores, chip_idx[inside], values[block_idx[inside]])
    return scores


def cover_at_least(fraction: float, fine: Level, selected: list[Chip], scores: np.ndarray,
                   all_chips: list[Chip]) -> list[Chip]:
    """``selected`` plus the best-scored other chips of ``all_chips`` until their cores cover ``fraction``.

    ``scores`` are ``all_chips``' evidence (:func:`chip_scores`); ties go in row-major order. Returns row-major.
    """
    have = {c.index for c in selected}
    needed = math.ceil(fraction * fine.width * fine.height - 1e-9)
    area = sum(c.core.width * c.core.height for c in selected)
    order = sorted((i for i, c in enumerate(all_chips) if c.index not in have), key=lambda i: (-scores[i], i))
    chosen = list(selected)
    for i in order:
        if area >= needed:
            break
        chosen.append(all_chips[i])
        area += all_chips[i].core.width * all_chips[i].core.height
    return sorted(chosen, key=lambda c: c.index)


__all__ = ["EVIDENCE_THRESHOLD", "MARGIN", "candidate_area", "chip_scores", "cover_at_least", "coverage",
           "evidence_area", "grid_box"]
