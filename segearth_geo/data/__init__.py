"""Benchmark readers yielding one :class:`Sample` type.

Names are imported lazily so that ``import segearth_geo.data`` stays cheap.
"""

from __future__ import annotations

from segearth_geo.lazy import lazy_exports

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

__getattr__ = lazy_exports(__name__, _EXPORTS)
