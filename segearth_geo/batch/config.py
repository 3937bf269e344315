"""The typed description of a batch job and its ``job.json``.

A job has two halves:

* :class:`JobSpec` — what decides the *results*: sources, prompts, model, engine
  parameters, the chip layout and the AOI. Its :meth:`~JobSpec.fingerprint` is what an
  existing ``OUT_DIR`` is checked against: a different spec on the same folder is refused
  (unless ``restart``), because finished units would no longer match.
* :class:`RunOptions` — how this run goes (executor, workers, device, merge target,
  retry/stop policy). They may change from one run of a job to the next.

``job.json`` holds both plus the library versions; it is written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from segearth_geo.errors import UsageError

JOB_FILE = "job.json"
JOB_FORMAT = 1
DEFAULT_CHIPS_PER_UNIT = 64
# A job with more chips than this in all (or a scene with more than chips.MAX_CHIPS) is refused unless
# confirmed (allow_large): typically a --gsd far below the native resolution, which multiplies the chip
# count by the square of the ratio. A million 1024-px chips is about a terapixel.
LARGE_JOB_CHIPS = 1_000_000
EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class EngineParams:
    """Engine parameters shared by every unit (the ``segment`` options of a batch job).

    ``overlap`` is resolved (never ``None``) once the segmenter's ``chip_size`` is known.
    """

    chip_size: int
    overlap: int
    gsd: float | None = None
    bands: tuple[int, ...] | None = None
    threshold: float = 0.5
    min_area: float | None = None
    simplify: float | None = None
    batch_size: int = 8
    chips_per_unit: int = DEFAULT_CHIPS_PER_UNIT


@dataclass(frozen=True)
class JobSpec:
    """Everything that decides a job's results.

    Attributes:
        sources: GDAL sources in job order (local paths absolute).
        prompts: the prompts, stripped, in the order given (duplicates removed).
        model: the model as named by the user (a resolved path for checkpoint folders and
            ``file.py:factory`` specs), or the segmenter's class for a segmenter object.
        engine: the engine parameters.
        aoi: absolute path of the AOI layer, and ``aoi_sha256`` its content hash.
    """

    sources: tuple[str, ...]
    prompts: tuple[str, ...]
    model: str
    engine: EngineParams
    aoi: str | None = None
    aoi_sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["sources"], data["prompts"] = list(self.sources), list(self.prompts)
        if self.engine.bands is not None:
            data["engine"]["bands"] = list(self.engine.bands)
        return data

    def fingerprint(self) -> str:
        """sha256 of the canonical JSON of :meth:`to_dict` (what must match on resume)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    def differences(self, other: dict[str, Any]) -> list[str]:
        """Names of the top-level and engine fields that differ from ``other`` (a stored ``to_dict``)."""
        mine = self.to_dict()
        names = [k for k in mine if k != "engine" and mine[k] != other.get(k)]
        theirs = other.get("engine") or {}
        names += [f"engine.{k}" for k in mine["engine"] if mine["engine"][k] != theirs.get(k)]
        return names


@dataclass(frozen=True)
class RunOptions:
    """How one run of a job goes; may change between runs of the same job.

    Attributes:
        executor: ``"local"`` (this process) or ``"ray"``.
        ray_address: ``ray.init`` address (``"auto"``, ``"HOST:PORT"``); ``None`` starts a local Ray.
        workers: model workers (Ray actors); default one per GPU, else 2 on CPU.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N``.
        merge: optional merged output file (``.gpkg``, ``.parquet``, ``.fgb``).
        merge_crs: CRS of the merged file (GeoParquet/FlatGeobuf default EPSG:4326; GeoPackage
            default: one layer per CRS).
        retry_failed: run only the units that failed before.
        max_failures: stop scheduling new units after this many failures (``None``: never).
        restart: discard an existing job in the folder and start over.
        allow_large: accept a scene of more than ``chips.MAX_CHIPS`` chips or a job of more than
            :data:`LARGE_JOB_CHIPS`.
        dry_run: plan, calibrate and report; write nothing.
    """

    executor: str = "local"
    ray_address: str | None = None
    workers: int | None = None
    device: str = "auto"
    merge: str | None = None
    merge_crs: str | None = None
    retry_failed: bool = False
    max_failures: int | None = None
    restart: bool = False
    allow_large: bool = False
    dry_run: bool = False
    gdal_options: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise UsageError(f"unknown executor {self.executor!r}; use one of {', '.join(EXECUTORS)}")
        if self.workers is not None and (isinstance(self.workers, bool) or int(self.workers) < 1):
            raise UsageError(f"workers must be a positive number, got {self.workers!r}")
        if self.max_failures is not None and (isinstance(self.max_failures, bool) or int(self.max_failures) < 0):
            raise UsageError(f"max_failures must be a non-negative number, got {self.max_failures!r}")


def versions() -> dict[str, str]:
    """Versions of the libraries that shape the results (recorded in ``job.json``)."""
    import geopandas
    import rasterio
    import shapely

    from segearth_geo import __version__

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
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path} is unreadable ({exc}); pass --restart to start the job over") from exc


def write_job(out_dir: Path, spec: JobSpec, run: RunOptions) -> Path:
    """Write ``job.json`` atomically (temporary file, fsync, rename)."""
    run_dict = asdict(run)
    run_dict.pop("gdal_options")  # may hold credentials: never written to disk
    data = {
        "format": JOB_FORMAT,
        "fingerprint": spec.fingerprint(),
        "job": spec.to_dict(),
        "run": run_dict,
        "versions": versions(),
    }
    path = out_dir / JOB_FILE
    tmp = out_dir / f".{JOB_FILE}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return path


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
