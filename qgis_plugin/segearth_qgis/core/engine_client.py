"""Talks JSON lines to a ``segearth-geo worker`` subprocess (see docs/worker-protocol.md).

Pure Python (no Qt, no torch): a reader thread routes replies by request id into
per-request queues, a second thread keeps the worker's stderr for the log. All public
methods are thread-safe, so a ``QgsTask`` can wait on a segmentation while the main
thread pings or cancels.
"""

from __future__ import annotations

import collections
import json
import os
import queue
import shlex
import shutil
import subprocess
import threading
import uuid
from dataclasses import dataclass
from typing import Any, Callable

from .result import SegmentResult

# Variables set for QGIS' own Python, GDAL and PROJ must not leak into the engine's environment,
# which ships its own (e.g. rasterio wheels bundle a newer proj.db than QGIS').
_SCRUBBED_ENV = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONEXECUTABLE", "QT_PLUGIN_PATH",
                 "PROJ_LIB", "PROJ_DATA", "GDAL_DATA", "GDAL_DRIVER_PATH")


TOKEN_ENV = "SEGEARTH_TOKEN"  # the engine reads a model server's token from here
SAM3_OUTPUTS = ("instances", "semantic", "both")  # the engine's LoadOptions.sam3_output choices (SAM3 only)


def engine_environment() -> dict[str, str]:
    """The environment of an engine process: QGIS' own Python/GDAL/PROJ variables left out, output unbuffered."""
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def no_console():
    """``startupinfo`` that keeps a console window from flashing up on Windows (``None`` elsewhere)."""
    if os.name != "nt":
        return None
    startupinfo = subprocess.STARTUPINFO()
    startupinfo.dwFlags |= subprocess.STARTF_USESHOWWINDOW
    return startupinfo


def read_auth_token(authcfg: str) -> str:
    """The token stored in QGIS' authentication database under ``authcfg``: the ``token`` of an "EsriToken"
    configuration or the ``password`` of a "Basic" one (the user name is not used)."""
    from qgis.core import QgsApplication, QgsAuthMethodConfig

    config = QgsAuthMethodConfig()
    manager = QgsApplication.authManager()
    if not manager.loadAuthenticationConfig(authcfg, config, True):
        raise EngineError(f"the authentication configuration {authcfg!r} cannot be read; check it in QGIS Options > "
                          "Authentication (the master password may be needed)")
    token = (config.config("token") or config.config("password") or "").strip()
    if not token:
        raise EngineError(f"the authentication configuration {authcfg!r} holds no token; use the type 'Esri token' "
                          "(or 'Basic' with the token as password)")
    return token


class EngineError(RuntimeError):
    """The engine could not be started or a request failed (message is user-facing)."""


class EngineCancelled(EngineError):
    """The request was cancelled; the engine wrote nothing."""


@dataclass(frozen=True)
class EngineSettings:
    """How to start the engine: command line (without ``worker``) and the engine's load options.

    The load options carry the names of the engine's ``LoadOptions`` (``segearth_geo/params.py``) and reach
    the worker as its command-line options (``--score-threshold 0.3``); unset ones (``None``) are left out, so
    the engine's defaults apply. The engine checks every value and refuses, in one line, an option the model
    does not take.
    """

    command: str = "segearth-geo"
    model: str = "demo"
    device: str = "auto"
    dtype: str | None = None
    batch_size: int | None = None
    score_threshold: float | None = None
    cache_mb: float | None = None
    template: str | None = None
    sam3_output: str | None = None
    presence_threshold: float | None = None
    authcfg: str | None = None  # id of a QGIS authentication configuration holding a model server's token

    LOAD_OPTIONS = ("dtype", "batch_size", "score_threshold", "cache_mb", "template", "sam3_output",
                    "presence_threshold")

    @property
    def remote(self) -> bool:
        """Whether the model is a model server (``http://HOST:PORT`` / ``https://HOST:PORT``)."""
        return self.model.strip().lower().startswith(("http://", "https://"))

    def load_flags(self) -> list[str]:
        """``--name value`` for each load option that is set (besides model and device)."""
        flags: list[str] = []
        for name in self.LOAD_OPTIONS:
            value = getattr(self, name)
            if value is not None and value != "":
                flags += ["--" + name.replace("_", "-"), str(value)]
        return flags

    def program(self) -> list[str]:
        """The engine command as a list, its program resolved on PATH (raises :class:`EngineError` if missing)."""
        try:
            parts = shlex.split(self.command, posix=os.name != "nt")
        except ValueError as exc:  # an unclosed quote
            raise EngineError(f"the engine command {self.command!r} cannot be read ({exc}); fix it in SegEarth "
                              "settings") from exc
        if not parts:
            raise EngineError("the engine command is empty; set it in SegEarth settings (e.g. 'segearth-geo')")
        program = shutil.which(parts[0]) or parts[0]
        if not os.path.isfile(program):
            raise EngineError(
                f"engine program {parts[0]!r} not found; install the engine with 'pip install segearth-geo' "
                "and set its full path in SegEarth settings"
            )
        return [program, *parts[1:]]

    def argv(self) -> list[str]:
        """Full worker command line, program resolved on PATH; never run through a shell."""
        # A model server runs its model on its own device: the worker is only told where the server is.
        argv = [*self.program(), "worker"] + ([] if self.remote else ["--device", self.device])
        if self.model:
            argv += ["--model", self.model, *self.load_flags()]
        return argv


class EngineClient:
    """One worker subprocess and the requests in flight.

    Args:
        settings: command, model and device.
        log: called with each stderr line of the worker (the plugin sends them to the QGIS log).
    """

    def __init__(self, settings: EngineSettings, log: Callable[[str], None] | None = None,
                 token_reader: Callable[[str], str] | None = None) -> None:
        self.settings = settings
        self._log = log or (lambda line: None)
        self._token_reader = token_reader or read_auth_token
        self._process: subprocess.Popen | None = None
        self._queues: dict[Any, queue.Queue] = {}
        self._lock = threading.RLock()
        self._write_lock = threading.Lock()
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=50)
        self.ready: dict[str, Any] | None = None
        self.start_error: str | None = None  # why the last start failed; None once a start succeeds

    # -- lifecycle ------------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def check(self) -> None:
        """Raise :class:`EngineError` when the engine command cannot run (kept in :attr:`start_error`, as a start's)."""
        try:
            self.settings.argv()
        except EngineError as exc:
            self.start_error = str(exc)
            raise

    def start(self, timeout: float = 600.0) -> dict[str, Any]:
        """Start the worker (if not running) and wait until its model is loaded; return ``ready``.

        A failure is kept in :attr:`start_error` (the full message) until a later start succeeds.
        """
        try:
            ready = self._start(timeout)
        except EngineError as exc:
            self.start_error = str(exc)
            raise
        self.start_error = None
        return ready

    def _start(self, timeout: float) -> dict[str, Any]:
        with self._lock:
            if self.is_running() and self.ready is not None:
                return self.ready
            self.stop()
            argv = self.settings.argv()
            env = engine_environment()
            if self.settings.authcfg:
                # The token goes to the worker in its environment, never on its command line (process lists).
                env[TOKEN_ENV] = self._token_reader(self.settings.authcfg)
            try:
                process = subprocess.Popen(  # noqa: S603 - argv list, no shell
                    argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    text=True, encoding="utf-8", errors="replace", bufsize=1, env=env, startupinfo=no_console(),
                )
            except OSError as exc:
                raise EngineError(f"cannot start the engine ({' '.join(argv)}): {exc}") from exc
            self._process = process
            startup: queue.Queue = queue.Queue()
            self._queues[None] = startup
            threading.Thread(target=self._read_stdout, args=(process,), daemon=True, name="segearth-stdout").start()
            threading.Thread(target=self._read_stderr, args=(process,), daemon=True, name="segearth-stderr").start()
        try:
            message = startup.get(timeout=timeout)
        except queue.Empty as exc:
            self.stop()
            raise EngineError(f"the engine did not get ready within {timeout:.0f} s") from exc
        if message.get("type") != "ready":
            self.stop()
            raise EngineError(f"the engine failed to start: {message.get('message', message)}")
        self.ready = message
        return message

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the worker to shut down; kill it if it does not exit in ``timeout`` seconds."""
        with self._lock:
            process, self._process, self.ready = self._process, None, None
        if process is None:
            return
        if process.poll() is None:
            try:
                self._send(process, {"id": "shutdown-" + uuid.uuid4().hex[:8], "type": "shutdown"})
                process.wait(timeout=timeout)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                process.kill()
                process.wait(timeout=timeout)
        for stream in (process.stdin, process.stdout, process.stderr):
            try:
                stream.close()
            except (OSError, ValueError):
                pass

    # -- requests -------------------------------------------------------------------------------
    def request(self, kind: str, **fields: Any) -> tuple[str, queue.Queue]:
        """Send one request; return its id and the queue that receives its replies."""
        process = self._process
        if process is None or process.poll() is not None:
            raise EngineError("the engine is not running; start it from the SegEarth panel")
        request_id = f"{kind}-{uuid.uuid4().hex[:12]}"
        replies: queue.Queue = queue.Queue()
        with self._lock:
            self._queues[request_id] = replies
        try:
            self._send(process, {"id": request_id, "type": kind, **fields})
        except (OSError, ValueError) as exc:
            raise EngineError(f"the engine stopped unexpectedly ({exc}); run again to restart it") from exc
        return request_id, replies

    def ping(self, timeout: float = 10.0) -> dict[str, Any]:
        request_id, replies = self.request("ping")
        try:
            return replies.get(timeout=timeout)
        except queue.Empty as exc:
            raise EngineError(f"the engine did not answer a ping within {timeout:.0f} s") from exc
        finally:
            self._forget(request_id)

    def cancel(self, target: str) -> None:
        request_id, _ = self.request("cancel", target=target)
        self._forget(request_id)

    def segment(
        self,
        fields: dict[str, Any],
        on_progress: Callable[[int, int], None] | None = None,
        is_cancelled: Callable[[], bool] | None = None,
        on_started: Callable[[str], None] | None = None,
    ) -> SegmentResult:
        """Run one segmentation and wait for it; polls ``is_cancelled`` to send ``cancel``.

        Raises:
            EngineCancelled: the request was cancelled (no output file exists).
            EngineError: the engine reported an error or died.
        """
        self.start()
        request_id, replies = self.request("segment", **fields)
        if on_started is not None:
            on_started(request_id)
        progress = None if on_progress is None else (
            lambda message: on_progress(int(message.get("done", 0)), int(message.get("total", 0))))
        return SegmentResult.from_reply(self._wait(request_id, replies, progress, is_cancelled))

    def batch(
        self,
        fields: dict[str, Any],
        on_event: Callable[[dict[str, Any]], None] | None = None,
        is_cancelled: Callable[[], bool] | None = None,
    ) -> dict[str, Any]:
        """Run one batch job on the loaded model and wait for its report (``BatchReport.to_dict``).

        ``on_event`` gets every ``progress`` reply (``done``/``total`` chips, ``event``, ``message``).
        Raises:
            EngineCancelled: the job was cancelled (finished units are kept; the same job resumes).
            EngineError: the engine reported an error or died.
        """
        self.start()
        request_id, replies = self.request("batch", **fields)
        return self._wait(request_id, replies, on_event, is_cancelled,
                          died="the engine stopped during the batch job; run again to resume it")

    def _wait(self, request_id: str, replies: queue.Queue, on_progress: Callable[[dict[str, Any]], None] | None,
              is_cancelled: Callable[[], bool] | None, died: str | None = None) -> dict[str, Any]:
        """Wait for a request's ``result`` (returned) while passing its ``progress`` replies on and sending
        ``cancel`` once ``is_cancelled()`` turns true; ``died``: the error when the engine process ends first.

        Raises:
            EngineCancelled: the request ended cancelled. EngineError: it failed (or the engine died).
        """
        cancel_sent = False
        try:
            while True:
                if not cancel_sent and is_cancelled is not None and is_cancelled():
                    cancel_sent = True
                    try:
                        self.cancel(request_id)
                    except EngineError:
                        pass
                try:
                    message = replies.get(timeout=0.1)
                except queue.Empty:
                    if died is not None and (self._process is None or self._process.poll() is not None):
                        raise EngineError(died) from None
                    continue
                kind = message.get("type")
                if kind == "progress" and on_progress is not None:
                    on_progress(message)
                elif kind == "result":
                    return message
                elif kind == "error":
                    if message.get("cancelled") or cancel_sent:
                        raise EngineCancelled(message.get("message", "cancelled"))
                    raise EngineError(message.get("message", "the engine reported an error"))
        finally:
            self._forget(request_id)

    # -- plumbing -------------------------------------------------------------------------------
    def _send(self, process: subprocess.Popen, message: dict[str, Any]) -> None:
        with self._write_lock:
            process.stdin.write(json.dumps(message) + "\n")
            process.stdin.flush()

    def _forget(self, request_id: str) -> None:
        with self._lock:
            self._queues.pop(request_id, None)

    def _read_stdout(self, process: subprocess.Popen) -> None:
        for line in process.stdout:
            try:
                message = json.loads(line)
            except json.JSONDecodeError:
                self._log(f"engine wrote a non-JSON line on stdout: {line.rstrip()}")
                continue
            request_id = message.get("id") if isinstance(message, dict) else ()
            if not isinstance(request_id, (str, type(None))):
                continue  # not a reply to us: this client only sends string ids
            with self._lock:
                target = self._queues.get(request_id)
            if target is not None:
                target.put(message)
        code = process.wait()
        tail = " | ".join(list(self.stderr_tail)[-3:])
        detail = f"the engine stopped unexpectedly (exit code {code}); run again to restart it"
        if tail:
            detail += f". Last engine output: {tail}"
        with self._lock:
            pending = list(self._queues.values())
            self._queues.clear()
            if self._process is process:
                self.ready = None
        for target in pending:
            target.put({"type": "error", "message": detail, "exited": code})

    def _read_stderr(self, process: subprocess.Popen) -> None:
        for line in process.stderr:
            line = line.rstrip()
            if line:
                self.stderr_tail.append(line)
                self._log(line)
