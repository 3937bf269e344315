"""A referring prompt's one answer: picking it among a coarse level's candidates, and keeping it at level 0.

A chip-level model answers "the largest airplane" per chip; at a coarse level whose area spans several chips
(or where one chip's answer has several parts) there are several **candidates**. :func:`rank_candidates` orders
them as the scene's answer would be chosen: by the prompt's criterion when the engine can apply it
(:data:`~segearth_geo.zoom.prompts.CRITERIA`: largest/smallest area, leftmost/rightmost/topmost/bottommost
centroid), else by confidence (the highest mean probability); ties by position, so the order does not depend on
chip order. Specks of fewer than :data:`MIN_CANDIDATE` level pixels are noise at a coarse level (the demo model
answers "the leftmost ship" with a 6-px speck on land at the scene's edge) and are not candidates. The first
:data:`KEPT` candidates are looked at more closely.

At level 0 the chips around those candidates answer again, each for its own view. :func:`keep_pick` takes, per
candidate, the relevant full-resolution polygons that overlap it (its confirmation: the object as segmented at full
resolution, in one piece or, where the model's mask broke it up, in fragments), and keeps one candidate's: by the
criterion again, now measured on the full-resolution polygons (two airplanes 1 % apart in size are ranked at the
overview's 2 m by a few pixels; at 0.5 m the right one wins), else the best-ranked confirmed candidate's. None
confirmed → the run reports that the overview's answer was not confirmed at full resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import shapely

from segearth_geo.zoom.prompts import CRITERIA, PromptKind, relevant

MIN_CANDIDATE = 16  # level pixels: smaller answers at a coarse level are noise, not candidates
KEPT = 3  # candidates looked at more closely (at the next levels and at full resolution), best first


@dataclass(frozen=True)
class Candidate:
    """One region a coarse level answered for a prompt (base px).

    Attributes:
        geometry: the region (base px).
        score: its mean probability; ``label``: the model's phrase; ``pixels``: its size in level pixels.
    """

    geometry: shapely.Geometry
    score: float
    label: str
    pixels: int = MIN_CANDIDATE

    def key(self, name: str) -> float:
        if name == "area":
            return float(self.geometry.area)
        point = self.geometry.centroid
        return float(point.x if name == "x" else point.y)


def rank_candidates(candidates: list[Candidate], kind: PromptKind, kept: int = KEPT) -> list[Candidate]:
    """The best ``kept`` of ``candidates`` (specks dropped), best first (see the module docstring)."""
    candidates = [c for c in candidates if c.pixels >= MIN_CANDIDATE]

    def position(c: Candidate) -> tuple[float, float]:
        minx, miny, _, _ = c.geometry.bounds
        return miny, minx

    if kind.criterion is not None:
        name, largest = CRITERIA[kind.criterion]
        sign = -1.0 if largest else 1.0
        return sorted(candidates, key=lambda c: (sign * c.key(name), *position(c)))[:kept]
    return sorted(candidates, key=lambda c: (-c.score, -c.geometry.area, *position(c)))[:kept]


def pick_candidate(candidates: list[Candidate], kind: PromptKind) -> Candidate | None:
    """The scene's one answer among ``candidates``; ``None`` when there is none."""
    ranked = rank_candidates(candidates, kind, 1)
    return ranked[0] if ranked else None


def keep_pick(frame: gpd.GeoDataFrame, picks: list[shapely.Geometry], prompt: str, kind: PromptKind,
              to_pixels=None) -> tuple[gpd.GeoDataFrame, bool]:
    """The rows of ``frame`` (map coordinates) that answer a referring prompt, for one of ``picks`` (map coordinates,
    best first; see the module docstring): ``(those rows, True)``, or ``(empty frame, False)``.

    ``to_pixels`` (map → pixel geometry) orders the confirmed candidates by the criterion in pixels (x right, y
    down), as the overview did; without it, or without a criterion, the best-ranked confirmed candidate is kept.
    """
    if frame.empty:
        return frame, False
    labels = frame["label"].astype(str).tolist()
    keep = np.array([relevant(label, prompt, kind) for label in labels], dtype=bool)
    geoms = np.asarray(frame.geometry.values[keep], dtype=object)
    rows = np.flatnonzero(keep)
    confirmed: list[list[int]] = []  # per confirmed candidate, its rows (each row answers one candidate)
    taken: set[int] = set()
    for pick in picks:
        overlap = shapely.area(shapely.intersection(geoms, pick)) if len(rows) else np.zeros(0)
        mine = [int(r) for r in rows[overlap > 0] if int(r) not in taken]
        if mine:
            confirmed.append(mine)
            taken.update(mine)
    if not confirmed:
        return frame.iloc[0:0], False
    chosen = confirmed[0]
    if kind.criterion is not None and to_pixels is not None and len(confirmed) > 1:
        name, largest = CRITERIA[kind.criterion]
        found = [Candidate(to_pixels(shapely.union_all(frame.geometry.values[c])), 1.0, "") for c in confirmed]
        sign = -1.0 if largest else 1.0
        chosen = confirmed[min(range(len(found)), key=lambda j: (sign * found[j].key(name), j))]
    return frame.iloc[sorted(chosen)].reset_index(drop=True), True


def unconfirmed(detections: list[shapely.Geometry], frame: gpd.GeoDataFrame, prompt: str,
                kind: PromptKind) -> list[shapely.Geometry]:
    """The coarse detections (map coordinates) that no relevant polygon of ``frame`` touches."""
    if not detections:
        return []
    if frame.empty:
        return list(detections)
    labels = frame["label"].astype(str).tolist()
    rows = [g for g, label in zip(frame.geometry.values, labels) if relevant(label, prompt, kind)]
    if not rows:
        return list(detections)
    tree = shapely.STRtree(np.asarray(rows, dtype=object))
    found, _ = tree.query(np.asarray(detections, dtype=object), predicate="intersects")
    hit = set(found.tolist())
    return [d for i, d in enumerate(detections) if i not in hit]


__all__ = ["Candidate", "KEPT", "MIN_CANDIDATE", "keep_pick", "pick_candidate", "rank_candidates", "unconfirmed"]
