"""One set of run parameters and load options on every path: the CLI, the worker, batch jobs and the API.

The same value is refused (or honoured) whichever way it arrives; only the way the field is named differs
(``--cache-mb``, ``"cache_mb"``, ``cache_mb``).
"""

from __future__ import annotations

import json
import subprocess
import sys

import geopandas as gpd
import pytest

import segearth_geo as sg
from segearth_geo.errors import UsageError
from segearth_geo.params import LoadOptions, SegmentParams
from tests.geo_fixtures import write_utm
from tests.sam3_fixtures import write_tiny_sam3

CLI = [sys.executable, "-m", "segearth_geo_cli.main"]


def _cli(*args, timeout=300):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


def _worker(requests, *args, timeout=300):
    run = subprocess.run([*CLI, "worker", *args], input="".join(json.dumps(r) + "\n" for r in requests),
                         capture_output=True, text=True, timeout=timeout)
    replies = [json.loads(line) for line in run.stdout.splitlines()]
    return {r["id"]: r for r in replies if r["type"] in ("ready", "result", "error")}, run


@pytest.mark.parametrize("name, value, words", [
    ("threshold", 1.5, "a probability between 0 and 1"),
    ("overlap", -1, "a non-negative number of pixels"),
    ("gsd", 0, "a positive ground distance"),
    ("min_area", float("nan"), "finite"),
    ("batch_size", 0, "a positive number of chips"),
    ("bands", (1, 2, 3, 4), "1 to 3"),
    ("bbox", (1, 1, 0, 0), "minx < maxx"),
])
def test_one_rule_per_run_parameter(name, value, words):
    with pytest.raises(UsageError, match=f"^{name} .*{words}"):
        SegmentParams(**{name: value}).check()
    with pytest.raises(UsageError, match=f'^"{name}" .*{words}'):
        SegmentParams.from_request({name: list(value) if isinstance(value, tuple) else value})
    cli = "--" + name.replace("_", "-")
    with pytest.raises(UsageError, match=f"^{cli} .*{words}"):
        SegmentParams(**{name: value}).check("cli")


def test_json_values_keep_their_json_type():
    with pytest.raises(UsageError, match='"threshold" must be a probability'):
        SegmentParams.from_request({"threshold": "0.5"})
    with pytest.raises(UsageError, match='"batch_size" must be a positive number'):
        SegmentParams.from_request({"batch_size": True})
    assert SegmentParams.from_request({"bands": "4,3,2", "overlap": None}).bands == (4, 3, 2)


@pytest.mark.parametrize("value", ["nan", "inf", "1e400", "-1"])
def test_cache_mb_is_checked_before_the_model_loads_on_every_path(tmp_path, value):
    raster = write_utm(tmp_path / "s.tif", 40, 30)
    seg = _cli("segment", str(raster), "red", "-o", str(tmp_path / "o.gpkg"), "--cache-mb", value)
    assert seg.returncode == 2 and seg.stderr.count("\n") == 1 and "--cache-mb must be" in seg.stderr, seg.stderr
    batch = _cli("batch", str(raster), "-p", "red", "-o", str(tmp_path / "job"), "--cache-mb", value)
    assert batch.returncode == 2 and "--cache-mb must be" in batch.stderr and "Traceback" not in batch.stderr
    assert not (tmp_path / "o.gpkg").exists() and not (tmp_path / "job").exists()
    number = float(value)  # the JSON a client sends (1e400 reads as infinity)
    replies, _ = _worker([{"id": "l", "type": "load", "model": "demo", "cache_mb": number}])
    assert replies["l"]["type"] == "error" and '"cache_mb" must be' in replies["l"]["message"]


@pytest.mark.parametrize("command", [["models"], ["segment", "R", "x", "-o", "o.gpkg"], ["batch", "R", "-p", "x", "-o", "j"],
                                     ["eval", "--dataset", "synthearth", "--data-root", "."],
                                     ["model-check", "ckpt", "--data", "."], ["worker"]])
def test_one_device_rule_for_every_command(tmp_path, command):
    result = subprocess.run([*CLI, *command, "--device", "gpu7"], capture_output=True, text=True, timeout=120,
                            cwd=tmp_path, input="")
    assert result.returncode == 2, (command, result.stderr)
    assert "--device must be auto, cpu, cuda, cuda:N or mps, got 'gpu7'" in result.stderr
    assert "Traceback" not in result.stderr
    replies, _ = _worker([{"id": "l", "type": "load", "model": "demo", "device": "gpu7"}])
    assert replies["l"]["type"] == "error" and '"device" must be auto, cpu' in replies["l"]["message"]


def test_models_refuses_a_device_this_machine_lacks():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = _cli("models", "--device", "cuda")
    assert result.returncode == 2 and "CUDA is not available" in result.stderr and "Traceback" not in result.stderr


def test_a_backend_option_the_backend_lacks_is_refused_in_one_line_on_every_path(tmp_path):
    raster = write_utm(tmp_path / "s.tif", 40, 30)
    with pytest.raises(UsageError, match="does not take score_threshold"):
        sg.load_segmenter("demo", device="cpu", score_threshold=0.3)
    seg = _cli("segment", str(raster), "red", "-o", str(tmp_path / "o.gpkg"), "--score-threshold", "0.3")
    assert seg.returncode == 2 and "does not take --score-threshold" in seg.stderr and "Traceback" not in seg.stderr
    batch = _cli("batch", str(raster), "-p", "red", "-o", str(tmp_path / "job"), "--score-threshold", "0.3")
    assert batch.returncode == 2 and "does not take --score-threshold" in batch.stderr
    replies, _ = _worker([{"id": "l", "type": "load", "model": "demo", "score_threshold": 0.3}])
    assert replies["l"]["type"] == "error" and 'does not take "score_threshold"' in replies["l"]["message"]
    # a factory segmenter that does not declare the option refuses it too (it used to be ignored)
    factory = f"{__file__.replace('test_run_options.py', 'segmenters.py')}:colour_small"
    replies, _ = _worker([{"id": "l", "type": "load", "model": factory, "score_threshold": 0.3}])
    assert replies["l"]["type"] == "error" and 'does not take "score_threshold"' in replies["l"]["message"]


@pytest.fixture(scope="module")
def sam3_folder(tmp_path_factory):
    return write_tiny_sam3(tmp_path_factory.mktemp("sam3") / "sam3", layout="hub")


@pytest.mark.slow
def test_score_threshold_reaches_sam3_through_batch_and_the_worker(sam3_folder, tmp_path):
    """SAM3 with random weights finds nothing at the default 0.5 and something at 0: the option arrives."""
    raster = write_utm(tmp_path / "s.tif", 150, 120)
    kept = _cli("-q", "batch", str(raster), "-p", "roofs", "-o", str(tmp_path / "kept"), "--model", str(sam3_folder),
                "--device", "cpu", "--score-threshold", "0", "--merge", str(tmp_path / "kept" / "all.gpkg"))
    default = _cli("-q", "batch", str(raster), "-p", "roofs", "-o", str(tmp_path / "default"), "--model",
                   str(sam3_folder), "--device", "cpu", "--merge", str(tmp_path / "default" / "all.gpkg"))
    assert kept.returncode == 0 and default.returncode == 0, kept.stderr + default.stderr
    assert len(gpd.read_file(tmp_path / "kept" / "all.gpkg")) > 0
    assert len(gpd.read_file(tmp_path / "default" / "all.gpkg")) == 0
    out = tmp_path / "w.gpkg"
    replies, run = _worker([
        {"id": "l", "type": "load", "model": str(sam3_folder), "device": "cpu", "score_threshold": 0.0},
        {"id": "s", "type": "segment", "raster": str(raster), "prompt": "roofs", "output": str(out)},
    ])
    assert replies["l"]["type"] == "ready" and replies["l"]["options"]["score_threshold"] == 0.0, replies["l"]
    assert replies["s"]["type"] == "result" and replies["s"]["count"] > 0, replies["s"]
    assert run.returncode == 0


def test_load_options_round_trip_and_name_their_fields():
    options = LoadOptions(model="sam3", device="cuda:1", dtype="bf16", score_threshold=0.25).check()
    assert options.dtype_name == "bfloat16" and options.backend_options() == {"score_threshold": 0.25}
    assert LoadOptions.from_request(options.to_dict()) == options
    with pytest.raises(UsageError, match=r"^score_threshold must be a detection score in \[0, 1\)"):
        LoadOptions(score_threshold=1.0).check()
