"""Stops the local Ray a batch job started when the job's process dies without stopping it (``kill -9``).

``ray.init()`` without an address starts a local Ray (GCS, raylet, workers, agents: ~200 MB); a driver killed
with SIGKILL cannot shut it down, and those processes would linger for minutes. :func:`start_reaper` starts
this module as a small watcher process whose stdin is a pipe from the job. Once a second it notes the job's
Ray processes: descendants of the job whose command line names the Ray session or a Ray program (Ray
renames its agents ``ray::…``), with their start times. When the pipe closes (the job ended, normally or
not) it stops the noted processes that still run (SIGTERM, then SIGKILL) and exits. Nothing else is touched:
a process that is not a Ray descendant of the job, or whose pid was reused, is left alone. Linux only
(``/proc``); elsewhere nothing is started.

    python -m segearth_geo.batch.reaper JOB_PID SESSION_NAME
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

GRACE_S = 3.0
POLL_S = 1.0
RAY_MARKS = (b"ray::", b"/ray/", b"raylet", b"gcs_server", b"default_worker.py")


def _stat(pid: int) -> tuple[int, int, bytes] | None:
    """``(parent pid, start time, state)`` of ``pid`` from ``/proc`` (``None`` when gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            text = handle.read()
    except OSError:
        return None
    fields = text[text.rindex(b")") + 2:].split()  # after "pid (comm) "
    return int(fields[1]), int(fields[19]), fields[0]


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read()
    except OSError:
        return b""


def ray_descendants(root: int, session: str) -> dict[int, int]:
    """``{pid: start time}`` of the Ray processes below ``root`` (see the module docstring)."""
    parent: dict[int, int] = {}
    start: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (info := _stat(int(entry))) is not None:
            parent[int(entry)], start[int(entry)] = info[0], info[1]
    below, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, ppid in parent.items() if ppid in frontier and pid not in below}
        below |= frontier
    marks = RAY_MARKS + ((session.encode(),) if session else ())
    return {pid: start[pid] for pid in below - {os.getpid()}
            if any(mark in _cmdline(pid) for mark in marks)}


def stop(processes: dict[int, int], grace: float = GRACE_S) -> int:
    """SIGTERM the processes that still run with the same start time, SIGKILL those left after ``grace`` s."""
    def alive() -> list[int]:
        return [pid for pid, began in processes.items()
                if (info := _stat(pid)) is not None and info[1] == began and info[2] != b"Z"]

    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in alive():
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.monotonic() + grace
        while sig == signal.SIGTERM and alive() and time.monotonic() < deadline:
            time.sleep(0.1)
    return len(alive())


def start_reaper(session: str) -> subprocess.Popen | None:
    """Start the watcher of this process's Ray (``None`` where ``/proc`` does not exist). Close its stdin to
    let it clean up and exit; if this process dies, the OS closes it."""
    if not os.path.isdir("/proc"):
        return None
    return subprocess.Popen([sys.executable, "-m", "segearth_geo.batch.reaper", str(os.getpid()), session],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not argv[0].isdigit():
        return 2
    job, session = int(argv[0]), argv[1]
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C in the job's terminal is the job's to handle
    tracked: dict[int, int] = {}
    while True:
        tracked.update(ray_descendants(job, session))
        ready, _, _ = select.select([sys.stdin.buffer], [], [], POLL_S)
        if ready and not os.read(sys.stdin.buffer.fileno(), 4096):
            break  # the job closed the pipe, or died
    stop(tracked)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
