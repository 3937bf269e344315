"""ZoomEarth as the zoom strategy's localizer: an image of the whole area and an instruction in, one box out.

The family's thin adapter over the model (numpy in, a small result out; it owns the model-specific resize), but
a *localizer*, not a segmenter: :meth:`ZoomEarthLocalizer.localize` follows ZoomEarth's official stage 1 (spec
§2.10): the image resized to long side 512 (:func:`~segearth_geo.model.zoomearth.preprocess.overview`), the
verbatim stage-1 text (:mod:`~segearth_geo.model.zoomearth.prompt`), greedy decoding, the first ``bbox_2d``
scaled back by ``max(1, L / 512)``, ordered and clamped. The engine hands it the area read at most
:data:`~segearth_geo.model.zoomearth.configuration.READ_SIDE` px long (see :mod:`segearth_geo.zoom.localizer`)
and zooms on :meth:`~ZoomEarthLocalizer.zoom_region` of the box, at full resolution, with its segmenter.

Model output never raises: no box, a malformed one or one outside the image gives ``Localization(None, text)``.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import torch

from segearth_geo.model.base import rgb_uint8
from segearth_geo.model.device import describe_device
from segearth_geo.model.zoomearth import preprocess
from segearth_geo.model.zoomearth.checkpoint import ZoomEarthParts
from segearth_geo.model.zoomearth.configuration import MAX_NEW_TOKENS, OVERVIEW_SIDE, READ_SIDE
from segearth_geo.model.zoomearth.modeling import generate, stage1_ids
from segearth_geo.model.zoomearth.prompt import first_box
from segearth_geo.zoom.localizer import Localization

log = logging.getLogger(__name__)


class ZoomEarthLocalizer:
    """ZoomEarth stage 1 (see the module docstring).

    Args:
        parts: the loaded checkpoint (:func:`~segearth_geo.model.zoomearth.checkpoint.load_pretrained`).
        device, dtype: where the model is.
        max_new_tokens: decoding budget (official: 1024).
        stop_at_box: stop decoding once the first complete box is written (not official; saves tokens).
    """

    name = "zoomearth"
    overview_side = OVERVIEW_SIDE
    read_side = READ_SIDE

    def __init__(self, parts: ZoomEarthParts, device: torch.device, dtype: torch.dtype,
                 max_new_tokens: int = MAX_NEW_TOKENS, stop_at_box: bool = True) -> None:
        self.parts, self.device, self.dtype = parts, device, dtype
        self.max_new_tokens, self.stop_at_box = int(max_new_tokens), bool(stop_at_box)

    @property
    def device_description(self) -> str:
        return describe_device(self.device, self.dtype)

    def inputs(self, image: np.ndarray, question: str) -> tuple[torch.Tensor, dict, float]:
        """``(input_ids [1, L], image-processor tensors, factor back to image px)`` for ``image`` ``(h, w, 3)``."""
        pil, factor = preprocess.overview(rgb_uint8(image), self.overview_side)
        pixels = self.parts.image_processor(images=[pil], return_tensors="pt")
        grid = pixels["image_grid_thw"]  # [1, 3] (t, h, w) patches
        tokens = int(grid.prod().item()) // self.parts.merge_size ** 2
        return stage1_ids(self.parts.tokenizer, question, tokens), dict(pixels), factor

    def localize(self, image: np.ndarray, prompt: str) -> Localization:
        """ZoomEarth's box for ``prompt`` in ``image``'s pixels, or ``None`` (and its text answer)."""
        ids, pixels, factor = self.inputs(image, prompt)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # generation-config notices on every call
            text = generate(self.parts.model, self.parts.tokenizer, ids, pixels["pixel_values"],
                            pixels["image_grid_thw"], self.max_new_tokens, self.stop_at_box)
        box = first_box(text)
        if box is not None:
            box = preprocess.to_image(box, factor, image.shape[1], image.shape[0])
        log.info("ZoomEarth on %r: %s", prompt, "no box" if box is None else f"box {box}")
        return Localization(box, text)

    def zoom_region(self, box: tuple[float, float, float, float], width: int,
                    height: int) -> tuple[float, float, float, float]:
        """The official zoom window of ``box`` (full-resolution px) in a ``width × height`` raster."""
        return preprocess.zoom_region(box, width, height)


__all__ = ["ZoomEarthLocalizer"]
