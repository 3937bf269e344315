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


def test_also_write_rasters_gives_each_scene_its_probability_and_ids_rasters(plugin, project, tmp_path):
    import processing
    from osgeo import gdal

    rasters = [write_geotiff(tmp_path / f"scene_{i}.tif", 512) for i in range(2)]
    out = tmp_path / "job"
    project.setCrs(QgsCoordinateReferenceSystem(CRS))
    result = processing.runAndLoadResults("segearth:segment_many_rasters", {
        "INPUTS": [str(p) for p in rasters], "PROMPTS": PROMPT, "MIN_AREA": 0, "RASTERS": True,
        "OUTPUT_DIR": str(out)})
    assert Path(result["OUTPUT_DIR"]) == out
    for raster in rasters:
        folder = out / "results" / raster.stem
        src, prob, ids = (gdal.Open(str(p)) for p in (raster, folder / "probability.tif", folder / "ids.tif"))
        for written in (prob, ids):  # the scene's grid and CRS
            assert written.GetGeoTransform() == src.GetGeoTransform()
            assert (written.RasterXSize, written.RasterYSize) == (src.RasterXSize, src.RasterYSize)
            assert written.GetSpatialRef().IsSame(src.GetSpatialRef())
        values, burnt = prob.GetRasterBand(1).ReadAsArray(), ids.GetRasterBand(1).ReadAsArray()
        polygons = QgsVectorLayer(f"{next(folder.glob('*.gpkg'))}|layername=segments", "p", "ogr")
        polygon_ids = {int(f["id"]) for f in polygons.getFeatures()}
        assert polygon_ids and set(map(int, burnt[burnt > 0].ravel())) == polygon_ids
        assert (values[burnt > 0] >= 0.5).mean() > 0.9  # the polygons lie where the probability passed 0.5
    heat = [layer for layer in QgsProject.instance().mapLayers().values() if layer.name().endswith("— probability")]
    assert sorted(layer.name() for layer in heat) == sorted(f"{p.stem} — probability" for p in rasters)
    assert all(layer.renderer().type() == "singlebandpseudocolor" for layer in heat)
    assert sorted(result["PROBABILITIES"]) == sorted(layer.id() for layer in heat)
