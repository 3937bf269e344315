"""The thin client: ``segment``, ``batch`` and the worker against a real server, with no torch on the client side.

Marked ``remote``: CI also runs this module in a fresh virtualenv without torch or transformers
(``pip install -e ".[test]"``; ``.ci/run``), where the server runs the numpy-only segmenters of
``tests/serve_models.py``. Here, with torch installed, the client processes are checked not to import it, and a
local model on a machine without torch is simulated by hiding torch from the interpreter.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from serve_support import REPO, TOKEN, Server, cli_env, model_spec, run_cli
from test_serve import assert_identical_polygons, segments

pytestmark = pytest.mark.remote

HIDE_TORCH = "import sys\nsys.modules['torch'] = None\nsys.modules['transformers'] = None\n"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> list[Path]:
    from batch_fixtures import write_scenes

    return write_scenes(tmp_path_factory.mktemp("remote") / "in", crs=("utm", "wgs84"))


@pytest.fixture(scope="module")
def server():
    with Server("smooth", token=TOKEN) as running:
        yield running


def test_segment_through_the_server_never_imports_torch(inputs, server, tmp_path):
    script = (
        "import sys\n"
        "from segearth_geo import load_segmenter\n"
        "from segearth_geo.engine import segment_scene\n"
        f"seg = load_segmenter({server.url!r})\n"
        f"result = segment_scene({str(inputs[0])!r}, ['red things', 'blue'], seg, out={str(tmp_path / 'api.gpkg')!r})\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'torch was imported'\n"
        "print(len(result.segments))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180,
                          env=cli_env(SEGEARTH_TOKEN=TOKEN), cwd=str(REPO))
    assert done.returncode == 0, done.stderr
    want = tmp_path / "local.gpkg"
    assert run_cli("-q", "segment", str(inputs[0]), "red things", "blue", "-o", str(want), "--model",
                   model_spec("smooth")).returncode == 0
    got = tmp_path / "cli.gpkg"
    cli = run_cli("-q", "segment", str(inputs[0]), "red things", "blue", "-o", str(got), "--model", server.url,
                  SEGEARTH_TOKEN=TOKEN)
    assert cli.returncode == 0, cli.stderr
    assert_identical_polygons(segments(got), segments(want))
    assert_identical_polygons(segments(tmp_path / "api.gpkg"), segments(want))


def test_batch_through_the_server_equals_a_local_batch(inputs, server, tmp_path):
    def batch(out: Path, model: str, **env) -> dict:
        done = run_cli("-q", "batch", *map(str, inputs), "-o", str(out), "-p", "red things", "-p", "blue", "--model",
                       model, "--chips-per-unit", "3", **env)
        assert done.returncode == 0, done.stderr
        return {p.relative_to(out).as_posix(): segments(p) for p in sorted((out / "results").rglob("*.gpkg"))}

    want = batch(tmp_path / "local", model_spec("smooth"))
    got = batch(tmp_path / "remote", server.url, SEGEARTH_TOKEN=TOKEN)
    assert list(got) == list(want) and len(want) == 4
    for name in want:
        assert_identical_polygons(got[name], want[name])
    assert TOKEN not in (tmp_path / "remote" / "job.json").read_text()


def test_the_worker_runs_segment_and_batch_on_the_server(inputs, server, tmp_path):
    requests = [
        {"id": "l", "type": "load", "model": server.url, "token": TOKEN},
        {"id": "s", "type": "segment", "raster": str(inputs[0]), "prompts": ["red things", "blue"],
         "output": str(tmp_path / "w.gpkg")},
        {"id": "b", "type": "batch", "inputs": [str(p) for p in inputs], "prompts": ["red things"],
         "output_dir": str(tmp_path / "job")},
    ]
    done = subprocess.run([sys.executable, "-m", "segearth_geo_cli.main", "worker"], capture_output=True, text=True,
                          input="".join(json.dumps(r) + "\n" for r in requests), timeout=300, env=cli_env(),
                          cwd=str(REPO))
    assert done.returncode == 0, done.stderr
    replies = {m["id"]: m for m in map(json.loads, done.stdout.splitlines()) if m["type"] not in ("progress",)}
    assert replies["l"]["type"] == "ready" and replies["l"]["chip_size"] == 64
    assert replies["s"]["type"] == "result" and replies["s"]["count"] > 0, replies["s"]
    assert replies["b"]["type"] == "result" and replies["b"]["ok"], replies["b"]
    assert TOKEN not in done.stdout + done.stderr
    want = tmp_path / "local.gpkg"
    assert run_cli("-q", "segment", str(inputs[0]), "red things", "blue", "-o", str(want), "--model",
                   model_spec("smooth")).returncode == 0
    assert_identical_polygons(segments(tmp_path / "w.gpkg"), segments(want))


def test_a_local_model_without_torch_says_what_to_install(tmp_path):
    (tmp_path / "sitecustomize.py").write_text(HIDE_TORCH)
    done = run_cli("segment", str(REPO / "sample_tiles" / "synthearth_city.tif"), "buildings", "-o",
                   str(tmp_path / "x.gpkg"), "--model", "demo",
                   PYTHONPATH=f"{tmp_path}:{REPO}")
    assert done.returncode == 1, done.stderr
    line = done.stderr.strip()
    assert len(line.splitlines()) == 1 and 'pip install "segearth-geo[models]"' in line, line
