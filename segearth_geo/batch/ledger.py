"""The job's ledger (SQLite in ``OUT_DIR``) and the lock that keeps a second job out.

Tables::

    scenes(id PK, position, source, name, crs, width, height, chips_total, chips, units,
           status, error, outputs, finished)
        status: planned | done (outputs written) | failed (cannot be read) | skipped (outside the AOI)
    units(id PK, scene_id, block, chips, status, attempts, chips_done, skipped, seconds,
          error, worker, started, finished)
        status: pending | running | done | failed
    meta(key PK, value)

The ledger is in WAL mode: ``batch-status`` reads it while a job writes, without
blocking either. A unit is marked ``done`` only after its shard was renamed into place,
so a ``kill -9`` at any moment leaves either a done unit with its shard, or a unit that
will run again (its shard, if any, is rewritten with the same content). ``running``
units found at start-up belong to a killed run and go back to ``pending``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from segearth_geo.batch.plan import ScenePlan
from segearth_geo.errors import OutputError, UsageError
from segearth_geo.params import field_name

LEDGER_FILE = "ledger.sqlite"
LOCK_FILE = ".lock"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS scenes (
    id TEXT PRIMARY KEY, position INTEGER, source TEXT, name TEXT, crs TEXT, width INTEGER, height INTEGER,
    chips_total INTEGER, chips INTEGER, units INTEGER, status TEXT, error TEXT, outputs TEXT, finished REAL);
CREATE TABLE IF NOT EXISTS units (
    id TEXT PRIMARY KEY, scene_id TEXT, block INTEGER, chips INTEGER, status TEXT, attempts INTEGER DEFAULT 0,
    chips_done INTEGER DEFAULT 0, skipped INTEGER DEFAULT 0, seconds REAL, error TEXT, worker TEXT,
    started REAL, finished REAL);
CREATE INDEX IF NOT EXISTS units_scene ON units (scene_id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""
# The columns this code reads; a ledger without them is damaged or someone else's database.
_COLUMNS = {
    "scenes": {"id", "position", "source", "name", "crs", "width", "height", "chips_total", "chips", "units", "status",
               "error", "outputs", "finished"},
    "units": {"id", "scene_id", "block", "chips", "status", "attempts", "chips_done", "skipped", "seconds", "error",
              "worker", "started", "finished"},
    "meta": {"key", "value"},
}


@dataclass(frozen=True)
class UnitRow:
    id: str
    scene_id: str
    block: int
    chips: int
    status: str
    attempts: int
    chips_done: int
    seconds: float | None
    error: str | None


class JobLock:
    """An exclusive ``flock`` on ``OUT_DIR/.lock`` held for the whole run (released by the OS on any exit)."""

    def __init__(self, out_dir: Path) -> None:
        self.path = Path(out_dir) / LOCK_FILE
        self._handle = None

    def acquire(self) -> None:
        handle = open(self.path, "a+", encoding="utf-8")
        try:
            _lock(handle)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise UsageError(
                f"another batch job ({holder}) is running on {self.path.parent}; wait for it or use another "
                "output folder") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing drops the lock
            self._handle = None

    def __enter__(self) -> "JobLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _lock(handle) -> None:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        return
    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


class Ledger:
    """The SQLite ledger of one ``OUT_DIR`` (see the module docstring)."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        if readonly and not self.path.is_file():
            raise UsageError(f"no batch job ledger in {self.path.parent} (expected {self.path.name})")
        self._db: sqlite3.Connection | None = None
        try:
            if readonly:
                self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30, check_same_thread=False)
            else:
                self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.executescript(_SCHEMA)
            self._check_schema()
        except sqlite3.Error as exc:
            self.close()
            raise UsageError(f"the job ledger {self.path} is damaged or not a segearth-geo ledger "
                             f"({_first_line(exc)}); pass {field_name('restart')} to start the job over") from None
        self._db.row_factory = sqlite3.Row

    def _check_schema(self) -> None:
        for table, wanted in _COLUMNS.items():
            found = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            if not wanted <= found:
                raise sqlite3.DatabaseError(f"table {table} lacks {', '.join(sorted(wanted - found))}")
        self._db.execute("SELECT COUNT(*) FROM units").fetchone()  # reads the pages: a truncated file fails here

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; a failing write (disk full, read-only folder) is one :class:`OutputError` line."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise OutputError(f"cannot write the job ledger {self.path}: {_first_line(exc)}") from None
        try:
            yield self._db
        except sqlite3.Error as exc:
            self._rollback()
            raise OutputError(f"cannot write the job ledger {self.path}: {_first_line(exc)} (is the disk full?); "
                              "free some space and run the same command again to resume") from None
        except BaseException:
            self._rollback()
            raise
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise OutputError(f"cannot write the job ledger {self.path}: {_first_line(exc)} (is the disk full?); "
                              "free some space and run the same command again to resume") from None

    def _read(self, sql: str, args=()) -> list[sqlite3.Row]:
        """A query's rows; a damaged database is one :class:`UsageError` line, not a ``sqlite3`` traceback."""
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as exc:
            raise UsageError(f"the job ledger {self.path} is damaged ({_first_line(exc)}); pass {field_name('restart')} to start "
                             "the job over") from None

    def _rollback(self) -> None:
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    # -- planning ---------------------------------------------------------------------------------
    def record_plan(self, scenes: list[ScenePlan]) -> None:
        """Insert planned scenes and units; rows already present keep their status, except that
        ``running`` units (of a killed run) go back to ``pending`` and scenes that failed to open
        are re-planned (a fixed file gets its units)."""
        with self._tx() as db:
            db.execute("UPDATE units SET status='pending' WHERE status='running'")
            for pos, s in enumerate(scenes):
                status = "failed" if s.error else "skipped" if s.skipped else "planned"
                reason = s.error or s.skipped
                old = db.execute("SELECT status FROM scenes WHERE id=?", (s.id,)).fetchone()
                if old is None or old["status"] in ("failed", "skipped") or status != "planned":
                    db.execute(
                        "INSERT OR REPLACE INTO scenes (id, position, source, name, crs, width, height, chips_total, "
                        "chips, units, status, error, outputs, finished) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,NULL,NULL)",
                        (s.id, pos, s.source, s.name, s.crs_wkt, s.width, s.height, s.chips_total, s.chips,
                         len(s.units), status, reason))
                if s.error:  # one failed pseudo-unit carries the reason (counts as a failure)
                    db.execute("INSERT OR REPLACE INTO units (id, scene_id, block, chips, status, attempts, error) "
                               "VALUES (?,?,?,?, 'failed', 1, ?)", (f"{s.id}-open", s.id, -1, 0, s.error))
                else:
                    db.execute("DELETE FROM units WHERE id=?", (f"{s.id}-open",))
                db.executemany("INSERT OR IGNORE INTO units (id, scene_id, block, chips, status) VALUES (?,?,?,?,'pending')",
                               [(u.id, u.scene_id, u.block, len(u.chips)) for u in s.units])
                # Units of an earlier plan of this scene (its file was replaced by one of another size, say)
                # leave the ledger: they would never run again and would keep the job from completing.
                keep = {u.id for u in s.units} | ({f"{s.id}-open"} if s.error else set())
                stale = [r["id"] for r in db.execute("SELECT id FROM units WHERE scene_id=?", (s.id,))
                         if r["id"] not in keep]
                db.executemany("DELETE FROM units WHERE id=?", [(u,) for u in stale])
            planned = {s.id for s in scenes}
            gone = [r["id"] for r in db.execute("SELECT id FROM scenes") if r["id"] not in planned]
            db.executemany("DELETE FROM units WHERE scene_id=?", [(g,) for g in gone])
            db.executemany("DELETE FROM scenes WHERE id=?", [(g,) for g in gone])

    def set_meta(self, key: str, value) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(value)))

    def meta(self, key: str, default=None):
        row = _one(self._read("SELECT value FROM meta WHERE key=?", (key,)))
        return default if row is None else json.loads(row["value"])

    # -- units ------------------------------------------------------------------------------------
    def units(self, status: str | None = None, scene_id: str | None = None) -> list[UnitRow]:
        query, args = "SELECT * FROM units WHERE 1=1", []
        if status is not None:
            query += " AND status=?"
            args.append(status)
        if scene_id is not None:
            query += " AND scene_id=?"
            args.append(scene_id)
        rows = self._read(query + " ORDER BY scene_id, block", args)
        return [UnitRow(r["id"], r["scene_id"], r["block"], r["chips"], r["status"], r["attempts"], r["chips_done"],
                        r["seconds"], r["error"]) for r in rows]

    def running(self) -> list[tuple[str, str, float | None]]:
        """``(unit id, worker, start time)`` of the units marked running, oldest first."""
        rows = self._read("SELECT id, worker, started FROM units WHERE status='running' ORDER BY started")
        return [(r["id"], r["worker"] or "", r["started"]) for r in rows]

    def mark_running(self, unit_id: str, worker: str = "") -> None:
        with self._tx() as db:
            db.execute("UPDATE units SET status='running', attempts=attempts+1, started=?, worker=? WHERE id=?",
                       (time.time(), worker, unit_id))

    def mark_pending(self, unit_id: str, error: str | None = None) -> None:
        with self._tx() as db:
            db.execute("UPDATE units SET status='pending', error=? WHERE id=?", (error, unit_id))

    def mark_done(self, unit_id: str, chips: int, skipped: int, seconds: float, worker: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE units SET status='done', chips_done=?, skipped=?, seconds=?, error=NULL, worker=?, "
                       "finished=? WHERE id=?", (chips, skipped, seconds, worker, time.time(), unit_id))

    def mark_failed(self, unit_id: str, error: str, seconds: float = 0.0, worker: str = "") -> None:
        with self._tx() as db:
            db.execute("UPDATE units SET status='failed', error=?, seconds=?, worker=?, finished=? WHERE id=?",
                       (error, seconds, worker, time.time(), unit_id))

    # -- scenes -----------------------------------------------------------------------------------
    def scenes(self) -> list[sqlite3.Row]:
        return self._read("SELECT * FROM scenes ORDER BY position")

    def scene_status(self, scene_id: str) -> str | None:
        row = _one(self._read("SELECT status FROM scenes WHERE id=?", (scene_id,)))
        return None if row is None else row["status"]

    def scene_units_left(self, scene_id: str) -> int:
        row = _one(self._read("SELECT COUNT(*) FROM units WHERE scene_id=? AND status!='done'", (scene_id,)))
        return int(row[0])

    def mark_scene_done(self, scene_id: str, outputs: dict[str, str]) -> None:
        with self._tx() as db:
            db.execute("UPDATE scenes SET status='done', outputs=?, finished=?, error=NULL WHERE id=?",
                       (json.dumps(outputs), time.time(), scene_id))

    def mark_scene_planned(self, scene_id: str) -> None:
        """A done scene whose result files went missing: write them again."""
        with self._tx() as db:
            db.execute("UPDATE scenes SET status='planned', outputs=NULL, finished=NULL WHERE id=?", (scene_id,))

    def mark_scene_failed(self, scene_id: str, error: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE scenes SET status='failed', error=? WHERE id=?", (error, scene_id))

    def counts(self) -> dict[str, int]:
        """Units per status plus chip totals (``chips``, ``chips_done``)."""
        out = {"pending": 0, "running": 0, "done": 0, "failed": 0}
        for row in self._read("SELECT status, COUNT(*) FROM units GROUP BY status"):
            out[row[0]] = int(row[1])
        chips = self._read("SELECT COALESCE(SUM(chips),0), COALESCE(SUM(CASE WHEN status='done' THEN chips END),0) "
                           "FROM units")[0]
        out["chips"], out["chips_done"] = int(chips[0]), int(chips[1])
        return out


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _one(rows: list) -> sqlite3.Row | None:
    return rows[0] if rows else None
