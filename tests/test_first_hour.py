"""A GIS analyst's first hour: honest results, GSD made visible, helpful messages (CLI and worker subprocesses)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from rasterio.transform import from_origin

from segearth_geo.preview import label_colour
from tests.geo_fixtures import UTM, UTM_ORIGIN, write_raster

CLI = [sys.executable, "-m", "segearth_geo_cli.main"]
NOTICE = "synthetic demo — not for real imagery"


def _cli(*args, timeout=300, **kwargs):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, **kwargs)


def _scene(path, gsd: float, size: int = 64):
    data = np.zeros((3, size, size), np.uint8)
    data[:, 10:30, 10:30] = 180
    return write_raster(path, data, crs=UTM, transform=from_origin(*UTM_ORIGIN, gsd, gsd))


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("first-hour")
    return {"native": _scene(folder / "native.tif", 0.5), "coarse": _scene(folder / "landsat.tif", 30.0)}


def test_the_demo_says_it_is_synthetic_and_warns_far_from_its_gsd(scenes, tmp_path):
    native = _cli("segment", str(scenes["native"]), "all the buildings", "-o", str(tmp_path / "a.gpkg"))
    assert native.returncode == 0, native.stderr
    assert NOTICE in native.stdout and "WARNING" not in native.stderr  # the summary says it; no warning at 0.5 m
    coarse = _cli("segment", str(scenes["coarse"]), "water", "-o", str(tmp_path / "b.gpkg"))
    assert coarse.returncode == 0, coarse.stderr
    warnings = [line for line in coarse.stderr.replace("\r", "\n").splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1 and "30 m/px" in warnings[0] and "far coarser" in warnings[0]
    assert "segearth-geo models" in warnings[0]
    assert NOTICE in coarse.stdout


def test_the_worker_reports_the_notice_and_the_gsd_note(scenes, tmp_path):
    requests = [{"id": "s", "type": "segment", "raster": str(scenes["coarse"]), "prompt": "water",
                 "output": str(tmp_path / "w.gpkg")}]
    run = subprocess.run([*CLI, "worker", "--model", "demo"], input="".join(json.dumps(r) + "\n" for r in requests),
                         capture_output=True, text=True, timeout=300)
    result = [json.loads(line) for line in run.stdout.splitlines() if '"s"' in line][-1]
    assert result["type"] == "result" and result["notice"] == NOTICE
    assert len(result["notes"]) == 1 and "far coarser" in result["notes"][0]


def test_info_knows_the_model_without_loading_it(scenes):
    demo = json.loads(_cli("info", str(scenes["native"]), "--json").stdout)
    assert demo["chip_size"] == 256 and demo["overlap"] == 32 and demo["model"] == "demo"
    assert demo["model_gsd"] == [0.3, 2.0] and demo["notes"] == [NOTICE]  # 2 m: demo stage 4 (issue 22)
    sam3 = json.loads(_cli("info", str(scenes["coarse"]), "--model", "sam3", "--json").stdout)
    assert sam3["chip_size"] == 1008 and sam3["chip_count"] == 1
    assert any("far coarser" in note for note in sam3["notes"])
    text = _cli("info", str(scenes["native"])).stdout
    assert "chips:      1 of up to 256 px, overlap 32 px (model demo)" in text and "trained on 0.3–2 m" in text


def test_models_lists_the_ground_resolution_each_model_was_trained_for():
    listed = {row["alias"]: row for row in json.loads(_cli("models", "--json").stdout)}
    assert listed["demo"]["gsd"] == "0.3–2 m" and listed["sam3"]["gsd"] == "0.1–2 m"


def test_a_bbox_in_degrees_on_a_projected_raster_gets_a_hint(scenes, tmp_path):
    result = _cli("segment", str(scenes["native"]), "x", "-o", str(tmp_path / "c.gpkg"), "--bbox", "13.3,52.5,13.4,52.6")
    assert result.returncode == 2 and "did you mean --bbox-crs EPSG:4326?" in result.stderr
    projected = _cli("segment", str(scenes["native"]), "x", "-o", str(tmp_path / "c.gpkg"), "--bbox", "0,0,500,500")
    assert projected.returncode == 2 and "did you mean" not in projected.stderr  # far from the raster, not degrees


def test_preview_colours_are_stable_per_label_and_the_legend_names_prompts():
    assert label_colour("building") == label_colour(" Building ")
    names = ("building", "road", "water", "tree", "car", "ship", "airplane", "runway", "pool", "tennis court")
    assert len({label_colour(name) for name in names}) == len(names)  # common labels never share a colour
