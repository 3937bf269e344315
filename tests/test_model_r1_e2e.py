"""A tiny SegEarth-R1 checkpoint in the released layout, end to end: registry → segment_raster, the CLI, the worker."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from r1_fixtures import tiny_r1_model, write_official_checkpoint
from rasterio.transform import from_origin

from segearth_geo import segment_raster
from segearth_geo.model.loading import load_segmenter
from segearth_geo.model.segearth_r1.prompt import ANSWER_TEXT
from segearth_geo.model.segearth_r1.segmenter import SegEarthR1Segmenter

PROMPT = "segment the buildings next to the road"
EXE = shutil.which("segearth-geo") or str(Path(sys.executable).with_name("segearth-geo"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_official_checkpoint(tiny_r1_model(seed=7), tmp_path_factory.mktemp("ckpt") / "SegEarth-R1-RRSIS-D")


def _raster(path: Path, width: int, height: int, seed: int = 0) -> Path:
    data = np.random.default_rng(seed).integers(0, 256, size=(3, height, width), dtype=np.uint8)
    profile = dict(driver="GTiff", width=width, height=height, count=3, dtype="uint8", crs="EPSG:32633",
                   transform=from_origin(500_000, 4_600_000, 2.0, 2.0))
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def test_registry_loads_the_folder_as_segearth_r1(checkpoint):
    segmenter = load_segmenter(checkpoint, device="cpu")
    assert isinstance(segmenter, SegEarthR1Segmenter)
    assert segmenter.chip_size == 256 and segmenter.template == "referring"
    assert load_segmenter(checkpoint, device="cpu", template="reasoning").template == "reasoning"


def test_segment_raster_single_non_square_chip_matches_the_segmenter(checkpoint, tmp_path):
    """One 200×130 chip: the polygons cover exactly the pixels the segmenter scores >= threshold."""
    raster = _raster(tmp_path / "scene.tif", 200, 130)
    segmenter = load_segmenter(checkpoint, device="cpu")
    with rasterio.open(raster) as src:
        chip = np.moveaxis(src.read(), 0, -1)
    probability = segmenter.segment([chip], PROMPT)[0].targets[0].probability
    threshold = float(np.median(probability))
    expected = int((probability >= threshold).sum())
    assert 0 < expected < probability.size
    gdf = segment_raster(raster, PROMPT, segmenter=segmenter, threshold=threshold, out=tmp_path / "out.gpkg")
    assert set(gdf["label"]) == {"buildings"}
    assert int(gdf["pixels"].sum()) == expected
    written = gpd.read_file(tmp_path / "out.gpkg", layer="segments")
    assert len(written) == len(gdf) and written.crs.to_epsg() == 32633
    assert abs(written.geometry.area.sum() - expected * 4.0) < 1e-6  # 2 m pixels


def test_segment_raster_many_chips_with_edges(checkpoint, tmp_path):
    raster = _raster(tmp_path / "wide.tif", 600, 300, seed=1)
    segmenter = load_segmenter(checkpoint, device="cpu", batch_size=3)
    gdf = segment_raster(raster, PROMPT, segmenter=segmenter, threshold=0.0)
    assert set(gdf["label"]) == {"buildings"}
    assert abs(gdf.geometry.union_all().area - 600 * 300 * 4.0) < 1e-3  # threshold 0: the whole footprint


def test_cli_segment_with_the_checkpoint_folder(checkpoint, tmp_path):
    raster = _raster(tmp_path / "scene.tif", 180, 120)
    out = tmp_path / "cli.geojson"
    result = subprocess.run([EXE, "segment", str(raster), "water", "--model", str(checkpoint),
                             "-o", str(out), "--threshold", "0", "--device", "cpu"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert set(gpd.read_file(out)["label"]) == {"water"}


def test_cli_hub_id_from_the_local_cache_offline(checkpoint, tmp_path):
    """An 'owner/name' id resolves from the Hugging Face cache with HF_HUB_OFFLINE=1 (the hub cache layout)."""
    snapshot = tmp_path / "hub" / "models--earth-insights--SegEarth-R1-RRSIS-D" / "snapshots" / "0123abc"
    shutil.copytree(checkpoint, snapshot)
    refs = snapshot.parent.parent / "refs"
    refs.mkdir()
    (refs / "main").write_text("0123abc")
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    raster = _raster(tmp_path / "scene.tif", 120, 90)
    out = tmp_path / "hub.gpkg"
    exe = EXE
    result = subprocess.run([exe, "segment", str(raster), "cars", "--model", "segearth-r1-rrsisd", "-o", str(out),
                             "--threshold", "0"], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert set(gpd.read_file(out, layer="segments")["label"]) == {"cars"}
    listing = subprocess.run([exe, "models", "--json"], capture_output=True, text=True, env=env, timeout=120)
    rows = {r["alias"]: r for r in json.loads(listing.stdout)}
    assert rows["segearth-r1-rrsisd"]["cached"] == "yes" and rows["segearth-r1-earthreason"]["cached"] == "no"


def test_worker_loads_the_checkpoint_and_segments(checkpoint, tmp_path):
    raster = _raster(tmp_path / "scene.tif", 300, 200)
    out = tmp_path / "worker.gpkg"
    requests = [
        {"id": "l", "type": "load", "model": str(checkpoint), "device": "cpu"},
        {"id": "s", "type": "segment", "raster": str(raster), "prompt": PROMPT, "output": str(out), "threshold": 0.0},
    ]
    proc = subprocess.run([EXE, "worker"], input="".join(json.dumps(r) + "\n" for r in requests),
                          capture_output=True, text=True, timeout=300)
    replies = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    loaded = next(r for r in replies if r["id"] == "l" and r["type"] != "progress")
    assert loaded["type"] == "ready" and loaded["chip_size"] == 256, replies
    result = next(r for r in replies if r["id"] == "s" and r["type"] in ("result", "error"))
    assert result["type"] == "result", result
    gdf = gpd.read_file(out, layer=result.get("layer", "segments"))
    assert set(gdf["label"]) == {"buildings"}
    assert abs(gdf.geometry.union_all().area - 300 * 200 * 4.0) < 1e-3


def test_answer_text_states_no_generation(checkpoint):
    segmenter = load_segmenter(checkpoint, device="cpu")
    chip = np.zeros((64, 64, 3), dtype=np.uint8)
    assert segmenter.segment([chip], PROMPT)[0].answer == ANSWER_TEXT
    assert "does not generate text" in ANSWER_TEXT
