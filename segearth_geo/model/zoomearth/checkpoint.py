"""A ZoomEarth checkpoint folder (``HappyBug/ZoomEarth-3B``'s layout): transformers' own Qwen2.5-VL classes.

The folder holds what ``Qwen2_5_VLForConditionalGeneration.save_pretrained`` and ``Qwen2_5_VLProcessor``
write (spec §1): ``config.json`` (``model_type`` ``qwen2_5_vl``; flat 4.49-style or nested ``text_config``: both
load), ``model.safetensors`` or shards with an index (legacy ``visual.*`` / ``model.*`` keys are renamed by
transformers on load), the Qwen tokenizer (``tokenizer.json`` or ``vocab.json`` + ``merges.txt``) and
``preprocessor_config.json``. Loaded here:

* the model, every weight present with its shape (one-line :class:`~segearth_geo.errors.CheckpointError`
  otherwise), in the device's dtype (bf16 on CUDA, fp32 on CPU: fp16 overflows on Qwen2.5-VL, spec §4.6);
* the tokenizer, which must hold the vision tokens at the ids ``config.json`` names;
* the image processor: transformers' PIL-backend Qwen2-VL processor (the numerics of the 2025 processor the
  official script used) with the official ``min_pixels`` / ``max_pixels``, whatever class name the file gives
  (early copies say ``Qwen2_5_VLImageProcessor``, spec §4.10).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from segearth_geo.errors import CheckpointError
from segearth_geo.model.checkpoint_files import from_pretrained, quiet_transformers, read_config_json
from segearth_geo.model.zoomearth.configuration import IMAGE_PAD, MAX_PIXELS, MIN_PIXELS, MODEL_TYPES


@dataclass
class ZoomEarthParts:
    """A loaded ZoomEarth checkpoint: the model (eval mode), tokenizer, image processor and ids."""

    model: Any
    tokenizer: Any
    image_processor: Any
    path: Path
    image_token_id: int
    merge_size: int


def _tokenizer(folder: Path, image_token_id: int, vocab_size: int):
    from transformers import AutoTokenizer

    if not ((folder / "tokenizer.json").is_file() or
            ((folder / "vocab.json").is_file() and (folder / "merges.txt").is_file())):
        raise CheckpointError(f"{folder}: the Qwen tokenizer is missing (tokenizer.json, or vocab.json and merges.txt); "
                              "download the whole checkpoint folder")
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, padding_side="left")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{folder}: cannot load the Qwen tokenizer: {exc}") from exc
    found = tokenizer.convert_tokens_to_ids(IMAGE_PAD)
    if found != image_token_id or len(tokenizer) > vocab_size:
        raise CheckpointError(f"{folder}: the tokenizer does not belong to the weights ({IMAGE_PAD} is id {found}, "
                              f"config.json says {image_token_id}; {len(tokenizer)} tokens for {vocab_size} embeddings)")
    return tokenizer


def _image_processor(folder: Path):
    from transformers import Qwen2VLImageProcessorPil

    if not (folder / "preprocessor_config.json").is_file():
        raise CheckpointError(f"{folder}: preprocessor_config.json is missing; download the whole checkpoint folder")
    try:
        return Qwen2VLImageProcessorPil.from_pretrained(folder, min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{folder}: cannot read its image processor: {exc}") from exc


def load_pretrained(directory: str | Path, device: torch.device, dtype: torch.dtype) -> ZoomEarthParts:
    """Load a ZoomEarth checkpoint folder (rules in the module docstring) on ``device`` in ``dtype``."""
    folder = Path(directory).expanduser()
    config = read_config_json(folder, "a ZoomEarth checkpoint folder")
    if config.get("model_type") not in MODEL_TYPES:
        raise CheckpointError(f"{folder}: config.json has model_type {config.get('model_type')!r}, not a ZoomEarth "
                              f"(Qwen2.5-VL) checkpoint (expected {', '.join(MODEL_TYPES)})")
    from transformers import Qwen2_5_VLForConditionalGeneration

    with quiet_transformers():  # lm_head may be tied to the embeddings (not stored)
        model = from_pretrained(Qwen2_5_VLForConditionalGeneration, folder, dtype, "ZoomEarth (Qwen2.5-VL)",
                                optional=lambda key: key.startswith("lm_head"))
        image_token_id = int(model.config.image_token_id)
        vocab = int(model.config.get_text_config().vocab_size)
        tokenizer = _tokenizer(folder, image_token_id, vocab)
        processor = _image_processor(folder)
    merge = int(model.config.vision_config.spatial_merge_size)
    if int(getattr(processor, "merge_size", merge)) != merge:
        raise CheckpointError(f"{folder}: preprocessor_config.json merge_size {processor.merge_size} differs from the "
                              f"model's spatial_merge_size {merge}")
    return ZoomEarthParts(model.to(device).eval(), tokenizer, processor, folder, image_token_id, merge)


__all__ = ["ZoomEarthParts", "load_pretrained"]
