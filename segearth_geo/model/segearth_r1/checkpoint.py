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

import logging
import re
from pathlib import Path

import torch

from segearth_geo.errors import CheckpointError
from segearth_geo.model.checkpoint_files import (
    Pretrained,
    empty_model,
    load_weights,
    read_config_json,
    save_weights,
    tensor_rows,
    weight_files,
)
from segearth_geo.model.configuration_base import OUR_BLOCK
from segearth_geo.model.device import resolve_device
from segearth_geo.model.segearth_r1.configuration import SegEarthR1Config
from segearth_geo.model.segearth_r1.prompt import PAD_TOKEN
from segearth_geo.model.tokenizer import SEG_TOKEN

log = logging.getLogger(__name__)

EMBED_KEY = "model.embed_tokens.weight"
WEIGHT_FORMATS = ("safetensors", "bin")  # tried in this order
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


# ---------------------------------------------------------------------------------------------- tokenizer
def load_tokenizer(directory: Path, vocab_rows: int):
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


def load_pretrained(directory: str | Path, device=None, dtype=None, template: str | None = None,
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
    from segearth_geo.model.segearth_r1.modeling import SegEarthR1

    folder = Path(directory)
    if not folder.is_dir():
        raise CheckpointError(f"SegEarth-R1 checkpoint folder not found: {folder}")
    raw = read_config_json(folder, "a SegEarth-R1 checkpoint directory")
    config = SegEarthR1Config.from_official_dict(raw, template=resolve_template(raw, folder, template))
    files = weight_files(folder, WEIGHT_FORMATS)
    rows = tensor_rows(files, EMBED_KEY, folder, "SegEarth-R1")
    if rows != config.vocab_size:
        log.warning("config.json says vocab_size=%d but %s has %d rows; using %d", config.vocab_size, EMBED_KEY,
                    rows, rows)
    tokenizer, pad_id, seg_id = load_tokenizer(folder, rows)
    config = SegEarthR1Config.from_dict({**config.to_dict(), "vocab_size": rows, "pad_token_id": pad_id,
                                         "seg_token_id": seg_id})
    dev, dt = resolve_device(device or "cpu", dtype or torch.float32)
    model = empty_model(lambda: SegEarthR1(config, lm_head=lm_head), dev, dt)
    dropped = () if lm_head else MASK_ONLY_DROPPED

    def convert(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        state = official_to_ours(state, config.text.num_attention_heads)
        return {k: v for k, v in state.items() if k not in dropped}

    load_weights(model, files, folder, convert)
    model.eval()
    return Pretrained(model=model, tokenizer=tokenizer, path=folder)


# ---------------------------------------------------------------------------------------------- saving
def save_pretrained(model, directory: str | Path, *, fused_qkv: bool = True, safe_serialization: bool = True,
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
    save_weights(state, out, max_shard_size, safe_serialization)
    return out
