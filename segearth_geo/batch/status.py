"""``batch-status``: what a running or finished job has done, read from its ledger.

Opens the ledger read-only (SQLite WAL: a running job is neither blocked nor disturbed)
and ``job.json``; nothing is written.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from segearth_geo.batch.config import read_job
from segearth_geo.batch.ledger import LEDGER_FILE, LOCK_FILE, Ledger
from segearth_geo.errors import UsageError


@dataclass(frozen=True)
class JobStatus:
    """A job's state.

    Attributes:
        out_dir: the job folder; ``running``: a job holds its lock now.
        prompts, model: of the job; ``scenes``: ``{status: count}``; ``units``: ``{status: count}``.
        chips_total, chips_done: chips over the job.
        failures: ``(source, unit id, reason)`` of failed units.
        active: ``(unit id, worker, seconds running)`` of units running now.
        seconds_units: summed unit time so far; ``chips_per_second``: chips per unit-second.
    """

    out_dir: str
    running: bool
    prompts: list[str]
    model: str
    scenes: dict[str, int]
    units: dict[str, int]
    chips_total: int
    chips_done: int
    failures: list[tuple[str, str, str]] = field(default_factory=list)
    active: list[tuple[str, str, float]] = field(default_factory=list)
    seconds_units: float = 0.0
    chips_per_second: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def to_text(self) -> str:
        state = "running" if self.running else "not running"
        scenes = ", ".join(f"{n} {k}" for k, n in sorted(self.scenes.items())) or "none"
        units = ", ".join(f"{self.units.get(k, 0)} {k}" for k in ("done", "running", "pending", "failed"))
        lines = [
            f"job {self.out_dir} ({state}): model {self.model}, {len(self.prompts)} prompt(s): "
            + "; ".join(repr(p) for p in self.prompts),
            f"scenes: {scenes}",
            f"units:  {units} (of {sum(self.units.values())})",
            f"chips:  {self.chips_done}/{self.chips_total}"
            + (f", {self.chips_per_second:.2f} chips/s per worker" if self.chips_per_second else ""),
        ]
        if self.running:
            lines += [f"running: {u} on {w} for {s:.0f} s" for u, w, s in self.active]
        else:  # left 'running' by a run that was killed: redone by the next run
            lines += [f"interrupted: {u} (was on {w}); the next run redoes it" for u, w, _ in self.active]
        if self.failures:
            lines.append(f"failed ({len(self.failures)}):")
            lines += [f"  {src} [{u}]: {err}" for src, u, err in self.failures]
        return "\n".join(lines)


def _locked(out_dir: Path) -> bool:
    path = out_dir / LOCK_FILE
    if not path.exists():
        return False
    try:
        import fcntl
    except ImportError:  # Windows: the lock file's pid is all we have
        return True
    with open(path, "r", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    return False


def job_status(out_dir: str | os.PathLike) -> JobStatus:
    """Read the state of the job in ``out_dir`` (:class:`UsageError` when there is none)."""
    folder = Path(out_dir).expanduser().absolute()
    if not folder.is_dir():
        what = "it is a file" if folder.exists() else "it does not exist"
        raise UsageError(f"{folder} is not a batch job folder ({what})")
    job = read_job(folder) or {}
    ledger = Ledger(folder / LEDGER_FILE, readonly=True)
    try:
        scenes: dict[str, int] = {}
        sources = {}
        for row in ledger.scenes():
            scenes[row["status"]] = scenes.get(row["status"], 0) + 1
            sources[row["id"]] = row["source"]
        counts = ledger.counts()
        units = {k: counts[k] for k in ("pending", "running", "done", "failed")}
        all_units = ledger.units()
        failures = [(sources.get(u.scene_id, "?"), u.id, u.error or "failed") for u in all_units if u.status == "failed"]
        now = time.time()
        active = [(unit, worker, now - (since or now)) for unit, worker, since in ledger.running()]
        seconds = sum(u.seconds or 0.0 for u in all_units if u.status == "done")
        done_chips = sum(u.chips_done for u in all_units if u.status == "done")
    finally:
        ledger.close()
    spec = job.get("job") or {}
    return JobStatus(
        out_dir=str(folder), running=_locked(folder), prompts=list(spec.get("prompts", [])),
        model=str(spec.get("model", "?")), scenes=scenes, units=units, chips_total=counts["chips"],
        chips_done=counts["chips_done"], failures=failures, active=active, seconds_units=seconds,
        chips_per_second=(done_chips / seconds) if seconds > 0 else None)


__all__ = ["JobStatus", "job_status"]
