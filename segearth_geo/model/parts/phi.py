"""The Phi language model shared by SegEarth-R1 (Phi-1.5) and SegEarth-R2 (Phi-2).

Both use transformers' ``PhiModel`` (``embed_tokens``, ``layers.{i}.self_attn.{q,k,v}_proj/dense``, ``mlp.fc1/fc2``,
``input_layernorm``, ``final_layernorm``); only the config differs. :class:`PhiLanguageModel` adds what both need:
the rotary ``inv_freq`` stays fp32 through dtype casts, and it can be rebuilt after a ``meta``-device build.
"""

from __future__ import annotations

import torch
from transformers import PhiModel
from transformers.models.phi.modeling_phi import PhiRotaryEmbedding


class PhiLanguageModel(PhiModel):
    """``PhiModel`` whose rotary table survives ``.to(dtype)`` and meta-device construction.

    Subclasses attach their vision children (checkpoint path ``model.*``); ``embed_tokens`` keeps
    ``config.vocab_size`` rows and is never resized.
    """

    def _apply(self, fn, recurse: bool = True):
        """After ``.to(dtype)``/``.half()``, rebuild the rotary ``inv_freq`` in fp32 (a bf16 copy would shift
        every RoPE angle); device moves keep working as usual."""
        super()._apply(fn, recurse)
        inv_freq = self.rotary_emb.inv_freq
        if inv_freq.dtype != torch.float32:
            self.rebuild_rotary(inv_freq.device)
        return self

    def rebuild_rotary(self, device: torch.device | str) -> None:
        """Recompute the non-persistent rotary buffers on ``device`` (they are not in checkpoints)."""
        with torch.device(device):
            self.rotary_emb = PhiRotaryEmbedding(config=self.config)
