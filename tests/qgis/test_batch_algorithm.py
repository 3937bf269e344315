"""Processing algorithm "Segment many rasters" inside QGIS, against the real `segearth-geo batch`."""

from __future__ import annotations

import json
from pathlib import Path

from engine_models import LABELS, PROMPT
from qgis.core import QgsCoordinateReferenceSystem, QgsFeature, QgsGeometry, QgsProject, QgsRectangle, QgsVectorLayer
from synthetic_scene import CRS, write_geotiff


def _aoi_layer(extent: QgsRectangle) -> QgsVectorLayer:
    layer = QgsVectorLayer(f"Polygon?crs={CRS}", "aoi", "memory")
    feature = QgsFeature()
    feature.setGeometry(QgsGeometry.fromRect(extent))
    layer.dataProvider().addFeatures([feature])
    QgsProject.instance().addMapLayer(layer)
    return layer


def test_segment_many_rasters_runs_a_batch_job_and_adds_the_merged_layer(plugin, project, tmp_path):
    import processing
    from segearth_qgis.core.label_colours import label_colour

    rasters = [write_geotiff(tmp_path / f"scene_{i}.tif", 512) for i in range(2)]
    out = tmp_path / "job"
    project.setCrs(QgsCoordinateReferenceSystem(CRS))
    result = processing.runAndLoadResults("segearth:segment_many_rasters", {
        "INPUTS": [str(p) for p in rasters], "PROMPTS": f"{PROMPT}\n\n", "GSD": 0, "THRESHOLD": 0.5,
        "MIN_AREA": 0, "OUTPUT_DIR": str(out),
    })
    assert Path(result["OUTPUT_DIR"]) == out and (out / "job.json").is_file()
    job = json.loads((out / "job.json").read_text())["job"]
    assert job["prompts"] == [PROMPT] and job["sources"] == [str(p) for p in rasters]
    (merged,) = QgsProject.instance().mapLayersByName("SegEarth batch")
    assert merged.isValid() and merged.crs().authid() == CRS
    features = list(merged.getFeatures())
    assert {f["label"] for f in features} == set(LABELS)
    renderer = merged.renderer()  # coloured by label, as the dock's layers
    assert renderer.type() == "categorizedSymbol" and renderer.classAttribute() == "label"
    assert {c.value(): c.symbol().color().getRgb()[:3] for c in renderer.categories()} == {
        label: label_colour(label) for label in LABELS}
    assert {f["source"] for f in features} == {str(p) for p in rasters}
    assert len(features) % 2 == 0  # the same objects in both rasters
    assert len(list((out / "results").rglob("*.gpkg"))) == 2


def test_aoi_layer_limits_the_job(plugin, project, tmp_path):
    import processing

    raster = write_geotiff(tmp_path / "scene.tif", 512)
    whole = processing.run("segearth:segment_many_rasters", {
        "INPUTS": [str(raster)], "PROMPTS": PROMPT, "OUTPUT_DIR": str(tmp_path / "whole")})
    assert whole["MERGED"] is not None
    layer = QgsVectorLayer(str(tmp_path / "whole" / "merged.gpkg") + "|layername=segments", "w", "ogr")
    extent = layer.extent()
    half = QgsRectangle(extent.xMinimum(), extent.yMinimum(), extent.center().x(), extent.yMaximum())
    aoi = _aoi_layer(half)
    clipped = processing.run("segearth:segment_many_rasters", {
        "INPUTS": [str(raster)], "PROMPTS": PROMPT, "AOI": aoi, "OUTPUT_DIR": str(tmp_path / "aoi")})
    part = QgsVectorLayer(str(tmp_path / "aoi" / "merged.gpkg") + "|layername=segments", "a", "ogr")
    assert part.isValid() and clipped
    assert 0 < part.featureCount() <= layer.featureCount()
    assert part.extent().xMaximum() <= half.xMaximum() + 1e-6
