"""Training checkpoint → inference checkpoint in the official merged layout (spec §15).

LoRA adapters are folded into their base weights (``W ← W + (α/r)·B·A``, peft's ``merge``) and the
wrappers removed, so the state dict has exactly the official plain key names; the result is
written with :func:`~segearth_geo.model.segearth_r2.checkpoint.save_pretrained` and reads back with
:func:`~segearth_geo.model.segearth_r2.checkpoint.load_pretrained`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from torch import nn

from segearth_geo.errors import CheckpointError

log = logging.getLogger(__name__)


def merge_lora(model: nn.Module) -> int:
    """Fold every peft LoRA layer of ``model`` into its base ``Linear`` and unwrap it; returns how many."""
    from peft.tuners.lora import LoraLayer

    targets = [(name, module) for name, module in model.named_modules() if isinstance(module, LoraLayer)]
    for name, module in targets:
        module.merge(safe_merge=True)
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, module.get_base_layer())
    return len(targets)


def merge_checkpoint(checkpoint: str | Path, output: str | Path, dtype: torch.dtype | None = None) -> Path:
    """Merge a training checkpoint (``…/checkpoints/step-N`` or a run folder = its latest) into ``output``.

    The run's configuration (saved in the checkpoint) tells how the model was built; its base
    weights come from the starting checkpoint (or the run's ``init`` folder).
    """
    from safetensors.torch import load_file

    from segearth_geo.training.config import TrainConfig
    from segearth_geo.training.setup import add_lora, build_model, select_trainable
    from segearth_geo.training.state import load_trainable_state, resolve_resume

    path = resolve_resume(str(checkpoint), Path(checkpoint))
    if path is None:
        raise CheckpointError(f"no training checkpoint found in {checkpoint}")
    state = json.loads((path / "state.json").read_text(encoding="utf-8"))
    cfg = TrainConfig.from_dict(state["config"])
    run_dir = path.parent.parent
    built = build_model(cfg, run_dir)
    if cfg.use_lora:
        add_lora(built.model, cfg)
    select_trainable(built.model, cfg)
    load_trainable_state(built.model, load_file(str(path / "trainable.safetensors")), str(path))
    return export_merged(built.model, built.tokenizer, output, dtype)


def export_merged(model: nn.Module, tokenizer, output: str | Path, dtype: torch.dtype | None = None) -> Path:
    """Merge LoRA (if any) in place and write the official layout to ``output``."""
    from segearth_geo.model.segearth_r2.checkpoint import save_pretrained

    merged = merge_lora(model)
    for p in model.parameters():
        p.requires_grad_(False)
    if dtype is not None:
        model.to(dtype)
    out = save_pretrained(model.eval(), tokenizer, output)
    log.info("merged %d LoRA modules; inference checkpoint written to %s", merged, out)
    return Path(out)
