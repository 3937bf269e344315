"""Several prompts in one pass over the chips (``segment_raster(source, [p1, p2, ...])``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import shapely
from rasterio.transform import from_origin

from segearth_geo.engine import segment_raster
from tests.geo_fixtures import UTM, UTM_ORIGIN, write_raster
from tests.segmenters import RecordingSegmenter
from tests.test_engine import _scene

SEGMENTERS = Path(__file__).resolve().parent / "segmenters.py"


def _raster(tmp_path):
    return write_raster(tmp_path / "scene.tif", _scene(), crs=UTM, transform=from_origin(*UTM_ORIGIN, 0.5, 0.5))


def _by_prompt(frame, prompt):
    part = frame[frame["prompt"] == prompt]
    return sorted(shapely.to_wkb(shapely.normalize(g)) for g in part.geometry.values), sorted(part["label"])


def test_one_pass_equals_separate_runs_and_reads_each_chip_once(tmp_path):
    source = _raster(tmp_path)
    together = RecordingSegmenter(chip_size=64)
    both = segment_raster(source, ["red", "blue things", "red"], segmenter=together, overlap=16, batch_size=4,
                          out=tmp_path / "both.gpkg")
    assert both.attrs["segearth"]["prompts"] == ["red", "blue things"]  # duplicates dropped, order kept
    for prompt in ("red", "blue things"):
        alone = segment_raster(source, prompt, segmenter=RecordingSegmenter(chip_size=64), overlap=16)
        assert _by_prompt(both, prompt) == _by_prompt(alone, prompt)
    assert sorted(set(both["prompt"])) == ["blue things", "red"]
    # each batch of chips went to the segmenter once per prompt, back to back: same chips, same order
    chips_seen = together.chip_sums
    batches = [n for n, _, _ in together.calls]
    assert batches[0::2] == batches[1::2]
    offsets = [sum(batches[:k]) for k in range(len(batches))]
    for k in range(0, len(batches), 2):
        first = chips_seen[offsets[k]: offsets[k] + batches[k]]
        second = chips_seen[offsets[k + 1]: offsets[k + 1] + batches[k + 1]]
        assert first == second
    chips_layer = gpd.read_file(tmp_path / "both.gpkg", layer="chips")
    assert len(chips_layer) == 2 * both.attrs["segearth"]["chips_processed"]
    assert set(chips_layer["prompt"]) == {"red", "blue things"}


def test_cli_takes_several_prompts(tmp_path):
    source = _raster(tmp_path)
    out = tmp_path / "out.gpkg"
    cmd = [sys.executable, "-m", "segearth_geo_cli.main", "segment", str(source), "red", "blue", "-o", str(out),
           "--model", f"{SEGMENTERS}:colour_small", "--overlap", "16"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "for 2 prompts" in result.stdout
    frame = gpd.read_file(out, layer="segments")
    assert (frame["prompt"] == "red").sum() == 3 and (frame["prompt"] == "blue").sum() == 1
