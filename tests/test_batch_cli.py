"""`segearth-geo batch` / `batch-status` as real subprocesses: kill -9 and resume, lock, exit codes."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import geopandas as gpd
import pytest

from tests.batch_fixtures import write_scenes
from tests.test_batch import assert_same_polygons

FIXTURES = Path(__file__).with_name("batch_fixtures.py")
PROMPTS = ["-p", "red things", "-p", "blue"]


def _cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "segearth_geo_cli.main", *args], capture_output=True, text=True,
                          timeout=300, **kwargs)


def _start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "segearth_geo_cli.main", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _done_units(folder: Path) -> int:
    try:
        with sqlite3.connect(f"file:{folder / 'ledger.sqlite'}?mode=ro", uri=True, timeout=5) as db:
            return db.execute("SELECT COUNT(*) FROM units WHERE status='done'").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def _results(folder: Path) -> dict[str, gpd.GeoDataFrame]:
    return {str(p.relative_to(folder)): gpd.read_file(p, layer="segments", engine="pyogrio")
            for p in sorted((folder / "results").rglob("*.gpkg"))}


def _job_args(inputs, out, model="slow_colour"):
    return [*map(str, inputs), "-o", str(out), *PROMPTS, "--model", f"{FIXTURES}:{model}", "--chips-per-unit", "2"]


@pytest.mark.slow
def test_kill_9_at_several_points_then_resume_equals_uninterrupted_run(tmp_path):
    inputs = write_scenes(tmp_path / "in")
    reference = _cli("-q", "batch", *_job_args(inputs, tmp_path / "ref", model="colour"))
    assert reference.returncode == 0, reference.stderr
    job = tmp_path / "job"
    kills = []
    for point in ("start", 2, 7, 12, 16):  # during start-up/planning, then after more and more units
        process = _start("-q", "batch", *_job_args(inputs, job))
        deadline = time.monotonic() + 60
        if point == "start":
            time.sleep(0.8)
        else:
            while _done_units(job) < point and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
        assert process.poll() is None, "the job ended before it could be killed"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        kills.append(_done_units(job))
    assert kills[0] < kills[1] < kills[-1] < 18  # each kill left work to do
    final = _cli("-q", "batch", *_job_args(inputs, job))
    assert final.returncode == 0, final.stderr
    want, got = _results(tmp_path / "ref"), _results(job)
    assert list(got) == list(want) and len(want) == 3 * 2
    for name in want:
        assert_same_polygons(got[name], want[name])
    with sqlite3.connect(job / "ledger.sqlite") as db:
        assert db.execute("SELECT COUNT(*), SUM(status='done') FROM units").fetchone() == (18, 18)
    assert len(list((job / "shards").rglob("*.parquet"))) == 18  # nothing duplicated
    assert not list(job.rglob(".*.tmp*"))  # no temporary file left behind


@pytest.mark.slow
def test_second_job_is_locked_out_and_status_reads_a_running_job(tmp_path):
    inputs = write_scenes(tmp_path / "in")
    job = tmp_path / "job"
    first = _start("-q", "batch", *_job_args(inputs, job))
    try:
        deadline = time.monotonic() + 60
        while _done_units(job) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        second = _cli("-q", "batch", *_job_args(inputs, job))
        assert second.returncode == 2
        assert second.stderr.strip().splitlines() == [
            f"Error: another batch job (pid {first.pid}) is running on {job}; wait for it or use another output folder"]
        status = _cli("batch-status", str(job), "--json")
        assert status.returncode == 0, status.stderr
        state = json.loads(status.stdout)
        assert state["running"] is True and state["units"]["done"] >= 1
        assert sum(state["units"].values()) == 18 and state["prompts"] == ["red things", "blue"]
    finally:
        first.wait(timeout=120)
    assert first.returncode == 0, first.stderr.read()
    text = _cli("batch-status", str(job))
    assert text.returncode == 0 and "(not running)" in text.stdout and "18 done" in text.stdout


def test_exit_codes_and_one_line_errors(tmp_path):
    inputs = write_scenes(tmp_path / "in", crs=("utm",), corrupt=True)
    job = tmp_path / "job"
    failed = _cli("-q", "batch", *_job_args(inputs, job, model="colour"))
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert failed.stderr.strip().splitlines()[-1].startswith("Error: 1 unit(s) failed")
    assert "broken.tif" in failed.stderr and "cannot open" in failed.stderr
    changed = _cli("batch", *map(str, inputs), "-o", str(job), "-p", "green", "--model", f"{FIXTURES}:colour",
                   "--chips-per-unit", "2")
    assert changed.returncode == 2 and len(changed.stderr.strip().splitlines()) == 1
    assert "different batch job (changed: prompts)" in changed.stderr
    folder = _cli("batch", str(inputs[0]), "-o", str(tmp_path / "j3"), "-p", "red", "--model", f"{FIXTURES}:colour",
                  "--raster-out", "sub/p.tif")
    assert folder.returncode == 2 and folder.stderr.strip().splitlines() == [
        "Error: --raster-out in a batch job is a file name ending in .tif, written in each scene's results folder "
        "(e.g. probability.tif), got 'sub/p.tif'"]
    no_prompt = _cli("batch", str(inputs[0]), "-o", str(tmp_path / "j2"))
    assert no_prompt.returncode == 2 and "at least one prompt" in no_prompt.stderr
    status = _cli("batch-status", str(tmp_path / "nothing"))
    assert status.returncode == 2 and status.stderr.startswith("Error: ")


def test_without_ray_the_executor_says_how_to_install(tmp_path):
    (path,) = write_scenes(tmp_path / "in", crs=("utm",))
    code = ("import sys; sys.modules['ray'] = None; from segearth_geo_cli.main import main; "
            f"sys.exit(main(['batch', {str(path)!r}, '-o', {str(tmp_path / 'job')!r}, '-p', 'red', '--model', "
            f"{str(FIXTURES) + ':colour'!r}, '--executor', 'ray']))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == 'Error: the Ray executor needs Ray: pip install "segearth-geo[ray]"'


def test_dry_run_prints_the_plan(tmp_path):
    inputs = write_scenes(tmp_path / "in", crs=("utm", "wgs84"))
    result = _cli("batch", *map(str, inputs), "-o", str(tmp_path / "job"), *PROMPTS, "--model", f"{FIXTURES}:colour",
                  "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "2 scene(s), 24 chips, 12 units" not in result.stderr  # default: 64 chips per unit
    assert "Dry run: 2 scene(s), 24 chips, 2 units" in result.stderr and "Estimate:" in result.stderr
    assert not (tmp_path / "job").exists()


@pytest.mark.slow
def test_demo_model_batch_equals_segment(tmp_path):
    import rasterio
    from rasterio.windows import Window

    import segearth_geo as sg

    scene = Path(__file__).resolve().parents[1] / "sample_tiles" / "synthearth_city.tif"
    crop = tmp_path / "city.tif"
    with rasterio.open(scene) as src:  # a 384 x 384 corner (2 x 2 chips) keeps the test short
        window = Window(0, 0, 384, 384)
        profile = src.profile | {"width": 384, "height": 384, "transform": src.window_transform(window)}
        with rasterio.open(crop, "w", **profile) as dst:
            dst.write(src.read(window=window))
    prompts = ["all the buildings", "the roads"]
    result = _cli("batch", str(crop), "-o", str(tmp_path / "job"), "-p", prompts[0], "-p", prompts[1],
                  "--model", "demo", "--device", "cpu", "--batch-size", "2", "--chips-per-unit", "4")
    assert result.returncode == 0, result.stderr
    summary = next(line for line in result.stderr.splitlines() if "scene(s) done" in line)
    assert "synthetic demo — not for real imagery" in summary  # the demo says so wherever it runs
    segmenter = sg.load_segmenter("demo", device="cpu", batch_size=2)
    files = sorted((tmp_path / "job" / "results" / "city").glob("*.gpkg"))
    assert len(files) == 2
    for file in files:
        got = gpd.read_file(file, layer="segments", engine="pyogrio")
        prompt = next(p for p in prompts if file.name.startswith(p.replace(" ", "_")))
        want = sg.segment_raster(crop, prompt, segmenter=segmenter, overlap=segmenter.chip_size // 8, batch_size=2)
        assert len(want) > 0
        assert_same_polygons(got, want)
