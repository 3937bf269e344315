"""Mask logits on a padded square canvas back to the chip's own pixels (shared by SegEarth-R1 and SegEarth-R2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def crop_back(
    mask_logits: torch.Tensor, resized_hw: tuple[int, int], original_hw: tuple[int, int], canvas: int,
    offset: tuple[int, int] = (0, 0),
) -> torch.Tensor:
    """Mask logits on the padded canvas → logits at the chip's own size (spec §7).

    ``[N,1,S/4,S/4]`` → bilinear to ``[N,1,S,S]`` → crop ``[top:top+newh, left:left+neww]`` → bilinear to
    ``[N,1,H,W]`` (``align_corners=False``) → ``[N,H,W]``. Computed in float32. ``offset`` = ``(top, left)`` of
    the image on the canvas: ``(0, 0)`` for R2's bottom/right padding, centred for SegEarth-R1's letterbox.
    """
    new_h, new_w = resized_hw
    top, left = offset
    logits = mask_logits.float()
    full = F.interpolate(logits, size=(canvas, canvas), mode="bilinear", align_corners=False)  # [N,1,S,S]
    cropped = full[:, :, top:top + new_h, left:left + new_w]  # [N,1,newh,neww]
    out = F.interpolate(cropped, size=tuple(original_hw), mode="bilinear", align_corners=False)  # [N,1,H,W]
    return out[:, 0]
