"""`segearth-geo synth` through a real subprocess: dataset split, scene, argument errors."""

from __future__ import annotations

import json
import subprocess

import pytest
import rasterio


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["segearth-geo", "-q", "synth", *args], capture_output=True, text=True, timeout=120)


def test_synth_writes_a_dataset_split(tmp_path):
    out = tmp_path / "ds"
    proc = _run(str(out), "--split", "val", "--n", "3", "--seed", "5", "--size", "96")
    assert proc.returncode == 0, proc.stderr
    records = json.loads((out / "val" / "annotations" / "val.json").read_text())
    assert [r["id"] for r in records] == ["val_000000", "val_000001", "val_000002"]
    assert sorted(p.name for p in (out / "val" / "images").iterdir()) == [r["image_name"] for r in records]
    again = _run(str(out), "--split", "val", "--n", "3", "--seed", "5", "--size", "96")
    assert again.returncode == 2 and "--overwrite" in again.stderr
    proc = _run(str(out), "--split", "val", "--n", "3", "--seed", "5", "--size", "96", "--overwrite")
    assert proc.returncode == 0 and json.loads((out / "val" / "annotations" / "val.json").read_text()) == records


def test_synth_writes_a_scene(tmp_path):
    proc = _run(str(tmp_path), "--scene", "--width", "512", "--height", "384", "--gsd", "0.5",
                "--crs", "EPSG:32650", "--seed", "3", "--theme", "airport", "--name", "airport")
    assert proc.returncode == 0, proc.stderr
    with rasterio.open(tmp_path / "airport.tif") as ds:
        assert ds.crs.to_epsg() == 32650 and (ds.width, ds.height) == (512, 384) and ds.res == (0.5, 0.5)
        assert ds.compression.name.lower() == "jpeg"
    assert (tmp_path / "airport_truth.gpkg").is_file()


@pytest.mark.parametrize(
    "args",
    [
        ["--split", "dev", "--n", "2"],
        ["--n", "0"],
        ["--split", "train"],
        ["--scene", "--width", "512"],
        ["--scene", "--width", "512", "--height", "512", "--crs", "EPSG:4326"],
        ["--scene", "--width", "512", "--height", "512", "--n", "4"],
        ["--scene", "--width", "512", "--height", "512", "--theme", "moon"],
        ["--n", "2", "--size", "8"],
    ],
)
def test_synth_bad_arguments_give_one_line_and_exit_2(tmp_path, args):
    proc = _run(str(tmp_path / "out"), *args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ")
    assert not (tmp_path / "out" / "train" / "annotations").exists()
