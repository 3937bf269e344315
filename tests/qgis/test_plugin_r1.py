"""The plugin (Processing and dock) with a SegEarth-R1 checkpoint folder in the released layout as its model.

The tiny random checkpoint (``tests/r1_fixtures.py``: fused ``query_key_value``, official ``config.json``, slow
tokenizer files) is written by the engine's own Python; the plugin only passes the folder to the worker, whose
model registry picks the SegEarth-R1 backend from ``config.json`` (``llava_phi``). With threshold 0 every pixel
belongs to the one target, so the result is one polygon over the scene labelled with the prompt's noun phrase.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import engine_command
from qgis.core import QgsVectorLayer
from synthetic_scene import CRS, write_geotiff

REPO = Path(__file__).resolve().parents[2]
PROMPT = "segment the red roofs next to the road"


def _engine_python() -> str:
    """The interpreter of the ``segearth-geo`` console script (its shebang line)."""
    first = Path(engine_command()).read_text(encoding="utf-8", errors="replace").splitlines()[0]
    assert first.startswith("#!"), first
    return first[2:].strip()


@pytest.fixture(scope="module")
def r1_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("r1") / "SegEarth-R1-tiny"
    code = ("import sys; sys.path.insert(0, 'tests'); from pathlib import Path; "
            "from r1_fixtures import tiny_r1_model, write_official_checkpoint; "
            "write_official_checkpoint(tiny_r1_model(seed=4), Path(sys.argv[1]))")
    subprocess.run([_engine_python(), "-c", code, str(folder)], cwd=REPO, check=True, timeout=300)
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    return folder


@pytest.fixture()
def engine_settings(qgis_app, r1_folder):
    """Overrides conftest's: the plugin fixture then starts the engine on the SegEarth-R1 folder."""
    from segearth_qgis.core.engine_client import EngineSettings
    from segearth_qgis.settings_dialog import save_engine_settings

    settings = EngineSettings(command=engine_command(), model=str(r1_folder), device="cpu")
    save_engine_settings(settings)
    return settings


def test_processing_runs_segearth_r1_from_a_folder(plugin, project, tmp_path):
    import processing

    scene = write_geotiff(tmp_path / "scene.tif", 200)
    out = tmp_path / "r1.gpkg"
    result = processing.run("segearth:segment_by_prompt", {
        "INPUT": str(scene), "PROMPT": PROMPT, "GSD": 0, "THRESHOLD": 0.0, "OUTPUT": str(out),
    })
    layer = QgsVectorLayer(result["OUTPUT"], "out", "ogr")
    assert layer.isValid() and layer.crs().authid() == CRS
    labels = {f["label"] for f in layer.getFeatures()}
    assert labels == {"red roofs"}


def test_dock_runs_segearth_r1_and_says_it_generates_no_text(plugin, iface, project, tmp_path):
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
    assert "does not generate text" in dock.answers_view.toPlainText()
