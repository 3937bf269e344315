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

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segearth_geo.errors import CheckpointError, UsageError
from segearth_geo.model.branch_configuration import MaskConfig, TextConfig

CONFIG_NAME = "config.json"
OUR_BLOCK = "segearth_geo"
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


@dataclass
class SegEarthR1Config:
    """Everything that sizes a SegEarth-R1 network; see the module docstring for presets.

    ``pad_token_id`` / ``seg_token_id`` are the ``[PAD]`` / ``[SEG]`` ids (read from the checkpoint's tokenizer
    on load; defaults V − 2 and V − 1). ``template`` picks the prompt (``"referring"`` for RRSIS-D,
    ``"reasoning"`` for EarthReason).
    """

    text: TextConfig = field(default_factory=lambda: TextConfig(**_PHI15_TEXT))
    mask: MaskConfig = field(default_factory=lambda: MaskConfig(pad_value=0))
    description: DescriptionConfig = field(default_factory=DescriptionConfig)
    vocab_size: int = 50297  # V: rows of embed_tokens and lm_head (nothing is generated: no EOS is needed)
    pad_token_id: int | None = None  # None -> vocab_size - 2
    seg_token_id: int | None = None  # None -> vocab_size - 1
    template: str = "referring"
    image_token_index: int = -200
    refer_token_index: int = -204
    max_length: int = 2048

    def __post_init__(self) -> None:
        for name, cls in (("text", TextConfig), ("mask", MaskConfig), ("description", DescriptionConfig)):
            value = getattr(self, name)
            if isinstance(value, dict):
                setattr(self, name, _sub_from_dict(cls, value))
        if self.pad_token_id is None:
            self.pad_token_id = self.vocab_size - 2
        if self.seg_token_id is None:
            self.seg_token_id = self.vocab_size - 1
        self.validate()

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

    def validate(self) -> None:
        """Raise :class:`UsageError` for sizes the network cannot be built with."""
        problems = []
        t, m, d = self.text, self.mask, self.description
        if self.template not in TEMPLATES:
            problems.append(f"template must be one of {TEMPLATES}, not {self.template!r}")
        for name in ("pad_token_id", "seg_token_id"):
            if not 0 <= getattr(self, name) < self.vocab_size:
                problems.append(f"{name} {getattr(self, name)} outside [0, {self.vocab_size})")
        if t.hidden_size % t.num_attention_heads:
            problems.append("text.hidden_size must be a multiple of text.num_attention_heads")
        if d.connector_dim != t.hidden_size:
            problems.append(f"description.connector_dim ({d.connector_dim}) must equal text.hidden_size "
                            f"({t.hidden_size}): the connector's tokens enter the LLM")
        if len(m.swin_depths) != 4 or len(m.swin_num_heads) != 4:
            problems.append("mask.swin_depths and mask.swin_num_heads need 4 stages")
        elif any(w % h for w, h in zip(m.swin_dims, m.swin_num_heads)):
            problems.append("each Swin stage width must be a multiple of its head count")
        if m.image_size % 32:
            problems.append(f"mask.image_size ({m.image_size}) must be a multiple of 32")
        if m.hidden_dim % m.norm_groups or m.hidden_dim % m.encoder_heads or m.hidden_dim % m.decoder_heads:
            problems.append("mask.hidden_dim must be a multiple of norm_groups, encoder_heads and decoder_heads")
        if problems:
            raise UsageError("invalid SegEarthR1Config: " + "; ".join(problems))

    # ------------------------------------------------------------------ presets
    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> SegEarthR1Config:
        """Build a named preset; ``overrides`` replace top-level fields, sub-config fields as dicts
        (``from_preset("tiny", mask={"image_size": 128})``)."""
        if name not in _PRESETS:
            raise UsageError(f"unknown SegEarth-R1 preset {name!r}; choose one of {sorted(_PRESETS)}")
        data = copy.deepcopy(_PRESETS[name])
        for key, value in overrides.items():
            if key in ("text", "mask", "description") and isinstance(value, dict):
                data.setdefault(key, {}).update(value)
            else:
                data[key] = value
        return cls.from_dict(data)

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SegEarthR1Config:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise UsageError(f"unknown SegEarthR1Config fields: {sorted(unknown)}")
        data = copy.deepcopy(data)
        for name, defaults in (("text", _PHI15_TEXT), ("mask", {"pad_value": 0})):
            if isinstance(data.get(name), dict):
                data[name] = {**defaults, **data[name]}
        return cls(**data)

    def to_official_dict(self) -> dict[str, Any]:
        """``config.json`` as the official training writes it (spec §3), plus our block."""
        t = self.text
        return {
            "_name_or_path": "susnato/phi-1_5_dev",
            "architectures": ["segearth_r1"],
            "model_type": MODEL_TYPE,
            "vocab_size": self.vocab_size,
            "hidden_size": t.hidden_size,
            "intermediate_size": t.intermediate_size,
            "num_hidden_layers": t.num_hidden_layers,
            "num_attention_heads": t.num_attention_heads,
            "partial_rotary_factor": t.partial_rotary_factor,
            "rope_theta": t.rope_theta,
            "rope_scaling": None,
            "hidden_act": t.hidden_act,
            "layer_norm_eps": t.layer_norm_eps,
            "max_position_embeddings": t.max_position_embeddings,
            "resid_pdrop": t.resid_pdrop,
            "embd_pdrop": t.embd_pdrop,
            "attention_dropout": t.attention_dropout,
            "qk_layernorm": False,
            "tie_word_embeddings": False,
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

    def save_json(self, directory: str | Path) -> Path:
        """Write ``config.json`` (official layout + our block) into ``directory``; return its path."""
        path = Path(directory) / CONFIG_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_official_dict(), indent=2) + "\n", encoding="utf-8")
        return path


def read_config_json(directory: str | Path) -> dict[str, Any]:
    """The raw ``config.json`` dict of a checkpoint directory."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"no {CONFIG_NAME} in {directory}; a SegEarth-R1 checkpoint directory needs one")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from exc


def _sub_from_dict(cls, data: dict[str, Any]):
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise UsageError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


# Phi-1.5 (spec §2.1); dropouts 0 as expected for phi-1.5.
_PHI15_TEXT: dict[str, Any] = {
    "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 24, "num_attention_heads": 32,
    "partial_rotary_factor": 0.5, "rope_theta": 10000.0, "layer_norm_eps": 1e-5, "hidden_act": "gelu_new",
    "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attention_dropout": 0.0, "max_position_embeddings": 2048,
}

_PRESETS: dict[str, dict[str, Any]] = {
    "segearth-r1": {},
    # Same code paths, tiny widths. S = 256: res5 8×8 → connector 4×4 → 2×2 = 4 image tokens; Swin window 3
    # pads at every stage (64/32/16/8 → 66/33/18/9).
    "tiny": {
        "vocab_size": 402,
        "max_length": 512,
        "text": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                 "max_position_embeddings": 512},
        "mask": {"image_size": 256, "swin_embed_dim": 16, "swin_depths": (2, 2, 2, 2),
                 "swin_num_heads": (1, 2, 2, 4), "swin_window_size": 3, "swin_drop_path_rate": 0.1,
                 "hidden_dim": 32, "norm_groups": 8, "encoder_layers": 1, "encoder_ffn_dim": 64,
                 "encoder_heads": 2, "encoder_points": 2, "decoder_layers": 3, "decoder_heads": 2,
                 "decoder_ffn_dim": 64, "num_queries": 4},
        "description": {"connector_dim": 64, "dim": 32, "heads": 2, "dim_head": 16, "num_seg_queries": 4},
    },
}

PRESET_NAMES = tuple(_PRESETS)
