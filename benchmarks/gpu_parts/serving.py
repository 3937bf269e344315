"""Serving: chips/s of SAM3 in-process vs through ``segearth-geo serve`` on the same device.

The server is a real ``segearth-geo serve`` subprocess on 127.0.0.1 (a free port, no token) loading the same
random-weight SAM3 through ``load_model``'s ``file.py:factory`` path (:func:`~.models.sam3_real`), with the same
batch size, score threshold and dtype, the image cache off on both sides (the same chips come back). Both sides
are warmed up, then the same chips go through ``segment`` in-process and through
:class:`~segearth_geo.serve.client.RemoteSegmenter` (upload, the server's batching and model, download). Skipped
with a note when this checkout has no ``segearth_geo.serve`` or the ``serve`` extra (uvicorn, starlette).
"""

from __future__ import annotations

import importlib.util
import signal
import time
from pathlib import Path
from typing import Any

from gpu_parts.backends import SAM3_CONCEPTS, calibrate_score_threshold
from gpu_parts.models import SERVE_FACTORIES, sam3_segmenter
from gpu_parts.record import Recorder
from gpu_parts.settings import Settings
from gpu_parts.timing import timed

REPO = Path(__file__).resolve().parents[2]
MODELS_FILE = Path(__file__).resolve().parent / "models.py"
START_TIMEOUT_S = 90.0


def missing_serve() -> str | None:
    """Why the serving part cannot run here (``None`` when it can)."""
    if importlib.util.find_spec("segearth_geo.serve") is None:
        return "segearth_geo.serve does not exist in this checkout"
    absent = [name for name in ("uvicorn", "starlette") if importlib.util.find_spec(name) is None]
    if absent:
        return f"the serve extra is not installed ({', '.join(absent)}): pip install \"segearth-geo[serve]\""
    return None


def throughput(segmenter, chips, prompt: str) -> dict[str, Any]:
    """chips/s of one ``segment`` call over ``chips`` (the device synchronised around it when it has one)."""
    device = getattr(segmenter, "device", None)
    if device is not None:
        seconds, _ = timed(device, lambda: segmenter.segment(chips, prompt))
    else:  # the remote segmenter: its results are on this host when the call returns
        began = time.perf_counter()
        segmenter.segment(chips, prompt)
        seconds = time.perf_counter() - began
    return {"chips": len(chips), "seconds": round(seconds, 4), "chips_per_s": round(len(chips) / seconds, 3)}


def serve_part(settings: Settings, inputs: dict, rec: Recorder) -> None:
    why = missing_serve()
    if why:
        rec.put("skipped", why)
        rec.note(f"serving skipped: {why}")
        return
    from segearth_geo.model.testing import random_chips
    from segearth_geo.serve.client import RemoteSegmenter

    batch = int(inputs.get("batch") or (8 if settings.device.startswith("cuda") else 4))
    prompt = SAM3_CONCEPTS[0]
    local = None
    with rec.step("build"):
        local = sam3_segmenter(settings.sam3_preset, settings.device, settings.dtype, batch_size=batch)
        chips = random_chips(local.chip_size, settings.serve_chips, seed=5)
        rec.put("calibration", calibrate_score_threshold(local, chips[0], prompt, settings.instances_per_concept))
    if local is None:
        return
    threshold = local.score_threshold
    server = _server([f"--device={settings.device}", f"--dtype={settings.dtype}", f"--batch-size={batch}",
                      f"--score-threshold={threshold!r}", "--cache-mb=0"], settings)
    try:
        with rec.step("server start"):
            began = time.perf_counter()
            server.start()
            rec.put("server", {"url": server.url, "start_s": round(time.perf_counter() - began, 2), "batch": batch})
        if not server.alive():
            return
        remote = RemoteSegmenter(server.url)
        with rec.step("warm-up"):
            local.segment(chips[:batch], prompt)
            remote.segment(chips[:batch], prompt)
        with rec.step("in-process"):
            rec.put("in_process", throughput(local, chips, prompt))
        with rec.step("through serve"):
            rec.put("served", throughput(remote, chips, prompt))
        if "in_process" in rec.data and "served" in rec.data:
            ratio = rec.data["served"]["chips_per_s"] / rec.data["in_process"]["chips_per_s"]
            rec.put("ratio", round(ratio, 4))
            rec.say(f"in-process {rec.data['in_process']['chips_per_s']:.2f} chips/s, through serve "
                    f"{rec.data['served']['chips_per_s']:.2f} chips/s (ratio {ratio:.3f})")
    finally:
        code = server.stop()
        rec.put("server_log_tail", (server.stdout + server.stderr)[-8:])
        if code not in (None, 0, 143, -signal.SIGTERM):
            rec.note(f"the server exited with code {code}")


def _server(args: list[str], settings: Settings):
    """The library's :class:`~segearth_geo.serve.local.LocalServer` (a real ``segearth-geo serve`` on 127.0.0.1, a
    free port, no token, stopped with SIGTERM then SIGKILL) for this suite's SAM3 factory."""
    from segearth_geo.serve.local import LocalServer

    spec = f"{MODELS_FILE}:{SERVE_FACTORIES[settings.sam3_preset]}"
    return LocalServer(spec, *args, cwd=REPO, start_timeout=START_TIMEOUT_S)
