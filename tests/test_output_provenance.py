"""Provenance and the formats QGIS 3.22 users meet: GeoPackage 1.3 with its ``run`` table, GeoParquet metadata,
proper layer names, Shapefile written as one set."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import shapely

import segearth_geo.output as output
from segearth_geo.engine import segment_scene
from segearth_geo.errors import OutputError, OutputNameError
from segearth_geo.output import read_run, run_description, with_provenance, write_output
from segearth_geo.params import SegmentParams
from tests.segmenters import ColourSegmenter
from tests.test_raster_output import scene  # noqa: F401 - the module-scoped scene fixture

UTM = "EPSG:32633"
QGIS_PYTHON = "/usr/bin/python3"


def _segments(n: int = 3) -> gpd.GeoDataFrame:
    geoms = [shapely.box(390000 + 10 * i, 5819000, 390005 + 10 * i, 5819008) for i in range(n)]
    frame = gpd.GeoDataFrame({"label": ["roof"] * n, "score": np.linspace(0.6, 0.9, n), "area_m2": [40.0] * n,
                              "pixels": [160] * n, "prompt": ["roofs"] * n}, geometry=gpd.GeoSeries(geoms, crs=UTM))
    return with_provenance(frame, "/data/scene.tif", "demo")


def test_every_row_carries_source_model_and_id():
    frame = _segments(3)
    assert list(frame.columns) == ["label", "score", "area_m2", "pixels", "prompt", "source", "model", "id",
                                   "geometry"]
    assert frame["id"].tolist() == [1, 2, 3] and set(frame["source"]) == {"/data/scene.tif"}
    again = with_provenance(frame.iloc[[2, 0]], "other.tif", None)  # replaced, not doubled
    assert again["id"].tolist() == [1, 2] and set(again["model"]) == {""} and list(again.columns) == list(frame.columns)


def test_engine_output_records_its_run(scene, tmp_path):  # noqa: F811
    out = tmp_path / "out.gpkg"
    result = segment_scene(scene, "red", ColourSegmenter(64), SegmentParams(overlap=8, regularize=True), out=out,
                           model="tests/segmenters.py:colour_small")
    back = gpd.read_file(out, layer="segments")
    assert back["model"].unique().tolist() == ["tests/segmenters.py:colour_small"]
    assert back["source"].unique().tolist() == [str(scene)] and back["id"].tolist() == result.segments["id"].tolist()
    run = read_run(out)
    assert run["model"] == "tests/segmenters.py:colour_small" and run["source"] == str(scene)
    assert run["parameters"]["regularize"] is True and run["parameters"]["overlap"] == 8
    assert run["prompts"] == ["red"] and run["chip_size"] == 64 and run["segearth_geo_version"]
    segment_scene(scene, "red", ColourSegmenter(64), SegmentParams(overlap=8), out=tmp_path / "o.parquet")
    assert read_run(tmp_path / "o.parquet")["parameters"]["threshold"] == 0.5
    assert gpd.read_parquet(tmp_path / "o.parquet")["model"].unique().tolist() == ["ColourSegmenter"]


def test_geopackage_is_version_1_3(tmp_path):
    path = write_output(tmp_path / "v.gpkg", _segments(), run=run_description("s.tif", ["roofs"], SegmentParams(),
                                                                                "demo"))
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 10300
        assert db.execute("PRAGMA application_id").fetchone()[0] == 0x47504B47  # "GPKG"
        kinds = dict(db.execute("SELECT table_name, data_type FROM gpkg_contents").fetchall())
    assert kinds == {"segments": "features", "run": "attributes"}


@pytest.mark.skipif(not os.path.exists(QGIS_PYTHON) or subprocess.run(
    [QGIS_PYTHON, "-c", "import qgis.core"], capture_output=True, check=False).returncode != 0,
    reason="needs the system Python with QGIS")
def test_qgis_opens_the_geopackage_without_a_version_warning(tmp_path):
    path = write_output(tmp_path / "v.gpkg", _segments())
    script = ("import sys\nfrom qgis.core import QgsApplication, QgsVectorLayer\n"
              "app = QgsApplication([], False); app.initQgis()\n"
              "layer = QgsVectorLayer(sys.argv[1] + '|layername=segments', 's', 'ogr')\n"
              "print(layer.isValid(), layer.featureCount())\n")
    done = subprocess.run([QGIS_PYTHON, "-c", script, str(path)], capture_output=True, text=True, timeout=120,
                          check=False, env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert done.stdout.split() == ["True", "3"], done.stderr
    assert "partially supported" not in done.stderr and "user_version" not in done.stderr


def test_geojson_and_flatgeobuf_are_named_after_the_file(tmp_path):
    geojson = write_output(tmp_path / "buildings.geojson", _segments())
    assert json.loads(geojson.read_text())["name"] == "buildings"
    fgb = write_output(tmp_path / "roofs.fgb", _segments())
    assert [name for name, _ in pyogrio.list_layers(fgb)] == ["roofs"]


def test_shapefile_is_written_as_one_set(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="segearth_geo.output")
    output._warned_shapefile = False
    path = write_output(tmp_path / "roofs.shp", _segments())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["roofs.cpg", "roofs.dbf", "roofs.prj", "roofs.shp",
                                                          "roofs.shx"]
    back = gpd.read_file(path)
    assert back.crs.to_epsg() == 32633 and back["id"].tolist() == [1, 2, 3] and back["prompt"].tolist() == ["roofs"] * 3
    (tmp_path / "roofs.qix").write_bytes(b"stale index")
    write_output(path, _segments(1), overwrite=True)
    assert len(gpd.read_file(path)) == 1 and not (tmp_path / "roofs.qix").exists()
    warnings = [r for r in caplog.records if "Shapefile output" in r.getMessage()]
    assert len(warnings) == 1 and "10 characters" in warnings[0].getMessage()  # once per process


def test_shapefile_refusals_leave_everything_as_it_was(tmp_path):
    (tmp_path / "a.dbf").write_bytes(b"someone's table")
    with pytest.raises(OutputNameError, match="a.dbf .* exists"):
        write_output(tmp_path / "a.shp", _segments())
    (tmp_path / "b.shx").mkdir()
    with pytest.raises(OutputNameError, match="one set of files"):
        write_output(tmp_path / "b.shp", _segments(), overwrite=True)
    long = _segments().rename(columns={"label": "a_label_name_too_long"})
    with pytest.raises(OutputNameError, match="at most 10 characters"):
        write_output(tmp_path / "c.shp", long)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.dbf", "b.shx"]


def test_a_failed_rename_rolls_the_set_back(tmp_path, monkeypatch):
    path = write_output(tmp_path / "d.shp", _segments(3))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real = os.replace
    calls = {"n": 0}

    def flaky(src, dst):
        calls["n"] += 1
        if str(dst).endswith(".dbf") and not str(src).endswith(".old"):
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(output.os, "replace", flaky)
    with pytest.raises(OutputError, match="nothing was changed"):
        write_output(path, _segments(1), overwrite=True)
    monkeypatch.setattr(output.os, "replace", real)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert len(gpd.read_file(path)) == 3


def test_batch_merge_is_geopackage_1_3(tmp_path):
    from segearth_geo.batch.merge import merge_outputs

    scene_file = write_output(tmp_path / "s.gpkg", _segments())
    merged = merge_outputs([str(scene_file)], "demo", tmp_path / "all.gpkg", None)
    with sqlite3.connect(merged.path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 10300
