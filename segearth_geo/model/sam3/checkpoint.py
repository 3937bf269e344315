"""A SAM3 checkpoint folder in ``facebook/sam3``'s layout (see :mod:`~segearth_geo.model.sam3.configuration`):
transformers' ``Sam3Model`` and its CLIP tokenizer, checked so that a broken folder is one line, not a traceback.

* ``config.json`` ``model_type`` must be ``sam3_video`` (the hub checkpoint; its image detector is loaded) or
  ``sam3`` (a bare ``Sam3Model``);
* every detector weight must be present with its shape (tracker weights of the video checkpoint are ignored);
* the CLIP tokenizer files must be there and fit the text encoder's vocabulary.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

import torch

from segearth_geo.errors import CheckpointError
from segearth_geo.model.checkpoint_files import Pretrained, read_config_json
from segearth_geo.model.device import resolve_device
from segearth_geo.model.sam3.configuration import SAM3_MODEL_TYPES


def read_model_type(folder: Path) -> str:
    """``model_type`` of ``folder/config.json`` (``""`` when absent)."""
    return str(read_config_json(folder, "a SAM3 checkpoint folder").get("model_type", ""))


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


def _load_model(folder: Path, dtype: torch.dtype):
    """``Sam3Model`` of the folder in ``dtype``; every detector weight present with its shape."""
    from transformers import Sam3Model

    try:
        model, info = Sam3Model.from_pretrained(folder, dtype=dtype, output_loading_info=True)
    except Exception as exc:  # noqa: BLE001 - transformers and safetensors raise many types (SafetensorError)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"cannot load the SAM3 model from {folder}: {type(exc).__name__}: {first} (a damaged "
                              "or partly downloaded weights file? download the folder again)") from exc
    missing = sorted(str(k) for k in info.get("missing_keys") or ())
    mismatched = sorted(str(k[0] if isinstance(k, tuple) else k) for k in info.get("mismatched_keys") or ())
    if missing or mismatched:
        shown = ", ".join(missing[:5] + mismatched[:5])
        raise CheckpointError(f"{folder}: the SAM3 weights do not match its config.json "
                              f"({len(missing)} missing, {len(mismatched)} of the wrong shape: {shown})")
    return model


def _load_tokenizer(folder: Path, vocab_size: int):
    """The CLIP tokenizer of the folder; refused when its files are missing or it outgrows the text encoder."""
    from transformers import AutoTokenizer

    # Without its files AutoTokenizer would build an empty CLIP tokenizer: refuse that instead.
    if not ((folder / "tokenizer.json").is_file() or
            ((folder / "vocab.json").is_file() and (folder / "merges.txt").is_file())):
        raise CheckpointError(f"{folder}: SAM3's CLIP tokenizer is missing (tokenizer.json, or vocab.json and "
                              "merges.txt); download the whole checkpoint folder")
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{folder}: cannot load SAM3's CLIP tokenizer: {exc}") from exc
    if len(tokenizer) > vocab_size:
        raise CheckpointError(f"{folder}: the CLIP tokenizer has {len(tokenizer)} tokens but the text encoder only "
                              f"{vocab_size}; tokenizer and weights do not belong together")
    return tokenizer


def load_pretrained(directory: str | Path, device=None, dtype=None) -> Pretrained:
    """Load a SAM3 checkpoint folder (rules in the module docstring) on ``device`` in ``dtype`` (default CPU, fp32).

    Raises:
        CheckpointError: the folder is not a complete SAM3 checkpoint (config, weights, tokenizer).
    """
    folder = Path(directory).expanduser()
    if not folder.is_dir():
        raise CheckpointError(f"SAM3 checkpoint folder not found: {folder}")
    model_type = read_model_type(folder)
    if model_type not in SAM3_MODEL_TYPES:
        raise CheckpointError(f"{folder}: config.json has model_type {model_type!r}, not a SAM3 checkpoint "
                              f"(expected one of {', '.join(SAM3_MODEL_TYPES)})")
    dev, dt = resolve_device(device or "cpu", dtype or torch.float32)
    with _quiet_transformers():
        model = _load_model(folder, dt)
        tokenizer = _load_tokenizer(folder, int(model.config.text_config.vocab_size))
    return Pretrained(model=model.to(dev).eval(), tokenizer=tokenizer, path=folder)
