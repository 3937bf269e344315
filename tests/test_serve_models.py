"""The tiny SegEarth-R2, SegEarth-R1 and SAM3 checkpoints through a real ``segearth-geo serve``: the same polygons
(count and geometry) as in-process and scores within 1/255 (the wire's uint8 probabilities plus threshold bits)."""

from __future__ import annotations

from pathlib import Path

import pytest
from geo_fixtures import write_utm
from serve_support import HERE, Server, run_cli
from test_serve import assert_identical_polygons, segments

pytest.importorskip("torch")
FACTORY = f"{HERE / 'serve_checkpoints.py'}:checkpoint"


def _write_r2(folder: Path) -> Path:
    from model_fixtures import tiny_model_and_tokenizer

    from segearth_geo.model import testing

    model, tokenizer = tiny_model_and_tokenizer(seed=0, steer=True)  # steered: some chips answer with [SEG]
    return testing.write_random_r2(folder, model=model, tokenizer=tokenizer)


def _write_r1(folder: Path) -> Path:
    from segearth_geo.model import testing

    return testing.write_random_r1(folder, seed=5)


def _write_sam3(folder: Path) -> Path:
    from segearth_geo.model import testing

    return testing.write_random_sam3(folder, layout="hub")


CASES = {  # writer, prompts, extra load options (SAM3: threshold 0 so random weights give instances)
    "segearth-r2": (_write_r2, ["find the roofs", "houses"], []),
    "segearth-r1": (_write_r1, ["water", "cars"], []),
    "sam3": (_write_sam3, ["roofs, trees", "cars"], ["--score-threshold", "0.0"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("backend", sorted(CASES))
def test_a_tiny_checkpoint_through_the_server_gives_the_in_process_polygons(backend, tmp_path):
    write, prompts, options = CASES[backend]
    folder = write(tmp_path / "checkpoint")
    scene = write_utm(tmp_path / "scene.tif", 300, 200)
    env = {"SEGEARTH_TEST_CHECKPOINT": str(folder), "OMP_NUM_THREADS": "1"}

    def segment(out: Path, model: str, *extra: str) -> None:
        done = run_cli("-q", "segment", str(scene), *prompts, "-o", str(out), "--model", model, "--batch-size", "1",
                       "--threshold", "0.4", *extra, timeout=600, **env)
        assert done.returncode == 0, done.stderr

    segment(tmp_path / "local.gpkg", FACTORY, *options)
    with Server(FACTORY, "--batch-size", "1", *options, env=env, start_timeout=300) as server:
        segment(tmp_path / "remote.gpkg", server.url)
    want, got = segments(tmp_path / "local.gpkg"), segments(tmp_path / "remote.gpkg")
    assert_identical_polygons(got, want)
