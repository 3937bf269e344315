"""SegEarth-R1 letterbox (spec ``segearth_r1_model.md`` §6) and the way back to the chip's pixels.

Official preprocessing (``RS_val_dataset.preprocess_image``): long side → S with the other side **floored**
(``int(H·S/W)``), bilinear without antialiasing (OpenCV ``INTER_LINEAR``), **centred** zero padding (value 0
before normalisation), then ``(x − mean) / std`` with the ImageNet 0-255 statistics, RGB. :func:`resize_bilinear_u8`
reproduces OpenCV's fixed-point ``INTER_LINEAR`` on ``uint8`` in numpy (no OpenCV dependency); it matched
``cv2.resize`` (OpenCV 5.0) bit for bit on up- and down-scaled chips in the parity check.

Official post-processing stops at the S×S canvas; :func:`uncrop_logits` crops the letterbox away and resizes to
the chip's own size so the masks land on the chip's pixels (recommended in §6).

Notation: H×W the chip, S the canvas side, (new_h, new_w) the resized image, (top, left) its offset.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from segearth_geo.errors import UsageError
from segearth_geo.model.base import rgb_uint8
from segearth_geo.model.parts.crop_back import crop_back


@dataclass
class Letterbox:
    """Where the chip sits on the canvas.

    Attributes:
        original_hw: ``(H, W)``.
        resized_hw: ``(new_h, new_w)``.
        offset: ``(top, left)`` of the resized image on the canvas.
        canvas: S.
    """

    original_hw: tuple[int, int]
    resized_hw: tuple[int, int]
    offset: tuple[int, int]
    canvas: int


def letterbox_geometry(height: int, width: int, canvas: int) -> Letterbox:
    """The official geometry: long side → ``canvas`` (the short side floored), centred padding."""
    if height < 1 or width < 1:
        raise UsageError(f"empty image of size {height}×{width}")
    if width > height:
        new_h, new_w = int(height * (canvas / width)), canvas
    else:
        new_h, new_w = canvas, int(width * (canvas / height))
    new_h, new_w = max(new_h, 1), max(new_w, 1)
    return Letterbox((height, width), (new_h, new_w), ((canvas - new_h) // 2, (canvas - new_w) // 2), canvas)


_COEF_BITS = 11  # OpenCV INTER_RESIZE_COEF_BITS
_ONE = 1 << _COEF_BITS


def _linear_taps(src: int, dst: int, clamp_weights: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source indices (i0, i1) and 11-bit weights (w0, w1) of each output position, OpenCV's way.

    Sampling grid: ``(d + 0.5)·src/dst − 0.5`` in float32. Horizontally (``clamp_weights``) a position left of the
    first or right of the last pixel gets weight (1, 0) on the border pixel; vertically the weights are kept and
    only the row indices are clamped — the two rules round differently, as in OpenCV.
    """
    pos = ((np.arange(dst) + 0.5) * (src / dst) - 0.5).astype(np.float32)
    start = np.floor(pos).astype(np.int64)
    frac = (pos - start).astype(np.float32)
    if clamp_weights:
        low, high = start < 0, start >= src - 1
        frac[low | high] = 0.0
        start[low] = 0
        start[high] = src - 1
    w1 = np.rint(frac * _ONE).astype(np.int64)
    w0 = np.rint((1.0 - frac) * _ONE).astype(np.int64)
    return np.clip(start, 0, src - 1), np.clip(start + 1, 0, src - 1), w0, w1


def resize_bilinear_u8(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """``uint8 (H, W, C)`` → ``uint8 (height, width, C)`` exactly as ``cv2.resize(..., INTER_LINEAR)``.

    Horizontal pass: integer sums with 11-bit weights; vertical pass: OpenCV's SIMD rounding
    ``((S0 >> 4)·b0 >> 16) + ((S1 >> 4)·b1 >> 16) + 2 >> 2``.
    """
    x0, x1, a0, a1 = _linear_taps(array.shape[1], width, clamp_weights=True)
    y0, y1, b0, b1 = _linear_taps(array.shape[0], height, clamp_weights=False)
    pixels = array.astype(np.int64)
    rows = pixels[:, x0] * a0[None, :, None] + pixels[:, x1] * a1[None, :, None]  # (H, width, C), scale 2^11
    out = (((rows[y0] >> 4) * b0[:, None, None]) >> 16) + (((rows[y1] >> 4) * b1[:, None, None]) >> 16)
    return np.clip((out + 2) >> 2, 0, 255).astype(np.uint8)


def letterbox_image(rgb: np.ndarray, canvas: int, mean: tuple[float, ...], std: tuple[float, ...],
                    device: torch.device | str | None = None) -> tuple[torch.Tensor, Letterbox]:
    """``uint8 (H, W, 3)`` RGB → normalised canvas ``float32 [3, S, S]`` and its :class:`Letterbox`."""
    array = rgb_uint8(rgb)
    box = letterbox_geometry(array.shape[0], array.shape[1], canvas)
    dev = torch.device("cpu" if device is None else device)
    if box.resized_hw != box.original_hw:
        array = resize_bilinear_u8(array, *box.resized_hw)
    image = torch.from_numpy(np.ascontiguousarray(array)).to(dev).permute(2, 0, 1).float()  # [3, new_h, new_w]
    top, left = box.offset
    padded = torch.zeros(3, canvas, canvas, device=dev)  # pad value 0 before normalisation
    padded[:, top:top + box.resized_hw[0], left:left + box.resized_hw[1]] = image
    mean_t = torch.tensor(mean, device=dev)[:, None, None]
    std_t = torch.tensor(std, device=dev)[:, None, None]
    return (padded - mean_t) / std_t, box


def uncrop_logits(mask_logits: torch.Tensor, box: Letterbox) -> torch.Tensor:
    """``[N, 1, M, M]`` canvas logits → ``[N, H, W]`` on the chip's pixels (float32).

    Bilinear to S×S (as the official eval), crop the centred letterbox, bilinear to (H, W).
    """
    return crop_back(mask_logits, box.resized_hw, box.original_hw, box.canvas, offset=box.offset)
