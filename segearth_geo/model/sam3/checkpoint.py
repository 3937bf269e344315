"""A SAM3 checkpoint folder in ``facebook/sam3``'s layout (see :mod:`~segearth_geo.model.sam3.configuration`):
transformers' ``Sam3Model`` and its CLIP tokenizer, checked so that a broken folder is one line, not a traceback.

* ``config.json`` ``model_type`` must be ``sam3_video`` (the hub checkpoint; its image detector is loaded) or
  ``sam3`` (a bare ``Sam3Model``);
* every detector weight must be present with its shape (tracker weights of the video checkpoint are ignored);
* the CLIP tokenizer files must be there and fit the text encoder's vocabulary.
"""

from __future__ import annotations

from pathlib import Path

import torch

from segearth_geo.errors import CheckpointError
from segearth_geo.model.checkpoint_files import Pretrained, from_pretrained, quiet_transformers, read_config_json
from segearth_geo.model.device import resolve_device
from segearth_geo.model.sam3.configuration import SAM3_MODEL_TYPES


def read_model_type(folder: Path) -> str:
    """``model_type`` of ``folder/config.json`` (``""`` when absent)."""
    return str(read_config_json(folder, "a SAM3 checkpoint folder").get("model_type", ""))


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
    from transformers import Sam3Model

    with quiet_transformers():
        model = from_pretrained(Sam3Model, folder, dt, "SAM3")  # every detector weight, with its shape
        tokenizer = _load_tokenizer(folder, int(model.config.text_config.vocab_size))
    return Pretrained(model=model.to(dev).eval(), tokenizer=tokenizer, path=folder)
