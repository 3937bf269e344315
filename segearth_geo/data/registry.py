"""Open a benchmark split by name: ``open_dataset("lasers", root, "test")``."""

from __future__ import annotations

import inspect
import os
import re
from typing import Any

from segearth_geo.data.earthreason import EarthReasonReader
from segearth_geo.data.lasers import LaSeRSReader, SynthEarthReader
from segearth_geo.data.phrase_list import RefSegRSReader, RISBenchReader
from segearth_geo.data.reader import BenchmarkReader
from segearth_geo.data.rrsisd import RRSISDReader
from segearth_geo.errors import UsageError

DATASETS: dict[str, type[BenchmarkReader]] = {
    "lasers": LaSeRSReader,
    "synthearth": SynthEarthReader,
    "rrsisd": RRSISDReader,
    "refsegrs": RefSegRSReader,
    "earthreason": EarthReasonReader,
    "risbench": RISBenchReader,
}


def open_dataset(name: str, root: str | os.PathLike, split: str = "test", **options: Any) -> BenchmarkReader:
    """Index the ``split`` of benchmark ``name`` stored under ``root``.

    Args:
        name: one of :data:`DATASETS` (``lasers``, ``synthearth``, ``rrsisd``, ``refsegrs``,
            ``earthreason``, ``risbench``).
        root: the dataset folder (see each reader's docstring for its layout).
        split: ``train``, ``val``, ``test`` … (letters, digits, ``_`` and ``-`` only).
        options: reader-specific keywords (``annotation_file`` for LaSeRS/SynthEarth,
            ``all_sentences`` for RRSIS-D).

    Raises:
        UsageError: unknown dataset name or malformed split name.
        DatasetError: the folder or its annotation files are missing or malformed.
    """
    key = name.lower()
    if key not in DATASETS:
        raise UsageError(f"unknown dataset {name!r}; choose one of {', '.join(sorted(DATASETS))}")
    if not re.fullmatch(r"[A-Za-z0-9_-]+", split):
        raise UsageError(f"invalid split name {split!r}; use e.g. train, val or test")
    reader = DATASETS[key]
    accepted = set(inspect.signature(reader.__init__).parameters) - {"self", "root", "split"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise UsageError(f"dataset {name!r} has no option {', '.join(unknown)} (it accepts: {sorted(accepted) or 'none'})")
    return reader(root, split, **options)
