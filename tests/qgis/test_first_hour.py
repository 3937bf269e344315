"""Issue 21 in QGIS, a GIS analyst's first hour, against the real worker: the demo says it is synthetic, a failed start
says so, errors are one short line (in full in the log), answers come without markup, labels the prompt does not
name are pointed out, Processing outputs are coloured as the dock's, and the GSD the model will see is shown before
a run — web layers rendered at their own tile level, whatever the view's zoom."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import engine_models
import pytest
from conftest import engine_python
from engine_models import COLOUR_MODEL, LABELS, OFFLINE_MESSAGE, OFFLINE_MODEL, PROMPT
from qgis.core import (
    Qgis,
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
)
from synthetic_scene import BLUE_SQUARE, CRS, RED_SQUARE, pixel_box, write_geotiff
from test_plugin import add_raster, configure, features_by_label, run_dock, segearth_layers, wait_for

NOTICE = "synthetic demo — not for real imagery"
FAILED = "Engine: failed to start — see the SegEarth log"
WARNING = "#b35900"


def use_model(model: str) -> None:
    """Keep the configured engine command; change the model (the plugin restarts the engine on its next use)."""
    from segearth_qgis.core.engine_client import EngineSettings
    from segearth_qgis.settings_dialog import load_engine_settings, save_engine_settings

    save_engine_settings(EngineSettings(command=load_engine_settings().command, model=model, device="cpu"))


@pytest.fixture()
def log():
    """``(tag, level, message)`` of every QGIS log message while the test runs."""
    messages: list[tuple[str, object, str]] = []

    def keep(message, tag, level) -> None:
        messages.append((tag, level, message))

    QgsApplication.messageLog().messageReceived.connect(keep)
    yield messages
    QgsApplication.messageLog().messageReceived.disconnect(keep)


def start(dock) -> None:
    dock.start_button.click()
    wait_for(lambda: dock.start_task is None, 180)


# -- honest status --------------------------------------------------------------------------------
def test_the_demo_says_it_is_synthetic_and_warns_far_from_its_gsd(dock, iface, project, tmp_path):
    use_model("demo")
    dock.show_status()
    assert dock.status_label.text() == "Engine: not started (starts on first run)"
    assert dock.notice_label.isVisibleTo(dock) and dock.notice_label.text() == NOTICE  # said before it runs
    layer = add_raster(write_geotiff(tmp_path / "coarse.tif", 128, pixel=5.0))  # 5 m/px; the demo knows 0.3–2 m
    configure(dock, layer, "layer")
    assert dock.gsd_label.text() == ("GSD: 5 m/px (the layer's own) · model: 0.3–2 m/px — far coarser than the "
                                     "model was trained on: set a GSD in its range")
    assert WARNING in dock.gsd_label.styleSheet()
    dock.run_options.set_value("gsd", 0.5)
    assert dock.gsd_label.text() == "GSD: 0.5 m/px (as set) · model: 0.3–2 m/px" and dock.gsd_label.styleSheet() == ""
    dock.run_options.set_value("gsd", 0.0)
    task = run_dock(dock, timeout=300)
    assert task.result is not None and dock.last_error is None
    assert dock.status_label.text().startswith("Engine: ready on cpu") and dock.status_label.text().endswith(
        ", model demo")
    assert dock.notice_label.isVisibleTo(dock) and dock.notice_label.text() == NOTICE == task.result.notice
    assert dock.notes_label.isVisibleTo(dock) and "far coarser than what demo was trained on" in dock.notes_label.text()
    bar = iface.messageBar().currentItem()
    assert bar.level() == Qgis.MessageLevel.Warning and "read the notes in the SegEarth panel" in bar.text()


def test_a_failed_start_says_so_until_the_next_successful_start(dock, project, tmp_path, log):
    later = tmp_path / "later.py"  # the model's file appears only after the first tries
    use_model(f"{later}:colour")
    start(dock)
    assert dock.status_label.text() == FAILED and "later.py" in dock.status_label.toolTip()
    assert any(tag == "SegEarth" and "later.py" in text and level == Qgis.MessageLevel.Critical
               for tag, level, text in log)
    configure(dock, add_raster(write_geotiff(tmp_path / "scene.tif", 128)), "layer")
    task = run_dock(dock)  # the run tries to start the engine again, and fails again
    assert task.result is None and "failed to start" in dock.last_error
    assert dock.status_label.text() == FAILED
    shutil.copy(engine_models.__file__, later)
    start(dock)
    assert dock.status_label.text().startswith("Engine: ready on cpu") and dock.status_label.toolTip() == ""
    assert not dock.notice_label.isVisibleTo(dock)  # a real model has no notice


def test_a_missing_engine_program_is_a_failed_start_too(dock, project, tmp_path):
    from segearth_qgis.core.engine_client import EngineSettings
    from segearth_qgis.settings_dialog import save_engine_settings

    save_engine_settings(EngineSettings(command=str(tmp_path / "nowhere" / "segearth-geo"), model=COLOUR_MODEL))
    configure(dock, add_raster(write_geotiff(tmp_path / "scene.tif", 128)), "layer")
    assert dock.run() is None and "not found" in dock.last_error
    assert dock.status_label.text() == FAILED


# -- short errors ---------------------------------------------------------------------------------
def test_long_engine_errors_are_one_short_line_with_the_details_in_the_log(dock, iface, project, log):
    use_model(OFFLINE_MODEL)
    start(dock)
    assert iface.messageBar().currentItem().text() == (
        "The engine failed to start: cannot fetch 'facebook/sam3' from the Hugging Face Hub and there is no local "
        "folder of that name; cache: /root/.cache/huggingface/hub — details in the SegEarth log panel.")
    assert ("SegEarth", Qgis.MessageLevel.Critical, f"the engine failed to start: {OFFLINE_MESSAGE}") in log
    assert dock.status_label.text() == FAILED


def test_processing_errors_are_one_short_line_with_the_details_in_the_log(plugin, project, tmp_path, log):
    import processing

    use_model(OFFLINE_MODEL)
    with pytest.raises(QgsProcessingException) as raised:
        processing.run("segearth:segment_by_prompt", {"INPUT": str(write_geotiff(tmp_path / "s.tif", 128)),
                                                      "PROMPT": PROMPT, "OUTPUT": str(tmp_path / "out.gpkg")})
    message = str(raised.value)
    assert message.startswith("The engine failed to start: cannot fetch 'facebook/sam3' from the Hugging Face Hub")
    assert message.endswith("details in the SegEarth log panel.") and len(message) < 240
    assert ("SegEarth", Qgis.MessageLevel.Critical, f"the engine failed to start: {OFFLINE_MESSAGE}") in log


# -- answers and labels ---------------------------------------------------------------------------
def test_answers_without_markup_and_a_note_when_the_labels_are_not_the_prompt(dock, iface, project, tmp_path):
    layer = add_raster(write_geotiff(tmp_path / "scene.tif"))
    configure(dock, layer, "layer")
    dock.prompt_combo.setCurrentText("all the airplanes")
    task = run_dock(dock)
    assert sorted(task.result.polygons) == sorted(LABELS)
    assert dock.answers_view.toPlainText() == "Sure, red roof and pool."
    assert dock.notes_label.isVisibleTo(dock)
    assert "The model found “pool”, “red roof”" in dock.notes_label.text()
    assert "“all the airplanes”" in dock.notes_label.text()
    assert iface.messageBar().currentItem().level() == Qgis.MessageLevel.Warning
    dock.prompt_combo.setCurrentText(PROMPT)  # the labels are the prompt's words: no note
    run_dock(dock)
    assert not dock.notes_label.isVisibleTo(dock) and dock.notes_label.text() == ""
    assert iface.messageBar().currentItem().level() == Qgis.MessageLevel.Success


# -- styling --------------------------------------------------------------------------------------
def _colours(layer) -> dict[str, tuple]:
    renderer = layer.renderer()
    assert renderer.type() == "categorizedSymbol" and renderer.classAttribute() == "label"
    return {c.value(): c.symbol().color().getRgb() for c in renderer.categories()}


def test_processing_outputs_are_coloured_by_label_like_the_docks(dock, iface, project, tmp_path):
    import processing
    from segearth_qgis.core.label_colours import label_colour

    scene = write_geotiff(tmp_path / "scene.tif")
    configure(dock, add_raster(scene), "layer")
    run_dock(dock)
    [docked] = segearth_layers()
    expected = {label: (*label_colour(label), 110) for label in LABELS}  # the library's colours, translucent fill
    assert _colours(docked) == expected
    feedback = Recorder()
    result = processing.runAndLoadResults("segearth:segment_by_prompt", {
        "INPUT": str(scene), "PROMPT": "all the airplanes", "OUTPUT": str(tmp_path / "processing.gpkg")},
        feedback=feedback)
    [loaded] = [layer for layer in project.mapLayers().values() if layer.source().startswith(result["OUTPUT"])]
    assert _colours(loaded) == expected
    assert "Answer: Sure, red roof and pool." in feedback.infos  # without markup, as in the dock
    assert any("The model found “pool”, “red roof”" in warning for warning in feedback.warnings)


class Recorder(QgsProcessingFeedback):
    """A Processing feedback that keeps what the algorithm says."""

    def __init__(self) -> None:
        super().__init__()
        self.infos: list[str] = []
        self.warnings: list[str] = []

    def pushInfo(self, info: str) -> None:  # noqa: N802 - QGIS API
        self.infos.append(info)

    def pushWarning(self, warning: str) -> None:  # noqa: N802 - QGIS API
        self.warnings.append(warning)


# -- run options ----------------------------------------------------------------------------------
def test_the_request_fields_come_from_the_run_options_widget(dock, iface, project, tmp_path):
    configure(dock, add_raster(write_geotiff(tmp_path / "scene.tif")), "layer")
    options = dock.run_options
    assert options.request_fields() == {"threshold": 0.5}  # unset options are left to the engine
    assert options.editors["gsd"].text() == "native" and options.editors["min_area"].text() == "none"
    options.set_value("min_area", 7000.0)  # the red square is 6400 m², the blue rectangle 8000 m²
    options.set_value("simplify", 0.5)
    task = run_dock(dock)
    request = task.params.to_request()
    assert {k: request[k] for k in ("threshold", "min_area", "simplify")} == {"threshold": 0.5, "min_area": 7000.0,
                                                                              "simplify": 0.5}
    assert "gsd" not in request
    assert task.result.polygons == {"pool": 1}  # the engine applied the minimum area


def test_one_line_adds_a_run_option_of_each_kind_to_the_dock_and_processing(qgis_app):
    from qgis.core import (
        QgsProcessingParameterBoolean,
        QgsProcessingParameterEnum,
        QgsProcessingParameterNumber,
        QgsProcessingParameterString,
    )
    from qgis.gui import QgsSpinBox
    from qgis.PyQt.QtWidgets import QCheckBox, QComboBox, QLineEdit
    from segearth_qgis.core.parameters import RUN_OPTIONS, RunOption
    from segearth_qgis.processing.run_parameters import run_parameter
    from segearth_qgis.run_options import RunOptionsWidget

    extra = (RunOption("overlap", "Overlap", "int", -1, minimum=-1, maximum=512, unset=-1, unset_text="default"),)
    widget = RunOptionsWidget(RUN_OPTIONS + extra)
    kinds = {name: type(editor) for name, editor in widget.editors.items()}
    assert kinds["strategy"] is QComboBox and kinds["smooth"] is QCheckBox and kinds["zoom_model"] is QLineEdit
    assert kinds["overlap"] is QgsSpinBox
    assert widget.request_fields() == {"threshold": 0.5}  # a choice, a flag, a text at their defaults: not sent
    changes = []
    widget.changed.connect(lambda: changes.append(1))
    for name, value in (("strategy", "zoom"), ("smooth", True), ("zoom_model", "zoomearth"), ("overlap", 64)):
        widget.set_value(name, value)
    assert len(changes) == 4
    assert widget.request_fields() == {"threshold": 0.5, "strategy": "zoom", "smooth": True,
                                       "zoom_model": "zoomearth", "overlap": 64}
    built = [run_parameter(o) for o in RUN_OPTIONS + extra]
    assert [p.name() for p in built] == ["GSD", "STRATEGY", "THRESHOLD", "MIN_AREA", "SIMPLIFY", "REGULARIZE",
                                         "SMOOTH", "REGULARIZE_IOU", "ZOOM_MODEL", "MIN_COVERAGE", "OVERLAP"]
    by_name = {p.name(): p for p in built}
    assert [type(by_name[n]) for n in ("STRATEGY", "SMOOTH", "ZOOM_MODEL", "OVERLAP")] == [
        QgsProcessingParameterEnum, QgsProcessingParameterBoolean, QgsProcessingParameterString,
        QgsProcessingParameterNumber]
    assert built[0].description() == "GSD (m/px, 0 = native)" and by_name["THRESHOLD"].defaultValue() == 0.5


# -- GSD before a run -----------------------------------------------------------------------------
def _engine_gsd(path: Path) -> float:
    """The engine's GSD of a whole raster (its own code, in its own Python): geometric mean of x and y."""
    code = ("import math, sys, rasterio; from rasterio.windows import Window; from segearth_geo.georef import "
            "native_gsd; ds = rasterio.open(sys.argv[1]); "
            "print(math.sqrt(math.prod(native_gsd(ds.crs, ds.transform, Window(0, 0, ds.width, ds.height)))))")
    done = subprocess.run([engine_python(), "-c", code, str(path)], capture_output=True, text=True, timeout=120,
                          check=True)
    return float(done.stdout)


def test_the_dock_shows_a_file_layers_gsd_in_metres_also_in_degrees(dock, iface, project, tmp_path):
    from segearth_qgis.core.known_models import format_gsd

    utm = add_raster(write_geotiff(tmp_path / "utm.tif", 128), "utm")
    configure(dock, utm, "layer")
    assert dock.gsd_label.text() == "GSD: 1 m/px (the layer's own)"  # the colour model's range is unknown
    geo_path = write_geotiff(tmp_path / "geo.tif", 128, crs="EPSG:4326", origin=(10.0, 50.0), pixel=1e-5)
    geo = add_raster(geo_path, "geo")
    configure(dock, geo, "visible")
    canvas = iface.mapCanvas()
    canvas.setDestinationCrs(QgsCoordinateReferenceSystem("EPSG:4326"))
    canvas.setExtent(QgsRectangle(20.0, 20.0, 20.1, 20.1))  # the view is elsewhere
    assert dock.gsd_label.text() == "GSD: – (The chosen area does not overlap layer 'geo')"
    canvas.setExtent(geo.extent())  # the label follows the view
    expected = _engine_gsd(geo_path)  # ≈ 0.72 m across, 1.11 m along the meridian
    assert 0.85 < expected < 0.92
    assert dock.gsd_label.text() == f"GSD: {format_gsd(expected)} (the layer's own)"
    dock.run_options.set_value("gsd", 2.0)
    assert dock.gsd_label.text() == "GSD: 2 m/px (as set)"


@pytest.fixture(scope="module")
def tiles(tmp_path_factory) -> str:
    """XYZ tiles (zoom 16–18, PNG) of the synthetic scene, as an XYZ layer source (``file://`` URLs)."""
    folder = tmp_path_factory.mktemp("xyz")
    scene = write_geotiff(folder / "scene.tif")
    subprocess.run([sys.executable, "-m", "osgeo_utils.gdal2tiles", "--xyz", "-z", "16-18", "-w", "none", "-q",
                    "--processes=1", str(scene), str(folder / "tiles")], check=True, timeout=300)
    url = (folder / "tiles").as_uri() + "/%7Bz%7D/%7Bx%7D/%7By%7D.png"
    return f"type=xyz&url={url}&zmin=16&zmax=18"


def _xyz(source: str) -> QgsRasterLayer:
    layer = QgsRasterLayer(source, "tiles", "wms")
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    return layer


def _view(canvas, box) -> None:
    """Show ``box`` (scene CRS) on the canvas (Web Mercator)."""
    to_canvas = QgsCoordinateTransform(QgsCoordinateReferenceSystem(CRS), canvas.mapSettings().destinationCrs(),
                                       QgsProject.instance())
    canvas.setExtent(to_canvas.transformBoundingBox(QgsRectangle(*box)))


def test_web_layers_render_at_their_own_tile_level_whatever_the_zoom(dock, iface, project, tiles):
    from osgeo import gdal
    from segearth_qgis.core.extent import build_parameters

    layer = _xyz(tiles)
    z18, z17 = layer.dataProvider().nativeResolutions()[:2]  # Web Mercator metres per pixel, finest first
    canvas = iface.mapCanvas()
    canvas.setDestinationCrs(QgsCoordinateReferenceSystem("EPSG:3857"))
    configure(dock, layer, "visible")
    pixels = {}
    for box in (pixel_box((0, 512, 0, 512)), pixel_box((200, 300, 200, 300))):  # zoomed out, then in
        _view(canvas, box)
        # 0.597 Web Mercator m at 52.5° N are 0.364 ground m; the colour model's range is unknown: the finest level
        assert dock.gsd_label.text() == "GSD: 0.364 m/px (the layer's own tile level)"
        params = build_parameters(layer, "visible", PROMPT, area=canvas.extent(),
                                  area_crs=canvas.mapSettings().destinationCrs(), model_gsd=None)
        try:
            geo = gdal.Open(params.raster).GetGeoTransform()
        finally:
            params.remove_temporary_files()
        pixels[box] = (geo[1], -geo[5])
        assert all(abs(p / z18 - 1) < 2e-3 for p in pixels[box]), (pixels, z18)
        assert "gsd" not in params.to_request()  # already rendered at it
    use_model("segearth-r1-rrsisd")  # trained on 0.5–30 m: zoom 18 (0.364 m) is finer, zoom 17 (0.727 m) is not
    dock.show_status()
    assert dock.gsd_label.text() == "GSD: 0.727 m/px (the layer's own tile level) · model: 0.5–30 m/px"
    params = build_parameters(layer, "visible", PROMPT, area=canvas.extent(),
                              area_crs=canvas.mapSettings().destinationCrs(), model_gsd=(0.5, 30.0))
    try:
        assert abs(gdal.Open(params.raster).GetGeoTransform()[1] / z17 - 1) < 2e-3
    finally:
        params.remove_temporary_files()


def test_a_web_layer_run_finds_the_objects_where_they_are(dock, iface, project, tiles):
    layer = _xyz(tiles)
    canvas = iface.mapCanvas()
    canvas.setDestinationCrs(QgsCoordinateReferenceSystem("EPSG:3857"))
    _view(canvas, pixel_box((40, 420, 40, 460)))
    configure(dock, layer, "visible")
    task = run_dock(dock)
    assert dock.last_error is None and abs(task.params.gsd - 0.364) < 1e-3
    [result] = segearth_layers()
    to_layer = QgsCoordinateTransform(QgsCoordinateReferenceSystem(CRS), result.crs(), project)
    by_label = features_by_label(result)
    assert sorted(by_label) == sorted(LABELS)
    for label, block in (("red roof", RED_SQUARE), ("pool", BLUE_SQUARE)):
        truth = to_layer.transformBoundingBox(QgsRectangle(*pixel_box(block)))
        found = by_label[label][0].boundingBox()
        assert abs(found.xMinimum() - truth.xMinimum()) < 2.5 and abs(found.yMaximum() - truth.yMaximum()) < 2.5


def test_an_area_too_large_for_the_gsd_asks_to_zoom_in(dock, iface, project, tiles):
    layer = _xyz(tiles)
    iface.mapCanvas().setDestinationCrs(QgsCoordinateReferenceSystem("EPSG:3857"))
    _view(iface.mapCanvas(), pixel_box((0, 512, 0, 512)))
    configure(dock, layer, "visible")
    dock.run_options.set_value("gsd", 0.05)
    assert dock.gsd_label.text() == "GSD: 0.05 m/px (as set)"
    assert dock.run() is None
    assert "too large to render at this GSD" in dock.last_error and "zoom in or set a coarser GSD" in dock.last_error
