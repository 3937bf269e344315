"""gIoU / cIoU against hand-computed cases (spec §12)."""

from __future__ import annotations

import numpy as np
import pytest
from data_fixtures import box

from segearth_geo.errors import UsageError
from segearth_geo.evaluation.metrics import (
    IoUSummary,
    TargetScore,
    mask_counts,
    pair_targets,
    summarize,
    summarize_per_dimension,
)

S = (4, 5)


def test_iou_of_one_target():
    # prediction rows 0-1 (10 px), ground truth row 1-2 (10 px): I = 5, U = 15
    score = mask_counts(box(0, 2, 0, 5, S), box(1, 3, 0, 5, S))
    assert score == TargetScore(5, 15)
    assert score.iou == pytest.approx(1 / 3)
    # both empty: union 0 → IoU 1
    assert mask_counts(np.zeros(S, bool), np.zeros(S, bool)).iou == 1.0
    # empty prediction against a target: 0
    assert mask_counts(np.zeros(S, bool), box(0, 1, 0, 1, S)).iou == 0.0
    with pytest.raises(UsageError):
        mask_counts(np.zeros((2, 2), bool), np.zeros(S, bool))


def test_pairing_by_order_missing_is_empty_and_extras_dropped():
    a, b = box(0, 2, 0, 2, S), box(2, 4, 3, 5, S)  # 4 px each, disjoint
    # order matters: swapped predictions score 0 each
    assert [s.iou for s in pair_targets([b, a], [a, b], S)] == [0.0, 0.0]
    assert [s.iou for s in pair_targets([a, b], [a, b], S)] == [1.0, 1.0]
    # one prediction for two targets: the second is scored against an empty mask
    # (the official code would repeat `a` and also score 0 here, but would score 1 if b == a)
    assert pair_targets([a], [a, b], S) == [TargetScore(4, 4), TargetScore(0, 4)]
    assert pair_targets([a], [a, a], S) == [TargetScore(4, 4), TargetScore(0, 4)]
    # extra predictions are ignored
    assert pair_targets([a, b, b], [a], S) == [TargetScore(4, 4)]
    # no prediction at all
    assert pair_targets([], [a], S) == [TargetScore(0, 4)]


def test_no_target_sample():
    a, b = box(0, 1, 0, 2, S), box(3, 4, 0, 1, S)
    assert pair_targets([], [], S) == [TargetScore(0, 0)]  # nothing predicted: IoU 1
    # predictions on a no-target image: one target, union = all predicted pixels (2 + 1)
    assert pair_targets([a, b], [], S) == [TargetScore(0, 3)]
    assert pair_targets([a, b], [], S)[0].iou == 0.0


def test_giou_and_ciou():
    scores = [TargetScore(5, 15), TargetScore(0, 0), TargetScore(9, 10), TargetScore(0, 5)]
    summary = summarize(scores)
    # gIoU = (1/3 + 1 + 0.9 + 0) / 4 ; cIoU = 14 / 30
    assert summary.giou == pytest.approx((1 / 3 + 1 + 0.9) / 4)
    assert summary.ciou == pytest.approx(14 / 30)
    assert summary.n == 4
    assert summarize([TargetScore(0, 0), TargetScore(0, 0)]) == IoUSummary(1.0, 1.0, 2)
    assert summarize([]) == IoUSummary(0.0, 0.0, 0)


def test_per_dimension():
    tagged = [
        ({"granularity": "part", "count": "single"}, [TargetScore(1, 2)]),
        ({"granularity": "semantic", "count": "multiple"}, [TargetScore(3, 3), TargetScore(0, 1)]),
        ({"granularity": "part", "count": "single", "source": "x"}, [TargetScore(1, 4)]),
        ({}, [TargetScore(0, 9)]),
    ]
    table = summarize_per_dimension(tagged)
    assert list(table) == ["semantic", "part", "single", "multiple", "source=x"]
    assert table["part"].giou == pytest.approx((0.5 + 0.25) / 2) and table["part"].ciou == pytest.approx(2 / 6)
    assert table["part"].n == 2 and table["single"] == table["part"]
    assert table["multiple"].giou == pytest.approx(0.5) and table["multiple"].ciou == pytest.approx(3 / 4)
    assert table["multiple"].n == 2
    assert summarize_per_dimension([({}, [TargetScore(1, 1)])]) == {}
