"""The plugin against a real ``segearth-geo serve`` (loopback): the dock and Processing give the polygons of a
local run; the token comes from the QGIS authentication database and never reaches a command line."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time

import pytest
from conftest import engine_command
from engine_models import COLOUR_MODEL, PROMPT
from qgis.core import QgsApplication, QgsAuthMethodConfig, QgsVectorLayer
from test_plugin import add_raster, configure, features_by_label, run_dock, segearth_layers, write_scene

TOKEN = "qgis-server-token-5e2b"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture()
def scene(tmp_path):
    return write_scene(tmp_path / "scene.tif")


@pytest.fixture()
def server():
    """``segearth-geo serve`` of the colour model with a token; stopped (SIGTERM, then SIGKILL) afterwards."""
    port = _free_port()
    env = {**os.environ, "SEGEARTH_TOKEN": TOKEN}
    for name in ("PYTHONPATH", "PYTHONHOME", "PROJ_LIB", "PROJ_DATA", "GDAL_DATA"):
        env.pop(name, None)
    proc = subprocess.Popen([engine_command(), "serve", "--model", COLOUR_MODEL, "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("Serving "):
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert ready.wait(120) and proc.poll() is None, proc.stderr.read() if proc.poll() is not None else "no start"
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture()
def authcfg(qgis_app) -> str:
    """An "Esri token" authentication configuration holding :data:`TOKEN` (the test profile's master password)."""
    manager = QgsApplication.authManager()
    if not manager.masterPasswordIsSet():
        assert manager.setMasterPassword("segearth-test-master", True)
    config = QgsAuthMethodConfig("EsriToken")
    config.setName("segearth server")
    config.setConfig("token", TOKEN)
    assert manager.storeAuthenticationConfig(config)[0]
    yield config.id()
    manager.removeAuthenticationConfig(config.id())


def _remote_settings(url: str, authcfg: str):
    from segearth_qgis.core.engine_client import EngineSettings
    from segearth_qgis.settings_dialog import save_engine_settings

    settings = EngineSettings(command=engine_command(), model=url, device="cpu", authcfg=authcfg)
    save_engine_settings(settings)
    return settings


def _features(layer: QgsVectorLayer) -> list[tuple[str, str]]:
    return sorted((label, geometry.asWkt(3)) for label, geometries in features_by_label(layer).items()
                  for geometry in geometries)


def test_settings_dialog_keeps_only_the_authcfg_id(qgis_app, authcfg):
    from qgis.core import QgsSettings
    from segearth_qgis.core.engine_client import EngineSettings
    from segearth_qgis.settings_dialog import SettingsDialog, load_engine_settings, save_engine_settings

    chosen = EngineSettings(command="segearth-geo", model="https://gpu-box:8765", authcfg=authcfg)
    dialog = SettingsDialog(None, chosen)
    assert dialog.auth_select.configId() == authcfg and dialog.engine_settings() == chosen
    save_engine_settings(chosen)
    assert load_engine_settings() == chosen
    stored = {key: str(QgsSettings().value(key)) for key in QgsSettings().allKeys() if key.startswith("segearth/")}
    assert stored["segearth/authcfg"] == authcfg and not any(TOKEN in value for value in stored.values())
    from dataclasses import replace

    assert "--device" not in replace(chosen, command=engine_command()).argv()  # the server's model, its device
    save_engine_settings(EngineSettings())


def test_dock_and_processing_through_a_server_equal_a_local_run(plugin, dock, iface, scene, project, tmp_path, server,
                                                                authcfg):
    import processing

    layer = add_raster(scene)
    iface.mapCanvas().setExtent(layer.extent())
    configure(dock, layer)
    local = run_dock(dock)  # the colour model in the worker, as the other plugin tests run it
    assert dock.last_error is None and local.result is not None
    [local_layer] = segearth_layers()
    want = _features(local_layer)
    assert want

    _remote_settings(server, authcfg)
    client = plugin.client()
    ready = client.start(timeout=120)
    assert ready["type"] == "ready" and ready["model"] == server
    with open(f"/proc/{client.pid}/cmdline", "rb") as cmdline:
        assert TOKEN.encode() not in cmdline.read()  # the token is in the worker's environment only
    configure(dock, layer)
    remote = run_dock(dock)
    assert dock.last_error is None and remote.result is not None
    remote_layer = [lyr for lyr in segearth_layers() if lyr.id() != local_layer.id()][0]
    assert _features(remote_layer) == want

    result = processing.run("segearth:segment_by_prompt", {
        "INPUT": str(scene), "PROMPT": PROMPT, "OUTPUT": str(tmp_path / "processing.gpkg")})
    assert _features(QgsVectorLayer(result["OUTPUT"], "out", "ogr")) == want
    assert not any(TOKEN in line for line in client.stderr_tail)


def test_a_wrong_token_is_reported_in_one_line(plugin, dock, scene, project, server, qgis_app):
    manager = QgsApplication.authManager()
    if not manager.masterPasswordIsSet():
        assert manager.setMasterPassword("segearth-test-master", True)
    config = QgsAuthMethodConfig("EsriToken")
    config.setName("wrong")
    config.setConfig("token", "not-the-token")
    assert manager.storeAuthenticationConfig(config)[0]
    try:
        from segearth_qgis.core.engine_client import EngineError

        _remote_settings(server, config.id())
        client = plugin.client()
        started = time.monotonic()
        with pytest.raises(EngineError) as caught:
            client.start(timeout=120)
        assert "refused the token" in str(caught.value) and "not-the-token" not in str(caught.value)
        assert time.monotonic() - started < 60
    finally:
        manager.removeAuthenticationConfig(config.id())
