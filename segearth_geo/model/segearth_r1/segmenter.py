"""SegEarth-R1 inference: numpy chips + prompt in, one probability mask per chip out (spec §6, §7).

Per batch of B chips: letterbox each chip (floor resize, centred zero padding, ImageNet normalisation) → Swin
once → compression connector → the prompt ids of the checkpoint's template with ``<refer>`` = the instruction +
``[SEG]`` → Phi-1.5 → mean over the refer span → one query per chip → pixel decoder + masked-attention decoder →
logits ``[B, 1, S/4, S/4]`` → un-letterbox to each chip's own size → ``sigmoid``.

There is no text generation: the answer text says so, and the one target's label is the prompt's noun phrase.
Chips never interact (one decoder batch element per chip; padded LLM rows are masked), so results do not depend
on batch composition or order (up to float noise).

Per-chip image state (:mod:`~segearth_geo.model.image_cache`): the template puts the image tokens *before* the
``<refer>`` span, which is the last thing the LLM reads (spec §5), so everything but the refer span is the same for
every prompt on a chip. Three tiers are kept per chip: ``"vision"`` (the connector's image tokens ``[T_img, D]``),
``"mask"`` (res5 for the D-Projector and the pixel-decoder features) and ``"prefix"`` (the LLM key/values of the
prompt-independent prefix ``[H, L_p, d]`` per layer, keyed with the template too). The LLM always runs in two
steps, cache or not: the prefix at positions ``0..L_p-1`` (same template → same length, no padding), then each
chip's refer ids ``[B, W]`` **left**-padded inside their own block on top of it, position ids contiguous
(``L_p + 0..n_b-1``), padding masked out; the query is the mean over that block's real positions. This equals the
one-pass forward of :class:`~segearth_geo.model.segearth_r1.modeling.SegEarthR1` (causality), up to float noise.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from segearth_geo.errors import ModelError, UsageError
from segearth_geo.model.base import SegmenterBase
from segearth_geo.model.image_cache import chip_key
from segearth_geo.model.parts.pixel_decoder import PixelFeatures
from segearth_geo.model.prefix_cache import left_padded_block, per_chip, stack_chips
from segearth_geo.model.segearth_r1.preprocess import Letterbox, letterbox_image, uncrop_logits
from segearth_geo.model.segearth_r1.prompt import ANSWER_TEXT, EncodedPrompt, encode_prompt, prompt_label, prompt_text
from segearth_geo.prediction import ChipPrediction, Target

log = logging.getLogger(__name__)


@dataclass
class _MaskState:
    """The mask branch's image state of one chip (batch 1).

    Attributes:
        res5: ``[1, C5, S/32, S/32]`` Swin res5 (the D-Projector's media).
        pixels: pixel-decoder features (``mask_features [1, C, M, M]``, 3 multi-scale maps ``[1, C, h_l, w_l]``).
    """

    res5: torch.Tensor
    pixels: PixelFeatures


class SegEarthR1Segmenter(SegmenterBase):
    """The :class:`~segearth_geo.prediction.Segmenter` for SegEarth-R1 (``chip_size`` = the canvas side S).

    Args:
        model: a ``SegEarthR1`` (moved to ``device``/``dtype`` and put in eval mode here).
        tokenizer: its tokenizer (with ``[PAD]`` and ``[SEG]``).
        device, dtype, batch_size, cache_mb: see :class:`~segearth_geo.model.base.SegmenterBase` (default batch 8
            on CUDA, 1 elsewhere). A chip that comes back with another prompt reuses its image tokens, its
            mask-branch features and its LLM prefix key/values (see the module docstring).
        template: ``"referring"`` or ``"reasoning"``; default: the checkpoint's (``model.config.template``).
    """

    name = "segearth-r1"
    capabilities = frozenset({"image_cache", "predict"})
    cuda_batch_size, cpu_batch_size = 8, 1
    cache_tiers = ("vision", "mask", "prefix")

    def __init__(self, model, tokenizer, device="auto", dtype=None, batch_size: int | None = None,
                 template: str | None = None, cache_mb: float | None = None) -> None:
        super().__init__(model, chip_size=model.config.mask.image_size, device=device, dtype=dtype,
                         batch_size=batch_size, cache_mb=cache_mb)
        self.tokenizer = tokenizer
        self.template = template or self.config.template
        prompt_text(self.template)  # an unknown template fails here, not at the first chip
        # Preprocessing that shapes the cached state: fixed per segmenter (the template joins the prefix key).
        self._cache_salt = f"{self.name}|{self.chip_size}|{self.dtype}"

    # ------------------------------------------------------------------------------------------ public API
    def segment(self, chips: Sequence[np.ndarray], prompt: str) -> list[ChipPrediction]:
        """The Segmenter protocol: one prediction (one target) per chip, masks at each chip's own size."""
        self.check_chips(chips)
        return self.predict(list(chips), [prompt] * len(chips))

    def predict(self, images: Sequence[np.ndarray], prompts: Sequence[str],
                answers: Sequence[str] | None = None) -> list[ChipPrediction]:
        """One prediction per ``(image, instruction)``; images of any size (letterboxed to S).

        SegEarth-R1 generates no text, so there is nothing to teacher-force: ``answers`` must be ``None``.
        """
        if answers is not None:
            raise UsageError("SegEarth-R1 generates no answer text, so it takes no answers to teacher-force; "
                             "evaluate it with mode 'generate'")
        if len(images) != len(prompts):
            raise UsageError("predict() needs as many prompts as images")
        return self.in_batches(len(images), lambda start, stop: self._predict_batch(images[start:stop],
                                                                                   prompts[start:stop]))

    def mask_logits(self, images: Sequence[np.ndarray], prompts: Sequence[str]) -> tuple[torch.Tensor, list[Letterbox]]:
        """Canvas logits ``[B, 1, S/4, S/4]`` (float32, CPU) and each image's letterbox — one batch, image state
        from the cache where held."""
        cfg = self.config
        with torch.inference_mode(), self.autocast():
            prepared = [letterbox_image(np.asarray(im), self.chip_size, cfg.mask.pixel_mean, cfg.mask.pixel_std,
                                        self.device) for im in images]
            keys = [chip_key(np.asarray(im), self._cache_salt) for im in images]
            encoded = [encode_prompt(self.tokenizer, p, self.template, seg_token_id=cfg.seg_token_id,
                                     image_token_index=cfg.image_token_index, refer_token_index=cfg.refer_token_index)
                       for p in prompts]
            canvases = [p[0] for p in prepared]
            prefix_keys = [f"{key}|{self.template}" for key in keys]
            states = [self.cache.get(key, "prefix") for key in prefix_keys]
            need_tokens = [b for b, state in enumerate(states) if state is None]
            masks, tokens = self._image_state(keys, canvases, need_tokens)
            if need_tokens:
                computed = self._prefix_states(self._prefix_ids(encoded), [tokens[b] for b in need_tokens])
                for b, state in zip(need_tokens, computed):
                    states[b] = state
                    if self.cache.enabled:
                        self.cache.put(prefix_keys[b], "prefix", [(k.clone(), v.clone()) for k, v in state])
            hidden, refer_mask = self._refer_states(states, [e.refer_ids for e in encoded])
            res5 = torch.cat([masks[b].res5 for b in range(len(images))])  # [B, C5, h5, w5]
            queries = self.model.describe(hidden, refer_mask, res5)  # [B, C]
            chosen = [masks[b].pixels for b in range(len(images))]
            pixels = PixelFeatures(torch.cat([f.mask_features for f in chosen]),
                                   [torch.cat([f.multi_scale[level] for f in chosen])
                                    for level in range(len(chosen[0].multi_scale))])
            out = self.model.decode_pixels(queries, pixels)
            return out.pred_masks.float().cpu(), [p[1] for p in prepared]

    # ------------------------------------------------------------------------------------------ internals
    def _image_state(self, keys: list[str], canvases: list[torch.Tensor],
                     need_tokens: list[int]) -> tuple[dict[int, _MaskState], dict[int, torch.Tensor]]:
        """Per chip its :class:`_MaskState`, and for the chips ``need_tokens`` their image tokens ``[T_img, D]``:
        from the cache where held, else from ONE Swin pass over the chips that miss either."""
        masks = {b: self.cache.get(key, "mask") for b, key in enumerate(keys)}
        tokens = {b: self.cache.get(keys[b], "vision") for b in need_tokens}
        rows = sorted({b for b, m in masks.items() if m is None} | {b for b, t in tokens.items() if t is None})
        if not rows:
            return masks, tokens
        features, image_tokens = self.model.encode_images(torch.stack([canvases[b] for b in rows]).to(self.dtype))
        for k, b in enumerate(rows):
            if b in tokens and tokens[b] is None:
                tokens[b] = image_tokens[k]
                if self.cache.enabled:
                    self.cache.put(keys[b], "vision", image_tokens[k].clone())
        missing = [k for k, b in enumerate(rows) if masks[b] is None]
        if missing:
            index = torch.tensor(missing, device=self.device)
            selected = [f[index] for f in features] if len(missing) < len(rows) else features
            pixels = self.model.pixel_features(selected)
            for j, k in enumerate(missing):
                one = torch.tensor([j], device=self.device)  # a gather: each chip's state owns its memory
                state = _MaskState(res5=selected[-1][one], pixels=pixels.select(one))
                masks[rows[k]] = state
                if self.cache.enabled:
                    self.cache.put(keys[rows[k]], "mask", state)
        return masks, tokens

    def _prefix_ids(self, encoded: list[EncodedPrompt]) -> list[int]:
        """The prompt-independent prefix: the template's ids up to the ``<refer>`` placeholder (the last id)."""
        refer = self.config.refer_token_index
        prefix = encoded[0].input_ids[:-1]
        for e in encoded:
            if e.input_ids[-1] != refer or e.input_ids[:-1] != prefix:
                raise ModelError("the SegEarth-R1 prompt does not end with one <refer> after a shared prefix")
        return prefix

    def _prefix_states(self, prefix: list[int], tokens: list[torch.Tensor]) -> list[list[tuple[torch.Tensor, ...]]]:
        """LLM key/values of the prefix for each chip's image tokens ``[T_img, D]`` → per chip, per layer
        ``(keys [H, L_p, d], values [H, L_p, d])``. One forward: every row has the same length (no padding)."""
        from transformers import DynamicCache

        cfg = self.config
        image = prefix.index(cfg.image_token_index)
        if cfg.image_token_index in prefix[image + 1:] or cfg.refer_token_index in prefix:
            raise ModelError("the SegEarth-R1 prefix must hold exactly one <image> and no <refer>")
        embed = self.model.model.embed_tokens
        head = embed(torch.tensor(prefix[:image], dtype=torch.long, device=self.device))  # [a, D]
        tail = embed(torch.tensor(prefix[image + 1:], dtype=torch.long, device=self.device))  # [c, D]
        batch = len(tokens)
        inputs = torch.cat([head.expand(batch, -1, -1), torch.stack(tokens).to(embed.weight.dtype),
                            tail.expand(batch, -1, -1)], dim=1)  # [M, L_p, D]
        length = inputs.shape[1]
        if length >= cfg.max_length:
            raise UsageError(f"the SegEarth-R1 prefix has {length} positions, max_length is {cfg.max_length}")
        cache = DynamicCache(config=self.model.model.config)
        self.model.model(inputs_embeds=inputs, attention_mask=torch.ones(batch, length, dtype=torch.long,
                                                                         device=self.device),
                         position_ids=torch.arange(length, device=self.device).expand(batch, -1), cache=cache,
                         use_cache=True)
        return per_chip(cache)

    def _refer_states(self, states: list, refer_ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """The refer spans on top of the chips' prefix key/values → hidden ``[B, W, D]`` and refer mask ``[B, W]``.

        Each span is **left**-padded inside its own block of width W (every prefix is at ``0..L_p-1``), positions
        ``L_p + 0..n_b-1``, padding masked out of the attention and of the mean."""
        cfg = self.config
        prefix_length = states[0][0][0].shape[1]
        width = max(len(r) for r in refer_ids)
        if prefix_length + width > cfg.max_length:
            raise UsageError(f"a spliced sequence has {prefix_length + width} positions, more than "
                             f"max_length={cfg.max_length}; shorten the instruction")
        for b, refer in enumerate(refer_ids):
            if min(refer) < 0 or max(refer) >= cfg.vocab_size:
                raise UsageError(f"sample {b} has refer ids outside [0, {cfg.vocab_size})")
        block = left_padded_block(refer_ids, prefix_length, cfg.pad_token_id, self.device)
        out = self.model.model(inputs_embeds=self.model.model.embed_tokens(block.ids),
                               attention_mask=block.attention_mask, position_ids=block.positions,
                               cache=stack_chips(states, self.model.model.config), use_cache=True)
        return out.last_hidden_state, block.mask.bool()

    def _predict_batch(self, images, prompts) -> list[ChipPrediction]:
        logits, boxes = self.mask_logits(images, prompts)
        results = []
        for b, (box, prompt) in enumerate(zip(boxes, prompts)):
            probability = torch.sigmoid(uncrop_logits(logits[b:b + 1], box))[0].numpy().astype(np.float32)
            results.append(ChipPrediction(answer=ANSWER_TEXT,
                                          targets=[Target(label=prompt_label(prompt), probability=probability)]))
        return results

