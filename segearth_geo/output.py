"""Writing segmentation results atomically: GeoPackage, GeoJSON, FlatGeobuf, GeoParquet.

The format comes from the file extension (no extension: GeoPackage). Every file is
written to a hidden temporary name in the target folder and renamed onto the target
only when complete, so a failure or cancellation never leaves a partial output.

* ``.gpkg``: layer ``segments`` (the polygons) plus layer ``chips`` (each processed
  chip's footprint with its text answer), both in the source CRS;
* ``.geojson`` / ``.json``: RFC 7946, i.e. reprojected to WGS84 (lon, lat);
* ``.fgb``: FlatGeobuf; ``.parquet`` / ``.geoparquet``: GeoParquet; both in the source CRS.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
import uuid
from pathlib import Path

import geopandas as gpd

from segearth_geo.errors import OutputError, OutputNameError

logger = logging.getLogger(__name__)

SEGMENTS_LAYER = "segments"
CHIPS_LAYER = "chips"
FORMATS: dict[str, str] = {
    ".gpkg": "GPKG",
    ".geojson": "GeoJSON",
    ".json": "GeoJSON",
    ".fgb": "FlatGeobuf",
    ".parquet": "Parquet",
    ".geoparquet": "Parquet",
}


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
        raise OutputNameError(f"output {target} exists; choose another name or pass overwrite (--overwrite)")
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


def write_output(
    path: str | os.PathLike,
    segments: gpd.GeoDataFrame,
    chips: gpd.GeoDataFrame | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Write ``segments`` (and, for GeoPackage, ``chips``) to ``path`` atomically.

    Raises :class:`OutputError` when the file exists without ``overwrite`` or cannot be
    written; nothing is left behind in that case (not even on Ctrl-C or SIGTERM: the temporary
    file is removed; after ``kill -9`` the next run removes it).
    """
    target = check_output(path, overwrite)
    driver = output_format(target)
    tmp = temporary_path(target)
    try:
        _write(tmp, driver, segments, chips)
        if os.path.lexists(target) and not overwrite:  # appeared while we were working
            raise OutputNameError(f"output {target} appeared while writing; choose another name or pass overwrite")
        os.replace(tmp, target)
    except OutputError:
        raise
    except Exception as exc:
        raise OutputError(f"cannot write {target} as {driver}: {exc}") from exc
    finally:
        for leftover in (tmp, Path(f"{tmp}-journal"), Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
            leftover.unlink(missing_ok=True)
    return target


def _write(tmp: Path, driver: str, segments: gpd.GeoDataFrame, chips: gpd.GeoDataFrame | None) -> None:
    if driver == "Parquet":
        segments.to_parquet(tmp, index=False)
        return
    if driver == "GeoJSON":
        options: dict = {}
        if segments.crs is not None:
            segments = segments.to_crs(4326)
            options["RFC7946"] = "YES"
        else:
            logger.warning("no CRS: writing GeoJSON in pixel coordinates, which is not RFC 7946")
        segments.to_file(tmp, driver="GeoJSON", engine="pyogrio", geometry_type="Polygon", **options)
        return
    layer = {"layer": SEGMENTS_LAYER} if driver == "GPKG" else {}
    segments.to_file(tmp, driver=driver, engine="pyogrio", geometry_type="Polygon", **layer)
    if driver == "GPKG" and chips is not None:
        chips.to_file(tmp, driver=driver, engine="pyogrio", layer=CHIPS_LAYER, geometry_type="Polygon")
