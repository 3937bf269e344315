"""SegEarth-R1 weights in the released format (spec ``segearth_r1_model.md`` §3, §8).

A released folder holds ``config.json`` (``model_type`` ``llava_phi``), the weights — ``model.safetensors``,
or shards + ``model.safetensors.index.json`` (what transformers 4.36's ``save_pretrained`` writes), or the older
``pytorch_model.bin`` (+ index) — and the tokenizer files (slow ``vocab.json`` + ``merges.txt`` +
``added_tokens.json``, or ``tokenizer.json``).

Loading rules (§8):

1. transformers 4.36 stores Phi attention fused: ``self_attn.query_key_value`` ``[3D, D]`` with rows laid out
   ``[heads][q, k, v][head_dim]``. It is split **per head** (:func:`split_qkv`); a plain three-way chunk is
   wrong. Already-split ``q_proj/k_proj/v_proj`` keys load as they are. Detected per tensor by name.
2. V = rows of ``model.embed_tokens.weight``; ``lm_head`` (no bias) has V rows too; nothing is resized.
   ``[PAD]`` and ``[SEG]`` ids are read from the tokenizer files.
3. Checkpoint-only tensors (``seg_query``, the predictor's query tables, ``SEG_proj``, ``CLASS_proj``) are
   registered in the model and loaded; ``lm_head.weight`` is dropped explicitly for mask-only use
   (:data:`MASK_ONLY_DROPPED`). Every other name and shape is checked strictly.
4. Swin ``relative_position_index`` buffers are checked against the formula; every float tensor is cast to the
   requested dtype (the file is probably bf16).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Iterator

import torch

from segearth_geo.errors import CheckpointError
from segearth_geo.model.checkpoint_files import Pretrained, load_state_into
from segearth_geo.model.checkpoint_files import weight_files as shared_weight_files
from segearth_geo.model.device import _resolve_device_dtype
from segearth_geo.model.segearth_r1.configuration import OUR_BLOCK, SegEarthR1Config, read_config_json
from segearth_geo.model.segearth_r1.prompt import PAD_TOKEN, SEG_TOKEN

log = logging.getLogger(__name__)

EMBED_KEY = "model.embed_tokens.weight"
SAFE_NAME, SAFE_INDEX = "model.safetensors", "model.safetensors.index.json"
BIN_NAME, BIN_INDEX = "pytorch_model.bin", "pytorch_model.bin.index.json"
# Dropped on purpose when loading for inference: R1 never generates text (V × D weights saved).
MASK_ONLY_DROPPED = ("lm_head.weight",)
_FUSED = re.compile(r"^(model\.layers\.\d+\.self_attn\.)query_key_value\.(weight|bias)$")
_SPLIT = re.compile(r"^(model\.layers\.\d+\.self_attn\.)([qkv])_proj\.(weight|bias)$")
_REASONING_NAMES = ("earthreason", "reasonseg", "reasoning")


# ---------------------------------------------------------------------------------------------- fused qkv
def split_qkv(fused: torch.Tensor, num_heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """4.36 ``query_key_value`` weight ``[3D, D]`` or bias ``[3D]`` → q, k, v (``[D, D]`` / ``[D]`` each).

    Rows are ``[heads][q, k, v][head_dim]`` (``view(heads, 3, head_dim, …)``), so slot i of every head is taken.
    """
    if fused.shape[0] % (3 * num_heads):
        raise CheckpointError(f"fused query_key_value has {fused.shape[0]} rows, not a multiple of 3 × {num_heads} heads")
    head_dim = fused.shape[0] // (3 * num_heads)
    grouped = fused.reshape(num_heads, 3, head_dim, *fused.shape[1:])
    return tuple(grouped[:, i].reshape(num_heads * head_dim, *fused.shape[1:]).contiguous() for i in range(3))


def fuse_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Inverse of :func:`split_qkv` (writes the 4.36 layout)."""
    head_dim = q.shape[0] // num_heads
    parts = [t.reshape(num_heads, head_dim, *t.shape[1:]) for t in (q, k, v)]
    return torch.stack(parts, dim=1).reshape(3 * num_heads * head_dim, *q.shape[1:]).contiguous()


def official_to_ours(state: dict[str, torch.Tensor], num_heads: int) -> dict[str, torch.Tensor]:
    """Rename a checkpoint state to this package's module tree (split fused qkv; other keys unchanged)."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        match = _FUSED.match(key)
        if match is None:
            out[key] = tensor
            continue
        prefix, kind = match.groups()
        for name, part in zip("qkv", split_qkv(tensor, num_heads)):
            out[f"{prefix}{name}_proj.{kind}"] = part
    return out


def ours_to_official(state: dict[str, torch.Tensor], num_heads: int) -> dict[str, torch.Tensor]:
    """This package's state → the released key layout (fused per-head ``query_key_value``), order kept."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        match = _SPLIT.match(key)
        if match is None:
            out[key] = tensor
            continue
        prefix, name, kind = match.groups()
        if name == "q":
            parts = [state[f"{prefix}{n}_proj.{kind}"] for n in "qkv"]
            out[f"{prefix}query_key_value.{kind}"] = fuse_qkv(*parts, num_heads=num_heads)
    return out


# ---------------------------------------------------------------------------------------------- files
def weight_files(directory: Path) -> list[Path]:
    """The weight files of a checkpoint folder (safetensors preferred, then ``.bin``), shards in index order."""
    return shared_weight_files(directory, ("safetensors", "bin"))


def read_weights(file: Path) -> dict[str, torch.Tensor]:
    """All tensors of one weight file on CPU (``.bin`` read with ``weights_only=True``: no code runs)."""
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(file), device="cpu")
        return torch.load(str(file), map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"cannot read weights {file}: {exc}") from exc


def _embed_rows(files: list[Path]) -> int:
    """Rows of ``embed_tokens`` without reading every tensor (safetensors headers; ``.bin`` is loaded)."""
    for file in files:
        if file.suffix == ".safetensors":
            from safetensors import safe_open

            try:
                with safe_open(str(file), framework="pt") as handle:
                    if EMBED_KEY in handle.keys():
                        return int(handle.get_slice(EMBED_KEY).get_shape()[0])
            except (OSError, RuntimeError, ValueError) as exc:
                raise CheckpointError(f"cannot read safetensors file {file}: {exc}") from exc
        else:
            state = read_weights(file)
            if EMBED_KEY in state:
                return int(state[EMBED_KEY].shape[0])
    raise CheckpointError(f"the weights have no {EMBED_KEY}; not a SegEarth-R1 checkpoint")


# ---------------------------------------------------------------------------------------------- tokenizer
def load_r1_tokenizer(directory: Path, vocab_rows: int):
    """The checkpoint's tokenizer (slow or fast files) with ``[PAD]`` and ``[SEG]``; returns (tokenizer, pad, seg)."""
    from segearth_geo.model.tokenizer import read_tokenizer_files

    tokenizer = read_tokenizer_files(directory)
    vocab = tokenizer.get_vocab()
    missing = [t for t in (PAD_TOKEN, SEG_TOKEN) if t not in vocab]
    if missing:
        raise CheckpointError(f"{directory}: the tokenizer has no {' or '.join(missing)} token; SegEarth-R1 "
                              "checkpoints add [PAD] and [SEG] (see added_tokens.json)")
    if len(tokenizer) != vocab_rows:
        raise CheckpointError(f"{directory}: the tokenizer has {len(tokenizer)} entries but {EMBED_KEY} has "
                              f"{vocab_rows} rows; they must match")
    tokenizer.pad_token = PAD_TOKEN
    pad_id, seg_id = int(vocab[PAD_TOKEN]), int(vocab[SEG_TOKEN])
    encoded = tokenizer.encode(SEG_TOKEN, add_special_tokens=False)
    if encoded != [seg_id]:
        raise CheckpointError(f"{directory}: '{SEG_TOKEN}' encodes as {encoded}, expected the single id {seg_id}")
    return tokenizer, pad_id, seg_id


# ---------------------------------------------------------------------------------------------- loading
def resolve_template(raw_config: dict, directory: Path, template: str | None) -> str:
    """``template`` if given; else our block's; else ``"reasoning"`` when the checkpoint's name says EarthReason
    (folder, hub snapshot path or ``_name_or_path``), else ``"referring"``."""
    if template is not None:
        return template
    if OUR_BLOCK in raw_config and "template" in raw_config[OUR_BLOCK]:
        return raw_config[OUR_BLOCK]["template"]
    names = f"{directory.resolve()} {raw_config.get('_name_or_path', '')}".lower().replace("-", "").replace("_", "")
    return "reasoning" if any(n in names for n in _REASONING_NAMES) else "referring"


def empty_r1_model(config: SegEarthR1Config, device, dtype, lm_head: bool = True):
    """``SegEarthR1(config)`` with uninitialised storage on ``device`` (no random init); rotary rebuilt."""
    from segearth_geo.model.segearth_r1.modeling import SegEarthR1

    with torch.device("meta"):
        model = SegEarthR1(config, lm_head=lm_head)
    model = model.to_empty(device=device)
    model.to(dtype=dtype)
    model.materialize_buffers(device)
    return model


def load_r1_pretrained(directory: str | Path, device=None, dtype=None, template: str | None = None,
                       lm_head: bool = False) -> Pretrained:
    """Load a SegEarth-R1 checkpoint folder key for key (rules in the module docstring).

    Args:
        directory: local folder (resolve hub ids first, e.g. with :mod:`segearth_geo.model.registry`).
        device, dtype: target (default CPU, fp32).
        template: ``"referring"`` / ``"reasoning"`` override (default: from the checkpoint, see
            :func:`resolve_template`).
        lm_head: also load ``lm_head.weight`` (not needed for masks).
    Raises:
        CheckpointError: missing files, unknown or missing tensors, wrong shapes, tokenizer mismatch.
    """
    folder = Path(directory)
    if not folder.is_dir():
        raise CheckpointError(f"SegEarth-R1 checkpoint folder not found: {folder}")
    raw = read_config_json(folder)
    config = SegEarthR1Config.from_official_dict(raw, template=resolve_template(raw, folder, template))
    files = weight_files(folder)
    rows = _embed_rows(files)
    if rows != config.vocab_size:
        log.warning("config.json says vocab_size=%d but %s has %d rows; using %d", config.vocab_size, EMBED_KEY,
                    rows, rows)
    tokenizer, pad_id, seg_id = load_r1_tokenizer(folder, rows)
    config = SegEarthR1Config.from_dict({**config.to_dict(), "vocab_size": rows, "pad_token_id": pad_id,
                                         "seg_token_id": seg_id})
    dev, dt = _resolve_device_dtype(device, dtype)
    model = empty_r1_model(config, dev, dt, lm_head=lm_head)
    dropped = () if lm_head else MASK_ONLY_DROPPED
    loaded: set[str] = set()
    for file in files:
        state = official_to_ours(read_weights(file), config.text.num_attention_heads)
        state = {k: v for k, v in state.items() if k not in dropped}
        load_state_into(model, state, str(file), loaded)
    missing = sorted(set(model.state_dict()) - loaded)
    if missing:
        raise CheckpointError(f"{folder}: {len(missing)} model tensors are missing from the checkpoint, "
                              f"e.g. {missing[:5]}")
    model.eval()
    return Pretrained(model=model, tokenizer=tokenizer, path=folder)


# ---------------------------------------------------------------------------------------------- saving
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


def save_r1_pretrained(model, directory: str | Path, *, fused_qkv: bool = True, safe_serialization: bool = True,
                       max_shard_size: int = 5 * 10**9, dtype: torch.dtype | None = None) -> Path:
    """Write ``config.json`` and the weights in the released layout (tokenizer files are the caller's).

    Args:
        fused_qkv: write 4.36's fused ``query_key_value`` (the released layout) instead of q/k/v.
        safe_serialization: safetensors (``model.safetensors`` or shards + index) or ``pytorch_model.bin``.
        max_shard_size: bytes per shard, as transformers names shards ``model-0000k-of-0000n.*``.
        dtype: cast floating tensors (e.g. ``torch.bfloat16`` as released); default: keep.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    model.config.save_json(out)
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    if fused_qkv:
        state = ours_to_official(state, model.config.text.num_attention_heads)
    shards = list(_shards(state, max_shard_size))
    ext, single, index_name = ((".safetensors", SAFE_NAME, SAFE_INDEX) if safe_serialization
                               else (".bin", BIN_NAME, BIN_INDEX))

    def write(tensors: dict[str, torch.Tensor], path: Path) -> None:
        if safe_serialization:
            from safetensors.torch import save_file

            save_file(tensors, str(path), metadata={"format": "pt"})
        else:
            torch.save(tensors, str(path))

    if len(shards) == 1:
        write(shards[0], out / single)
        return out
    prefix = "model" if safe_serialization else "pytorch_model"
    weight_map, total = {}, 0
    for k, shard in enumerate(shards, start=1):
        name = f"{prefix}-{k:05d}-of-{len(shards):05d}{ext}"
        write(shard, out / name)
        weight_map.update({key: name for key in shard})
        total += sum(t.numel() * t.element_size() for t in shard.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / index_name).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return out
