"""Each part in its own process, with a time cap: one part's failure, crash, hang or out-of-memory costs only it.

Processes come from a ``forkserver`` that imported torch, transformers and the parts once (so a part starts in
well under a second) and never touches CUDA (forking a process that initialised CUDA is not safe); the suite's own
process never imports torch. A part writes its :class:`~.record.Recorder` after every step, so the figures it
took are kept when it is killed.
"""

from __future__ import annotations

import importlib
import json
import multiprocessing
import signal
import time
from pathlib import Path

from gpu_parts.record import Recorder, describe_error
from gpu_parts.settings import Settings

PARTS = {"segearth-r2": "gpu_parts.backends:r2_part", "sam3": "gpu_parts.backends:sam3_part",
         "segearth-r1": "gpu_parts.backends:r1_part", "engine": "gpu_parts.engine:engine_part",
         "serve": "gpu_parts.serving:serve_part", "probe": "gpu_parts.runner:probe_part"}
PRELOAD = ["numpy", "torch", "transformers", "rasterio", "geopandas", "segearth_geo.engine",
           "segearth_geo.model.segearth_r2.segmenter", "segearth_geo.model.segearth_r1.segmenter",
           "segearth_geo.model.sam3.segmenter", "gpu_parts.backends", "gpu_parts.engine", "gpu_parts.serving"]
_CONTEXT = None


def context():
    global _CONTEXT
    if _CONTEXT is None:
        _CONTEXT = multiprocessing.get_context("forkserver")
        _CONTEXT.set_forkserver_preload(PRELOAD)
    return _CONTEXT


def probe_part(settings: Settings, inputs: dict, rec: Recorder) -> None:
    """What torch sees: CUDA, the device, its memory, bf16, cuDNN."""
    import torch

    info = {"cuda_available": torch.cuda.is_available(), "torch_cuda": torch.version.cuda}
    if info["cuda_available"]:
        props = torch.cuda.get_device_properties(0)
        info.update(name=props.name, memory_gib=round(props.total_memory / 2**30, 1),
                    capability=f"{props.major}.{props.minor}", devices=torch.cuda.device_count(),
                    bf16=torch.cuda.is_bf16_supported(), cudnn=torch.backends.cudnn.version())
    rec.put("device", info)


def _child(name: str, settings: Settings, inputs: dict, path: Path) -> None:
    def terminated(*_):
        raise SystemExit(143)  # the finally blocks run: a part's server is stopped

    signal.signal(signal.SIGTERM, terminated)
    rec = Recorder(name, path)
    rec.save()
    module, _, function = PARTS[name].partition(":")
    try:
        getattr(importlib.import_module(module), function)(settings, inputs, rec)
    except BaseException as exc:  # noqa: BLE001 - recorded for the report, then the process ends
        rec.errors["part"] = describe_error(exc)
        rec.save()
        raise


def run_part(name: str, settings: Settings, inputs: dict, timeout: float, folder: Path) -> dict:
    """Run one part (at most ``timeout`` s); its record with ``status`` and ``seconds``.

    ``status``: ``ok``, ``errors`` (some steps failed; the others' figures are there), ``skipped`` (the part said
    why), ``timed out after N s`` or ``crashed (exit code N)``.
    """
    path = folder / f"{name}.json"
    process = context().Process(target=_child, args=(name, settings, inputs, path), name=f"gpu-suite-{name}")
    began = time.perf_counter()
    process.start()
    process.join(timeout)
    status = None
    if process.is_alive():
        process.terminate()  # SIGTERM first: the part stops its server
        process.join(20)
        if process.is_alive():
            process.kill()
            process.join(10)
        status = f"timed out after {timeout:.0f} s"
    elif process.exitcode != 0:
        status = f"crashed (exit code {process.exitcode})"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record = {"data": {}, "steps": {}, "errors": {}, "notes": []}
    if status is None:
        status = "errors" if record.get("errors") else "skipped" if record["data"].get("skipped") else "ok"
    record.update(status=status, seconds=round(time.perf_counter() - began, 2))
    return record
