"""Checkpoint files of the transformers layout, shared by every backend of the family.

* :func:`read_config_json` – the one reader of a checkpoint's ``config.json`` (registry and backends);
* :func:`read_json` – any JSON object file of a checkpoint (``processor_config.json``, shard indexes);
* :class:`Pretrained` – a loaded model with its tokenizer and folder;
* :func:`weight_files` / :func:`read_weights` / :func:`tensor_rows` – the weight files of a folder (one file,
  or an index naming its shards; safetensors or ``.bin``), their tensors, a tensor's rows from the headers;
* :func:`empty_model` / :func:`load_state_into` / :func:`load_weights` – a model without random init, filled
  key for key (names, shapes and the Swin ``relative_position_index`` buffers checked);
* :func:`save_weights` – tensors written as one file or shards + index, as transformers names them;
* :func:`quiet_transformers` / :func:`from_pretrained` – a transformers class loaded from a folder without its
  progress bar and load report, checked so that a broken folder is one line (SAM3, ZoomEarth).

torch is imported by the functions that use it, so that the registry (which must not import torch) can read
``config.json`` through this module.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from segearth_geo.errors import CheckpointError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
# Weight file names of the transformers layout: one file, or an index naming its shards.
WEIGHT_LAYOUTS = {
    "safetensors": ("model.safetensors", "model.safetensors.index.json"),
    "bin": ("pytorch_model.bin", "pytorch_model.bin.index.json"),
}
# Non-persistent buffers a model rebuilds after loading (``materialize_buffers``): rotary and position tables.
REBUILT_BUFFERS = ("inv_freq", "original_inv_freq", "position_ids")


# ---------------------------------------------------------------------------------------------- JSON files
def read_json(path: Path) -> dict[str, Any]:
    """A JSON object file; :class:`CheckpointError` (one line) when it cannot be read or is not an object."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} does not hold a JSON object")
    return data


def read_config_json(folder_or_file: str | Path, needed_by: str = "a checkpoint folder") -> dict[str, Any]:
    """The ``config.json`` dict of a checkpoint folder (or the file itself).

    ``needed_by`` completes the error when the file is missing ("no config.json in X; <needed_by> needs one").
    """
    path = Path(folder_or_file)
    if path.is_dir() or not path.name.endswith(".json"):
        path = path / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"no {CONFIG_NAME} in {path.parent}; {needed_by} needs one")
    return read_json(path)


# ---------------------------------------------------------------------------------------------- reading
@dataclass
class Pretrained:
    """A loaded checkpoint. Unpacks as ``model, tokenizer = load_pretrained(...)``.

    Attributes:
        model: the backend's module (eval mode), on the requested device and dtype.
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


def weight_files(directory: Path, formats: tuple[str, ...] = ("safetensors",)) -> list[Path]:
    """The weight files of a checkpoint folder, shards in index order, trying ``formats`` in order.

    Raises :class:`CheckpointError` for a malformed index, missing shards or no weights at all.
    """
    for fmt in formats:
        single, index_name = WEIGHT_LAYOUTS[fmt]
        index = directory / index_name
        if index.is_file():
            weight_map = read_json(index).get("weight_map")
            if not isinstance(weight_map, dict):
                raise CheckpointError(f"malformed shard index {index}: no 'weight_map' object")
            files = [directory / name for name in dict.fromkeys(weight_map.values())]
            missing = [str(f) for f in files if not f.is_file()]
            if missing:
                raise CheckpointError(f"{index} names shard files that are missing: {', '.join(missing)}")
            return files
        if (directory / single).is_file():
            return [directory / single]
    expected = ", ".join(f"{WEIGHT_LAYOUTS[f][0]} or {WEIGHT_LAYOUTS[f][1]} + shards" for f in formats)
    raise CheckpointError(f"no weights in {directory}: expected {expected}")


def read_weights(file: Path) -> dict[str, torch.Tensor]:
    """All tensors of one weight file on CPU (``.bin`` read with ``weights_only=True``: no code runs)."""
    import torch

    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(file), device="cpu")
        return torch.load(str(file), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - safetensors (SafetensorError), pickle and torch raise many types
        raise CheckpointError(f"cannot read weights {file}: {_damaged(exc)}") from exc


def tensor_rows(files: list[Path], key: str, folder: Path, title: str) -> int:
    """Rows of tensor ``key`` (safetensors: from the headers, without reading tensors; ``.bin`` is loaded).

    Raises :class:`CheckpointError` naming ``title`` (the backend) when no file holds ``key``.
    """
    for file in files:
        if file.suffix != ".safetensors":
            state = read_weights(file)
            if key in state:
                return int(state[key].shape[0])
            continue
        from safetensors import safe_open

        try:
            with safe_open(str(file), framework="pt") as handle:
                if key in handle.keys():
                    return int(handle.get_slice(key).get_shape()[0])
        except Exception as exc:  # noqa: BLE001 - SafetensorError is no OSError
            raise CheckpointError(f"cannot read safetensors file {file}: {_damaged(exc)}") from exc
    raise CheckpointError(f"{folder}: the weights have no {key}; not a {title} checkpoint")


def _damaged(exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return f"{type(exc).__name__}: {first} (a damaged or partly downloaded file? download it again)"


# ---------------------------------------------------------------------------------------------- filling a model
def empty_model(build: Callable[[], torch.nn.Module], device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """``build()`` with uninitialised storage on ``device`` (no random init), in ``dtype``.

    The model's ``materialize_buffers(device)`` rebuilds its non-persistent buffers (:data:`REBUILT_BUFFERS`);
    persistent tensors must then be loaded by the caller.
    """
    import torch

    with torch.device("meta"):
        model = build()
    model = model.to_empty(device=device)
    model.to(dtype=dtype)
    model.materialize_buffers(device)
    persistent = set(model.state_dict())
    for name, _ in model.named_buffers():
        if name not in persistent and name.rsplit(".", 1)[-1] not in REBUILT_BUFFERS:
            raise CheckpointError(f"the non-persistent buffer {name!r} is not rebuilt after loading; add it to "
                                  f"{type(model).__name__}.materialize_buffers")
    return model


def _check_relative_position_index(key: str, tensor: torch.Tensor) -> None:
    import torch

    from segearth_geo.model.parts.swin import relative_position_index

    window = int(round(tensor.shape[0] ** 0.5))
    if window * window != tensor.shape[0] or not torch.equal(tensor.long().cpu(), relative_position_index(window)):
        raise CheckpointError(f"{key} is not the Swin relative position index of a {window}×{window} window")


def load_state_into(model: torch.nn.Module, tensors: dict[str, torch.Tensor], source: str, loaded: set[str]) -> None:
    """Copy ``tensors`` into ``model`` (same key names), checking names and shapes; record loaded keys."""
    import torch

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


def load_weights(model: torch.nn.Module, files: list[Path], folder: Path,
                 convert: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None) -> None:
    """Fill every tensor of ``model`` from ``files`` (each file's state through ``convert`` first).

    Raises :class:`CheckpointError` for unknown tensors, wrong shapes, or model tensors no file provides.
    """
    loaded: set[str] = set()
    for file in files:
        state = read_weights(file)
        load_state_into(model, convert(state) if convert else state, str(file), loaded)
    missing = sorted(set(model.state_dict()) - loaded)
    if missing:
        raise CheckpointError(f"{folder}: {len(missing)} model tensors are missing from the checkpoint, "
                              f"e.g. {missing[:5]}")


# ---------------------------------------------------------------------------------------------- writing
def parse_size(size: int | str) -> int:
    """Bytes from ``5000``, ``"5GB"``, ``"200MB"``, ``"40KB"`` (decimal units, as transformers)."""
    if isinstance(size, int):
        return size
    text = size.strip().upper()
    for unit, factor in (("GB", 10**9), ("MB", 10**6), ("KB", 10**3), ("B", 1)):
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    return int(text)


def _shards(state: dict[str, torch.Tensor], limit: int) -> Iterator[dict[str, torch.Tensor]]:
    shard: dict[str, torch.Tensor] = {}
    size = 0
    for key, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shard and size + nbytes > limit:
            yield shard
            shard, size = {}, 0
        shard[key] = tensor
        size += nbytes
    if shard:
        yield shard


def save_weights(state: dict[str, torch.Tensor], directory: Path, max_shard_size: int | str = "5GB",
                 safe_serialization: bool = True) -> None:
    """Write ``state`` (CPU tensors) into ``directory`` in the transformers layout.

    One shard: ``model.safetensors`` (``pytorch_model.bin``); more: ``model-0000k-of-0000n.safetensors``
    (``pytorch_model-…bin``) of at most ``max_shard_size`` bytes + the index. Stale weight files of that
    format are removed first.
    """
    import torch

    fmt = "safetensors" if safe_serialization else "bin"
    single, index_name = WEIGHT_LAYOUTS[fmt]
    prefix, ext = single.rsplit(".", 1)
    for stale in list(directory.glob(f"{prefix}*.{ext}")) + [directory / index_name]:
        stale.unlink(missing_ok=True)

    def write(tensors: dict[str, torch.Tensor], path: Path) -> None:
        if safe_serialization:
            from safetensors.torch import save_file

            save_file(tensors, str(path), metadata={"format": "pt"})
        else:
            torch.save(tensors, str(path))

    shards = list(_shards(state, parse_size(max_shard_size)))
    if len(shards) <= 1:
        write(shards[0] if shards else {}, directory / single)
        return
    weight_map, total = {}, 0
    for k, shard in enumerate(shards, start=1):
        name = f"{prefix}-{k:05d}-of-{len(shards):05d}.{ext}"
        write(shard, directory / name)
        weight_map.update({key: name for key in shard})
        total += sum(t.numel() * t.element_size() for t in shard.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / index_name).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------------- transformers' own classes
@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
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


def from_pretrained(model_class: Any, folder: Path, dtype: torch.dtype, title: str,
                    optional: Callable[[str], bool] = lambda key: False) -> Any:
    """``model_class.from_pretrained(folder)`` in ``dtype``, checked: a weights file that cannot be read, or a
    weight missing (but those ``optional`` accepts) or of the wrong shape, is one :class:`CheckpointError` line
    naming the ``title`` model."""
    try:
        model, info = model_class.from_pretrained(folder, dtype=dtype, output_loading_info=True)
    except Exception as exc:  # noqa: BLE001 - transformers and safetensors raise many types (SafetensorError)
        raise CheckpointError(f"cannot load the {title} model from {folder}: {_damaged(exc)}") from exc
    missing = sorted(str(k) for k in info.get("missing_keys") or () if not optional(str(k)))
    mismatched = sorted(str(k[0] if isinstance(k, tuple) else k) for k in info.get("mismatched_keys") or ())
    if missing or mismatched:
        shown = ", ".join(missing[:5] + mismatched[:5])
        raise CheckpointError(f"{folder}: the {title} weights do not match its config.json ({len(missing)} missing, "
                              f"{len(mismatched)} of the wrong shape: {shown}); download the whole checkpoint")
    return model
