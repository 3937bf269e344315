"""SegEarth-R2 inference: numpy chips + prompt in, text answer + one probability mask per ``[SEG]`` out.

Per batch of B chips (spec §11, recommended path):

1. both preprocessing branches from each ``uint8`` chip (§3);
2. SigLIP + projector → image embeddings ``[B,T_img,D]``; the §4.4 prompt ids (one template with training);
3. batched greedy generation with a KV cache: prompts **left**-padded, attention mask from lengths, position
   ids ``0..len-1`` per chip; logits of ids ≥ V are masked; a chip stops at EOS or ``max_new_tokens``;
4. ONE teacher-forced pass over prompt + generated ids for chips that produced ≥ 1 ``[SEG]``: the last
   layer's states (after the final LayerNorm) at each generated ``[SEG]`` position are the queries — this also
   covers a trailing ``[SEG]`` (spec §16.2). By default the generated ids are fed at once on top of the
   prompt's KV cache (``seg_pass="cache"``; cost ≈ K tokens); ``seg_pass="full"`` re-runs the whole sequence
   with right padding. Tests check both equal the states seen during cached generation;
5. mask branch (Swin + pixel decoder + decoder) only for those chips; crop-back and resize to each chip's own
   size (§7); sigmoid probabilities as float32.

With ``answers`` given (:meth:`SegEarthR2Segmenter.predict`), step 3 is skipped: the answers' ``[SEG]`` are used
(teacher forcing, as in training). Results do not depend on batch composition or order (up to float noise).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np
import torch

from segearth_geo.errors import ModelError, UsageError
from segearth_geo.model.base import SegmenterBase
from segearth_geo.model.image_cache import chip_key
from segearth_geo.model.parts.crop_back import crop_back
from segearth_geo.model.parts.pixel_decoder import PixelFeatures
from segearth_geo.model.prefix_cache import left_padded_block, per_chip, stack_chips
from segearth_geo.model.segearth_r2.preprocess import PreparedImage, prepare_images
from segearth_geo.model.segearth_r2.prompt import (
    answer_from_generated,
    encode_conversation,
    encode_prompt_parts,
    get_template,
    target_labels,
)
from segearth_geo.model.tokenizer import SEG_TOKEN
from segearth_geo.prediction import ChipPrediction, Target

log = logging.getLogger(__name__)

DEFAULT_MAX_NEW_TOKENS = 128


@dataclass
class StageTimes:
    """Accumulated wall time per stage (seconds) and calls; CUDA is synchronised around each stage."""

    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))


@dataclass
class _Generation:
    """Greedy generation result of one batch, with what the [SEG] pass needs.

    Attributes:
        ids: generated ids per chip (EOS included when hit).
        cache: the KV cache (prompt + fed generated ids), left-padded rows.
        prompt_mask: ``[B, L0]`` attention mask of the left-padded prompt.
        lengths: ``[B]`` real prompt lengths (spliced).
    """

    ids: list[list[int]]
    cache: object
    prompt_mask: torch.Tensor
    lengths: torch.Tensor


class SegEarthR2Segmenter(SegmenterBase):
    """The :class:`~segearth_geo.prediction.Segmenter` for SegEarth-R2 (``chip_size`` = ``config.mask.image_size``).

    Args:
        model: a ``SegEarthR2`` (moved to ``device``/``dtype`` and put in eval mode here).
        tokenizer: its tokenizer (``[SEG]`` = V − 1).
        device, dtype, batch_size, cache_mb: see :class:`~segearth_geo.model.base.SegmenterBase` (default batch
            16 on CUDA, 2 elsewhere). A chip that comes back with another prompt reuses its SigLIP tokens, its
            LLM prefix key/values and its mask features from the image cache.
        max_new_tokens: generation limit per chip.
        seg_pass: how the final-sequence forward that yields the ``[SEG]`` states is run: ``"cache"`` (default)
            feeds all generated ids at once on top of the prompt's KV cache, ``"full"`` re-runs prompt +
            generated ids from scratch. Both are the same teacher-forced pass (equal up to float noise).
        template: prompt template name (:data:`~segearth_geo.model.segearth_r2.prompt.TEMPLATES`); default: the
            checkpoint's (``model.config.template``).
    """

    name = "segearth-r2"
    capabilities = frozenset({"image_cache", "predict"})
    cuda_batch_size, cpu_batch_size = 16, 2
    cache_tiers = ("vision", "mask", "prefix")

    def __init__(self, model, tokenizer, device="auto", dtype=None, batch_size: int | None = None,
                 max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, seg_pass: str = "cache",
                 cache_mb: float | None = None, template: str | None = None) -> None:
        if seg_pass not in ("cache", "full"):
            raise UsageError(f"seg_pass must be 'cache' or 'full', not {seg_pass!r}")
        if max_new_tokens < 1:
            raise UsageError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        # SegEarthR2 keeps the rotary inv_freq in fp32 through dtype casts by itself.
        super().__init__(model, chip_size=model.config.mask.image_size, device=device, dtype=dtype,
                         batch_size=batch_size, cache_mb=cache_mb)
        self.seg_pass = seg_pass
        self.tokenizer = tokenizer
        self.template = get_template(template or self.config.template).name  # an unknown name fails here
        if len(tokenizer) != self.config.vocab_size:
            raise ModelError(f"tokenizer length {len(tokenizer)} != model vocab_size {self.config.vocab_size}")
        self.max_new_tokens = int(max_new_tokens)
        self.stage_times: StageTimes | None = None  # set to StageTimes() to profile (benchmarks)
        # Benchmarks only: ignore EOS and generate exactly this many ids, the last one forced to [SEG]
        # (so random weights still exercise one target per chip and the trailing-[SEG] path).
        self.forced_answer_length: int | None = None
        # Preprocessing that shapes the cached state: fixed per segmenter, part of every key anyway.
        self._cache_salt = f"{self.name}|{self.chip_size}|{self.dtype}|{self.template}"

    # ------------------------------------------------------------------------------------------ public API
    def segment(self, chips: Sequence[np.ndarray], prompt: str) -> list[ChipPrediction]:
        """The Segmenter protocol: one prediction per chip, masks at each chip's own size."""
        return self.predict(list(chips), [prompt] * len(chips))

    def predict(self, images: Sequence[np.ndarray], prompts: Sequence[str],
                answers: Sequence[str] | None = None) -> list[ChipPrediction]:
        """Predict each ``(image, prompt)``; with ``answers`` the given answers' ``[SEG]``s make the masks."""
        if len(images) != len(prompts) or (answers is not None and len(answers) != len(images)):
            raise UsageError("predict() needs as many prompts (and answers) as images")
        self.check_chips(images)
        return self.in_batches(len(images), lambda start, stop: self._predict_batch(
            images[start:stop], prompts[start:stop], None if answers is None else answers[start:stop]))

    # ------------------------------------------------------------------------------------------ stages
    @contextlib.contextmanager
    def _stage(self, name: str) -> Iterator[None]:
        if self.stage_times is None:
            yield
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        began = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.stage_times.seconds[name] += time.perf_counter() - began
        self.stage_times.calls[name] += 1

    @torch.inference_mode()
    def _predict_batch(self, images, prompts, answers) -> list[ChipPrediction]:
        with self.autocast():
            with self._stage("preprocess"):
                prepared = [prepare_images(np.asarray(image), self.config, self.device) for image in images]
                keys = [chip_key(np.asarray(image), self._cache_salt) for image in images]
            if answers is None:
                parts = [encode_prompt_parts(self.tokenizer, p, image_token_index=self.config.image_token_index,
                                             template=self.template)
                         for p in prompts]
                prompt_ids = [ids for ids, _ in parts]
                generation = self._generate(prompt_ids, [start for _, start in parts], keys, prepared)
                texts = [self._answer_text(g) for g in generation.ids]
                if self.seg_pass == "cache":
                    seg_states, owner, with_seg = self._seg_states_cached(generation)
                else:
                    seg_states, owner, with_seg = self._seg_states(
                        [p + g for p, g in zip(prompt_ids, generation.ids)], [len(p) for p in prompt_ids],
                        self._image_embeds(keys, prepared, list(range(len(images)))))
            else:
                encoded = [encode_conversation(self.tokenizer, p, a, eos_token_id=self.config.eos_token_id,
                                               image_token_index=self.config.image_token_index,
                                               template=self.template)
                           for p, a in zip(prompts, answers)]
                for e, p in zip(encoded, prompts):
                    if not e.valid:
                        log.warning("prompt %r: the template does not tokenize consistently; no targets", p)
                full_ids = [e.input_ids for e in encoded]
                starts = [e.prompt_length for e in encoded]
                texts = [a.strip() for a in answers]
                seg_states, owner, with_seg = self._seg_states(
                    full_ids, starts, self._image_embeds(keys, prepared, list(range(len(images)))))
            probabilities = self._masks(seg_states, owner, with_seg, prepared, keys)
        results = []
        for b, (text, prompt) in enumerate(zip(texts, prompts)):
            masks = probabilities.get(b, [])
            labels = target_labels(text, prompt)
            labels = (labels + [prompt] * len(masks))[: len(masks)]
            targets = [Target(label=label, probability=mask) for label, mask in zip(labels, masks)]
            results.append(ChipPrediction(answer=text, targets=targets))
        return results

    def _image_embeds(self, keys: list[str], prepared: list[PreparedImage], rows: list[int]) -> torch.Tensor:
        """Projected SigLIP tokens ``[len(rows), T_img, D]`` of the chips ``rows``, from the cache where held."""
        found = {b: self.cache.get(keys[b], "vision") for b in rows}
        missing = [b for b in rows if found[b] is None]
        if missing:
            with self._stage("siglip"):
                pixels = torch.stack([prepared[b].siglip for b in missing]).to(self.device, self.dtype)  # [M,3,s,s]
                embeds = self.model.encode_images(pixels)  # [M,T_img,D]
            for k, b in enumerate(missing):
                found[b] = embeds[k]
                if self.cache.enabled:
                    self.cache.put(keys[b], "vision", embeds[k].clone())
        return torch.stack([found[b] for b in rows])

    def _prefix_states(self, prefix: list[int], keys: list[str], prepared: list[PreparedImage]):
        """Per chip, the LLM key/values of the prompt-independent prefix (template + image tokens).

        Returns ``(states, cache)``: one list per chip of ``(keys [H, L_p, d], values [H, L_p, d])`` per
        layer, and the ``DynamicCache`` of the batch when no chip came from the image cache (``None``
        otherwise). Chips not in the cache are computed in one batched forward (same length: no padding).
        """
        from transformers import DynamicCache

        states: list = [self.cache.get(k, "prefix") for k in keys]
        missing = [b for b, state in enumerate(states) if state is None]
        if not missing:
            return states, None
        embeds = self._image_embeds(keys, prepared, missing)  # [M,T_img,D]
        with self._stage("prefill"):
            row = torch.tensor(prefix, dtype=torch.long, device=self.device)
            inputs = self.model.build_inputs([row] * len(missing), embeds)  # [M,L_p,D], all real positions
            cache = DynamicCache(config=self.model.model.config)
            self._llm(inputs.inputs_embeds, inputs.attention_mask, inputs.position_ids, cache)
            for b, state in zip(missing, per_chip(cache)):
                if self.cache.enabled:
                    state = [(key.clone(), value.clone()) for key, value in state]
                    self.cache.put(keys[b], "prefix", state)
                states[b] = state
        return states, (cache if len(missing) == len(keys) else None)

    def _prefill(self, prompt_ids: list[list[int]], starts: list[int], keys: list[str],
                 prepared: list[PreparedImage]):
        """The prompt's KV cache: the shared prefix (cached or computed), then the instructions on top of it.

        Layout ``[B, L_p + W]``: the prefix of every chip at positions ``0..L_p-1`` (identical template), then
        each chip's instruction ids ``[B, W]`` **left**-padded inside their own block, so that every row ends
        with a real id and the prefix state of one chip is valid in any batch. Position ids of real ids are
        contiguous (``L_p + 0..n_b-1``); padding is masked out. Returns ``(hidden [B,W,D], cache, mask, lengths)``.
        """
        prefix = prompt_ids[0][: starts[0]]
        if any(ids[:start] != prefix for ids, start in zip(prompt_ids, starts)):
            raise ModelError("the prompt template gave different prefixes for different instructions")
        states, cache = self._prefix_states(prefix, keys, prepared)
        with self._stage("prefill"):
            if cache is None:  # some chips came from the image cache: stack every chip's prefix state
                cache = stack_chips(states, self.model.model.config)
            block = left_padded_block([ids[start:] for ids, start in zip(prompt_ids, starts)],
                                      states[0][0][0].shape[1], self.config.pad_token_id, self.device)
            hidden, cache = self._llm(self.model.model.embed_tokens(block.ids), block.attention_mask, block.positions,
                                      cache)
        return hidden, cache, block.attention_mask, block.lengths

    def _answer_text(self, generated: list[int]) -> str:
        eos = self.config.eos_token_id
        ids = [t for t in generated if t != eos]
        seg = self.config.seg_token_id
        pieces, current = [], []
        for token in ids:  # decode around [SEG] ids so their count in the text equals the id count
            if token == seg:
                pieces.append(self.tokenizer.decode(current))
                current = []
            else:
                current.append(token)
        pieces.append(self.tokenizer.decode(current))
        return answer_from_generated(SEG_TOKEN.join(pieces))

    def _llm(self, inputs_embeds, attention_mask, position_ids, cache=None):
        """Phi-2 forward → (last hidden state after final LN [B,L,D], cache)."""
        out = self.model.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids,
                               cache=cache, use_cache=cache is not None)
        return out.last_hidden_state, out.cache

    def _next_token(self, hidden_last: torch.Tensor) -> torch.Tensor:
        """Greedy id from the last states ``[B,D]``; ids ≥ V (not embeddable) are masked. → ``[B]``."""
        logits = self.model.lm_head(hidden_last).float()  # [B,lm_head_size]
        logits[:, self.config.vocab_size:] = float("-inf")
        return logits.argmax(dim=-1)

    def _generate(self, prompt_ids: list[list[int]], starts: list[int], keys: list[str],
                  prepared: list[PreparedImage]) -> _Generation:
        """Batched greedy decoding with a KV cache; returns the generated ids per chip (EOS included if hit)."""
        eos = self.config.eos_token_id
        hidden, cache, prompt_mask, lengths = self._prefill(prompt_ids, starts, keys, prepared)
        attention_mask = prompt_mask
        token = self._next_token(hidden[:, -1])  # [B]
        batch = token.shape[0]
        done = torch.zeros(batch, dtype=torch.bool, device=self.device)
        steps: list[torch.Tensor] = []
        limit = self.forced_answer_length or self.max_new_tokens
        embed = self.model.model.embed_tokens
        forced = self.forced_answer_length is not None
        with self._stage("decode"):
            for step in range(limit):
                if forced and step == limit - 1:
                    token = torch.full_like(token, self.config.seg_token_id)
                token = torch.where(done, torch.full_like(token, eos), token)
                steps.append(token)
                if not forced:
                    done = done | (token == eos)
                    if bool(done.all()):
                        break
                if step + 1 == limit or (forced and step + 2 == limit):
                    continue  # the last id needs no forward (a forced last id is [SEG])
                attention_mask = torch.cat([attention_mask, torch.ones_like(attention_mask[:, :1])], dim=1)
                position_ids = (lengths + step)[:, None]  # [B,1]
                hidden, cache = self._llm(embed(token)[:, None], attention_mask, position_ids, cache)
                token = self._next_token(hidden[:, -1])
        ids = torch.stack(steps, dim=1).tolist()  # [B,steps]
        generated = []
        for row in ids:
            if self.forced_answer_length is None and eos in row:
                row = row[: row.index(eos) + 1]
            generated.append(row)
        return _Generation(ids=generated, cache=cache, prompt_mask=prompt_mask, lengths=lengths)

    def _seg_states_cached(self, generation: _Generation):
        """The [SEG] pass on top of the prompt's KV cache: all generated ids of the chips with a ``[SEG]`` are
        fed at once (teacher forcing), so a trailing ``[SEG]`` gets its state too. Same returns as
        :meth:`_seg_states`."""
        seg = self.config.seg_token_id
        with_seg = [b for b, ids in enumerate(generation.ids) if seg in ids]
        if not with_seg:
            return None, None, []
        with self._stage("seg_forward"):
            cache = generation.cache
            prompt_length = generation.prompt_mask.shape[1]
            fed = cache.get_seq_length() - prompt_length
            if fed:
                cache.crop(-fed)  # keep the prompt only (negative = tokens to remove)
            rows = torch.tensor(with_seg, device=self.device)
            cache.batch_select_indices(rows)
            width = max(len(generation.ids[b]) for b in with_seg)
            eos = self.config.eos_token_id
            ids = torch.tensor([generation.ids[b] + [eos] * (width - len(generation.ids[b])) for b in with_seg],
                               device=self.device)  # [B',K] (right-padded; padding is after every read position)
            mask = torch.cat([generation.prompt_mask[rows], torch.ones_like(ids)], dim=1)  # [B',L0+K]
            positions = generation.lengths[rows][:, None] + torch.arange(width, device=self.device)  # [B',K]
            hidden, _ = self._llm(self.model.model.embed_tokens(ids), mask, positions, cache)  # [B',K,D]
        hit = (ids == seg).nonzero()  # [N,2] (row, step), batch-major in answer order
        return hidden[hit[:, 0], hit[:, 1]], hit[:, 0], with_seg

    def _seg_states(self, full_ids: list[list[int]], starts: list[int], image_embeds: torch.Tensor):
        """One teacher-forced forward → ``[SEG]`` states ``[N,D]``, owner ``[N]`` (into ``with_seg``), ``with_seg``.

        Only ``[SEG]`` ids at text positions ``>= starts[b]`` (the answer) count; the instruction's input
        ``[SEG]`` (inside the prompt) does not.
        """
        seg, image_index = self.config.seg_token_id, self.config.image_token_index
        positions = [[t for t in range(start, len(ids)) if ids[t] == seg] for ids, start in zip(full_ids, starts)]
        with_seg = [b for b, p in enumerate(positions) if p]
        if not with_seg:
            return None, None, []
        with self._stage("seg_forward"):
            rows = [torch.tensor(full_ids[b], dtype=torch.long, device=self.device) for b in with_seg]
            inputs = self.model.build_inputs(rows, image_embeds[with_seg], padding_side="right")
            hidden, _ = self._llm(inputs.inputs_embeds, inputs.attention_mask, inputs.position_ids)  # [B',L,D]
        num_image = image_embeds.shape[1]
        batch_index, seq_index, owner = [], [], []
        for k, b in enumerate(with_seg):
            placeholder = full_ids[b].index(image_index)
            offset = int(inputs.image_start[k]) - placeholder  # 0 under right padding
            for t in positions[b]:
                # text position t → spliced position (the placeholder became num_image embeddings)
                spliced = t + offset + (num_image - 1 if t > placeholder else 0)
                batch_index.append(k)
                seq_index.append(spliced)
                owner.append(k)
        states = hidden[torch.tensor(batch_index, device=self.device), torch.tensor(seq_index, device=self.device)]
        return states, torch.tensor(owner, device=self.device), with_seg  # [N,D], [N], list

    def _mask_features(self, keys: list[str], prepared: list[PreparedImage], rows: list[int]) -> PixelFeatures:
        """Swin + pixel-decoder features of the chips ``rows`` (batch ``len(rows)``), from the cache where held."""
        found = {b: self.cache.get(keys[b], "mask") for b in rows}
        missing = [b for b in rows if found[b] is None]
        if missing:
            with self._stage("mask_features"):
                canvas = torch.stack([prepared[b].mask_image for b in missing]).to(self.device, self.dtype)  # [M,3,S,S]
                features = self.model.encode_mask_features(canvas)
            for k, b in enumerate(missing):
                one = features.select(torch.tensor([k], device=self.device))  # a gather: owns its memory
                found[b] = one
                if self.cache.enabled:
                    self.cache.put(keys[b], "mask", one)
        chosen = [found[b] for b in rows]
        return PixelFeatures(torch.cat([f.mask_features for f in chosen]),
                             [torch.cat([f.multi_scale[level] for f in chosen]) for level in range(len(chosen[0].multi_scale))])

    def _masks(self, seg_states, owner, with_seg: list[int], prepared: list[PreparedImage],
               keys: list[str]) -> dict[int, list[np.ndarray]]:
        """Mask branch for the chips with ``[SEG]``s → probabilities per chip (float32 ``(H,W)`` each)."""
        if not with_seg:
            return {}
        features = self._mask_features(keys, prepared, with_seg)
        with self._stage("mask_decoder"):
            predictions = self.model.decode_masks(seg_states, features, owner)
            logits = predictions.pred_masks.float()  # [N,1,S/4,S/4]
        out: dict[int, list[np.ndarray]] = {}
        owner_list = owner.tolist()
        for k, b in enumerate(with_seg):
            select = [n for n, o in enumerate(owner_list) if o == k]
            chip = crop_back(logits[select], prepared[b].resized_hw, prepared[b].original_hw, self.chip_size)
            out[b] = [m for m in torch.sigmoid(chip).cpu().numpy().astype(np.float32)]
        return out
