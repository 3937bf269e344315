"""Timing that is right on a GPU: synchronised regions, warm-up first, peak memory, the sweep, top ops.

* :func:`measure` – chips/s of ``segmenter.segment`` at one batch size (one warm-up call, then calls until the
  :class:`~.settings.TimeBox` is filled; ``torch.cuda.synchronize`` around each call; peak memory from
  ``torch.cuda.max_memory_allocated``, reset before the warm-up);
* :func:`sweep` – :func:`measure` over the batch sizes, stopping at the first out-of-memory (the segmenters halve
  the batch on CUDA out-of-memory: a batch size that shrank during a call is an out-of-memory too);
* :func:`top_ops` – one call under ``torch.profiler``: the ops that took the time, and how busy the GPU was.
"""

from __future__ import annotations

import resource
import time
from typing import Any, Callable

import numpy as np
import torch

from gpu_parts.settings import TimeBox


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device: torch.device) -> float:
    """Peak GPU memory allocated since the last :func:`reset_peak` (CUDA), else the process's peak RSS."""
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: KiB


def timed(device: torch.device, call: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds of ``call()`` with the device synchronised before and after, and its result."""
    sync(device)
    began = time.perf_counter()
    result = call()
    sync(device)
    return time.perf_counter() - began, result


def is_oom(exc: BaseException) -> bool:
    """A CUDA out-of-memory, also when a segmenter re-raised it at one chip per batch (``ModelError``)."""
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def measure(segmenter, chips: list[np.ndarray], prompt: str, batch: int, box: TimeBox) -> dict[str, Any]:
    """chips/s and ms/chip of ``segmenter.segment(chips[:batch], prompt)`` (see the module docstring).

    The segmenter's image cache must be off (the same chips come back every call). Returns ``{"oom": True}``
    (with the batch) when the batch does not fit.
    """
    if getattr(getattr(segmenter, "cache", None), "enabled", False):
        raise ValueError("measure() needs a segmenter with its image cache off (cache_mb=0)")
    device = segmenter.device
    batch_chips = [chips[k % len(chips)] for k in range(batch)]
    segmenter.batch_size = batch
    reset_peak(device)
    try:
        warm, _ = timed(device, lambda: segmenter.segment(batch_chips, prompt))
        calls: list[float] = []
        while segmenter.batch_size == batch:
            spent = sum(calls)
            if calls and (spent >= box.max_s or (len(calls) >= box.min_calls and spent >= box.min_s)):
                break
            seconds, _ = timed(device, lambda: segmenter.segment(batch_chips, prompt))
            calls.append(seconds)
        shrunk = segmenter.batch_size != batch  # the segmenter halved it on out-of-memory
    except Exception as exc:
        if not is_oom(exc):
            raise
        _free(device)
        return {"batch": batch, "oom": True}
    finally:
        segmenter.batch_size = batch
    if shrunk or not calls:
        _free(device)
        return {"batch": batch, "oom": True}
    total = sum(calls)
    return {"batch": batch, "oom": False, "calls": len(calls), "chips": batch * len(calls),
            "seconds": round(total, 4), "chips_per_s": round(batch * len(calls) / total, 3),
            "ms_per_chip": round(1000 * total / (batch * len(calls)), 3),
            "call_ms_min": round(1000 * min(calls), 2), "warmup_ms": round(1000 * warm, 2),
            "peak_mib": peak_mib(device)}


def sweep(segmenter, chips: list[np.ndarray], prompt: str, sizes: tuple[int, ...], box: TimeBox,
          max_call_s: float, say: Callable[[str], None]) -> dict[str, Any]:
    """:func:`measure` at each batch size until the first out-of-memory; ``{"rows", "best", "batch1"}``.

    A batch size is skipped (and the sweep stops) when the last call, scaled to it, would take longer than
    ``max_call_s`` (the suite's time is short).
    """
    rows: list[dict[str, Any]] = []
    for size in sizes:
        if rows and "call_ms_min" in rows[-1]:
            estimate = rows[-1]["call_ms_min"] / 1000 * size / rows[-1]["batch"]
            if estimate > max_call_s:
                rows.append({"batch": size, "skipped": f"a call would take about {estimate:.0f} s"})
                say(f"batch {size}: skipped (a call would take about {estimate:.0f} s)")
                break
        row = measure(segmenter, chips, prompt, size, box)
        rows.append(row)
        if row["oom"]:
            say(f"batch {size}: out of memory; the sweep stops")
            break
        say(f"batch {size}: {row['chips_per_s']:.2f} chips/s, {row['ms_per_chip']:.1f} ms/chip, "
            f"peak {row['peak_mib']:.0f} MiB ({row['calls']} calls)")
    done = [r for r in rows if r.get("chips_per_s")]
    best = max(done, key=lambda r: r["chips_per_s"]) if done else None
    batch1 = next((r for r in done if r["batch"] == 1), None)
    return {"rows": rows, "best": best, "batch1": batch1}


def top_ops(segmenter, chips: list[np.ndarray], prompt: str, batch: int, limit: int = 12) -> dict[str, Any]:
    """One ``segment`` call of ``batch`` chips under ``torch.profiler`` (after a warm-up call).

    Returns the wall time, the summed self time of GPU kernels (``device_busy_share`` = GPU kernel time / wall:
    far below 1 means the GPU waits on Python and kernel launches) and the top ``limit`` ops by self time on
    the device (CUDA) or the CPU.
    """
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    device = segmenter.device
    batch_chips = [chips[k % len(chips)] for k in range(batch)]
    segmenter.batch_size = batch
    segmenter.segment(batch_chips, prompt)  # warm-up
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        wall, _ = timed(device, lambda: segmenter.segment(batch_chips, prompt))
    # Rows of the ops (not of the kernels, which the device clock would count twice): each kernel's time is
    # the self device time of the op that launched it, so their sum is the GPU's busy time.
    events = [e for e in prof.key_averages() if getattr(e, "device_type", DeviceType.CPU) == DeviceType.CPU]
    on_device = device.type == "cuda"

    def self_us(event) -> float:
        return float(getattr(event, "self_device_time_total" if on_device else "self_cpu_time_total", 0.0) or 0.0)

    ranked = sorted(events, key=self_us, reverse=True)[:limit]
    busy = sum(self_us(e) for e in events) / 1e6 if on_device else None
    return {"batch": batch, "wall_ms": round(1000 * wall, 2), "clock": "device" if on_device else "cpu",
            "device_busy_share": None if busy is None else round(busy / wall, 3),
            "ops": [{"op": e.key[:80], "calls": int(e.count), "self_ms": round(self_us(e) / 1000, 3),
                     "share": round(self_us(e) / 1e6 / wall, 3)} for e in ranked]}


def _free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
