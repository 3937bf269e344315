"""ZoomEarth's image rules (spec §2.3, §2.5, §2.6): the overview it looks at, its box back in the image, the
region to zoom on.

* :func:`overview` — the official ``resize_image(max_size=512)``: ``s = 512 / max(w, h)``; only when ``s < 1``
  the image is resized to ``(int(w·s), int(h·s))`` with PIL's bicubic filter. Two fixes the spec names: the
  short side stays at least 30 px (the RL resizer's rule; the processor refuses sides under 28 px), and the
  factor back to the image is ``max(1, L / 512)`` (the official script returned ``L / 512 < 1`` for small
  images and shrank their boxes).
* :func:`to_image` — a box in overview pixels → the image's pixels: every number times that one factor (as the
  official script and the RL reward do, ignoring the processor's rounding to 28-px multiples), then clamped to
  the image; ``None`` when nothing of it is left.
* :func:`zoom_region` — the official ``cut_image`` window around a box, in full-resolution pixels: a box
  narrower or lower than 512 px becomes the 512 × 512 window centred on it (shifted to stay inside the raster);
  a larger box is kept as it is (clamped to the raster here, where the official crop padded with black).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from segearth_geo.model.zoomearth.configuration import CROP_SIDE, MIN_SIDE, OVERVIEW_SIDE


def overview(image: np.ndarray, side: int = OVERVIEW_SIDE) -> tuple[Image.Image, float]:
    """``uint8 (h, w, 3)`` → the PIL image ZoomEarth looks at and the factor from its pixels to ``image``'s."""
    h, w = image.shape[:2]
    pil = Image.fromarray(np.ascontiguousarray(image), mode="RGB")
    scale = side / max(w, h)
    if scale >= 1:
        return pil, 1.0
    scale = max(scale, min(1.0, MIN_SIDE / min(w, h)))
    size = (max(1, int(w * scale)), max(1, int(h * scale)))
    return pil.resize(size, Image.BICUBIC), max(1.0, 1.0 / scale)


def to_image(box: tuple[float, float, float, float], factor: float, width: int,
             height: int) -> tuple[float, float, float, float] | None:
    """An overview box → the image's pixels (``factor`` from :func:`overview`), clamped; ``None`` if empty."""
    x0, y0, x1, y1 = (v * factor for v in box)
    x0, x1 = min(max(x0, 0.0), width), min(max(x1, 0.0), width)
    y0, y1 = min(max(y0, 0.0), height), min(max(y1, 0.0), height)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def zoom_region(box: tuple[float, float, float, float], width: int, height: int,
                side: int = CROP_SIDE) -> tuple[float, float, float, float]:
    """The official zoom window of ``box`` in a ``width × height`` raster (module docstring); ``(x0, y0, x1, y1)``."""
    x1, y1, x2, y2 = (int(v) for v in box)
    if x2 - x1 >= side and y2 - y1 >= side:
        return max(0, x1), max(0, y1), min(width, x2), min(height, y2)
    cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
    left, top = cx - side // 2, cy - side // 2
    left = max(0, min(left, width - side))
    top = max(0, min(top, height - side))
    return left, top, min(width, left + side), min(height, top + side)


__all__ = ["overview", "to_image", "zoom_region"]
