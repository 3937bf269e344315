"""One typed configuration for SegEarth-R1, with named presets (spec ``segearth_r1_model.md`` §2, §3).

``SegEarthR1Config`` reuses the R2 sub-configs for the parts the two models share:

* ``text`` – :class:`~segearth_geo.model.branch_configuration.TextConfig` (Phi-1.5 here: 24 layers, width 2048,
  partial rotary 0.5; ``vocab_size`` lives at the top level);
* ``mask`` – :class:`~segearth_geo.model.branch_configuration.MaskConfig` (Swin-B, MSDeformAttn pixel decoder,
  Mask2Former decoder, canvas side S = 1024, pad value 0);
* ``description`` – :class:`DescriptionConfig`, what is specific to R1: the compression connector and the
  description path (``text_projector``, ``origin_SEG_token_projector``, ``local_project``, ``d_layers``).

Presets: ``"segearth-r1"`` (the released sizes) and ``"tiny"`` (the same code paths, a few hundred thousand
parameters, S = 256, for tests).

``config.json`` is the official ``llava_phi`` file (§3) plus our full block under ``"segearth_geo"``; an official
file without the block is read as the released preset with the file's Phi fields and ``vocab_size``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from segearth_geo.errors import CheckpointError
from segearth_geo.model.branch_configuration import TINY_MASK, TINY_TEXT, MaskConfig, TextConfig
from segearth_geo.model.configuration_base import OUR_BLOCK, ConfigBase

MODEL_TYPE = "llava_phi"
TEMPLATES = ("referring", "reasoning")
# Projector type names the official builder accepted for the compression connector (§3).
CONNECTOR_TYPES = ("SparseConv_1", "compression_connector")
# Official config.json fields that size Phi-1.5 (§3) → our TextConfig field names.
_PHI_FIELDS = {
    "hidden_size": "hidden_size",
    "intermediate_size": "intermediate_size",
    "num_hidden_layers": "num_hidden_layers",
    "num_attention_heads": "num_attention_heads",
    "partial_rotary_factor": "partial_rotary_factor",
    "rope_theta": "rope_theta",
    "layer_norm_eps": "layer_norm_eps",
    "hidden_act": "hidden_act",
    "max_position_embeddings": "max_position_embeddings",
    "resid_pdrop": "resid_pdrop",
    "embd_pdrop": "embd_pdrop",
    "attention_dropout": "attention_dropout",
}


@dataclass
class DescriptionConfig:
    """Compression connector and description path (spec §2.3, §2.4).

    ``connector_dim`` is the connector's output width (``projector_outdim``) and must equal the LLM width;
    its input width is the Swin res5 width. ``dim`` is the description width (512), ``heads × dim_head`` the
    D-Projector attention width.
    """

    connector_dim: int = 2048
    dim: int = 512
    heads: int = 8
    dim_head: int = 64
    ff_mult: int = 1
    num_seg_queries: int = 100  # rows of the checkpoint-only ``seg_query``


# Phi-1.5 (spec §2.1); dropouts 0 as expected for phi-1.5.
PHI15_TEXT: dict[str, Any] = {
    "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 24, "num_attention_heads": 32,
    "partial_rotary_factor": 0.5, "rope_theta": 10000.0, "layer_norm_eps": 1e-5, "hidden_act": "gelu_new",
    "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attention_dropout": 0.0, "max_position_embeddings": 2048,
}

PRESETS: dict[str, dict[str, Any]] = {
    "segearth-r1": {},
    # Same code paths, tiny widths. S = 256: res5 8×8 → connector 4×4 → 2×2 = 4 image tokens; Swin window 3
    # pads at every stage (64/32/16/8 → 66/33/18/9).
    "tiny": {
        "vocab_size": 402,
        "max_length": 512,
        "text": dict(TINY_TEXT),
        "mask": {**TINY_MASK, "image_size": 256},
        "description": {"connector_dim": 64, "dim": 32, "heads": 2, "dim_head": 16, "num_seg_queries": 4},
    },
}


@dataclass
class SegEarthR1Config(ConfigBase):
    """Everything that sizes a SegEarth-R1 network; see the module docstring for presets.

    ``pad_token_id`` / ``seg_token_id`` are the ``[PAD]`` / ``[SEG]`` ids (read from the checkpoint's tokenizer
    on load; defaults V − 2 and V − 1). ``template`` picks the prompt (``"referring"`` for RRSIS-D,
    ``"reasoning"`` for EarthReason).
    """

    title: ClassVar[str] = "SegEarth-R1"
    sub_configs: ClassVar[dict[str, type]] = {"text": TextConfig, "mask": MaskConfig,
                                              "description": DescriptionConfig}
    sub_defaults: ClassVar[dict[str, dict[str, Any]]] = {"text": PHI15_TEXT, "mask": {"pad_value": 0}}
    presets: ClassVar[dict[str, dict[str, Any]]] = PRESETS

    text: TextConfig = field(default_factory=lambda: TextConfig(**PHI15_TEXT))
    mask: MaskConfig = field(default_factory=lambda: MaskConfig(pad_value=0))
    description: DescriptionConfig = field(default_factory=DescriptionConfig)
    vocab_size: int = 50297  # V: rows of embed_tokens and lm_head (nothing is generated: no EOS is needed)
    pad_token_id: int | None = None  # None -> vocab_size - 2
    seg_token_id: int | None = None  # None -> vocab_size - 1
    template: str = "referring"
    image_token_index: int = -200
    refer_token_index: int = -204
    max_length: int = 2048

    def _derive(self) -> None:
        if self.pad_token_id is None:
            self.pad_token_id = self.vocab_size - 2
        if self.seg_token_id is None:
            self.seg_token_id = self.vocab_size - 1

    @property
    def grid_sizes(self) -> tuple[int, int, int]:
        """Sides of res5 and of the two connector stages (32, 16, 8 at S = 1024)."""
        res5 = self.mask.image_size // 32
        first = (res5 + 1) // 2  # 3×3 conv, stride 2, padding 1
        return res5, first, (first + 1) // 2

    @property
    def num_image_tokens(self) -> int:
        """Visual tokens spliced into the LLM sequence (64 at S = 1024)."""
        return self.grid_sizes[2] ** 2

    def _problems(self) -> list[str]:
        problems = []
        if self.template not in TEMPLATES:
            problems.append(f"template must be one of {TEMPLATES}, not {self.template!r}")
        for name, value in (("pad_token_id", self.pad_token_id), ("seg_token_id", self.seg_token_id)):
            if not 0 <= value < self.vocab_size:
                problems.append(f"{name} {value} outside [0, {self.vocab_size})")
        problems += self.text.problems()
        if self.description.connector_dim != self.text.hidden_size:
            problems.append(f"description.connector_dim ({self.description.connector_dim}) must equal "
                            f"text.hidden_size ({self.text.hidden_size}): the connector's tokens enter the LLM")
        return problems + self.mask.problems()

    # ------------------------------------------------------------------ config.json
    def to_official_dict(self) -> dict[str, Any]:
        """``config.json`` as the official training writes it (spec §3), plus our block."""
        t = self.text
        return {
            "_name_or_path": "susnato/phi-1_5_dev",
            "architectures": ["segearth_r1"],
            "model_type": MODEL_TYPE,
            "vocab_size": self.vocab_size,
            **t.official_fields(),
            "rope_scaling": None,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "initializer_range": 0.02,
            "mm_vision_tower": "pre_trained/Swin_base/model_final_54b88a.pkl",
            "swin_type": "base",
            "mm_projector_type": CONNECTOR_TYPES[0],
            "projector_outdim": self.description.connector_dim,
            "mm_hidden_size": 256,
            "with_norm": True,
            "with_layernorm": False,
            "mask_decode_train": True,
            "output_attentions": True,
            "use_cache": True,
            "use_mm_proj": True,
            "image_aspect_ratio": "square",
            "image_grid_pinpoints": None,
            "tune_mm_mlp_adapter": False,
            "freeze_mm_mlp_adapter": False,
            "mm_use_im_start_end": False,
            "mm_use_im_patch_token": False,
            "torch_dtype": "bfloat16",
            "transformers_version": "4.36.2",
            OUR_BLOCK: self.to_dict(),
        }

    @classmethod
    def from_official_dict(cls, data: dict[str, Any], template: str | None = None) -> SegEarthR1Config:
        """Read a ``config.json`` dict: our block when present, else the released preset sized by the file.

        ``template`` (when given) overrides the block's or the default template.
        """
        if data.get("model_type") != MODEL_TYPE:
            raise CheckpointError(f"config.json has model_type {data.get('model_type')!r}, expected {MODEL_TYPE!r} "
                                  "(SegEarth-R1)")
        extra = {} if template is None else {"template": template}
        if OUR_BLOCK in data:
            return cls.from_dict({**data[OUR_BLOCK], **extra})
        if "vocab_size" not in data:
            raise CheckpointError("config.json has neither a 'segearth_geo' block nor 'vocab_size'")
        connector = data.get("mm_projector_type", CONNECTOR_TYPES[0])
        if connector not in CONNECTOR_TYPES:
            raise CheckpointError(f"config.json mm_projector_type {connector!r} is not the compression connector "
                                  f"({' or '.join(CONNECTOR_TYPES)}); only that variant was released")
        if "mm_vision_tower" not in data:
            raise CheckpointError("config.json has no mm_vision_tower: this checkpoint has no Swin image encoder")
        if data.get("swin_type", "base") != "base":
            raise CheckpointError(f"config.json swin_type {data['swin_type']!r}: only Swin-B ('base') is supported")
        text = {ours: data[theirs] for theirs, ours in _PHI_FIELDS.items() if data.get(theirs) is not None}
        return cls.from_preset("segearth-r1", vocab_size=int(data["vocab_size"]), text=text,
                               description={"connector_dim": int(data.get("projector_outdim", 4096))}, **extra)


PRESET_NAMES = tuple(PRESETS)
