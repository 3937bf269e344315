"""The typed description of a batch job and its ``job.json``.

A job has two halves:

* :class:`JobSpec` — what decides the *results*: sources, prompts, model, engine
  parameters, the chip layout and the AOI. Its :meth:`~JobSpec.fingerprint` is what an
  existing ``OUT_DIR`` is checked against: a different spec on the same folder is refused
  (unless ``restart``), because finished units would no longer match.
* :class:`BatchOptions` — the job's inputs (STAC, AOI, unit size) and how this run goes (executor,
  workers, merge target, retry/stop policy); the latter may change from one run of a job to the next.

``job.json`` holds both plus the library versions; it is written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segearth_geo.errors import UsageError
from segearth_geo.output import atomic_file
from segearth_geo.params import Checked, Rule, SegmentParams, field_name, param

JOB_FILE = "job.json"
JOB_FORMAT = 2  # 2: batch_size left out of the identity, run parameters as SegmentParams
DEFAULT_CHIPS_PER_UNIT = 64
# A job with more chips than this in all (or a scene with more than chips.MAX_CHIPS) is refused unless
# confirmed (allow_large): typically a --gsd far below the native resolution, which multiplies the chip
# count by the square of the ratio. A million 1024-px chips is about a terapixel.
LARGE_JOB_CHIPS = 1_000_000
EXECUTORS = ("local", "ray")


# The run parameters that decide a job's results (and so its identity). ``batch_size`` does not change
# results (units are batch-independent), so a job killed by an out-of-memory error can resume with a
# smaller one; a job has no bbox (its AOI does that) and ``--allow-large`` replaces ``max_chips``.
IDENTITY_PARAMS = ("overlap", "gsd", "bands", "threshold", "min_area", "simplify", "strategy", "zoom_model",
                   "min_coverage", "regularize", "regularize_iou", "smooth", "raster_out", "labels_out")


@dataclass(frozen=True)
class JobSpec:
    """Everything that decides a job's results.

    Attributes:
        sources: GDAL sources in job order (local paths absolute).
        prompts: the prompts, cleaned, in the order given (duplicates removed).
        model: the model as named by the user (a resolved path for checkpoint folders and
            ``file.py:factory`` specs).
        params: the run parameters, resolved for ``chip_size`` (``overlap`` set).
        chip_size: the model's chip size; ``chips_per_unit``: chips per work unit (at most).
        aoi: absolute path of the AOI layer, and ``aoi_sha256`` its content hash.
    """

    sources: tuple[str, ...]
    prompts: tuple[str, ...]
    model: str
    params: SegmentParams
    chip_size: int
    chips_per_unit: int = DEFAULT_CHIPS_PER_UNIT
    aoi: str | None = None
    aoi_sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The job's identity as stored in ``job.json`` (``engine``: chip layout and result-deciding parameters)."""
        params = self.params.to_dict()
        engine = {"chip_size": self.chip_size, **{k: params[k] for k in IDENTITY_PARAMS},
                  "chips_per_unit": self.chips_per_unit}
        return {"sources": list(self.sources), "prompts": list(self.prompts), "model": self.model, "engine": engine,
                "aoi": self.aoi, "aoi_sha256": self.aoi_sha256}

    def fingerprint(self) -> str:
        """sha256 of the canonical JSON of :meth:`to_dict` (what must match on resume)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    def differences(self, other: dict[str, Any], known_chip_size: bool = True) -> list[str]:
        """What differs from ``other`` (a stored :meth:`to_dict`), named as the user knows it.

        ``known_chip_size`` false (before the model is loaded): the chip size, and an overlap left to its
        default, are not compared.
        """
        mine, theirs = self.to_dict(), other if isinstance(other, dict) else {}
        names = [k for k in mine if k != "engine" and mine[k] != theirs.get(k)]
        stored = theirs.get("engine") if isinstance(theirs.get("engine"), dict) else {}
        for key in dict.fromkeys([*mine["engine"], *stored]):  # a key only one side has differs too
            value = mine["engine"].get(key)
            if key == "chip_size" and not known_chip_size:
                continue
            if key == "overlap" and not known_chip_size and self.params.overlap is None:
                continue
            if value != stored.get(key):
                names.append("chip size" if key == "chip_size" else key)
        return names


@dataclass(frozen=True)
class BatchOptions(Checked):
    """How a batch job reads its inputs and how this run of it goes (besides the run parameters and the model).

    ``stac``/``asset``/``aoi``/``chips_per_unit`` belong to the job (a change is refused on resume);
    the others may change between runs of the same job.
    """

    stac: str | None = param(None, Rule("path", "a STAC ItemCollection (or Item) JSON file", metavar="ITEMS.json",
                                         help="A STAC ItemCollection (or Item) JSON whose items are inputs."))
    asset: str | None = param(None, Rule("text", "the name of a STAC asset", metavar="NAME",
                                          help="The STAC asset to read (default: the items' only data asset)."))
    aoi: str | None = param(None, Rule(
        "path", "a polygon layer (GeoPackage, GeoJSON, Shapefile...)", metavar="AREAS.gpkg",
        help="Polygon layer: only chips over these areas are processed and polygons are clipped to them."))
    merge: str | None = param(None, Rule("path", "a .gpkg, .parquet or .fgb file", metavar="ALL.gpkg|.parquet|.fgb",
                                          help="Also write one file across all scenes."))
    merge_crs: str | None = param(None, Rule(
        "text", "a CRS such as EPSG:4326", metavar="EPSG:...",
        help="CRS of the merged file (default: .parquet/.fgb EPSG:4326; .gpkg one layer per CRS)."))
    chips_per_unit: int = param(DEFAULT_CHIPS_PER_UNIT, Rule(
        "count", "a positive number of chips", low=1, metavar="N",
        help="Chips per work unit (the most work lost per worker when a job is killed)."))
    executor: str = param("local", Rule(
        "choice", "an executor", choices=EXECUTORS,
        help="Run units in this process, or on a Ray cluster (pip install \"segearth-geo[ray]\")."))
    ray_address: str | None = param(None, Rule("text", "auto or HOST:PORT", metavar="auto|HOST:PORT",
                                                help="Ray cluster to join (default: start a local one)."))
    workers: int | None = param(None, Rule("count", "a positive number of workers", low=1, metavar="N",
                                            help="Model workers for --executor ray (default: one per GPU, else 2)."))
    retry_failed: bool = param(False, Rule("flag", "true or false",
                                           help="Run only the units that failed in earlier runs."))
    max_failures: int | None = param(None, Rule("count", "a non-negative number of units", low=0, metavar="N",
                                                help="Stop scheduling units after more than N failures."))
    restart: bool = param(False, Rule("flag", "true or false",
                                      help="Discard a different job found in OUT_DIR and start over."))
    allow_large: bool = param(False, Rule(
        "flag", "true or false", help="Accept a scene of more than 100,000 chips or a job of more than 1,000,000."))
    dry_run: bool = param(False, Rule("flag", "true or false",
                                      help="Print scenes, chips, units and a time/memory estimate; write nothing."))

    # What a worker "batch" request may set (the worker runs the job itself: no executor, no dry run).
    REQUEST_FIELDS = ("merge", "merge_crs", "aoi", "stac", "asset", "chips_per_unit", "retry_failed", "restart",
                      "allow_large", "max_failures")

    @classmethod
    def request_fields(cls) -> tuple[str, ...]:
        return cls.REQUEST_FIELDS

    def run_record(self, device: str) -> dict[str, Any]:
        """How this run went, for ``job.json`` (``run``)."""
        keep = ("executor", "ray_address", "workers", "merge", "merge_crs", "retry_failed", "max_failures", "restart",
                "allow_large", "dry_run")
        return {**{k: getattr(self, k) for k in keep}, "device": device}


def versions() -> dict[str, str]:
    """Versions of the libraries that shape the results (recorded in ``job.json``)."""
    import geopandas
    import rasterio
    import shapely

    from segearth_geo._version import __version__

    return {
        "segearth_geo": __version__,
        "python": platform.python_version(),
        "rasterio": rasterio.__version__,
        "gdal": rasterio.__gdal_version__,
        "shapely": shapely.__version__,
        "geopandas": geopandas.__version__,
    }


def read_job(out_dir: Path) -> dict[str, Any] | None:
    """The stored ``job.json`` of ``out_dir`` (``None`` when there is none)."""
    path = out_dir / JOB_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path} is unreadable ({exc}); pass {field_name('restart')} to start the job over") from None
    job = data.get("job") if isinstance(data, dict) else None
    if not isinstance(job, dict) or not isinstance(job.get("engine"), dict) or not isinstance(data.get("run", {}), dict):
        raise UsageError(f"{path} is not a segearth-geo job description (edited by hand?); pass "
                         f"{field_name('restart')} to start the job over")
    return data


def write_job(out_dir: Path, spec: JobSpec, run: dict[str, Any]) -> Path:
    """Write ``job.json`` atomically (temporary file, fsync, rename); ``run``: :meth:`BatchOptions.run_record`."""
    run_dict = dict(run)
    data = {
        "format": JOB_FORMAT,
        "fingerprint": spec.fingerprint(),
        "job": spec.to_dict(),
        "run": run_dict,
        "versions": versions(),
    }
    path = out_dir / JOB_FILE
    with atomic_file(path, "w", ".json") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")
    return path


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
