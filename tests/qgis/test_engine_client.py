"""The plugin's engine client against a real ``segearth-geo worker``: quiet log, robust streams.

The models are the segmenters of ``tests/test_worker_hostile.py`` (loaded by the worker,
i.e. the engine's Python, with ``--model FILE:factory``).
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from conftest import engine_command
from engine_models import PROMPT
from synthetic_scene import write_geotiff

MODELS = Path(__file__).resolve().parents[1] / "test_worker_hostile.py"


def _client(model: str, log: list[str]):
    from segearth_qgis.core.engine_client import EngineClient, EngineSettings

    return EngineClient(EngineSettings(command=engine_command(), model=f"{MODELS}:{model}", device="cpu"),
                        log=log.append)


def _segment_in_time(client, fields: dict, timeout: float = 60.0):
    """``client.segment(fields)``, failing (instead of hanging the suite) when no answer comes in time."""
    outcome: list = []
    thread = threading.Thread(target=lambda: outcome.append(client.segment(fields)), daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        client.stop(timeout=1)
        pytest.fail(f"no answer within {timeout:.0f} s")
    return outcome[0]


def test_library_warnings_do_not_reach_the_qgis_log_per_request(tmp_path):
    scene = write_geotiff(tmp_path / "scene.tif")
    log: list[str] = []
    client = _client("warns", log)
    try:
        client.start(timeout=120)
        for n in range(3):
            result = _segment_in_time(client, {"raster": str(scene), "prompt": PROMPT,
                                               "output": str(tmp_path / f"{n}.gpkg")})
            assert result.count == 2
    finally:
        client.stop()
    assert not [line for line in log if "Warning" in line or "past_key_values" in line], log


def test_stderr_that_is_not_utf8_neither_kills_the_log_nor_blocks_the_engine(tmp_path):
    # Each call writes 100 kB of bytes that are not UTF-8 to the worker's stderr: if the client
    # stopped reading stderr at the first bad byte, the pipe would fill and the worker would hang.
    scene = write_geotiff(tmp_path / "scene.tif")
    log: list[str] = []
    client = _client("noisy_bytes", log)
    try:
        client.start(timeout=120)
        for n in range(2):
            result = _segment_in_time(client, {"raster": str(scene), "prompt": PROMPT,
                                               "output": str(tmp_path / f"{n}.gpkg")})
            assert result.count == 2
        assert client.ping()["busy"] is False
    finally:
        client.stop()
    assert sum("cannot open /data/caf\ufffd.tif" in line for line in log) >= 2
