"""`segearth-geo segment` as a user runs it: a subprocess with a test segmenter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
from PIL import Image
from rasterio.transform import from_origin

from tests.geo_fixtures import UTM, UTM_ORIGIN, write_raster
from tests.test_engine import _scene

SEGMENTERS = Path(__file__).resolve().parent / "segmenters.py"


def _run(*args: str, model: str = "colour_small") -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "segearth_geo_cli.main", "segment", *args, "--model", f"{SEGMENTERS}:{model}"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def raster(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cli")
    return write_raster(folder / "scene.tif", _scene(), crs=UTM, transform=from_origin(*UTM_ORIGIN, 0.5, 0.5))


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    """The single ``Error: ...`` line (click adds a usage hint above its own option errors)."""
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_segment_writes_gpkg_preview_and_summary(raster, tmp_path):
    out, png = tmp_path / "out.gpkg", tmp_path / "preview.png"
    result = _run(str(raster), "red and blue", "-o", str(out), "--overlap", "16", "--batch-size", "3",
                  "--preview", str(png), "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "Wrote 4 polygons" in result.stdout and "3 'red object'" in result.stdout
    assert "1 'blue object'" in result.stdout and "on cpu" in result.stdout
    assert "15/15" in result.stderr  # progress bar: chips done / total
    assert [n for n, _ in pyogrio.list_layers(out)] == ["segments", "chips", "run"]
    segments = gpd.read_file(out, layer="segments")
    assert segments.crs.to_string() == UTM and sorted(segments["label"]) == ["blue object"] + ["red object"] * 3
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size == (230, 150)
        pixels = np.asarray(image.convert("RGB"))
    assert (pixels != np.asarray(_scene().transpose(1, 2, 0))).any()  # polygons drawn over the scene


def test_geojson_output_is_wgs84(raster, tmp_path):
    out = tmp_path / "out.geojson"
    result = _run(str(raster), "blue", "-o", str(out), "--overlap", "16", "--min-area", "1", "--simplify", "0.5")
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    lon, lat = data["features"][0]["geometry"]["coordinates"][0][0]
    assert 13 < lon < 14 and 52 < lat < 53
    assert data["features"][0]["properties"]["label"] == "blue object"


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["  "], 2, "prompt is empty"),
        (["red", "--bbox", "0,0,10,10"], 2, "does not overlap"),
        (["red", "--bands", "4,3,2"], 2, "band 4 does not exist"),
    ],
)
def test_usage_errors_exit_2_without_output(raster, tmp_path, args, code, needle):
    out = tmp_path / "out.gpkg"
    result = _run(str(raster), *args, "-o", str(out), "--overlap", "16")
    assert result.returncode == code
    assert needle in _one_error_line(result)
    assert not out.exists()


def test_missing_and_corrupt_rasters_exit_1(tmp_path):
    out = tmp_path / "out.gpkg"
    missing = _run(str(tmp_path / "nope.tif"), "red", "-o", str(out))
    assert missing.returncode == 1 and "not found" in _one_error_line(missing)
    corrupt = tmp_path / "bad.tif"
    corrupt.write_bytes(b"not a tiff at all")
    broken = _run(str(corrupt), "red", "-o", str(out))
    assert broken.returncode == 1 and "cannot open" in _one_error_line(broken)
    assert not out.exists()


def test_existing_output_and_overwrite(raster, tmp_path):
    out = tmp_path / "out.fgb"
    out.write_bytes(b"old")
    refused = _run(str(raster), "red", "-o", str(out), "--overlap", "16")
    assert refused.returncode == 2 and "exists" in _one_error_line(refused)
    assert out.read_bytes() == b"old"
    replaced = _run(str(raster), "red", "-o", str(out), "--overlap", "16", "--overwrite", "--threshold", "0.9")
    assert replaced.returncode == 0, replaced.stderr
    assert len(gpd.read_file(out)) == 0  # 200/255 < 0.9: nothing above the threshold


def test_unwritable_folder_and_failing_model(raster, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    result = _run(str(raster), "red", "-o", str(blocker / "out.gpkg"), "--overlap", "16")
    assert result.returncode == 1 and "does not exist" in _one_error_line(result)
    out = tmp_path / "out.parquet"
    crashed = _run(str(raster), "red", "-o", str(out), "--overlap", "16", "--batch-size", "2",
                   model="failing")
    assert crashed.returncode == 1
    assert "simulated model crash" in crashed.stderr and "Traceback" not in crashed.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]
