"""Hostile input for the real ``segearth-geo worker`` subprocess (issue 10).

Every reply line must be strict JSON in valid UTF-8, whatever arrives on stdin; no request
may stop later ones from being answered. The segmenters at the bottom of this file are
loaded by the worker itself (``--model THIS_FILE:factory``); they are cheap and exact.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from segearth_geo.prediction import ChipPrediction, Target
from segearth_geo.worker import REQUEST_FIELDS, encode_reply, id_key, json_safe

sys.path.insert(0, str(Path(__file__).resolve().parent / "qgis"))
from engine_models import COLOUR_MODEL, PROMPT, SLOW_MODEL  # noqa: E402
from synthetic_scene import ORIGIN, scene_array  # noqa: E402

HERE = Path(__file__).resolve()
UTM = "EPSG:32633"
CLI = [sys.executable, "-m", "segearth_geo_cli.main"]


def write_scene(path: Path, width: int = 512, height: int = 512) -> Path:
    """The shared synthetic scene (red square = "red roof", blue = "pool") as a 1 m UTM GeoTIFF."""
    data = scene_array(max(width, height))[:, :height, :width]
    profile = dict(driver="GTiff", width=width, height=height, count=3, dtype="uint8", crs=UTM,
                   transform=from_origin(*ORIGIN, 1.0, 1.0))
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def _no_constants(name: str):
    raise ValueError(f"{name} is not strict JSON")


class StrictWorker:
    """A running worker whose stdout is checked byte by byte: UTF-8, strict JSON, one object per line."""

    def __init__(self, *args: str, verbose: bool = False, env: dict[str, str] | None = None) -> None:
        argv = [*CLI, *(["-v"] if verbose else []), "worker", *args]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env={**os.environ, **(env or {})})
        self.replies: queue.Queue = queue.Queue()
        self.bad_lines: list[tuple[bytes, str]] = []
        self.stderr = bytearray()
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr.read()), daemon=True).start()

    def _read(self) -> None:
        for raw in self.proc.stdout:
            try:
                message = json.loads(raw.decode("utf-8"), parse_constant=_no_constants)
                assert isinstance(message, dict) and "id" in message and "type" in message
            except Exception as exc:  # noqa: BLE001 - recorded, the test asserts there are none
                self.bad_lines.append((raw, repr(exc)))
                continue
            self.replies.put(message)

    def send(self, message: dict | str | bytes) -> None:
        if isinstance(message, dict):
            message = json.dumps(message)
        if isinstance(message, str):
            message = message.encode("utf-8", "surrogatepass")  # a test may send a broken line on purpose
        self.proc.stdin.write(message + b"\n")
        self.proc.stdin.flush()

    def next(self, timeout: float = 30.0) -> dict:
        return self.replies.get(timeout=timeout)

    def until(self, request_id, kinds=("result", "error", "ready", "pong"), timeout: float = 30.0) -> list[dict]:
        """Replies for ``request_id`` up to the first of ``kinds`` (others are kept in ``self.other``)."""
        got, deadline = [], time.monotonic() + timeout
        while True:
            message = self.next(max(deadline - time.monotonic(), 0.01))
            if message["id"] == request_id and type(message["id"]) is type(request_id):
                got.append(message)
                if message["type"] in kinds:
                    return got

    def ping(self, request_id: str = "ping") -> dict:
        self.send({"id": request_id, "type": "ping"})
        return self.until(request_id)[-1]

    def stderr_text(self) -> str:
        return bytes(self.stderr).decode("utf-8", "replace")

    def finish(self) -> int:
        """Close stdin (the worker answers what is queued and exits); return the exit code."""
        self.proc.stdin.close()
        code = self.proc.wait(30)
        time.sleep(0.2)  # let the reader threads drain
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        assert self.bad_lines == [], f"non-strict reply lines: {self.bad_lines}"


@pytest.fixture()
def worker():
    w = StrictWorker("--model", COLOUR_MODEL, "--device", "cpu")
    assert w.next(120)["type"] == "ready"
    yield w
    w.close()


@pytest.fixture()
def scene(tmp_path) -> Path:
    return write_scene(tmp_path / "scene.tif")


def segment(request_id, raster: Path | str, output: Path | str, **fields) -> dict:
    return {"id": request_id, "type": "segment", "raster": str(raster), "prompt": PROMPT, "output": str(output),
            **fields}


# -- replies are always strict JSON -----------------------------------------------------------------
def test_file_names_that_are_not_utf8_get_answers_and_the_worker_keeps_working(worker, scene, tmp_path):
    # "\udcfe" is how Python (surrogateescape) names the byte 0xfe of a non-UTF-8 file name.
    worker.send(segment("odd-out", scene, f"{tmp_path}/\udcfe.gpkg"))
    result = worker.until("odd-out")[-1]
    assert result["type"] == "result", result
    assert result["output"] == f"{tmp_path}/\\udcfe.gpkg"  # the documented rule: \\udcXX, six characters
    assert os.listdir(os.fsencode(tmp_path)).count(b"\xfe.gpkg") == 1
    assert result["polygons"] == {"pool": 1, "red roof": 1}

    worker.send(segment("odd-in", f"{tmp_path}/\udcfd.tif", tmp_path / "never.gpkg"))
    error = worker.until("odd-in")[-1]
    assert error["type"] == "error" and "\\udcfd.tif" in error["message"], error
    # The job thread survived both: the next request is answered and the worker is idle again.
    worker.send(segment("after", scene, tmp_path / "after.gpkg"))
    assert worker.until("after")[-1]["type"] == "result"
    assert worker.ping()["busy"] is False


def test_answers_and_labels_with_lone_surrogates_are_escaped(tmp_path, scene):
    w = StrictWorker("--model", f"{HERE}:odd_text")
    try:
        assert w.next(120)["type"] == "ready"
        w.send(segment("s", scene, tmp_path / "odd.geojson"))
        reply = w.until("s")[-1]
        # The engine may or may not manage to write such text; either way one strict reply comes back.
        assert reply["type"] in ("result", "error"), reply
        assert w.ping()["busy"] is False
    finally:
        w.close()


def test_a_job_that_raises_system_exit_ends_only_that_request(tmp_path, scene):
    w = StrictWorker("--model", f"{HERE}:exits")
    try:
        assert w.next(120)["type"] == "ready"
        for n in (1, 2):
            w.send(segment(n, scene, tmp_path / f"{n}.gpkg"))
            error = w.until(n, timeout=20)[-1]
            assert error["type"] == "error" and error["error"] == "SystemExit", error
        assert w.ping()["busy"] is False
        assert w.finish() == 0
    finally:
        w.close()


# -- ids ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("request_id", [[1, "a"], {"k": [1, 2], "b": None}, 1.5, True, 0, 10**30, "", "é ☃ 🛰"])
def test_any_json_id_is_echoed_unchanged(worker, request_id):
    pong = worker.ping(request_id)
    assert pong["type"] == "pong" and pong["id"] == request_id and type(pong["id"]) is type(request_id)


def test_array_id_can_be_cancelled_by_an_array_target(tmp_path, scene):
    w = StrictWorker("--model", SLOW_MODEL, env={"SEGEARTH_TEST_DELAY": "0.5"})
    try:
        assert w.next(120)["type"] == "ready"
        job_id = ["job", {"n": 1}]
        w.send(segment(job_id, scene, tmp_path / "a.gpkg", batch_size=1))
        assert w.next()["type"] == "progress"
        assert w.ping()["busy"] is True
        # Same object, keys in another order: the same id.
        w.send('{"id": {"cancel": 1}, "type": "cancel", "target": ["job", {"n": 1}]}')
        assert w.until({"cancel": 1})[-1] == {"id": {"cancel": 1}, "type": "result", "cancelled": job_id,
                                              "found": True}
        assert w.until(job_id)[-1]["cancelled"] is True
        assert not (tmp_path / "a.gpkg").exists()
        assert w.ping()["busy"] is False
    finally:
        w.close()


def test_lines_that_are_not_utf8_get_an_error_with_id_null(worker):
    worker.send(b'{"id": "\xff\xfe", "type": "ping"}')
    worker.send(b"\xc3(")
    for _ in range(2):
        error = worker.next()
        assert error["id"] is None and error["type"] == "error" and "UTF-8" in error["message"], error
    assert worker.ping()["type"] == "pong"


@pytest.mark.parametrize("bad_id", ["NaN", "Infinity", "-Infinity", "1e400", "[1, -1e999]", '"\\ud800"', "null"])
def test_ids_strict_json_cannot_carry_are_refused(worker, bad_id):
    worker.send(f'{{"id": {bad_id}, "type": "ping"}}')
    error = worker.next()
    assert error["type"] == "error" and error["id"] is None, error
    assert "id" in error["message"]
    assert worker.ping()["type"] == "pong"  # and every line so far was strict JSON (checked at close)


def test_a_second_request_with_a_running_id_is_refused_and_busy_stays_true(tmp_path, scene):
    w = StrictWorker("--model", SLOW_MODEL, env={"SEGEARTH_TEST_DELAY": "0.4"})
    try:
        assert w.next(120)["type"] == "ready"
        w.send(segment("s", scene, tmp_path / "one.gpkg", batch_size=1))
        assert w.next()["type"] == "progress"
        w.send(segment("s", scene, tmp_path / "two.gpkg"))
        w.send({"id": "s", "type": "ping"})
        refused = []
        while len(refused) < 2:
            if (message := w.next())["type"] != "progress":
                refused.append(message)
        assert [m["type"] for m in refused] == ["error", "error"], refused
        assert all(m["id"] == "s" and m["id_in_use"] is True for m in refused)
        assert w.ping()["busy"] is True
        w.send({"id": "c", "type": "cancel", "target": "s"})
        assert w.until("c")[-1]["found"] is True
        assert w.until("s")[-1]["cancelled"] is True
        assert w.ping()["busy"] is False
        assert not (tmp_path / "two.gpkg").exists()
        w.send(segment("s", scene, tmp_path / "three.gpkg"))  # the id is free again
        assert w.until("s")[-1]["type"] == "result"
    finally:
        w.close()


@pytest.mark.parametrize("kind, extra", [("segment", {"treshold": 0.3}), ("ping", {"busy": True}),
                                         ("load", {"model": COLOUR_MODEL, "devise": "cpu"}),
                                         ("cancel", {"target": "x", "cancel": "x"}), ("shutdown", {"now": 1})])
def test_unknown_fields_are_refused_with_the_allowed_ones(worker, scene, tmp_path, kind, extra):
    request = segment("u", scene, tmp_path / "u.gpkg") if kind == "segment" else {"id": "u", "type": kind}
    worker.send({**request, **extra})
    error = worker.until("u")[-1]
    assert error["type"] == "error", error
    unknown = [k for k in extra if k not in REQUEST_FIELDS[kind]]
    assert all(repr(k) in error["message"] for k in unknown)
    assert all(field in error["message"] for field in REQUEST_FIELDS[kind])
    assert not (tmp_path / "u.gpkg").exists()
    assert worker.ping()["type"] == "pong"  # shutdown with an unknown field did not shut down


# -- numbers ------------------------------------------------------------------------------------
@pytest.mark.parametrize("field, value", [
    ("bbox", "[-Infinity, -Infinity, Infinity, Infinity]"), ("bbox", "[0, 0, 1e400, 1]"),
    ("bbox", "[0, 0, NaN, 1]"), ("bbox", "[0, 0, true, 1]"),
    ("gsd", "NaN"), ("gsd", "1e400"), ("threshold", "Infinity"), ("min_area", "-Infinity"), ("simplify", "NaN"),
    ("overlap", "-1"), ("overlap", "1.5"), ("batch_size", "0"), ("overwrite", '"false"'),
])
def test_numbers_must_be_finite_and_of_the_right_kind(worker, scene, tmp_path, field, value):
    request = json.dumps(segment("n", scene, tmp_path / "n.gpkg"))[:-1] + f', "{field}": {value}}}'
    worker.send(request)
    replies = worker.until("n", timeout=20)
    assert [r["type"] for r in replies] == ["error"], replies  # refused before any chip
    assert f'"{field}"' in replies[0]["message"], replies[0]
    assert not (tmp_path / "n.gpkg").exists()
    assert "Traceback" not in worker.stderr_text()


# -- cancel and overwrite -----------------------------------------------------------------------
def test_cancel_during_the_run_with_overwrite_keeps_the_old_file(tmp_path, scene):
    old = tmp_path / "keep.gpkg"
    old.write_bytes(b"the user's previous result")
    w = StrictWorker("--model", SLOW_MODEL, env={"SEGEARTH_TEST_DELAY": "0.4"})
    try:
        assert w.next(120)["type"] == "ready"
        w.send(segment("s", scene, old, overwrite=True, batch_size=1))
        first = w.next()
        assert first["type"] == "progress" and first["done"] < first["total"]
        w.send({"id": "c", "type": "cancel", "target": "s"})
        error = w.until("s")[-1]
        assert error["type"] == "error" and error["cancelled"] is True
        assert "left as it was" in error["message"]
        assert old.read_bytes() == b"the user's previous result"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.gpkg", "scene.tif"]
    finally:
        w.close()


def test_cancel_after_the_last_batch_keeps_the_complete_new_file(tmp_path):
    # One chip of a fine checkerboard: after its progress reply the engine still vectorises and
    # writes ~25k polygons (about a second), which is when this cancel arrives.
    raster = write_scene(tmp_path / "one_chip.tif", 256, 256)
    old = tmp_path / "result.gpkg"
    old.write_bytes(b"the user's previous result")
    w = StrictWorker("--model", f"{HERE}:checkerboard")
    try:
        assert w.next(120)["type"] == "ready"
        w.send(segment("s", raster, old, overwrite=True))
        while (progress := w.next())["done"] < progress["total"]:
            assert progress["type"] == "progress"
        w.send({"id": "c", "type": "cancel", "target": "s"})
        assert w.until("c")[-1]["found"] is True
        result = w.until("s")[-1]
        assert result["type"] == "result" and result["cancel"] == "too late", result
        written = gpd.read_file(old, layer=result["layer"])  # the complete new file, not the old bytes
        assert len(written) == result["count"] == 3 * 128 * 128 // 2
        assert sorted(p.name for p in tmp_path.iterdir()) == ["one_chip.tif", "result.gpkg"]
    finally:
        w.close()


def test_sigterm_cancels_the_running_job_and_leaves_no_files(tmp_path, scene):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    w = StrictWorker("--model", SLOW_MODEL, env={"SEGEARTH_TEST_DELAY": "0.4"})
    try:
        assert w.next(120)["type"] == "ready"
        w.send(segment("s", scene, out_dir / "t.gpkg", batch_size=1))
        assert w.next()["type"] == "progress"
        w.proc.terminate()
        assert w.proc.wait(15) == 143
        time.sleep(0.2)
        assert w.until("s", timeout=1)[-1]["cancelled"] is True  # the job was answered before the exit
        assert list(out_dir.iterdir()) == []
    finally:
        w.close()


# -- one overlap default ------------------------------------------------------------------------
def _polygons(path: Path) -> list[bytes]:
    gdf = gpd.read_file(path, layer="segments")
    return sorted(g.normalize().wkb for g in gdf.geometry)


def test_worker_and_cli_give_the_same_polygons(tmp_path):
    raster = write_scene(tmp_path / "scene.tif", 700, 500)
    model = f"{HERE}:chip_centres"
    cli_out = tmp_path / "cli.gpkg"
    done = subprocess.run([*CLI, "-q", "segment", str(raster), "mark the chip centres", "-o", str(cli_out),
                           "--model", model], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    w = StrictWorker("--model", model)
    try:
        assert w.next(120)["type"] == "ready"
        outputs = {}
        for name, extra in (("default", {}), ("explicit", {"overlap": 128})):
            outputs[name] = tmp_path / f"worker_{name}.gpkg"
            w.send({**segment(name, raster, outputs[name], **extra), "prompt": "mark the chip centres"})
            assert w.until(name)[-1]["type"] == "result"
    finally:
        w.close()
    assert _polygons(outputs["default"]) == _polygons(cli_out)
    assert _polygons(outputs["explicit"]) != _polygons(cli_out)  # the overlap field acts (and the test can tell)


# -- quiet stderr -------------------------------------------------------------------------------
@pytest.mark.parametrize("verbose", [False, True])
def test_library_warnings_stay_off_stderr_unless_verbose(tmp_path, scene, verbose):
    w = StrictWorker("--model", f"{HERE}:warns", verbose=verbose)
    try:
        assert w.next(120)["type"] == "ready"
        for n in range(3):
            w.send(segment(n, scene, tmp_path / f"{n}.gpkg"))
            assert w.until(n)[-1]["type"] == "result"
        assert w.finish() == 0
    finally:
        w.close()
    shown = "past_key_values is deprecated" in w.stderr_text()
    assert shown is verbose, w.stderr_text()


# -- the encoder itself -------------------------------------------------------------------------
def test_encode_reply_always_gives_strict_utf8_json():
    message = {"id": ["a", 1], "type": "result", "score": float("nan"), "big": float("inf"),
               "text": "caf\udce9", "nested": {"k\udcff": [np.float32(0.5), np.int64(3), np.float64("-inf")]},
               "path": Path("/tmp/x.gpkg")}
    line = encode_reply(message)
    line.encode("utf-8")  # no lone surrogate left
    back = json.loads(line, parse_constant=_no_constants)
    assert back == {"id": ["a", 1], "type": "result", "score": None, "big": None, "text": "caf\\udce9",
                    "nested": {"k\\udcff": [0.5, 3, None]}, "path": "/tmp/x.gpkg"}
    assert json_safe("plain ☃") == "plain ☃"
    assert json_safe({None: np.bool_(True), 2: np.arange(2), 1.5: ()}) == {"null": True, "2": [0, 1], "1.5": []}


def test_id_keys_are_canonical():
    assert id_key({"a": 1, "b": [2]}) == id_key({"b": [2], "a": 1})
    assert len({id_key(1), id_key(1.0), id_key(True), id_key("1")}) == 4


# -- segmenters loaded by the worker subprocess (--model THIS_FILE:factory) ---------------------
class _Checkerboard:
    """Three targets, each a checkerboard of 2x2-pixel cells: many polygons, slow to vectorise and write."""

    chip_size = 256

    def segment(self, chips, prompt):
        out = []
        for chip in chips:  # chip: (h, w, 3) uint8
            rows, cols = np.mgrid[0:chip.shape[0], 0:chip.shape[1]]
            board = ((rows // 2 + cols // 2) % 2 == 0).astype(np.float32)  # (h, w)
            out.append(ChipPrediction("Sure [SEG] [SEG] [SEG]", [Target(f"cell {i}", board) for i in range(3)]))
        return out


class _ChipCentres:
    """A disk of radius 12 px at the centre of every chip: the polygons show where the chips were."""

    chip_size = 256

    def segment(self, chips, prompt):
        out = []
        for chip in chips:
            h, w = chip.shape[:2]
            rows, cols = np.mgrid[0:h, 0:w]
            disk = ((rows - h / 2) ** 2 + (cols - w / 2) ** 2 <= 144).astype(np.float32)
            out.append(ChipPrediction("Sure [SEG]", [Target("centre", disk)]))
        return out


class _Warns:
    """The colour model, plus the FutureWarning a library might raise on every call."""

    def __init__(self) -> None:
        from engine_models import ColourSegmenter

        self.inner = ColourSegmenter()
        self.chip_size = self.inner.chip_size

    def segment(self, chips, prompt):
        warnings.warn("past_key_values is deprecated; use a Cache instead", FutureWarning, stacklevel=1)
        return self.inner.segment(chips, prompt)


class _OddText(_ChipCentres):
    """Answers and labels with a lone surrogate (text that cannot be written as UTF-8)."""

    def segment(self, chips, prompt):
        return [ChipPrediction("caf\udce9 [SEG]", [Target("caf\udce9", p.targets[0].probability)])
                for p in super().segment(chips, prompt)]


class _NoisyBytes(_Warns):
    """The colour model, writing 100 kB that is not UTF-8 to stderr (fd 2, like a C library) per call.

    More than a pipe holds: a client that stops reading stderr would block the worker.
    """

    def segment(self, chips, prompt):
        os.write(2, b"GDAL: cannot open /data/caf\xe9.tif " + b"\xff" * 100_000 + b"\n")
        return self.inner.segment(chips, prompt)


class _Exits(_ChipCentres):
    def segment(self, chips, prompt):
        raise SystemExit(3)


def checkerboard() -> _Checkerboard:
    return _Checkerboard()


def chip_centres() -> _ChipCentres:
    return _ChipCentres()


def warns() -> _Warns:
    return _Warns()


def odd_text() -> _OddText:
    return _OddText()


def noisy_bytes() -> _NoisyBytes:
    return _NoisyBytes()


def exits() -> _Exits:
    return _Exits()


def test_absurd_grids_are_refused_at_once_and_the_worker_stays_usable(worker, scene, tmp_path):
    """``gsd`` far below the native 1 m: refused with its chip count, not built until memory runs out."""
    started = time.monotonic()
    worker.send(segment("tiny-gsd", scene, tmp_path / "a.gpkg", gsd=0.0001))
    [reply] = worker.until("tiny-gsd")
    assert time.monotonic() - started < 20
    assert reply["type"] == "error" and reply["error"] == "UsageError"
    assert "chips" in reply["message"] and "max_chips" in reply["message"]
    assert not worker.ping()["busy"]
    worker.send(segment("fine", scene, tmp_path / "b.gpkg", max_chips=0))
    assert worker.until("fine")[-1]["type"] == "result"
    assert (tmp_path / "b.gpkg").exists() and not (tmp_path / "a.gpkg").exists()


def test_prompts_list_runs_in_one_request(worker, scene, tmp_path):
    worker.send({"id": "multi", "type": "segment", "raster": str(scene), "prompts": [PROMPT, "blue pool"],
                 "output": str(tmp_path / "m.gpkg")})
    reply = worker.until("multi")[-1]
    assert reply["type"] == "result", reply
    assert reply["prompts"] == [PROMPT, "blue pool"] and set(reply["answers_by_prompt"]) == {PROMPT, "blue pool"}
    frame = gpd.read_file(tmp_path / "m.gpkg", layer="segments")
    assert set(frame["prompt"]) <= {PROMPT, "blue pool"} and len(frame) == reply["count"]
    worker.send({"id": "both", "type": "segment", "raster": str(scene), "prompt": PROMPT, "prompts": [PROMPT],
                 "output": str(tmp_path / "x.gpkg")})
    assert worker.until("both")[-1]["type"] == "error"
