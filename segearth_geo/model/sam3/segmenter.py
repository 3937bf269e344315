"""SAM3 as a :class:`~segearth_geo.prediction.Segmenter`: chips + prompt in, one target per detected instance out.

An adapter over transformers' ``Sam3Model`` (``facebook/sam3``, "segment anything with concepts"). Per call:

1. the prompt is split into concepts (:func:`~segearth_geo.model.sam3.concepts.split_concepts`;
   ``"buildings, swimming pools"`` → two queries) and the C concepts go through the CLIP text encoder
   once (the features of the last few prompts are kept: the engine runs several prompts back to back per
   batch of chips);
2. per batch of B chips: padding to the S×S input (:mod:`~segearth_geo.model.sam3.preprocess`), ONE
   vision-encoder forward ``[B,3,S,S]`` over the chips whose features are not cached; then the B×C
   (chip, concept) pairs share the vision features and run the DETR encoder/decoder and mask decoder
   together, ``batch_size`` pairs per forward;
3. each query's detection score is ``sigmoid(logit) · sigmoid(presence)``, as in
   ``Sam3Processor.post_process_instance_segmentation``; a query is an instance when its score is
   ``> score_threshold`` (default 0.5, as in SAM3's examples; strictly greater, like SAM3's own
   post-processing). Each instance becomes one :class:`~segearth_geo.prediction.Target`: label = its
   concept, probability = the sigmoid of its mask on the chip's pixels (the engine's ``threshold`` then
   keeps pixels with probability ``>= threshold``), score = its detection score.

Two thresholds, then, as SAM3 users know them: the engine's ``threshold`` (``--threshold``) acts on mask
probabilities; ``score_threshold`` (constructor / :func:`load_sam3_segmenter` argument, or the attribute)
decides which detections count. Results do not depend on batch composition or order (up to float noise).
The engine merges the targets of one label per pixel before it vectorises, so instances of one concept
that overlap or touch come out as one polygon; separate instances stay separate, across chip borders too.

Per-chip image state (:mod:`~segearth_geo.model.image_cache`): the vision backbone's FPN features depend
on the chip's pixels only, so they are kept per chip (tier ``"vision"``, keyed by the chip's content and the
preprocessing) and a second prompt — other concepts — on the same chip skips the vision encoder: the cached
features go to ``Sam3Model`` as ``vision_embeds``. The FPN position encodings depend only on the feature
shapes (a sine table), so one copy per segmenter serves every chip.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections import OrderedDict
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from segearth_geo.errors import CheckpointError, UsageError
from segearth_geo.model.batching import in_batches
from segearth_geo.model.device import describe_device, resolve_device
from segearth_geo.model.image_cache import ImageCache, chip_key, default_cache_bytes
from segearth_geo.model.sam3.concepts import split_concepts
from segearth_geo.model.sam3.configuration import DEFAULT_SCORE_THRESHOLD, SAM3_MODEL_TYPES, Sam3Preprocessing
from segearth_geo.model.sam3.preprocess import chip_probabilities, prepare_chips
from segearth_geo.prediction import ChipPrediction, Target

log = logging.getLogger(__name__)

TEXT_PROMPTS_KEPT = 8  # prompts whose CLIP features are kept (a few KB each)


class Sam3Segmenter:
    """The segmenter for SAM3 (``chip_size`` = the model's square input side, 1008 for ``facebook/sam3``).

    Args:
        model: a transformers ``Sam3Model`` (moved to ``device``/``dtype`` and put in eval mode here).
        tokenizer: its CLIP tokenizer (called on the concepts; user text stays plain text: special-token
            strings typed by the user are not turned into control tokens).
        preprocessing: input size and normalisation (:class:`Sam3Preprocessing`); its ``size`` must equal
            the vision encoder's ``image_size`` (default: that size with SAM3's normalisation).
        device, dtype: see :func:`~segearth_geo.model.device.resolve_device` (bf16 on CUDA, fp32 on CPU).
        batch_size: chips per vision forward and (chip, concept) pairs per detector forward (default 8 on
            CUDA, 1 on CPU; halved automatically on CUDA out-of-memory).
        score_threshold: detection score in ``[0, 1)`` an instance must exceed to be returned.
        cache_mb: bound of the per-chip vision-feature cache in MiB (``None``: a default that fits the device,
            ``0``: no cache); see the module docstring.
    """

    def __init__(self, model, tokenizer, preprocessing: Sam3Preprocessing | None = None, device="auto", dtype=None,
                 batch_size: int | None = None, score_threshold: float = DEFAULT_SCORE_THRESHOLD,
                 cache_mb: float | None = None) -> None:
        self.device, self.dtype = resolve_device(device, dtype)
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self.tokenizer = tokenizer
        self.config = model.config
        image_size = int(self.config.vision_config.image_size)
        self.preprocessing = preprocessing or Sam3Preprocessing(size=image_size)
        if self.preprocessing.size != image_size:
            raise CheckpointError(f"the SAM3 processor's input size {self.preprocessing.size} differs from the "
                                  f"model's image_size {image_size}")
        self.chip_size = image_size
        self.batch_size = int(batch_size or (8 if self.device.type == "cuda" else 1))
        if self.batch_size < 1:
            raise UsageError(f"batch_size must be >= 1, got {batch_size!r}")
        self.score_threshold = score_threshold
        self.max_text_length = int(self.config.text_config.max_position_embeddings)
        self._text_cache: tuple[tuple[str, ...], torch.Tensor, torch.Tensor] | None = None  # the last used
        self._texts: OrderedDict[tuple[str, ...], tuple[tuple[str, ...], torch.Tensor, torch.Tensor]] = OrderedDict()
        if cache_mb is not None and cache_mb < 0:
            raise UsageError(f"cache_mb must be >= 0 MiB (0: no cache), got {cache_mb}")
        self.cache = ImageCache(default_cache_bytes(self.device) if cache_mb is None else int(cache_mb * 2**20))
        prep = self.preprocessing
        self._cache_salt = (f"sam3|{prep.size}|{prep.image_mean}|{prep.image_std}|{prep.rescale_factor}|"
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
    def device_description(self) -> str:
        return describe_device(self.device, self.dtype)

    def cache_stats(self) -> dict:
        """Hits, misses, bytes and items of the vision-feature cache (logged by the engine after a run)."""
        return self.cache.stats().to_dict()

    # ------------------------------------------------------------------------------------------ public API
    def segment(self, chips: Sequence[np.ndarray], prompt: str) -> list[ChipPrediction]:
        """The Segmenter protocol: one prediction per chip; one target per instance of each concept.

        Targets of a chip are ordered by concept (prompt order), then by descending score.
        """
        concepts = split_concepts(prompt)
        chips = list(chips)
        for chip in chips:
            shape = np.shape(chip)
            if len(shape) != 3 or shape[2] != 3 or max(shape[:2]) > self.chip_size:
                raise UsageError(f"chip of shape {shape} is not RGB (h, w, 3) within chip_size {self.chip_size}")
        if not chips:
            return []
        targets: list[list[Target]] = in_batches(
            self, len(chips), lambda start, stop: self._segment_batch(chips[start:stop], concepts))
        return [ChipPrediction(answer=self._answer(found, concepts), targets=found) for found in targets]

    def _answer(self, targets: list[Target], concepts: list[str]) -> str:
        counts = ", ".join(f"{c}: {sum(t.label == c for t in targets)}" for c in concepts)
        return f"{counts} (SAM3 instances with score > {self.score_threshold:g}; SAM3 gives no text answer)"

    # ------------------------------------------------------------------------------------------ stages
    def _text_features(self, concepts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Concepts → CLIP features ``[C,L,D]`` (projected to the detector width) and their mask ``[C,L]``."""
        key = tuple(concepts)
        held = self._texts.get(key)
        if held is not None:
            self._texts.move_to_end(key)
            self._text_cache = held
            return held[1], held[2]
        encoded = self.tokenizer(concepts, padding="max_length", max_length=self.max_text_length, truncation=True,
                                 split_special_tokens=True, return_tensors="pt")
        input_ids = encoded["input_ids"].to(self.device)  # [C,L]
        attention_mask = encoded["attention_mask"].to(self.device)  # [C,L]
        with torch.inference_mode():
            features = self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        self._text_cache = self._texts[key] = (key, features, attention_mask)
        while len(self._texts) > TEXT_PROMPTS_KEPT:
            self._texts.popitem(last=False)
        return features, attention_mask

    @torch.inference_mode()
    def _segment_batch(self, chips: list[np.ndarray], concepts: list[str]) -> list[list[Target]]:
        from transformers.modeling_outputs import BaseModelOutputWithPooling
        from transformers.models.sam3.modeling_sam3 import Sam3VisionEncoderOutput

        text, text_mask = self._text_features(concepts)  # [C,L,D], [C,L]
        fpn, sizes = self._vision_features(chips)  # per level [B,D,H_l,W_l]
        position = self._position_encoding
        vision = Sam3VisionEncoderOutput(fpn_hidden_states=fpn,
                                         fpn_position_encoding=tuple(p.expand(len(chips), *p.shape[1:])
                                                                     for p in position))
        num_concepts = len(concepts)
        pairs = [(b, c) for b in range(len(chips)) for c in range(num_concepts)]  # chip-major
        found: list[list[Target]] = [[] for _ in chips]
        for first in range(0, len(pairs), self.batch_size):
            chunk = pairs[first:first + self.batch_size]
            chip_index = torch.tensor([b for b, _ in chunk], device=self.device)  # [P]
            concept_index = torch.tensor([c for _, c in chunk], device=self.device)  # [P]
            pair_vision = Sam3VisionEncoderOutput(
                fpn_hidden_states=tuple(f[chip_index] for f in vision.fpn_hidden_states),  # each [P,D,H_l,W_l]
                fpn_position_encoding=tuple(p[chip_index] for p in vision.fpn_position_encoding),
            )
            outputs = self.model(vision_embeds=pair_vision,
                                 text_embeds=BaseModelOutputWithPooling(pooler_output=text[concept_index]),
                                 attention_mask=text_mask[concept_index])
            scores = outputs.pred_logits.float().sigmoid()  # [P,Q]
            if outputs.presence_logits is not None:
                scores = scores * outputs.presence_logits.float().sigmoid()  # [P,1] broadcast
            keep = scores > self.score_threshold  # [P,Q]
            for p, (b, c) in enumerate(chunk):
                queries = keep[p].nonzero()[:, 0]
                if queries.numel() == 0:
                    continue
                order = queries[scores[p, queries].argsort(descending=True)]  # [k]
                masks = chip_probabilities(outputs.pred_masks[p, order], sizes[b], self.chip_size)  # (k,h,w)
                for mask, score in zip(masks, scores[p, order].tolist()):
                    found[b].append(Target(label=concepts[c], probability=mask, score=score))
        return found

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
            if self._position_encoding is None:
                self._position_encoding = tuple(p[:1].clone() for p in vision.fpn_position_encoding)
            for k, b in enumerate(missing):
                one = torch.tensor([k], device=self.device)  # a gather: each chip's state owns its memory
                found[b] = tuple(f[one] for f in vision.fpn_hidden_states)  # per level [1,D,H_l,W_l]
                if self.cache.enabled:
                    self.cache.put(keys[b], "vision", found[b])
        return tuple(torch.cat([f[level] for f in found]) for level in range(len(found[0]))), sizes


# ---------------------------------------------------------------------------------------------- loading
def read_model_type(folder: Path) -> str:
    """``model_type`` of ``folder/config.json`` (``""`` when absent)."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CheckpointError(f"{folder} has no config.json; it is not a SAM3 checkpoint folder") from exc
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {folder / 'config.json'}: {exc}") from exc
    return str(config.get("model_type", "")) if isinstance(config, dict) else ""


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No "Loading weights" progress bar and no load report from transformers while loading (both restored
    afterwards): what is wrong with a checkpoint is reported by our own one-line errors instead."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if enabled:
            hf_logging.enable_progress_bar()


def load_sam3_segmenter(path: str | Path, device="auto", dtype=None, batch_size: int | None = None,
                        score_threshold: float = DEFAULT_SCORE_THRESHOLD,
                        cache_mb: float | None = None) -> Sam3Segmenter:
    """Load a SAM3 checkpoint folder (``facebook/sam3``'s layout, see
    :mod:`~segearth_geo.model.sam3.configuration`) as a :class:`Sam3Segmenter`.

    Args:
        path: the folder (a hub id is resolved to a folder by the model registry first).
        device, dtype: ``"auto"`` → CUDA with bf16 when available, else CPU with fp32.
        batch_size: see :class:`Sam3Segmenter`.
        score_threshold: detection-score threshold (default 0.5).
        cache_mb: bound of the per-chip vision-feature cache in MiB (``None``: fits the device, ``0``: off).

    Raises:
        CheckpointError: the folder is not a complete SAM3 checkpoint (config, weights, tokenizer).
    """
    from transformers import AutoTokenizer, Sam3Model

    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise CheckpointError(f"SAM3 checkpoint folder not found: {folder}")
    model_type = read_model_type(folder)
    if model_type not in SAM3_MODEL_TYPES:
        raise CheckpointError(f"{folder}: config.json has model_type {model_type!r}, not a SAM3 checkpoint "
                              f"(expected one of {', '.join(SAM3_MODEL_TYPES)})")
    dev, dt = resolve_device(device, dtype)
    preprocessing = Sam3Preprocessing.from_folder(folder)
    with _quiet_transformers():
        try:
            model, info = Sam3Model.from_pretrained(folder, dtype=dt, output_loading_info=True)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise CheckpointError(f"cannot load the SAM3 model from {folder}: {exc}") from exc
        missing = sorted(str(k) for k in info.get("missing_keys") or ())
        mismatched = sorted(str(k[0] if isinstance(k, tuple) else k) for k in info.get("mismatched_keys") or ())
        if missing or mismatched:
            shown = ", ".join(missing[:5] + mismatched[:5])
            raise CheckpointError(f"{folder}: the SAM3 weights do not match its config.json "
                                  f"({len(missing)} missing, {len(mismatched)} of the wrong shape: {shown})")
        # Without its files AutoTokenizer would build an empty CLIP tokenizer: refuse that instead.
        if not ((folder / "tokenizer.json").is_file() or
                ((folder / "vocab.json").is_file() and (folder / "merges.txt").is_file())):
            raise CheckpointError(f"{folder}: SAM3's CLIP tokenizer is missing (tokenizer.json, or vocab.json and "
                                  "merges.txt); download the whole checkpoint folder")
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{folder}: cannot load SAM3's CLIP tokenizer: {exc}") from exc
    vocab_size = int(model.config.text_config.vocab_size)
    if len(tokenizer) > vocab_size:
        raise CheckpointError(f"{folder}: the CLIP tokenizer has {len(tokenizer)} tokens but the text encoder only "
                              f"{vocab_size}; tokenizer and weights do not belong together")
    segmenter = Sam3Segmenter(model, tokenizer, preprocessing, device=dev, dtype=dt, batch_size=batch_size,
                              score_threshold=score_threshold, cache_mb=cache_mb)
    log.info("SAM3 from %s on %s, chip size %d, batch size %d, score threshold %g", folder,
             segmenter.device_description, segmenter.chip_size, segmenter.batch_size, segmenter.score_threshold)
    return segmenter
