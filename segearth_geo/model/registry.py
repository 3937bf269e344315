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
Hub ids and downloads: :mod:`segearth_geo.model.hub`. Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from segearth_geo.errors import ModelError, UsageError
from segearth_geo.model import hub
from segearth_geo.model.checkpoint_files import CONFIG_NAME, read_config_json
from segearth_geo.params import LoadOptions, field_name

log = logging.getLogger(__name__)

# Said wherever the demo runs (CLI summary, worker result, dock): it was never shown a real image.
DEMO_NOTICE = "synthetic demo — not for real imagery"
DEMO_MODEL_DIR = Path(__file__).resolve().parent.parent / "weights" / "demo"


@dataclass(frozen=True)
class Backend:
    """Code that loads one checkpoint layout: the folder ``segearth_geo/model/<package>/``.

    Every backend folder has the same files (``configuration``, ``modeling``, ``checkpoint``, ``segmenter``, …)
    and one entry, ``<package>/loading.py``: ``load(folder: Path, options: LoadOptions) -> segmenter``, imported
    only when used.

    Attributes:
        name: short name (``"segearth-r1"``).
        title: what users call it.
        package: its folder under ``segearth_geo/model/`` (``"segearth_r1"``).
        model_types / architectures: ``config.json`` values that select this backend.
        options: the backend options (:data:`~segearth_geo.params.BACKEND_OPTIONS`) it takes.
        role: ``"segmenter"`` (a ``--model``), or ``"localizer"`` (a ``--zoom-model`` only: it names a region,
            :mod:`segearth_geo.zoom.localizer`); a spec used in the other role is refused in one line.
    """

    name: str
    title: str
    package: str
    model_types: tuple[str, ...]
    architectures: tuple[str, ...] = ()
    options: tuple[str, ...] = ()
    role: str = "segmenter"

    def matches(self, config: dict[str, Any]) -> bool:
        archs = config.get("architectures") or []
        return config.get("model_type") in self.model_types or any(a in self.architectures for a in archs)

    def check_options(self, options: LoadOptions, style: str | None = None) -> None:
        """:class:`UsageError` (one line) for a backend option that this backend does not take."""
        refused = [name for name in options.backend_options() if name not in self.options]
        if refused:
            takes = ", ".join(field_name(n, style) for n in self.options) or "none"
            raise UsageError(f"{self.title} does not take {', '.join(field_name(n, style) for n in refused)}; "
                             f"its options: {takes}")

    def entry(self) -> Callable[[Path, LoadOptions], Any]:
        """The backend's ``load(folder, options)`` (its ``loading`` module is imported here)."""
        return importlib.import_module(f"segearth_geo.model.{self.package}.loading").load

    def load(self, folder: Path, options: LoadOptions, defaults: dict[str, Any] | None = None,
             style: str | None = None):
        """The segmenter of ``folder``: :meth:`entry` with ``options`` (the checkpoint's ``defaults`` for backend
        options not set), after :meth:`check_options`."""
        self.check_options(options, style)
        unset = {k: v for k, v in (defaults or {}).items() if getattr(options, k) is None}
        return self.entry()(folder, dataclasses.replace(options, **unset))


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
        gsd: the ground resolution (m/px, low and high) of the imagery it was trained on (approximate, from the
            training data's sources; the demo's is measured): a scene far outside gets a warning.
        notice: said wherever this model runs (the demo: not for real imagery).
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
    gsd: tuple[float, float] | None = None
    notice: str | None = None


BACKENDS: dict[str, Backend] = {
    "segearth-r2": Backend("segearth-r2", "SegEarth-R2 (Phi-2 + SigLIP + Swin-B)", "segearth_r2",
                           model_types=("mipha_phi",), architectures=("SegEarthR2",),
                           options=("cache_mb", "template")),
    "segearth-r1": Backend("segearth-r1", "SegEarth-R1 (Phi-1.5 + Swin-B)", "segearth_r1",
                           model_types=("llava_phi",), architectures=("segearth_r1", "SegEarthR1"),
                           options=("cache_mb", "template")),
    "sam3": Backend("sam3", "SAM 3 (transformers Sam3Model)", "sam3",
                    model_types=("sam3", "sam3_video"), architectures=("Sam3Model", "Sam3VideoModel"),
                    options=("score_threshold", "cache_mb", "sam3_output", "presence_threshold")),
    "zoomearth": Backend("zoomearth", "ZoomEarth (Qwen2.5-VL-3B, transformers)", "zoomearth",
                         model_types=("qwen2_5_vl",), architectures=("Qwen2_5_VLForConditionalGeneration",),
                         role="localizer"),
}

KNOWN_MODELS: dict[str, KnownModel] = {m.alias: m for m in (
    KnownModel("demo", "segearth-r2", None, "Apache-2.0", "3.3 M", "bundled", 256,
               "synthetic-only: shows the pipeline on SynthEarth scenes, not for real imagery",
               local_dir=DEMO_MODEL_DIR, gsd=(0.3, 2.0), notice=DEMO_NOTICE),  # 2 m: stage 4 (MODEL_CARD.md)
    KnownModel("segearth-r1-earthreason", "segearth-r1", "earth-insights/SegEarth-R1-EarthReason", "Apache-2.0",
               "1.59 B", "≈3.2 GB (bf16)", 1024,
               "reasoning segmentation: implicit questions (\"where could a plane land?\"), one target per prompt",
               options=(("template", "reasoning"),), gsd=(0.3, 10.0)),
    KnownModel("segearth-r1-rrsisd", "segearth-r1", "earth-insights/SegEarth-R1-RRSIS-D", "Apache-2.0",
               "1.59 B", "≈3.2 GB (bf16)", 1024,
               "referring segmentation: one described object or region per prompt (\"the grey storage tank\")",
               options=(("template", "referring"),), gsd=(0.5, 30.0)),
    KnownModel("sam3", "sam3", "facebook/sam3", "SAM License (commercial use allowed)", "0.84 B", "≈3.4 GB",
               1008, "instance-level: every instance of each concept (\"buildings, swimming pools\"), with scores",
               gated=True, gsd=(0.1, 2.0)),
    KnownModel("zoomearth", "zoomearth", "HappyBug/ZoomEarth-3B", "Apache-2.0", "3.75 B", "≈7.5 GB (bf16)", 512,
               "localizer, not a segmenter: --strategy zoom --zoom-model zoomearth looks at the whole scene (512 px) "
               "and names the one region an instruction is about; the --model segments it at full resolution"),
)}


# ---------------------------------------------------------------------------------------------- resolving
@dataclass(frozen=True)
class ResolvedModel:
    """What a spec names: the backend and the local folder it loads from."""

    spec: str
    backend: Backend
    folder: Path
    known: KnownModel | None = None

    def load(self, options: LoadOptions, style: str | None = None, role: str = "segmenter"):
        """The segmenter: the backend's loader with ``options`` (the known model's own options as defaults), told
        the known model's ground resolution and notice (read by :func:`~segearth_geo.prediction.describe_segmenter`).
        ``role``: what the caller wants (``"localizer"`` for the zoom strategy's); another role is refused."""
        check_role(self.backend, self.spec, role)
        defaults = dict(self.known.options) if self.known else {}
        segmenter = self.backend.load(self.folder, options, defaults, style)
        if self.known is not None:
            segmenter.gsd_range, segmenter.notice = self.known.gsd, self.known.notice
        return segmenter


def supported_forms() -> str:
    """One line listing every spec form (used in error messages)."""
    segmenters = [b for b in BACKENDS.values() if b.role == "segmenter"]  # a localizer is a --zoom-model only
    layouts = ", ".join(f"{'/'.join(b.model_types)} ({b.title.split(' (')[0]})" for b in segmenters)
    aliases = [a for a, m in KNOWN_MODELS.items() if a != "demo" and BACKENDS[m.backend].role == "segmenter"]
    return (f"'demo', an alias ({', '.join(aliases)}), a checkpoint folder whose "
            f"config.json model_type is one of {layouts}, a Hugging Face repo id 'owner/name', or "
            "'module:factory' / 'file.py:factory'")


def backend_for_folder(folder: Path) -> Backend:
    """The backend named by ``folder/config.json`` (``model_type`` or ``architectures``)."""
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise ModelError(f"{folder} has no {CONFIG_NAME}, so its model layout is unknown; supported: "
                         f"{supported_forms()}")
    config = read_config_json(path)
    for backend in BACKENDS.values():
        if backend.matches(config):
            return backend
    raise ModelError(f"{folder}: unknown model layout (config.json model_type {config.get('model_type')!r}, "
                     f"architectures {config.get('architectures')!r}); supported: {supported_forms()}")


def backend_of(segmenter_class: type) -> Backend:
    """The backend whose folder defines ``segmenter_class`` or a base of it (``Sam3Segmenter`` → SAM3)."""
    for klass in segmenter_class.__mro__:
        package = klass.__module__.removeprefix("segearth_geo.model.").split(".")[0]
        for backend in BACKENDS.values():
            if klass.__module__.startswith("segearth_geo.model.") and backend.package == package:
                return backend
    raise ModelError(f"{segmenter_class.__name__} is not a segmenter of a backend folder of segearth_geo.model")


def check_role(backend: Backend, spec: str | Path, role: str | None) -> None:
    """:class:`UsageError` (one line) when ``backend`` cannot serve as ``role`` (``None``: any role)."""
    if role is None or backend.role == role:
        return
    if backend.role == "localizer":
        raise UsageError(f"{spec} is a localizer ({backend.title}), not a segmenter: use it as "
                         f"{field_name('zoom_model')} {spec} with {field_name('strategy')} zoom, and a segmenter as "
                         f"{field_name('model')}")
    raise UsageError(f"{spec} is a {backend.role} ({backend.title}), not a {role}")


def resolve_spec(spec: str | Path, role: str | None = "segmenter") -> ResolvedModel:
    """Turn a spec (see the module docstring) into a backend and a local folder; download hub ids.

    ``role``: what the caller will use it as (``"segmenter"``, ``"localizer"``, ``None``: either); an alias of
    the other role is refused before anything is downloaded.

    Raises:
        ModelError: unknown spec or layout, or a hub id that cannot be fetched (one line, no traceback).
        UsageError: a model of another role.
    """
    text = str(spec).strip()
    known = KNOWN_MODELS.get(text.lower())
    if known is not None:
        check_role(BACKENDS[known.backend], known.alias, role)
    if known is not None and known.local_dir is not None:
        if not (known.local_dir / CONFIG_NAME).is_file():
            raise ModelError(f"the bundled {known.alias} model is missing from {known.local_dir}; reinstall segearth-geo")
        return ResolvedModel(text, BACKENDS[known.backend], known.local_dir, known)
    if known is not None and known.hub_id is None:
        raise ModelError(f"{known.alias!r} has no public weights yet; pass a local checkpoint folder")
    if known is not None:
        text = known.hub_id
    local = Path(text).expanduser()
    if os.path.isdir(local):  # never raises (a name too long for a path is not a folder)
        backend = backend_for_folder(local)
        check_role(backend, spec, role)
        return ResolvedModel(str(spec), backend, local, known)
    if known is None and (os.path.lexists(local) or not hub.looks_like_repo_id(text)):
        what = "is a file, not a folder" if os.path.lexists(local) else "is not a folder, alias or repo id"
        raise ModelError(f"model {text!r} {what}; supported: {supported_forms()}")
    if known is None:
        known = next((m for m in KNOWN_MODELS.values() if m.hub_id == text), None)
    folder = hub.download(text, gated=bool(known and known.gated))
    backend = backend_for_folder(folder)
    check_role(backend, spec, role)
    return ResolvedModel(str(spec), backend, folder, known)


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
    gsd: str = "-"

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def is_cached(model: KnownModel) -> bool:
    """The model's config.json and weights are already on this machine (no network)."""
    if model.local_dir is not None:
        return (model.local_dir / CONFIG_NAME).is_file()
    return model.hub_id is not None and hub.is_cached(model.hub_id)


def default_device(device: str = "auto") -> str:
    """The device ``load_segmenter(..., device=device)`` would use, in words; :class:`UsageError` (one line) when
    ``device`` names one this machine lacks (the picker of :mod:`segearth_geo.model.device`)."""
    from segearth_geo.model.device import describe_device, resolve_device

    chosen, dtype = resolve_device(device)
    return describe_device(chosen, dtype) if device == "auto" else device


def list_models(device: str = "auto") -> list[ModelRow]:
    """Every known model with its facts, whether it is cached, and the device it would run on."""
    where = default_device(device)
    return [ModelRow(alias=m.alias, backend=BACKENDS[m.backend].title, hub_id=m.hub_id or "-", licence=m.licence,
                     parameters=m.parameters, download=m.download, chip_size=m.chip_size, strengths=m.strengths,
                     cached="yes" if is_cached(m) else "no", device=where, gsd=gsd_text(m.gsd))
            for m in KNOWN_MODELS.values()]


def gsd_text(gsd: tuple[float, float] | None) -> str:
    """``(0.3, 1.0)`` -> ``"0.3–1 m"``."""
    return "-" if gsd is None else f"{gsd[0]:g}–{gsd[1]:g} m"
