"""gIoU / cIoU metrics and the benchmark evaluation loop (names imported lazily)."""

from __future__ import annotations

from segearth_geo.lazy import lazy_exports

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

__getattr__ = lazy_exports(__name__, _EXPORTS)

# ``evaluate`` is also the name of a submodule: importing ``segearth_geo.evaluation.evaluate`` first
# would make the package attribute the module. Binding the function here (the submodule is light:
# no torch) settles it for good, whatever is imported first.
from segearth_geo.evaluation.evaluate import evaluate as evaluate  # noqa: E402
