"""The worker process: the reading loop, the job queue and thread, signals (``segearth-geo worker``).

Threads: the reading thread answers ``ping``, ``cancel`` and ``shutdown`` at once, while the queued request
types (:data:`~segearth_geo.worker.handlers.HANDLERS`: ``load``, ``segment``, ``batch``) run one after another
on a single job thread, so the worker stays responsive during a long segmentation. Cancellation is
cooperative: the engine calls the handler's progress callback between chip batches and the callback raises
:class:`~segearth_geo.errors.Cancelled`; the engine writes its output to a temporary file and renames it
only at the very end, so a cancelled request leaves ``output`` as it was.

Nothing a request does ends the job thread or the reading loop: each failure ends that request with an
``error`` reply. Only protocol replies go to stdout; :func:`run_worker` moves file descriptor 1 onto stderr so
that logging, ``print`` and C libraries (GDAL) cannot corrupt the stream.
"""

from __future__ import annotations

import io
import logging
import os
import queue
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, BinaryIO, TextIO

from segearth_geo._version import __version__
from segearth_geo.errors import Cancelled, SegEarthGeoError, UsageError
from segearth_geo.params import LoadOptions, naming
from segearth_geo.prediction import describe_segmenter
from segearth_geo.worker.handlers import HANDLERS, WorkerState
from segearth_geo.worker.protocol import Request, RequestRejected, describe_id, encode_reply, id_key, parse_request

log = logging.getLogger(__name__)

# The fields each request type may carry; anything else is refused (a typo must not be ignored).
REQUEST_FIELDS: dict[str, tuple[str, ...]] = {
    "ping": ("id", "type"),
    **{kind: ("id", "type", *handler.fields) for kind, handler in HANDLERS.items()},
    "cancel": ("id", "type", "target"),
    "shutdown": ("id", "type"),
}
REQUEST_TYPES = tuple(REQUEST_FIELDS)
# Seconds a running job gets to stop when the worker is interrupted (SIGTERM, Ctrl-C).
ABORT_WAIT_S = 5.0


@dataclass
class _Job:
    """A queued request and its cancel flag."""

    request: Request
    cancel: threading.Event = field(default_factory=threading.Event)


class Worker:
    """Answers protocol requests; ``write`` receives each reply as one encoded line (no newline).

    Args:
        write: called with every reply line, under a lock (one call per reply).
        load: model to load before the first request (``None``: wait for ``load``).
        loader: ``(options) -> segmenter``; defaults to :func:`segearth_geo.model.loading.load_model`.
    """

    def __init__(self, write: Callable[[str], None], *, load: LoadOptions | None = None,
                 loader: Callable[[LoadOptions], Any] | None = None) -> None:
        self._write_raw = write
        self._write_lock = threading.Lock()
        self.state = WorkerState(loader=loader)
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._active: dict[str, _Job] = {}  # id key -> queued or running job
        self._active_lock = threading.Lock()
        self._running: _Job | None = None  # the job on the job thread now
        self._thread = threading.Thread(target=self._job_loop, name="segearth-worker-jobs", daemon=True)
        self._thread.start()
        if load is not None:
            # Id null is refused from clients, so the start-up load's key "null" is never in use by one.
            self._submit(_Job(Request(None, "null", "load", load.to_dict(), load.check(), describe_id(None))))
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
            log.error("cannot encode the %s reply to %s: %s", kind, describe_id(request_id), exc)
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

    # -- input ------------------------------------------------------------------------------
    def handle_line(self, line: bytes | str) -> bool:
        """Handle one input line; return ``False`` when the worker must stop. Never raises."""
        try:
            return self._handle(line)
        except RequestRejected as exc:
            self.reply(exc.request_id, "error", message=str(exc), **exc.fields)
        except Exception as exc:  # noqa: BLE001 - the reading loop must survive anything
            log.error("cannot handle a request line:\n%s", traceback.format_exc())
            self.reply(None, "error", message=f"internal error while reading a request ({type(exc).__name__}: "
                       f"{exc})", error=type(exc).__name__)
        return True

    def _handle(self, line: bytes | str) -> bool:
        request = parse_request(line, REQUEST_FIELDS)
        if request is None:
            return True
        with self._active_lock:
            if request.key in self._active:
                raise RequestRejected(request.id, f"id {request.describe} is in use by a queued or running "
                                      "request; give every request its own id", id_in_use=True, error="UsageError")
        if request.type == "ping":
            self.reply(request.id, "pong", model=self.state.model,
                       device=self.state.device if self.state.segmenter is not None else None, busy=self.busy,
                       version=__version__, pid=os.getpid())
        elif request.type == "cancel":
            self._cancel(request)
        elif request.type == "shutdown":
            self._cancel_all()
            self._jobs.put(None)
            self._thread.join(timeout=30)
            self.reply(request.id, "result", shutdown=True)
            return False
        else:
            try:
                with naming("json"):
                    request.arguments = HANDLERS[request.type].check(request.fields)
            except SegEarthGeoError as exc:
                raise RequestRejected(request.id, str(exc), error=type(exc).__name__) from exc
            self._submit(_Job(request))
        return True

    def _cancel(self, request: Request) -> None:
        if "target" not in request.fields:
            raise RequestRejected(request.id, "cancel needs \"target\": the id of the request to cancel",
                                  error="UsageError")
        target = request.fields["target"]
        try:
            key = id_key(target, "target")
        except UsageError as exc:
            raise RequestRejected(request.id, str(exc), error="UsageError") from exc
        with self._active_lock:
            job = self._active.get(key)
        if job is not None:
            job.cancel.set()
            if job is self._running:
                self._interrupt_model()
        self.reply(request.id, "result", cancelled=target, found=job is not None)

    def _interrupt_model(self) -> None:
        """Stop the model calls in progress when the model can (a remote model stops sending and its server drops
        this client's queued chips); otherwise the engine stops at its next chip batch."""
        segmenter = self.state.segmenter
        if segmenter is None or not describe_segmenter(segmenter).has("cancel"):
            return
        try:
            segmenter.cancel()
        except Exception as exc:  # noqa: BLE001 - the cancel flag still stops the engine at its next batch
            log.warning("the model could not cancel its calls: %s", exc)

    @property
    def busy(self) -> bool:
        """Whether a queued request type (load, segment, batch) is queued or running."""
        with self._active_lock:
            return bool(self._active)

    def _submit(self, job: _Job) -> None:
        with self._active_lock:
            self._active[job.request.key] = job
        self._jobs.put(job)

    def _cancel_all(self) -> None:
        with self._active_lock:
            for job in self._active.values():
                job.cancel.set()
        if self._running is not None:
            self._interrupt_model()

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
            self._running = job
            try:
                kind, fields = self._run(job)
            except BaseException:  # noqa: BLE001 - _run catches everything; this is the last line of defence
                kind, fields = "error", {"message": "internal error in the worker", "error": "InternalError"}
            self._running = None
            # Forget the job before the final reply, so a ping sent right after it sees the worker idle.
            with self._active_lock:
                self._active.pop(job.request.key, None)
            self.reply(job.request.id, kind, **fields)

    def _run(self, job: _Job) -> tuple[str, dict[str, Any]]:
        """Run one job through its handler; every failure becomes an ``error`` reply (nothing escapes)."""
        request = job.request
        try:
            if job.cancel.is_set():
                raise Cancelled(f"request {request.describe} was cancelled before it started")

            def reply(reply_type: str, **fields: Any) -> None:
                self.reply(request.id, reply_type, **fields)

            with naming("json"):  # library messages name request fields ("merge"), not CLI options
                return HANDLERS[request.type].run(self.state, request, job.cancel, reply)
        except Cancelled as exc:
            return "error", {"message": str(exc), "cancelled": True}
        except SegEarthGeoError as exc:
            return "error", {"message": str(exc), "error": type(exc).__name__}
        except BaseException as exc:  # noqa: BLE001 - a failing request (even SystemExit in a model) must leave the worker alive
            log.error("request %s failed:\n%s", request.describe, traceback.format_exc())
            return "error", {"message": f"{type(exc).__name__}: {exc}", "error": type(exc).__name__}


# -- process plumbing -----------------------------------------------------------------------------
def serve(stdin: Iterable[bytes] | Iterable[str], stdout: TextIO | BinaryIO, *, load: LoadOptions | None = None,
          **worker_kwargs: Any) -> int:
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

    worker = Worker(write, load=load, **worker_kwargs)
    try:
        for line in stdin:
            if not worker.handle_line(line):
                return 0
    except BaseException:  # SIGTERM (the CLI raises it as an exception) or Ctrl-C: stop the job first
        worker.abort()
        raise
    worker.close()
    return 0


def run_worker(load: LoadOptions | None = None) -> int:
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
    return serve(stdin, protocol, load=load)


__all__ = ["ABORT_WAIT_S", "REQUEST_FIELDS", "REQUEST_TYPES", "Worker", "run_worker", "serve"]
