"""One typed configuration for SegEarth-R2, with named presets.

``SegEarthR2Config`` holds three sub-configs:

* ``vision`` – the SigLIP tower (LLM image branch) and the ``mlp2x_gelu`` projector input width;
* ``text`` – the Phi-2 language model (``vocab_size`` lives at the top level: it is the tokenizer's);
* ``mask`` – the mask branch: Swin backbone, MSDeformAttn pixel decoder, masked-attention decoder,
  and the canvas (``image_size`` = S, the segmenter's chip size) with its normalisation.

Presets: ``"segearth-r2-3b"`` (the paper's sizes, spec §2), ``"tiny"`` (the same code paths with a few
hundred thousand parameters, for tests) and ``"demo"`` (a CPU-trainable size, S = 256).

The config round-trips through ``config.json`` in the official merged-checkpoint layout (spec §15) with our
own full block under the key ``"segearth_geo"``; an official file without that block is read as the 3B
preset with the file's ``vocab_size``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from segearth_geo.errors import CheckpointError
from segearth_geo.model.branch_configuration import TINY_MASK, TINY_TEXT, MaskConfig, TextConfig
from segearth_geo.model.configuration_base import OUR_BLOCK, ConfigBase


@dataclass
class VisionConfig:
    """SigLIP vision tower (spec §2.1). ``hidden_states[select_layer]`` (before ``post_layernorm``) is used."""

    image_size: int = 384  # s: SigLIP input side
    patch_size: int = 14
    hidden_size: int = 1152
    intermediate_size: int = 4304
    num_hidden_layers: int = 27
    num_attention_heads: int = 16
    layer_norm_eps: float = 1e-6
    hidden_act: str = "gelu_pytorch_tanh"
    select_layer: int = -2  # index into hidden_states (0 = embeddings, k = output of layer k-1)
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)  # on the 0-1 scale (spec §3.2)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    @property
    def grid_size(self) -> int:
        """Patches per side (27 for 384/14; the last ``image_size % patch_size`` pixels are unused)."""
        return self.image_size // self.patch_size

    @property
    def num_image_tokens(self) -> int:
        """T_img: image embeddings spliced into the LLM sequence (729 for the 3B preset)."""
        return self.grid_size**2

    @property
    def num_layers_run(self) -> int:
        """How many encoder layers must run to produce ``hidden_states[select_layer]``."""
        return self.select_layer % (self.num_hidden_layers + 1)

    def to_siglip_config(self):
        """The transformers ``SiglipVisionConfig`` (attention-pooling head on, as in the checkpoint)."""
        from transformers import SiglipVisionConfig

        return SiglipVisionConfig(
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_channels=3,
            image_size=self.image_size,
            patch_size=self.patch_size,
            hidden_act=self.hidden_act,
            layer_norm_eps=self.layer_norm_eps,
            attention_dropout=0.0,
            vision_use_head=True,
        )


# Presets as plain dicts over the defaults (the defaults are the 3B sizes).
PRESETS: dict[str, dict[str, Any]] = {
    "segearth-r2-3b": {},
    # Same code paths, tiny widths. Swin window 3 on a 128 px canvas pads at every stage
    # (32/16/8/4 -> 33/18/9/6); SigLIP 56 px / patch 14 -> 16 image tokens.
    "tiny": {
        "vocab_size": 500,
        "lm_head_size": 512,
        "eos_token_id": 0,
        "max_length": 512,
        "vision": {"image_size": 56, "patch_size": 14, "hidden_size": 32, "intermediate_size": 64,
                   "num_hidden_layers": 3, "num_attention_heads": 2},
        "text": dict(TINY_TEXT),
        "mask": {**TINY_MASK, "image_size": 128},
    },
    # A CPU-trainable size (~5 M parameters): S = 256, SigLIP 112 px (64 image tokens).
    "demo": {
        "vocab_size": 2048,
        "lm_head_size": 2048,
        "eos_token_id": 0,
        "max_length": 512,
        "vision": {"image_size": 112, "patch_size": 14, "hidden_size": 96, "intermediate_size": 256,
                   "num_hidden_layers": 4, "num_attention_heads": 4},
        "text": {"hidden_size": 192, "intermediate_size": 512, "num_hidden_layers": 4,
                 "num_attention_heads": 6, "resid_pdrop": 0.0, "max_position_embeddings": 512},
        "mask": {"image_size": 256, "swin_embed_dim": 24, "swin_depths": (2, 2, 2, 2),
                 "swin_num_heads": (1, 2, 4, 8), "swin_window_size": 7, "swin_drop_path_rate": 0.0,
                 "hidden_dim": 64, "norm_groups": 16, "encoder_layers": 2, "encoder_ffn_dim": 256,
                 "encoder_heads": 4, "encoder_points": 4, "decoder_layers": 3, "decoder_heads": 4,
                 "decoder_ffn_dim": 256, "num_queries": 4},
    },
}


@dataclass
class SegEarthR2Config(ConfigBase):
    """Everything that sizes a SegEarth-R2 network; see the module docstring for presets."""

    title: ClassVar[str] = "SegEarth-R2"
    sub_configs: ClassVar[dict[str, type]] = {"vision": VisionConfig, "text": TextConfig, "mask": MaskConfig}
    presets: ClassVar[dict[str, dict[str, Any]]] = PRESETS

    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    vocab_size: int = 50296  # V: rows of embed_tokens = tokenizer length including [SEG]
    lm_head_size: int = 51200  # rows of lm_head (logit width); ids >= V are not embeddable
    eos_token_id: int = 50256
    pad_token_id: int | None = None  # None -> eos_token_id
    seg_token_id: int | None = None  # None -> vocab_size - 1
    image_token_index: int = -200
    refer_token_index: int = -204
    ignore_index: int = -100
    max_length: int = 2048
    # prompt template (segearth_geo.model.segearth_r2.prompt.TEMPLATES); absent from a config.json = the default
    template: str = "training"

    def _derive(self) -> None:
        if self.pad_token_id is None:
            self.pad_token_id = self.eos_token_id
        if self.seg_token_id is None:
            self.seg_token_id = self.vocab_size - 1

    @property
    def num_image_tokens(self) -> int:
        return self.vision.num_image_tokens

    def _problems(self) -> list[str]:
        problems = []
        if self.lm_head_size < self.vocab_size:
            problems.append(f"lm_head_size ({self.lm_head_size}) < vocab_size ({self.vocab_size})")
        if not 0 <= self.seg_token_id < self.vocab_size:
            problems.append(f"seg_token_id {self.seg_token_id} outside [0, {self.vocab_size})")
        problems += self.text.problems()
        if self.vision.hidden_size % self.vision.num_attention_heads:
            problems.append("vision.hidden_size must be a multiple of vision.num_attention_heads")
        problems += self.mask.problems()
        from segearth_geo.model.segearth_r2.prompt import TEMPLATE_NAMES

        if self.template not in TEMPLATE_NAMES:
            problems.append(f"template must be one of {', '.join(TEMPLATE_NAMES)}, not {self.template!r}")
        return problems

    # ------------------------------------------------------------------ config.json
    def to_official_dict(self) -> dict[str, Any]:
        """``config.json`` content in the official merged layout (spec §15) plus our own block."""
        t, v = self.text, self.vision
        return {
            "architectures": ["SegEarthR2"],
            "model_type": "mipha_phi",
            "vocab_size": self.vocab_size,
            **t.official_fields(),
            "num_key_value_heads": t.num_attention_heads,
            "bos_token_id": self.eos_token_id,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
            "use_cache": True,
            "torch_dtype": "float16",
            "vision_config": {
                "vision_tower": {
                    "model_type": "siglip_vision_model",
                    "image_size": v.image_size,
                    "patch_size": v.patch_size,
                    "hidden_size": v.hidden_size,
                    "intermediate_size": v.intermediate_size,
                    "num_hidden_layers": v.num_hidden_layers,
                    "num_attention_heads": v.num_attention_heads,
                    "hidden_act": v.hidden_act,
                    "layer_norm_eps": v.layer_norm_eps,
                },
                "mm_projector": {"mm_projector_type": "mlp2x_gelu", "mm_hidden_size": v.hidden_size,
                                 "hidden_size": t.hidden_size},
            },
            "mm_vision_tower": "google/siglip-so400m-patch14-384",
            "mm_vision_select_layer": v.select_layer,
            "mm_projector_type": "mlp2x_gelu",
            "swin_type": "base",
            "use_mm_proj": True,
            "mask_decode_train": True,
            "freeze_mm_mlp_adapter": True,
            "image_aspect_ratio": "square",
            OUR_BLOCK: self.to_dict(),
        }

    @classmethod
    def from_official_dict(cls, data: dict[str, Any]) -> SegEarthR2Config:
        """Read a ``config.json`` dict: our block when present, else the 3B preset sized by the file."""
        if OUR_BLOCK in data:
            return cls.from_dict(data[OUR_BLOCK])
        if "vocab_size" not in data:
            raise CheckpointError("config.json has neither a 'segearth_geo' block nor 'vocab_size'; "
                                  "is this a SegEarth-R2 checkpoint?")
        overrides: dict[str, Any] = {"vocab_size": int(data["vocab_size"])}
        if "mm_vision_select_layer" in data:
            overrides["vision"] = {"select_layer": int(data["mm_vision_select_layer"])}
        return cls.from_preset("segearth-r2-3b", **overrides)


PRESET_NAMES = tuple(PRESETS)
