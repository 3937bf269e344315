"""SegEarth-R2 training losses (spec §8): text CE, point-sampled BCE + Dice, spatial attention.

Notation: ``N`` targets (answer ``[SEG]``s) in the batch, ``P`` points per target, ``h×w`` the
mask-prediction map (``S/4`` square; its unit square is the padded ``S×S`` canvas), ``T_img``
image tokens (a ``d×d`` SigLIP grid, ``d = 27`` for the 3B model).

Guards (spec §16): a batch without targets gives zero mask/attention losses (still connected to
the graph so that every rank runs the same backward), and a batch without any supervised text
position gives a zero text loss instead of NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from segearth_geo.errors import UsageError

IGNORE_INDEX = -100


@dataclass
class MaskLossSettings:
    """Point sampling and weights of the mask loss (Mask2Former config values, spec §2.9)."""

    num_points: int = 12544
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75
    bce_weight: float = 5.0
    dice_weight: float = 5.0


@dataclass
class MaskLoss:
    """Mask loss parts summed over the prediction sets (already weighted)."""

    bce: torch.Tensor
    dice: torch.Tensor

    @property
    def total(self) -> torch.Tensor:
        return self.bce + self.dice


def text_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token CE over supervised positions (spec §8.1).

    Args:
        logits: ``[M,V']`` logits at the positions *before* each supervised label (already shifted).
        labels: ``[M]`` the supervised label ids (no ``IGNORE_INDEX`` entries needed, but allowed).
    Returns: scalar; 0 (graph-connected) when nothing is supervised.
    """
    keep = labels != IGNORE_INDEX
    if not bool(keep.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[keep].float(), labels[keep])


def shifted_text_targets(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where the text loss reads logits: ``labels [B,L]`` → ``(batch_idx [M], pos [M], target [M])``.

    ``pos`` is the position whose logits predict ``target = labels[b, pos + 1]``; only supervised
    targets are returned, so the ``[B,L,V']`` logits never need to be materialised.
    """
    nxt = labels[:, 1:]
    b, p = torch.nonzero(nxt != IGNORE_INDEX, as_tuple=True)
    return b, p, nxt[b, p]


def point_sample(maps: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinear values of ``maps [N,1,h,w]`` at ``points [N,P,2]`` ((x, y) in the unit square) → ``[N,P]``.

    Zero padding, ``align_corners=False``, grid = 2p − 1 (Mask2Former ``point_sample``).
    """
    grid = (2.0 * points - 1.0).unsqueeze(2)  # [N,P,1,2]
    out = F.grid_sample(maps, grid.to(maps.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)
    return out[:, 0, :, 0]  # [N,P]


def uncertain_points(
    logits: torch.Tensor, settings: MaskLossSettings, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Importance-sampled points (no gradient): ``logits [N,1,h,w]`` → ``[N,P,2]`` in the unit square.

    ``P·oversample`` uniform candidates; the ``P·importance`` most uncertain (smallest |logit|)
    are kept, plus fresh uniform points for the rest.
    """
    n, device = logits.shape[0], logits.device
    num = settings.num_points
    num_over = int(num * settings.oversample_ratio)
    num_imp = int(settings.importance_sample_ratio * num)
    num_rand = num - num_imp
    with torch.no_grad():
        cand = torch.rand(n, num_over, 2, device=device, generator=generator)
        uncertainty = -point_sample(logits.detach().float(), cand).abs()  # [N,num_over]
        idx = uncertainty.topk(num_imp, dim=1).indices  # [N,num_imp]
        chosen = cand.gather(1, idx[:, :, None].expand(-1, -1, 2))
        fresh = torch.rand(n, num_rand, 2, device=device, generator=generator)
        return torch.cat([chosen, fresh], dim=1)  # [N,P,2]


def sample_ground_truth(
    gt_masks: list[torch.Tensor], points: torch.Tensor, resized_hw: torch.Tensor, canvas: int
) -> torch.Tensor:
    """Soft GT labels at canvas points (geometry rule of spec §8.2).

    Args:
        gt_masks: ``N`` masks at original resolution, ``[H_n,W_n]`` (any numeric dtype, 0/1).
        points: ``[N,P,2]`` (x, y) in the unit square of the padded ``canvas×canvas`` image.
        resized_hw: ``[N,2]`` (newh, neww) of each target's image on the canvas.
        canvas: ``S``, the canvas side (``config.mask.image_size``).
    Returns: ``[N,P]`` float in [0,1]; 0 outside the image's resized area.

    A canvas point (u, v) lies at original-normalised (u·S/neww, v·S/newh). Targets with the same
    GT size are sampled in one call.
    """
    n, num = points.shape[:2]
    scale = canvas / resized_hw.to(points.device, torch.float32)  # [N,2] (S/newh, S/neww)
    img_pts = points * scale.flip(1)[:, None, :]  # [N,P,2] (x·S/neww, y·S/newh)
    inside = ((img_pts >= 0) & (img_pts <= 1)).all(dim=2)  # [N,P]
    out = torch.zeros(n, num, device=points.device)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, m in enumerate(gt_masks):
        groups.setdefault(tuple(m.shape[-2:]), []).append(i)
    for idx in groups.values():
        maps = torch.stack([gt_masks[i] for i in idx]).to(points.device, torch.float32)[:, None]  # [n,1,H,W]
        sel = torch.tensor(idx, device=points.device)
        out[sel] = point_sample(maps, img_pts[sel])
    return out * inside


def _bce_dice(pred_pts: torch.Tensor, gt_pts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-target BCE mean and Dice loss: ``[N,P]`` logits and soft labels → two ``[N]``."""
    bce = F.binary_cross_entropy_with_logits(pred_pts, gt_pts, reduction="none").mean(dim=1)
    prob = pred_pts.sigmoid()
    dice = 1.0 - (2.0 * (prob * gt_pts).sum(1) + 1.0) / (prob.sum(1) + gt_pts.sum(1) + 1.0)
    return bce, dice


def mask_loss(
    predictions: list[torch.Tensor],
    gt_masks: list[torch.Tensor],
    resized_hw: torch.Tensor,
    canvas: int,
    settings: MaskLossSettings,
    normalizer: float | None = None,
    generator: torch.Generator | None = None,
) -> MaskLoss:
    """Point-sampled BCE + Dice over every prediction set (spec §8.2).

    Args:
        predictions: the decoder's prediction sets (final + auxiliary, 10 for the 3B), each ``[N,1,h,w]``.
        gt_masks: ``N`` original-resolution masks, target order = prediction order.
        resized_hw: ``[N,2]`` (newh, neww) per target; canvas: ``S``.
        normalizer: ``M`` = targets per rank averaged over ranks (default: local ``N``), at least 1.
    Returns: weighted sums over sets, ``Σ_j w_bce·Σ_n BCE_n / M`` and likewise for Dice.
    """
    if not predictions:
        raise UsageError("mask_loss needs at least one prediction set")
    n = predictions[0].shape[0]
    if n != len(gt_masks) or n != resized_hw.shape[0]:
        raise UsageError(f"mask_loss got {n} predictions but {len(gt_masks)} masks and {resized_hw.shape[0]} sizes")
    if n == 0:
        zero = sum(p.sum() for p in predictions) * 0.0
        return MaskLoss(zero, zero)
    norm = max(1.0, float(n if normalizer is None else normalizer))
    # Points are drawn per set (independently), GT is sampled once for all sets.
    points = [uncertain_points(p, settings, generator) for p in predictions]  # 10 × [N,P,2]
    gt = sample_ground_truth(gt_masks, torch.cat(points, dim=1), resized_hw, canvas)  # [N,10·P]
    gt_sets = gt.split(settings.num_points, dim=1)
    bce_total = dice_total = predictions[0].new_zeros((), dtype=torch.float32)
    for pred, pts, gt_pts in zip(predictions, points, gt_sets):
        bce, dice = _bce_dice(point_sample(pred.float(), pts), gt_pts)
        bce_total = bce_total + bce.sum() / norm
        dice_total = dice_total + dice.sum() / norm
    return MaskLoss(settings.bce_weight * bce_total, settings.dice_weight * dice_total)


def _at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.promote_types(t.dtype, torch.float32))


def _contrast_loss(maps: torch.Tensor, grids: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``−log(mean over target cells of (A − mean background)² + eps)`` per row.

    Args: maps ``[N,T_img]`` attention rows; grids ``[N,T_img]`` bool GT cells.
    Returns: ``[N]`` losses, 0 for rows whose grid has no target cell.
    """
    g = grids.to(maps.dtype)
    bg = 1.0 - g
    n_bg = bg.sum(1)
    mu = torch.where(n_bg > 0, (maps * bg).sum(1) / n_bg.clamp(min=1), torch.zeros_like(n_bg))  # [N]
    n_t = g.sum(1)
    spread = (((maps - mu[:, None]) ** 2) * g).sum(1) / n_t.clamp(min=1)
    loss = -torch.log(spread + eps)
    return torch.where(n_t > 0, loss, torch.zeros_like(loss))


def attention_loss(
    rows: list[torch.Tensor], grids: torch.Tensor, variant: str = "per_layer", num_heads: int | None = None
) -> torch.Tensor:
    """Spatial attention supervision ``L_S`` (spec §8.3), before the λ_S weight.

    Args:
        rows: per LLM layer, ``[N,T_img]`` head-summed ``[SEG]`` → image attention probabilities.
        grids: ``[N,T_img]`` bool GT grids (row-major ``d×d``).
        variant: ``"per_layer"`` (official code: loss per layer on head sums, summed over layers) or
            ``"averaged"`` (paper: one loss on the map averaged over layers and heads).
        num_heads: heads per layer, needed by ``"averaged"`` to turn sums into means.
    Returns: scalar; rows without target cells contribute 0 but count in the mean over ``N``.
    """
    if not rows:
        raise UsageError("attention_loss needs the rows of at least one layer")
    n = rows[0].shape[0]
    if n == 0:
        return sum(r.sum() for r in rows) * 0.0
    grids = grids.to(rows[0].device)
    rows = [_at_least_fp32(r) for r in rows]
    if variant == "per_layer":
        return sum(_contrast_loss(r, grids).sum() / n for r in rows)
    if variant == "averaged":
        if not num_heads:
            raise UsageError("the averaged attention loss needs num_heads")
        mean_map = torch.stack(rows).mean(0) / num_heads  # [N,T_img]
        return _contrast_loss(mean_map, grids).sum() / n
    raise UsageError(f"unknown attention loss variant {variant!r}; use 'per_layer' or 'averaged'")


def attention_grid(mask: torch.Tensor, grid_side: int, intermediate: int = 800) -> torch.Tensor:
    """GT attention grid of one target (spec §8.3): ``[H,W]`` 0/1 mask → ``[grid_side²]`` bool, row-major.

    Nearest resize to ``intermediate²`` (the official 800), then bilinear to ``grid_side²``
    (``align_corners=False``, no antialias), then ``> 0``. The grid covers the whole (stretched)
    image, like the SigLIP grid, so any aspect ratio is valid.
    """
    m = mask.to(torch.float32)[None, None]  # [1,1,H,W]
    m = F.interpolate(m, size=(intermediate, intermediate), mode="nearest")
    m = F.interpolate(m, size=(grid_side, grid_side), mode="bilinear", align_corners=False, antialias=False)
    return (m[0, 0] > 0).flatten()
