"""Batch jobs with ``strategy`` ``zoom`` / ``auto``: one unit per scene, run through :func:`~segearth_geo.zoom.run_zoom`.

A zoom run's levels depend on the whole scene (the overview sees all of it), so a job with a zoom strategy plans
each scene as **one unit** (its chips: the scene's level-0 chips inside the AOI, the most the unit may process).
The unit runs :func:`~segearth_geo.zoom.run_zoom` over the scene with the job's segmenter; its shard holds the
level-0 pieces and chip records exactly as a grid unit's (so the scene is finished by the same union), and a
small **sidecar** ``<unit id>.zoom.json`` next to it holds what only a zoom run has: the coarse levels' chip rows,
the referring prompts' picks, the coarse detections and the notes. Finishing the scene
(:mod:`segearth_geo.batch.finish`) applies :class:`ZoomShards`: a referring prompt keeps its one polygon, and
the ``chips`` layer gets the coarse levels' rows (column ``level``), as ``segment`` writes them.

Written atomically (temporary file, fsync, rename), like the shard.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import geopandas as gpd
import pandas as pd
import shapely
from affine import Affine

from segearth_geo.output import atomic_file
from segearth_geo.vectorize import to_map
from segearth_geo.zoom.frames import select_one
from segearth_geo.zoom.prompts import prompt_kind
from segearth_geo.zoom.runner import ZoomRun, run_zoom

SUFFIX = ".zoom.json"


def sidecar_path(shard: Path) -> Path:
    """``<unit id>.zoom.json`` next to the unit's shard ``<unit id>.parquet``."""
    return Path(shard).with_suffix(SUFFIX)


class _Chips:
    """The engine's progress callable for a unit's ``progress(n)`` (chips done since the last call)."""

    def __init__(self, progress: Callable[[int], None]) -> None:
        self.progress, self.done = progress, 0

    def __call__(self, done: int, total: int) -> None:
        if done > self.done:
            self.progress(done - self.done)
            self.done = done


def run_unit(reader: Any, segmenter: Any, prompts: list[str], params: Any, stitchers: list, chips: tuple[int, ...],
             progress: Callable[[int], None]) -> tuple[list[list], dict[str, Any]]:
    """Run one zoom unit (a whole scene, level-0 chips limited to ``chips``); returns level 0's records per prompt
    ``(chip, answer, labels)`` and the sidecar's content."""
    run = run_zoom(reader, segmenter, list(prompts), params, stitchers, _Chips(progress), allowed=set(chips))
    return run.records, _sidecar(run, list(prompts))


def _sidecar(run: ZoomRun, prompts: list[str]) -> dict[str, Any]:
    rows = []
    for level_run in run.levels[1:]:
        level = level_run.level
        for k, recs in enumerate(level_run.records):
            windows = level.windows([c for c, _, _ in recs])
            for (chip, answer, labels), box in zip(recs, windows):
                rows.append({"level": level.index, "chip": chip.index, "prompt": k, "answer": answer,
                             "labels": ", ".join(labels), "box": list(box.bounds)})
    return {
        "strategy": run.strategy, "reason": run.reason, "chips_per_level": list(run.chips_per_level),
        "full_res_fraction": run.fraction, "notes": list(run.notes), "skipped": run.skipped,
        "detections_level": run.detections_level,
        "picks": {str(k): [shapely.to_wkt(g) for g in gs] for k, gs in run.picks.items()},
        "detections": {str(k): [shapely.to_wkt(g) for g in gs] for k, gs in run.detections.items()},
        "chips": rows,
    }


def write_sidecar(path: Path, data: dict[str, Any]) -> Path:
    """Write a unit's sidecar atomically."""
    with atomic_file(path, "w", SUFFIX) as handle:
        json.dump(data, handle)
    return path


class ZoomShards:
    """The sidecars of a scene's units, applied when the scene is finished (see the module docstring)."""

    def __init__(self, sidecars: list[dict[str, Any]], prompts: list[str]) -> None:
        self.sidecars, self.prompts = sidecars, list(prompts)

    @classmethod
    def read(cls, shards: list[Path], prompts: list[str]) -> ZoomShards:
        found = []
        for shard in shards:
            path = sidecar_path(shard)
            if path.is_file():
                found.append(json.loads(path.read_text(encoding="utf-8")))
        return cls(found, prompts)

    def _run(self, data: dict[str, Any]) -> ZoomRun:
        run = ZoomRun(data["strategy"], data["reason"], kinds=[prompt_kind(p) for p in self.prompts])
        run.picks = {int(k): [shapely.from_wkt(v) for v in vs] for k, vs in data["picks"].items()}
        run.detections = {int(k): [shapely.from_wkt(v) for v in vs] for k, vs in data["detections"].items()}
        run.detections_level = int(data.get("detections_level", 1))
        return run

    def select(self, k: int, frame: gpd.GeoDataFrame, transform: Affine) -> gpd.GeoDataFrame:
        """Prompt ``k``'s polygons as ``segment`` keeps them (a referring prompt: its one polygon)."""
        for data in self.sidecars:
            frame, _ = select_one(self._run(data), k, self.prompts[k], frame, transform)
        return frame

    def chips(self, k: int, chips: gpd.GeoDataFrame, transform: Affine, crs: Any) -> gpd.GeoDataFrame:
        """Prompt ``k``'s chip rows with the coarse levels' appended (``level`` column)."""
        rows = [r for data in self.sidecars for r in data["chips"] if r["prompt"] == k]
        if not rows:
            return chips
        boxes = shapely.box(*zip(*[r["box"] for r in rows]))
        extra = gpd.GeoDataFrame(
            {"chip": [r["chip"] for r in rows], "answer": [r["answer"] for r in rows],
             "labels": [r["labels"] for r in rows], "level": [r["level"] for r in rows]},
            geometry=gpd.GeoSeries(to_map(boxes, transform), crs=crs))
        return gpd.GeoDataFrame(pd.concat([chips, extra[chips.columns]], ignore_index=True), crs=crs)

    def notes(self) -> list[str]:
        return [note for data in self.sidecars for note in data["notes"]]


__all__ = ["SUFFIX", "ZoomShards", "run_unit", "sidecar_path", "write_sidecar"]
