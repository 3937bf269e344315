"""The SegEarth plugin inside a real QGIS, against a real ``segearth-geo worker``."""

from __future__ import annotations

import os
import re
import shutil
import signal
import sys
import time
import zipfile
from pathlib import Path

import pytest
from engine_models import COLOUR_MODEL, LABELS, PROMPT, SLOW_MODEL, TEST_MODEL
from qgis.core import (
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorLayer,
)
from qgis.gui import QgsDockWidget
from synthetic_scene import BLUE_SQUARE, CRS, RED_SQUARE, pixel_box, write_geotiff

REPO = Path(__file__).resolve().parents[2]


# -- helpers ------------------------------------------------------------------------------------
def write_scene(path: Path, size: int = 512) -> Path:
    return write_geotiff(path, size)


def add_raster(path: Path | str, name: str = "scene") -> QgsRasterLayer:
    layer = QgsRasterLayer(str(path), name, "gdal")
    assert layer.isValid(), path
    QgsProject.instance().addMapLayer(layer)
    return layer


def wait_for(predicate, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        QgsApplication.processEvents()
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.02)


def run_dock(dock, timeout: float = 120.0):
    task = dock.run()
    assert task is not None, dock.last_error
    wait_for(lambda: dock.task is None, timeout)
    return task


def segearth_layers() -> list[QgsVectorLayer]:
    group = QgsProject.instance().layerTreeRoot().findGroup("SegEarth")
    return [] if group is None else [node.layer() for node in group.findLayers()]


def features_by_label(layer: QgsVectorLayer) -> dict[str, list]:
    out: dict[str, list] = {}
    for feature in layer.getFeatures():
        out.setdefault(feature["label"], []).append(feature.geometry())
    return out


def assert_box(geometry, box, tol=1.01) -> None:
    bb = geometry.boundingBox()
    got = (bb.xMinimum(), bb.yMinimum(), bb.xMaximum(), bb.yMaximum())
    assert all(abs(a - b) <= tol for a, b in zip(got, box, strict=True)), (got, box)


def configure(dock, layer, scope: str = "visible") -> None:
    dock.layer_combo.setLayer(layer)
    dock.scope_combo.setCurrentIndex(dock.scope_combo.findData(scope))
    dock.prompt_combo.setCurrentText(PROMPT)


@pytest.fixture()
def scene(tmp_path) -> Path:
    return write_scene(tmp_path / "scene.tif")


# -- tests --------------------------------------------------------------------------------------
def test_plugin_loads_through_qgis_utils_and_unloads_cleanly(iface, engine_settings, project):
    import qgis.utils

    plugin_dir = str(REPO / "qgis_plugin")
    if plugin_dir not in qgis.utils.plugin_paths:
        qgis.utils.plugin_paths.append(plugin_dir)
    qgis.utils.updateAvailablePlugins()
    assert "segearth_qgis" in qgis.utils.available_plugins
    assert qgis.utils.pluginMetadata("segearth_qgis", "hasProcessingProvider") == "yes"
    assert qgis.utils.loadPlugin("segearth_qgis") and qgis.utils.startPlugin("segearth_qgis")
    plugin = qgis.utils.plugins["segearth_qgis"]
    registry = QgsApplication.processingRegistry()
    assert registry.providerById("segearth") is not None
    assert registry.algorithmById("segearth:segment_by_prompt") is not None
    assert iface.window.findChild(type(plugin.dock), "SegEarthDock") is plugin.dock
    assert len(iface.toolbar.actions()) == 1 and "&SegEarth" in iface.plugin_menus
    assert "torch" not in sys.modules and "segearth_geo" not in sys.modules
    client = plugin.client()
    ready = client.start()
    assert ready["type"] == "ready" and ready["model"] == COLOUR_MODEL
    pid = client.pid
    assert qgis.utils.unloadPlugin("segearth_qgis")
    assert registry.providerById("segearth") is None
    assert iface.toolbar.actions() == [] and iface.plugin_menus == {}
    QgsApplication.processEvents()
    assert iface.window.findChild(QgsDockWidget, "SegEarthDock") is None
    assert not _alive(pid), "unload() must stop the engine worker"
    assert "segearth_qgis" not in sys.modules


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie that was not reaped yet counts as stopped.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split()[2] != "Z"


def test_dock_runs_prompt_on_visible_extent_and_adds_categorised_layer(dock, iface, scene, project, tmp_path):
    layer = add_raster(scene)
    iface.mapCanvas().setExtent(layer.extent())
    configure(dock, layer)
    task = run_dock(dock)
    assert dock.last_error is None and task.result is not None
    [result_layer] = segearth_layers()
    assert result_layer.crs().authid() == CRS
    assert Path(task.result.output).parent == tmp_path  # next to the saved project
    by_label = features_by_label(result_layer)
    assert sorted(by_label) == sorted(LABELS)
    assert_box(by_label["red roof"][0], pixel_box(RED_SQUARE))
    assert_box(by_label["pool"][0], pixel_box(BLUE_SQUARE))
    renderer = result_layer.renderer()
    assert renderer.type() == "categorizedSymbol" and renderer.classAttribute() == "label"
    colours = {c.value(): c.symbol().color().name() for c in renderer.categories()}
    assert set(colours) == set(LABELS) and len(set(colours.values())) == len(LABELS)
    assert dock.answers_view.toPlainText() == "Sure, red roof and pool."  # the model's answer without markup
    assert dock.progress_bar.value() == 100
    assert PROMPT in dock.history()
    assert "Engine: ready" in dock.status_label.text()


def test_canvas_in_another_crs_gives_correctly_placed_polygons(dock, iface, scene, project):
    layer = add_raster(scene)
    canvas = iface.mapCanvas()
    canvas.setDestinationCrs(QgsCoordinateReferenceSystem("EPSG:3857"))
    # Show only the neighbourhood of the red square (in Web Mercator).
    minx, miny, maxx, maxy = pixel_box((60, 220, 20, 180))
    to_canvas = QgsCoordinateTransform(layer.crs(), canvas.mapSettings().destinationCrs(), project)
    canvas.setExtent(to_canvas.transformBoundingBox(QgsRectangle(minx, miny, maxx, maxy)))
    configure(dock, layer)
    run_dock(dock)
    assert dock.last_error is None
    [result_layer] = segearth_layers()
    assert result_layer.crs().authid() == CRS  # the raster's CRS, not the canvas'
    by_label = features_by_label(result_layer)
    assert list(by_label) == ["red roof"]
    assert_box(by_label["red roof"][0], pixel_box(RED_SQUARE))


def test_drawn_rectangle_and_non_file_layer_are_rendered_to_a_temporary_geotiff(dock, iface, scene, project,
                                                                                 tmp_path):
    import tempfile

    archive = tmp_path / "scene.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(scene, "scene.tif")
    layer = add_raster(f"/vsizip/{archive}/scene.tif", "zipped")  # GDAL layer without a local file
    before = set(os.listdir(tempfile.gettempdir()))
    configure(dock, layer, "drawn")
    minx, miny, maxx, maxy = pixel_box((280, 400, 300, 440))  # around the pool only
    dock.set_drawn_rect(QgsRectangle(minx, miny, maxx, maxy), QgsCoordinateReferenceSystem(CRS))
    task = run_dock(dock)
    assert dock.last_error is None
    assert Path(task.params.raster).name.startswith("segearth_render_")
    assert not os.path.exists(task.params.raster)  # temporary render removed after the run
    assert not [n for n in set(os.listdir(tempfile.gettempdir())) - before if n.startswith("segearth_render_")]
    by_label = features_by_label(segearth_layers()[0])
    assert list(by_label) == ["pool"]
    assert_box(by_label["pool"][0], pixel_box(BLUE_SQUARE), tol=1.5)


def test_whole_layer_run_on_unbounded_layer_is_refused(dock, project):
    xyz = QgsRasterLayer("type=xyz&url=http://127.0.0.1:9/%7Bz%7D/%7Bx%7D/%7By%7D.png&zmax=19&zmin=0",
                         "tiles", "wms")
    assert xyz.isValid()
    QgsProject.instance().addMapLayer(xyz)
    configure(dock, xyz, "layer")
    assert dock.run() is None
    assert "no finite extent" in dock.last_error
    assert segearth_layers() == []


def test_processing_run_segments_a_raster(plugin, scene, project, tmp_path):
    import processing

    out = tmp_path / "processing.gpkg"
    result = processing.run("segearth:segment_by_prompt", {
        "INPUT": str(scene), "PROMPT": PROMPT, "GSD": 0, "THRESHOLD": 0.5, "MIN_AREA": 100,
        "OUTPUT": str(out),
    })
    layer = QgsVectorLayer(result["OUTPUT"], "out", "ogr")
    assert layer.isValid() and layer.crs().authid() == CRS
    by_label = features_by_label(layer)
    assert sorted(by_label) == sorted(LABELS)
    assert_box(by_label["red roof"][0], pixel_box(RED_SQUARE))


def test_cancel_mid_run_leaves_no_layer_and_no_stray_files(dock, iface, project, tmp_path, monkeypatch):
    monkeypatch.setenv("SEGEARTH_TEST_DELAY", "0.5")
    big = write_scene(tmp_path / "big.tif", size=1024)
    layer = add_raster(big)
    iface.mapCanvas().setExtent(layer.extent())
    _set_model(SLOW_MODEL)
    configure(dock, layer)
    before = sorted(os.listdir(tmp_path))
    task = dock.run()
    assert task is not None
    wait_for(lambda: task.chips_done > 0 or dock.task is None, 120)
    assert dock.task is not None, "the run finished before it could be cancelled"
    dock.cancel()
    wait_for(lambda: dock.task is None, 60)
    assert task.was_cancelled and task.result is None and task.error is None
    assert segearth_layers() == []
    assert sorted(os.listdir(tmp_path)) == before  # no GeoPackage, no temporary file


def test_killing_the_worker_mid_run_reports_an_error_and_next_run_works(dock, iface, scene, project, tmp_path,
                                                                        monkeypatch):
    monkeypatch.setenv("SEGEARTH_TEST_DELAY", "0.5")
    big = write_scene(tmp_path / "big.tif", size=1024)
    layer = add_raster(big)
    iface.mapCanvas().setExtent(layer.extent())
    _set_model(SLOW_MODEL)
    configure(dock, layer)
    task = dock.run()
    wait_for(lambda: task.chips_done > 0 or dock.task is None, 120)
    pid = dock.client_factory().pid
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: dock.task is None, 60)
    assert task.result is None and "stopped unexpectedly" in (task.error or "")
    assert "stopped unexpectedly" in dock.last_error
    assert "stopped unexpectedly" in iface.messageBar().currentItem().text()
    assert segearth_layers() == []
    monkeypatch.setenv("SEGEARTH_TEST_DELAY", "0")
    task = run_dock(dock)  # the worker is restarted on demand
    assert task.result is not None and dock.client_factory().pid != pid
    assert len(segearth_layers()) == 1


def _set_model(model: str) -> None:
    from segearth_qgis.core.engine_client import EngineSettings
    from segearth_qgis.settings_dialog import load_engine_settings, save_engine_settings

    current = load_engine_settings()
    save_engine_settings(EngineSettings(command=current.command, model=model, device=current.device))


def test_screenshot_under_xvfb_shows_dock_and_result(qgis_app, engine_settings, tmp_path):
    import json
    import shutil
    import subprocess

    import numpy as np
    from qgis.PyQt.QtGui import QImage
    from segearth_qgis.core.label_colours import label_colour

    xvfb_run = shutil.which("xvfb-run")
    if xvfb_run is None:
        if os.environ.get("CI"):
            pytest.fail("xvfb-run is missing: apt-get install -y xvfb")
        pytest.skip("xvfb-run is not installed")
    out = REPO / "test-artifacts" / "qgis_segearth_dock.png"
    out.unlink(missing_ok=True)
    env = {**os.environ, "QT_QPA_PLATFORM": "xcb", "SEGEARTH_ENGINE": engine_settings.command}
    proc = subprocess.run([xvfb_run, "-a", sys.executable, str(Path(__file__).with_name("screenshot.py")), str(out),
                           str(tmp_path)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["platform"] == "xcb" and report["labels"] == sorted(LABELS)
    assert report["gsd"] == "GSD: 1 m/px (the layer's own)" and report["notice"] == ""  # the colour model: no notice
    image = QImage(str(out)).convertToFormat(QImage.Format.Format_RGB888)
    assert (image.width(), image.height()) == (1200, 760)
    pixels = np.frombuffer(image.constBits().asstring(image.sizeInBytes()), np.uint8)
    pixels = pixels.reshape(image.height(), image.bytesPerLine())[:, : image.width() * 3].reshape(
        image.height(), image.width(), 3)
    for label in LABELS:  # each label's outline colour is on screen
        rgb = np.array(label_colour(label))
        assert (np.abs(pixels.astype(int) - rgb).sum(axis=2) < 30).sum() > 100, label


def test_plugin_zip_installs_into_a_fresh_profile_and_loads(qgis_app, engine_settings, tmp_path):
    import subprocess

    sys.path.insert(0, str(REPO / "qgis_plugin"))
    from build_zip import MAX_BYTES, build_zip

    archive = build_zip(tmp_path / "segearth_qgis.zip")
    assert archive.stat().st_size < MAX_BYTES
    with zipfile.ZipFile(archive) as zf:
        names = zf.namelist()
        assert {n.split("/")[0] for n in names} == {"segearth_qgis"}
        assert {"segearth_qgis/metadata.txt", "segearth_qgis/icon.png", "segearth_qgis/__init__.py"} <= set(names)
        assert not [n for n in names if n.endswith((".pyc", ".so", ".dll", ".pt", ".pth", ".bin", ".safetensors"))]
        assert zf.read("segearth_qgis/metadata.txt") == (REPO / "metadata.txt").read_bytes()
        plugins_dir = tmp_path / "profiles" / "default" / "python" / "plugins"
        zf.extractall(plugins_dir)
    engine_version = re.search(r'__version__ = "([^"]+)"', (REPO / "segearth_geo" / "_version.py").read_text())[1]
    assert f"version={engine_version}\n" in (REPO / "metadata.txt").read_text()  # plugin and engine in step
    script = f"""
import sys, qgis.utils
from qgis.testing import start_app
app = start_app()
sys.path.insert(0, {str(Path(__file__).parent)!r})
from qgis_interface import HeadlessInterface
qgis.utils.iface = HeadlessInterface()
qgis.utils.plugin_paths[:] = [{str(plugins_dir)!r}]
sys.path.insert(0, {str(plugins_dir)!r})
qgis.utils.updateAvailablePlugins()
assert qgis.utils.available_plugins == ["segearth_qgis"], qgis.utils.available_plugins
assert qgis.utils.pluginMetadata("segearth_qgis", "name") == "SegEarth"
assert qgis.utils.pluginMetadata("segearth_qgis", "qgisMinimumVersion") == "3.22"
assert qgis.utils.loadPlugin("segearth_qgis") and qgis.utils.startPlugin("segearth_qgis")
module = sys.modules["segearth_qgis"]
assert module.__file__.startswith({str(plugins_dir)!r}), module.__file__
assert qgis.utils.unloadPlugin("segearth_qgis")
print("LOADED-FROM-ZIP")
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert proc.returncode == 0 and "LOADED-FROM-ZIP" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_start_engine_button_shows_ready_device(dock, engine_settings):
    dock.start_button.click()
    wait_for(lambda: dock.start_task is None, 120)
    assert dock.last_error is None
    assert dock.status_label.text().startswith("Engine: ready on ")
    assert dock.client_factory().ping()["type"] == "pong"


def test_bad_engine_command_is_reported_not_raised(dock, scene, project):
    from segearth_qgis.core.engine_client import EngineSettings

    dock.client_factory().stop()
    from segearth_qgis.settings_dialog import save_engine_settings

    save_engine_settings(EngineSettings(command="/nonexistent/segearth-geo", model=COLOUR_MODEL, device="cpu"))
    layer = add_raster(scene)
    configure(dock, layer, "layer")
    assert dock.run() is None  # refused on the main thread, before any task
    assert "not found" in dock.last_error and "pip install segearth-geo" in dock.last_error
    assert segearth_layers() == [] and dock.run_button.isEnabled()


# -- end to end on a sample_tiles scene with TEST_MODEL (the demo model once it is bundled) ---------
SAMPLE = REPO / "sample_tiles" / "synthearth_airport.tif"
SAMPLE_PROMPT = "all the airplanes"  # the phrasing SynthEarth (the demo's training data) uses
needs_real_model = pytest.mark.skipif(
    TEST_MODEL == COLOUR_MODEL or not SAMPLE.is_file(),
    reason="needs the bundled demo model (or SEGEARTH_TEST_MODEL) and sample_tiles/synthearth_airport.tif")


@pytest.fixture
def sample(tmp_path) -> Path:
    """A copy of the sample scene and its truth: QGIS writes statistics (.aux.xml) next to rasters it opens."""
    for name in (SAMPLE.name, SAMPLE.stem + "_truth.gpkg"):
        shutil.copy(SAMPLE.with_name(name), tmp_path / name)
    return tmp_path / SAMPLE.name


def _sample_area_and_truth(sample: Path):
    """A small area around three airplanes of the scene's truth, and the truth geometries (scene CRS)."""
    from qgis.core import QgsFeatureRequest, QgsGeometry

    truth = QgsVectorLayer(f"{sample.with_name(sample.stem + '_truth.gpkg')}|layername=objects", "truth", "ogr")
    assert truth.isValid()
    planes = [f.geometry() for f in truth.getFeatures(QgsFeatureRequest().setFilterExpression("\"label\" = 'airplane'"))]
    assert planes, "the airport scene has airplanes in its truth"
    area = QgsGeometry.unaryUnion(planes[:3]).boundingBox().buffered(30.0)
    return area, QgsGeometry.unaryUnion(planes), truth.crs()


def _assert_overlaps_truth(layer: QgsVectorLayer, truth_union, truth_crs) -> None:
    from qgis.core import QgsGeometry

    assert layer.crs() == truth_crs  # the raster's CRS
    labels = {str(f["label"]) for f in layer.getFeatures()}
    assert any("airplane" in label for label in labels), labels
    found = QgsGeometry.unaryUnion([f.geometry() for f in layer.getFeatures()])
    assert found.intersection(truth_union).area() > 0.0, "no predicted polygon overlaps the truth"


@needs_real_model
def test_dock_on_sample_scene_with_model_overlaps_truth(dock, iface, project, sample):
    area, truth_union, truth_crs = _sample_area_and_truth(sample)
    _set_model(TEST_MODEL)
    layer = add_raster(sample, "airport")
    canvas = iface.mapCanvas()
    canvas.setDestinationCrs(QgsCoordinateReferenceSystem("EPSG:3857"))
    to_canvas = QgsCoordinateTransform(layer.crs(), canvas.mapSettings().destinationCrs(), project)
    dock.layer_combo.setLayer(layer)
    dock.prompt_combo.setCurrentText(SAMPLE_PROMPT)
    dock.set_drawn_rect(to_canvas.transformBoundingBox(area))
    run_dock(dock, timeout=600)
    assert dock.last_error is None
    [result_layer] = segearth_layers()
    _assert_overlaps_truth(result_layer, truth_union, truth_crs)


@needs_real_model
def test_processing_on_sample_scene_with_model_overlaps_truth(plugin, project, tmp_path, sample):
    import processing

    area, truth_union, truth_crs = _sample_area_and_truth(sample)
    _set_model(TEST_MODEL)
    extent = f"{area.xMinimum()},{area.xMaximum()},{area.yMinimum()},{area.yMaximum()} [{truth_crs.authid()}]"
    result = processing.run("segearth:segment_by_prompt", {
        "INPUT": str(sample), "EXTENT": extent, "PROMPT": SAMPLE_PROMPT, "OUTPUT": str(tmp_path / "p.gpkg")})
    _assert_overlaps_truth(QgsVectorLayer(result["OUTPUT"], "out", "ogr"), truth_union, truth_crs)


def test_settings_dialog_round_trip_restarts_the_engine_with_new_settings(plugin, engine_settings):
    from segearth_qgis.settings_dialog import SettingsDialog, load_engine_settings

    old = plugin.client()
    old.start()
    old_pid = old.pid
    dialog = SettingsDialog(None, load_engine_settings())
    assert dialog.command_edit.text() == engine_settings.command
    dialog.model_edit.setText(SLOW_MODEL)
    dialog.device_combo.setCurrentText("cpu")
    plugin.apply_settings(dialog.engine_settings())
    assert load_engine_settings().model == SLOW_MODEL
    new = plugin.client()
    assert new is not old and not _alive(old_pid)
    assert new.start()["model"] == SLOW_MODEL


def test_draw_button_uses_an_extent_map_tool_and_switches_scope(dock, iface):
    canvas = iface.mapCanvas()
    dock.draw_button.click()
    assert canvas.mapTool() is dock.extent_tool
    rect = QgsRectangle(390010.0, 5819500.0, 390200.0, 5819900.0)
    dock.extent_tool.extentChanged.emit(rect)
    assert dock.scope_combo.currentData() == "drawn"
    assert dock.drawn_rect == rect and dock.drawn_crs.authid() == CRS
    assert canvas.mapTool() is not dock.extent_tool  # the tool is released after one rectangle


def test_engine_that_dies_at_start_up_is_reported(dock, scene, project):
    from segearth_qgis.core.engine_client import EngineSettings
    from segearth_qgis.settings_dialog import save_engine_settings

    save_engine_settings(EngineSettings(command="/bin/false", model=COLOUR_MODEL, device="cpu"))
    layer = add_raster(scene)
    configure(dock, layer, "layer")
    task = run_dock(dock)
    assert task.result is None and "failed to start" in dock.last_error
    assert segearth_layers() == [] and dock.run_button.isEnabled()
