"""What the plugin makes of a finished run (issues 19 and 22), without QGIS: the worker's real ``result`` reply read
into the plugin's ``SegmentResult`` (raster outputs, the zoom summary the dock shows), and the score filter's subset
string applied by OGR to the run's real GeoPackage. The requests are built by the plugin's own ``core`` code and sent
to the real ``segearth-geo worker`` running the deterministic colour model of the QGIS tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.transform import Affine

REPO = Path(__file__).resolve().parents[1]
PLUGIN = REPO / "qgis_plugin"
QGIS_TESTS = REPO / "tests" / "qgis"
COLOUR_MODEL = f"{QGIS_TESTS / 'engine_models.py'}:colour"
PROMPT = "segment the red roofs and the pools"  # the colour model: "red roof" scores 0.9, "pool" 0.8
CLI = [sys.executable, "-m", "segearth_geo_cli.main"]


@pytest.fixture(scope="module")
def core():
    sys.path[:0] = [str(PLUGIN), str(QGIS_TESTS)]
    try:
        from segearth_qgis.core import parameters, result, score_filter

        yield parameters, result, score_filter
    finally:
        for path in (str(PLUGIN), str(QGIS_TESTS)):
            sys.path.remove(path)


@pytest.fixture(scope="module")
def scene(tmp_path_factory, core) -> Path:
    """The QGIS tests' synthetic scene (UTM 33N, 1 m pixels, a red square and a blue rectangle), 512 × 512."""
    import synthetic_scene

    path = tmp_path_factory.mktemp("scene") / "scene.tif"
    with rasterio.open(path, "w", driver="GTiff", width=512, height=512, count=3, dtype="uint8",
                       crs=synthetic_scene.CRS, transform=Affine.from_gdal(*synthetic_scene.geotransform())) as ds:
        ds.write(synthetic_scene.scene_array(512))
    return path


def _worker(requests: list[dict]) -> dict:
    """The final reply of each request, by id, from a real worker on the colour model."""
    run = subprocess.run([*CLI, "worker", "--model", COLOUR_MODEL, "--device", "cpu"],
                         input="".join(json.dumps(r) + "\n" for r in requests), capture_output=True, text=True,
                         timeout=300, cwd=REPO)
    replies = [json.loads(line) for line in run.stdout.splitlines()]
    return {r["id"]: r for r in replies if r["type"] in ("result", "error") and r["id"] is not None}


def _request(parameters, scene: Path, output: Path, changes: dict, rasters: bool = False) -> dict:
    """The plugin's request: the form's values (defaults + ``changes``) through ``request_options``."""
    values = {**{o.name: o.default for o in parameters.RUN_OPTIONS}, **changes}
    params = parameters.SegmentParameters(raster=str(scene), prompt=PROMPT, output=str(output),
                                          options=parameters.request_options(values))
    if rasters:
        params.write_rasters_beside()
    return params.to_request()


def test_a_zoom_run_with_rasters_reads_into_the_plugins_result(core, scene, tmp_path):
    parameters, result_module, _ = core
    zoom = _request(parameters, scene, tmp_path / "zoom.gpkg", {"strategy": "zoom", "regularize": True}, rasters=True)
    auto = _request(parameters, scene, tmp_path / "auto.gpkg", {"strategy": "auto", "min_coverage": 0.2})
    replies = _worker([{"id": "zoom", "type": "segment", **zoom}, {"id": "auto", "type": "segment", **auto}])
    result = result_module.SegmentResult.from_reply(replies["zoom"])
    assert result.polygons == {"pool": 1, "red roof": 1}
    assert (result.raster_out, result.labels_out) == (str(tmp_path / "zoom_probability.tif"),
                                                      str(tmp_path / "zoom_labels.tif"))
    with rasterio.open(result.raster_out) as probability, rasterio.open(result.labels_out) as labels:
        assert probability.crs == labels.crs == "EPSG:32633" and probability.shape == labels.shape == (512, 512)
        assert probability.dtypes == ("float32",) and labels.dtypes == ("int32",)
        ids = labels.read(1)
    polygons = gpd.read_file(result.output, layer="segments")
    red = int(polygons.loc[polygons["label"] == "red roof", "id"].iloc[0])
    assert ids[140, 100] == red and ids[0, 0] == 0  # the red square's centre holds its polygon's id
    assert result.zoom is not None and result.zoom.strategy == "zoom" and result.zoom.chips_per_level[1:] == (1,)
    full, fraction = result.zoom.chips_per_level[0], result.zoom.full_res_fraction
    assert 0 < full < 9 and 0 < fraction < 1  # the overview spared some of the 9 full-resolution chips
    assert result.zoom.lines() == [
        f"Strategy: zoom — {replies['zoom']['zoom']['reason']}",
        f"Chips: {full} at full resolution, 1 on overview level 1; {fraction:.0%} of the area looked at in full "
        "resolution"]
    assert not any("chips per level" in n for n in result.notes)  # what ran is in `zoom`, notes are warnings
    decided = result_module.SegmentResult.from_reply(replies["auto"])  # auto chose grid on 9 chips: no levels
    assert decided.zoom.strategy == "grid" and decided.zoom.lines() == [f"Strategy: grid — {decided.zoom.reason}"]
    assert decided.zoom.reason.startswith("auto:") and decided.raster_out is None
    plain = result_module.SegmentResult.from_reply({"output": "x.gpkg", "layer": "segments"})
    assert plain.zoom is None and plain.raster_out is None and plain.labels_out is None


def test_percentages_never_round_a_small_share_to_zero(core):
    _, result_module, _ = core
    percent = result_module.percent
    assert [percent(f) for f in (0.0, 0.004, 0.0099, 0.01, 0.5019, 1.0)] == ["0%", "0.4%", "1.0%", "1%", "50%", "100%"]


def test_the_score_filter_is_an_ogr_filter_on_the_runs_geopackage(core, scene, tmp_path):
    parameters, _, score_filter = core
    request = _request(parameters, scene, tmp_path / "run.gpkg", {})
    assert _worker([{"id": "s", "type": "segment", **request}])["s"]["type"] == "result"
    assert [score_filter.minimum_score(p) for p in (-5, 0, 37, 85, 100, 250)] == [0.0, 0.0, 0.37, 0.85, 1.0, 1.0]
    assert score_filter.subset_string(0.0) == ""  # no filter: every polygon, scored or not
    assert score_filter.subset_string(0.85) == '"score" >= 0.845'  # half a step: float32 0.9 reads as 0.90
    for minimum, labels in ((0.0, ["pool", "red roof"]), (0.8, ["pool", "red roof"]), (0.85, ["red roof"]),
                            (0.9, ["red roof"]), (0.91, [])):
        where = score_filter.subset_string(minimum) or None
        shown = gpd.read_file(tmp_path / "run.gpkg", layer="segments", where=where)
        assert sorted(shown["label"]) == labels, minimum
    assert score_filter.shown_text(0.85, 1, 2) == "Score ≥ 0.85: 1 of 2 polygons shown"
    assert score_filter.shown_text(0.5, 1, 1) == "Score ≥ 0.50: 1 of 1 polygon shown"
    assert score_filter.shown_text(0.0, None, None) == "Score ≥ 0.00: no result layer"
    scores = gpd.read_file(tmp_path / "run.gpkg", layer="segments")["score"].to_numpy()
    assert np.allclose(sorted(scores), [0.8, 0.9])
