"""The JSON-lines worker, driven as a real ``segearth-geo worker`` subprocess."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from pyproj import Transformer
from rasterio.transform import from_origin

sys.path.insert(0, str(Path(__file__).resolve().parent / "qgis"))
from engine_models import COLOUR_MODEL, LABELS, PROMPT, SLOW_MODEL  # noqa: E402
from engine_models import HERE as MODELS_FILE  # noqa: E402
from synthetic_scene import BLUE_SQUARE, ORIGIN, RED_SQUARE, pixel_box, scene_array  # noqa: E402

UTM = "EPSG:32633"


def write_scene(path: Path, size: int = 512) -> Path:
    """The shared synthetic scene (tests/qgis/synthetic_scene.py) as a GeoTIFF."""
    profile = dict(driver="GTiff", width=size, height=size, count=3, dtype="uint8", crs=UTM,
                   transform=from_origin(*ORIGIN, 1.0, 1.0))
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(scene_array(size))
    return path


class Worker:
    """A running ``segearth-geo worker``; replies are collected by a reader thread."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        # The CLI of the interpreter running the tests (no need for segearth-geo on PATH).
        self.proc = subprocess.Popen([sys.executable, "-m", "segearth_geo_cli.main", "worker", *args],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, bufsize=1,
                                     env={**os.environ, **(env or {})})
        self.lines: list[str] = []
        self.replies: queue.Queue = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr), daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)
            self.replies.put(json.loads(line))

    def send(self, message: dict | str) -> None:
        self.proc.stdin.write((message if isinstance(message, str) else json.dumps(message)) + "\n")
        self.proc.stdin.flush()

    def next(self, timeout: float = 60.0) -> dict:
        return self.replies.get(timeout=timeout)

    def until(self, request_id, kinds=("result", "error", "ready", "pong"), timeout: float = 60.0) -> list[dict]:
        """Replies for ``request_id`` up to and including the first of ``kinds``."""
        got, deadline = [], time.monotonic() + timeout
        while True:
            message = self.next(max(deadline - time.monotonic(), 0.01))
            if message["id"] == request_id:
                got.append(message)
                if message["type"] in kinds:
                    return got

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@pytest.fixture()
def worker():
    w = Worker("--model", COLOUR_MODEL, "--device", "cpu")
    ready = w.next(120)
    assert ready["type"] == "ready" and ready["id"] is None, ready
    yield w
    w.close()


@pytest.fixture()
def scene(tmp_path) -> Path:
    return write_scene(tmp_path / "scene.tif")


def test_ready_ping_and_shutdown(worker):
    worker.send({"id": "p1", "type": "ping"})
    pong = worker.until("p1")[-1]
    assert pong["type"] == "pong" and pong["id"] == "p1"
    assert pong["model"] == COLOUR_MODEL and pong["busy"] is False
    worker.send({"id": 7, "type": "shutdown"})
    bye = worker.until(7)[-1]
    assert bye == {"id": 7, "type": "result", "shutdown": True}
    assert worker.proc.wait(10) == 0


def test_segment_reports_progress_and_writes_labeled_polygons(worker, scene, tmp_path):
    out = tmp_path / "out.gpkg"
    worker.send({"id": "s1", "type": "segment", "raster": str(scene), "prompt": PROMPT, "output": str(out),
                 "batch_size": 2})
    replies = worker.until("s1")
    progress = [r for r in replies if r["type"] == "progress"]
    result = replies[-1]
    assert result["type"] == "result", result
    assert progress and progress[-1]["done"] == progress[-1]["total"] > 1
    assert [p["done"] for p in progress] == sorted(p["done"] for p in progress)
    assert result["output"] == str(out) and out.is_file()
    assert result["polygons"] == {"pool": 1, "red roof": 1}
    assert result["count"] == 2 and result["device"] and result["seconds"] > 0
    assert any("[SEG]" in a["answer"] for a in result["answers"])
    gdf = gpd.read_file(out, layer=result["layer"])
    assert gdf.crs.to_epsg() == 32633
    red = gdf[gdf["label"] == "red roof"].geometry.iloc[0]
    assert np.allclose(red.bounds, pixel_box(RED_SQUARE), atol=1.01)
    assert red.area == pytest.approx(80 * 80, rel=0.02)
    pool = gdf[gdf["label"] == "pool"].geometry.iloc[0]
    assert np.allclose(pool.bounds, pixel_box(BLUE_SQUARE), atol=1.01)
    assert set(gdf["label"]) == set(LABELS)


def test_segment_bbox_in_another_crs_limits_the_area(worker, scene, tmp_path):
    # The red square's neighbourhood, given in WGS84: only "red roof" may come back.
    minx, miny, maxx, maxy = pixel_box((60, 220, 20, 180))
    to_wgs84 = Transformer.from_crs(UTM, "EPSG:4326", always_xy=True)
    xs, ys = to_wgs84.transform([minx, maxx, minx, maxx], [miny, miny, maxy, maxy])
    out = tmp_path / "bbox.gpkg"
    worker.send({"id": "b", "type": "segment", "raster": str(scene), "prompt": PROMPT, "output": str(out),
                 "bbox": [min(xs), min(ys), max(xs), max(ys)], "bbox_crs": "EPSG:4326"})
    result = worker.until("b")[-1]
    assert result["type"] == "result", result
    assert result["polygons"] == {"red roof": 1}
    assert gpd.read_file(out, layer=result["layer"]).crs.to_epsg() == 32633


def test_failing_requests_leave_the_worker_alive(worker, scene, tmp_path):
    existing = tmp_path / "exists.gpkg"
    existing.write_bytes(b"keep me")
    bad = [
        "this is not json",
        json.dumps({"type": "ping"}),
        json.dumps({"id": "u", "type": "frobnicate"}),
        json.dumps({"id": "m", "type": "segment", "raster": str(tmp_path / "missing.tif"), "prompt": PROMPT,
                    "output": str(tmp_path / "m.gpkg")}),
        json.dumps({"id": "e", "type": "segment", "raster": str(scene), "prompt": " ", "output": str(tmp_path / "e.gpkg")}),
        json.dumps({"id": "x", "type": "segment", "raster": str(scene), "prompt": PROMPT, "output": str(existing)}),
        json.dumps({"id": "t", "type": "segment", "raster": str(scene), "prompt": PROMPT,
                    "output": str(tmp_path / "t.gpkg"), "threshold": "high"}),
    ]
    for line in bad:
        worker.send(line)
    errors = [worker.next() for _ in bad]
    assert [e["type"] for e in errors] == ["error"] * len(bad)
    # Field checks answer at once; the missing raster and existing output are found when the job runs.
    assert sorted(map(str, (e["id"] for e in errors))) == sorted(map(str, [None, None, "u", "m", "e", "x", "t"]))
    assert all(e["message"] and "Traceback" not in e["message"] for e in errors)
    assert "missing.tif" in next(e for e in errors if e["id"] == "m")["message"]
    assert existing.read_bytes() == b"keep me"
    assert not (tmp_path / "m.gpkg").exists() and not (tmp_path / "t.gpkg").exists()
    worker.send({"id": "alive", "type": "ping"})
    assert worker.until("alive")[-1]["type"] == "pong"
    worker.send({"id": "ok", "type": "segment", "raster": str(scene), "prompt": PROMPT,
                 "output": str(tmp_path / "ok.gpkg")})
    assert worker.until("ok")[-1]["type"] == "result"


def test_cancel_mid_run_leaves_no_output_and_ping_stays_responsive(tmp_path):
    scene = write_scene(tmp_path / "scene.tif")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    w = Worker("--model", SLOW_MODEL, env={"SEGEARTH_TEST_DELAY": "0.5"})
    try:
        assert w.next(120)["type"] == "ready"
        w.send({"id": "s", "type": "segment", "raster": str(scene), "prompt": PROMPT,
                "output": str(out_dir / "c.gpkg"), "batch_size": 1})
        first = w.next(60)
        assert first["id"] == "s" and first["type"] == "progress" and first["done"] < first["total"]
        w.send({"id": "p", "type": "ping"})
        pong = w.until("p")[-1]
        assert pong["busy"] is True  # answered while the segmentation is still running
        w.send({"id": "c", "type": "cancel", "target": "s"})
        replies = {}
        while len(replies) < 2:
            message = w.next(30)
            if message["type"] != "progress":
                replies[message["id"]] = message
        assert replies["c"] == {"id": "c", "type": "result", "cancelled": "s", "found": True}
        assert replies["s"]["type"] == "error" and replies["s"]["cancelled"] is True
        assert sorted(p.name for p in out_dir.iterdir()) == []
        w.send({"id": "again", "type": "ping"})
        assert w.until("again")[-1]["busy"] is False
    finally:
        w.close()


def test_stdout_carries_only_protocol_lines():
    w = Worker()  # no model: waits for load
    try:
        hello = w.next(60)
        assert hello["type"] == "ready" and hello["model"] is None
        w.send({"id": "l", "type": "load", "model": f"{MODELS_FILE}:noisy", "device": "cpu"})
        ready = w.until("l")[-1]
        assert ready["type"] == "ready" and ready["chip_size"] == 256, ready
        w.send({"id": "bad", "type": "load", "model": "/no/such/file.py:factory"})
        assert w.until("bad")[-1]["type"] == "error"
        w.send({"id": "p", "type": "ping"})
        assert w.until("p")[-1]["model"] == f"{MODELS_FILE}:noisy"  # failed load kept the previous model
        w.proc.stdin.close()  # end of input: the worker exits cleanly
        assert w.proc.wait(20) == 0
        time.sleep(0.2)
        assert all(json.loads(line)["type"] for line in w.lines)  # every stdout line is a reply
        stderr = "".join(w.stderr)
        for noise in ("noise from print", "noise from sys.stdout", "noise from fd 1", "noise from logging"):
            assert noise in stderr
    finally:
        w.close()


def test_end_of_input_finishes_queued_requests_then_exits(scene, tmp_path):
    w = Worker("--model", COLOUR_MODEL)
    try:
        w.send({"id": "s", "type": "segment", "raster": str(scene), "prompt": PROMPT, "output": str(tmp_path / "q.gpkg")})
        w.proc.stdin.close()  # like `cat requests.jsonl | segearth-geo worker`
        assert w.proc.wait(60) == 0
        time.sleep(0.2)
        replies = [json.loads(line) for line in w.lines]
        assert replies[0]["type"] == "ready" and replies[-1]["id"] == "s" and replies[-1]["type"] == "result"
        assert (tmp_path / "q.gpkg").is_file()
    finally:
        w.close()
