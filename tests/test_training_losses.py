"""Hand checks of the training losses (spec §8): text CE, point-sampled mask loss, attention loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from segearth_geo.errors import UsageError
from segearth_geo.training.losses import (
    IGNORE_INDEX,
    MaskLossSettings,
    attention_grid,
    attention_loss,
    mask_loss,
    point_sample,
    sample_ground_truth,
    shifted_text_targets,
    text_loss,
    uncertain_points,
)

torch.set_num_threads(1)


# ---------------------------------------------------------------- text
def test_text_loss_matches_manual_cross_entropy_on_shifted_labels():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)  # [B,L,V']
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 3, 4, IGNORE_INDEX], [IGNORE_INDEX, 1, IGNORE_INDEX, 6, 2]])
    b, p, target = shifted_text_targets(labels)
    got = text_loss(logits[b, p], target)
    # positions whose NEXT label is supervised: (0,1)->3, (0,2)->4, (1,0)->1, (1,2)->6, (1,3)->2
    terms = [
        -F.log_softmax(logits[0, 1], -1)[3], -F.log_softmax(logits[0, 2], -1)[4],
        -F.log_softmax(logits[1, 0], -1)[1], -F.log_softmax(logits[1, 2], -1)[6], -F.log_softmax(logits[1, 3], -1)[2],
    ]
    assert torch.allclose(got, torch.stack(terms).mean(), atol=1e-6)


def test_text_loss_all_ignored_is_zero_not_nan_and_backpropagates():
    logits = torch.randn(0, 7, requires_grad=True)
    loss = text_loss(logits, torch.zeros(0, dtype=torch.long))
    assert loss.item() == 0.0 and not math.isnan(loss.item())
    loss.backward()
    labels = torch.full((1, 4), IGNORE_INDEX)
    _, _, target = shifted_text_targets(labels)
    assert target.numel() == 0


# ---------------------------------------------------------------- geometry rule
def test_ground_truth_sampled_at_the_canvas_place_of_a_non_square_image():
    # 50x100 image on a 64 canvas: resized to (32, 64) -> occupies the top half of the canvas.
    gt = torch.zeros(50, 100)
    gt[25:, 50:] = 1  # object in the bottom-right quadrant of the image
    canvas, resized = 64, torch.tensor([[32, 64]])
    pts = torch.tensor([[[0.75, 0.375],   # image (0.75, 0.75): inside the object
                         [0.25, 0.375],   # image (0.25, 0.75): left of it
                         [0.75, 0.125],   # image (0.75, 0.25): above it
                         [0.75, 0.80]]])  # padding below the image: never a target
    got = sample_ground_truth([gt], pts, resized, canvas)[0]
    assert got.tolist() == [1.0, 0.0, 0.0, 0.0]
    # The official (square-only) reading would have put the object at the wrong canvas place:
    naive = point_sample(gt[None, None], pts)[0]
    assert naive[0] == 0.0 and naive[3] == 1.0


def test_ground_truth_groups_masks_of_different_sizes():
    a = torch.ones(10, 10)
    b = torch.zeros(20, 40)
    b[:, :20] = 1  # left half
    pts = torch.tensor([[[0.5, 0.5], [0.5, 0.5]], [[0.25, 0.2], [0.75, 0.2]]])
    got = sample_ground_truth([a, b], pts, torch.tensor([[64, 64], [32, 64]]), 64)
    assert got.tolist() == [[1.0, 1.0], [1.0, 0.0]]


# ---------------------------------------------------------------- mask loss
def _canvas_logits(gt: torch.Tensor, canvas_hw: tuple[int, int], side: int, value: float) -> torch.Tensor:
    """A prediction map [1,1,side,side] that is +value on the object's canvas place, -value elsewhere."""
    resized = F.interpolate(gt[None, None].float(), size=canvas_hw, mode="nearest")[0, 0]
    canvas = torch.zeros(side, side)
    canvas[: canvas_hw[0], : canvas_hw[1]] = resized
    return (canvas * 2 - 1)[None, None] * value


def test_mask_loss_perfect_prediction_is_low_and_inverted_is_high():
    torch.manual_seed(0)
    gt = torch.zeros(40, 80)
    gt[10:30, 40:70] = 1
    settings = MaskLossSettings(num_points=512)
    resized = torch.tensor([[32, 64]])
    good = _canvas_logits(gt, (32, 64), 64, 20.0)
    bad = -good
    good_loss = mask_loss([good] * 10, [gt], resized, 64, settings).total
    bad_loss = mask_loss([bad] * 10, [gt], resized, 64, settings).total
    assert good_loss.item() < 0.05 * bad_loss.item()
    assert bad_loss.item() > 100  # 10 sets x (5 BCE + 5 Dice) with confident wrong answers


def test_mask_loss_hand_value_for_a_constant_prediction():
    # logits 0 everywhere -> p = 0.5, BCE = log 2 at every point; GT all ones inside a square image
    # -> every point is a target -> Dice = 1 - (P + 1) / (1.5 P + 1).
    settings = MaskLossSettings(num_points=100)
    pred = torch.zeros(2, 1, 16, 16, requires_grad=True)
    gts = [torch.ones(30, 30), torch.ones(30, 30)]
    out = mask_loss([pred], gts, torch.tensor([[64, 64], [64, 64]]), 64, settings, normalizer=4.0)
    p = 100
    dice = 1 - (p + 1) / (1.5 * p + 1)
    # inside the image the bilinear GT is 1 except within half a GT pixel of the border
    assert out.bce.item() == pytest.approx(5 * 2 * math.log(2) / 4, rel=1e-5)
    assert out.dice.item() == pytest.approx(5 * 2 * dice / 4, rel=0.05)
    out.total.backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all()


def test_mask_loss_without_targets_is_zero_and_connected():
    pred = torch.zeros(0, 1, 16, 16, requires_grad=True)
    out = mask_loss([pred] * 10, [], torch.zeros(0, 2, dtype=torch.long), 64, MaskLossSettings(num_points=16))
    assert out.total.item() == 0.0
    out.total.backward()
    with pytest.raises(UsageError):
        mask_loss([pred], [torch.ones(4, 4)], torch.tensor([[64, 64]]), 64, MaskLossSettings())


def test_importance_sampling_concentrates_on_uncertain_pixels():
    torch.manual_seed(0)
    xs = torch.linspace(-1, 1, 64)
    logits = (xs * 10).expand(64, 64)[None, None].clone()  # boundary (|logit| small) at x = 0.5
    settings = MaskLossSettings(num_points=1000)
    pts = uncertain_points(logits, settings)
    assert pts.shape == (1, 1000, 2)
    near = ((pts[0, :, 0] - 0.5).abs() < 0.2).float().mean().item()
    # 750 importance points all fall near the boundary, plus ~40 % of the 250 uniform ones
    assert near > 0.8
    assert ((pts >= 0) & (pts <= 1)).all()


# ---------------------------------------------------------------- attention loss
def _manual_row_loss(row: torch.Tensor, grid: torch.Tensor) -> float:
    t = row[grid]
    bk = row[~grid]
    if t.numel() == 0:
        return 0.0
    mu = bk.mean() if bk.numel() else torch.tensor(0.0)
    return -math.log(((t - mu) ** 2).mean().item() + 1e-8)


def test_attention_loss_per_layer_matches_hand_formula():
    torch.manual_seed(0)
    rows = [torch.rand(3, 9) for _ in range(2)]
    grids = torch.zeros(3, 9, dtype=torch.bool)
    grids[0, [0, 1, 3]] = True
    grids[1, :] = True  # no background: mu = 0
    # row 2 has no target cell: contributes 0 but counts in N = 3
    got = attention_loss(rows, grids, "per_layer")
    want = sum(sum(_manual_row_loss(r[n], grids[n]) for n in range(3)) / 3 for r in rows)
    assert got.item() == pytest.approx(want, rel=1e-5)


def test_attention_loss_averaged_variant_matches_paper_formula():
    torch.manual_seed(1)
    heads = 4
    rows = [torch.rand(2, 9) * heads for _ in range(3)]  # head sums
    grids = torch.zeros(2, 9, dtype=torch.bool)
    grids[0, 4] = True
    grids[1, [2, 5, 8]] = True
    got = attention_loss(rows, grids, "averaged", num_heads=heads)
    mean_map = torch.stack(rows).mean(0) / heads
    want = sum(_manual_row_loss(mean_map[n], grids[n]) for n in range(2)) / 2
    assert got.item() == pytest.approx(want, rel=1e-5)
    with pytest.raises(UsageError):
        attention_loss(rows, grids, "averaged")
    with pytest.raises(UsageError):
        attention_loss(rows, grids, "sideways")


def test_attention_loss_rewards_attention_on_the_target():
    grid = torch.zeros(1, 9, dtype=torch.bool)
    grid[0, 4] = True
    focused = torch.full((1, 9), 0.01)
    focused[0, 4] = 0.9
    flat = torch.full((1, 9), 0.1)
    assert attention_loss([focused], grid) < attention_loss([flat], grid)
    empty = attention_loss([torch.zeros(0, 9, requires_grad=True)], torch.zeros(0, 9, dtype=torch.bool))
    assert empty.item() == 0.0


def test_attention_grid_follows_the_stretched_image():
    mask = torch.zeros(30, 90, dtype=torch.uint8)
    mask[:10, :30] = 1  # top-left third in both axes
    grid = attention_grid(mask, 3).reshape(3, 3)
    assert grid.tolist() == [[True, False, False], [False, False, False], [False, False, False]]
    assert attention_grid(torch.zeros(5, 7), 27).sum() == 0
