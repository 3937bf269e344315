"""JSON-lines request loop behind ``segearth-geo worker`` (used by the QGIS plugin).

One JSON object per line on stdin; one JSON object per line on stdout. Every request
carries ``"id"`` and ``"type"``; every reply repeats the request's ``"id"`` and has its own
``"type"``. The full protocol is in ``docs/worker-protocol.md``.

Threads: the reading thread answers ``ping``, ``cancel`` and ``shutdown`` at once, while
``load`` and ``segment`` requests run one after another on a single job thread, so the
worker stays responsive during a long segmentation. Cancellation is cooperative: the
engine calls our progress callback between chip batches and the callback raises
:class:`~segearth_geo.errors.Cancelled`; the engine writes its output to a temporary file
and renames it only at the very end, so a cancelled request leaves ``output`` as it was.
A cancel that arrives once the engine has finished changes nothing: the request gets its
``result`` with ``"cancel": "too late"``.

Robustness rules (each one a hostile-input defect once):

* every reply goes through :func:`encode_reply`, which always yields strict JSON in valid
  UTF-8; a reply that still cannot be encoded becomes an ``error`` reply for its id;
* nothing a request does ends the job thread or the reading loop: each failure ends that
  request with an ``error`` reply;
* ids are checked at the door (see :func:`id_key`) and the table of queued/running jobs is
  keyed by their canonical JSON, so any JSON id (arrays and objects included) works and an id
  stays reserved while its request is queued or running.

Only protocol replies go to stdout; :func:`run_worker` moves file descriptor 1 onto
stderr so that logging, ``print`` and C libraries (GDAL) cannot corrupt the stream.
"""

from __future__ import annotations

import io
import json
import logging
import math
import numbers
import os
import queue
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, TextIO

from segearth_geo import __version__
from segearth_geo.errors import Cancelled, SegEarthGeoError, UsageError
from segearth_geo.worker_batch import BATCH_FIELDS, batch_arguments, run_batch_request

log = logging.getLogger(__name__)

# The fields each request type may carry; anything else is refused (a typo must not be ignored).
REQUEST_FIELDS: dict[str, tuple[str, ...]] = {
    "ping": ("id", "type"),
    "load": ("id", "type", "model", "device"),
    "segment": ("id", "type", "raster", "prompt", "prompts", "output", "bbox", "bbox_crs", "overlap", "gsd", "threshold",
                "min_area", "simplify", "batch_size", "max_chips", "overwrite"),
    "batch": ("id", "type", *BATCH_FIELDS),
    "cancel": ("id", "type", "target"),
    "shutdown": ("id", "type"),
}
REQUEST_TYPES = tuple(REQUEST_FIELDS)
# Optional real-number fields of a segment request (each passed to the engine under the same name).
_NUMERIC_FIELDS = ("gsd", "threshold", "min_area", "simplify")
# The "cancel" field of a result whose cancel arrived after the output was complete.
TOO_LATE = "too late"
# Seconds a running job gets to stop when the worker is interrupted (SIGTERM, Ctrl-C).
ABORT_WAIT_S = 5.0


class RequestRejected(SegEarthGeoError):
    """A request refused before it ran; ``request_id`` is what the error reply carries."""

    def __init__(self, request_id: Any, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.request_id = request_id
        self.fields = fields


@dataclass
class _Job:
    """A queued ``load`` or ``segment`` request: its id, id key, checked arguments and cancel flag."""

    kind: str
    request_id: Any
    key: str
    arguments: dict[str, Any]
    cancel: threading.Event = field(default_factory=threading.Event)


# -- strict JSON out ------------------------------------------------------------------------------
def clean_text(text: str) -> str:
    """``text`` as valid Unicode: each lone surrogate becomes the six characters ``\\udcXX``.

    Lone surrogates are how Python carries bytes that are not UTF-8 (e.g. in file names,
    ``surrogateescape``); they cannot be written as UTF-8.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def json_safe(value: Any) -> Any:
    """``value`` made of plain JSON types: non-finite floats -> ``None``, text cleaned by :func:`clean_text`.

    Numpy values become Python ones (``tolist()``), paths and other objects their text;
    dict keys become text the way :func:`json.dumps` writes them.
    """
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {_json_key(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if callable(getattr(value, "tolist", None)):  # numpy scalars and arrays
        return json_safe(value.tolist())
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return json_safe(float(value))
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, os.PathLike):
        return clean_text(os.fsdecode(value))
    return clean_text(str(value))


def _json_key(key: Any) -> str:
    if isinstance(key, str):
        return clean_text(key)
    safe = json_safe(key)
    return safe if isinstance(safe, str) else json.dumps(safe)


def encode_reply(message: dict[str, Any]) -> str:
    """One reply line (without the newline): strict JSON (no NaN/Infinity), valid UTF-8 text."""
    return json.dumps(json_safe(message), ensure_ascii=False, allow_nan=False)


def id_key(value: Any, what: str = "id") -> str:
    """The canonical JSON of a request id (or cancel target): the key of the job table.

    Any JSON value is a valid id except ``null`` (it marks messages that answer no request)
    and values that strict JSON cannot carry back unchanged: ``NaN``, ``Infinity``, numbers
    beyond the double range such as ``1e400`` (Python reads them as infinity) and strings
    with lone surrogates (``"\\ud800"``). Object keys are sorted, so ``{"a":1,"b":2}`` and
    ``{"b":2,"a":1}`` are the same id; ``1``, ``1.0`` and ``true`` are three different ids.

    Raises:
        UsageError: the value cannot be an id.
    """
    if value is None:
        raise UsageError(f"{what} must not be null (null marks replies that answer no request); use a string")
    try:
        key = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        key.encode("utf-8")
    except (ValueError, UnicodeEncodeError, RecursionError) as exc:
        raise UsageError(f"{what} cannot be echoed back as strict JSON (NaN, Infinity, a number beyond the "
                         f"double range or a lone surrogate: {type(exc).__name__}); use a string") from exc
    return key


# -- the worker -----------------------------------------------------------------------------------
class Worker:
    """Answers protocol requests; ``write`` receives each reply as one encoded line (no newline).

    Args:
        write: called with every reply line, under a lock (one call per reply).
        model: model to load before the first request (``None``: wait for ``load``).
        device: device for that model (``auto``, ``cpu``, ``cuda``, ``cuda:N``).
        loader: ``(model, device) -> segmenter``; defaults to :func:`segearth_geo.load_segmenter`.
        segment_fn: defaults to :func:`segearth_geo.segment_raster` (injectable for tests).
    """

    def __init__(
        self,
        write: Callable[[str], None],
        *,
        model: str | None = None,
        device: str = "auto",
        loader: Callable[[str, str], Any] | None = None,
        segment_fn: Callable[..., Any] | None = None,
    ) -> None:
        self._write_raw = write
        self._write_lock = threading.Lock()
        self._loader = loader
        self._segment_fn = segment_fn
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._active: dict[str, _Job] = {}  # id key -> queued or running job
        self._active_lock = threading.Lock()
        self.segmenter: Any = None
        self.model: str | None = None
        self.device: str = device
        self._thread = threading.Thread(target=self._job_loop, name="segearth-worker-jobs", daemon=True)
        self._thread.start()
        if model is not None:
            # Id null is refused from clients, so the start-up load's key "null" is never in use by one.
            self._submit(_Job("load", None, "null", {"model": model, "device": device}))
        else:
            self.reply(None, "ready", model=None, device=None, version=__version__, pid=os.getpid())

    # -- output -----------------------------------------------------------------------------
    def reply(self, request_id: Any, kind: str, **fields: Any) -> None:
        """Send one reply line (``id`` and ``type`` first); never raises.

        A reply that cannot be encoded is replaced by an ``error`` reply for the same id.
        """
        try:
            line = encode_reply({"id": request_id, "type": kind, **fields})
        except Exception as exc:  # noqa: BLE001 - e.g. a self-referencing value; the client still gets an answer
            log.error("cannot encode the %s reply to %s: %s", kind, _describe(request_id), exc)
            failure = {"type": "error", "error": "ReplyError",
                       "message": f"the {kind} reply could not be encoded as JSON ({type(exc).__name__})"}
            try:
                line = encode_reply({"id": request_id, **failure})
            except Exception:  # noqa: BLE001 - ids are checked at the door; this cannot happen
                line = encode_reply({"id": None, **failure})
        with self._write_lock:
            try:
                self._write_raw(line)
            except Exception as exc:  # noqa: BLE001 - e.g. the client closed our stdout; end of input will follow
                log.error("cannot send a reply: %s", exc)

    def error(self, request_id: Any, message: str, **fields: Any) -> None:
        self.reply(request_id, "error", message=message, **fields)

    # -- input ------------------------------------------------------------------------------
    def handle_line(self, line: bytes | str) -> bool:
        """Handle one input line; return ``False`` when the worker must stop. Never raises."""
        try:
            return self._handle(line)
        except RequestRejected as exc:
            self.error(exc.request_id, str(exc), **exc.fields)
        except Exception as exc:  # noqa: BLE001 - the reading loop must survive anything
            log.error("cannot handle a request line:\n%s", traceback.format_exc())
            self.error(None, f"internal error while reading a request ({type(exc).__name__}: {exc})",
                       error=type(exc).__name__)
        return True

    def _handle(self, line: bytes | str) -> bool:
        request = parse_request(line)
        if request is None:
            return True
        request_id = request["id"]
        kind = request["type"]
        with self._active_lock:
            if id_key(request_id) in self._active:
                raise RequestRejected(request_id, f"id {_describe(request_id)} is in use by a queued or running "
                                      "request; give every request its own id", id_in_use=True, error="UsageError")
        if kind == "ping":
            self.reply(request_id, "pong", model=self.model, device=self.device if self.segmenter else None,
                       busy=self.busy, version=__version__, pid=os.getpid())
        elif kind == "cancel":
            target = request.get("target")
            if "target" not in request:
                raise RequestRejected(request_id, "cancel needs \"target\": the id of the request to cancel",
                                      error="UsageError")
            with self._active_lock:
                job = self._active.get(_as_rejection(request_id, lambda: id_key(target, "target")))
            if job is not None:
                job.cancel.set()
            self.reply(request_id, "result", cancelled=target, found=job is not None)
        elif kind == "shutdown":
            self._cancel_all()
            self._jobs.put(None)
            self._thread.join(timeout=30)
            self.reply(request_id, "result", shutdown=True)
            return False
        else:
            check = {"load": _load_arguments, "segment": _segment_arguments, "batch": batch_arguments}[kind]
            arguments = _as_rejection(request_id, lambda: check(request))
            self._submit(_Job(kind, request_id, id_key(request_id), arguments))
        return True

    @property
    def busy(self) -> bool:
        """Whether a ``load`` or ``segment`` is queued or running."""
        with self._active_lock:
            return bool(self._active)

    def _submit(self, job: _Job) -> None:
        with self._active_lock:
            self._active[job.key] = job
        self._jobs.put(job)

    def _cancel_all(self) -> None:
        with self._active_lock:
            for job in self._active.values():
                job.cancel.set()

    def close(self) -> None:
        """End of input: finish the queued requests (their replies are still written), then stop."""
        self._jobs.put(None)
        self._thread.join()

    def abort(self, wait: float = ABORT_WAIT_S) -> None:
        """Interrupted: cancel everything and give the running job ``wait`` seconds to stop cleanly.

        The engine stops at its next chip batch and removes its temporary file; a job still
        running after ``wait`` (a long model call) is left to the interpreter's exit.
        """
        self._cancel_all()
        self._jobs.put(None)
        self._thread.join(timeout=wait)

    # -- jobs -------------------------------------------------------------------------------
    def _job_loop(self) -> None:
        # SIGTERM/SIGINT must reach the main thread, which is blocked reading stdin: a signal the
        # kernel hands to another thread would leave that read waiting for the next line. Threads
        # started from here (the engine's, torch's) inherit the mask.
        if hasattr(signal, "pthread_sigmask"):
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                kind, fields = self._run(job)
            except BaseException:  # noqa: BLE001 - _run catches everything; this is the last line of defence
                kind, fields = "error", {"message": "internal error in the worker", "error": "InternalError"}
            # Forget the job before the final reply, so a ping sent right after it sees the worker idle.
            with self._active_lock:
                self._active.pop(job.key, None)
            self.reply(job.request_id, kind, **fields)

    def _run(self, job: _Job) -> tuple[str, dict[str, Any]]:
        """Run one job; every failure becomes an ``error`` reply (nothing escapes)."""
        try:
            if job.cancel.is_set():
                raise Cancelled(f"request {_describe(job.request_id)} was cancelled before it started")
            if job.kind == "batch":
                return run_batch_request(self.segmenter, self.model, job.arguments, job.cancel.is_set,
                                         lambda reply_type, **fields: self.reply(job.request_id, reply_type, **fields),
                                         _describe(job.request_id))
            return self._load(job) if job.kind == "load" else self._segment(job)
        except Cancelled as exc:
            return "error", {"message": str(exc), "cancelled": True}
        except SegEarthGeoError as exc:
            return "error", {"message": str(exc), "error": type(exc).__name__}
        except BaseException as exc:  # noqa: BLE001 - a failing request (even SystemExit in a model) must leave the worker alive
            log.error("request %s failed:\n%s", _describe(job.request_id), traceback.format_exc())
            return "error", {"message": f"{type(exc).__name__}: {exc}", "error": type(exc).__name__}

    def _load(self, job: _Job) -> tuple[str, dict[str, Any]]:
        model, device = job.arguments["model"], job.arguments["device"]
        loader = self._loader
        if loader is None:
            from segearth_geo.model.loading import load_segmenter as loader
        started = time.perf_counter()
        segmenter = loader(model, device)
        self.segmenter, self.model = segmenter, model
        self.device = str(getattr(segmenter, "device", device))
        return "ready", dict(model=model, device=self.device, chip_size=int(getattr(segmenter, "chip_size", 0)),
                             version=__version__, pid=os.getpid(), seconds=round(time.perf_counter() - started, 3))

    def _segment(self, job: _Job) -> tuple[str, dict[str, Any]]:
        if self.segmenter is None:
            raise UsageError("no model is loaded; send a \"load\" request or start the worker with --model")
        kwargs = dict(job.arguments)
        output = Path(kwargs["out"])
        existed = output.exists()
        segment_fn = self._segment_fn
        if segment_fn is None:
            from segearth_geo.engine import segment_raster as segment_fn

        def on_progress(done: int, total: int) -> None:
            if job.cancel.is_set():
                kept = f"{output} was left as it was" if existed else "nothing was written"
                raise Cancelled(f"request {_describe(job.request_id)} was cancelled; {kept}")
            self.reply(job.request_id, "progress", done=int(done), total=int(total))

        started = time.perf_counter()
        # A Cancelled raised by on_progress stops the engine before it replaces the output.
        gdf = segment_fn(kwargs.pop("raster"), kwargs.pop("prompt"), segmenter=self.segmenter,
                         progress=on_progress, **kwargs)
        fields = {**_result_fields(gdf, output), "device": self.device,
                  "seconds": round(time.perf_counter() - started, 3)}
        if job.cancel.is_set():
            # The cancel came after the last batch: the new output is complete and already replaced
            # the old one, so deleting it would leave neither. Keep it and say so.
            fields["cancel"] = TOO_LATE
        return "result", fields


# -- requests in ----------------------------------------------------------------------------------
def parse_request(line: bytes | str) -> dict[str, Any] | None:
    """One input line -> a request with a valid ``id``, known ``type`` and only known fields.

    Returns ``None`` for a blank line. Raises :class:`RequestRejected` (with the id to
    answer: ``None`` while the id is unknown or unusable).
    """
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RequestRejected(None, f"request line is not valid UTF-8 (byte 0x{exc.object[exc.start]:02x} at "
                                  f"offset {exc.start}); send UTF-8 JSON, one object per line") from exc
    line = line.strip()
    if not line:
        return None
    try:
        request = json.loads(line)
    except json.JSONDecodeError as exc:
        raise RequestRejected(None, f"request is not valid JSON ({exc.msg} at column {exc.colno}); "
                              "send one JSON object per line") from exc
    except (ValueError, RecursionError) as exc:  # e.g. an integer of more than 4300 digits, deep nesting
        raise RequestRejected(None, f"request cannot be read ({type(exc).__name__}: {exc})") from exc
    if not isinstance(request, dict):
        raise RequestRejected(None, "request must be a JSON object with \"id\" and \"type\"")
    if "id" not in request:
        raise RequestRejected(None, "request has no \"id\"; every request needs one")
    request_id = request["id"]
    try:
        id_key(request_id)
    except UsageError as exc:
        raise RequestRejected(None, str(exc)) from exc
    kind = request.get("type")
    if not isinstance(kind, str) or kind not in REQUEST_FIELDS:
        raise RequestRejected(request_id, f"unknown request type {kind!r}; expected one of {', '.join(REQUEST_TYPES)}")
    unknown = sorted(set(request) - set(REQUEST_FIELDS[kind]))
    if unknown:
        raise RequestRejected(request_id, f"unknown field{'s' if len(unknown) > 1 else ''} "
                              f"{', '.join(map(repr, unknown))} in a {kind} request; allowed: "
                              f"{', '.join(REQUEST_FIELDS[kind])}", error="UsageError")
    return request


def _load_arguments(request: dict[str, Any]) -> dict[str, Any]:
    model = request.get("model")
    if not isinstance(model, str) or not model.strip():
        raise UsageError("load needs \"model\": 'demo', a checkpoint folder, a repo id or 'file.py:factory'")
    device = request.get("device", "auto")
    if device is None:
        device = "auto"
    if not isinstance(device, str) or not device.strip():
        raise UsageError(f"\"device\" must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    return {"model": model, "device": device}


def _segment_arguments(request: dict[str, Any]) -> dict[str, Any]:
    """Validate a segment request and turn it into ``segment_raster`` keyword arguments.

    Only the fields the request gives are passed, so every default (overlap included) is
    the engine's own, the same as the CLI's.
    """
    kwargs: dict[str, Any] = {}
    for key in ("raster", "output"):
        value = request.get(key)
        if not isinstance(value, str) or not value.strip():
            raise UsageError(f"segment needs a non-empty string \"{key}\"")
    prompt, prompts = request.get("prompt"), request.get("prompts")
    if (prompt is None) == (prompts is None):
        raise UsageError("segment needs either \"prompt\" (a string) or \"prompts\" (a list of strings)")
    if prompts is not None:
        if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
            raise UsageError("\"prompts\" must be a non-empty list of non-empty strings")
        kwargs["prompt"] = list(prompts)
    else:
        if not isinstance(prompt, str) or not prompt.strip():
            raise UsageError("segment needs a non-empty string \"prompt\"")
        kwargs["prompt"] = prompt
    kwargs["raster"] = request["raster"]
    kwargs["out"] = str(Path(request["output"]).expanduser())
    overwrite = request.get("overwrite", False)
    if not isinstance(overwrite, bool):
        raise UsageError(f"\"overwrite\" must be true or false, got {overwrite!r}")
    kwargs["overwrite"] = overwrite
    bbox = request.get("bbox")
    if bbox is not None:
        kwargs["bbox"] = _bbox(bbox)
    bbox_crs = request.get("bbox_crs")
    if bbox_crs is not None:
        if bbox is None:
            raise UsageError("\"bbox_crs\" is given without \"bbox\"")
        if not isinstance(bbox_crs, str) or not bbox_crs.strip():
            raise UsageError(f"\"bbox_crs\" must be a CRS string such as 'EPSG:4326', got {bbox_crs!r}")
        kwargs["bbox_crs"] = bbox_crs
    for key in ("batch_size", "overlap", "max_chips"):
        value = request.get(key)
        if value is None:
            continue
        smallest = 1 if key == "batch_size" else 0
        if isinstance(value, bool) or not isinstance(value, int) or value < smallest:
            kind = "positive" if smallest else "non-negative"
            raise UsageError(f"\"{key}\" must be a {kind} integer, got {value!r}")
        kwargs[key] = value
    for key in _NUMERIC_FIELDS:
        value = request.get(key)
        if value is None:
            continue
        if not _is_finite_number(value):
            raise UsageError(f"\"{key}\" must be a finite number, got {value!r}")
        kwargs[key] = float(value)
    return kwargs


def _bbox(bbox: Any) -> tuple[float, float, float, float]:
    """``[minx, miny, maxx, maxy]`` of finite numbers whose width and height are finite too."""
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_finite_number(v) for v in bbox)):
        raise UsageError(f"\"bbox\" must be [minx, miny, maxx, maxy] of finite numbers, got {bbox!r}")
    minx, miny, maxx, maxy = (float(v) for v in bbox)
    if not (math.isfinite(maxx - minx) and math.isfinite(maxy - miny)):
        raise UsageError(f"\"bbox\" {bbox!r} is too large: its width or height overflows")
    return minx, miny, maxx, maxy


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _as_rejection(request_id: Any, check: Callable[[], Any]) -> Any:
    """Run ``check``; a :class:`SegEarthGeoError` becomes a :class:`RequestRejected` for ``request_id``."""
    try:
        return check()
    except SegEarthGeoError as exc:
        raise RequestRejected(request_id, str(exc), error=type(exc).__name__) from exc


def _describe(request_id: Any) -> str:
    """An id as it appears in messages (its JSON)."""
    try:
        return clean_text(json.dumps(request_id, ensure_ascii=False))
    except (ValueError, RecursionError):
        return "<id>"


def _result_fields(gdf: Any, output: Path) -> dict[str, Any]:
    """What the ``result`` reply says about a finished segmentation."""
    from segearth_geo.output import SEGMENTS_LAYER, output_format

    polygons: dict[str, int] = {}
    if len(gdf) and "label" in gdf.columns:
        polygons = {str(k): int(v) for k, v in gdf["label"].value_counts().sort_index().items()}
    crs = gdf.crs.to_string() if getattr(gdf, "crs", None) is not None else None
    stats = gdf.attrs.get("segearth", {})
    answers = [{"chip": int(chip), "answer": str(answer)} for chip, answer in sorted(stats.get("answers", {}).items())]
    by_prompt = stats.get("answers_by_prompt", {})
    extra: dict[str, Any] = {}
    if len(by_prompt) > 1:  # a multi-prompt request: answers per prompt, and the prompts in order
        extra["prompts"] = list(by_prompt)
        extra["answers_by_prompt"] = {
            p: [{"chip": int(chip), "answer": str(answer)} for chip, answer in sorted(rows.items())]
            for p, rows in by_prompt.items()}
    if "cache" in stats:
        extra["cache"] = stats["cache"]
    return {
        "output": str(output),
        "layer": SEGMENTS_LAYER if output_format(output) == "GPKG" else None,
        "count": int(len(gdf)),
        "polygons": polygons,
        "answers": answers,
        "chips": {"total": int(stats.get("chips_total", 0)), "processed": int(stats.get("chips_processed", 0))},
        "crs": crs,
        **extra,
    }


# -- process plumbing -----------------------------------------------------------------------------
def serve(stdin: Iterable[bytes] | Iterable[str], stdout: TextIO | BinaryIO, *, model: str | None = None,
          device: str = "auto", **worker_kwargs: Any) -> int:
    """Run the request loop until ``shutdown`` or end of input; return the exit code (0).

    ``stdin`` yields lines as bytes (decoded here, so a line that is not UTF-8 gets an
    ``error`` reply) or text; ``stdout`` is a binary or text stream.
    """
    binary = not isinstance(stdout, io.TextIOBase)

    def write(line: str) -> None:
        if binary:
            stdout.write((line + "\n").encode("utf-8"))  # type: ignore[arg-type]
        else:
            stdout.write(line + "\n")  # type: ignore[arg-type]
        stdout.flush()

    worker = Worker(write, model=model, device=device, **worker_kwargs)
    try:
        for line in stdin:
            if not worker.handle_line(line):
                return 0
    except BaseException:  # SIGTERM (the CLI raises it as an exception) or Ctrl-C: stop the job first
        worker.abort()
        raise
    worker.close()
    return 0


def run_worker(model: str | None = None, device: str = "auto") -> int:
    """Serve on the process's real stdin/stdout, keeping stdout for protocol lines only.

    File descriptor 1 is duplicated for the protocol and then pointed at stderr, so anything
    else that writes to stdout (``print``, warnings, GDAL) lands on stderr instead. Input is
    read as bytes, so a line that is not UTF-8 is answered instead of ending the worker.
    """
    sys.stdout.flush()
    protocol_fd = os.dup(1)
    os.dup2(2, 1)
    protocol = os.fdopen(protocol_fd, "wb", buffering=0)
    sys.stdout = sys.stderr
    stdin = open(sys.stdin.fileno(), "rb", closefd=False)  # noqa: SIM115
    return serve(stdin, protocol, model=model, device=device)
