"""Chips to SAM3's square input and instance masks back to each chip's pixels.

Notation: B chips, S = the model's square input side (1008), m = its mask side (S/14·4 = 288),
k instances, (h, w) a chip's own size with h, w ≤ S.

A chip smaller than S (the scene's last row/column of chips, or a scene smaller than one chip) is
**padded**, not stretched: it sits in the top-left corner of the S×S canvas and the rest is the
normalised value 0 (the mean colour). So every chip is seen at the scene's own ground sampling
distance and an object looks the same size in every chip, which is what makes the masks of
neighbouring chips agree where they meet. (``Sam3Processor`` instead stretches any image to S×S,
which is right for a photo but would change the scale of edge chips.) Masks are mapped back exactly
as ``Sam3Processor.post_process_instance_segmentation`` does for a full chip — sigmoid, then bilinear
resize (``align_corners=False``) of the m×m map to the S×S canvas — and then cropped to the chip's
``(h, w)``; for a full S×S chip the result equals the processor's probabilities.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from segearth_geo.errors import UsageError
from segearth_geo.model.sam3.configuration import Sam3Preprocessing


def prepare_chips(chips: Sequence[np.ndarray], prep: Sam3Preprocessing, device: torch.device,
                  dtype: torch.dtype) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """``uint8`` chips ``(h, w, 3)`` → normalised, padded ``[B,3,S,S]`` and each chip's ``(h, w)``.

    Raises:
        UsageError: a chip is not ``(h, w, 3)`` or is larger than ``S`` on a side.
    """
    size = prep.size
    canvas = torch.zeros(len(chips), 3, size, size, dtype=torch.float32, device=device)  # [B,3,S,S]
    mean = torch.tensor(prep.image_mean, dtype=torch.float32, device=device)[:, None, None]  # [3,1,1]
    std = torch.tensor(prep.image_std, dtype=torch.float32, device=device)[:, None, None]
    sizes = []
    for b, chip in enumerate(chips):
        array = np.asarray(chip)
        if array.ndim != 3 or array.shape[2] != 3:
            raise UsageError(f"a chip must be an RGB array (h, w, 3), got shape {array.shape}")
        h, w = array.shape[:2]
        if h > size or w > size or h < 1 or w < 1:
            raise UsageError(f"chip of shape {array.shape} does not fit SAM3's {size}x{size} input")
        pixels = torch.from_numpy(np.ascontiguousarray(array)).to(device).permute(2, 0, 1).float()  # [3,h,w]
        canvas[b, :, :h, :w] = (pixels * prep.rescale_factor - mean) / std
        sizes.append((h, w))
    return canvas.to(dtype), sizes


def chip_probabilities(mask_logits: torch.Tensor, chip_hw: tuple[int, int], size: int) -> np.ndarray:
    """Instance mask logits ``[k,m,m]`` → float32 probabilities ``(k, h, w)`` on the chip's own pixels.

    Sigmoid, bilinear resize to the ``size``×``size`` canvas, crop to the chip (top-left) — see the
    module docstring. ``k`` may be 0.
    """
    h, w = chip_hw
    if mask_logits.shape[0] == 0:
        return np.zeros((0, h, w), dtype=np.float32)
    probabilities = mask_logits.float().sigmoid()[None]  # [1,k,m,m]
    if probabilities.shape[-2:] != (size, size):
        probabilities = F.interpolate(probabilities, size=(size, size), mode="bilinear", align_corners=False)
    return probabilities[0, :, :h, :w].cpu().numpy().astype(np.float32, copy=False)  # (k,h,w)
