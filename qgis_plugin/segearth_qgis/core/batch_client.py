"""Runs ``segearth-geo batch ... --json-progress`` as a subprocess (the engine stays out of QGIS).

Pure Python (no Qt): the Processing algorithm "Segment many rasters" calls
:func:`run_batch_job` from its worker thread. Progress events arrive as JSON lines on
the engine's stdout; the last line is the job's report. Cancelling terminates the engine
(SIGTERM): finished units stay in the job's ledger and the same job resumes when run again.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from .engine_client import _SCRUBBED_ENV, EngineCancelled, EngineError, EngineSettings


@dataclass
class BatchRequest:
    """What the algorithm asks for (one batch job)."""

    sources: list[str]
    prompts: list[str]
    out_dir: str
    merge: str | None = None
    merge_crs: str | None = None
    aoi: str | None = None
    gsd: float | None = None
    threshold: float = 0.5
    min_area: float | None = None
    extra: list[str] = field(default_factory=list)

    def arguments(self) -> list[str]:
        """The ``batch`` command's arguments (after the program)."""
        args = ["batch", *self.sources, "-o", self.out_dir, "--json-progress", "--threshold", repr(self.threshold)]
        for prompt in self.prompts:
            args += ["-p", prompt]
        for flag, value in (("--merge", self.merge), ("--merge-crs", self.merge_crs), ("--aoi", self.aoi),
                            ("--gsd", self.gsd), ("--min-area", self.min_area)):
            if value not in (None, ""):
                args += [flag, str(value)]
        return args + list(self.extra)


def engine_program(settings: EngineSettings) -> list[str]:
    """The engine's command line without a sub-command (program resolved on PATH)."""
    parts = shlex.split(settings.command, posix=os.name != "nt")
    if not parts:
        raise EngineError("the engine command is empty; set it in SegEarth settings (e.g. 'segearth-geo')")
    program = shutil.which(parts[0]) or parts[0]
    if not os.path.isfile(program):
        raise EngineError(f"engine program {parts[0]!r} not found; install the engine with 'pip install segearth-geo' "
                          "and set its full path in SegEarth settings")
    return [program, *parts[1:]]


def run_batch_job(settings: EngineSettings, request: BatchRequest, *,
                  on_event: Callable[[dict[str, Any]], None] | None = None,
                  is_cancelled: Callable[[], bool] | None = None,
                  log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the job and return its report (a dict, see ``BatchReport.to_dict``).

    Raises:
        EngineCancelled: ``is_cancelled()`` became true (the engine was stopped; rerun to resume).
        EngineError: the engine could not start or the job failed before producing a report.
    """
    argv = engine_program(settings) + request.arguments() + ["--model", settings.model, "--device", settings.device]
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
    env["PYTHONUNBUFFERED"] = "1"
    try:
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,  # noqa: S603
                                   encoding="utf-8", bufsize=1, env=env)
    except OSError as exc:
        raise EngineError(f"cannot start the engine ({' '.join(argv)}): {exc}") from exc
    tail: deque[str] = deque(maxlen=20)

    def read_stderr() -> None:
        for line in process.stderr:
            line = line.rstrip()
            if line:
                tail.append(line)
                if log is not None:
                    log(line)

    reader = threading.Thread(target=read_stderr, daemon=True, name="segearth-batch-stderr")
    reader.start()
    lines = _LineQueue(process)
    report = None
    cancelled = False
    while True:
        if not cancelled and is_cancelled is not None and is_cancelled():
            cancelled = True
            process.terminate()
        line = lines.get(timeout=0.1)
        if line is None:
            if process.poll() is not None and lines.finished:
                break
            continue
        try:
            message = json.loads(line)
        except json.JSONDecodeError:
            continue
        if message.get("type") == "report":
            report = message
        elif on_event is not None:
            on_event(message)
    process.wait()
    reader.join(timeout=5)
    for stream in (process.stdout, process.stderr):
        stream.close()
    if cancelled:
        raise EngineCancelled("the batch job was cancelled; run it again to resume")
    if report is None:
        last = tail[-1] if tail else f"exit code {process.returncode}"
        raise EngineError(last[len("Error: "):] if last.startswith("Error: ") else last)
    return report


class _LineQueue:
    """stdout lines of ``process`` read by a thread, handed out with a timeout."""

    def __init__(self, process: subprocess.Popen) -> None:
        self._lines: deque[str] = deque()
        self._event = threading.Event()
        self.finished = False
        threading.Thread(target=self._read, args=(process,), daemon=True, name="segearth-batch-stdout").start()

    def _read(self, process: subprocess.Popen) -> None:
        for line in process.stdout:
            self._lines.append(line)
            self._event.set()
        self.finished = True
        self._event.set()

    def get(self, timeout: float) -> str | None:
        if not self._lines:
            self._event.wait(timeout)
            self._event.clear()
        return self._lines.popleft() if self._lines else None

