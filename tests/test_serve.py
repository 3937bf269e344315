"""``segearth-geo serve`` and ``--model http://...`` on real subprocesses (loopback, free ports): the same polygons
as in-process for segment, batch (local and Ray) and the worker; 8 concurrent clients; a client killed mid-request;
a server killed mid-job; the image cache through the server; draining on SIGTERM."""

from __future__ import annotations

import http.client
import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
from geo_fixtures import write_utm
from serve_support import REPO, Server, cli_env, free_port, model_spec, run_cli, wait_until

from segearth_geo.serve.wire import CHIPS_TYPE, encode_request

TOLERANCE = 1 / 255 + 1e-6


def segments(path: Path) -> gpd.GeoDataFrame:
    return gpd.read_file(path, layer="segments", engine="pyogrio")


def assert_identical_polygons(got: gpd.GeoDataFrame, want: gpd.GeoDataFrame) -> None:
    """Same count, same geometry (exactly), same labels and prompts; scores within 1/255."""
    assert len(got) == len(want) and len(want) > 0

    def ordered(frame):
        keys = [(p, lab, shapely.normalize(g).wkb) for p, lab, g in zip(frame["prompt"], frame["label"], frame.geometry)]
        return frame.iloc[sorted(range(len(frame)), key=keys.__getitem__)].reset_index(drop=True)

    got, want = ordered(got), ordered(want)
    assert list(got["label"]) == list(want["label"]) and list(got["prompt"]) == list(want["prompt"])
    assert all(shapely.equals_exact(shapely.normalize(a), shapely.normalize(b), 0) for a, b in
               zip(got.geometry, want.geometry))
    assert np.abs(got["score"].to_numpy() - want["score"].to_numpy()).max() <= TOLERANCE
    assert list(got["pixels"]) == list(want["pixels"])


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    return write_utm(tmp_path_factory.mktemp("scene") / "scene.tif", 300, 200)


def segment_cli(scene: Path, out: Path, model: str, *args: str, **env) -> gpd.GeoDataFrame:
    done = run_cli("-q", "segment", str(scene), "red and blue", "the green one", "-o", str(out), "--model", model,
                   "--threshold", "0.55", *args, **env)
    assert done.returncode == 0, done.stderr
    return segments(out)


def info(server: Server) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("GET", "/v1/info", headers={"Authorization": f"Bearer {server.token}"} if server.token else {})
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def test_segment_through_the_server_equals_in_process_and_shares_the_image_cache(scene, tmp_path):
    from segearth_geo import load_segmenter
    from segearth_geo.engine import segment_scene

    want = segment_cli(scene, tmp_path / "local.gpkg", model_spec("smooth"))
    with Server("smooth") as server:
        got = segment_cli(scene, tmp_path / "remote.gpkg", server.url)
        assert_identical_polygons(got, want)
        remote = load_segmenter(server.url)  # the Python API takes the same spec
        assert remote.capabilities >= {"threshold", "image_cache"} and remote.chip_size == 64
        fresh = write_utm(tmp_path / "fresh.tif", 200, 150)  # chips the server has not seen
        first = segment_scene(fresh, "red", remote).stats.cache
        second = segment_scene(fresh, "blue", remote).stats.cache  # the same chips: image work reused
        assert first["misses"]["vision"] > 0 and not first.get("hits")
        assert second["hits"]["vision"] == first["misses"]["vision"] and not second.get("misses")
        served = info(server)
        assert served["chips_done"] >= 2 * 24 and max(map(int, served["batch_sizes"])) > 1


def test_eight_concurrent_clients_get_the_polygons_of_a_sequential_run(scene, tmp_path):
    want = segment_cli(scene, tmp_path / "local.gpkg", model_spec("smooth"))
    with Server("smooth", "--max-queue", "4", "--batch-size", "4") as server:  # a small queue: clients get 503s
        procs = [subprocess.Popen([sys.executable, "-m", "segearth_geo_cli.main", "-q", "segment", str(scene),
                                   "red and blue", "the green one", "-o", str(tmp_path / f"c{n}.gpkg"), "--model",
                                   server.url, "--threshold", "0.55"], env=cli_env(), cwd=str(REPO),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in range(8)]
        for proc in procs:
            _, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err
        assert info(server)["refused"] > 0  # the busy path was taken, and no job failed for it
    for n in range(8):
        assert_identical_polygons(segments(tmp_path / f"c{n}.gpkg"), want)


def test_a_client_killed_mid_request_leaves_the_server_serving_others(scene, tmp_path):
    want = segment_cli(scene, tmp_path / "local.gpkg", model_spec("smooth"))
    with Server("slow", "--batch-size", "1", env={"SEGEARTH_TEST_DELAY": "0.2"}) as server:
        victim = subprocess.Popen([sys.executable, "-m", "segearth_geo_cli.main", "-q", "segment", str(scene), "red",
                                   "-o", str(tmp_path / "victim.gpkg"), "--model", server.url], env=cli_env(),
                                  cwd=str(REPO), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_until(lambda: info(server)["chips_done"] >= 2, 60)
        victim.kill()
        victim.wait(10)
        assert wait_until(lambda: info(server)["queued"] == 0, 30)  # its queued chips were dropped
        got = segment_cli(scene, tmp_path / "remote.gpkg", server.url)
        assert_identical_polygons(got, want)
        assert server.alive()
    assert not (tmp_path / "victim.gpkg").exists()


def _done_units(folder: Path) -> int:
    try:
        with sqlite3.connect(f"file:{folder / 'ledger.sqlite'}?mode=ro", uri=True, timeout=5) as db:
            return db.execute("SELECT COUNT(*) FROM units WHERE status='done'").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def _batch_args(inputs, out: Path, model: str) -> list[str]:
    return ["-q", "batch", *map(str, inputs), "-o", str(out), "-p", "red things", "-p", "blue", "--model", model,
            "--chips-per-unit", "2", "--merge", str(out / "all.gpkg")]


def _results(folder: Path) -> dict[str, gpd.GeoDataFrame]:
    return {str(p.relative_to(folder)): segments(p) for p in sorted((folder / "results").rglob("*.gpkg"))}


@pytest.mark.slow
def test_a_batch_job_rides_out_a_server_killed_mid_job_and_equals_an_uninterrupted_run(tmp_path):
    from batch_fixtures import write_scenes

    inputs = write_scenes(tmp_path / "in")
    reference = run_cli(*_batch_args(inputs, tmp_path / "ref", model_spec("smooth")))
    assert reference.returncode == 0, reference.stderr
    port = free_port()
    job = tmp_path / "job"
    server = Server("slow", "--batch-size", "2", port=port, env={"SEGEARTH_TEST_DELAY": "0.1"}).start()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "segearth_geo_cli.main", *_batch_args(inputs, job, server.url)],
                                env=cli_env(SEGEARTH_RETRY_S="120"), cwd=str(REPO), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        assert wait_until(lambda: _done_units(job) >= 3, 120)
        server.kill()  # SIGKILL mid-job: requests in flight are lost, the client retries
        time.sleep(2.0)
        assert proc.poll() is None, "the job must wait for the server"
        server = Server("smooth", "--batch-size", "2", port=port).start()
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    finally:
        server.stop()
    want, got = _results(tmp_path / "ref"), _results(job)
    assert list(got) == list(want) and len(want) == 3 * 2
    for name in want:
        assert_identical_polygons(got[name], want[name])
    for layer in gpd.list_layers(tmp_path / "ref" / "all.gpkg")["name"]:
        assert_identical_polygons(gpd.read_file(job / "all.gpkg", layer=layer), gpd.read_file(tmp_path / "ref" / "all.gpkg",
                                                                                                layer=layer))
    with sqlite3.connect(job / "ledger.sqlite") as db:
        units, done = db.execute("SELECT COUNT(*), SUM(status='done') FROM units").fetchone()
    assert units == done and len(list((job / "shards").rglob("*.parquet"))) == units  # nothing lost or duplicated


@pytest.mark.slow
def test_a_batch_job_on_the_ray_executor_uses_the_server(tmp_path):
    pytest.importorskip("ray")
    from batch_fixtures import write_scenes

    inputs = write_scenes(tmp_path / "in", crs=("utm",))
    reference = run_cli(*_batch_args(inputs, tmp_path / "ref", model_spec("smooth")))
    assert reference.returncode == 0, reference.stderr
    with Server("smooth", token="ray-token-1") as server:
        done = run_cli(*_batch_args(inputs, tmp_path / "job", server.url), "--executor", "ray", "--workers", "2",
                       timeout=400, SEGEARTH_TOKEN="ray-token-1")
        assert done.returncode == 0, done.stderr
        assert info(server)["chips_done"] > 0
    want, got = _results(tmp_path / "ref"), _results(tmp_path / "job")
    assert list(got) == list(want)
    for name in want:
        assert_identical_polygons(got[name], want[name])
    assert "ray-token-1" not in (tmp_path / "job" / "job.json").read_text()


class Worker:
    def __init__(self, *args: str, **env) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "segearth_geo_cli.main", "worker", *args],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=cli_env(**env), cwd=str(REPO))

    def send(self, **message) -> None:
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()

    def until(self, request_id, kind=("result", "error"), timeout: float = 120) -> dict:
        result: list = []

        def read() -> None:
            for line in self.proc.stdout:
                message = json.loads(line)
                if message.get("id") == request_id and message.get("type") in kind:
                    result.append(message)
                    return

        thread = threading.Thread(target=read, daemon=True)
        thread.start()
        thread.join(timeout)
        assert result, f"no {kind} for {request_id!r} within {timeout} s"
        return result[0]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


def test_the_worker_loads_a_server_segments_like_in_process_and_cancels(scene, tmp_path):
    want = segment_cli(scene, tmp_path / "local.gpkg", model_spec("smooth"))
    with Server("slow", token="worker-token-77", env={"SEGEARTH_TEST_DELAY": "0.05"}) as server:
        worker = Worker()
        try:
            worker.send(id="l", type="load", model=server.url, token="worker-token-77")
            ready = worker.until("l", ("ready", "error"))
            assert ready["type"] == "ready" and ready["chip_size"] == 64, ready
            assert "worker-token-77" not in json.dumps(ready)
            worker.send(id="s", type="segment", raster=str(scene), prompts=["red and blue", "the green one"],
                        output=str(tmp_path / "worker.gpkg"), threshold=0.55)
            result = worker.until("s")
            assert result["type"] == "result", result
            assert result["cache"]["hits"]["vision"] > 0  # the second prompt reused the first's image work
            assert_identical_polygons(segments(tmp_path / "worker.gpkg"), want)
            big = write_utm(tmp_path / "big.tif", 900, 700)  # ~220 chips at 0.05 s: cancelled long before the end
            worker.send(id="c", type="segment", raster=str(big), prompt="red", output=str(tmp_path / "big.gpkg"))
            assert wait_until(lambda: info(server)["chips_done"] > 60, 60)
            started = time.monotonic()
            worker.send(id="x", type="cancel", target="c")
            cancelled = worker.until("c")
            assert cancelled["type"] == "error" and cancelled.get("cancelled"), cancelled
            assert time.monotonic() - started < 10
            assert wait_until(lambda: info(server)["queued"] == 0, 10)
            assert not (tmp_path / "big.gpkg").exists()
        finally:
            worker.close()
        assert "worker-token-77" not in "\n".join(server.stderr)


def test_score_threshold_goes_to_a_server_with_scores_and_is_refused_by_one_without(scene, tmp_path):
    want = segment_cli(scene, tmp_path / "local.gpkg", model_spec("scored"), "--score-threshold", "0.45")
    with Server("scored") as server:
        got = segment_cli(scene, tmp_path / "remote.gpkg", server.url, "--score-threshold", "0.45")
        assert_identical_polygons(got, want)
    with Server("smooth") as server:
        for flag, value in (("--score-threshold", "0.3"), ("--template", "llama2"), ("--device", "cuda")):
            done = run_cli("segment", str(scene), "red", "-o", str(tmp_path / "x.gpkg"), "--model", server.url, flag,
                           value)
            assert done.returncode == 2 and flag in done.stderr and len(done.stderr.strip().splitlines()) == 1, \
                done.stderr


def test_sigterm_drains_answers_the_request_in_flight_then_exits(tmp_path):
    server = Server("slow", "--batch-size", "1", env={"SEGEARTH_TEST_DELAY": "1.0"}).start()
    try:
        body = b"".join(bytes(p) for p in encode_request([np.full((8, 8, 3), 200, np.uint8)] * 2, ["red"]))
        answers: list = []

        def send() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
            conn.request("POST", "/v1/segment", body, {"Content-Type": CHIPS_TYPE})
            answers.append(conn.getresponse().status)

        thread = threading.Thread(target=send)
        thread.start()
        assert wait_until(lambda: info(server)["queued"] >= 1, 10)
        server.proc.send_signal(signal.SIGTERM)
        thread.join(60)
        assert answers == [200]  # queued work is answered
        assert server.proc.wait(30) == 143
        with pytest.raises(OSError):
            http.client.HTTPConnection("127.0.0.1", server.port, timeout=5).request("GET", "/v1/health")
    finally:
        server.stop()
