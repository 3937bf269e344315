"""gIoU and cIoU (spec §12), overall and per LaSeRS dimension.

Scores are kept per **target** (one ground-truth mask) as integer pixel counts
``(intersection, union)``:

* ``IoU = I / U``, and 1 when ``U = 0`` (both masks empty);
* ``gIoU`` = mean of the targets' IoUs; ``cIoU = ΣI / ΣU`` (1 when ``ΣU = 0``).

Pairing (:func:`pair_targets`): the k-th predicted mask is scored against the k-th
ground-truth mask; extra predictions are dropped; a **missing prediction counts as an
empty mask**. (The official evaluation repeats the last predicted mask instead, spec §12
— that rewards guessing one mask for every target, so we do not copy it.) A sample
without targets (EarthReason "no target") is scored as one target whose ground truth is
empty, against the union of all predicted masks: IoU 1 if nothing is predicted, else 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from segearth_geo.errors import UsageError


@dataclass(frozen=True)
class TargetScore:
    """Pixel counts of one ground-truth target against its paired prediction."""

    intersection: int
    union: int

    @property
    def iou(self) -> float:
        """``intersection / union``; 1.0 when the union is empty."""
        return 1.0 if self.union == 0 else self.intersection / self.union


@dataclass(frozen=True)
class IoUSummary:
    """gIoU, cIoU and the number of targets ``n`` they average over (fractions in [0, 1])."""

    giou: float
    ciou: float
    n: int

    def to_dict(self) -> dict[str, float | int]:
        return {"giou": self.giou, "ciou": self.ciou, "n": self.n}


def mask_counts(prediction: np.ndarray, ground_truth: np.ndarray) -> TargetScore:
    """Intersection and union of two boolean masks of the same shape ``(H, W)``."""
    pred = np.asarray(prediction, dtype=bool)
    gt = np.asarray(ground_truth, dtype=bool)
    if pred.shape != gt.shape:
        raise UsageError(f"predicted mask {pred.shape} and ground truth {gt.shape} differ in shape")
    return TargetScore(int(np.count_nonzero(pred & gt)), int(np.count_nonzero(pred | gt)))


def pair_targets(
    predictions: Sequence[np.ndarray], ground_truth: Sequence[np.ndarray], shape: tuple[int, int]
) -> list[TargetScore]:
    """Score one sample: ``predictions[k]`` ↔ ``ground_truth[k]`` (see the module docstring).

    Args:
        predictions: boolean masks ``(H, W)`` in the order of the predicted ``[SEG]``s.
        ground_truth: boolean masks ``(H, W)`` in the order of the reference ``[SEG]``s.
        shape: ``(H, W)`` of the image (used for no-target samples and missing predictions).

    Returns:
        one :class:`TargetScore` per ground-truth mask (exactly one for a no-target sample).
    """
    empty = np.zeros(shape, dtype=bool)
    if not ground_truth:
        union = np.zeros(shape, dtype=bool)
        for mask in predictions:
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != union.shape:
                raise UsageError(f"predicted mask {mask.shape} and image {union.shape} differ in shape")
            union |= mask
        return [mask_counts(union, empty)]
    return [
        mask_counts(predictions[k] if k < len(predictions) else empty, gt) for k, gt in enumerate(ground_truth)
    ]


def summarize(scores: Iterable[TargetScore]) -> IoUSummary:
    """gIoU / cIoU over ``scores``; an empty set gives ``IoUSummary(0.0, 0.0, 0)``."""
    scores = list(scores)
    if not scores:
        return IoUSummary(0.0, 0.0, 0)
    total_i = sum(s.intersection for s in scores)
    total_u = sum(s.union for s in scores)
    giou = float(np.mean([s.iou for s in scores]))
    return IoUSummary(giou=giou, ciou=1.0 if total_u == 0 else total_i / total_u, n=len(scores))


def dimension_key(dimension: str, value: str, known: dict[str, tuple[str, ...]]) -> str:
    """The per-dimension table key: the value itself for LaSeRS's tags, ``"dim=value"`` otherwise."""
    return value if value in known.get(dimension, ()) else f"{dimension}={value}"


def summarize_per_dimension(
    tagged_scores: Iterable[tuple[dict[str, str], Sequence[TargetScore]]],
) -> dict[str, IoUSummary]:
    """Group target scores by the dimension tags of their sample.

    Args:
        tagged_scores: ``(sample.dimensions, sample's target scores)`` pairs.

    Returns:
        ``{key: IoUSummary}`` with keys in LaSeRS's order (semantic, instance, part, single,
        multiple, explicit, implicit, short, long), other tags after them; empty when no sample
        carries tags.
    """
    from segearth_geo.data.sample import DIMENSIONS

    groups: dict[str, list[TargetScore]] = {}
    for tags, scores in tagged_scores:
        for dimension, value in tags.items():
            groups.setdefault(dimension_key(dimension, value, DIMENSIONS), []).extend(scores)
    order = [v for values in DIMENSIONS.values() for v in values]
    keys = sorted(groups, key=lambda k: (order.index(k) if k in order else len(order), k))
    return {key: summarize(groups[key]) for key in keys}
