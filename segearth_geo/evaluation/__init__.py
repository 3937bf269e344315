"""gIoU / cIoU metrics and the benchmark evaluation loop (names imported lazily)."""

from __future__ import annotations

import importlib

_EXPORTS = {
    "TargetScore": "segearth_geo.evaluation.metrics",
    "IoUSummary": "segearth_geo.evaluation.metrics",
    "pair_targets": "segearth_geo.evaluation.metrics",
    "summarize": "segearth_geo.evaluation.metrics",
    "summarize_per_dimension": "segearth_geo.evaluation.metrics",
    "evaluate": "segearth_geo.evaluation.evaluate",
    "evaluate_benchmark": "segearth_geo.evaluation.evaluate",
    "EvalResult": "segearth_geo.evaluation.evaluate",
    "SampleResult": "segearth_geo.evaluation.evaluate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        # Cache it: importing a submodule of the same name (``evaluate``) would otherwise
        # leave the submodule, not the function, as this package's attribute.
        globals()[name] = value
        return value
    raise AttributeError(f"module 'segearth_geo.evaluation' has no attribute {name!r}")
