"""Benchmark readers yielding one :class:`Sample` type.

Names are imported lazily so that ``import segearth_geo.data`` stays cheap.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Sample": "segearth_geo.data.sample",
    "SEG_TOKEN": "segearth_geo.data.sample",
    "NO_TARGET_ANSWER": "segearth_geo.data.sample",
    "DIMENSIONS": "segearth_geo.data.sample",
    "BenchmarkReader": "segearth_geo.data.reader",
    "SampleRecord": "segearth_geo.data.reader",
    "SampleLoadError": "segearth_geo.data.reader",
    "open_dataset": "segearth_geo.data.registry",
    "DATASETS": "segearth_geo.data.registry",
    "rle_decode": "segearth_geo.data.rle",
    "rle_encode": "segearth_geo.data.rle",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        # Cache it: importing a submodule of the same name (``evaluate``) would otherwise
        # leave the submodule, not the function, as this package's attribute.
        globals()[name] = value
        return value
    raise AttributeError(f"module 'segearth_geo.data' has no attribute {name!r}")
