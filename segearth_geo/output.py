"""Writing segmentation results atomically: GeoPackage, GeoJSON, FlatGeobuf, GeoParquet, Shapefile.

The format comes from the file extension (no extension: GeoPackage). Every file is
written to a hidden temporary name in the target folder and renamed onto the target
only when complete, so a failure or cancellation never leaves a partial output.

* ``.gpkg``: GeoPackage 1.3 (:data:`GPKG_VERSION`: QGIS 3.22's GDAL warns on every 1.4 file), layer
  ``segments`` (the polygons), layer ``chips`` (each processed chip's footprint with its text answer),
  both in the source CRS, and the attribute table ``run`` (:data:`RUN_TABLE`: the run's parameters,
  version, model and source as ``key``/``value`` rows);
* ``.geojson`` / ``.json``: RFC 7946, i.e. reprojected to WGS84 (lon, lat); its ``name`` is the file's stem;
* ``.fgb``: FlatGeobuf (layer named after the file's stem); ``.parquet`` / ``.geoparquet``: GeoParquet with the
  run's description under the ``segearth`` key of its metadata; both in the source CRS;
* ``.shp``: ESRI Shapefile, for tools that read nothing else: its limits (10-character field names, text of at
  most 254 bytes, 2 GB per file, no true nulls) are stated once per process; its files (``.shp .shx .dbf .prj
  .cpg``) are written under a temporary name and renamed together, rolled back on failure.

Provenance: :func:`with_provenance` gives every row its ``source`` (the scene), ``model`` and an ``id``
(1, 2, ... in row order; the labels raster of :mod:`segearth_geo.raster_output` holds these ids).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import socket
import uuid
from pathlib import Path
from typing import IO, Any, Iterator

import geopandas as gpd
import numpy as np

from segearth_geo.errors import OutputError, OutputNameError
from segearth_geo.params import field_name

logger = logging.getLogger(__name__)

SEGMENTS_LAYER = "segments"
CHIPS_LAYER = "chips"
RUN_TABLE = "run"  # GeoPackage attribute table: the run's description, one key/value row per item
PROVENANCE = ("source", "model", "id")  # columns with_provenance() adds after the pipeline's
GPKG_VERSION = "1.3"  # GDAL >= 3.11 writes 1.4 by default, which QGIS 3.22 (GDAL 3.6) warns about on every file
FORMATS: dict[str, str] = {
    ".gpkg": "GPKG",
    ".geojson": "GeoJSON",
    ".json": "GeoJSON",
    ".fgb": "FlatGeobuf",
    ".parquet": "Parquet",
    ".geoparquet": "Parquet",
    ".shp": "ESRI Shapefile",
}
SHAPEFILE_PARTS = (".shp", ".shx", ".dbf", ".prj", ".cpg")  # written, renamed together
SHAPEFILE_INDEXES = (".qix", ".sbn", ".sbx")  # spatial indexes of an older file: removed when it is replaced
SHAPEFILE_LIMIT = 2**31  # bytes per .shp/.dbf file that every reader accepts
_warned_shapefile = False


def output_format(path: str | os.PathLike) -> str:
    """The driver for ``path`` from its extension (``"GPKG"`` without one); :class:`OutputNameError` if unknown."""
    suffix = Path(path).suffix.lower()
    if not suffix:
        return "GPKG"
    if suffix not in FORMATS:
        known = ", ".join(sorted(FORMATS))
        raise OutputNameError(f"unknown output format {suffix!r} for {path}; use one of {known}")
    return FORMATS[suffix]


def check_output(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Check before any work that ``path`` can be written; return it as a :class:`Path`.

    Raises :class:`OutputNameError` (a usage error) for a name that cannot be used as given: an
    unknown extension, a name ending in a path separator or naming a folder, an existing file or
    symbolic link (dangling ones included) without ``overwrite``, a name too long for the file
    system; and :class:`OutputError` for a missing target folder or one that cannot be written to.
    Stale temporary files that dead processes left in the folder are removed on the way.
    """
    text = os.fspath(path)
    if text.endswith(("/", os.sep)) or (os.altsep and text.endswith(os.altsep)):
        raise OutputNameError(f"output {text} names a folder; give a file name such as {Path(text) / 'segments.gpkg'}")
    target = Path(text).expanduser()
    output_format(target)
    if len(os.fsencode(target.name)) > NAME_MAX:
        raise OutputNameError(f"output file name is {len(os.fsencode(target.name))} bytes, more than the "
                              f"{NAME_MAX} a file system allows; choose a shorter name")
    if target.is_dir():
        raise OutputNameError(f"output {target} is a folder; give a file name such as {target / 'segments.gpkg'}")
    if os.path.lexists(target) and not overwrite:
        raise OutputNameError(f"output {target} exists; choose another name or pass {field_name('overwrite')}")
    if output_format(target) == "ESRI Shapefile":
        _check_shapefile_names(target, overwrite)
    check_folder(target)
    remove_stale_temporaries(target.parent)
    return target


def check_folder(target: Path) -> None:
    """Raise :class:`OutputError` unless ``target``'s folder exists and accepts new files."""
    folder = target.parent
    if not folder.is_dir():
        raise OutputError(f"output folder {folder} does not exist; create it first")
    probe = temporary_path(target, ".probe")
    try:  # os.access is unreliable (root, ACLs, read-only mounts): really try.
        probe.touch(exist_ok=False)
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"cannot write to output folder {folder}: {exc.strerror or exc}") from exc


# Temporary names: hidden, in the target's folder (so the final rename is atomic), of a fixed short
# length whatever the target's name (GDAL adds "-journal"/"-wal" to a GeoPackage's name, so a name
# derived from the target's could exceed NAME_MAX when the target's does not), and carrying the
# writer's host and process id so that a later run can remove what a killed process left behind
# (only its own host's: on a shared file system another machine's process ids mean nothing here).
TEMP_PREFIX = ".segearth-tmp-"
NAME_MAX = 255  # bytes in one path component on every common file system
_TEMP_PATTERN = re.compile(r"^\.segearth-tmp-([0-9a-f]{6})-(\d+)-[0-9a-f]{8}")
_HOST = hashlib.blake2b(socket.gethostname().encode(), digest_size=3).hexdigest()


def temporary_path(target: Path, suffix: str | None = None) -> Path:
    """A fresh hidden temporary name beside ``target`` (ends in ``suffix``, default the target's)."""
    ending = suffix if suffix is not None else (target.suffix.lower() or ".gpkg")
    return target.with_name(f"{TEMP_PREFIX}{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}{ending}")


@contextlib.contextmanager
def atomic_file(path: Path, mode: str = "wb", suffix: str | None = None) -> Iterator[IO]:
    """Write ``path`` through a temporary file beside it: ``with atomic_file(p) as handle: handle.write(...)``.

    On success the file is flushed, fsynced and renamed onto ``path`` (readers see the old file or the whole new
    one); on any failure (Ctrl-C included) the temporary is removed. Its name carries the host and process id,
    so a later run removes it after a ``kill -9`` (:func:`remove_stale_temporaries`).
    """
    tmp = temporary_path(Path(path), suffix)
    try:
        with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Remove the temporary files in ``folder`` whose writing process no longer runs; return them.

    A process killed while writing (``kill -9``, power loss) cannot clean up; its files carry its
    process id, so the next run in the same folder removes them. Files of live processes are kept.
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP_PATTERN.match(entry.name)
        if match is None or match.group(1) != _HOST or _process_alive(int(match.group(2))):
            continue
        try:
            os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            continue
    if removed:
        logger.info("removed %d temporary file(s) left in %s by processes that no longer run", len(removed), folder)
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists, owned by someone else
    return True


def with_provenance(segments: gpd.GeoDataFrame, source: str | os.PathLike, model: str | None) -> gpd.GeoDataFrame:
    """``segments`` with ``source`` (the scene as given), ``model`` (the model spec; ``""`` when unknown) and ``id``
    (1, 2, ... in row order) after the pipeline's columns, before the geometry."""
    out = segments.drop(columns=[c for c in PROVENANCE if c in segments.columns])
    at = out.columns.get_loc(out.geometry.name)
    out.insert(at, "source", os.fspath(source))
    out.insert(at + 1, "model", "" if model is None else str(model))
    out.insert(at + 2, "id", np.arange(1, len(out) + 1, dtype=np.int64))
    return out


def run_description(source: str | os.PathLike, prompts: list[str], params: Any, model: str | None,
                    **extra: Any) -> dict[str, Any]:
    """What a result file records about its run (GeoPackage ``run`` table, GeoParquet ``segearth`` metadata):
    version, model, source, prompts, the run parameters and ``extra`` (device, chip size...)."""
    from datetime import datetime, timezone

    from segearth_geo._version import __version__

    return {"segearth_geo_version": __version__, "model": model, "source": os.fspath(source),
            "prompts": list(prompts), "parameters": params.to_dict() if hasattr(params, "to_dict") else params,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), **extra}


def write_output(
    path: str | os.PathLike,
    segments: gpd.GeoDataFrame,
    chips: gpd.GeoDataFrame | None = None,
    *,
    overwrite: bool = False,
    run: dict[str, Any] | None = None,
) -> Path:
    """Write ``segments`` (and, for GeoPackage, ``chips``) to ``path`` atomically.

    ``run`` (:func:`run_description`) goes into a GeoPackage's ``run`` table and a GeoParquet's metadata.
    Raises :class:`OutputError` when the file exists without ``overwrite`` or cannot be
    written; nothing is left behind in that case (not even on Ctrl-C or SIGTERM: the temporary
    file is removed; after ``kill -9`` the next run removes it).
    """
    target = check_output(path, overwrite)
    driver = output_format(target)
    tmp = temporary_path(target)
    try:
        _write(tmp, driver, segments, chips, run, target.stem)
        if os.path.lexists(target) and not overwrite:  # appeared while we were working
            raise OutputNameError(f"output {target} appeared while writing; choose another name or pass overwrite")
        if driver == "ESRI Shapefile":
            _replace_shapefile(tmp, target)
        else:
            os.replace(tmp, target)
    except OutputError:
        raise
    except Exception as exc:
        raise OutputError(f"cannot write {target} as {driver}: {exc}") from exc
    finally:
        for leftover in (tmp, Path(f"{tmp}-journal"), Path(f"{tmp}-wal"), Path(f"{tmp}-shm"),
                         *(tmp.with_suffix(ext) for ext in SHAPEFILE_PARTS)):
            leftover.unlink(missing_ok=True)
    return target


def _write(tmp: Path, driver: str, segments: gpd.GeoDataFrame, chips: gpd.GeoDataFrame | None,
           run: dict[str, Any] | None, name: str) -> None:
    if driver == "Parquet":
        _write_parquet(tmp, segments, run)
        return
    if driver == "GeoJSON":
        options: dict = {}
        if segments.crs is not None:
            segments = segments.to_crs(4326)
            options["RFC7946"] = "YES"
        else:
            logger.warning("no CRS: writing GeoJSON in pixel coordinates, which is not RFC 7946")
        segments.to_file(tmp, driver="GeoJSON", engine="pyogrio", geometry_type="Polygon", layer=name, **options)
        return
    if driver == "ESRI Shapefile":
        _write_shapefile(tmp, segments)
        return
    if driver == "FlatGeobuf":
        segments.to_file(tmp, driver=driver, engine="pyogrio", geometry_type="Polygon", layer=name)
        return
    segments.to_file(tmp, driver=driver, engine="pyogrio", geometry_type="Polygon", layer=SEGMENTS_LAYER,
                     dataset_options={"VERSION": GPKG_VERSION})
    if chips is not None:
        chips.to_file(tmp, driver=driver, engine="pyogrio", layer=CHIPS_LAYER, geometry_type="Polygon")
    if run is not None:
        import pandas as pd
        import pyogrio

        rows = pd.DataFrame({"key": list(run), "value": [v if isinstance(v, str) else json.dumps(v) for v in
                                                         run.values()]})
        pyogrio.write_dataframe(rows, tmp, layer=RUN_TABLE, driver="GPKG", append=True)


def _write_parquet(tmp: Path, segments: gpd.GeoDataFrame, run: dict[str, Any] | None) -> None:
    """GeoParquet, with ``run`` as JSON under the ``segearth`` key of the file's metadata."""
    if run is None:
        segments.to_parquet(tmp, index=False)
        return
    import pyarrow.parquet as pq
    from geopandas.io.arrow import _geopandas_to_arrow

    table = _geopandas_to_arrow(segments, index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), b"segearth": json.dumps(run).encode()})
    pq.write_table(table, tmp)


def read_run(path: str | os.PathLike) -> dict[str, Any]:
    """The run description a GeoPackage (``run`` table) or GeoParquet (``segearth`` metadata) file records
    (``{}`` when it has none)."""
    path = Path(path)
    if output_format(path) == "Parquet":
        import pyarrow.parquet as pq

        meta = pq.read_schema(path).metadata or {}
        return json.loads(meta[b"segearth"]) if b"segearth" in meta else {}
    import pyogrio

    if RUN_TABLE not in [name for name, _ in pyogrio.list_layers(path)]:
        return {}
    rows = pyogrio.read_dataframe(path, layer=RUN_TABLE)
    out = {}
    for key, value in zip(rows["key"], rows["value"]):
        try:
            out[key] = json.loads(value)
        except (TypeError, ValueError):
            out[key] = value
    return out


# ---------------------------------------------------------------------------------------------- Shapefile
def _check_shapefile_names(target: Path, overwrite: bool) -> None:
    """Refuse (one line) a Shapefile that cannot be replaced as one set: a part of an older file without
    ``overwrite``, or a part's name taken by a folder."""
    for ext in SHAPEFILE_PARTS + SHAPEFILE_INDEXES:
        part = target.with_suffix(ext)
        if part.is_dir():
            raise OutputNameError(f"cannot write {target} as one set of files: {part} is a folder")
        if os.path.lexists(part) and not overwrite and ext in SHAPEFILE_PARTS:
            raise OutputNameError(f"output {part} (part of {target.name}) exists; choose another name or pass "
                                  f"{field_name('overwrite')}")


def _write_shapefile(tmp: Path, segments: gpd.GeoDataFrame) -> None:
    global _warned_shapefile
    if not _warned_shapefile:
        _warned_shapefile = True
        logger.warning("Shapefile output: field names of at most 10 characters, text of at most 254 bytes (longer "
                       "prompts and sources are cut), at most 2 GB per file, no true nulls; .gpkg has none of "
                       "these limits")
    long = [c for c in segments.columns if len(c) > 10]
    if long:
        raise OutputNameError(f"a Shapefile takes field names of at most 10 characters, not {', '.join(long)}; "
                              "write .gpkg instead")
    vertices = int(np.sum(segments.geometry.count_coordinates())) if len(segments) else 0
    shp_bytes = 100 + len(segments) * 56 + vertices * 16 + int(segments.geometry.count_interior_rings().sum()) * 4
    if shp_bytes > SHAPEFILE_LIMIT:
        raise OutputError(f"the polygons need about {shp_bytes / 2**30:.1f} GiB in a .shp file, more than the 2 GB a "
                          "Shapefile holds; write .gpkg or .parquet instead")
    segments.to_file(tmp, driver="ESRI Shapefile", engine="pyogrio", geometry_type="Polygon", encoding="UTF-8")


def _replace_shapefile(tmp: Path, target: Path) -> None:
    """Rename the temporary Shapefile's parts onto ``target``'s as one set: an older file's parts are moved
    aside first and put back if any rename fails; its spatial indexes (now stale) are removed."""
    moves = [(tmp.with_suffix(ext), target.with_suffix(ext)) for ext in SHAPEFILE_PARTS
             if tmp.with_suffix(ext).exists()]
    old = [target.with_suffix(ext) for ext in SHAPEFILE_PARTS + SHAPEFILE_INDEXES
           if os.path.lexists(target.with_suffix(ext))]
    aside = [(path, temporary_path(target, path.suffix + ".old")) for path in old]
    done: list[tuple[Path, Path]] = []
    try:
        for path, backup in aside:
            os.replace(path, backup)
            done.append((backup, path))
        for source, final in moves:
            os.replace(source, final)
            done.append((final, None))
    except OSError as exc:
        for moved, back in reversed(done):
            if back is None:
                moved.unlink(missing_ok=True)
            else:
                os.replace(moved, back)
        raise OutputError(f"cannot put the parts of {target.name} in place together ({exc}); nothing was "
                          "changed") from exc
    for _, backup in aside:
        backup.unlink(missing_ok=True)
