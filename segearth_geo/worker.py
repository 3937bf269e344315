"""JSON-lines request loop behind ``segearth-geo worker`` (used by the QGIS plugin).

One JSON object per line on stdin; one JSON object per line on stdout. Every request
carries ``"id"`` and ``"type"``; every reply repeats the request's ``"id"`` and has its own
``"type"``. The full protocol is in ``docs/worker-protocol.md``.

Threads: the reading thread answers ``ping``, ``cancel`` and ``shutdown`` at once, while
``load`` and ``segment`` requests run one after another on a single job thread, so the
worker stays responsive during a long segmentation. Cancellation is cooperative: the
engine calls our progress callback between chip batches and the callback raises
:class:`~segearth_geo.errors.Cancelled`; the engine writes its output to a temporary file
and renames it only on success, so a cancelled request leaves no output file.

Only protocol replies go to stdout; :func:`run_worker` moves file descriptor 1 onto
stderr so that logging, ``print`` and C libraries (GDAL) cannot corrupt the stream.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TextIO

from segearth_geo import __version__
from segearth_geo.errors import Cancelled, SegEarthGeoError, UsageError

log = logging.getLogger(__name__)

REQUEST_TYPES = ("ping", "load", "segment", "cancel", "shutdown")
# Optional numeric fields of a segment request and the engine keyword each one feeds.
_NUMERIC_FIELDS = ("gsd", "threshold", "min_area", "simplify")


@dataclass
class _Job:
    """A queued ``load`` or ``segment`` request and its cancellation flag."""

    request: dict[str, Any]
    cancel: threading.Event = field(default_factory=threading.Event)


class Worker:
    """Answers protocol requests; ``write`` receives each reply as a dict.

    Args:
        write: called with every reply (thread-safe wrapper is added here).
        model: model to load before the first request (``None``: wait for ``load``).
        device: device for that model (``auto``, ``cpu``, ``cuda``, ``cuda:N``).
        loader: ``(model, device) -> segmenter``; defaults to :func:`segearth_geo.load_segmenter`.
        segment_fn: defaults to :func:`segearth_geo.segment_raster` (injectable for tests).
    """

    def __init__(
        self,
        write: Callable[[dict[str, Any]], None],
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
        self._active: dict[Any, _Job] = {}
        self._active_lock = threading.Lock()
        self.segmenter: Any = None
        self.model: str | None = None
        self.device: str = device
        self._thread = threading.Thread(target=self._job_loop, name="segearth-worker-jobs", daemon=True)
        self._thread.start()
        if model is not None:
            self._submit({"id": None, "type": "load", "model": model, "device": device})
        else:
            self.reply(None, "ready", model=None, device=None, version=__version__, pid=os.getpid())

    # -- output -----------------------------------------------------------------------------
    def reply(self, request_id: Any, kind: str, **fields: Any) -> None:
        """Send one reply line (``id`` and ``type`` first)."""
        message = {"id": request_id, "type": kind, **fields}
        with self._write_lock:
            self._write_raw(message)

    def error(self, request_id: Any, message: str, **fields: Any) -> None:
        self.reply(request_id, "error", message=message, **fields)

    # -- input ------------------------------------------------------------------------------
    def handle_line(self, line: str) -> bool:
        """Handle one input line; return ``False`` when the worker must stop."""
        line = line.strip()
        if not line:
            return True
        try:
            request = json.loads(line)
        except json.JSONDecodeError as exc:
            self.error(None, f"request is not valid JSON ({exc.msg} at column {exc.colno}); send one JSON object per line")
            return True
        if not isinstance(request, dict):
            self.error(None, "request must be a JSON object with \"id\" and \"type\"")
            return True
        request_id = request.get("id")
        kind = request.get("type")
        if "id" not in request:
            self.error(None, "request has no \"id\"; every request needs one")
            return True
        if kind not in REQUEST_TYPES:
            self.error(request_id, f"unknown request type {kind!r}; expected one of {', '.join(REQUEST_TYPES)}")
            return True
        if kind == "ping":
            self.reply(request_id, "pong", model=self.model, device=self.device if self.segmenter else None,
                       busy=self.busy, version=__version__, pid=os.getpid())
        elif kind == "cancel":
            self._cancel(request)
        elif kind == "shutdown":
            self._cancel_all()
            self._jobs.put(None)
            self._thread.join(timeout=30)
            self.reply(request_id, "result", shutdown=True)
            return False
        else:
            self._submit(request)
        return True

    @property
    def busy(self) -> bool:
        with self._active_lock:
            return bool(self._active)

    def _submit(self, request: dict[str, Any]) -> None:
        job = _Job(request)
        with self._active_lock:
            self._active[request.get("id")] = job
        self._jobs.put(job)

    def _cancel(self, request: dict[str, Any]) -> None:
        target = request.get("target", request.get("cancel"))
        with self._active_lock:
            job = self._active.get(target)
        if job is not None:
            job.cancel.set()
        self.reply(request.get("id"), "result", cancelled=target, found=job is not None)

    def _cancel_all(self) -> None:
        with self._active_lock:
            for job in self._active.values():
                job.cancel.set()

    def close(self) -> None:
        """End of input: finish the queued requests (their replies are still written), then stop."""
        self._jobs.put(None)
        self._thread.join()

    # -- jobs -------------------------------------------------------------------------------
    def _job_loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            request_id = job.request.get("id")
            try:
                if job.cancel.is_set():
                    raise Cancelled(f"request {request_id!r} was cancelled before it started")
                run = self._load if job.request["type"] == "load" else self._segment
                kind, fields = run(job)
            except Cancelled as exc:
                kind, fields = "error", {"message": str(exc), "cancelled": True}
            except SegEarthGeoError as exc:
                kind, fields = "error", {"message": str(exc), "error": type(exc).__name__}
            except Exception as exc:  # noqa: BLE001 - a failing request must leave the worker alive
                log.error("request %r failed:\n%s", request_id, traceback.format_exc())
                kind, fields = "error", {"message": f"{type(exc).__name__}: {exc}", "error": type(exc).__name__}
            # Forget the job before the final reply, so a ping sent right after it sees the worker idle.
            with self._active_lock:
                self._active.pop(request_id, None)
            self.reply(request_id, kind, **fields)

    def _load(self, job: _Job) -> tuple[str, dict[str, Any]]:
        request = job.request
        model = request.get("model")
        if not isinstance(model, str) or not model.strip():
            raise UsageError("load needs \"model\": 'demo', a checkpoint folder, a repo id or 'file.py:factory'")
        device = str(request.get("device") or "auto")
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
        request = job.request
        request_id = request.get("id")
        if self.segmenter is None:
            raise UsageError("no model is loaded; send a \"load\" request or start the worker with --model")
        kwargs = _segment_kwargs(request)
        output = Path(kwargs["out"])
        kwargs["overwrite"] = bool(request.get("overwrite", False))
        segment_fn = self._segment_fn
        if segment_fn is None:
            from segearth_geo.engine import segment_raster as segment_fn

        def on_progress(done: int, total: int) -> None:
            if job.cancel.is_set():
                raise Cancelled(f"request {request_id!r} was cancelled; nothing was written")
            self.reply(request_id, "progress", done=int(done), total=int(total))

        started = time.perf_counter()
        # A Cancelled raised by on_progress stops the engine before it writes anything.
        gdf = segment_fn(kwargs.pop("raster"), kwargs.pop("prompt"), segmenter=self.segmenter,
                         progress=on_progress, **kwargs)
        if job.cancel.is_set():  # cancelled after the last batch: the file was already written
            _discard(output)
            raise Cancelled(f"request {request_id!r} was cancelled; its output was removed")
        seconds = time.perf_counter() - started
        return "result", {**_result_fields(gdf, output), "device": self.device, "seconds": round(seconds, 3)}


def _segment_kwargs(request: dict[str, Any]) -> dict[str, Any]:
    """Validate a segment request and turn it into ``segment_raster`` keyword arguments."""
    kwargs: dict[str, Any] = {}
    for key in ("raster", "prompt", "output"):
        value = request.get(key)
        if not isinstance(value, str) or not value.strip():
            raise UsageError(f"segment needs a non-empty string \"{key}\"")
    kwargs["raster"] = request["raster"]
    kwargs["prompt"] = request["prompt"]
    kwargs["out"] = str(Path(request["output"]).expanduser())
    bbox = request.get("bbox")
    if bbox is not None:
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
            raise UsageError("\"bbox\" must be [minx, miny, maxx, maxy] (numbers)")
        kwargs["bbox"] = tuple(float(v) for v in bbox)
        if request.get("bbox_crs"):
            kwargs["bbox_crs"] = str(request["bbox_crs"])
    batch_size = request.get("batch_size")
    if batch_size is not None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise UsageError(f"\"batch_size\" must be a positive integer, got {batch_size!r}")
        kwargs["batch_size"] = batch_size
    for key in _NUMERIC_FIELDS:
        value = request.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UsageError(f"\"{key}\" must be a number, got {value!r}")
        kwargs[key] = float(value)
    return kwargs


def _result_fields(gdf: Any, output: Path) -> dict[str, Any]:
    """What the ``result`` reply says about a finished segmentation."""
    from segearth_geo.output import SEGMENTS_LAYER, output_format

    polygons: dict[str, int] = {}
    if len(gdf) and "label" in gdf.columns:
        polygons = {str(k): int(v) for k, v in gdf["label"].value_counts().sort_index().items()}
    crs = gdf.crs.to_string() if getattr(gdf, "crs", None) is not None else None
    stats = gdf.attrs.get("segearth", {})
    answers = [{"chip": int(chip), "answer": str(answer)} for chip, answer in sorted(stats.get("answers", {}).items())]
    return {
        "output": str(output),
        "layer": SEGMENTS_LAYER if output_format(output) == "GPKG" else None,
        "count": int(len(gdf)),
        "polygons": polygons,
        "answers": answers,
        "chips": {"total": int(stats.get("chips_total", 0)), "processed": int(stats.get("chips_processed", 0))},
        "crs": crs,
    }


def _discard(output: Path) -> None:
    try:
        output.unlink()
    except FileNotFoundError:
        pass


def serve(stdin: TextIO, stdout: TextIO, *, model: str | None = None, device: str = "auto", **worker_kwargs: Any) -> int:
    """Run the request loop until ``shutdown`` or end of input; return the exit code (0)."""

    def write(message: dict[str, Any]) -> None:
        stdout.write(json.dumps(message, ensure_ascii=False, default=str) + "\n")
        stdout.flush()

    worker = Worker(write, model=model, device=device, **worker_kwargs)
    for line in stdin:
        if not worker.handle_line(line):
            return 0
    worker.close()
    return 0


def run_worker(model: str | None = None, device: str = "auto") -> int:
    """Serve on the process's real stdin/stdout, keeping stdout for protocol lines only.

    File descriptor 1 is duplicated for the protocol and then pointed at stderr, so anything
    else that writes to stdout (``print``, warnings, GDAL) lands on stderr instead.
    """
    sys.stdout.flush()
    protocol_fd = os.dup(1)
    os.dup2(2, 1)
    protocol = os.fdopen(protocol_fd, "w", encoding="utf-8", buffering=1)
    sys.stdout = sys.stderr
    stdin = open(sys.stdin.fileno(), "r", encoding="utf-8", closefd=False)  # noqa: SIM115
    return serve(stdin, protocol, model=model, device=device)
