"""Issue 22 in QGIS, against the real worker: the strategy (grid | zoom | auto) as a choice next to the GSD in the dock
and in both Processing algorithms, the zoom model and minimum coverage as advanced options that act only with a zoom
strategy, and what ran shown after the run (strategy and why, chips per level, the fraction looked at in full
resolution), checked against the ``level`` column of the GeoPackage's ``chips`` layer."""

from __future__ import annotations

from engine_models import LABELS, PROMPT
from qgis.core import QgsVectorLayer
from synthetic_scene import write_geotiff
from test_first_hour import Recorder
from test_plugin import add_raster, configure, features_by_label, run_dock


def _chips_per_level(output: str) -> list[int]:
    """Chips per level in the run's GeoPackage (``chips`` layer, ``level`` column), full resolution first."""
    chips = QgsVectorLayer(f"{output}|layername=chips", "chips", "ogr")
    levels = [int(f["level"]) for f in chips.getFeatures()]
    return [levels.count(level) for level in range(max(levels) + 1)]


def test_the_dock_runs_a_zoom_strategy_and_says_what_ran(dock, iface, project, tmp_path):
    from qgis.core import Qgis

    options = dock.run_options
    strategy, gsd = options.editors["strategy"], options.editors["gsd"]
    assert options.rows["gsd"].indexOf(strategy) >= 0 and options.rows["gsd"].indexOf(gsd) >= 0  # one row
    assert [strategy.itemText(i) for i in range(strategy.count())] == ["grid", "zoom", "auto"]
    assert strategy.currentText() == "grid" and not dock.zoom_label.isVisibleTo(dock)
    zoom_model, coverage = options.editors["zoom_model"], options.editors["min_coverage"]
    assert options.advanced.isAncestorOf(zoom_model) and options.advanced.isAncestorOf(coverage)
    assert not zoom_model.isEnabled() and not coverage.isEnabled()  # they act only with zoom or auto
    assert zoom_model.placeholderText() == "the segmenter itself" and coverage.text() == "none"
    options.set_value("strategy", "zoom")
    assert zoom_model.isEnabled() and coverage.isEnabled()
    options.set_value("min_coverage", 0.3)
    configure(dock, add_raster(write_geotiff(tmp_path / "scene.tif")), "layer")
    task = run_dock(dock)
    assert dock.last_error is None, dock.last_error
    request = task.params.to_request()
    assert (request["strategy"], request["min_coverage"]) == ("zoom", 0.3) and "zoom_model" not in request
    assert sorted(features_by_label(dock.last_layer)) == sorted(LABELS)  # the overview found both targets
    levels = _chips_per_level(task.result.output)
    assert len(levels) == 2 and levels[1] == 1 and 0 < levels[0] < 9  # one overview chip, fewer than 9 full-res
    fraction = task.result.zoom.full_res_fraction
    assert 0.3 <= fraction < 1  # at least the minimum coverage
    assert dock.zoom_label.isVisibleTo(dock)
    assert dock.zoom_label.text() == (f"Strategy: zoom — {task.result.zoom.reason}\n"
                                      f"Chips: {levels[0]} at full resolution, 1 on overview level 1; "
                                      f"{fraction:.0%} of the area looked at in full resolution")
    assert task.result.zoom.reason == "asked for (strategy zoom)"
    assert not dock.notes_label.isVisibleTo(dock)  # the summary is not repeated as a warning
    assert iface.messageBar().currentItem().level() == Qgis.MessageLevel.Success
    options.set_value("strategy", "auto")  # auto decides: on 9 chips of a general prompt, every chip
    task = run_dock(dock)
    assert dock.zoom_label.text().startswith("Strategy: grid — auto: ") and "\n" not in dock.zoom_label.text()
    assert _chips_per_level(task.result.output) == [9]
    options.set_value("strategy", "grid")
    assert not coverage.isEnabled()
    task = run_dock(dock)
    assert "strategy" not in task.params.to_request() and "min_coverage" not in task.params.to_request()
    assert task.result.zoom is None and not dock.zoom_label.isVisibleTo(dock)


def test_processing_takes_the_strategy_and_logs_what_ran(plugin, project, tmp_path):
    import processing

    scene = write_geotiff(tmp_path / "scene.tif")
    feedback = Recorder()
    result = processing.run("segearth:segment_by_prompt", {
        "INPUT": str(scene), "PROMPT": PROMPT, "STRATEGY": 1, "MIN_COVERAGE": 0.3,
        "OUTPUT": str(tmp_path / "zoom.gpkg")}, feedback=feedback)
    layer = QgsVectorLayer(result["OUTPUT"], "out", "ogr")
    assert sorted(features_by_label(layer)) == sorted(LABELS)
    assert "Strategy: zoom — asked for (strategy zoom)" in feedback.infos
    [chips] = [line for line in feedback.infos if line.startswith("Chips: ")]
    assert " at full resolution, 1 on overview level 1; " in chips and chips.endswith(
        "of the area looked at in full resolution")
    assert not any(w.startswith("zoom:") for w in feedback.warnings)
