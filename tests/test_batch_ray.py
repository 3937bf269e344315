"""The Ray executor on a local Ray instance (CPU): same output as the local executor, dead workers retried."""

from __future__ import annotations

import logging
import os
import sqlite3
import tempfile
from pathlib import Path

import geopandas as gpd
import pytest

from segearth_geo.batch import run_batch
from tests.batch_fixtures import DIE_MARKER_ENV, write_scenes
from tests.test_batch import assert_same_polygons

ray = pytest.importorskip("ray")

FIXTURES = Path(__file__).with_name("batch_fixtures.py")
PROMPTS = ["red things", "red and blue"]
# Workers inherit the environment of the Ray instance started below.
os.environ.setdefault(DIE_MARKER_ENV, os.path.join(tempfile.mkdtemp(prefix="segearth-ray-"), "died"))


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    yield
    ray.shutdown()


def _results(report) -> dict[tuple[str, str], gpd.GeoDataFrame]:
    return {(s.source, p): gpd.read_file(f, layer="segments", engine="pyogrio")
            for s in report.scenes for p, f in s.outputs.items()}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ray-scenes")
    paths = write_scenes(folder / "in")
    local = run_batch(paths, PROMPTS, folder / "local", model=f"{FIXTURES}:colour", chips_per_unit=2)
    assert local.ok
    return paths, _results(local)


@pytest.mark.slow
def test_ray_executor_equals_local_executor(tmp_path, scenes):
    paths, want = scenes
    report = run_batch(paths, PROMPTS, tmp_path / "job", model=f"{FIXTURES}:colour", chips_per_unit=2,
                       executor="ray", workers=2, merge=tmp_path / "all.gpkg")
    assert report.ok and report.executor == "ray" and report.workers == 2 and report.units_done == 18
    got = _results(report)
    assert list(got) == list(want)
    for key in want:
        assert_same_polygons(got[key], want[key])
    with sqlite3.connect(tmp_path / "job" / "ledger.sqlite") as db:
        workers = {w for (w,) in db.execute("SELECT DISTINCT worker FROM units")}
    assert len(workers) == 2  # both actors worked (host:pid of each)
    assert (tmp_path / "all.gpkg").is_file()


@pytest.mark.slow
def test_worker_killed_mid_unit_is_retried(tmp_path, scenes):
    paths, want = scenes
    marker = Path(os.environ[DIE_MARKER_ENV])
    marker.unlink(missing_ok=True)
    report = run_batch(paths, PROMPTS, tmp_path / "job", model=f"{FIXTURES}:dies_once", chips_per_unit=2,
                       executor="ray", workers=2)
    assert marker.is_file()  # a worker did die in the middle of a unit
    assert report.ok and report.units_done == 18
    with sqlite3.connect(tmp_path / "job" / "ledger.sqlite") as db:
        attempts = sorted(a for (a,) in db.execute("SELECT attempts FROM units"))
        dead_pid = int(marker.read_text())
        survivors = {w for (w,) in db.execute("SELECT worker FROM units WHERE status='done'")}
    assert attempts[-1] >= 2 and attempts.count(1) >= 16  # the dead worker's units ran again, the rest once
    assert not any(w.endswith(f":{dead_pid}") for w in survivors)
    got = _results(report)
    for key in want:
        assert_same_polygons(got[key], want[key])
