"""Typed configurations of the branches SegEarth-R1 and SegEarth-R2 share.

* ``TextConfig`` – the Phi language model (Phi-2 sizes by default; R1 uses Phi-1.5 sizes);
* ``MaskConfig`` – the mask branch: canvas, Swin backbone, MSDeformAttn pixel decoder and masked-attention decoder.

Each backend's own configuration (``segearth_r1/configuration.py``, ``segearth_r2/configuration.py``) holds these
as sub-configs next to what only it needs; each sub-config checks itself (``problems()``) for the backends.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TextConfig:
    """Phi-2 language model (spec §2.3). Rows of ``embed_tokens`` = top-level ``vocab_size``."""

    hidden_size: int = 2560  # D
    intermediate_size: int = 10240
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    partial_rotary_factor: float = 0.4
    rope_theta: float = 10000.0
    layer_norm_eps: float = 1e-5
    hidden_act: str = "gelu_new"
    resid_pdrop: float = 0.1
    embd_pdrop: float = 0.0
    attention_dropout: float = 0.0
    max_position_embeddings: int = 2048
    attn_implementation: str = "sdpa"  # "sdpa" or "eager" (eager is needed for output_attentions)

    def official_fields(self) -> dict[str, object]:
        """The Phi sizes as the official ``config.json`` files of both backends name them."""
        return {
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "partial_rotary_factor": self.partial_rotary_factor,
            "rope_theta": self.rope_theta,
            "hidden_act": self.hidden_act,
            "layer_norm_eps": self.layer_norm_eps,
            "max_position_embeddings": self.max_position_embeddings,
            "resid_pdrop": self.resid_pdrop,
            "embd_pdrop": self.embd_pdrop,
            "attention_dropout": self.attention_dropout,
            "qk_layernorm": False,
            "tie_word_embeddings": False,
        }

    def problems(self) -> list[str]:
        """What keeps the language model from being built (messages name the ``text.`` fields)."""
        if self.hidden_size % self.num_attention_heads:
            return ["text.hidden_size must be a multiple of text.num_attention_heads"]
        return []

    def to_phi_config(self, vocab_size: int, eos_token_id: int):
        """The transformers ``PhiConfig``; ``pad_token_id`` stays None so no embedding row is frozen."""
        from transformers import PhiConfig

        config = PhiConfig(
            vocab_size=vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_attention_heads,
            resid_pdrop=self.resid_pdrop,
            embd_pdrop=self.embd_pdrop,
            attention_dropout=self.attention_dropout,
            hidden_act=self.hidden_act,
            max_position_embeddings=self.max_position_embeddings,
            layer_norm_eps=self.layer_norm_eps,
            tie_word_embeddings=False,
            qk_layernorm=False,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": self.rope_theta,
                "partial_rotary_factor": self.partial_rotary_factor,
            },
            bos_token_id=eos_token_id,
            eos_token_id=eos_token_id,
            pad_token_id=None,
        )
        config._attn_implementation = self.attn_implementation
        return config


@dataclass
class MaskConfig:
    """Mask branch: canvas, Swin backbone, pixel decoder and masked-attention decoder (spec §2.4–2.9)."""

    image_size: int = 1024  # S: the square canvas (and the segmenter's chip size)
    pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)  # RGB, 0-255 scale
    pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    pad_value: int = 128  # canvas padding (bottom/right) before normalisation
    # Swin backbone
    swin_patch_size: int = 4
    swin_embed_dim: int = 128
    swin_depths: tuple[int, ...] = (2, 2, 18, 2)
    swin_num_heads: tuple[int, ...] = (4, 8, 16, 32)
    swin_window_size: int = 12
    swin_mlp_ratio: float = 4.0
    swin_drop_path_rate: float = 0.3
    # pixel decoder (its width is hidden_dim; the FFN width is hard-coded 1024 upstream)
    hidden_dim: int = 256  # C: pixel-decoder conv dim = mask dim = decoder hidden dim
    norm_groups: int = 32  # GroupNorm groups in the pixel decoder
    encoder_layers: int = 6
    encoder_ffn_dim: int = 1024
    encoder_heads: int = 8
    encoder_points: int = 4
    # masked-attention decoder ("predictor")
    decoder_layers: int = 9
    decoder_heads: int = 8
    decoder_ffn_dim: int = 2048
    num_queries: int = 100  # only sizes the unused checkpoint tensors query_feat/query_embed/SEG_query_embed

    @property
    def num_levels(self) -> int:
        """Feature levels of the deformable encoder and the decoder (res5, res4, res3)."""
        return 3

    @property
    def swin_dims(self) -> tuple[int, ...]:
        """Channels of res2..res5 (128/256/512/1024 for Swin-B)."""
        return tuple(self.swin_embed_dim * 2**i for i in range(len(self.swin_depths)))

    @property
    def mask_size(self) -> int:
        """Side of ``mask_features`` and of every mask prediction (S/4)."""
        return self.image_size // 4

    def problems(self) -> list[str]:
        """What keeps the mask branch from being built (messages name the ``mask.`` fields)."""
        problems = []
        if len(self.swin_depths) != 4 or len(self.swin_num_heads) != 4:
            problems.append("mask.swin_depths and mask.swin_num_heads need 4 stages")
        elif any(d % h for d, h in zip(self.swin_dims, self.swin_num_heads)):
            problems.append("each Swin stage width must be a multiple of its head count")
        if self.image_size % 32:
            problems.append(f"mask.image_size ({self.image_size}) must be a multiple of 32")
        d = self.hidden_dim
        if d % self.norm_groups or d % self.encoder_heads or d % self.decoder_heads:
            problems.append("mask.hidden_dim must be a multiple of norm_groups, encoder_heads and decoder_heads")
        if d % 4:
            problems.append("mask.hidden_dim must be a multiple of 4 (sine position encoding: sin/cos per axis)")
        return problems



# The ``tiny`` presets of both backends (same code paths, a few hundred thousand parameters): the Phi sizes and
# the mask branch (Swin window 3 pads at every stage). Each preset sets its own canvas side (``image_size``).
TINY_TEXT: dict[str, object] = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                                "num_attention_heads": 4, "max_position_embeddings": 512}
TINY_MASK: dict[str, object] = {"swin_embed_dim": 16, "swin_depths": (2, 2, 2, 2), "swin_num_heads": (1, 2, 2, 4),
                                "swin_window_size": 3, "swin_drop_path_rate": 0.1, "hidden_dim": 32, "norm_groups": 8,
                                "encoder_layers": 1, "encoder_ffn_dim": 64, "encoder_heads": 2, "encoder_points": 2,
                                "decoder_layers": 3, "decoder_heads": 2, "decoder_ffn_dim": 64, "num_queries": 4}
