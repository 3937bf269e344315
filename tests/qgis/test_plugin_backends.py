"""The plugin (Processing and dock) with a checkpoint folder of each backend as its model setting.

One fixture writes a tiny random checkpoint in the backend's real layout (SegEarth-R2's merged release, SegEarth-R1's
released layout with fused ``query_key_value`` and slow tokenizer files, ``facebook/sam3``'s hub layout) with the
engine's own Python (:mod:`segearth_geo.model.testing`); the plugin only passes the folder to the worker, whose model
registry picks the backend from ``config.json``. Random weights give each backend a known outcome:

* SegEarth-R2: random weights never write ``[SEG]``, so the run completes with an empty, valid result;
* SegEarth-R1: threshold 0 puts every pixel in its one target, labelled with the prompt's noun phrase; its answer
  says that it generates no text;
* SAM3: every instance scores below the default detection threshold (0.5): an empty, valid result with a score
  column, and SAM3's per-chip answers.

Run one backend with ``-k r2``, ``-k r1`` or ``-k sam3``.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
from conftest import engine_command, engine_python
from qgis.core import QgsVectorLayer
from synthetic_scene import CRS, write_geotiff

REPO = Path(__file__).resolve().parents[2]


def _check_r1(layer: QgsVectorLayer) -> None:
    assert {f["label"] for f in layer.getFeatures()} == {"red roofs"}


def _check_empty_with_scores(layer: QgsVectorLayer) -> None:
    assert {"label", "score"} <= set(layer.fields().names())
    assert layer.featureCount() == 0


def _check_empty(layer: QgsVectorLayer) -> None:
    assert layer.featureCount() == 0


@dataclass(frozen=True)
class Backend:
    """A backend's tiny checkpoint (``write``: the :mod:`segearth_geo.model.testing` call, folder in ``sys.argv[1]``)
    and what the plugin must show with it."""

    write: str
    prompt: str
    threshold: float
    check_layer: Callable[[QgsVectorLayer], None]
    answers_say: tuple[str, ...]


BACKENDS = {
    "r2": Backend("testing.write_random_r2(sys.argv[1], 'tiny', seed=0)", "segment the red roofs and the pools", 0.5,
                  _check_empty, ()),
    "r1": Backend("testing.write_random_r1(sys.argv[1], 'tiny', seed=4)", "segment the red roofs next to the road",
                  0.0, _check_r1, ("does not generate text",)),
    "sam3": Backend("testing.write_random_sam3(sys.argv[1], 'hub')", "red roofs, pools", 0.5,
                    _check_empty_with_scores, ("red roofs: 0, pools: 0", "SAM3")),
}


@pytest.fixture(scope="module", params=sorted(BACKENDS))
def checkpoint(request, tmp_path_factory) -> tuple[Backend, Path]:
    """``(backend, folder)``: the backend's tiny checkpoint, written by the engine's Python."""
    backend = BACKENDS[request.param]
    folder = tmp_path_factory.mktemp(request.param) / "checkpoint"
    code = f"import sys; from segearth_geo.model import testing; {backend.write}"
    subprocess.run([engine_python(), "-c", code, str(folder)], cwd=REPO, check=True, timeout=300)
    assert (folder / "config.json").is_file()
    return backend, folder


@pytest.fixture()
def engine_settings(qgis_app, checkpoint):
    """Overrides conftest's: the plugin fixture then starts the engine on the backend's folder."""
    from segearth_qgis.core.engine_client import EngineSettings
    from segearth_qgis.settings_dialog import save_engine_settings

    settings = EngineSettings(command=engine_command(), model=str(checkpoint[1]), device="cpu")
    save_engine_settings(settings)
    return settings


def test_processing_runs_the_backend_from_a_folder(plugin, project, checkpoint, tmp_path):
    import processing

    backend = checkpoint[0]
    scene = write_geotiff(tmp_path / "scene.tif", 200)
    result = processing.run("segearth:segment_by_prompt", {
        "INPUT": str(scene), "PROMPT": backend.prompt, "GSD": 0, "THRESHOLD": backend.threshold,
        "OUTPUT": str(tmp_path / "out.gpkg"),
    })
    layer = QgsVectorLayer(result["OUTPUT"], "out", "ogr")
    assert layer.isValid() and layer.crs().authid() == CRS
    backend.check_layer(layer)


def test_dock_runs_the_backend_and_shows_its_answers(plugin, iface, project, checkpoint, tmp_path):
    from qgis.core import QgsCoordinateReferenceSystem, QgsProject, QgsRasterLayer
    from test_plugin import run_dock

    backend = checkpoint[0]
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
    dock.prompt_combo.setCurrentText(backend.prompt)
    task = run_dock(dock, timeout=300)
    assert dock.last_error is None and task.result is not None, dock.last_error
    answers = dock.answers_view.toPlainText()
    for text in backend.answers_say:
        assert text in answers
