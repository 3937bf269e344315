"""SAM3 as a :class:`~segearth_geo.prediction.Segmenter`: chips + prompt in, one target per detected instance out.

An adapter over transformers' ``Sam3Model`` (``facebook/sam3``, "segment anything with concepts"). Per call:

1. the prompt is split into concepts and their names (:func:`~segearth_geo.model.sam3.prompt.concept_queries`;
   ``"buildings, swimming pools"`` → two concepts, ``"building|roof|house"`` → one concept queried by three
   names) and the Q names go through the CLIP text encoder once (features are kept per name, and per prompt:
   the engine runs several prompts back to back per batch of chips);
2. per batch of B chips: padding to the S×S input (:mod:`~segearth_geo.model.sam3.preprocess`), ONE
   vision-encoder forward ``[B,3,S,S]`` over the chips whose features are not cached; then the B×C
   (chip, name) pairs share the vision features and run the DETR encoder/decoder and mask decoder
   together, ``batch_size`` pairs per forward;
3. **presence gate**: SAM3's presence head says how likely the concept is on the chip at all; a pair whose
   presence probability is below ``presence_threshold`` returns nothing (SegEarth-OV3 gates the same way: most
   remote-sensing chips show few of the concepts asked for). Unset (``None``), the semantic map is gated at
   :data:`~segearth_geo.model.sam3.configuration.DEFAULT_PRESENCE_THRESHOLD` (0.5) and instances by their
   score alone, which already multiplies presence in (so a score above 0.5 needs a presence above 0.5); set,
   it gates both (0 turns it off);
4. ``output`` decides what a present pair returns (SegEarth-OV3's choice for "stuff" classes):

   * ``instances`` (default): each query whose detection score ``sigmoid(logit) · sigmoid(presence)`` (as in
     ``Sam3Processor.post_process_instance_segmentation``) is ``> score_threshold`` (default 0.5, strictly
     greater like SAM3's own post-processing) becomes one :class:`~segearth_geo.prediction.Target`:
     label = its concept, probability = the sigmoid of its mask on the chip's pixels, score = its detection
     score;
   * ``semantic``: one target per pair from SAM3's semantic segmentation head (``semantic_seg``: one map for
     the concept over the whole chip, for water, roads, forest, fields), score = the presence probability;
   * ``both``: the instance targets and the semantic one; the engine merges targets of one label by per-pixel
     maximum, i.e. instance masks and the semantic map are fused by maximum, as SegEarth-OV3 does.

   Every name of a concept gives its targets the concept's label, so synonyms are combined by maximum too.
   The engine's ``threshold`` then keeps pixels with probability ``>= threshold``.

Two thresholds, then, as SAM3 users know them: the engine's ``threshold`` (``--threshold``) acts on mask
probabilities; ``score_threshold`` (constructor or ``from_pretrained`` argument, ``--score-threshold``, or
the attribute) decides which detections count; ``presence_threshold`` which chips show the concept at all.
Results do not depend on batch composition or order (up to float noise).
The engine merges the targets of one label per pixel before it vectorises, so instances of one concept
that overlap or touch come out as one polygon; separate instances stay separate, across chip borders too.

Per-chip image state (:mod:`~segearth_geo.model.image_cache`): the vision backbone's FPN features depend
on the chip's pixels only, so they are kept per chip (tier ``"vision"``, keyed by the chip's content and the
preprocessing) and a second prompt — other concepts — on the same chip skips the vision encoder: the cached
features go to ``Sam3Model`` as ``vision_embeds``. The FPN position encodings depend only on the feature
shapes (a sine table), so one copy per segmenter serves every chip.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Sequence

import numpy as np
import torch

from segearth_geo.errors import CheckpointError, UsageError
from segearth_geo.model.base import SegmenterBase
from segearth_geo.model.image_cache import chip_key
from segearth_geo.model.sam3.configuration import (
    DEFAULT_OUTPUT,
    DEFAULT_PRESENCE_THRESHOLD,
    DEFAULT_SCORE_THRESHOLD,
    Sam3Preprocessing,
)
from segearth_geo.model.sam3.preprocess import chip_probabilities, prepare_chips
from segearth_geo.model.sam3.prompt import concept_queries
from segearth_geo.params import SAM3_OUTPUTS
from segearth_geo.prediction import ChipPrediction, Target

log = logging.getLogger(__name__)

TEXT_PROMPTS_KEPT = 8  # prompts whose assembled CLIP features are kept (a few KB each)
TEXT_NAMES_KEPT = 64  # concept names (synonyms) whose CLIP features are kept


class Sam3Segmenter(SegmenterBase):
    """The segmenter for SAM3 (``chip_size`` = the model's square input side, 1008 for ``facebook/sam3``).

    Args:
        model: a transformers ``Sam3Model`` (moved to ``device``/``dtype`` and put in eval mode here).
        tokenizer: its CLIP tokenizer (called on the concepts; user text stays plain text: special-token
            strings typed by the user are not turned into control tokens).
        preprocessing: input size and normalisation (:class:`Sam3Preprocessing`); its ``size`` must equal
            the vision encoder's ``image_size`` (default: that size with SAM3's normalisation).
        device, dtype, cache_mb: see :class:`~segearth_geo.model.base.SegmenterBase`; the cache holds the
            per-chip vision features (see the module docstring).
        batch_size: chips per vision forward and (chip, concept) pairs per detector forward (default 8 on
            CUDA, 1 elsewhere; halved automatically on CUDA out-of-memory).
        score_threshold: detection score in ``[0, 1)`` an instance must exceed to be returned.
        presence_threshold: presence probability in ``[0, 1)`` a concept needs on a chip to return anything there
            (``None``: 0.5 for the semantic map, no separate gate for instances; see the module docstring).
        output: ``instances``, ``semantic`` or ``both`` (module docstring).
    """

    name = "sam3"
    capabilities = frozenset({"image_cache", "scores"})
    cuda_batch_size, cpu_batch_size = 8, 1
    cache_tiers = ("vision",)

    def __init__(self, model, tokenizer, preprocessing: Sam3Preprocessing | None = None, device="auto", dtype=None,
                 batch_size: int | None = None, score_threshold: float = DEFAULT_SCORE_THRESHOLD,
                 cache_mb: float | None = None, presence_threshold: float | None = None,
                 output: str = DEFAULT_OUTPUT) -> None:
        image_size = int(model.config.vision_config.image_size)
        self.preprocessing = preprocessing or Sam3Preprocessing(size=image_size)
        if self.preprocessing.size != image_size:
            raise CheckpointError(f"the SAM3 processor's input size {self.preprocessing.size} differs from the "
                                  f"model's image_size {image_size}")
        self.score_threshold = score_threshold
        self.presence_threshold = presence_threshold
        self.output = output
        super().__init__(model, chip_size=image_size, device=device, dtype=dtype, batch_size=batch_size,
                         cache_mb=cache_mb)
        self.tokenizer = tokenizer
        self.max_text_length = int(self.config.text_config.max_position_embeddings)
        self._text_cache: tuple[tuple[str, ...], torch.Tensor, torch.Tensor] | None = None  # the last used
        self._texts: OrderedDict[tuple[str, ...], tuple[tuple[str, ...], torch.Tensor, torch.Tensor]] = OrderedDict()
        self._names: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()  # per name [L,D], [L]
        prep = self.preprocessing
        self._cache_salt = (f"{self.name}|{prep.size}|{prep.image_mean}|{prep.image_std}|{prep.rescale_factor}|"
                            f"{self.dtype}")
        self._position_encoding: tuple[torch.Tensor, ...] | None = None  # per FPN level [1,D,H_l,W_l]

    @property
    def score_threshold(self) -> float:
        return self._score_threshold

    @score_threshold.setter
    def score_threshold(self, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) < 1.0:
            raise UsageError(f"the SAM3 score threshold must be a number in [0, 1), got {value!r}")
        self._score_threshold = float(value)

    @property
    def presence_threshold(self) -> float | None:
        return self._presence_threshold

    @presence_threshold.setter
    def presence_threshold(self, value: float | None) -> None:
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not 0.0 <= float(value) < 1.0):
            raise UsageError(f"the SAM3 presence threshold must be a number in [0, 1), got {value!r}")
        self._presence_threshold = None if value is None else float(value)

    def _gates(self) -> tuple[float, float]:
        """The presence a (chip, name) pair needs for its instances and for its semantic map."""
        if self._presence_threshold is None:
            return 0.0, DEFAULT_PRESENCE_THRESHOLD
        return self._presence_threshold, self._presence_threshold

    @property
    def output(self) -> str:
        return self._output

    @output.setter
    def output(self, value: str) -> None:
        if value not in SAM3_OUTPUTS:
            raise UsageError(f"the SAM3 output must be one of {', '.join(SAM3_OUTPUTS)}, got {value!r}")
        self._output = value

    # ------------------------------------------------------------------------------------------ public API
    def segment(self, chips: Sequence[np.ndarray], prompt: str) -> list[ChipPrediction]:
        """The Segmenter protocol: one prediction per chip; per concept, its instances and/or its semantic map.

        Targets of a chip are ordered by concept (prompt order), then by descending score.
        """
        concepts = concept_queries(prompt)
        chips = list(chips)
        self.check_chips(chips)
        if not chips:
            return []
        found: list[tuple[list[Target], list[int]]] = self.in_batches(
            len(chips), lambda start, stop: self._segment_batch(chips[start:stop], concepts))
        return [ChipPrediction(answer=self._answer(counts, concepts), targets=targets) for targets, counts in found]

    def _answer(self, counts: list[int], concepts: list[tuple[str, ...]]) -> str:
        """The chip's answer in words: per concept, its instances, or (semantic) whether it is present.
        ``counts``: per concept, instances found (``-1``: absent by the presence gate on every name)."""
        labels = [names[0] for names in concepts]
        if self.output == "semantic":
            shown = ", ".join(f"{c}: {'absent' if n < 0 else 'present'}" for c, n in zip(labels, counts))
            return f"{shown} (SAM3 semantic maps, presence >= {self._gates()[1]:g}; SAM3 gives no text answer)"
        shown = ", ".join(f"{c}: {max(n, 0)}" for c, n in zip(labels, counts))
        semantic = "; with semantic maps where present" if self.output == "both" else ""
        return f"{shown} (SAM3 instances with score > {self.score_threshold:g}{semantic}; SAM3 gives no text answer)"

    # ------------------------------------------------------------------------------------------ stages
    def _text_features(self, names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Concept names → CLIP features ``[Q,L,D]`` (projected to the detector width) and their mask ``[Q,L]``.

        Kept per prompt (the same tensors come back for the same names) and per name (a name shared by two
        prompts is encoded once); the names not held go through the text encoder in one call.
        """
        key = tuple(names)
        held = self._texts.get(key)
        if held is not None:
            self._texts.move_to_end(key)
            self._text_cache = held
            return held[1], held[2]
        missing = list(dict.fromkeys(n for n in names if n not in self._names))
        if missing:
            encoded = self.tokenizer(missing, padding="max_length", max_length=self.max_text_length, truncation=True,
                                     split_special_tokens=True, return_tensors="pt")
            input_ids = encoded["input_ids"].to(self.device)  # [M,L]
            attention_mask = encoded["attention_mask"].to(self.device)  # [M,L]
            with torch.inference_mode():
                features = self.model.get_text_features(input_ids=input_ids,
                                                        attention_mask=attention_mask).pooler_output  # [M,L,D]
            for m, name in enumerate(missing):
                self._names[name] = (features[m], attention_mask[m])
        for name in names:
            self._names.move_to_end(name)
        features = torch.stack([self._names[n][0] for n in names])  # [Q,L,D]
        attention_mask = torch.stack([self._names[n][1] for n in names])  # [Q,L]
        while len(self._names) > max(TEXT_NAMES_KEPT, len(names)):
            self._names.popitem(last=False)
        self._text_cache = self._texts[key] = (key, features, attention_mask)
        while len(self._texts) > TEXT_PROMPTS_KEPT:
            self._texts.popitem(last=False)
        return features, attention_mask

    @torch.inference_mode()
    def _segment_batch(self, chips: list[np.ndarray],
                       concepts: list[tuple[str, ...]]) -> list[tuple[list[Target], list[int]]]:
        """Per chip: its targets and, per concept, the instances found (``-1``: absent on every name)."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling
        from transformers.models.sam3.modeling_sam3 import Sam3VisionEncoderOutput

        queries = [(c, name) for c, names in enumerate(concepts) for name in names]  # Q (concept, name)
        text, text_mask = self._text_features([name for _, name in queries])  # [Q,L,D], [Q,L]
        fpn, sizes = self._vision_features(chips)  # per level [B,D,H_l,W_l]
        position = tuple(p.expand(len(chips), *p.shape[1:]) for p in self._position_encoding)
        pairs = [(b, q) for b in range(len(chips)) for q in range(len(queries))]  # chip-major
        found: list[list[tuple[int, float, Target]]] = [[] for _ in chips]
        counts = [[-1] * len(concepts) for _ in chips]
        instance_gate, semantic_gate = self._gates()
        for first in range(0, len(pairs), self.batch_size):
            chunk = pairs[first:first + self.batch_size]
            chip_index = torch.tensor([b for b, _ in chunk], device=self.device)  # [P]
            query_index = torch.tensor([q for _, q in chunk], device=self.device)  # [P]
            pair_vision = Sam3VisionEncoderOutput(
                fpn_hidden_states=tuple(f[chip_index] for f in fpn),  # each [P,D,H_l,W_l]
                fpn_position_encoding=tuple(p[chip_index] for p in position),
            )
            outputs = self.model(vision_embeds=pair_vision,
                                 text_embeds=BaseModelOutputWithPooling(pooler_output=text[query_index]),
                                 attention_mask=text_mask[query_index])
            presence = (outputs.presence_logits.float().sigmoid() if outputs.presence_logits is not None else
                        torch.ones(len(chunk), 1, device=self.device))  # [P,1]
            scores = outputs.pred_logits.float().sigmoid() * presence  # [P,Q']
            for p, (b, q) in enumerate(chunk):
                present = float(presence[p, 0])
                concept = queries[q][0]
                label = concepts[concept][0]
                if self.output != "semantic" and present >= instance_gate:  # the presence gate (instances)
                    counts[b][concept] = max(counts[b][concept], 0)
                    for target in self._instances(outputs.pred_masks[p], scores[p], sizes[b], label):
                        found[b].append((concept, target.score, target))
                        counts[b][concept] += 1
                if self.output != "instances" and present >= semantic_gate:  # the presence gate (semantic map)
                    counts[b][concept] = max(counts[b][concept], 0)
                    semantic = chip_probabilities(outputs.semantic_seg[p], sizes[b], self.chip_size)[0]  # (h, w)
                    found[b].append((concept, float(presence[p, 0]),
                                     Target(label=label, probability=semantic, score=float(presence[p, 0]))))
        # per chip: concepts in prompt order, then by descending score (stable: ties keep query order)
        return [([t for _, _, t in sorted(items, key=lambda it: (it[0], -it[1]))], n) for items, n in zip(found, counts)]

    def _instances(self, masks: torch.Tensor, scores: torch.Tensor, size: tuple[int, int], label: str) -> list[Target]:
        """The instances of one (chip, name) pair: queries scoring ``> score_threshold``, best first.

        ``masks`` ``[Q',m,m]`` mask logits, ``scores`` ``[Q']`` detection scores."""
        queries = (scores > self.score_threshold).nonzero()[:, 0]
        if queries.numel() == 0:
            return []
        order = queries[scores[queries].argsort(descending=True)]  # [k]
        probabilities = chip_probabilities(masks[order], size, self.chip_size)  # (k,h,w)
        return [Target(label=label, probability=m, score=s) for m, s in zip(probabilities, scores[order].tolist())]

    def _vision_features(self, chips: list[np.ndarray]) -> tuple[tuple[torch.Tensor, ...], list[tuple[int, int]]]:
        """FPN features per level ``[B,D,H_l,W_l]`` and each chip's ``(h, w)``: from the cache where held, the
        others from ONE vision-encoder forward over the chips that miss."""
        keys = [chip_key(np.ascontiguousarray(chip), self._cache_salt) for chip in chips]
        found = [self.cache.get(key, "vision") for key in keys]
        missing = [b for b, f in enumerate(found) if f is None]
        sizes = [tuple(np.shape(chip)[:2]) for chip in chips]
        if missing:
            pixels, _ = prepare_chips([chips[b] for b in missing], self.preprocessing, self.device,
                                      self.dtype)  # [M,3,S,S]
            vision = self.model.get_vision_features(pixel_values=pixels)
            if self._position_encoding is None:  # a sine table of the feature shapes only
                self._position_encoding = tuple(p[:1].clone() for p in vision.fpn_position_encoding)
            for k, b in enumerate(missing):
                one = torch.tensor([k], device=self.device)  # a gather: each chip's state owns its memory
                found[b] = tuple(f[one] for f in vision.fpn_hidden_states)  # per level [1,D,H_l,W_l]
                if self.cache.enabled:
                    self.cache.put(keys[b], "vision", found[b])
        return tuple(torch.cat([f[level] for f in found]) for level in range(len(found[0]))), sizes
