"""The parameters of one segmentation run, built on the main thread and sent to the engine.

:data:`RUN_OPTIONS` declares the engine's run parameters the plugin offers (the dock's run-option widget and both
Processing algorithms are built from it); adding one is one line there, named as the engine's ``SegmentParams``
field, so the worker takes it as a request field unchanged. An option may act only with another's value
(``only_with``: the IoU bound with regularize, the zoom options with a zoom strategy) or exclude another flag
(``excludes``: regularize and smooth); :func:`request_options` leaves an inactive option out (the dock disables its
editor) and :func:`run_option_problems` says, in the form's words, what Processing must refuse.

Pure Python (no Qt): ``tests/test_plugin_run_options.py`` checks every option against the engine's rules.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

SCOPE_VISIBLE = "visible"
SCOPE_LAYER = "layer"
SCOPE_DRAWN = "drawn"
SCOPES = (SCOPE_VISIBLE, SCOPE_LAYER, SCOPE_DRAWN)
KINDS = ("float", "int", "choice", "flag", "text")


@dataclass(frozen=True)
class RunOption:
    """One run parameter of the engine as the plugin offers it.

    Attributes:
        name: the engine's ``SegmentParams`` field, i.e. the worker's request field (``min_area``).
        label: the form's label.
        kind: ``float``, ``int`` (spin boxes), ``choice`` (one of ``choices``), ``flag`` (check box), ``text``.
        default: the widget's initial value.
        minimum / maximum / decimals / step: the spin box of a number.
        choices: the values of a ``choice``.
        unset: the value meaning "not set": the field is then left out of the request and the engine's default
            applies; a spin box shows ``unset_text`` for it. ``None``: the value is always sent.
        unset_text: shown for ``unset`` (``"native"``, ``"none"``).
        suffix: unit shown after a number (``" m²"``).
        tooltip: what the option does.
        advanced: shown in the dock's collapsed "Advanced" group and Processing's advanced parameters.
        beside: the dock shows this option's editor in the row of that option (the strategy beside the GSD).
        only_with: ``(option, values)``: the option acts only while ``option`` has one of ``values``; otherwise it is
            left out of the request (the dock disables its editor; Processing refuses a changed value).
        excludes: flags that cannot be on together with this one (the dock clears them when this one is checked).
    """

    name: str
    label: str
    kind: str = "float"
    default: Any = None
    minimum: float = 0.0
    maximum: float = 1e9
    decimals: int = 3
    step: float = 1.0
    choices: tuple[str, ...] = ()
    unset: Any = None
    unset_text: str = ""
    suffix: str = ""
    tooltip: str = ""
    advanced: bool = False
    beside: str | None = None
    only_with: tuple[str, tuple[Any, ...]] | None = None
    excludes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"run option {self.name!r}: kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.excludes and self.kind != "flag":
            raise ValueError(f"run option {self.name!r}: only a flag can exclude other flags")

    def active(self, values: dict[str, Any]) -> bool:
        """Whether this option acts with the form's ``values`` (``{name: widget value}``): its ``only_with`` holds."""
        if self.only_with is None:
            return True
        name, allowed = self.only_with
        return values.get(name) in allowed

    def request_value(self, value: Any) -> Any:
        """``value`` as the request's field (``int``/``float``/``bool``/``str``), or ``None`` when it means unset."""
        if value is None or (self.unset is not None and value == self.unset):
            return None
        if self.kind == "text":
            return str(value).strip() or None
        return {"float": float, "int": int, "flag": bool, "choice": str}[self.kind](value)


RUN_OPTIONS: tuple[RunOption, ...] = (
    RunOption("gsd", "GSD", default=0.0, maximum=10_000.0, unset=0.0, unset_text="native", suffix=" m/px",
              tooltip="Ground distance in metres per pixel the model sees (native: the layer's own; web layers: "
                      "their own tile resolution)."),
    RunOption("strategy", "Strategy", "choice", "grid", choices=("grid", "zoom", "auto"), unset="grid", beside="gsd",
              tooltip="grid: every chip at full resolution. zoom: a downscaled overview of the whole area first, then "
                      "full resolution only where the overview saw the target (fewer chips for sparse targets; one "
                      "answer for 'the largest airplane'). auto: zoom for such instructions and large sparse areas."),
    RunOption("threshold", "Threshold", default=0.5, maximum=1.0, decimals=2, step=0.05,
              tooltip="Probability at or above which a pixel belongs to a target."),
    RunOption("min_area", "Min area", default=0.0, unset=0.0, unset_text="none", suffix=" m²",
              tooltip="Drop polygons smaller than this."),
    RunOption("simplify", "Simplify", default=0.0, maximum=1e6, unset=0.0, unset_text="none",
              tooltip="Simplification tolerance in the raster's map units."),
    RunOption("regularize", "Regularize", "flag", False, unset=False, excludes=("smooth",),
              tooltip="Square up building footprints: right angles, 45° diagonals where the shape has them; shared "
                      "walls stay shared. Not together with Smooth."),
    RunOption("smooth", "Smooth", "flag", False, unset=False, excludes=("regularize",), beside="regularize",
              tooltip="Smooth the outlines of natural features (water, forest, fields) without self-intersections "
                      "or gaps between neighbours. Not together with Regularize."),
    RunOption("regularize_iou", "Regularize IoU bound", default=0.75, maximum=1.0, decimals=2, step=0.05,
              advanced=True, only_with=("regularize", (True,)),
              tooltip="With Regularize: a footprint whose IoU with its mask's outline would fall below this keeps the "
                      "mask's outline."),
    RunOption("zoom_model", "Zoom model", "text", "", unset_text="the segmenter itself", advanced=True,
              only_with=("strategy", ("zoom", "auto")),
              tooltip="With strategy zoom or auto: what looks at the overview: 'zoomearth' asks for one region per "
                      "instruction; any other model spec segments it (default: the segmenter itself)."),
    RunOption("min_coverage", "Min coverage", default=0.0, maximum=1.0, decimals=2, step=0.05, unset=0.0,
              unset_text="none", advanced=True, only_with=("strategy", ("zoom", "auto")),
              tooltip="With strategy zoom or auto: look at least this fraction of the area at full resolution, the "
                      "chips with the strongest overview evidence first."),
)


def request_options(values: dict[str, Any], options: tuple[RunOption, ...] = RUN_OPTIONS) -> dict[str, Any]:
    """The request fields of ``values`` (``{name: widget value}``): unset and inactive ones left out, each of its
    kind."""
    fields = {}
    for option in options:
        value = option.request_value(values.get(option.name))
        if value is not None and option.active(values):
            fields[option.name] = value
    return fields


def run_option_problems(values: dict[str, Any], options: tuple[RunOption, ...] = RUN_OPTIONS) -> list[str]:
    """What is wrong with ``values`` as a whole, one sentence each in the form's labels (``[]``: nothing).

    Two excluding flags both on; an option changed from its default while it does not act (Min coverage with
    strategy grid). An inactive option left at its default is no problem: it is left out of the request.
    """
    by_name = {option.name: option for option in options}
    problems, pairs = [], []
    for option in options:
        for other in option.excludes:
            pair = {option.name, other}
            if other in by_name and pair not in pairs and values.get(option.name) and values.get(other):
                pairs.append(pair)
                problems.append(f"{option.label} and {by_name[other].label} exclude each other; choose one.")
        if option.only_with is None or option.active(values):
            continue
        value = option.request_value(values.get(option.name))
        if value is not None and value != option.request_value(option.default):
            other = by_name[option.only_with[0]]
            if other.kind == "flag":  # "Regularize IoU bound acts only with Regularize: turn it on or reset …"
                problems.append(f"{option.label} acts only with {other.label}: turn it on or reset {option.label}.")
            else:  # "Min coverage acts only with Strategy zoom or auto: choose one of them or reset Min coverage."
                wanted = " or ".join(str(v) for v in option.only_with[1])
                problems.append(f"{option.label} acts only with {other.label} {wanted}: choose one of them or reset "
                                f"{option.label}.")
    return problems


@dataclass
class SegmentParameters:
    """Everything the engine needs for one run, already resolved to files and the raster's CRS.

    Attributes:
        raster: local file the engine reads (the layer's file or a rendered temporary GeoTIFF).
        prompt: the user's instruction.
        output: GeoPackage to write (must not exist).
        layer_name: name of the source layer (used to name the result layer).
        bbox: ``(minx, miny, maxx, maxy)`` in ``bbox_crs``, or ``None`` for the whole raster.
        bbox_crs: CRS of ``bbox`` (authid or WKT) — always the raster layer's CRS here.
        options: the run options' request fields (:func:`request_options`: ``gsd`` in m/px, ``threshold``,
            ``min_area`` in m², ``simplify`` in map units, …); a rendered web layer has no ``gsd`` (already applied).
        gsd: the ground distance (m/px) the engine will see, when known (shown to the user; not sent).
        raster_out / labels_out: GeoTIFFs the engine also writes (the probability per prompt band, the polygons'
            ids), or ``None``; :func:`raster_paths` names them next to the GeoPackage.
        overwrite: let the engine replace existing outputs (Processing's destinations, which the user chose).
        temporary_files: files this run created (rendered rasters) to delete when it ends.
    """

    raster: str
    prompt: str
    output: str
    layer_name: str = ""
    bbox: tuple[float, float, float, float] | None = None
    bbox_crs: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    gsd: float | None = None
    raster_out: str | None = None
    labels_out: str | None = None
    overwrite: bool = False
    temporary_files: list[str] = field(default_factory=list)

    def to_request(self) -> dict[str, Any]:
        """Fields of the worker's ``segment`` request (see docs/worker-protocol.md)."""
        request: dict[str, Any] = {"raster": self.raster, "prompt": self.prompt, "output": self.output}
        if self.bbox is not None:
            request["bbox"] = [float(v) for v in self.bbox]
            if self.bbox_crs:
                request["bbox_crs"] = self.bbox_crs
        for name in ("raster_out", "labels_out", "overwrite"):
            if getattr(self, name):
                request[name] = getattr(self, name)
        return {**request, **self.options}

    def write_rasters_beside(self) -> None:
        """Also ask for the probability and labels GeoTIFFs, next to the GeoPackage (:func:`raster_paths`)."""
        self.raster_out, self.labels_out = raster_paths(self.output)

    def remove_temporary_files(self) -> None:
        for path in self.temporary_files:
            for candidate in (path, path + ".aux.xml"):
                try:
                    os.remove(candidate)
                except FileNotFoundError:
                    pass
        self.temporary_files.clear()


def raster_paths(output: str) -> tuple[str, str]:
    """The probability and labels GeoTIFFs of the GeoPackage ``output``: ``run.gpkg`` → ``run_probability.tif``,
    ``run_labels.tif`` (the same folder and stem, so the three files of one run sort together)."""
    stem = os.path.splitext(output)[0]
    return f"{stem}_probability.tif", f"{stem}_labels.tif"
