"""The settings dialog's "Test engine": run the engine's ``--version`` and ``models --json`` and say what they tell.

Pure Python (no Qt): the settings dialog runs :func:`probe_engine` in a background task, so QGIS never waits on it;
each command has a timeout.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from typing import Any

from .engine_client import EngineError, EngineSettings, engine_environment, no_console

PROBE_TIMEOUT = 60.0  # seconds per command (``models --json`` imports torch to name the device)


@dataclass(frozen=True)
class ProbeReport:
    """What the engine said about itself.

    Attributes:
        version: the engine's version (``"0.2.0"``).
        device: the device the configured model would run on, in the engine's words (``"cpu (CPU, float32)"``).
        models: the rows of ``segearth-geo models --json`` (``alias``, ``hub_id``, ``licence``, ``download``,
            ``cached`` ``"yes"``/``"no"``, ``gsd``, ``strengths``, …).
    """

    version: str
    device: str
    models: list[dict[str, Any]] = field(default_factory=list)

    @property
    def cached(self) -> list[str]:
        """Aliases of the models that are on this machine (downloaded or bundled)."""
        return [str(row.get("alias")) for row in self.models if str(row.get("cached", "")).lower() == "yes"]

    def row(self, alias: str) -> dict[str, Any] | None:
        return next((r for r in self.models if str(r.get("alias", "")).lower() == alias.strip().lower()), None)

    def summary(self) -> str:
        """One line: ``"segearth-geo 0.2.0 · device: cpu (CPU, float32) · downloaded: demo"``."""
        cached = ", ".join(self.cached) or "none"
        return f"segearth-geo {self.version} · device: {self.device} · downloaded: {cached}"


def _run(argv: list[str], what: str, timeout: float) -> str:
    """stdout of ``argv``; :class:`EngineError` (one line) when it cannot run, times out or fails."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, encoding="utf-8", errors="replace",  # noqa: S603
                              timeout=timeout, env=engine_environment(), startupinfo=no_console(),
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise EngineError(f"`{what}` did not answer within {timeout:.0f} s; check the engine command") from exc
    except OSError as exc:
        raise EngineError(f"cannot run `{what}`: {exc.strerror or exc}") from exc
    if done.returncode != 0:
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit code {done.returncode}"
        raise EngineError(f"`{what}` failed: {reason}")
    return done.stdout


def parse_version(text: str) -> str:
    """``"segearth-geo, version 0.2.0"`` → ``"0.2.0"`` (the last word of the first line)."""
    words = text.strip().splitlines()[0].split() if text.strip() else []
    if not words:
        raise EngineError("the engine printed no version; is the engine command really segearth-geo?")
    return words[-1]


def parse_models(text: str) -> list[dict[str, Any]]:
    """The rows of ``models --json``; :class:`EngineError` when it is not such a list."""
    try:
        rows = json.loads(text)
    except json.JSONDecodeError:
        rows = None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise EngineError("the engine did not list its models as JSON; upgrade it: pip install -U segearth-geo")
    return rows


def probe_engine(settings: EngineSettings, timeout: float = PROBE_TIMEOUT) -> ProbeReport:
    """Run ``<command> --version`` and ``<command> models --json --device <device>``.

    Raises:
        EngineError: one line saying why the engine cannot be used (missing program, timeout, failure).
    """
    program = settings.program()
    name = settings.command.strip()
    version = parse_version(_run([*program, "--version"], f"{name} --version", timeout))
    device_flags = [] if settings.remote else ["--device", settings.device]
    rows = parse_models(_run([*program, "models", "--json", *device_flags], f"{name} models --json", timeout))
    chosen = next((r for r in rows if str(r.get("alias", "")).lower() == settings.model.strip().lower()), None)
    device = str((chosen or (rows[0] if rows else {})).get("device") or settings.device)
    if settings.remote:
        device = "the model server's"
    return ProbeReport(version, device, rows)
