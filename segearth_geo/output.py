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

import logging
import os
import uuid
from pathlib import Path

import geopandas as gpd

from segearth_geo.errors import OutputError

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
    """The driver for ``path`` from its extension (``"GPKG"`` without one); :class:`OutputError` if unknown."""
    suffix = Path(path).suffix.lower()
    if not suffix:
        return "GPKG"
    if suffix not in FORMATS:
        known = ", ".join(sorted(FORMATS))
        raise OutputError(f"unknown output format {suffix!r} for {path}; use one of {known}")
    return FORMATS[suffix]


def check_output(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Check before any work that ``path`` can be written; return it as a :class:`Path`.

    Raises :class:`OutputError` for an unknown extension, an existing file without
    ``overwrite``, a missing target folder, or a folder that cannot be written to.
    """
    target = Path(path).expanduser()
    output_format(target)
    if target.is_dir():
        raise OutputError(f"output {target} is a folder; give a file name such as {target / 'segments.gpkg'}")
    if target.exists() and not overwrite:
        raise OutputError(f"output {target} exists; choose another name or pass overwrite (--overwrite)")
    check_folder(target)
    return target


def check_folder(target: Path) -> None:
    """Raise :class:`OutputError` unless ``target``'s folder exists and accepts new files."""
    folder = target.parent
    if not folder.is_dir():
        raise OutputError(f"output folder {folder} does not exist; create it first")
    probe = folder / f".{target.name}.{uuid.uuid4().hex[:8]}.probe"
    try:  # os.access is unreliable (root, ACLs, read-only mounts): really try.
        probe.touch(exist_ok=False)
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"cannot write to output folder {folder}: {exc.strerror or exc}") from exc


def write_output(
    path: str | os.PathLike,
    segments: gpd.GeoDataFrame,
    chips: gpd.GeoDataFrame | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Write ``segments`` (and, for GeoPackage, ``chips``) to ``path`` atomically.

    Raises :class:`OutputError` when the file exists without ``overwrite`` or cannot be
    written; nothing is left behind in that case.
    """
    target = check_output(path, overwrite)
    driver = output_format(target)
    tmp = target.with_name(f".{target.stem}.{uuid.uuid4().hex[:8]}.tmp{target.suffix or '.gpkg'}")
    try:
        _write(tmp, driver, segments, chips)
        if target.exists() and not overwrite:  # appeared while we were working
            raise OutputError(f"output {target} appeared while writing; choose another name or pass overwrite")
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
