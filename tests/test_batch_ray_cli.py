"""`segearth-geo batch --executor ray` as a real process: an unreachable cluster, SIGTERM, kill -9 (no Ray left)."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from segearth_geo.batch.reaper import ray_descendants
from tests.batch_fixtures import write_scenes

pytest.importorskip("ray")

FIXTURES = Path(__file__).with_name("batch_fixtures.py")
CLI = [sys.executable, "-m", "segearth_geo_cli.main"]


def _done_units(job: Path) -> int:
    try:
        with sqlite3.connect(f"file:{job / 'ledger.sqlite'}?mode=ro", uri=True, timeout=5) as db:
            return db.execute("SELECT COUNT(*) FROM units WHERE status='done'").fetchone()[0]
    except sqlite3.Error:
        return 0


def _start_job(tmp_path: Path, job: Path) -> subprocess.Popen:
    inputs = [p for i in range(4) for p in write_scenes(tmp_path / f"in{i}", crs=("utm",))]
    return subprocess.Popen([*CLI, "-q", "batch", *map(str, inputs), "-p", "red", "-o", str(job), "--model",
                             f"{FIXTURES}:slow_colour", "--executor", "ray", "--workers", "1", "--chips-per-unit",
                             "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_units(process: subprocess.Popen, job: Path, units: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while _done_units(job) < units:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the Ray job did not start"
        time.sleep(0.2)


def test_an_unreachable_ray_address_is_one_line_within_seconds(tmp_path):
    inputs = write_scenes(tmp_path / "in", crs=("utm",))
    started = time.monotonic()
    result = subprocess.run([*CLI, "batch", str(inputs[0]), "-p", "red", "-o", str(tmp_path / "job"), "--model",
                             f"{FIXTURES}:colour", "--executor", "ray", "--ray-address", "127.0.0.1:1"],
                            capture_output=True, text=True, timeout=120)
    assert time.monotonic() - started < 40
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "cannot reach the Ray cluster at 127.0.0.1:1" in result.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_sigterm_ends_a_ray_job_with_143_and_frees_the_folder(tmp_path):
    job = tmp_path / "job"
    process = _start_job(tmp_path, job)
    _wait_for_units(process, job, 2)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=40)
    assert process.returncode == 143, err
    status = subprocess.run([*CLI, "batch-status", str(job)], capture_output=True, text=True, timeout=60)
    assert status.returncode == 0 and "(not running)" in status.stdout.splitlines()[0], status.stdout


@pytest.mark.slow
def test_kill_9_leaves_no_ray_processes_behind(tmp_path):
    job = tmp_path / "job"
    process = _start_job(tmp_path, job)
    _wait_for_units(process, job, 1)
    ray_processes = ray_descendants(process.pid, "")
    assert len(ray_processes) >= 2  # GCS, raylet, the model actor...
    process.kill()
    process.wait()
    deadline = time.monotonic() + 30
    while any(_alive(pid, began) for pid, began in ray_processes.items()):
        assert time.monotonic() < deadline, f"Ray processes left: {sorted(ray_processes)}"
        time.sleep(0.5)


def _alive(pid: int, began: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
    except OSError:
        return False
    return int(fields[19]) == began and fields[0] != b"Z"
