"""``strategy`` / ``zoom_model`` / ``min_coverage`` through every entry point: the CLI, the worker, batch jobs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import shapely

from segearth_geo.batch import run_batch
from segearth_geo.engine import segment_scene
from segearth_geo.errors import UsageError
from segearth_geo.params import SegmentParams
from tests.segmenters import ColourSegmenter
from tests.test_zoom_runner import _sparse

HERE = Path(__file__).resolve().parent
COLOUR = f"{HERE / 'segmenters.py'}:colour_small"


@pytest.fixture(scope="module")
def sparse(tmp_path_factory):
    return _sparse(tmp_path_factory.mktemp("entry"))


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "segearth_geo_cli.main", *args], capture_output=True, text=True,
                          timeout=300, check=False)


def test_cli_segment_zoom_writes_the_levels_and_says_so(sparse, tmp_path):
    out = tmp_path / "largest.gpkg"
    done = _cli("segment", str(sparse), "the largest red object", "-o", str(out), "--model", COLOUR,
                "--strategy", "zoom")
    assert done.returncode == 0, done.stderr
    assert "strategy zoom" in done.stdout and "chips per level" in done.stdout
    segments = gpd.read_file(out, layer="segments")
    chips = pyogrio.read_dataframe(out, layer="chips")
    assert len(segments) == 1 and sorted(chips["level"].unique()) == [0, 1]
    assert "Traceback" not in done.stderr


def test_cli_auto_names_its_choice_and_grid_chips_have_level_zero(sparse, tmp_path):
    out = tmp_path / "auto.gpkg"
    done = _cli("segment", str(sparse), "all the red objects", "-o", str(out), "--model", COLOUR,
                "--strategy", "auto", "--min-coverage", "0.5")
    assert done.returncode == 0, done.stderr
    assert "strategy zoom (auto:" in done.stdout and "at full resolution" in done.stdout
    grid = tmp_path / "grid.gpkg"
    assert _cli("segment", str(sparse), "red", "-o", str(grid), "--model", COLOUR).returncode == 0
    assert set(pyogrio.read_dataframe(grid, layer="chips")["level"]) == {0}


@pytest.mark.parametrize(("args", "expected"), [
    (["--min-coverage", "0.3"], "--min-coverage acts only with --strategy zoom or auto"),
    (["--zoom-model", "zoomearth"], "--zoom-model acts only with --strategy zoom or auto"),
    (["--strategy", "fast"], "'fast' is not one of"),
    (["--strategy", "zoom", "--min-coverage", "1.5"], "--min-coverage must be a fraction"),
    (["--model", "zoomearth"], "is a localizer"),
])
def test_cli_refuses_bad_zoom_options_in_one_line(sparse, tmp_path, args, expected):
    done = _cli("segment", str(sparse), "red", "-o", str(tmp_path / "x.gpkg"), *args)
    assert done.returncode == 2, done.stderr
    assert expected in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) <= 3, done.stderr


def test_python_api_takes_the_strategy_as_a_keyword(sparse):
    import segearth_geo as sg

    gdf = sg.segment_raster(sparse, "the largest red object", segmenter=ColourSegmenter(64), strategy="zoom")
    assert len(gdf) == 1 and gdf.attrs["segearth"]["strategy"] == "zoom"
    assert gdf.attrs["segearth"]["chips_per_level"][0] < gdf.attrs["segearth"]["chips_total"]
    with pytest.raises(UsageError, match="min_coverage acts only with strategy"):
        sg.segment_raster(sparse, "red", segmenter=ColourSegmenter(64), min_coverage=0.5)


def test_worker_segment_request_runs_zoom(sparse, tmp_path):
    from tests.test_worker import Worker

    worker = Worker("--model", COLOUR, "--device", "cpu")
    try:
        assert worker.next(120)["type"] == "ready"
        out = tmp_path / "worker.gpkg"
        worker.send({"id": "z", "type": "segment", "raster": str(sparse), "prompt": "the largest red object",
                     "output": str(out), "strategy": "zoom", "min_coverage": 0.1})
        result = worker.until("z", timeout=120)[-1]
        assert result["type"] == "result", result
        assert result["count"] == 1 and result["zoom"]["strategy"] == "zoom"
        assert result["zoom"]["full_res_fraction"] >= 0.1 and len(result["zoom"]["chips_per_level"]) == 2
        worker.send({"id": "bad", "type": "segment", "raster": str(sparse), "prompt": "red",
                     "output": str(tmp_path / "bad.gpkg"), "strategy": "sideways"})
        error = worker.until("bad")[-1]
        assert error["type"] == "error" and '"strategy" must be one of grid, zoom, auto' in error["message"]
    finally:
        worker.close()


def test_batch_zoom_job_equals_segment_and_lists_every_level(sparse, tmp_path):
    prompts = ["all the red objects", "the largest red object"]
    report = run_batch([sparse], prompts, tmp_path / "job", segmenter=ColourSegmenter(64), strategy="zoom")
    assert report.ok and report.units_total == 1  # a zoom scene is one unit
    want = segment_scene(sparse, prompts, ColourSegmenter(64), SegmentParams(strategy="zoom"))  # one pass, as a unit
    for prompt in prompts:
        path = report.scenes[0].outputs[prompt]
        got = gpd.read_file(path, layer="segments")
        mine = want.segments[want.segments["prompt"] == prompt]
        assert len(got) == len(mine) and len(mine) == (1 if "largest" in prompt else 4)
        for a, b in zip(got.geometry, mine.geometry):
            assert shapely.equals_exact(a, b, tolerance=1e-6)
        chips = pyogrio.read_dataframe(path, layer="chips")
        wanted = want.chips[want.chips["prompt"] == prompt].groupby("level").size().to_dict()
        assert chips.groupby("level").size().to_dict() == wanted


def test_batch_refuses_to_resume_a_zoom_job_as_a_grid_job(sparse, tmp_path):
    run_batch([sparse], ["red"], tmp_path / "job", segmenter=ColourSegmenter(64), strategy="zoom")
    with pytest.raises(UsageError, match="strategy"):
        run_batch([sparse], ["red"], tmp_path / "job", segmenter=ColourSegmenter(64))


def test_grid_batch_chips_have_level_zero(sparse, tmp_path):
    report = run_batch([sparse], ["red"], tmp_path / "job", segmenter=ColourSegmenter(64), chips_per_unit=50)
    chips = pyogrio.read_dataframe(report.scenes[0].outputs["red"], layer="chips")
    assert set(chips["level"]) == {0} and np.all(chips["chip"].to_numpy() >= 0)
