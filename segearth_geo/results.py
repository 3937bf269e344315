"""What a run returns: :class:`SegmentResult` (polygons, chips, :class:`RunStats`).

The CLI summary, the worker's ``result`` reply and batch jobs read the typed fields of :class:`RunStats`.
:func:`~segearth_geo.segment_raster` returns only the polygons; their ``attrs["segearth"]`` holds
:meth:`RunStats.to_dict` (a JSON-able view kept for one release for code written against 0.1; new code
calls :func:`~segearth_geo.engine.segment_scene` and reads ``result.stats``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RunStats:
    """Statistics of one run over one scene.

    Attributes:
        chips_total: chips in the grid; ``chips_processed`` sent to the segmenter; ``chips_skipped`` fully
            invalid (nodata) chips never sent.
        chip_size, overlap: the grid (pixels).
        prompts: the cleaned prompts, in order.
        seconds: wall time of the run (reading, model, vectorising, writing).
        answers_by_prompt: per prompt, ``{chip index: the model's text answer}``.
        cache: this run's share of the segmenter's image-cache counters (``hits``/``misses`` per tier,
            ``evictions``; sizes as they are now), ``None`` for segmenters without a cache.
        device: what the segmenter ran on, in words (``None``: not told).
        model: the model spec, when the caller told it.
        output: the file written, if any.
        notes: warnings for the user (a scene GSD far from the model's, …), already logged once.
        notice: what must be said wherever this model runs (the demo: "synthetic demo — not for real imagery").
        strategy: what ran: ``"grid"`` (every chip) or ``"zoom"`` (an overview first, :mod:`segearth_geo.zoom`);
            ``strategy_reason``: why, in words (``None`` for a plain grid run).
        chips_per_level: with zoom, chips processed per level, level 0 (full resolution) first, the overview
            last (a localizer's look counts one per prompt); ``()`` for a grid run.
        full_res_fraction: with zoom, the fraction of the area looked at in full resolution (``None``: grid, 1).
    """

    chips_total: int
    chips_processed: int
    chips_skipped: int
    chip_size: int
    overlap: int
    prompts: tuple[str, ...]
    seconds: float
    answers_by_prompt: dict[str, dict[int, str]] = field(default_factory=dict)
    cache: dict[str, Any] | None = None
    device: str | None = None
    model: str | None = None
    output: str | None = None
    notes: tuple[str, ...] = ()
    notice: str | None = None
    strategy: str = "grid"
    strategy_reason: str | None = None
    chips_per_level: tuple[int, ...] = ()
    full_res_fraction: float | None = None

    @property
    def answers(self) -> dict[int, str]:
        """The first prompt's answers per chip."""
        return self.answers_by_prompt.get(self.prompts[0], {}) if self.prompts else {}

    @property
    def cache_hits(self) -> int:
        """Chips whose image work was reused (the largest hit count over the cache's tiers)."""
        hits = (self.cache or {}).get("hits") or {}
        return max(hits.values(), default=0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able view (``prompts`` a list, chip indices as ints; also ``answers``: the first prompt's)."""
        data: dict[str, Any] = {
            "chips_total": self.chips_total,
            "chips_processed": self.chips_processed,
            "chips_skipped": self.chips_skipped,
            "chip_size": self.chip_size,
            "overlap": self.overlap,
            "prompts": list(self.prompts),
            "seconds": self.seconds,
            "answers": dict(self.answers),
            "answers_by_prompt": {p: dict(a) for p, a in self.answers_by_prompt.items()},
            "device": self.device,
            "model": self.model,
            "output": self.output,
            "notes": list(self.notes),
            "notice": self.notice,
            "strategy": self.strategy,
            "strategy_reason": self.strategy_reason,
            "chips_per_level": list(self.chips_per_level),
            "full_res_fraction": self.full_res_fraction,
        }
        if self.cache is not None:
            data["cache"] = self.cache
        return data


@dataclass(frozen=True)
class SegmentResult:
    """The result of :func:`~segearth_geo.engine.segment_scene`.

    Attributes:
        segments: GeoDataFrame, one row per polygon (columns :data:`~segearth_geo.pipeline.COLUMNS` +
            geometry), in the scene's CRS.
        chips: GeoDataFrame, one row per processed chip and prompt (``chip``, ``prompt``, ``answer``,
            ``labels``, ``level`` (0 = full resolution; the zoom strategy's coarser levels above), footprint).
        stats: :class:`RunStats`.
    """

    segments: Any
    chips: Any
    stats: RunStats


__all__ = ["RunStats", "SegmentResult"]
