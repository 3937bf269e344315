"""One merged file across every finished scene of a job (``--merge``).

Columns: those of the per-scene files (``label, score, area_m2, pixels, prompt, source``)
plus ``model``. Coordinate systems:

* GeoPackage (``.gpkg``): with ``merge_crs`` one layer ``segments`` reprojected to it;
  without, one layer per CRS (``segments`` when all scenes share one, else
  ``segments_<EPSG code>`` / ``segments_<hash>`` for CRSs without a code), unprojected;
* GeoParquet (``.parquet``) and FlatGeobuf (``.fgb``) hold one CRS: everything is
  reprojected to ``merge_crs``, default EPSG:4326 (the summary says so).

Areas stay the true areas measured in each scene's own CRS. The file is written to a
temporary name in the target folder and renamed when complete.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import geopandas as gpd
import pandas as pd
import pyogrio
from pyproj import CRS

from segearth_geo.errors import OutputError, UsageError
from segearth_geo.output import SEGMENTS_LAYER

MERGE_FORMATS = {".gpkg": "GPKG", ".parquet": "Parquet", ".geoparquet": "Parquet", ".fgb": "FlatGeobuf"}
DEFAULT_MERGE_CRS = "EPSG:4326"
COLUMNS = ["label", "score", "area_m2", "pixels", "prompt", "source", "model"]


@dataclass(frozen=True)
class MergeResult:
    """The merged file: its path, layers (GeoPackage) and a note about reprojection (or ``None``)."""

    path: str
    layers: tuple[str, ...]
    rows: int
    note: str | None


def check_merge(path: str | os.PathLike, merge_crs: str | None) -> Path:
    """Validate ``--merge`` and ``--merge-crs`` before any work (format, folder, CRS)."""
    target = Path(path).expanduser().absolute()
    if target.suffix.lower() not in MERGE_FORMATS:
        raise UsageError(f"--merge must end in .gpkg, .parquet or .fgb, got {target.name}")
    if not target.parent.is_dir():
        raise OutputError(f"folder of the merged file {target.parent} does not exist; create it first")
    if target.is_dir():
        raise OutputError(f"--merge {target} is a folder; give a file name such as {target / 'all.gpkg'}")
    if merge_crs is not None:
        parse_crs(merge_crs)
    return target


def parse_crs(text: str) -> CRS:
    try:
        return CRS.from_user_input(text)
    except Exception as exc:
        raise UsageError(f"unknown CRS {text!r} for --merge-crs (use e.g. EPSG:4326): {exc}") from exc


def _layer_name(crs: CRS | None) -> str:
    if crs is None:
        return f"{SEGMENTS_LAYER}_nocrs"
    code = crs.to_epsg()
    return f"{SEGMENTS_LAYER}_{code}" if code else f"{SEGMENTS_LAYER}_{hashlib.sha256(crs.to_wkt().encode()).hexdigest()[:8]}"


def merge_outputs(files: Sequence[str], model: str, path: str | os.PathLike, merge_crs: str | None) -> MergeResult:
    """Merge the per-scene result ``files`` (GeoPackages with a ``segments`` layer) into ``path``."""
    target = check_merge(path, merge_crs)
    driver = MERGE_FORMATS[target.suffix.lower()]
    frames = []
    for file in files:
        frame = gpd.read_file(file, layer=SEGMENTS_LAYER, engine="pyogrio")
        frame["model"] = model
        frames.append(frame[COLUMNS + ["geometry"]])
    note = None
    if driver != "GPKG" or merge_crs is not None:
        crs = parse_crs(merge_crs or DEFAULT_MERGE_CRS)
        if driver != "GPKG" and merge_crs is None:
            note = f"{target.suffix} holds one CRS: polygons reprojected to {DEFAULT_MERGE_CRS} (choose with --merge-crs)"
        if any(f.crs is None for f in frames if len(f)):
            raise UsageError("a scene has no CRS, so it cannot be reprojected for the merged file; merge to .gpkg "
                             "without --merge-crs")
        groups = {SEGMENTS_LAYER: [f.to_crs(crs) if f.crs is not None else f.set_crs(crs) for f in frames]}
        empty_crs = crs
    else:
        by_crs: dict[str, list[gpd.GeoDataFrame]] = {}
        for frame in frames:
            by_crs.setdefault(_layer_name(None if frame.crs is None else CRS(frame.crs)), []).append(frame)
        groups = by_crs if len(by_crs) > 1 else {SEGMENTS_LAYER: next(iter(by_crs.values()), [])}
        empty_crs = parse_crs(DEFAULT_MERGE_CRS)
    tmp = target.with_name(f".{target.stem}.{os.getpid()}.tmp{target.suffix}")
    rows = 0
    try:
        for layer, parts in groups.items():
            merged = _concat(parts, empty_crs)
            rows += len(merged)
            if driver == "Parquet":
                merged.to_parquet(tmp, index=False)
            else:
                extra = {"layer": layer} if driver == "GPKG" else {}
                merged.to_file(tmp, driver=driver, engine="pyogrio", geometry_type="Polygon", **extra)
        os.replace(tmp, target)
    except (OSError, ValueError, pyogrio.errors.DataSourceError) as exc:
        raise OutputError(f"cannot write the merged file {target}: {exc}") from exc
    finally:
        for leftover in (tmp, Path(f"{tmp}-journal"), Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
            leftover.unlink(missing_ok=True)
    return MergeResult(str(target), tuple(groups) if driver == "GPKG" else (), rows, note)


def _concat(parts: list[gpd.GeoDataFrame], crs: CRS) -> gpd.GeoDataFrame:
    parts = [p for p in parts if len(p)] or parts[:1]
    if not parts:
        return gpd.GeoDataFrame({c: pd.Series(dtype="float64" if c in ("score", "area_m2") else "object")
                                 for c in COLUMNS}, geometry=gpd.GeoSeries([], crs=crs))
    return gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), crs=parts[0].crs)
