"""The worker's ``batch`` request: a batch job (:func:`segearth_geo.batch.run_batch`) on the loaded model.

The QGIS algorithm "Segment many rasters" sends it, so a batch job runs in the same engine
process as the dock's requests and reuses its loaded model. Progress arrives as ``progress``
replies (``done``/``total`` chips plus the job's event: ``event`` (chips, unit, scene), ``units_done``, ``units_total``,
``message``, ``source``); ``cancel`` stops the job between chip batches. The job's ledger keeps
what finished: the same request sent again resumes it (see ``docs/worker-protocol.md``).
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable

from segearth_geo.errors import Cancelled, UsageError

# The fields of a batch request besides "id" and "type" (names as in ``run_batch``, out_dir = "output_dir").
BATCH_FIELDS = ("inputs", "prompts", "output_dir", "merge", "merge_crs", "aoi", "stac", "asset", "overlap", "gsd",
                "threshold", "min_area", "simplify", "batch_size", "chips_per_unit", "retry_failed", "restart",
                "allow_large", "max_failures")
_TEXT = ("merge", "merge_crs", "aoi", "stac", "asset")
_NUMBERS = ("gsd", "threshold", "min_area", "simplify")
_COUNTS = {"overlap": 0, "batch_size": 1, "chips_per_unit": 1, "max_failures": 0}
_FLAGS = ("retry_failed", "restart", "allow_large")


def batch_arguments(request: dict[str, Any]) -> dict[str, Any]:
    """Validate a batch request into ``run_batch`` keyword arguments (only the fields it gives)."""
    inputs, prompts, out_dir = request.get("inputs"), request.get("prompts"), request.get("output_dir")
    if not isinstance(inputs, list) or not all(isinstance(v, str) and v.strip() for v in inputs):
        raise UsageError("batch needs \"inputs\": a list of raster paths, globs or @list.txt files")
    if not inputs and not request.get("stac"):
        raise UsageError("batch needs at least one input (or \"stac\")")
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
        raise UsageError("batch needs \"prompts\": a non-empty list of non-empty strings")
    if not isinstance(out_dir, str) or not out_dir.strip():
        raise UsageError("batch needs \"output_dir\": the job folder")
    kwargs: dict[str, Any] = {"inputs": list(inputs), "prompts": list(prompts), "out_dir": out_dir}
    for key in _TEXT:
        value = request.get(key)
        if value is not None:
            if not isinstance(value, str) or not value.strip():
                raise UsageError(f"\"{key}\" must be a non-empty string, got {value!r}")
            kwargs[key] = value
    for key in _NUMBERS:
        value = request.get(key)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise UsageError(f"\"{key}\" must be a finite number, got {value!r}")
            kwargs[key] = float(value)
    for key, smallest in _COUNTS.items():
        value = request.get(key)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < smallest:
                raise UsageError(f"\"{key}\" must be an integer >= {smallest}, got {value!r}")
            kwargs[key] = value
    for key in _FLAGS:
        value = request.get(key)
        if value is not None:
            if not isinstance(value, bool):
                raise UsageError(f"\"{key}\" must be true or false, got {value!r}")
            kwargs[key] = value
    return kwargs


def run_batch_request(segmenter: Any, model: str | None, arguments: dict[str, Any], cancelled: Callable[[], bool],
                      reply: Callable[..., None], describe: str) -> tuple[str, dict[str, Any]]:
    """Run one batch job on ``segmenter``; returns the ``result`` reply's fields (the job's report)."""
    from dataclasses import asdict

    from segearth_geo.batch import run_batch

    if segmenter is None:
        raise UsageError("no model is loaded; send a \"load\" request or start the worker with --model")
    kwargs = dict(arguments)

    def on_progress(event: Any) -> None:
        if cancelled():
            raise Cancelled(f"request {describe} was cancelled; finished units are kept in "
                            f"{kwargs.get('out_dir')}: send the same request again to resume")
        fields = asdict(event)
        reply("progress", done=int(event.chips_done), total=int(event.chips_total), event=fields.pop("kind"),
              **{k: v for k, v in fields.items() if k not in ("chips_done", "chips_total")})

    started = time.perf_counter()
    report = run_batch(kwargs.pop("inputs"), kwargs.pop("prompts"), kwargs.pop("out_dir"), model=model or "demo",
                       segmenter=segmenter, progress=on_progress, **kwargs)
    fields = {k: v for k, v in report.to_dict().items() if k not in ("id", "type")}
    fields.setdefault("seconds", round(time.perf_counter() - started, 3))
    return "result", fields
