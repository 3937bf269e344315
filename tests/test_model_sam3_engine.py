"""SAM3 through the geo engine and the worker: real rasters, tiny checkpoints in the hub layout.

Random weights detect nothing meaningful, so object-level geometry is checked with
:class:`RedOracleSam3`: the real ``Sam3Model`` (tiny, random) runs in full, and only its final outputs are
replaced — query 0 of every (chip, concept) pair gets the chip's red pixels as its mask and a high score.
That isolates what this adapter and the engine must get right (padding, the mask → chip pixel mapping,
one target per instance, stitching across chip cores) from what random weights cannot give. The real
random network is also run end to end without any stand-in.
"""

from __future__ import annotations

import json
import subprocess
import sys

import geopandas as gpd
import numpy as np
import pytest
import shapely
import torch
import torch.nn.functional as F
from rasterio.transform import from_origin
from transformers import Sam3Model

from segearth_geo.chips import chip_grid
from segearth_geo.engine import segment_raster
from segearth_geo.model.sam3 import Sam3Preprocessing, Sam3Segmenter
from tests.geo_fixtures import UTM, UTM_ORIGIN, write_raster
from tests.sam3_fixtures import TINY_IMAGE_SIZE, write_tiny_sam3

S = TINY_IMAGE_SIZE
OVERLAP = 32
GSD = 0.5
BACKGROUND, RED = (90, 130, 80), (220, 30, 30)
ORACLE_SCORE = float(torch.sigmoid(torch.tensor(1.0)) * torch.sigmoid(torch.tensor(10.0)))  # 0.7310


class RedOracleSam3(Sam3Model):
    """Test double at the output level (see the module docstring); everything before the outputs is real.

    Query 0's detection score is ``sigmoid(1) · sigmoid(10)`` = :data:`ORACLE_SCORE`; the other queries score ~0.
    """

    def get_vision_features(self, pixel_values, **kwargs):
        vision = super().get_vision_features(pixel_values, **kwargs)
        finest = vision.fpn_hidden_states[0].clone()  # [B,D,m,m]: the mask resolution
        red = ((pixel_values[:, 0] - pixel_values[:, 1]) > 1.0).to(finest.dtype)[:, None]  # [B,1,S,S]
        finest[:, :1] = F.interpolate(red, size=finest.shape[-2:], mode="area")  # red fraction per mask cell
        vision.fpn_hidden_states = (finest, *vision.fpn_hidden_states[1:])
        return vision

    def forward(self, *args, vision_embeds=None, **kwargs):
        out = super().forward(*args, vision_embeds=vision_embeds, **kwargs)
        red = vision_embeds.fpn_hidden_states[0][:, 0]  # [P,m,m] red fraction
        out.pred_masks = torch.full_like(out.pred_masks, -40.0)
        out.pred_masks[:, 0] = 40.0 * (red - 0.5)
        out.pred_logits = torch.full_like(out.pred_logits, -10.0)
        out.pred_logits[:, 0] = 1.0
        out.presence_logits = torch.full_like(out.presence_logits, 10.0)
        return out


@pytest.fixture(scope="module")
def hub_folder(tmp_path_factory):
    return write_tiny_sam3(tmp_path_factory.mktemp("sam3") / "hub", layout="hub")


@pytest.fixture(scope="module")
def oracle(hub_folder):
    model = RedOracleSam3.from_pretrained(hub_folder)
    return Sam3Segmenter(model, Sam3Segmenter.from_pretrained(hub_folder, device="cpu").tokenizer,
                         Sam3Preprocessing.from_folder(hub_folder), device="cpu", batch_size=3)


def _write_discs(path, width, height, centres, radius):
    rows, cols = np.mgrid[0:height, 0:width] + 0.5  # pixel centres
    data = np.empty((3, height, width), dtype=np.uint8)
    data[:] = np.array(BACKGROUND, dtype=np.uint8)[:, None, None]
    for row, col in centres:
        inside = (rows - row) ** 2 + (cols - col) ** 2 <= radius ** 2
        data[:, inside] = np.array(RED, dtype=np.uint8)[:, None]
    write_raster(path, data, crs=UTM, transform=from_origin(*UTM_ORIGIN, GSD, GSD))
    return path


def _map_disc(row, col, radius):
    x0, y0 = UTM_ORIGIN
    return shapely.Point(x0 + col * GSD, y0 - row * GSD).buffer(radius * GSD, quad_segs=64)


def _core_corners(width, height):
    """Pixel points where chip cores meet (each one is shared by 4 cores)."""
    chips = chip_grid(width, height, S, OVERLAP)
    rows = sorted({c.core.row_off for c in chips} - {0})
    cols = sorted({c.core.col_off for c in chips} - {0})
    return rows, cols


def test_objects_across_chip_borders_come_out_as_one_polygon_each(oracle, tmp_path):
    width, height, radius = 260, 230, 20
    rows, cols = _core_corners(width, height)
    assert len(rows) >= 1 and len(cols) >= 2
    # one disc on a 4-core corner, one on a vertical core edge, one on a horizontal core edge, one inside a core
    centres = [(rows[0], cols[0]), (rows[0] + 45, cols[1]), (rows[0], cols[1] + 40), (30, 30)]
    source = _write_discs(tmp_path / "discs.tif", width, height, centres, radius)
    gdf = segment_raster(source, "red roofs", segmenter=oracle, overlap=OVERLAP, batch_size=4)
    assert len(gdf) == len(centres)
    assert set(gdf["label"]) == {"red roofs"} and gdf.crs.to_epsg() == 32633
    for row, col in centres:
        truth = _map_disc(row, col, radius)
        hits = gdf[gdf.intersects(truth)]
        assert len(hits) == 1, (row, col, len(hits))
        found = hits.geometry.iloc[0]
        assert found.is_valid and isinstance(found, shapely.Polygon) and not found.interiors
        iou = found.intersection(truth).area / found.union(truth).area
        assert iou > 0.9, (row, col, iou)
    answers = gdf.attrs["segearth"]["answers"]
    assert all(a.startswith("red roofs: ") for a in answers.values())


def test_each_target_carries_its_detection_score(oracle):
    chip = np.zeros((S, S, 3), dtype=np.uint8)
    chip[:] = BACKGROUND
    chip[40:70, 50:90] = RED
    [prediction] = oracle.segment([chip], "red roofs, roads")
    assert [t.label for t in prediction.targets] == ["red roofs", "roads"]  # one instance (query 0) per concept
    assert [t.score for t in prediction.targets] == pytest.approx([ORACLE_SCORE] * 2, abs=1e-6)
    rows, cols = np.nonzero(prediction.targets[0].probability >= 0.5)
    # masks are 32×32 for the 112-px input (3.5 px per mask cell, as 288 for 1008): edges within a pixel
    np.testing.assert_allclose((rows.min(), rows.max(), cols.min(), cols.max()), (40, 69, 50, 89), atol=1)


def test_score_column_is_the_detection_score(oracle, tmp_path):
    """Polygons of instances with a detection score carry it (not the mean mask probability, ~1.0 here)."""
    source = _write_discs(tmp_path / "discs.tif", 200, 150, [(75, 100)], 20)
    gdf = segment_raster(source, "red roofs", segmenter=oracle, overlap=OVERLAP)
    assert len(gdf) == 1
    assert gdf["score"].iloc[0] == pytest.approx(ORACLE_SCORE, abs=1e-4)


def test_a_scene_smaller_than_a_chip_is_padded_not_stretched(oracle, tmp_path):
    """One 90×60 chip: padded into the 112 canvas, so the disc keeps its place and shape."""
    centre, radius = (32, 60), 14
    source = _write_discs(tmp_path / "small.tif", 90, 60, [centre], radius)
    gdf = segment_raster(source, "red roofs", segmenter=oracle, overlap=OVERLAP)
    assert len(gdf) == 1
    truth = _map_disc(*centre, radius)
    found = gdf.geometry.iloc[0]
    assert found.intersection(truth).area / found.union(truth).area > 0.85
    assert found.centroid.distance(truth.centroid) < GSD


def test_concepts_become_labels_with_the_real_random_network(hub_folder, tmp_path):
    """No stand-in: the tiny random SAM3 end to end; polygons of one label never share an edge (no seams)."""
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (3, 200, 230), dtype=np.uint8)
    source = write_raster(tmp_path / "noise.tif", data, crs=UTM, transform=from_origin(*UTM_ORIGIN, GSD, GSD))
    segmenter = Sam3Segmenter.from_pretrained(hub_folder, device="cpu", batch_size=4, score_threshold=0.0)
    gdf = segment_raster(source, "buildings, swimming pools", segmenter=segmenter, overlap=OVERLAP, threshold=0.5)
    assert set(gdf["label"]) == {"buildings", "swimming pools"}
    assert gdf.geometry.is_valid.all() and (gdf["score"].between(0, 1)).all()
    rows, cols = _core_corners(230, 200)
    x0, y0 = UTM_ORIGIN
    core_lines = shapely.union_all([shapely.LineString([(x0 + c * GSD, y0), (x0 + c * GSD, y0 - 200 * GSD)]) for c in cols]
                                   + [shapely.LineString([(x0, y0 - r * GSD), (x0 + 230 * GSD, y0 - r * GSD)]) for r in rows])
    crossing = 0
    for label, group in gdf.groupby("label"):
        geoms = list(group.geometry)
        crossing += sum(g.intersection(core_lines).length > 0 for g in geoms)
        tree = shapely.STRtree(geoms)
        for i, j in zip(*tree.query(geoms, predicate="intersects")):
            if i < j:
                shared = geoms[i].boundary.intersection(geoms[j].boundary)
                assert shared.length == 0, (label, i, j)  # corners only: an edge would be a seam
    assert crossing > 0  # the check above is not vacuous: objects do run across chip cores


@pytest.mark.slow
def test_worker_loads_the_sam3_folder_and_segments(hub_folder, tmp_path):
    """``load`` with the folder as model spec in a real ``segearth-geo worker`` subprocess (needs the registry)."""
    source = _write_discs(tmp_path / "discs.tif", 150, 120, [(60, 75)], 20)
    out = tmp_path / "out.gpkg"
    requests = [
        {"id": 1, "type": "load", "model": str(hub_folder), "device": "cpu"},
        {"id": 2, "type": "segment", "raster": str(source), "prompt": "roofs, trees", "output": str(out),
         "overlap": OVERLAP, "threshold": 0.5},
    ]  # then end of input: the worker finishes the queued requests and exits
    run = subprocess.run([sys.executable, "-m", "segearth_geo_cli.main", "worker"], input="".join(
        json.dumps(r) + "\n" for r in requests), capture_output=True, text=True, timeout=300)
    replies = [json.loads(line) for line in run.stdout.splitlines()]
    results = {r["id"]: r for r in replies if r["id"] is not None and r["type"] in ("ready", "result", "error")}
    assert results[1]["type"] == "ready" and results[1]["chip_size"] == S, results[1]
    assert results[2]["type"] == "result", results[2]
    assert results[2]["output"] == str(out) and out.is_file()
    # random weights at the default score threshold 0.5: SAM3 finds nothing, and says so per chip
    assert all(a["answer"].startswith("roofs: 0, trees: 0") for a in results[2]["answers"])
    assert len(gpd.read_file(out, layer=results[2]["layer"])) == results[2]["count"] == 0
    assert run.returncode == 0


@pytest.mark.slow
def test_cli_score_threshold_reaches_sam3_and_other_models_refuse_it(hub_folder, tmp_path):
    """``segment --score-threshold``: 0 keeps SAM3's instances (random weights), the default 0.5 none; a model
    without detection scores refuses the option in one line."""
    source = _write_discs(tmp_path / "discs.tif", 150, 120, [(60, 75)], 20)
    cli = [sys.executable, "-m", "segearth_geo_cli.main", "segment", str(source), "roofs"]

    def run(out, *extra, model=str(hub_folder)):
        return subprocess.run([*cli, "-o", str(tmp_path / out), "--model", model, "--device", "cpu", *extra],
                              capture_output=True, text=True, timeout=300)

    kept = run("kept.gpkg", "--score-threshold", "0")
    default = run("default.gpkg")
    assert kept.returncode == 0 and default.returncode == 0, kept.stderr + default.stderr
    assert len(gpd.read_file(tmp_path / "kept.gpkg", layer="segments")) > 0
    assert len(gpd.read_file(tmp_path / "default.gpkg", layer="segments")) == 0
    refused = run("demo.gpkg", "--score-threshold", "0.3", model="demo")
    assert refused.returncode == 2 and "--score-threshold" in refused.stderr and "Traceback" not in refused.stderr
    assert not (tmp_path / "demo.gpkg").exists()
