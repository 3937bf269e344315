"""The zoom strategy: look at the whole area coarsely, then at full resolution only where the target may be.

:func:`run_zoom` is what :func:`~segearth_geo.engine.segment_scene` calls when ``strategy`` is ``zoom`` or
``auto``; it fills the run's level-0 :class:`~segearth_geo.stitch.Stitcher` s exactly as a grid run does, only
over fewer chips, so the engine builds, post-processes and writes the polygons the same way.

1. **Overview** (:mod:`~segearth_geo.zoom.levels`): the area resampled so that it fits one chip, or a small
   grid of chips when that would be coarser than the overview model can see; every chip is answered.
2. **Zoom**: per prompt, where the level saw its target becomes the next level's area of interest
   (:mod:`~segearth_geo.zoom.areas`: calibrated evidence for "all X" prompts; the one picked candidate for
   referring prompts, :mod:`~segearth_geo.zoom.candidates`), and only the chips of the next level whose core
   meets it are processed, level after level, down to level 0 (the grid run's own chips). ``min_coverage``
   adds the best-scored level-0 chips until that fraction of the area is looked at.
3. **Closure**: a relevant level-0 polygon that reaches the core edge of a chip that was not processed
   continues there: that chip is processed too (a few rounds), so found objects are whole, as in a grid run.

Where the areas cover the whole grid, level 0 processes every chip and the polygons equal the grid run's.
With a localizer (``zoom_model`` ``zoomearth``, :mod:`~segearth_geo.zoom.localizer`) the overview is its one look
at the whole area per prompt and the area its box (the whole area when it gives none).
``auto`` picks ``zoom`` for referring prompts and for large areas whose overview evidence is sparse, else
``grid`` (:func:`decide`); :class:`ZoomRun` says which and why.
"""

from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass, field
from typing import Any

import shapely

from segearth_geo.chips import Chip, axis_spans
from segearth_geo.params import SegmentParams, field_name
from segearth_geo.pipeline import ChipRecord, run_chips
from segearth_geo.prediction import describe_segmenter
from segearth_geo.progress import Reporter
from segearth_geo.raster import SceneReader
from segearth_geo.stitch import Stitcher
from segearth_geo.zoom import areas
from segearth_geo.zoom.candidates import Candidate, rank_candidates
from segearth_geo.zoom.evidence import BlockMap, EvidenceSink
from segearth_geo.zoom.levels import (
    DEFAULT_MAX_FACTOR,
    Level,
    base_level,
    chip_at,
    chips_in_area,
    coarse_level,
    level_reader,
    neighbour_index,
    plan_levels,
)
from segearth_geo.zoom.localizer import is_localizer, load_zoom_model
from segearth_geo.zoom.prompts import PromptKind, prompt_kind, relevant

logger = logging.getLogger(__name__)

# Factor between levels. The demo model (stage 4, trained at 0.5-2 m) sees its targets 4x coarser than 0.5 m
# scenes: one 4x jump costs fewer chips in all than 4x -> 2x -> 1x (README: 53 vs 59 chips for the sparse ships,
# 104 vs 129 for the tennis courts), so levels are 4x apart (at most; see plan_levels).
STEP = 4.0
AUTO_MIN_CHIPS = 64  # auto: semantic prompts over fewer level-0 chips run as a grid
AUTO_MAX_FRACTION = 0.3  # auto: overview evidence over more of the area than this → the rest as a grid
CLOSURE_ROUNDS = 3


@dataclass
class LevelRun:
    """The chips one level processed, per prompt ``(chip, answer, labels)`` (row-major), and its level."""

    level: Level
    records: list[list[ChipRecord]]
    localizer_answers: list[str] | None = None  # one text per prompt, for a localizer's look


@dataclass
class ZoomRun:
    """What :func:`run_zoom` did (the engine turns it into the chips layer and :class:`RunStats` fields).

    Attributes:
        strategy: ``"zoom"`` or ``"grid"`` (what ran); ``reason``: why, in words.
        levels: per level processed, finest first (level 0 always).
        picks: per referring prompt (index), its candidates (base px), best first, for :func:`keep_pick`
            (empty: the overview gave no answer; a localizer's box when it gave one).
        detections: per semantic prompt (index), the finest coarse level's detections (base px), and
            ``detections_level`` that level's index.
        kinds: the prompts' kinds; ``notes``: remarks for the summary.
        skipped: level-0 chips never sent (fully invalid); ``fraction``: of the grid looked at in level 0.
        blocks, blocks_level: the finest coarse level's evidence (union over prompts), for ``min_coverage``.
    """

    strategy: str
    reason: str
    levels: list[LevelRun] = field(default_factory=list)
    picks: dict[int, list[shapely.Geometry]] = field(default_factory=dict)
    detections: dict[int, list[shapely.Geometry]] = field(default_factory=dict)
    kinds: list[PromptKind] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: int = 0
    fraction: float = 1.0
    blocks: BlockMap = field(default_factory=dict)
    blocks_level: Level | None = None
    detections_level: int = 1

    @property
    def records(self) -> list[list[ChipRecord]]:
        """Level 0's records per prompt."""
        return self.levels[0].records

    @property
    def chips_per_level(self) -> tuple[int, ...]:
        """Chips processed per level, level 0 first (a localizer's look counts one per prompt)."""
        return tuple(sum(len(recs) for recs in run.records) if run.localizer_answers is not None
                     else len(run.records[0]) if run.records else 0 for run in self.levels)

    def stats_fields(self) -> dict[str, Any]:
        """The :class:`~segearth_geo.results.RunStats` fields this run sets."""
        return {"strategy": self.strategy, "strategy_reason": self.reason,
                "chips_per_level": self.chips_per_level if len(self.levels) > 1 else (),
                "full_res_fraction": self.fraction}


def decide(strategy: str, prompts: list[str], kinds: list[PromptKind], base: Level) -> tuple[str, str]:
    """``(strategy, reason)`` before anything is read: ``auto`` resolved as far as words and size allow
    (``"auto"`` stays when the overview's evidence must decide)."""
    if strategy == "zoom":
        return "zoom", "asked for (strategy zoom)"
    referring = [p for p, k in zip(prompts, kinds) if k.referring]
    if referring:
        return "zoom", f"auto: {referring[0]!r} is an instance-level instruction (one answer for the whole scene)"
    chips = len(base.chips())
    if chips < AUTO_MIN_CHIPS:
        return "grid", f"auto: semantic instructions over {chips} chips (fewer than {AUTO_MIN_CHIPS}): every chip"
    return "auto", ""


def overview_max_factor(gsd_range: tuple[float, float] | None, scene_gsd: float | None) -> float:
    """How much coarser than level 0 the overview model is trusted: up to the coarsest GSD it was trained on."""
    if gsd_range is None or scene_gsd is None or scene_gsd <= 0:
        return DEFAULT_MAX_FACTOR
    return max(1.0, gsd_range[1] / scene_gsd)


def run_zoom(reader: SceneReader, segmenter: Any, prompts: list[str], params: SegmentParams,
             stitchers: list[Stitcher], progress: Any, *, zoom_model: Any = None,
             allowed: set[int] | None = None) -> ZoomRun:
    """Run ``prompts`` over ``reader``'s scene by the zoom strategy (module docstring); fills ``stitchers``.

    Args:
        reader: level 0's reader (the grid run's); ``segmenter``: the run's segmenter (level 0).
        params: the run's parameters, resolved (``overlap`` set); ``strategy`` ``zoom`` or ``auto``.
        stitchers: level 0's, one per prompt (filled here, finished by the caller).
        progress: as :func:`~segearth_geo.engine.segment_raster` takes it.
        zoom_model: an already loaded overview model (a localizer or a segmenter) instead of loading
            ``params.zoom_model``.
        allowed: level-0 chip indices that may be processed (a batch unit's, inside its AOI); ``None``: all.
    """
    info = describe_segmenter(segmenter)
    scene = reader.scene
    base = base_level(scene.width, scene.height, info.chip_size, int(params.overlap))
    kinds = [prompt_kind(p) for p in prompts]
    strategy, reason = decide(params.strategy, prompts, kinds, base)
    run = ZoomRun(strategy, reason, kinds=kinds)
    report = Reporter(progress, 0, announce=True)
    try:
        area = None  # None: the whole grid
        if strategy != "grid":
            model = zoom_model or (segmenter if params.zoom_model is None else load_zoom_model(params.zoom_model))
            if is_localizer(model):
                area = _localize(run, reader, base, model, prompts, report)
            else:
                area = _coarse_levels(run, reader, base, model, prompts, params, report)
        _level_zero(run, reader, base, segmenter, prompts, params, stitchers, area, report, allowed)
    finally:
        report.close()
    return run  # what ran (chips per level, fraction) is in the run's statistics, not a note: notes are warnings


def _warn(run: ZoomRun, note: str) -> None:
    """A remark for the run's summary, logged once (the CLI shows warnings)."""
    logger.warning("%s", note)
    run.notes.append(note)


def _grow(report: Reporter, chips: int) -> None:
    """More chips to come: the progress total grows as each level is planned."""
    report.chips_total += chips
    if report.bar is not None:
        report.bar.total = report.chips_total
        report.bar.refresh()


def _coarse_levels(run: ZoomRun, reader: SceneReader, base: Level, model: Any, prompts: list[str],
                   params: SegmentParams, report: Reporter) -> shapely.Geometry | None:
    """Levels overview → 1 with segmenter ``model``; returns level 0's area (``None``: the whole grid)."""
    info = describe_segmenter(model)
    max_factor = overview_max_factor(info.gsd_range, reader.scene.gsd)
    levels = plan_levels(base.width, base.height, base.chip_size, base.overlap, max_factor=max_factor, step=STEP,
                         overview_chip_size=info.chip_size)
    if len(levels) == 1:
        run.strategy, run.reason = "grid", (f"the area fits the model's view within {max_factor:.3g}x its "
                                            "resolution: nothing to zoom from, every chip")
        return None
    area: shapely.Geometry | None = None
    for level in reversed(levels[1:]):
        chips = level.chips() if area is None else chips_in_area(level, area)
        _grow(report, len(chips))
        sinks = [EvidenceSink(level.width, level.height, p, k, params.threshold) for p, k in zip(prompts, run.kinds)]
        records = run_chips(level_reader(reader, level), chips, model, prompts, params.batch_size, sinks,
                            report.chips) if chips else [[] for _ in prompts]
        run.levels.append(LevelRun(level, records))
        area = _next_area(run, level, prompts, sinks, overview=level is levels[-1])
        if run.strategy == "auto":
            seen = 0.0 if area is None or area.is_empty else area.area / areas.grid_box(level).area
            if seen > AUTO_MAX_FRACTION:
                run.strategy, run.reason = "grid", (f"auto: the overview saw the target over {seen:.0%} of the area "
                                                    f"(more than {AUTO_MAX_FRACTION:.0%}): every chip")
                return None
            run.strategy, run.reason = "zoom", (f"auto: semantic instructions over {len(base.chips())} chips, the "
                                                f"overview saw the target over {seen:.0%} of the area")
    if area.is_empty and not params.min_coverage:
        _warn(run, f"the overview saw no trace of {' / '.join(map(repr, prompts))}: nothing was looked at in full "
                   f"resolution ({field_name('min_coverage')} F looks at part of the area anyway)")
    return area


def _next_area(run: ZoomRun, level: Level, prompts: list[str], sinks: list[EvidenceSink],
               overview: bool) -> shapely.Geometry:
    """The union over prompts of what the next level must look at (base px); records picks, detections and the
    level's evidence."""
    parts = []
    run.blocks, run.blocks_level, run.detections_level = {}, level, level.index
    for k, (prompt, kind, sink) in enumerate(zip(prompts, run.kinds, sinks)):
        regions = [r for r in sink.detections.finish() if relevant(r.label, prompt, kind)]
        found = [Candidate(level.to_base(r.geometry), r.score, r.label, r.pixels) for r in regions]
        blocks, own = sink.blocks()
        for key, value in blocks.items():
            run.blocks[key] = max(value, run.blocks.get(key, 0.0))
        if kind.referring:
            ranked = rank_candidates(found, kind)
            if ranked:
                run.picks[k] = [c.geometry for c in ranked]
            if run.picks.get(k):
                parts.extend(areas.candidate_area(g, level) for g in run.picks[k])
                continue
            if overview:
                _warn(run, f"the overview gave no answer to {prompt!r}: zooming on its evidence instead")
        else:
            run.detections[k] = [c.geometry for c in found]
        if not own and overview:
            _warn(run, f"no answer to {prompt!r} carried a label naming it at the overview: zooming wherever the "
                       "model answered anything")
        parts.append(areas.evidence_area(blocks, level))
    return shapely.union_all(parts) if parts else shapely.Polygon()


def _localize(run: ZoomRun, reader: SceneReader, base: Level, model: Any, prompts: list[str],
              report: Reporter) -> shapely.Geometry | None:
    """One look per prompt by a localizer; returns level 0's area (``None``: the whole grid)."""
    from rasterio.windows import Window

    factor = max(1.0, max(base.width, base.height) / model.read_side)
    level = coarse_level(1, base.width, base.height, factor, max(base.width, base.height))
    _grow(report, len(prompts))
    rgb, _ = level_reader(reader, level).read(Window(0, 0, level.width, level.height))  # (h, w, 3)
    whole = Chip(0, Window(0, 0, level.width, level.height), Window(0, 0, level.width, level.height))
    parts, texts, records = [], [], []
    for k, prompt in enumerate(prompts):
        found = model.localize(rgb, prompt)
        texts.append(found.text)
        records.append([(whole, found.text, [])])
        if found.box is None:
            run.picks[k] = []
            _warn(run, f"{type(model).__name__} gave no box for {prompt!r}: the whole area was segmented (grid)")
            run.reason = f"{type(model).__name__} gave no box for {prompt!r}: the whole area (grid)"
            parts.append(areas.grid_box(base))
            report.chips(1)
            continue
        x0, y0, x1, y1 = found.box
        box = (x0 * level.sx, y0 * level.sy, x1 * level.sx, y1 * level.sy)  # base px
        region = shapely.box(*model.zoom_region(box, base.width, base.height))
        run.picks[k] = [shapely.box(*box)] if run.kinds[k].referring else []
        parts.append(areas.candidate_area(region, level))
        if not run.kinds[k].referring:
            _warn(run, f"{type(model).__name__} names one region per instruction; for 'all X' instructions such as "
                       f"{prompt!r} the default overview (no {field_name('zoom_model')}) looks everywhere")
        report.chips(1)
    run.levels.append(LevelRun(level, records, localizer_answers=texts))
    return shapely.union_all(parts)


def _level_zero(run: ZoomRun, reader: SceneReader, base: Level, segmenter: Any, prompts: list[str],
                params: SegmentParams, stitchers: list[Stitcher], area: shapely.Geometry | None,
                report: Reporter, allowed: set[int] | None = None) -> None:
    """Level 0 over ``area`` (``None``: every chip), ``min_coverage``, then closure rounds (``allowed`` chips only)."""
    every = [c for c in base.chips() if allowed is None or c.index in allowed]
    chips = every if area is None else [c for c in chips_in_area(base, area) if allowed is None or c.index in allowed]
    if params.min_coverage and area is not None and areas.coverage(base, chips) < params.min_coverage:
        scores = (areas.chip_scores(run.blocks, run.blocks_level, base, every) if run.blocks_level is not None
                  else [0.0] * len(every))
        chips = areas.cover_at_least(params.min_coverage, base, chips, scores, every)
    records: list[list[ChipRecord]] = [[] for _ in prompts]
    done: set[int] = set()
    for _round in range(CLOSURE_ROUNDS + 1):
        chips = [c for c in chips if c.index not in done]
        if not chips:
            break
        _grow(report, len(chips))
        new = run_chips(reader, chips, segmenter, prompts, params.batch_size, stitchers, report.chips)
        for k, recs in enumerate(new):
            records[k].extend(recs)
        done.update(c.index for c in chips)
        if area is None:
            break
        chips = [c for c in _continuations(base, stitchers, prompts, run.kinds, done)
                 if allowed is None or c.index in allowed]
    for recs in records:
        recs.sort(key=lambda record: record[0].index)
    run.skipped = len(done) - len(records[0])
    run.levels.sort(key=lambda lr: lr.level.index)
    run.levels.insert(0, LevelRun(base, records))
    run.fraction = areas.coverage(base, [c for c, _, _ in records[0]])


def _continuations(base: Level, stitchers: list[Stitcher], prompts: list[str], kinds: list[PromptKind],
                   done: set[int]) -> list[Chip]:
    """Unprocessed level-0 chips into which a relevant polygon continues (it reaches their shared core edge)."""
    wanted: set[int] = set()
    for stitcher, prompt, kind in zip(stitchers, prompts, kinds):
        _, border = stitcher.pieces()
        for label, pieces in border.items():
            if not relevant(label, prompt, kind):
                continue
            for piece in pieces:
                wanted.update(_across(base, piece.bounds, done))
    return [chip_at(base, i) for i in sorted(wanted - done)]


def _across(base: Level, bounds: tuple[int, int, int, int], done: set[int]) -> set[int]:
    """Chips across the core edges that a piece with ``bounds`` (base px) reaches."""
    minx, miny, maxx, maxy = bounds
    owner = _owner(base, minx, miny)
    if owner is None or owner not in done:
        return set()
    core = chip_at(base, owner).core
    c0, r0 = core.col_off, core.row_off
    c1, r1 = c0 + core.width, r0 + core.height
    out = set()
    for hit, d_row, d_col in ((minx == c0, 0, -1), (maxx == c1, 0, 1), (miny == r0, -1, 0), (maxy == r1, 1, 0)):
        if hit:
            index = neighbour_index(base, owner, d_row, d_col)
            if index is not None and index not in done:
                out.add(index)
    return out


def _owner(base: Level, x: int, y: int) -> int | None:
    """Row-major index of the level-0 chip whose core holds base pixel ``(x, y)``."""
    cols = axis_spans(base.width, base.chip_size, base.overlap)
    rows = axis_spans(base.height, base.chip_size, base.overlap)
    c = bisect.bisect_right([s[2] for s in cols], x) - 1
    r = bisect.bisect_right([s[2] for s in rows], y) - 1
    if not (0 <= c < len(cols) and 0 <= r < len(rows)):
        return None
    return r * len(cols) + c


__all__ = ["AUTO_MAX_FRACTION", "AUTO_MIN_CHIPS", "CLOSURE_ROUNDS", "LevelRun", "STEP", "ZoomRun", "decide",
           "overview_max_factor", "run_zoom"]
