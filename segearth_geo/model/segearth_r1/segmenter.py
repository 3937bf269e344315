"""SegEarth-R1 inference: numpy chips + prompt in, one probability mask per chip out (spec §6, §7).

Per batch of B chips: letterbox each chip (floor resize, centred zero padding, ImageNet normalisation) → Swin
once → compression connector → the prompt ids of the checkpoint's template with ``<refer>`` = the instruction +
``[SEG]`` → Phi-1.5 → mean over the refer span → one query per chip → pixel decoder + masked-attention decoder →
logits ``[B, 1, S/4, S/4]`` → un-letterbox to each chip's own size → ``sigmoid``.

There is no text generation: the answer text says so, and the one target's label is the prompt's noun phrase.
Chips never interact (one decoder batch element per chip; padded LLM rows are masked), so results do not depend
on batch composition or order (up to float noise).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from segearth_geo.errors import ModelError, UsageError
from segearth_geo.model.segearth_r1.image_processing import Letterbox, letterbox_image, uncrop_logits
from segearth_geo.model.segearth_r1.prompt import ANSWER_TEXT, encode_prompt, prompt_label, prompt_text
from segearth_geo.model.segmenter import resolve_device
from segearth_geo.prediction import ChipPrediction, Target

log = logging.getLogger(__name__)


class SegEarthR1Segmenter:
    """The :class:`~segearth_geo.prediction.Segmenter` for SegEarth-R1 (``chip_size`` = the canvas side S).

    Args:
        model: a ``SegEarthR1`` (moved to ``device``/``dtype`` and put in eval mode here).
        tokenizer: its tokenizer (with ``[PAD]`` and ``[SEG]``).
        device, dtype: see :func:`~segearth_geo.model.segmenter.resolve_device`.
        batch_size: chips per forward pass (default 8 on CUDA, 1 on CPU; halved on CUDA out-of-memory).
        template: ``"referring"`` or ``"reasoning"``; default: the checkpoint's (``model.config.template``).
    """

    def __init__(self, model, tokenizer, device="auto", dtype=None, batch_size: int | None = None,
                 template: str | None = None) -> None:
        self.device, self.dtype = resolve_device(device, dtype)
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self.tokenizer = tokenizer
        self.config = model.config
        self.template = template or self.config.template
        prompt_text(self.template)  # an unknown template fails here, not at the first chip
        self.chip_size = int(self.config.mask.image_size)
        self.batch_size = int(batch_size or (8 if self.device.type == "cuda" else 1))
        if self.batch_size < 1:
            raise UsageError("batch_size must be >= 1")

    @classmethod
    def from_pretrained(cls, path: str | Path, device="auto", dtype=None, batch_size: int | None = None,
                        template: str | None = None) -> SegEarthR1Segmenter:
        """Load a checkpoint folder (:func:`~segearth_geo.model.segearth_r1.checkpoint.load_r1_pretrained`)."""
        from segearth_geo.model.segearth_r1.checkpoint import load_r1_pretrained

        dev, dt = resolve_device(device, dtype)
        loaded = load_r1_pretrained(path, device=dev, dtype=dt, template=template)
        log.info("SegEarth-R1 from %s on %s (%s), %s template", loaded.path, dev, str(dt).replace("torch.", ""),
                 loaded.model.config.template)
        return cls(loaded.model, loaded.tokenizer, device=dev, dtype=dt, batch_size=batch_size)

    @property
    def device_description(self) -> str:
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "CPU"
        return f"{self.device} ({name}, {str(self.dtype).replace('torch.', '')})"

    # ------------------------------------------------------------------------------------------ public API
    def segment(self, chips: Sequence[np.ndarray], prompt: str) -> list[ChipPrediction]:
        """The Segmenter protocol: one prediction (one target) per chip, masks at each chip's own size."""
        return self.predict(list(chips), [prompt] * len(chips))

    def predict(self, images: Sequence[np.ndarray], prompts: Sequence[str]) -> list[ChipPrediction]:
        """One prediction per ``(image, instruction)``; images of any size (letterboxed to S)."""
        if len(images) != len(prompts):
            raise UsageError("predict() needs as many prompts as images")
        results: list[ChipPrediction] = []
        start, batch = 0, self.batch_size
        while start < len(images):
            stop = min(start + batch, len(images))
            try:
                results.extend(self._predict_batch(images[start:stop], prompts[start:stop]))
            except torch.cuda.OutOfMemoryError as exc:
                torch.cuda.empty_cache()
                if batch == 1:
                    raise ModelError("CUDA out of memory with one chip per batch; free GPU memory or use "
                                     "--device cpu") from exc
                batch = self.batch_size = max(1, batch // 2)
                log.warning("CUDA out of memory: retrying with batch size %d", batch)
                continue
            start = stop
        return results

    def mask_logits(self, images: Sequence[np.ndarray], prompts: Sequence[str]) -> tuple[torch.Tensor, list[Letterbox]]:
        """Canvas logits ``[B, 1, S/4, S/4]`` (float32, CPU) and each image's letterbox — one forward pass."""
        cfg = self.config
        with torch.inference_mode(), self._autocast():
            prepared = [letterbox_image(np.asarray(im), self.chip_size, cfg.mask.pixel_mean, cfg.mask.pixel_std,
                                        self.device) for im in images]
            canvas = torch.stack([p[0] for p in prepared]).to(self.dtype)  # [B, 3, S, S]
            encoded = [encode_prompt(self.tokenizer, p, self.template, seg_token_id=cfg.seg_token_id,
                                     image_token_index=cfg.image_token_index, refer_token_index=cfg.refer_token_index)
                       for p in prompts]
            out = self.model(canvas, [e.input_ids for e in encoded], [e.refer_ids for e in encoded])
            return out.pred_masks.float().cpu(), [p[1] for p in prepared]

    # ------------------------------------------------------------------------------------------ internals
    def _autocast(self):
        if self.device.type == "cuda" and self.dtype != torch.float32:
            return torch.autocast("cuda", dtype=self.dtype)
        return contextlib.nullcontext()

    def _predict_batch(self, images, prompts) -> list[ChipPrediction]:
        logits, boxes = self.mask_logits(images, prompts)
        results = []
        for b, (box, prompt) in enumerate(zip(boxes, prompts)):
            probability = torch.sigmoid(uncrop_logits(logits[b:b + 1], box))[0].numpy().astype(np.float32)
            results.append(ChipPrediction(answer=ANSWER_TEXT,
                                          targets=[Target(label=prompt_label(prompt), probability=probability)]))
        return results


def load_r1_segmenter(path: str | Path, device: str = "auto", dtype=None, batch_size: int | None = None,
                      template: str | None = None) -> SegEarthR1Segmenter:
    """Registry entry point: a local SegEarth-R1 folder → a ready segmenter."""
    return SegEarthR1Segmenter.from_pretrained(path, device=device, dtype=dtype, batch_size=batch_size,
                                               template=template)
