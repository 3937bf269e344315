"""The parameters of a run, declared once: :class:`SegmentParams` (how a scene is segmented) and
:class:`LoadOptions` (which model, on what, with which backend options).

Every field carries its :class:`Rule`; the rule is the only place where its type and range live. The
Python API (:func:`~segearth_geo.segment_raster`, :func:`~segearth_geo.load_segmenter`,
:func:`~segearth_geo.run_batch`), the CLI (``cli/options.py`` builds its options from these fields), the
worker (:meth:`SegmentParams.from_request`) and batch jobs all go through :meth:`SegmentParams.check` /
:meth:`LoadOptions.check`, so a value refused on one path is refused on every path with the same words; only
the way the field is named differs (``min_area`` in Python, ``--min-area`` on the command line,
``"min_area"`` in a worker request: see :data:`STYLES`).

Nothing here imports torch, rasterio or geopandas.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import numbers
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from typing import Any

from segearth_geo.chips import MAX_CHIPS, default_overlap
from segearth_geo.errors import UsageError

# How a field is named in a message, per entry point.
STYLES = ("python", "cli", "json")
_NAMING: contextvars.ContextVar[str] = contextvars.ContextVar("segearth_naming", default="python")


@contextlib.contextmanager
def naming(style: str) -> Iterator[None]:
    """Name fields in ``style`` in every message raised below (the CLI: ``cli``, the worker: ``json``)."""
    token = _NAMING.set(style)
    try:
        yield
    finally:
        _NAMING.reset(token)


def field_name(name: str, style: str | None = None) -> str:
    """``min_area`` as the caller knows it: ``min_area``, ``--min-area`` or ``"min_area"``.

    ``style`` ``None``: the style of the entry point running now (:func:`naming`; Python by default).
    """
    style = style or _NAMING.get()
    if style == "cli":
        return "--" + name.replace("_", "-")
    if style == "json":
        return f'"{name}"'
    return name


@dataclass(frozen=True)
class Rule:
    """What values one field takes.

    Attributes:
        kind: ``count`` (int), ``number`` (finite real), ``flag`` (bool), ``text`` (non-empty str),
            ``path`` (a non-empty str or ``os.PathLike``, kept as str), ``choice`` (one of ``choices``),
            ``bands`` (1-3 band numbers), ``bbox`` (4 finite numbers), ``secret`` (printable ASCII without
            spaces, at most 4096 characters; never shown in a message).
        low, high: inclusive bounds of a count or number (``low_open``/``high_open``: exclusive).
        what: how a valid value is described in errors ("a probability between 0 and 1").
        choices: the values of a ``choice``.
        pattern: a regular expression a ``text`` must match in full.
        metavar, help, flag: how the CLI shows the option (``flag``: a different option name).
    """

    kind: str
    what: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] = ()
    pattern: str | None = None
    metavar: str | None = None
    help: str = ""
    flag: str | None = None

    def coerce(self, value: Any, strict_json: bool = False) -> Any:
        """``value`` in its canonical Python form, or ``ValueError`` with the reason (without the field name).

        ``strict_json``: the value came from JSON, so text forms of numbers (``"4,3,2"`` for bands excepted)
        are refused rather than parsed.
        """
        kind = self.kind
        if kind == "count":
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise ValueError(f"must be {self.what}, got {value!r}")
            value = int(value)
        elif kind == "number":
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ValueError(f"must be {self.what}, got {value!r}")
            value = float(value)
            if not math.isfinite(value):
                raise ValueError(f"must be a finite number ({self.what}), got {value!r}")
        elif kind == "flag":
            if not isinstance(value, bool):
                raise ValueError(f"must be true or false, got {value!r}")
            return value
        elif kind == "path":
            if isinstance(value, os.PathLike) and not strict_json:
                value = os.fspath(value)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"must be {self.what}, got {value!r}")
            _check_utf8(value)
            return value
        elif kind in ("text", "choice"):
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"must be {self.what}, got {value!r}")
            _check_utf8(value)
            value = value.strip()
            if kind == "choice" and value not in self.choices:
                raise ValueError(f"must be one of {', '.join(self.choices)}, got {value!r}")
            if self.pattern is not None and not re.fullmatch(self.pattern, value):
                raise ValueError(f"must be {self.what}, got {value!r}")
            return value
        elif kind == "secret":
            return _secret(value, self.what)
        elif kind == "bands":
            return _bands(value, self.what)
        elif kind == "bbox":
            return _bbox(value, self.what)
        else:  # pragma: no cover - a programming error in a field declaration
            raise AssertionError(f"unknown rule kind {kind!r}")
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            raise ValueError(f"must be {self.what}, got {value!r}")
        if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
            raise ValueError(f"must be {self.what}, got {value!r}")
        return value


def _check_utf8(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"is not valid UTF-8 text (it holds {text.encode('utf-8', 'backslashreplace')[:40]!r})") from None


def _secret(value: Any, what: str) -> str:
    """A credential checked without ever echoing it (messages name only what is wrong)."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"must be {what} (got {'an empty text' if isinstance(value, str) else type(value).__name__})")
    value = value.strip()
    if len(value) > 4096 or not all(33 <= ord(ch) <= 126 for ch in value):
        raise ValueError(f"must be {what}: printable ASCII without spaces, at most 4096 characters (the value "
                         "is not shown)")
    return value


def _bands(value: Any, what: str) -> tuple[int, ...]:
    if isinstance(value, str):
        try:
            value = [int(part) for part in value.split(",")]
        except ValueError:
            raise ValueError(f"must be {what}, got {value!r}") from None
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError(f"must be {what}, got {value!r}")
    if not all(isinstance(b, numbers.Integral) and not isinstance(b, bool) for b in value):
        raise ValueError(f"must be {what}, got {value!r}")
    bands = tuple(int(b) for b in value)
    if not 1 <= len(bands) <= 3 or any(b < 1 for b in bands):
        raise ValueError(f"must be {what}, got {value!r}")
    return bands


def _bbox(value: Any, what: str) -> tuple[float, float, float, float]:
    if isinstance(value, str):
        try:
            value = [float(part) for part in value.split(",")]
        except ValueError:
            raise ValueError(f"must be {what}, got {value!r}") from None
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 4:
        raise ValueError(f"must be {what}, got {value!r}")
    if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) for v in value):
        raise ValueError(f"must be {what} (finite numbers), got {value!r}")
    minx, miny, maxx, maxy = (float(v) for v in value)
    # A huge finite bbox (±1e308) is fine: it is clamped to the raster in pixel space.
    if not (minx < maxx and miny < maxy):
        raise ValueError(f"needs minx < maxx and miny < maxy, got {value!r}")
    return minx, miny, maxx, maxy


def param(default: Any, rule: Rule) -> Any:
    """A dataclass field with its :class:`Rule` (``metadata["rule"]``)."""
    return field(default=default, metadata={"rule": rule})


def rule_of(cls: type, name: str) -> Rule:
    return next(f.metadata["rule"] for f in fields(cls) if f.name == name)


class Checked:
    """Shared behaviour of the parameter dataclasses: one ``check`` over the fields' rules, JSON in and out."""

    def check(self, style: str | None = None):
        """A copy with every value in canonical form; :class:`UsageError` naming the field (in ``style``)."""
        values = {}
        for f in fields(self):
            value = getattr(self, f.name)
            rule = f.metadata.get("rule")
            if value is None or rule is None:
                values[f.name] = value
                continue
            try:
                values[f.name] = rule.coerce(value)
            except ValueError as exc:
                raise UsageError(f"{field_name(f.name, style)} {exc}") from None
        checked = replace(self, **values)
        checked._check_together(style)
        return checked

    def _check_together(self, style: str | None) -> None:
        """Rules between fields (overridden)."""

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_request(cls, request: Mapping[str, Any], style: str = "json"):
        """The fields of a JSON request (the worker's; unknown keys are ignored here, refused by the protocol).

        Values must have their JSON type: ``"0.5"`` is not a number, ``1`` is not ``true``; ``null`` means unset.
        """
        values = {}
        for f in fields(cls):
            if f.name not in request or request[f.name] is None:
                continue
            value = request[f.name]
            rule = f.metadata.get("rule")
            if rule is not None:
                try:
                    value = rule.coerce(value, strict_json=True)
                except ValueError as exc:
                    raise UsageError(f"{field_name(f.name, style)} {exc}") from None
            values[f.name] = value
        return cls(**values).check(style)

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any], style: str | None = None):
        """The fields named in ``kwargs`` (others: defaults); checked."""
        return cls(**{k: v for k, v in kwargs.items() if k in cls.names()}).check(style)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def changed(self) -> dict[str, Any]:
        """The fields that differ from their defaults (what a request needs to carry)."""
        out = {}
        for f in fields(self):
            default = f.default if f.default is not MISSING else None
            value = getattr(self, f.name)
            if value != default:
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


# ---------------------------------------------------------------------------------------------- SegmentParams
@dataclass(frozen=True)
class SegmentParams(Checked):
    """How a scene is cut, read, thresholded and vectorised: the ``segment`` options of every entry point.

    ``overlap`` ``None`` means the default for the model's chip size (:func:`default_overlap`);
    :meth:`resolve` fills it in once the chip size is known.
    """

    overlap: int | None = param(None, Rule(
        "count", "a non-negative number of pixels", low=0, metavar="N",
        help="Pixels shared by neighbouring chips (context around each chip's core). "
             "Default: 1/8 of the model's chip size (128 for SegEarth-R2's 1024-px chips)."))
    gsd: float | None = param(None, Rule(
        "number", "a positive ground distance in metres per pixel", low=0, low_open=True, metavar="METRES",
        help="Resample reads to this ground distance in metres per pixel (default: the raster's own)."))
    bands: tuple[int, ...] | None = param(None, Rule(
        "bands", "1 to 3 comma-separated band numbers (from 1) such as 4,3,2", metavar="B[,B,B]",
        help="1-based source bands shown as R,G,B, e.g. 4,3,2; one band is shown as grey, two as "
             "R=first,G=second,B=first. Default: the RGB colour interpretation, else the first three "
             "non-alpha bands (a raster with one or two shows its first band as grey)."))
    bbox: tuple[float, float, float, float] | None = param(None, Rule(
        "bbox", "four numbers minx,miny,maxx,maxy", metavar="MINX,MINY,MAXX,MAXY",
        help="Only process this area (in --bbox-crs, default the raster's CRS)."))
    bbox_crs: str | None = param(None, Rule(
        "text", "a CRS such as EPSG:4326", metavar="CRS",
        help="CRS of --bbox, e.g. EPSG:4326 (default: the raster's CRS)."))
    threshold: float = param(0.5, Rule(
        "number", "a probability between 0 and 1", low=0.0, high=1.0, metavar="T",
        help="Probability at or above which a pixel belongs to a target."))
    min_area: float | None = param(None, Rule(
        "number", "a non-negative area in m²", low=0.0, metavar="M2", help="Drop polygons smaller than this (m²)."))
    simplify: float | None = param(None, Rule(
        "number", "a non-negative tolerance in map units", low=0.0, metavar="TOL",
        help="Topology-preserving simplification tolerance in map units."))
    batch_size: int = param(8, Rule(
        "count", "a positive number of chips", low=1, metavar="N", help="Chips per model call."))
    max_chips: int | None = param(MAX_CHIPS, Rule(
        "count", "a non-negative number of chips (0: no limit)", low=0, metavar="N",
        help="Refuse a job of more chips than this before any work (0: no limit)."))
    # How the area is looked at (issue 22, segearth_geo.zoom): every chip, or an overview first.
    strategy: str = param("grid", Rule(
        "choice", "grid, zoom or auto", choices=("grid", "zoom", "auto"),
        help="grid: every chip at full resolution (default). zoom: look at a downscaled overview of the whole "
             "area first, then at full resolution only where it saw the target (one answer for instance-level "
             "instructions such as 'the largest airplane'; fewer chips for sparse targets). auto: zoom for "
             "instance-level instructions and large sparse areas, else grid."))
    zoom_model: str | None = param(None, Rule(
        "text", "a model spec such as zoomearth", metavar="M",
        help="With --strategy zoom/auto: what looks at the overview (default: the segmenter itself); 'zoomearth' "
             "(HappyBug/ZoomEarth-3B) asks for one region per instruction; any other model spec segments it."))
    min_coverage: float | None = param(None, Rule(
        "number", "a fraction of the area between 0 and 1", low=0.0, high=1.0, metavar="F",
        help="With --strategy zoom/auto: look at least this fraction of the area at full resolution, the chips "
             "with the strongest overview evidence first (default 0)."))
    # What GIS users do with the polygons next (issue 19, segearth_geo.postprocess, segearth_geo.raster_output).
    regularize: bool = param(False, Rule(
        "flag", "true or false",
        help="Square up building footprints after stitching: right angles, 45° diagonals where the shape has them, "
             "one orientation per group of touching polygons so shared walls stay shared."))
    regularize_iou: float | None = param(None, Rule(
        "number", "an IoU between 0 and 1", low=0.0, high=1.0, metavar="IOU",
        help="With --regularize: a footprint whose IoU with its mask's polygon would fall below this keeps the "
             "mask's outline (default 0.75)."))
    smooth: bool = param(False, Rule(
        "flag", "true or false",
        help="Smooth outlines of natural features (water, forest, fields) after stitching, without "
             "self-intersections and without gaps between neighbouring polygons."))
    raster_out: str | None = param(None, Rule(
        "path", "a GeoTIFF file name ending in .tif", metavar="PATH.tif",
        help="Also write the stitched probability as a Cloud-Optimized GeoTIFF in the processing grid: one "
             "float32 band per prompt (0-1, nodata -1 where the scene is invalid)."))
    labels_out: str | None = param(None, Rule(
        "path", "a GeoTIFF file name ending in .tif", metavar="PATH.tif",
        help="Also write the polygons' ids (the output's id column) as a Cloud-Optimized GeoTIFF: one int32 band "
             "per prompt, 0 where there is no polygon, nodata -1 where the scene is invalid."))

    def _check_together(self, style: str | None) -> None:
        if self.regularize and self.smooth:
            raise UsageError(f"{field_name('regularize', style)} (buildings) and {field_name('smooth', style)} "
                             "(natural features) exclude each other; run the two prompts separately")
        if self.regularize_iou is not None and not self.regularize:
            raise UsageError(f"{field_name('regularize_iou', style)} acts only with {field_name('regularize', style)}")
        for name in ("zoom_model", "min_coverage"):  # zoom options act only with a zoom strategy
            if getattr(self, name) is not None and self.strategy == "grid":
                raise UsageError(f"{field_name(name, style)} acts only with {field_name('strategy', style)} zoom or "
                                 "auto; add it or remove the option")
        if self.bbox_crs is not None and self.bbox is None:
            raise UsageError(f"{field_name('bbox_crs', style)} is given without {field_name('bbox', style)}")
        if self.bbox_crs is not None:
            from pyproj import CRS
            from pyproj.exceptions import CRSError

            try:
                CRS.from_user_input(self.bbox_crs)
            except CRSError as exc:
                first = (str(exc).splitlines() or [""])[0]
                raise UsageError(f"{field_name('bbox_crs', style)}: unknown CRS {self.bbox_crs!r} (use e.g. "
                                 f"EPSG:4326): {first}") from None

    def resolve(self, chip_size: int, style: str | None = None) -> SegmentParams:
        """This request for a model of ``chip_size``-px chips: ``overlap`` filled in and checked against it."""
        overlap = default_overlap(chip_size) if self.overlap is None else self.overlap
        if not 0 <= overlap < chip_size:
            raise UsageError(f"{field_name('overlap', style)} must be between 0 and the model's chip size - 1 "
                             f"({chip_size - 1}) pixels, got {overlap}")
        return replace(self, overlap=int(overlap))


# ---------------------------------------------------------------------------------------------- LoadOptions
DEVICE_PATTERN = r"auto|cpu|mps|cuda(:\d{1,3})?"
DTYPES = ("float32", "bfloat16", "float16")
DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "float32": "float32",
                 "bfloat16": "bfloat16", "float16": "float16", "auto": "auto"}
# Options that only some backends take (the registry refuses the others in one line).
BACKEND_OPTIONS = ("score_threshold", "cache_mb", "template", "sam3_output", "presence_threshold")
SAM3_OUTPUTS = ("instances", "semantic", "both")  # what SAM3 returns for a concept present on a chip (issue 19)
MAX_CACHE_MB = 2.0**30  # 1 PiB: anything above is a typo
# Options that are secrets: never on a command line, in a log line, a reply or a file.
SECRET_OPTIONS = ("token",)


@dataclass(frozen=True)
class LoadOptions(Checked):
    """Which model to load and how: the same fields on the CLI, in ``load_segmenter``, the worker's ``load``
    request, batch jobs (both executors) and the QGIS plugin's settings.

    ``batch_size`` ``None`` and ``dtype`` ``None`` mean the backend's default for the device (bf16 on CUDA,
    fp32 elsewhere). The backend options (:data:`BACKEND_OPTIONS`) are refused in one line by a backend that
    does not take them.
    """

    model: str = param("demo", Rule(
        "text", "'demo', a model alias, a checkpoint folder, a Hugging Face repo id or 'file.py:factory'",
        metavar="M", help="'demo' (bundled, synthetic imagery only), an alias from `segearth-geo models` "
                          "(sam3, segearth-r1-earthreason, ...), a checkpoint folder, a Hugging Face repo id, "
                          "or 'file.py:factory'."))
    device: str = param("auto", Rule(
        "text", "auto, cpu, cuda, cuda:N or mps", pattern=DEVICE_PATTERN, metavar="D",
        help="auto (CUDA, then Apple MPS, then CPU), cpu, cuda, cuda:N or mps."))
    dtype: str | None = param(None, Rule(
        "choice", "a compute dtype", choices=tuple(DTYPE_ALIASES), metavar="float32|bfloat16|float16",
        help="Compute dtype: float32, bfloat16 or float16 (default: bfloat16 on CUDA, float32 elsewhere)."))
    batch_size: int | None = param(None, Rule(
        "count", "a positive number of chips", low=1, metavar="N",
        help="Chips per forward pass (default: the backend's; halved on out-of-memory)."))
    score_threshold: float | None = param(None, Rule(
        "number", "a detection score in [0, 1)", low=0.0, high=1.0, high_open=True, metavar="S",
        help="SAM3: keep instances whose detection score is above S (default 0.5)."))
    cache_mb: float | None = param(None, Rule(
        "number", "a non-negative size in MiB (0: no cache)", low=0.0, high=MAX_CACHE_MB, metavar="MB",
        help="Bound of the model's per-chip image cache, reused across the prompts of one run "
             "(default: fits the device; 0: off)."))
    template: str | None = param(None, Rule(
        "text", "a prompt template name", metavar="NAME",
        help="Prompt template of SegEarth-R1 (referring, reasoning) or SegEarth-R2 (training, llama2, ...); "
             "default: the checkpoint's."))
    sam3_output: str | None = param(None, Rule(
        "choice", "instances, semantic or both", choices=SAM3_OUTPUTS,
        help="SAM3: what a concept present on a chip returns: its instances (default), the map of SAM3's semantic "
             "head (for water, roads, forest, fields), or both fused by maximum."))
    presence_threshold: float | None = param(None, Rule(
        "number", "a presence probability in [0, 1)", low=0.0, high=1.0, high_open=True, metavar="P",
        help="SAM3: a chip whose presence probability for a concept is below P returns nothing for it (default: "
             "0.5 for semantic maps; instances are gated by their score, which already multiplies presence)."))
    # The bearer token of a model server (``--model https://HOST:PORT``). A secret: never on a command line
    # (the CLI reads ``SEGEARTH_TOKEN``), never in repr, to_dict(), changed(), describe(), job.json or a reply.
    token: str | None = field(default=None, repr=False, metadata={"rule": Rule(
        "secret", "a model server's access token", help="Access token of a model server (from SEGEARTH_TOKEN).")})

    def _check_together(self, style: str | None) -> None:
        if self.dtype is not None and DTYPE_ALIASES[self.dtype] not in (*DTYPES, "auto"):  # pragma: no cover
            raise UsageError(f"{field_name('dtype', style)} must be one of {', '.join(DTYPES)}")

    @property
    def dtype_name(self) -> str | None:
        """``dtype`` as a torch name (``"bfloat16"``), ``None`` for the device's default."""
        name = None if self.dtype is None else DTYPE_ALIASES[self.dtype]
        return None if name == "auto" else name

    def backend_options(self) -> dict[str, Any]:
        """The backend options that are set (``{"score_threshold": 0.3}``)."""
        return {name: getattr(self, name) for name in BACKEND_OPTIONS if getattr(self, name) is not None}

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types, without the secret ``token``."""
        return {k: v for k, v in super().to_dict().items() if k not in SECRET_OPTIONS}

    def changed(self) -> dict[str, Any]:
        """The fields that differ from their defaults, without the secret ``token``."""
        return {k: v for k, v in super().changed().items() if k not in SECRET_OPTIONS}

    def describe(self) -> str:
        """The options in one line for logs (``model demo on auto, cache_mb=0``)."""
        extra = ", ".join(f"{k}={v}" for k, v in self.changed().items() if k not in ("model", "device"))
        return f"model {self.model} on {self.device}" + (f", {extra}" if extra else "")


def segment_kwargs(kwargs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split keyword arguments into :class:`SegmentParams` fields and the rest."""
    names = set(SegmentParams.names())
    return ({k: v for k, v in kwargs.items() if k in names}, {k: v for k, v in kwargs.items() if k not in names})


__all__ = ["BACKEND_OPTIONS", "Checked", "LoadOptions", "Rule", "SECRET_OPTIONS", "STYLES", "SegmentParams", "field_name",
           "naming", "param", "rule_of", "segment_kwargs"]
