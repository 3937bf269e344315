"""Checkpoint files of the transformers layout, shared by every backend of the family (SegEarth-R1, SegEarth-R2).

* :class:`Pretrained` – a loaded model with its tokenizer and folder;
* :func:`weight_files` – the weight files of a folder (one file, or an index naming its shards);
* :func:`load_state_into` – copy tensors into a model key for key, checking names, shapes and the Swin
  ``relative_position_index`` buffers against the formula.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from segearth_geo.errors import CheckpointError
from segearth_geo.model.swin import relative_position_index


@dataclass
class Pretrained:
    """A loaded checkpoint. Unpacks as ``model, tokenizer = load_pretrained(...)``.

    Attributes:
        model: the backend's module (``SegEarthR2`` or ``SegEarthR1``, eval mode), on the requested device and dtype.
        tokenizer: its tokenizer.
        path: the directory the weights were read from.
    """

    model: Any
    tokenizer: Any
    path: Path

    @property
    def config(self):
        return self.model.config

    def __iter__(self) -> Iterator[Any]:
        return iter((self.model, self.tokenizer))


# Weight file names of the transformers layout: one file, or an index naming its shards.
WEIGHT_LAYOUTS = {
    "safetensors": ("model.safetensors", "model.safetensors.index.json"),
    "bin": ("pytorch_model.bin", "pytorch_model.bin.index.json"),
}


def weight_files(directory: Path, formats: tuple[str, ...] = ("safetensors",)) -> list[Path]:
    """The weight files of a checkpoint folder, shards in index order, trying ``formats`` in order.

    Shared by every backend of the family (SegEarth-R2 reads safetensors; SegEarth-R1 also ``.bin``).
    Raises :class:`CheckpointError` for a malformed index, missing shards or no weights at all.
    """
    for fmt in formats:
        single, index_name = WEIGHT_LAYOUTS[fmt]
        index = directory / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            except (OSError, ValueError, KeyError) as exc:
                raise CheckpointError(f"malformed shard index {index}: {exc}") from exc
            files = [directory / name for name in dict.fromkeys(weight_map.values())]
            missing = [str(f) for f in files if not f.is_file()]
            if missing:
                raise CheckpointError(f"{index} names shard files that are missing: {', '.join(missing)}")
            return files
        if (directory / single).is_file():
            return [directory / single]
    expected = ", ".join(f"{WEIGHT_LAYOUTS[f][0]} or {WEIGHT_LAYOUTS[f][1]} + shards" for f in formats)
    raise CheckpointError(f"no weights in {directory}: expected {expected}")


def _check_relative_position_index(key: str, tensor: torch.Tensor) -> None:
    window = int(round(tensor.shape[0] ** 0.5))
    if window * window != tensor.shape[0] or not torch.equal(tensor.long().cpu(), relative_position_index(window)):
        raise CheckpointError(f"{key} is not the Swin relative position index of a {window}×{window} window")


def load_state_into(model: torch.nn.Module, tensors: dict[str, torch.Tensor], source: str, loaded: set[str]) -> None:
    """Copy ``tensors`` into ``model`` (same key names), checking names and shapes; record loaded keys."""
    own = model.state_dict()
    unexpected = [k for k in tensors if k not in own]
    if unexpected:
        raise CheckpointError(
            f"{source}: {len(unexpected)} tensors do not belong to this model, e.g. {unexpected[:5]}; "
            "is the config (config.json) right for these weights?"
        )
    for key, value in tensors.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise CheckpointError(
                f"{source}: {key} has shape {tuple(value.shape)}, the model expects {tuple(own[key].shape)}"
            )
        if key.endswith("relative_position_index"):
            _check_relative_position_index(key, value)
    with torch.no_grad():
        for key, value in tensors.items():
            own[key].copy_(value.to(own[key].dtype) if own[key].is_floating_point() else value)
    loaded.update(tensors)
