"""Project-wide pytest settings.

`tests/qgis/` holds the plugin tests; they run under the system Python that has the QGIS
bindings (`/usr/bin/python3 -m pytest tests/qgis`), so the main run (the engine's Python,
which has no `qgis` module) does not collect them.
"""

from __future__ import annotations

import importlib.util
import os


def _has_qgis() -> bool:
    # `tests/qgis` itself looks like a namespace package named `qgis` from here: ask for qgis.core.
    try:
        return importlib.util.find_spec("qgis.core") is not None
    except ImportError:
        return False


collect_ignore = [] if _has_qgis() else ["qgis"]

# Tests must be deterministic and must not fight over the two cores of the CI machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("PYTHONHASHSEED", "0")
