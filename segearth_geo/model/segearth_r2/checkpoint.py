"""SegEarth-R2 weights in the real formats (spec §14, §15).

* :func:`load_pretrained` reads the official **merged** checkpoint directory — ``config.json``, one
  ``model.safetensors`` or shards + ``model.safetensors.index.json``, tokenizer files with ``[SEG]`` —
  key for key (no renaming). :func:`save_pretrained` writes the same layout, so one loader serves both.
* :func:`init_from_components` builds a trainable model from Mipha-3B's safetensors and the Mask2Former
  Swin-B COCO-panoptic ``.pkl`` (renames of spec §14), the pickle read by a restricted unpickler.

Loading rules (§15): ``embed_tokens`` rows V come from the checkpoint (never 51,200); ``lm_head`` keeps
``lm_head_size`` rows and has no bias; absent non-persistent buffers (rotary ``inv_freq``, SigLIP
``position_ids``) are recomputed; Swin ``relative_position_index`` buffers are checked against the formula;
shard dtypes may be mixed (every tensor is cast to the requested dtype, fp32 by default).
"""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path
from typing import Any

import torch

from segearth_geo.errors import CheckpointError
from segearth_geo.model.checkpoint_files import (
    Pretrained,
    empty_model,
    load_state_into,
    load_weights,
    save_weights,
    tensor_rows,
    weight_files,
)
from segearth_geo.model.device import resolve_device
from segearth_geo.model.hub import local_or_download

log = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
EMBED_KEY = "model.embed_tokens.weight"


def _load_tokenizer_for(directory: Path, vocab_rows: int):
    from segearth_geo.model.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(directory)
    if len(tokenizer) != vocab_rows:
        raise CheckpointError(
            f"{directory}: the tokenizer has {len(tokenizer)} entries but {EMBED_KEY} has {vocab_rows} rows; "
            "they must match (V = tokenizer length including '[SEG]')"
        )
    return tokenizer


def load_pretrained(path_or_repo_id: str | Path, device=None, dtype=None) -> Pretrained:
    """Load a merged SegEarth-R2 checkpoint (official layout or ours) key for key.

    Args:
        path_or_repo_id: a checkpoint directory, or a Hugging Face repo id (``owner/name``, see
            :mod:`segearth_geo.model.hub`).
        device: target device (default CPU).
        dtype: ``torch.float32`` (default), ``torch.bfloat16``, ``torch.float16`` or their names.
    Returns:
        :class:`Pretrained` (``model, tokenizer = load_pretrained(...)`` also works); the model is in eval mode.
    Raises:
        CheckpointError: missing files, keys or shapes that do not match, unknown tensors.
    """
    import dataclasses

    from segearth_geo.model.segearth_r2.configuration import SegEarthR2Config
    from segearth_geo.model.segearth_r2.modeling import SegEarthR2

    directory = local_or_download(path_or_repo_id, f"config.json and {WEIGHTS_NAME} or {INDEX_NAME} + shards")
    dev, dt = resolve_device(device or "cpu", dtype or torch.float32)
    config = SegEarthR2Config.from_json(directory)
    files = weight_files(directory)
    rows = tensor_rows(files, EMBED_KEY, directory, "SegEarth-R2")
    if rows != config.vocab_size:
        log.warning("config.json says vocab_size=%d but %s has %d rows; using %d",
                    config.vocab_size, EMBED_KEY, rows, rows)
        config = dataclasses.replace(config, vocab_size=rows, seg_token_id=rows - 1)
    tokenizer = _load_tokenizer_for(directory, rows)
    model = empty_model(lambda: SegEarthR2(config), dev, dt)
    load_weights(model, files, directory)
    model.eval()
    return Pretrained(model=model, tokenizer=tokenizer, path=directory)


# ---------------------------------------------------------------------------------------------- saving
def save_pretrained(model, tokenizer, directory: str | Path, max_shard_size: int | str = "5GB") -> Path:
    """Write ``model`` + ``tokenizer`` in the official merged layout; return the directory.

    ``config.json``, ``generation_config.json``, safetensors shards of at most ``max_shard_size`` bytes
    (``model.safetensors`` when one shard suffices, else ``model-0000k-of-0000n.safetensors`` +
    ``model.safetensors.index.json``), tokenizer files and ``added_tokens.json`` (with ``[SEG]``).
    Tensors keep their dtype.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    config = model.config
    if len(tokenizer) != config.vocab_size:
        raise CheckpointError(f"tokenizer length {len(tokenizer)} != model vocab_size {config.vocab_size}")
    config.save_json(out)
    generation = {"bos_token_id": config.eos_token_id, "eos_token_id": config.eos_token_id,
                  "pad_token_id": config.pad_token_id, "do_sample": False}
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n", encoding="utf-8")

    state = {key: tensor.detach().to("cpu").contiguous().clone() for key, tensor in model.state_dict().items()}
    save_weights(state, out, max_shard_size)
    tokenizer.save_pretrained(str(out))
    specials = set(tokenizer.all_special_tokens)
    added_vocab = sorted(tokenizer.get_added_vocab().items(), key=lambda kv: kv[1])
    added = {tok: idx for tok, idx in added_vocab if tok not in specials}
    (out / "added_tokens.json").write_text(json.dumps(added, indent=2) + "\n", encoding="utf-8")
    return out


# ---------------------------------------------------------------------------------------------- components
class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Accepts numpy arrays/dtypes/scalars and plain containers; any other global is refused."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("collections", "OrderedDict"),
        ("_codecs", "encode"),  # how protocol-2 pickles store bytes (str → bytes; runs no code)
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise CheckpointError(
                f"refusing to unpickle {module}.{name}: the Mask2Former .pkl may only contain numpy arrays "
                "and plain containers (the file is corrupt or unsafe)"
            )
        import importlib

        if module.startswith("numpy.core") and not _has_module("numpy.core.multiarray"):
            module = module.replace("numpy.core", "numpy._core", 1)
        if module.startswith("numpy._core") and not _has_module("numpy._core.multiarray"):
            module = module.replace("numpy._core", "numpy.core", 1)
        return getattr(importlib.import_module(module), name)


def _has_module(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:
        return False


def read_numpy_pickle(path: str | Path) -> dict[str, Any]:
    """Read a detectron2-style ``.pkl`` with :class:`_NumpyOnlyUnpickler` (never executes code)."""
    file = Path(path)
    if not file.is_file():
        raise CheckpointError(f"Mask2Former checkpoint not found: {file}")
    try:
        with file.open("rb") as handle:
            data = _NumpyOnlyUnpickler(handle, encoding="latin1").load()
    except CheckpointError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError) as exc:
        raise CheckpointError(f"cannot read {file} as a numpy pickle: {exc}") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{file}: expected a dict at the top level, got {type(data).__name__}")
    return data


def mask2former_state(pkl: dict[str, Any], num_queries: int) -> dict[str, torch.Tensor]:
    """Rename a Mask2Former state (``pkl["model"]`` or the dict itself) to our keys (spec §14)."""
    import numpy as np

    source = pkl.get("model", pkl)
    out: dict[str, torch.Tensor] = {}
    renames = {
        "sem_seg_head.pixel_decoder.adapter_1.weight": "pixel_decoder.adapter_1.0.weight",
        "sem_seg_head.pixel_decoder.adapter_1.norm.weight": "pixel_decoder.adapter_1.1.weight",
        "sem_seg_head.pixel_decoder.adapter_1.norm.bias": "pixel_decoder.adapter_1.1.bias",
        "sem_seg_head.pixel_decoder.layer_1.weight": "pixel_decoder.layer_1.0.weight",
        "sem_seg_head.pixel_decoder.layer_1.norm.weight": "pixel_decoder.layer_1.1.weight",
        "sem_seg_head.pixel_decoder.layer_1.norm.bias": "pixel_decoder.layer_1.1.bias",
        "sem_seg_head.predictor.static_query.weight": "predictor.query_feat.weight",
    }
    for key, value in source.items():
        if not isinstance(value, np.ndarray):
            continue
        tensor = torch.from_numpy(np.ascontiguousarray(value))
        if key in renames:
            out[renames[key]] = tensor
        elif key.startswith("backbone."):
            out["model.vision_tower_mask." + key[len("backbone."):]] = tensor
        elif key.startswith("sem_seg_head.predictor.class_embed."):
            continue
        elif key == "sem_seg_head.predictor.query_embed.weight":
            out["predictor.query_embed.weight"] = tensor[:num_queries]
        elif key.startswith("sem_seg_head.pixel_decoder."):
            out["pixel_decoder." + key[len("sem_seg_head.pixel_decoder."):]] = tensor
        elif key.startswith("sem_seg_head.predictor."):
            out["predictor." + key[len("sem_seg_head.predictor."):]] = tensor
        else:
            log.debug("Mask2Former key %s is not used", key)
    return out


def _mipha_state(files: list[Path], vocab_rows: int) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for file in files:
        for key, tensor in load_file(str(file), device="cpu").items():
            if key == "lm_head.bias":
                continue  # re-created lm_head has no bias (spec §2.3)
            if key.startswith("model.vision_tower.vision_tower."):
                key = "model.vision_tower." + key[len("model.vision_tower.vision_tower."):]
            if key == EMBED_KEY:
                if tensor.shape[0] < vocab_rows:
                    raise CheckpointError(f"{file}: {EMBED_KEY} has {tensor.shape[0]} rows, fewer than V={vocab_rows}")
                tensor = tensor[:vocab_rows]
            state[key] = tensor
    return state


# Tensors that neither Mipha-3B nor the Mask2Former pkl provide; they keep their initialisation (spec §14).
_KEEP_INIT = ("SEG_token_projector.", "pixel_decoder.adapter_1.0.bias", "pixel_decoder.layer_1.0.bias",
              "predictor.SEG_query_embed", "predictor.new_query_embed", "predictor.SEG_proj.", "predictor.query_feat",
              "model.vision_tower.vision_model.head.")


def init_from_components(mipha_dir: str | Path, mask2former_pkl: str | Path, config=None, tokenizer=None,
                         device=None, dtype=None, seed: int = 0) -> Pretrained:
    """A trainable SegEarth-R2 from Mipha-3B (LLM, SigLIP, projector) and Mask2Former Swin-B (mask branch).

    Args:
        mipha_dir: Mipha-3B folder (safetensors, optionally tokenizer files).
        mask2former_pkl: ``model_final_54b88a.pkl`` (detectron2 pickle of numpy arrays).
        config: defaults to the 3B preset with V = ``len(tokenizer)``.
        tokenizer: defaults to Mipha's tokenizer files with ``[SEG]`` added, else :func:`build_phi2_tokenizer`.
        seed: seeds the initialisation of the tensors neither source provides (``SEG_token_projector``…).
    """
    import dataclasses

    from segearth_geo.model.segearth_r2.configuration import SegEarthR2Config
    from segearth_geo.model.segearth_r2.modeling import SegEarthR2
    from segearth_geo.model.tokenizer import build_phi2_tokenizer

    folder = Path(mipha_dir)
    files = weight_files(folder) if folder.is_dir() else []
    if not files:
        raise CheckpointError(f"Mipha-3B folder not found: {folder}")
    if tokenizer is None:
        tokenizer = _mipha_tokenizer(folder) or build_phi2_tokenizer()
    rows = len(tokenizer)
    if config is None:
        config = SegEarthR2Config.from_preset("segearth-r2-3b", vocab_size=rows)
    elif config.vocab_size != rows:
        config = dataclasses.replace(config, vocab_size=rows, seg_token_id=rows - 1)
    dev, dt = resolve_device(device or "cpu", dtype or torch.float32)
    torch.manual_seed(seed)
    with torch.device(dev):
        model = SegEarthR2(config)
    model.to(dtype=dt)
    loaded: set[str] = set()
    load_state_into(model, _mipha_state(files, rows), str(folder), loaded)
    pkl_state = mask2former_state(read_numpy_pickle(mask2former_pkl), config.mask.num_queries)
    load_state_into(model, pkl_state, str(mask2former_pkl), loaded)
    missing = sorted(k for k in set(model.state_dict()) - loaded if not k.startswith(_KEEP_INIT))
    if missing:
        raise CheckpointError(
            f"{len(missing)} tensors are in neither Mipha-3B nor the Mask2Former pkl, e.g. {missing[:5]}"
        )
    return Pretrained(model=model, tokenizer=tokenizer, path=folder)


def _mipha_tokenizer(folder: Path):
    """Mipha-3B's own tokenizer files with ``[SEG]`` added, or None when the folder has none."""
    from segearth_geo.model.tokenizer import add_seg_token, read_tokenizer_files

    if not ((folder / "tokenizer.json").is_file() or (folder / "vocab.json").is_file()):
        return None
    return add_seg_token(read_tokenizer_files(folder))
