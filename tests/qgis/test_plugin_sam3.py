"""The plugin (dock and Processing) with a SAM3 checkpoint folder as its model setting.

The tiny random SAM3 folder (``tests/sam3_fixtures.py``, facebook/sam3's layout) is written by the
engine's own Python, which has transformers; the plugin only passes the folder to the worker, whose model
registry picks the SAM3 backend from ``config.json``. Random weights score every instance below SAM3's
default detection threshold (0.5), so the runs are checked for completing with SAM3's per-chip answers
and a valid (empty) result, not for objects.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import engine_command
from qgis.core import QgsVectorLayer
from synthetic_scene import CRS, write_geotiff

REPO = Path(__file__).resolve().parents[2]
PROMPT = "red roofs, pools"


def _engine_python() -> str:
    """The interpreter of the ``segearth-geo`` console script (its shebang line)."""
    first = Path(engine_command()).read_text(encoding="utf-8", errors="replace").splitlines()[0]
    assert first.startswith("#!"), first
    return first[2:].strip()


@pytest.fixture(scope="module")
def sam3_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sam3") / "hub"
    code = "import sys; from tests.sam3_fixtures import write_tiny_sam3; write_tiny_sam3(sys.argv[1])"
    subprocess.run([_engine_python(), "-c", code, str(folder)], cwd=REPO, check=True, timeout=300)
    assert (folder / "config.json").is_file()
    return folder


@pytest.fixture()
def engine_settings(qgis_app, sam3_folder):
    """Overrides conftest's: the plugin fixture then starts the engine on the SAM3 folder."""
    from segearth_qgis.core.engine_client import EngineSettings
    from segearth_qgis.settings_dialog import save_engine_settings

    settings = EngineSettings(command=engine_command(), model=str(sam3_folder), device="cpu")
    save_engine_settings(settings)
    return settings


def test_processing_runs_sam3_from_a_folder(plugin, project, tmp_path):
    import processing

    scene = write_geotiff(tmp_path / "scene.tif", 200)
    out = tmp_path / "sam3.gpkg"
    result = processing.run("segearth:segment_by_prompt", {
        "INPUT": str(scene), "PROMPT": PROMPT, "GSD": 0, "THRESHOLD": 0.5, "OUTPUT": str(out),
    })
    layer = QgsVectorLayer(result["OUTPUT"], "out", "ogr")
    assert layer.isValid() and layer.crs().authid() == CRS
    assert {"label", "score"} <= set(layer.fields().names())
    assert layer.featureCount() == 0


def test_dock_runs_sam3_and_shows_its_answers(plugin, iface, project, tmp_path):
    from qgis.core import QgsCoordinateReferenceSystem, QgsProject, QgsRasterLayer
    from test_plugin import run_dock

    scene = write_geotiff(tmp_path / "scene.tif", 200)
    layer = QgsRasterLayer(str(scene), "scene", "gdal")
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    dock = plugin.dock
    dock.setVisible(True)
    iface.mapCanvas().setDestinationCrs(QgsCoordinateReferenceSystem(CRS))
    iface.mapCanvas().setExtent(layer.extent())
    dock.layer_combo.setLayer(layer)
    dock.scope_combo.setCurrentIndex(dock.scope_combo.findData("visible"))
    dock.prompt_combo.setCurrentText(PROMPT)
    task = run_dock(dock, timeout=300)
    assert dock.last_error is None and task.result is not None, dock.last_error
    answers = dock.answers_view.toPlainText()
    assert "red roofs: 0, pools: 0" in answers and "SAM3" in answers
