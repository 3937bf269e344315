"""The settings dialog's "Test engine" logic (pure Python) against the real ``segearth-geo`` and broken commands."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from segearth_geo import __version__

PLUGIN = Path(__file__).resolve().parents[1] / "qgis_plugin"


@pytest.fixture(scope="module")
def probe():
    sys.path.insert(0, str(PLUGIN))
    try:
        from segearth_qgis.core import engine_client, engine_probe

        yield engine_probe, engine_client
    finally:
        sys.path.remove(str(PLUGIN))


def _engine() -> str:
    found = shutil.which("segearth-geo") or str(Path(sys.executable).with_name("segearth-geo"))
    assert Path(found).is_file(), "pip install -e . puts segearth-geo next to the venv's python"
    return found


def test_the_real_engine_says_its_version_device_and_downloaded_models(probe):
    engine_probe, client = probe
    report = engine_probe.probe_engine(client.EngineSettings(command=_engine(), model="sam3", device="cpu"))
    assert report.version == __version__
    assert report.device.startswith("cpu")
    assert "demo" in report.cached  # bundled
    assert report.row("sam3")["hub_id"] == "facebook/sam3" and report.row("SAM3") is report.row("sam3")
    assert report.summary().startswith(f"segearth-geo {__version__} · device: cpu")
    assert "downloaded: " in report.summary() and "demo" in report.summary().split("downloaded: ")[1]


def test_broken_engines_are_one_line_each(probe, tmp_path):
    engine_probe, client = probe
    with pytest.raises(client.EngineError, match="not found; install the engine"):
        engine_probe.probe_engine(client.EngineSettings(command=str(tmp_path / "missing" / "segearth-geo")))
    failing = tmp_path / "fails.py"
    failing.write_text("import sys\nprint('Error: no such command', file=sys.stderr)\nsys.exit(2)\n")
    with pytest.raises(client.EngineError, match=r"--version` failed: Error: no such command$"):
        engine_probe.probe_engine(client.EngineSettings(command=f"{sys.executable} {failing}"))
    slow = tmp_path / "slow.py"
    slow.write_text("import time\ntime.sleep(30)\n")
    with pytest.raises(client.EngineError, match="did not answer within 1 s"):
        engine_probe.probe_engine(client.EngineSettings(command=f"{sys.executable} {slow}"), timeout=1)
    old = tmp_path / "old.py"  # prints a version but no model list
    old.write_text("print('segearth-geo, version 0.1.0')\n")
    with pytest.raises(client.EngineError, match="did not list its models as JSON"):
        engine_probe.probe_engine(client.EngineSettings(command=f"{sys.executable} {old}"))
    with pytest.raises(client.EngineError, match="cannot be read"):
        engine_probe.probe_engine(client.EngineSettings(command='"unclosed'))
