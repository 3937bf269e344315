"""What the worker does for each queued request type: ``load``, ``segment`` and ``batch``.

Each type is one :class:`Handler` in :data:`HANDLERS`: the fields it takes, a ``check`` run at the door (a
bad value is answered at once, before anything is queued) and a ``run`` function of
``(state, request, cancel, reply)`` run on the job thread, which returns the final reply's type and fields.
Nothing here knows about threads, stdin or stdout (:mod:`~segearth_geo.worker.server` does): another
transport can drive the same handlers. The next request type is one function pair and one table entry.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segearth_geo._version import __version__
from segearth_geo.errors import Cancelled, UsageError
from segearth_geo.params import LoadOptions, SegmentParams, field_name
from segearth_geo.prediction import clean_prompts, describe_segmenter
from segearth_geo.worker.protocol import Request

Reply = Callable[..., None]  # reply(reply_type, **fields): an intermediate reply (progress) for this request
# The "cancel" field of a result whose cancel arrived after the output was complete.
TOO_LATE = "too late"


@dataclass
class WorkerState:
    """What the worker holds between requests.

    Attributes:
        segmenter: the loaded model (``None`` until a ``load``).
        options: the :class:`LoadOptions` it was loaded with.
        device: what it runs on, in words.
        loader: ``(options) -> segmenter``; default :func:`segearth_geo.model.loading.load_model`.
    """

    segmenter: Any = None
    options: LoadOptions | None = None
    device: str | None = None
    loader: Callable[[LoadOptions], Any] | None = field(default=None, repr=False)

    @property
    def model(self) -> str | None:
        return None if self.options is None else self.options.model

    def require_model(self) -> Any:
        if self.segmenter is None:
            raise UsageError("no model is loaded; send a \"load\" request or start the worker with a model")
        return self.segmenter


@dataclass(frozen=True)
class Handler:
    """One queued request type: its fields (besides ``id`` and ``type``), its door check and its run."""

    fields: tuple[str, ...]
    check: Callable[[dict[str, Any]], Any]
    run: Callable[[WorkerState, Request, threading.Event, Reply], tuple[str, dict[str, Any]]]


# -- load -----------------------------------------------------------------------------------------
def check_load(fields: dict[str, Any]) -> LoadOptions:
    model = fields.get("model")
    if not isinstance(model, str) or not model.strip():
        raise UsageError("load needs \"model\": 'demo', a model alias, a checkpoint folder, a repo id or "
                         "'file.py:factory'")
    return LoadOptions.from_request(fields)


def run_load(state: WorkerState, request: Request, cancel: threading.Event, reply: Reply) -> tuple[str, dict]:
    options: LoadOptions = request.arguments
    loader = state.loader
    if loader is None:
        from segearth_geo.model.loading import load_model

        def loader(opts: LoadOptions) -> Any:
            return load_model(opts, style="json")
    started = time.perf_counter()
    segmenter = loader(options)
    info = describe_segmenter(segmenter)
    state.segmenter, state.options, state.device = segmenter, options, info.device or options.device
    return "ready", dict(model=options.model, device=state.device, chip_size=info.chip_size,
                         capabilities=sorted(info.capabilities), options=options.changed(),
                         gsd_range=None if info.gsd_range is None else list(info.gsd_range), notice=info.notice,
                         version=__version__, pid=os.getpid(), seconds=round(time.perf_counter() - started, 3))


# -- segment --------------------------------------------------------------------------------------
SEGMENT_FIELDS = ("raster", "prompt", "prompts", "output", "overwrite", *SegmentParams.names())


@dataclass(frozen=True)
class SegmentArguments:
    raster: str
    prompts: list[str]
    output: str
    overwrite: bool
    params: SegmentParams


def prompts_field(fields: dict[str, Any], *, single: bool = True) -> list[str]:
    """The request's ``prompt`` (a string; only with ``single``) or ``prompts`` (a list of strings), cleaned."""
    prompt, prompts = fields.get("prompt"), fields.get("prompts")
    if single and (prompt is None) == (prompts is None):
        raise UsageError("give either \"prompt\" (a string) or \"prompts\" (a list of strings)")
    if prompts is not None or not single:
        if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
            raise UsageError("\"prompts\" must be a non-empty list of non-empty strings")
        return clean_prompts(prompts)
    if not isinstance(prompt, str) or not prompt.strip():
        raise UsageError("\"prompt\" must be a non-empty string")
    return clean_prompts(prompt)


def text_field(fields: dict[str, Any], name: str, what: str) -> str:
    value = fields.get(name)
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"{field_name(name, 'json')} must be a non-empty string: {what}")
    return value


def flag_field(fields: dict[str, Any], name: str) -> bool:
    value = fields.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise UsageError(f"{field_name(name, 'json')} must be true or false, got {value!r}")
    return value


def check_segment(fields: dict[str, Any]) -> SegmentArguments:
    raster = text_field(fields, "raster", "the raster's path or GDAL source")
    output = text_field(fields, "output", "the output file")
    prompts = prompts_field(fields)
    return SegmentArguments(raster, prompts, str(Path(output).expanduser()), flag_field(fields, "overwrite"),
                            SegmentParams.from_request(fields))


def run_segment(state: WorkerState, request: Request, cancel: threading.Event, reply: Reply) -> tuple[str, dict]:
    from segearth_geo.engine import segment_scene

    segmenter = state.require_model()
    args: SegmentArguments = request.arguments
    output = Path(args.output)
    existed = output.exists()

    def on_progress(done: int, total: int) -> None:
        if cancel.is_set():
            kept = f"{output} was left as it was" if existed else "nothing was written"
            raise Cancelled(f"request {request.describe} was cancelled; {kept}")
        reply("progress", done=int(done), total=int(total))

    started = time.perf_counter()
    # A Cancelled raised by on_progress stops the engine before it replaces the output.
    result = segment_scene(args.raster, args.prompts, segmenter, args.params, out=output, overwrite=args.overwrite,
                           progress=on_progress, model=state.model)
    fields = {**result_fields(result, output), "device": state.device,
              "seconds": round(time.perf_counter() - started, 3)}
    for name in ("raster_out", "labels_out"):  # the raster outputs written besides the polygons (issue 19)
        if getattr(args.params, name) is not None:
            fields[name] = str(Path(getattr(args.params, name)).expanduser())
    if cancel.is_set():
        # The cancel came after the last batch: the new output is complete and already replaced
        # the old one, so deleting it would leave neither. Keep it and say so.
        fields["cancel"] = TOO_LATE
    return "result", fields


def result_fields(result: Any, output: Path) -> dict[str, Any]:
    """What the ``result`` reply says about a finished segmentation (a :class:`~segearth_geo.results.SegmentResult`)."""
    from segearth_geo.output import SEGMENTS_LAYER, output_format

    gdf, stats = result.segments, result.stats
    polygons: dict[str, int] = {}
    if len(gdf):
        polygons = {str(k): int(v) for k, v in gdf["label"].value_counts().sort_index().items()}
    extra: dict[str, Any] = {}
    if len(stats.prompts) > 1:  # a multi-prompt request: answers per prompt, and the prompts in order
        extra["prompts"] = list(stats.prompts)
        extra["answers_by_prompt"] = {p: _answers(stats.answers_by_prompt.get(p, {})) for p in stats.prompts}
    if stats.cache is not None:
        extra["cache"] = stats.cache
    if stats.notes:
        extra["notes"] = list(stats.notes)
    if stats.notice:
        extra["notice"] = stats.notice
    if stats.strategy_reason:  # strategy zoom/auto (issue 22): what ran, why, chips per level (full resolution first)
        extra["zoom"] = {"strategy": stats.strategy, "reason": stats.strategy_reason,
                         "chips_per_level": list(stats.chips_per_level), "full_res_fraction": stats.full_res_fraction}
    return {
        "output": str(output),
        "layer": SEGMENTS_LAYER if output_format(output) == "GPKG" else None,
        "count": int(len(gdf)),
        "polygons": polygons,
        "answers": _answers(stats.answers),
        "chips": {"total": stats.chips_total, "processed": stats.chips_processed},
        "crs": gdf.crs.to_string() if gdf.crs is not None else None,
        **extra,
    }


def _answers(by_chip: dict[int, str]) -> list[dict[str, Any]]:
    return [{"chip": int(chip), "answer": str(answer)} for chip, answer in sorted(by_chip.items())]


# -- batch ----------------------------------------------------------------------------------------
# Run parameters a batch job takes (a job has no bbox, its AOI does that; allow_large replaces max_chips;
# raster_out/labels_out are file names written in each scene's results folder).
BATCH_PARAMS = tuple(n for n in SegmentParams.names() if n not in ("bbox", "bbox_crs", "max_chips"))


def _batch_fields() -> tuple[str, ...]:
    from segearth_geo.batch.config import BatchOptions

    return ("inputs", "prompts", "output_dir", *BatchOptions.request_fields(), *BATCH_PARAMS)


@dataclass(frozen=True)
class BatchArguments:
    inputs: list[str]
    prompts: list[str]
    out_dir: str
    params: SegmentParams
    options: Any  # BatchOptions


def check_batch(fields: dict[str, Any]) -> BatchArguments:
    from segearth_geo.batch.config import BatchOptions

    inputs = fields.get("inputs")
    if not isinstance(inputs, list) or not all(isinstance(v, str) and v.strip() for v in inputs):
        raise UsageError("batch needs \"inputs\": a list of raster paths, globs or @list.txt files")
    options = BatchOptions.from_request(fields)
    if not inputs and options.stac is None:
        raise UsageError("batch needs at least one input in \"inputs\" (or \"stac\")")
    out_dir = text_field(fields, "output_dir", "the job folder")
    return BatchArguments(list(inputs), prompts_field(fields, single=False), out_dir,
                          SegmentParams.from_request({k: fields[k] for k in BATCH_PARAMS if k in fields}), options)


def run_batch_request(state: WorkerState, request: Request, cancel: threading.Event, reply: Reply) -> tuple[str, dict]:
    from dataclasses import asdict

    from segearth_geo.batch import run_batch

    segmenter = state.require_model()
    args: BatchArguments = request.arguments

    def on_progress(event: Any) -> None:
        if cancel.is_set():
            raise Cancelled(f"request {request.describe} was cancelled; finished units are kept in {args.out_dir}: "
                            "send the same request again to resume")
        fields = asdict(event)
        reply("progress", done=int(event.chips_done), total=int(event.chips_total), event=fields.pop("kind"),
              **{k: v for k, v in fields.items() if k not in ("chips_done", "chips_total")})

    started = time.perf_counter()
    report = run_batch(args.inputs, args.prompts, args.out_dir, load=state.options or LoadOptions(),
                       params=args.params, options=args.options, segmenter=segmenter, progress=on_progress,
                       style="json")
    fields = {k: v for k, v in report.to_dict().items() if k not in ("id", "type")}
    fields.setdefault("seconds", round(time.perf_counter() - started, 3))
    return "result", fields


HANDLERS: dict[str, Handler] = {
    "load": Handler(("model", *(n for n in LoadOptions.names() if n != "model")), check_load, run_load),
    "segment": Handler(SEGMENT_FIELDS, check_segment, run_segment),
    "batch": Handler(_batch_fields(), check_batch, run_batch_request),
}

__all__ = ["HANDLERS", "Handler", "TOO_LATE", "WorkerState", "result_fields"]
