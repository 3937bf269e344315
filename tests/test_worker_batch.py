"""The worker's ``batch`` request (what QGIS's "Segment many rasters" sends), on the real subprocess."""

from __future__ import annotations

import time

import geopandas as gpd
import shapely

from tests.test_worker_hostile import COLOUR_MODEL, PROMPT, SLOW_MODEL, StrictWorker, write_scene


def _batch(request_id, scenes, out_dir, **fields) -> dict:
    out_dir.mkdir(exist_ok=True)  # the merged file lives inside the job folder, as the QGIS algorithm puts it
    return {"id": request_id, "type": "batch", "inputs": [str(s) for s in scenes], "prompts": [PROMPT, "blue pool"],
            "output_dir": str(out_dir), "merge": str(out_dir / "all.gpkg"), "batch_size": 1, "chips_per_unit": 2,
            **fields}


def _merged(path):
    frames = [gpd.read_file(path, layer=layer) for layer in gpd.list_layers(path)["name"]]
    return sorted(shapely.to_wkb(shapely.normalize(g)) for f in frames for g in f.geometry.values)


def test_batch_request_runs_a_job_and_a_cancelled_job_resumes_to_the_same_result(tmp_path):
    scenes = [write_scene(tmp_path / "a.tif"), write_scene(tmp_path / "b.tif", 400, 300)]
    reference = StrictWorker("--model", COLOUR_MODEL, "--device", "cpu")
    try:
        assert reference.next(120)["type"] == "ready"
        reference.send(_batch("whole", scenes, tmp_path / "whole"))
        replies = reference.until("whole", timeout=120)
        assert replies[-1]["type"] == "result", replies[-1]
        assert replies[-1]["ok"] and replies[-1]["units_failed"] == 0
        assert any(r["type"] == "progress" and r["event"] == "scene" for r in replies)
    finally:
        reference.close()

    worker = StrictWorker("--model", SLOW_MODEL, "--device", "cpu")
    try:
        assert worker.next(120)["type"] == "ready"
        worker.send(_batch("job", scenes, tmp_path / "job"))
        while worker.next(60)["type"] != "progress":
            pass
        time.sleep(1.5)  # a few slow chips in
        worker.send({"id": "stop", "type": "cancel", "target": "job"})
        ended = worker.until("job", timeout=60)[-1]
        assert ended["type"] == "error" and ended["cancelled"] is True and "resume" in ended["message"]
        assert not worker.ping()["busy"]
        worker.send(_batch("job-again", scenes, tmp_path / "job"))  # the same job: resumes from the ledger
        result = worker.until("job-again", timeout=180)[-1]
        assert result["type"] == "result", result
        assert result["units_resumed"] > 0 and result["units_failed"] == 0
    finally:
        worker.close()
    assert _merged(tmp_path / "job" / "all.gpkg") == _merged(tmp_path / "whole" / "all.gpkg")


def test_batch_request_fields_are_checked_at_the_door(tmp_path):
    worker = StrictWorker("--model", COLOUR_MODEL, "--device", "cpu")
    try:
        assert worker.next(120)["type"] == "ready"
        worker.send({"id": "b1", "type": "batch", "inputs": "a.tif", "prompts": ["x"], "output_dir": str(tmp_path)})
        assert worker.until("b1")[-1]["type"] == "error"
        worker.send({"id": "b2", "type": "batch", "inputs": ["a.tif"], "prompts": [], "output_dir": str(tmp_path)})
        assert "prompts" in worker.until("b2")[-1]["message"]
        worker.send({"id": "b3", "type": "batch", "inputs": ["a.tif"], "prompts": ["x"], "output_dir": str(tmp_path),
                     "gsd": float("inf")})
        assert worker.until("b3")[-1]["type"] == "error"
    finally:
        worker.close()
