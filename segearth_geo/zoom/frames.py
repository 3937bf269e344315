"""A zoom run's tables: the ``chips`` layer over every level, and the polygons a referring prompt keeps.

* :func:`chips_frame` — one row per processed chip and prompt at every level (``level`` 0 = full resolution, the
  grid run's chips; higher = coarser), with the chip's footprint in map coordinates: its row count is the work
  done. A localizer's look is one row per prompt (``chip`` 0, its text answer, the whole area).
* :func:`select` — the per-prompt polygon frames after level 0: a referring prompt keeps the one polygon that
  overlaps its picked candidate most (:func:`~segearth_geo.zoom.candidates.keep_pick`); targets the finest
  coarse level detected that no polygon confirms are counted in a note (never dropped silently).
"""

from __future__ import annotations

import logging
from typing import Any

import geopandas as gpd
import numpy as np
import shapely
from affine import Affine

from segearth_geo.vectorize import to_map
from segearth_geo.zoom.candidates import keep_pick, unconfirmed
from segearth_geo.zoom.runner import ZoomRun

NOTED = 3  # unconfirmed places named in a note (the count is always given)
logger = logging.getLogger(__name__)


def chips_frame(run: ZoomRun, prompts: list[str], transform: Affine, crs: Any) -> gpd.GeoDataFrame:
    """The ``chips`` layer: ``chip, prompt, answer, labels, level`` + footprint (map coordinates)."""
    columns: dict[str, list] = {"chip": [], "prompt": [], "answer": [], "labels": [], "level": []}
    footprints = []
    for level_run in run.levels:
        level = level_run.level
        for prompt, recs in zip(prompts, level_run.records):
            windows = level.windows([c for c, _, _ in recs])  # base px
            footprints.extend(to_map(windows, transform) if len(windows) else [])
            for chip, answer, labels in recs:
                columns["chip"].append(chip.index)
                columns["prompt"].append(prompt)
                columns["answer"].append(answer)
                columns["labels"].append(", ".join(labels))
                columns["level"].append(level.index)
    geometry = gpd.GeoSeries(np.asarray(footprints, dtype=object) if footprints else [], crs=crs)
    frame = gpd.GeoDataFrame(columns, geometry=geometry)
    frame["level"] = frame["level"].astype("int64")
    return frame


def select(run: ZoomRun, frames: list[gpd.GeoDataFrame], prompts: list[str],
           transform: Affine) -> tuple[list[gpd.GeoDataFrame], list[str]]:
    """Per prompt, the polygons to keep (referring prompts: one) and notes on unconfirmed coarse targets."""
    kept, notes = [], []
    for k, (prompt, frame) in enumerate(zip(prompts, frames)):
        frame, said = select_one(run, k, prompt, frame, transform)
        kept.append(frame)
        notes.extend(said)
    return kept, notes


def select_one(run: ZoomRun, k: int, prompt: str, frame: gpd.GeoDataFrame,
               transform: Affine) -> tuple[gpd.GeoDataFrame, list[str]]:
    """Prompt ``k``'s polygons to keep and its notes (logged as warnings)."""
    kind, notes = run.kinds[k], []
    if kind.referring and run.picks.get(k):
        picks = list(to_map(np.asarray(run.picks[k], dtype=object), transform))
        frame, confirmed = keep_pick(frame, picks, prompt, kind, lambda g: to_map(np.asarray([g], dtype=object),
                                                                                  ~transform)[0])
        if not confirmed:
            x, y = picks[0].centroid.x, picks[0].centroid.y
            notes.append(f"the overview's answer to {prompt!r} (around {x:.6g}, {y:.6g}) was not confirmed at full "
                         "resolution: no polygon kept for it")
    elif not kind.referring and run.detections.get(k):
        seen = list(to_map(np.asarray(run.detections[k], dtype=object), transform))
        missing = unconfirmed(seen, frame, prompt, kind)
        if missing:
            where = "; ".join(f"{p.x:.6g}, {p.y:.6g}" for p in shapely.centroid(missing[:NOTED]))
            more = f" and {len(missing) - NOTED} more" if len(missing) > NOTED else ""
            notes.append(f"{len(missing)} target(s) of {prompt!r} seen at level {run.detections_level} were not "
                         f"confirmed at full resolution (around {where}{more})")
    for note in notes:
        logger.warning("%s", note)
    return frame, notes


__all__ = ["chips_frame", "select", "select_one"]
