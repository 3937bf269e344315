"""Build what training starts from: tokenizer, model, LoRA and the trainable/frozen sets (spec §9).

* ``model`` = a checkpoint folder → :func:`~segearth_geo.model.segearth_r2.checkpoint.load_pretrained` (weights and
  tokenizer); = a preset name → random init with the run's seed. A randomly initialised base is
  written once to ``<output_dir>/init`` so that ``merge`` and ``--resume`` start from the same weights.
* LoRA (peft) goes into the LLM's decoder layers only (``model.model.layers``): SigLIP also has
  ``q_proj``/``v_proj`` modules and must not get adapters.
* Frozen modules stay in eval mode during training (deliberate deviation, defect §16.13):
  :func:`set_train_mode` is called instead of ``model.train()``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from segearth_geo.errors import UsageError
from segearth_geo.training.config import TrainConfig

log = logging.getLogger(__name__)

INIT_DIR = "init"
TOKENIZER_DIR = "tokenizer"


@dataclass
class BuiltModel:
    """The model to train, its tokenizer, and where its frozen base weights can be re-read."""

    model: nn.Module
    tokenizer: object
    base_dir: Path | None  # checkpoint holding the weights before training (None: not needed, all trained)


def _template_corpus(template: str | None = None) -> list[str]:
    from segearth_geo.model.segearth_r2.prompt import ASSISTANT_HEADER, DEFAULT_TEMPLATE, SYSTEM, USER_MESSAGE, get_template

    corpus = [SYSTEM, USER_MESSAGE, f"USER: {ASSISTANT_HEADER}", "<|assistant|>"]
    if (template or DEFAULT_TEMPLATE) != DEFAULT_TEMPLATE:  # the model's own template text, placeholders out
        corpus.append(get_template(template).header.replace("<image>", " ").replace("<refer>", " "))
    return corpus


def build_tokenizer(cfg: TrainConfig, texts: Iterable[str], output_dir: Path):
    """The tokenizer for a preset start: saved one (resume), phi-2's, a folder's, or one trained on ``texts``."""
    from segearth_geo.model.tokenizer import (
        build_phi2_tokenizer,
        load_tokenizer,
        train_tokenizer,
    )

    saved = output_dir / TOKENIZER_DIR
    if (saved / "tokenizer.json").is_file():
        return load_tokenizer(saved)
    choice = cfg.tokenizer or ("phi2" if cfg.model == "segearth-r2-3b" else "train")
    if choice == "phi2":
        tokenizer = build_phi2_tokenizer()
    elif choice == "train":
        corpus = _template_corpus(cfg.model_overrides.get("template")) * 4 + list(texts)
        tokenizer = train_tokenizer(corpus, cfg.tokenizer_vocab_size)
    else:
        tokenizer = load_tokenizer(choice)
    tokenizer.save_pretrained(str(saved))
    return tokenizer


def build_model(cfg: TrainConfig, output_dir: Path, texts: Iterable[str] = (), rank: int = 0, barrier=None) -> BuiltModel:
    """Load or create the starting model (see the module docstring)."""
    from segearth_geo.model.segearth_r2.checkpoint import load_pretrained, save_pretrained
    from segearth_geo.model.segearth_r2.configuration import PRESET_NAMES, SegEarthR2Config
    from segearth_geo.model.segearth_r2.modeling import SegEarthR2

    source = Path(cfg.model).expanduser()
    if source.is_dir():
        loaded = load_pretrained(source, device="cpu", dtype=torch.float32)
        return BuiltModel(loaded.model, loaded.tokenizer, source)
    if cfg.model not in PRESET_NAMES:
        raise UsageError(f"model {cfg.model!r} is neither a checkpoint folder nor a preset ({', '.join(PRESET_NAMES)})")
    init = output_dir / INIT_DIR
    if (init / "config.json").is_file():  # resumed run: same start
        loaded = load_pretrained(init, device="cpu", dtype=torch.float32)
        return BuiltModel(loaded.model, loaded.tokenizer, init)
    if rank == 0:
        tokenizer = build_tokenizer(cfg, texts, output_dir)
    if barrier:
        barrier()
    if rank != 0:
        tokenizer = build_tokenizer(cfg, (), output_dir)
    overrides = dict(cfg.model_overrides)
    preset = SegEarthR2Config.from_preset(cfg.model)
    overrides.setdefault("vocab_size", len(tokenizer))
    overrides.setdefault("eos_token_id", tokenizer.eos_token_id)
    overrides.setdefault("lm_head_size", max(preset.lm_head_size, overrides["vocab_size"]))
    if cfg.max_length is not None:
        overrides.setdefault("max_length", cfg.max_length)
    config = SegEarthR2Config.from_preset(cfg.model, **overrides)
    torch.manual_seed(cfg.seed)
    model = SegEarthR2(config)
    base_dir = None
    if not cfg.train_all:  # frozen random weights must be re-readable for merge/resume
        if rank == 0:
            save_pretrained(model, tokenizer, init)
        base_dir = init
    if barrier:
        barrier()
    return BuiltModel(model, tokenizer, base_dir)


def add_lora(model: nn.Module, cfg: TrainConfig) -> int:
    """Inject LoRA adapters into the LLM decoder layers' ``cfg.lora_targets``; returns how many modules got one."""
    from peft import LoraConfig, inject_adapter_in_model
    from peft.tuners.lora import LoraLayer

    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.lora_targets), bias="none")
    inject_adapter_in_model(lora, model.model.layers)
    count = sum(isinstance(m, LoraLayer) for m in model.model.layers.modules())
    if count == 0:
        raise UsageError(f"no LLM module matches lora_targets {cfg.lora_targets}")
    return count


def frozen_modules(model: nn.Module, cfg: TrainConfig) -> list[nn.Module]:
    """Backbones that are frozen in this setup (kept in eval mode)."""
    if cfg.train_all:
        return []
    out = []
    if not cfg.train_siglip:
        out.append(model.model.vision_tower)
    if not cfg.train_projector:
        out.append(model.model.mm_projector)
    if not cfg.train_swin:
        out.append(model.model.vision_tower_mask)
    return out


def select_trainable(model: nn.Module, cfg: TrainConfig) -> tuple[int, int]:
    """Set ``requires_grad`` per spec §9 (or everything with ``train_all``); returns (trainable, total) counts.

    Parameters that are stored only for checkpoint compatibility (unused in forward, defect §16.7)
    are always frozen, which also keeps DDP from waiting for their gradients.
    """
    for p in model.parameters():
        p.requires_grad_(cfg.train_all)
    if not cfg.train_all:
        groups = [model.lm_head, model.pixel_decoder, model.predictor, model.SEG_token_projector]
        if cfg.train_siglip:
            groups.append(model.model.vision_tower)
        if cfg.train_projector:
            groups.append(model.model.mm_projector)
        if cfg.train_swin:
            groups.append(model.model.vision_tower_mask)
        if cfg.train_embeddings:
            groups.append(model.model.embed_tokens)
        if not cfg.use_lora:  # no adapters: the LLM trains fully
            groups += [model.model.layers, model.model.final_layernorm, model.model.embed_tokens]
        for module in groups:
            for p in module.parameters():
                p.requires_grad_(True)
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.requires_grad_(True)
    for p in model.checkpoint_only_parameters():
        p.requires_grad_(False)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def set_train_mode(model: nn.Module, cfg: TrainConfig) -> None:
    """``model.train()`` with the frozen backbones back in eval mode (no drop-path on a frozen Swin)."""
    model.train()
    for module in frozen_modules(model, cfg):
        module.eval()
