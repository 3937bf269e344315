"""Shared helpers for model tests: a tiny SegEarth-R2 and a tiny tokenizer, built deterministically by
:mod:`segearth_geo.model.testing` (which benchmarks use too).

``tiny_model_and_tokenizer(seed=0)`` → ``(model, tokenizer)``: a byte-level BPE trained on a fixed corpus
(``<|endoftext|>`` = 0, ``[SEG]`` = V − 1) and ``SegEarthR2`` of the ``tiny`` preset sized to it, in eval mode.
With ``steer=True`` a few weights are tilted (:func:`steer_generation`) so that greedy generation of random
weights emits some text, then ``[SEG]`` for some chips, then EOS (random weights alone never emit ``[SEG]``).
"""

from __future__ import annotations

import numpy as np
import torch

from segearth_geo.model.testing import r2_tokenizer, random_r2


def tiny_tokenizer(vocab_size: int = 400):
    return r2_tokenizer("tiny", vocab_size)


def tiny_config(tokenizer, **overrides):
    from segearth_geo.model.segearth_r2.configuration import SegEarthR2Config

    return SegEarthR2Config.from_preset("tiny", vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id,
                                        **overrides)


def tiny_model_and_tokenizer(seed: int = 0, steer: bool = False, **overrides):
    """A deterministic tiny model (eval mode, fp32, CPU) and its tokenizer
    (:func:`segearth_geo.model.testing.random_r2`)."""
    model, tokenizer = random_r2("tiny", seed, **overrides)
    if steer:
        steer_generation(model)
    return model, tokenizer


def steer_generation(model, seg_logit: float = 1.05, bias: float = 0.5, eos_logit: float = 8.0) -> None:
    """Make ``[SEG]`` likely (shared final-LN bias direction, tuned near the tipping point so only some
    contexts emit it; top-2 logit margins stay > 4e-3, far above float noise) and EOS certain right after a fed
    ``[SEG]`` (its input embedding dominates the state)."""
    config = model.config
    width = config.text.hidden_size
    generator = torch.Generator().manual_seed(1)
    direction = torch.randn(width, generator=generator)
    direction /= direction.norm()
    seg_embed = torch.randn(width, generator=generator)
    seg_embed -= seg_embed.mean()
    seg_embed /= seg_embed.norm()
    with torch.no_grad():
        model.model.final_layernorm.bias.copy_(direction * bias)
        model.lm_head.weight[config.seg_token_id] = direction * seg_logit
        model.model.embed_tokens.weight[config.seg_token_id] = seg_embed * 20.0
        model.lm_head.weight[config.eos_token_id] = seg_embed * eos_logit / width**0.5


def random_chip(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A uint8 RGB chip with a bright rectangle (so images differ and have structure)."""
    rng = np.random.default_rng(seed)
    chip = rng.integers(0, 80, size=(height, width, 3), dtype=np.uint8)
    top, left = rng.integers(0, max(1, height // 2)), rng.integers(0, max(1, width // 2))
    chip[top: top + height // 3, left: left + width // 3] = rng.integers(150, 255, size=3, dtype=np.uint8)
    return chip
