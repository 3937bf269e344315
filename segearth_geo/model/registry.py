"""One registry of models: what a ``--model`` spec means, which backend runs it, and what ``segearth-geo models`` lists.

A **backend** is a folder of code that turns a local checkpoint folder into a
:class:`~segearth_geo.prediction.Segmenter`; it is recognised by ``config.json`` (``model_type`` or
``architectures``). A **known model** is a named entry (alias) with a hub id and the facts users compare.
Adding a backend = its folder + one :class:`Backend` entry in :data:`BACKENDS` (+ :class:`KnownModel` entries).

Spec forms, resolved by :func:`resolve_spec` in this order:

1. ``"demo"`` – the bundled synthetic-only demo model;
2. an alias (``segearth-r1-earthreason``, ``segearth-r1-rrsisd``, ``sam3``) → its hub id;
3. a local folder → the backend named by its ``config.json``;
4. a Hugging Face repo id ``owner/name`` → downloaded (or found in the cache) with ``huggingface_hub``, then 3.

``"module:factory"`` specs are handled by :func:`segearth_geo.model.loading.load_segmenter` before this.
Nothing here imports torch.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from segearth_geo.errors import CheckpointError, ModelError, UsageError

log = logging.getLogger(__name__)

DEMO_MODEL_DIR = Path(__file__).resolve().parent.parent / "weights" / "demo"
CONFIG_NAME = "config.json"
_WEIGHT_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model"]


@dataclass(frozen=True)
class Backend:
    """Code that loads one checkpoint layout.

    Attributes:
        name: short name (``"segearth-r1"``).
        title: what users call it.
        loader: ``"module:callable"`` (``Class.method`` allowed) called as
            ``loader(folder, device=..., dtype=..., batch_size=..., **options)``; imported only when used.
        model_types / architectures: ``config.json`` values that select this backend.
    """

    name: str
    title: str
    loader: str
    model_types: tuple[str, ...]
    architectures: tuple[str, ...] = ()

    def matches(self, config: dict[str, Any]) -> bool:
        archs = config.get("architectures") or []
        return config.get("model_type") in self.model_types or any(a in self.architectures for a in archs)

    def load(self, folder: Path, **kwargs: Any):
        """Call the loader; an option it does not take is a :class:`UsageError` naming the ones it does,
        except the optional ``cache_mb`` (a bound for backends that cache per-chip image state), which
        backends without such a cache ignore."""
        import inspect

        loader = _import_attr(self.loader)
        parameters = inspect.signature(loader).parameters
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
            if "cache_mb" in kwargs and "cache_mb" not in parameters:
                log.info("%s keeps no per-chip image cache: cache_mb ignored", self.title)
                kwargs.pop("cache_mb")
            unknown = sorted(set(kwargs) - set(parameters))
            if unknown:
                known = ", ".join(name for name in parameters if name not in ("path", "folder", "self", "cls"))
                raise UsageError(f"{self.title} does not take the option(s) {', '.join(unknown)}; it takes {known}")
        return loader(folder, **kwargs)


@dataclass(frozen=True)
class KnownModel:
    """A named model users can pick (``segearth-geo models``).

    Attributes:
        alias: the spec users type.
        backend: a :data:`BACKENDS` key.
        hub_id: Hugging Face repo id (None: bundled or not public).
        licence, parameters (count), download (human text), chip_size (native input side, px), strengths.
        gated: the hub asks users to accept a licence before downloading.
        local_dir: bundled folder (the demo).
        options: loader keywords this checkpoint needs (e.g. its prompt template); the caller's win.
    """

    alias: str
    backend: str
    hub_id: str | None
    licence: str
    parameters: str
    download: str
    chip_size: int
    strengths: str
    gated: bool = False
    local_dir: Path | None = field(default=None, compare=False)
    options: tuple[tuple[str, Any], ...] = ()


BACKENDS: dict[str, Backend] = {
    "segearth-r2": Backend("segearth-r2", "SegEarth-R2 (Phi-2 + SigLIP + Swin-B)",
                           "segearth_geo.model.segearth_r2.segmenter:SegEarthR2Segmenter.from_pretrained",
                           model_types=("mipha_phi",), architectures=("SegEarthR2",)),
    "segearth-r1": Backend("segearth-r1", "SegEarth-R1 (Phi-1.5 + Swin-B)",
                           "segearth_geo.model.segearth_r1.segmenter:load_r1_segmenter",
                           model_types=("llava_phi",), architectures=("segearth_r1", "SegEarthR1")),
    "sam3": Backend("sam3", "SAM 3 (transformers Sam3Model)",
                    "segearth_geo.model.sam3.segmenter:load_sam3_segmenter",
                    model_types=("sam3", "sam3_video"), architectures=("Sam3Model", "Sam3VideoModel")),
}

KNOWN_MODELS: dict[str, KnownModel] = {m.alias: m for m in (
    KnownModel("demo", "segearth-r2", None, "Apache-2.0", "3.3 M", "bundled", 256,
               "synthetic-only: shows the pipeline on SynthEarth scenes, not for real imagery",
               local_dir=DEMO_MODEL_DIR),
    KnownModel("segearth-r1-earthreason", "segearth-r1", "earth-insights/SegEarth-R1-EarthReason", "Apache-2.0",
               "1.59 B", "≈3.2 GB (bf16)", 1024,
               "reasoning segmentation: implicit questions (\"where could a plane land?\"), one target per prompt",
               options=(("template", "reasoning"),)),
    KnownModel("segearth-r1-rrsisd", "segearth-r1", "earth-insights/SegEarth-R1-RRSIS-D", "Apache-2.0",
               "1.59 B", "≈3.2 GB (bf16)", 1024,
               "referring segmentation: one described object or region per prompt (\"the grey storage tank\")",
               options=(("template", "referring"),)),
    KnownModel("sam3", "sam3", "facebook/sam3", "SAM License (commercial use allowed)", "0.84 B", "≈3.4 GB",
               1008, "instance-level: every instance of each concept (\"buildings, swimming pools\"), with scores",
               gated=True),
)}


# ---------------------------------------------------------------------------------------------- resolving
@dataclass(frozen=True)
class ResolvedModel:
    """What a spec names: the backend and the local folder it loads from."""

    spec: str
    backend: Backend
    folder: Path
    known: KnownModel | None = None

    def load(self, **kwargs: Any):
        """The segmenter: ``backend.load(folder, **known.options, **kwargs)`` (``kwargs`` win)."""
        options = dict(self.known.options) if self.known else {}
        return self.backend.load(self.folder, **{**options, **kwargs})


def supported_forms() -> str:
    """One line listing every spec form (used in error messages)."""
    layouts = ", ".join(f"{'/'.join(b.model_types)} ({b.title.split(' (')[0]})" for b in BACKENDS.values())
    return (f"'demo', an alias ({', '.join(a for a in KNOWN_MODELS if a != 'demo')}), a checkpoint folder whose "
            f"config.json model_type is one of {layouts}, a Hugging Face repo id 'owner/name', or "
            "'module:factory' / 'file.py:factory'")


def backend_for_folder(folder: Path) -> Backend:
    """The backend named by ``folder/config.json`` (``model_type`` or ``architectures``)."""
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise ModelError(f"{folder} has no {CONFIG_NAME}, so its model layout is unknown; supported: "
                         f"{supported_forms()}")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {path}: {exc}") from exc
    if not isinstance(config, dict):
        raise ModelError(f"{path} is not a JSON object")
    for backend in BACKENDS.values():
        if backend.matches(config):
            return backend
    raise ModelError(f"{folder}: unknown model layout (config.json model_type {config.get('model_type')!r}, "
                     f"architectures {config.get('architectures')!r}); supported: {supported_forms()}")


def _looks_like_repo_id(text: str) -> bool:
    parts = text.split("/")
    return (len(parts) == 2 and all(parts) and not text.startswith((".", "~"))
            and all(p.replace("-", "").replace("_", "").replace(".", "").isalnum() for p in parts))


def resolve_spec(spec: str | Path) -> ResolvedModel:
    """Turn a spec (see the module docstring) into a backend and a local folder; download hub ids.

    Raises:
        ModelError: unknown spec or layout, or a hub id that cannot be fetched (one line, no traceback).
    """
    text = str(spec).strip()
    known = KNOWN_MODELS.get(text.lower())
    if known is not None and known.local_dir is not None:
        if not (known.local_dir / CONFIG_NAME).is_file():
            raise ModelError(f"the bundled {known.alias} model is missing from {known.local_dir}; reinstall segearth-geo")
        return ResolvedModel(text, BACKENDS[known.backend], known.local_dir, known)
    if known is not None and known.hub_id is None:
        raise ModelError(f"{known.alias!r} has no public weights yet; pass a local checkpoint folder")
    if known is not None:
        text = known.hub_id
    local = Path(text).expanduser()
    if local.is_dir():
        return ResolvedModel(str(spec), backend_for_folder(local), local, known)
    if known is None and (local.exists() or not _looks_like_repo_id(text)):
        what = "is a file, not a folder" if local.exists() else "is not a folder, alias or repo id"
        raise ModelError(f"model {text!r} {what}; supported: {supported_forms()}")
    if known is None:
        known = next((m for m in KNOWN_MODELS.values() if m.hub_id == text), None)
    folder = download(text, gated=bool(known and known.gated))
    return ResolvedModel(str(spec), backend_for_folder(folder), folder, known)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def download(repo_id: str, gated: bool = False) -> Path:
    """The local snapshot of ``repo_id`` (config, weights, tokenizer files): the cache first, then the hub.

    Raises:
        CheckpointError: one line naming the id, the cache folder and how to authenticate.
    """
    from huggingface_hub import constants, snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=_WEIGHT_PATTERNS, local_files_only=True))
    except Exception as exc:  # noqa: BLE001 - the hub raises many unrelated types; reported below
        reason = f"not in the local cache ({type(exc).__name__})"
    if _offline():
        reason += "; HF_HUB_OFFLINE is set"
    else:
        try:
            folder = Path(snapshot_download(repo_id, allow_patterns=_WEIGHT_PATTERNS))
            if not any(folder.glob("*.safetensors")):  # an older release with pytorch_model*.bin only
                folder = Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.bin"]))
            return folder
        except Exception as exc:  # noqa: BLE001
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            reason += f"; download failed: {type(exc).__name__}: {first}"
    gate = " (a gated model: accept its licence on huggingface.co first)" if gated else ""
    raise CheckpointError(
        f"cannot fetch {repo_id!r} (config.json, weights, tokenizer files) from the Hugging Face Hub and there is "
        f"no local folder of that name ({reason}); cache: {constants.HF_HUB_CACHE}. "
        f"To download{gate}: go online, set HF_TOKEN or run `hf auth login` (`huggingface-cli login`), then "
        f"`hf download {repo_id}`; or pass a local checkpoint folder"
    )


def _import_attr(path: str) -> Callable[..., Any]:
    module_name, _, attr = path.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        target = getattr(target, part)
    return target


# ---------------------------------------------------------------------------------------------- listing
@dataclass(frozen=True)
class ModelRow:
    """One line of ``segearth-geo models``."""

    alias: str
    backend: str
    hub_id: str
    licence: str
    parameters: str
    download: str
    chip_size: int
    strengths: str
    cached: str
    device: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def is_cached(model: KnownModel) -> bool:
    """The model's config.json and weights are already on this machine (no network)."""
    if model.local_dir is not None:
        return (model.local_dir / CONFIG_NAME).is_file()
    if model.hub_id is None:
        return False
    from huggingface_hub import try_to_load_from_cache

    def cached(name: str) -> bool:
        return isinstance(try_to_load_from_cache(model.hub_id, name), str)

    return cached(CONFIG_NAME) and any(cached(n) for n in ("model.safetensors", "model.safetensors.index.json",
                                                             "pytorch_model.bin", "pytorch_model.bin.index.json"))


def default_device(device: str = "auto") -> str:
    """The device ``load_segmenter(..., device=device)`` would use, in words."""
    if device != "auto":
        return device
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return "cpu"
    if torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(0)}, bf16)"
    return "cpu (fp32)"


def list_models(device: str = "auto") -> list[ModelRow]:
    """Every known model with its facts, whether it is cached, and the device it would run on."""
    where = default_device(device)
    return [ModelRow(alias=m.alias, backend=BACKENDS[m.backend].title, hub_id=m.hub_id or "-", licence=m.licence,
                     parameters=m.parameters, download=m.download, chip_size=m.chip_size, strengths=m.strengths,
                     cached="yes" if is_cached(m) else "no", device=where)
            for m in KNOWN_MODELS.values()]
