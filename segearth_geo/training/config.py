"""The one training configuration: a dataclass with paper Table 8 defaults (spec §10).

Loaded from YAML (flat ``key: value`` mapping) and overridden from the command line with
``key=value`` strings whose values are parsed as YAML scalars/lists (``lr=2e-4``,
``lora=false``, ``lora_targets=[q_proj,v_proj]``, ``model_overrides={mask: {image_size: 256}}``).
Unknown keys raise :class:`~segearth_geo.errors.UsageError` listing the valid ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from segearth_geo.errors import UsageError


@dataclass
class TrainConfig:
    """Every knob of ``segearth-geo train``. Defaults reproduce the paper's Table 8 recipe.

    Model: ``model`` is a preset name (``"segearth-r2-3b"``, ``"tiny"``, ``"demo"``; random init,
    ``model_overrides`` passed to ``SegEarthR2Config.from_preset``) or a checkpoint directory in the
    official merged layout (its weights and tokenizer are the starting point). ``tokenizer`` is
    ``"phi2"`` (the 3B BPE), ``"train"`` (a byte-level BPE of ``tokenizer_vocab_size`` trained on
    the training texts; vocab/eos of the preset are replaced by the tokenizer's) or a directory;
    ``None`` = the checkpoint's own (or ``"phi2"`` for the 3B preset, ``"train"`` for others).

    Parameter sets (spec §9): by default LoRA on the LLM's ``lora_targets``; ``lm_head``, pixel
    decoder, predictor and ``SEG_token_projector`` fully trained; SigLIP, projector, Swin and the
    LLM base frozen (frozen backbones kept in eval mode). ``train_all`` trains every parameter (for
    from-scratch demo models; implies no LoRA).

    Data: ``dataset`` = ``"synthearth"`` (in-memory generator, ``synth_*`` knobs) or a reader name
    of :func:`segearth_geo.data.open_dataset` with ``data_root``/``split``.
    """

    # model
    model: str = "segearth-r2-3b"
    model_overrides: dict = field(default_factory=dict)
    tokenizer: str | None = None
    tokenizer_vocab_size: int = 600
    tokenizer_corpus_samples: int = 256  # training samples whose texts train a "train" tokenizer
    # data
    dataset: str = "synthearth"
    data_root: str | None = None
    split: str = "train"
    synth_chip_size: int | None = None  # default: the model's canvas side
    synth_seed: int = 0
    synth_samples: int = 100000  # size of the generated split (samples are made on access)
    max_length: int | None = None  # spliced-sequence limit; default config.max_length (2048)
    num_workers: int = 0
    # optimisation (Table 8)
    lr: float = 1e-4
    batch_size: int = 4  # per process and micro-step
    grad_accum: int = 1
    max_steps: int = 50000
    lr_schedule: str = "cosine"  # "cosine" or "constant" (both after linear warm-up)
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    max_grad_norm: float | None = None  # the official recipe does not clip
    # parameter sets
    lora: bool = True
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_targets: list = field(default_factory=lambda: ["q_proj", "v_proj"])
    train_all: bool = False
    train_siglip: bool = False
    train_projector: bool = False
    train_swin: bool = False
    train_embeddings: bool = False
    # losses (spec §8)
    text_weight: float = 1.0
    bce_weight: float = 5.0
    dice_weight: float = 5.0
    num_points: int = 12544
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75
    lambda_attn: float = 0.01
    attn_loss_variant: str = "per_layer"  # official; "averaged" = the paper's formula
    attn_gt_size: int = 800
    # runtime
    output_dir: str = "runs/segearth-r2"
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:N"
    precision: str = "auto"  # "auto" (bf16 autocast on CUDA, fp32 on CPU), "bf16", "fp32"
    gradient_checkpointing: bool = False
    threads: int | None = None  # torch CPU threads
    seed: int = 0
    log_every: int = 10
    save_every: int = 1000
    keep_checkpoints: int = 2
    eval_every: int = 0  # 0 = never during training
    eval_dataset: str | None = None  # default: same as dataset, split eval_split
    eval_split: str = "val"
    eval_samples: int = 64
    merge_at_end: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`UsageError` for values training cannot run with."""
        problems = []
        for name in ("batch_size", "grad_accum", "max_steps", "num_points", "lora_r", "log_every", "save_every"):
            if int(getattr(self, name)) < 1:
                problems.append(f"{name} must be >= 1")
        if not 0 <= self.warmup_ratio < 1:
            problems.append("warmup_ratio must be in [0, 1)")
        if self.lr_schedule not in ("cosine", "constant"):
            problems.append("lr_schedule must be 'cosine' or 'constant'")
        if self.attn_loss_variant not in ("per_layer", "averaged"):
            problems.append("attn_loss_variant must be 'per_layer' or 'averaged'")
        if self.precision not in ("auto", "bf16", "fp32"):
            problems.append("precision must be 'auto', 'bf16' or 'fp32'")
        if not 0 < self.importance_sample_ratio <= 1 or self.oversample_ratio < 1:
            problems.append("need 0 < importance_sample_ratio <= 1 and oversample_ratio >= 1")
        if not isinstance(self.model_overrides, dict):
            problems.append("model_overrides must be a mapping")
        if not isinstance(self.lora_targets, (list, tuple)) or not self.lora_targets:
            problems.append("lora_targets must be a non-empty list of module names")
        if problems:
            raise UsageError("invalid training config: " + "; ".join(problems))

    @property
    def use_lora(self) -> bool:
        return self.lora and not self.train_all

    # ------------------------------------------------------------------ I/O
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UsageError(f"unknown training config keys {unknown}; valid keys: {', '.join(sorted(known))}")
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        values = {k: _coerce(k, v, types[k]) for k, v in data.items()}
        return cls(**values)

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: Iterable[str] = ()) -> TrainConfig:
        """YAML file (optional) then ``key=value`` overrides, in order."""
        data: dict[str, Any] = {}
        if path is not None:
            path = Path(path)
            try:
                loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
            except OSError as exc:
                raise UsageError(f"cannot read training config {path}: {exc}") from exc
            except yaml.YAMLError as exc:
                raise UsageError(f"training config {path} is not valid YAML: {exc}") from exc
            if loaded is None:
                loaded = {}
            if not isinstance(loaded, dict):
                raise UsageError(f"training config {path} must be a mapping of key: value")
            data.update(loaded)
        data.update(parse_overrides(overrides))
        return cls.from_dict(data)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False), encoding="utf-8")
        return path


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``["lr=2e-4", "lora=false"]`` → ``{"lr": 0.0002, "lora": False}`` (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"override {item!r} must look like key=value")
        try:
            out[key] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise UsageError(f"override {item!r}: cannot parse the value: {exc}") from exc
    return out


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Accept ints for floats and numeric strings like ``"1e-4"`` (YAML 1.1 reads them as strings)."""
    text = str(annotation)
    if value is None:
        return None
    if text.startswith("float") and isinstance(value, (int, str)) and not isinstance(value, bool):
        try:
            return float(value)
        except ValueError as exc:
            raise UsageError(f"training config key {key!r} needs a number, got {value!r}") from exc
    if text.startswith("int") and isinstance(value, str):
        try:
            return int(value)
        except ValueError as exc:
            raise UsageError(f"training config key {key!r} needs an integer, got {value!r}") from exc
    if text == "bool" and not isinstance(value, bool):
        raise UsageError(f"training config key {key!r} needs true/false, got {value!r}")
    return value
