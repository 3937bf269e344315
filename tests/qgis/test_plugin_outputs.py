"""Issue 19 in QGIS, against the real worker: regularize / smooth (mutually exclusive, the IoU bound an advanced
option that acts only with regularize), the probability and polygon-id rasters (dock: next to the GeoPackage, loaded
under the result layer; Processing: two optional raster destinations), the score filter slider (a live layer filter on
the last result layer) and SAM3's load options in the settings. The colour model scores "red roof" 0.9 and "pool" 0.8.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from engine_models import LABELS, PROMPT
from qgis.core import (
    QgsPointXY,
    QgsProcessingException,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterRasterDestination,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)
from synthetic_scene import BLUE_SQUARE, CRS, RED_SQUARE, pixel_box, write_geotiff
from test_plugin import add_raster, assert_box, configure, features_by_label, run_dock


@pytest.fixture()
def scene(tmp_path) -> Path:
    return write_geotiff(tmp_path / "scene.tif")


def _group_layers() -> list:
    """The SegEarth group's layers, top first, with their visibility: ``[(layer, visible)]``."""
    group = QgsProject.instance().layerTreeRoot().findGroup("SegEarth")
    return [(node.layer(), node.isVisible()) for node in group.findLayers()]


def _centre(block) -> QgsPointXY:
    minx, miny, maxx, maxy = pixel_box(block)
    return QgsPointXY((minx + maxx) / 2, (miny + maxy) / 2)


# -- regularize / smooth --------------------------------------------------------------------------
def test_regularize_and_smooth_exclude_each_other_and_the_iou_bound_follows_regularize(dock, project, scene):
    options = dock.run_options
    regularize, smooth, iou = (options.editors[n] for n in ("regularize", "smooth", "regularize_iou"))
    assert options.advanced.isCollapsed() and options.advanced.isAncestorOf(iou)  # an advanced option
    assert not options.advanced.isAncestorOf(regularize) and not options.advanced.isAncestorOf(smooth)
    assert not iou.isEnabled() and iou.value() == 0.75
    smooth.click()
    assert smooth.isChecked() and options.request_fields() == {"threshold": 0.5, "smooth": True}
    regularize.click()  # checking one clears the other, in the UI as in the engine
    assert regularize.isChecked() and not smooth.isChecked() and iou.isEnabled()
    assert options.request_fields() == {"threshold": 0.5, "regularize": True, "regularize_iou": 0.75}
    options.set_value("regularize_iou", 0.6)
    configure(dock, add_raster(scene), "layer")
    task = run_dock(dock)
    assert dock.last_error is None, dock.last_error
    request = task.params.to_request()
    assert request["regularize"] is True and request["regularize_iou"] == 0.6 and "smooth" not in request
    [(layer, _)] = _group_layers()
    assert {"label", "score", "id", "source", "model"} <= set(layer.fields().names())
    by_label = features_by_label(layer)
    assert sorted(by_label) == sorted(LABELS)
    assert_box(by_label["red roof"][0], pixel_box(RED_SQUARE))  # a square stays the same square
    smooth.click()
    assert not regularize.isChecked() and not iou.isEnabled()
    assert options.request_fields() == {"threshold": 0.5, "smooth": True}  # the IoU bound acts only with regularize
    smooth.click()
    assert options.request_fields() == {"threshold": 0.5}


# -- raster outputs -------------------------------------------------------------------------------
def test_the_dock_writes_both_rasters_next_to_the_geopackage_and_loads_them_under_the_layer(dock, project, scene):
    configure(dock, add_raster(scene), "layer")
    dock.rasters_check.setChecked(True)
    task = run_dock(dock)
    assert dock.last_error is None, dock.last_error
    output = Path(task.result.output)
    probability, labels = Path(task.result.raster_out), Path(task.result.labels_out)
    assert (probability.parent, labels.parent) == (output.parent, output.parent)
    assert (probability.name, labels.name) == (f"{output.stem}_probability.tif", f"{output.stem}_labels.tif")
    (polygons, shown), (heat, heat_shown), (ids, ids_shown) = _group_layers()
    assert isinstance(polygons, QgsVectorLayer) and shown and heat_shown and not ids_shown  # ids: hidden
    assert heat.source() == str(probability) and ids.source() == str(labels)
    assert heat.name() == f"{polygons.name()} — probability" and ids.name() == f"{polygons.name()} — polygon ids"
    for raster in (heat, ids):
        assert raster.crs().authid() == CRS and (raster.width(), raster.height()) == (512, 512)
        assert raster.extent() == QgsRasterLayer(str(scene), "s", "gdal").extent()
    assert heat.renderer().type() == "singlebandpseudocolor"
    assert heat.dataProvider().sample(_centre(RED_SQUARE), 1)[0] == pytest.approx(0.9)
    assert heat.dataProvider().sample(_centre(BLUE_SQUARE), 1)[0] == pytest.approx(0.8)
    id_of = {f["label"]: f["id"] for f in polygons.getFeatures()}
    assert ids.dataProvider().sample(_centre(RED_SQUARE), 1)[0] == id_of["red roof"]  # the vector's id column
    assert ids.dataProvider().sample(_centre(BLUE_SQUARE), 1)[0] == id_of["pool"]
    assert ids.dataProvider().sample(QgsPointXY(*pixel_box((0, 1, 0, 1))[:2]), 1)[0] == 0  # no polygon
    renderer = ids.renderer()
    assert renderer.type() == "paletted"
    classes = {c.value: c.label for c in renderer.classes()}
    assert classes == {id_of["pool"]: f"{id_of['pool']} (pool)", id_of["red roof"]: f"{id_of['red roof']} (red roof)"}
    assert len({c.color.name() for c in renderer.classes()}) == 2  # the two ids are told apart
    dock.rasters_check.setChecked(False)
    task = run_dock(dock)  # unticked: no rasters asked for, none added
    assert task.result.raster_out is None and "raster_out" not in task.params.to_request()
    assert [isinstance(layer, QgsVectorLayer) for layer, _ in _group_layers()] == [True, True, False, False]


# -- score filter ---------------------------------------------------------------------------------
def test_the_score_filter_hides_low_scores_of_the_last_result_layer_live(dock, project, scene):
    slider = dock.score_filter
    assert not slider.isEnabled() and slider.label.text() == "Score ≥ 0.00: no result layer"
    configure(dock, add_raster(scene), "layer")
    run_dock(dock)
    first = dock.last_layer
    assert slider.isEnabled() and slider.layer is first and first.name() in slider.toolTip()
    assert slider.label.text() == "Score ≥ 0.00: 2 of 2 polygons shown" and first.subsetString() == ""
    slider.set_minimum(0.85)
    assert first.subsetString() == '"score" >= 0.845' and first.featureCount() == 1
    assert list(features_by_label(first)) == ["red roof"]  # the pool scores 0.8
    assert slider.label.text() == "Score ≥ 0.85: 1 of 2 polygons shown"
    slider.slider.setValue(95)  # the user drags the slider
    assert first.subsetString() == '"score" >= 0.945' and first.featureCount() == 0
    assert slider.label.text() == "Score ≥ 0.95: 0 of 2 polygons shown"
    slider.slider.setValue(80)
    assert first.featureCount() == 2 and slider.label.text() == "Score ≥ 0.80: 2 of 2 polygons shown"
    slider.set_minimum(0.85)
    assert QgsVectorLayer(first.source().split("|")[0], "file", "ogr").featureCount() == 2  # the file keeps both
    run_dock(dock)  # a new result layer: the slider follows it, back at 0
    second = dock.last_layer
    assert second is not first and slider.layer is second and slider.minimum == 0.0
    assert second.subsetString() == "" and slider.label.text() == "Score ≥ 0.00: 2 of 2 polygons shown"
    assert first.subsetString() == '"score" >= 0.845'  # the older layer keeps the filter it was given
    slider.set_minimum(0.9)  # the red roof's float32 score 0.8999999762 reads as 0.90: shown
    assert second.featureCount() == 1 and first.featureCount() == 1
    QgsProject.instance().removeMapLayer(second.id())
    assert not slider.isEnabled() and slider.layer is None
    assert slider.label.text() == "Score ≥ 0.00: no result layer"


# -- Processing -----------------------------------------------------------------------------------
def test_processing_writes_both_rasters_styled_and_refuses_options_that_do_not_go_together(plugin, project, scene,
                                                                                          tmp_path):
    import processing
    from qgis.core import QgsApplication

    definition = QgsApplication.processingRegistry().algorithmById("segearth:segment_by_prompt")
    for name in ("RASTER_OUT", "LABELS_OUT"):
        parameter = definition.parameterDefinition(name)
        assert isinstance(parameter, QgsProcessingParameterRasterDestination)
        assert parameter.flags() & QgsProcessingParameterDefinition.Flag.FlagOptional
        assert not parameter.createByDefault() and parameter.defaultFileExtension() == "tif"
    advanced = {p.name() for p in definition.parameterDefinitions()
                if p.flags() & QgsProcessingParameterDefinition.Flag.FlagAdvanced}
    assert advanced == {"REGULARIZE_IOU", "ZOOM_MODEL", "MIN_COVERAGE"}

    stale = tmp_path / "probability.tif"
    stale.write_bytes(b"an older output the user chose to replace")
    labels = tmp_path / "ids.tif"
    result = processing.runAndLoadResults("segearth:segment_by_prompt", {
        "INPUT": str(scene), "PROMPT": PROMPT, "REGULARIZE": True, "REGULARIZE_IOU": 0.6,
        "OUTPUT": str(tmp_path / "polygons.gpkg"), "RASTER_OUT": str(stale), "LABELS_OUT": str(labels)})
    assert (result["RASTER_OUT"], result["LABELS_OUT"]) == (str(stale), str(labels))
    loaded = {layer.source(): layer for layer in project.mapLayers().values()}
    heat, ids = loaded[str(stale)], loaded[str(labels)]
    for raster in (heat, ids):
        assert raster.crs().authid() == CRS and (raster.width(), raster.height()) == (512, 512)
    assert heat.renderer().type() == "singlebandpseudocolor" and ids.renderer().type() == "paletted"
    polygons = QgsVectorLayer(str(tmp_path / "polygons.gpkg"), "p", "ogr")
    assert sorted(c.value for c in ids.renderer().classes()) == sorted(f["id"] for f in polygons.getFeatures())
    assert ids.dataProvider().sample(_centre(RED_SQUARE), 1)[0] in {f["id"] for f in polygons.getFeatures()
                                                                     if f["label"] == "red roof"}
    without = processing.run("segearth:segment_by_prompt", {"INPUT": str(scene), "PROMPT": PROMPT,
                                                              "OUTPUT": str(tmp_path / "plain.gpkg")})
    assert set(without) == {"OUTPUT"}  # no raster asked for, none written
    for extra, message in (({"REGULARIZE": True, "SMOOTH": True}, "Regularize and Smooth exclude each other; "
                                                                   "choose one."),
                           ({"MIN_COVERAGE": 0.3}, "Min coverage acts only with Strategy zoom or auto: choose one of "
                                                   "them or reset Min coverage.")):
        with pytest.raises(QgsProcessingException) as raised:
            processing.run("segearth:segment_by_prompt", {"INPUT": str(scene), "PROMPT": PROMPT,
                                                          "OUTPUT": str(tmp_path / "no.gpkg"), **extra})
        assert str(raised.value).splitlines() == ["Unable to execute algorithm", message]  # checked before it runs
    assert not (tmp_path / "no.gpkg").exists()


def test_segment_many_rasters_takes_the_new_run_options(plugin, project, tmp_path):
    import processing

    raster = write_geotiff(tmp_path / "scene.tif", 512)
    out = tmp_path / "job"
    processing.run("segearth:segment_many_rasters", {"INPUTS": [str(raster)], "PROMPTS": PROMPT, "STRATEGY": 1,
                                                     "REGULARIZE": True, "OUTPUT_DIR": str(out)})
    job = json.loads((out / "job.json").read_text())["job"]
    assert job["engine"]["strategy"] == "zoom"
    merged = QgsVectorLayer(f"{out / 'merged.gpkg'}|layername=segments", "m", "ogr")
    assert {f["label"] for f in merged.getFeatures()} == set(LABELS)
    assert {"source", "model"} <= set(merged.fields().names())


# -- SAM3's load options --------------------------------------------------------------------------
def test_sam3_settings_round_trip_and_restart_the_engine_with_their_flags(plugin, engine_settings):
    from segearth_qgis.core.engine_client import EngineError, EngineSettings
    from segearth_qgis.settings_dialog import SettingsDialog, load_engine_settings

    plain = SettingsDialog(None, engine_settings)
    assert plain.sam3_output_combo.currentText() == "default" and plain.presence_spin.text() == "default"
    assert plain.engine_settings() == engine_settings  # untouched: unset
    old = plugin.client()
    old.start()
    dialog = SettingsDialog(None, load_engine_settings())
    dialog.model_edit.setText("demo")
    dialog.sam3_output_combo.setCurrentText("semantic")
    dialog.presence_spin.setValue(0.3)
    chosen = dialog.engine_settings()
    assert (chosen.sam3_output, chosen.presence_threshold) == ("semantic", 0.3)
    plugin.apply_settings(chosen)
    assert load_engine_settings() == chosen and SettingsDialog(None, chosen).engine_settings() == chosen
    client = plugin.client()
    assert client is not old and not old.is_running()  # changed settings: a new engine
    argv = client.settings.argv()
    assert argv[argv.index("--sam3-output") + 1] == "semantic" and argv[argv.index("--presence-threshold") + 1] == "0.3"
    with pytest.raises(EngineError) as raised:  # the demo is no SAM3: refused in one line
        client.start(timeout=120)
    assert "does not take" in str(raised.value) and "\n" not in str(raised.value)
    plugin.apply_settings(EngineSettings(command=engine_settings.command, model=engine_settings.model, device="cpu"))
