"""A part's figures and where its time went, saved after every step so a killed part still leaves them.

Each part runs in its own process; :class:`Recorder` is its notebook. ``with rec.step("sweep k8"):`` times the
step, prints one line, and turns an exception into an entry of ``errors`` (the part goes on with its next step).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp made it 0600
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def describe_error(exc: BaseException) -> dict[str, str]:
    """``{"error": "Type: message", "where": last frames}`` of an exception (one line + a short trace)."""
    frames = traceback.extract_tb(exc.__traceback__)[-3:]
    where = " <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(frames))
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return {"error": f"{type(exc).__name__}: {message}"[:500], "where": where}


class Recorder:
    """The figures (``data``), step times (``steps``) and errors of one part, saved to ``path`` as JSON."""

    def __init__(self, name: str, path: Path) -> None:
        self.name, self.path = name, Path(path)
        self.started = time.perf_counter()
        self.data: dict[str, Any] = {}
        self.steps: dict[str, float] = {}
        self.errors: dict[str, dict[str, str]] = {}
        self.notes: list[str] = []

    def put(self, key: str, value: Any) -> None:
        """Store a figure (JSON-able) and save."""
        self.data[key] = value
        self.save()

    def note(self, text: str) -> None:
        self.notes.append(text)
        self.say(f"note: {text}")
        self.save()

    def say(self, text: str) -> None:
        print(f"[{self.name} {time.perf_counter() - self.started:6.1f}s] {text}", flush=True)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Time ``name``; an exception in it is recorded (and printed in one line), not raised."""
        began = time.perf_counter()
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - one step's failure is a figure missing, the part goes on
            self.errors[name] = describe_error(exc)
            self.say(f"{name} failed: {self.errors[name]['error']} ({self.errors[name]['where']})")
            _release_cuda()
        finally:
            self.steps[name] = round(self.steps.get(name, 0.0) + time.perf_counter() - began, 2)
            self.save()

    def to_dict(self) -> dict[str, Any]:
        return {"data": self.data, "steps": self.steps, "errors": self.errors, "notes": self.notes,
                "seconds": round(time.perf_counter() - self.started, 2)}

    def save(self) -> None:
        write_atomic(self.path, json.dumps(self.to_dict(), indent=1, default=_plain))


def _plain(value: Any) -> Any:
    """JSON fallback: numpy scalars and tuples of them, anything else as text."""
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def _release_cuda() -> None:
    """After a failed step: give cached GPU memory back (an out-of-memory step must not starve the next)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
