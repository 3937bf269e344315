"""Fixtures for the QGIS plugin tests (run with the system Python that has the QGIS bindings).

    QT_QPA_PLATFORM=offscreen /usr/bin/python3 -m pytest tests/qgis

The engine is the real ``segearth-geo worker`` (found on PATH or via SEGEARTH_ENGINE),
running the model configured in ``engine_models.py``. When the ``qgis`` module is missing
the tests are skipped locally but FAIL when the environment variable ``CI`` is set.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PLUGIN_DIR = REPO / "qgis_plugin"
HAS_QGIS = importlib.util.find_spec("qgis") is not None

if not HAS_QGIS:
    if os.environ.get("CI"):
        raise pytest.UsageError(
            "tests/qgis need the QGIS Python bindings (apt-get install -y qgis python3-qgis) and must run "
            "under the system Python: /usr/bin/python3 -m pytest tests/qgis")
    collect_ignore_glob = ["test_*.py"]

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path[:0] = [str(HERE), str(PLUGIN_DIR)]

ARTIFACTS = REPO / "test-artifacts"


def engine_command() -> str:
    command = os.environ.get("SEGEARTH_ENGINE") or shutil.which("segearth-geo")
    if not command:
        pytest.fail("the engine is not installed: pip install -e . (segearth-geo must be on PATH or "
                    "SEGEARTH_ENGINE must name it)")
    return command


def engine_python() -> str:
    """The interpreter of the ``segearth-geo`` console script (its shebang line): the engine's Python."""
    first = Path(engine_command()).read_text(encoding="utf-8", errors="replace").splitlines()[0]
    assert first.startswith("#!"), first
    return first[2:].strip()


@pytest.fixture(scope="session")
def qgis_app():
    from qgis.testing import start_app

    app = start_app()
    processing_dir = "/usr/share/qgis/python/plugins"
    if processing_dir not in sys.path:
        sys.path.append(processing_dir)
    from processing.core.Processing import Processing

    Processing.initialize()
    return app


@pytest.fixture(scope="session")
def iface(qgis_app):
    import qgis.utils
    from qgis_interface import HeadlessInterface

    interface = HeadlessInterface()
    qgis.utils.iface = interface
    yield interface
    # Tear the canvas down while QGIS is still alive: a render job left running at interpreter
    # exit would be destroyed after its layers and crash the process (exit code 134).
    interface.canvas.stopRendering()
    interface.canvas.setLayers([])
    interface.window.deleteLater()
    qgis_app.processEvents()


@pytest.fixture()
def engine_settings(qgis_app):
    """Point the plugin at the real engine and the deterministic colour model."""
    from engine_models import COLOUR_MODEL
    from segearth_qgis.core.engine_client import EngineSettings
    from segearth_qgis.settings_dialog import save_engine_settings

    settings = EngineSettings(command=engine_command(), model=COLOUR_MODEL, device="cpu")
    save_engine_settings(settings)
    return settings


@pytest.fixture()
def project(qgis_app, tmp_path):
    """A clean project saved in ``tmp_path`` (so results go next to it)."""
    from qgis.core import QgsProject

    prj = QgsProject.instance()
    prj.clear()
    prj.setFileName(str(tmp_path / "project.qgz"))
    assert prj.write()
    yield prj
    import qgis.utils

    canvas = qgis.utils.iface.mapCanvas() if qgis.utils.iface is not None else None
    if canvas is not None:  # no render job may outlive the layers it draws
        canvas.stopRendering()
        canvas.waitWhileRendering()
    prj.clear()


@pytest.fixture()
def plugin(iface, engine_settings, project):
    """The plugin loaded and started through ``qgis.utils``, unloaded afterwards; the message bar starts empty (QGIS
    drops a message equal to one already stacked, so an earlier test's message could hide this test's)."""
    import qgis.utils

    iface.messageBar().clearWidgets()

    if str(PLUGIN_DIR) not in qgis.utils.plugin_paths:
        qgis.utils.plugin_paths.append(str(PLUGIN_DIR))
    qgis.utils.updateAvailablePlugins()
    assert qgis.utils.loadPlugin("segearth_qgis")
    assert qgis.utils.startPlugin("segearth_qgis")
    instance = qgis.utils.plugins["segearth_qgis"]
    yield instance
    if "segearth_qgis" in qgis.utils.active_plugins:
        assert qgis.utils.unloadPlugin("segearth_qgis")


@pytest.fixture()
def dock(plugin, iface):
    """The plugin's dock, shown, over a map canvas in the synthetic scenes' CRS."""
    from qgis.core import QgsCoordinateReferenceSystem
    from synthetic_scene import CRS

    plugin.dock.setVisible(True)
    iface.mapCanvas().setDestinationCrs(QgsCoordinateReferenceSystem(CRS))
    return plugin.dock
