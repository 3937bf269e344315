"""Both image branches from one ``uint8`` RGB array (spec §3); the crop-back of mask logits (§7) is the shared
:func:`segearth_geo.model.parts.crop_back.crop_back`.

Notation: H×W the chip's own size, S the mask canvas side (``config.mask.image_size``), s the SigLIP side
(``config.vision.image_size``), (newh, neww) the resized size inside the canvas.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from segearth_geo.model.base import rgb_uint8


@dataclass
class PreparedImage:
    """One chip ready for both branches.

    Attributes:
        siglip: float32 ``[3, s, s]``: stretched, bicubic, ``(x/255 − mean)/std`` (branch A, §3.2).
        mask_image: float32 ``[3, S, S]``: long edge → S (bilinear), padded bottom/right with the pad value,
            then ``(x − pixel_mean)/pixel_std`` (branch B, §3.1).
        resized_hw: ``(newh, neww)``, the valid region of the canvas.
        original_hw: ``(H, W)``.
    """

    siglip: torch.Tensor
    mask_image: torch.Tensor
    resized_hw: tuple[int, int]
    original_hw: tuple[int, int]


def resized_size(height: int, width: int, canvas: int) -> tuple[int, int]:
    """(newh, neww) of §3.1: short edge → canvas, then long edge capped at canvas, rounded half up."""
    scale = canvas / min(height, width)
    new_h, new_w = scale * height, scale * width
    if max(new_h, new_w) > canvas:
        shrink = canvas / max(new_h, new_w)
        new_h, new_w = new_h * shrink, new_w * shrink
    return int(math.floor(new_h + 0.5)), int(math.floor(new_w + 0.5))


def prepare_images(rgb: np.ndarray, config, device: torch.device | str | None = None) -> PreparedImage:
    """Both branches of spec §3 from one ``uint8`` ``(H, W, 3)`` RGB array (``config``: SegEarthR2Config).

    Resizing is done by PIL on ``uint8`` (bilinear / bicubic as in the official pipeline); the float
    normalisation runs on ``device`` (default CPU), so a GPU segmenter ships only ``uint8`` pixels.
    """
    array = rgb_uint8(rgb)
    height, width = array.shape[:2]
    image = Image.fromarray(array)
    side = config.vision.image_size
    canvas_side = config.mask.image_size
    dev = torch.device("cpu" if device is None else device)

    # Branch A (§3.2): stretch to s×s, bicubic, scale to [0,1], normalise per channel.
    stretched = np.asarray(image.resize((side, side), resample=Image.BICUBIC))  # (s,s,3) uint8
    siglip = torch.from_numpy(stretched.copy()).to(dev).permute(2, 0, 1).float() / 255.0  # [3,s,s]
    mean = torch.tensor(config.vision.image_mean, device=dev)[:, None, None]
    std = torch.tensor(config.vision.image_std, device=dev)[:, None, None]
    siglip = (siglip - mean) / std

    # Branch B (§3.1): long edge → S (bilinear), pad bottom/right, normalise with the 0-255 mean/std.
    new_h, new_w = resized_size(height, width, canvas_side)
    resized = array if (new_h, new_w) == (height, width) else np.asarray(
        image.resize((new_w, new_h), resample=Image.BILINEAR))
    canvas = np.full((canvas_side, canvas_side, 3), config.mask.pad_value, dtype=np.uint8)
    canvas[:new_h, :new_w] = resized
    mask_image = torch.from_numpy(canvas).to(dev).permute(2, 0, 1).float()  # [3,S,S] on the 0-255 scale
    pixel_mean = torch.tensor(config.mask.pixel_mean, device=dev)[:, None, None]
    pixel_std = torch.tensor(config.mask.pixel_std, device=dev)[:, None, None]
    mask_image = (mask_image - pixel_mean) / pixel_std
    return PreparedImage(siglip=siglip, mask_image=mask_image, resized_hw=(new_h, new_w), original_hw=(height, width))
