"""Atomic writing of every output format, read back with pyogrio/geopandas."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import shapely

from segearth_geo.errors import OutputError
from segearth_geo.output import CHIPS_LAYER, SEGMENTS_LAYER, write_output

UTM = "EPSG:32633"


def _segments(n: int = 2) -> gpd.GeoDataFrame:
    geoms = [shapely.box(390000 + 10 * i, 5819000, 390005 + 10 * i, 5819008) for i in range(n)]
    return gpd.GeoDataFrame(
        {"label": ["roof"] * n, "score": np.linspace(0.6, 0.9, n), "area_m2": [40.0] * n,
         "pixels": [160] * n, "prompt": ["roofs"] * n},
        geometry=gpd.GeoSeries(geoms, crs=UTM),
    )


def _chips() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame({"chip": [0, 3], "answer": ["Sure, [SEG].", "No."], "labels": ["roof", ""]},
                            geometry=gpd.GeoSeries([shapely.box(390000, 5818990, 390032, 5819022)] * 2, crs=UTM))


def test_gpkg_has_segments_and_chips_layers(tmp_path):
    path = write_output(tmp_path / "out.gpkg", _segments(), _chips())
    assert [name for name, _ in pyogrio.list_layers(path)] == [SEGMENTS_LAYER, CHIPS_LAYER]
    segments = gpd.read_file(path, layer=SEGMENTS_LAYER)
    chips = gpd.read_file(path, layer=CHIPS_LAYER)
    assert segments.crs.to_epsg() == 32633
    assert list(segments["label"]) == ["roof", "roof"]
    assert segments.geometry.geom_equals(_segments().geometry).all()
    assert list(chips["answer"]) == ["Sure, [SEG].", "No."] and list(chips["chip"]) == [0, 3]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.gpkg"]  # no temp files left


def test_geojson_is_rfc7946_wgs84(tmp_path):
    path = write_output(tmp_path / "out.geojson", _segments())
    data = json.loads(path.read_text())
    assert "crs" not in data  # RFC 7946: WGS84 implied, no crs member
    x, y = data["features"][0]["geometry"]["coordinates"][0][0]
    assert 13.0 < x < 14.0 and 52.0 < y < 53.0  # lon, lat near Berlin
    back = gpd.read_file(path)
    assert back.crs.to_epsg() == 4326
    expected = _segments().to_crs(4326)
    assert back.geometry.iloc[0].hausdorff_distance(expected.geometry.iloc[0]) < 1e-6  # 7-decimal RFC 7946 precision


@pytest.mark.parametrize("name", ["out.fgb", "out.parquet"])
def test_fgb_and_parquet_keep_source_crs(tmp_path, name):
    path = write_output(tmp_path / name, _segments(3))
    back = gpd.read_parquet(path) if name.endswith(".parquet") else gpd.read_file(path)
    back = back.sort_values("score").reset_index(drop=True)  # FlatGeobuf's spatial index reorders rows
    assert back.crs.to_epsg() == 32633
    assert len(back) == 3
    assert back.geometry.geom_equals(_segments(3).geometry).all()
    assert back["score"].tolist() == pytest.approx(_segments(3)["score"].tolist())


def test_empty_result_is_written(tmp_path):
    empty = _segments(0)
    for name in ("e.gpkg", "e.geojson", "e.fgb", "e.parquet"):
        path = write_output(tmp_path / name, empty, _chips().iloc[:0] if name.endswith("gpkg") else None)
        back = gpd.read_parquet(path) if name.endswith(".parquet") else gpd.read_file(path, layer=0)
        assert len(back) == 0


def test_existing_output_needs_overwrite(tmp_path):
    path = tmp_path / "out.gpkg"
    path.write_bytes(b"keep me")
    with pytest.raises(OutputError, match="exists"):
        write_output(path, _segments())
    assert path.read_bytes() == b"keep me"
    write_output(path, _segments(1), overwrite=True)
    assert len(gpd.read_file(path, layer=SEGMENTS_LAYER)) == 1


def test_unwritable_or_missing_folder(tmp_path):
    with pytest.raises(OutputError, match="does not exist"):
        write_output(tmp_path / "missing" / "out.gpkg", _segments())
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError):
        write_output(blocker / "out.gpkg", _segments())
    with pytest.raises(OutputError, match="unknown output format"):
        write_output(tmp_path / "out.kml", _segments())


def test_failed_write_leaves_nothing(tmp_path):
    bad_chips = _chips()
    bad_chips["bad"] = np.array([1 + 2j, 3j])  # complex column: refused after the segments layer was written
    with pytest.raises(OutputError, match="cannot write"):
        write_output(tmp_path / "out.gpkg", _segments(), bad_chips)
    assert list(tmp_path.iterdir()) == []
