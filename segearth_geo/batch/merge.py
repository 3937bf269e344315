"""One merged file across every finished scene of a job (``--merge``).

Columns: those of the per-scene files (``label, score, area_m2, pixels, prompt, source, model, id``; ``id`` is
unique within a ``source``). Coordinate systems:

* GeoPackage (``.gpkg``): with ``merge_crs`` one layer ``segments`` reprojected to it;
  without, one layer per CRS (``segments`` when all scenes share one, else
  ``segments_<EPSG code>`` / ``segments_<hash>`` for CRSs without a code), unprojected;
* GeoParquet (``.parquet``) and FlatGeobuf (``.fgb``) hold one CRS: everything is
  reprojected to ``merge_crs``, default EPSG:4326 (the summary says so).

Areas stay the true areas measured in each scene's own CRS. The merge streams scene by scene
(memory flat in the number of scenes) into a temporary file in the target folder, renamed when
complete; a killed merge's temporary files are removed by the next run.
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

from segearth_geo.errors import OutputError, SegEarthGeoError, UsageError
from segearth_geo.output import GPKG_VERSION, SEGMENTS_LAYER, remove_stale_temporaries, temporary_path
from segearth_geo.params import field_name

MERGE_FORMATS = {".gpkg": "GPKG", ".parquet": "Parquet", ".geoparquet": "Parquet", ".fgb": "FlatGeobuf"}
DEFAULT_MERGE_CRS = "EPSG:4326"
ARROW_BATCH = 8192  # rows per Arrow batch when converting the staged merge (bounds the conversion's memory)
COLUMNS = ["label", "score", "area_m2", "pixels", "prompt", "source", "model", "id"]  # id: unique per source


@dataclass(frozen=True)
class MergeResult:
    """The merged file: its path, layers (GeoPackage) and a note about reprojection (or ``None``)."""

    path: str
    layers: tuple[str, ...]
    rows: int
    note: str | None


def check_merge(path: str | os.PathLike, merge_crs: str | None, job_folder: Path | None = None) -> Path:
    """Validate ``--merge`` and ``--merge-crs`` before any work (format, folder, CRS).

    A target inside ``job_folder`` is valid even before the job folder exists: the job creates it.
    """
    target = Path(path).expanduser().absolute()
    if target.suffix.lower() not in MERGE_FORMATS:
        raise UsageError(f"{field_name('merge')} must end in .gpkg, .parquet or .fgb, got {target.name}")
    inside = job_folder is not None and target.parent.is_relative_to(Path(job_folder).expanduser().absolute())
    if not target.parent.is_dir() and not inside:
        raise OutputError(f"folder of the merged file {target.parent} does not exist; create it first")
    if target.is_dir():
        raise OutputError(f"{field_name('merge')} {target} is a folder; give a file name such as {target / 'all.gpkg'}")
    if merge_crs is not None:
        parse_crs(merge_crs)
    return target


def parse_crs(text: str) -> CRS:
    try:
        return CRS.from_user_input(text)
    except Exception as exc:
        raise UsageError(f"unknown CRS {text!r} for {field_name('merge_crs')} (use e.g. EPSG:4326): {exc}") from exc


def _layer_name(crs: CRS | None) -> str:
    if crs is None:
        return f"{SEGMENTS_LAYER}_nocrs"
    code = crs.to_epsg()
    return f"{SEGMENTS_LAYER}_{code}" if code else f"{SEGMENTS_LAYER}_{hashlib.sha256(crs.to_wkt().encode()).hexdigest()[:8]}"


def merge_outputs(files: Sequence[str], model: str, path: str | os.PathLike, merge_crs: str | None) -> MergeResult:
    """Merge the per-scene result ``files`` (GeoPackages with a ``segments`` layer) into ``path``.

    Streamed scene by scene, so memory is that of the largest scene, whatever the number of scenes: each
    scene is appended to a temporary GeoPackage beside the target (one layer per CRS, or one reprojected
    layer); a GeoPackage target is that file renamed, GeoParquet and FlatGeobuf targets are converted from it
    as an Arrow stream. Layers that would stay empty are not written (unless every scene is empty: then one
    empty ``segments`` layer). Any failure (disk full included) is one :class:`OutputError` and leaves the
    target as it was.
    """
    target = check_merge(path, merge_crs)
    driver = MERGE_FORMATS[target.suffix.lower()]
    remove_stale_temporaries(target.parent)
    crs = None
    note = None
    if driver != "GPKG" or merge_crs is not None:
        crs = parse_crs(merge_crs or DEFAULT_MERGE_CRS)
        if driver != "GPKG" and merge_crs is None:
            note = (f"{target.suffix} holds one CRS: polygons reprojected to {DEFAULT_MERGE_CRS} (choose with "
                    f"{field_name('merge_crs')})")
    layer_of = _layers(files, crs)
    stage = temporary_path(target, ".gpkg")
    out = temporary_path(target) if driver != "GPKG" else stage
    rows: dict[str, int] = {}
    empty_crs = None
    try:
        for file, layer in zip(files, layer_of):
            frame = gpd.read_file(file, layer=SEGMENTS_LAYER, engine="pyogrio")
            frame["model"] = model
            frame = frame[COLUMNS + ["geometry"]]
            if crs is not None and len(frame):
                if frame.crs is None:
                    raise UsageError(f"{file} has no CRS, so it cannot be reprojected for the merged file; merge to "
                                     f".gpkg without {field_name('merge_crs')}")
                frame = frame.to_crs(crs)
            if len(frame):
                _append(stage, frame, layer)
                rows[layer] = rows.get(layer, 0) + len(frame)
            elif empty_crs is None:
                empty_crs = frame.crs
        if not rows:  # every scene empty: one empty layer, in the scenes' CRS
            _append(stage, _empty(crs or empty_crs or parse_crs(DEFAULT_MERGE_CRS)), SEGMENTS_LAYER)
            rows[SEGMENTS_LAYER] = 0
        if driver != "GPKG":
            _convert(stage, out, driver, crs)
        os.replace(out, target)
    except SegEarthGeoError:
        raise
    except Exception as exc:  # noqa: BLE001 - GDAL/pyogrio/arrow raise many types (FeatureError on a full disk)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise OutputError(f"cannot write the merged file {target}: {first}") from None
    finally:
        for leftover in {stage, out}:
            for name in (leftover, Path(f"{leftover}-journal"), Path(f"{leftover}-wal"), Path(f"{leftover}-shm")):
                name.unlink(missing_ok=True)
    return MergeResult(str(target), tuple(rows) if driver == "GPKG" else (), sum(rows.values()), note)


def _layers(files: Sequence[str], crs: CRS | None) -> list[str]:
    """The layer each scene goes to: ``segments`` for one CRS (or a reprojected merge), else one per CRS."""
    if crs is not None:
        return [SEGMENTS_LAYER] * len(files)
    names = []
    for file in files:
        text = pyogrio.read_info(file, layer=SEGMENTS_LAYER).get("crs")
        names.append(_layer_name(None if text is None else CRS.from_user_input(text)))
    return names if len(set(names)) > 1 else [SEGMENTS_LAYER] * len(files)


def _append(stage: Path, frame: gpd.GeoDataFrame, layer: str) -> None:
    new = {"dataset_options": {"VERSION": GPKG_VERSION}} if not stage.exists() else {}  # QGIS 3.22 reads 1.3 quietly
    frame.to_file(stage, layer=layer, driver="GPKG", engine="pyogrio", geometry_type="Polygon",
                  mode="a" if stage.exists() else "w", layer_options={"SPATIAL_INDEX": "YES"}, **new)


def _convert(stage: Path, out: Path, driver: str, crs: CRS) -> None:
    """The staged layer to GeoParquet or FlatGeobuf, batch by batch (Arrow stream; flat memory)."""
    from pyogrio.raw import open_arrow, write_arrow

    with open_arrow(stage, layer=SEGMENTS_LAYER, use_pyarrow=True, batch_size=ARROW_BATCH) as (meta, reader):
        geometry = meta["geometry_name"] or "geometry"
        if driver == "FlatGeobuf":
            write_arrow(reader, out, driver="FlatGeobuf", geometry_name=geometry, geometry_type="Polygon",
                        crs=crs.to_wkt())
            return
        import json

        import pyarrow.parquet as pq

        geo = {"version": "1.0.0", "primary_column": "geometry",
               "columns": {"geometry": {"encoding": "WKB", "geometry_types": ["Polygon"], "crs": crs.to_json_dict()}}}
        schema = reader.schema
        names = ["geometry" if n == geometry else n for n in schema.names]
        fields = [schema.field(i).with_name(n).remove_metadata() for i, n in enumerate(names)]
        import pyarrow as pa

        schema = pa.schema(fields, metadata={b"geo": json.dumps(geo).encode()})
        with pq.ParquetWriter(out, schema) as writer:
            for batch in reader:
                writer.write_batch(pa.RecordBatch.from_arrays(batch.columns, schema=schema))


def _empty(crs: CRS) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame({c: pd.Series(dtype="float64" if c in ("score", "area_m2") else "object")
                             for c in COLUMNS}, geometry=gpd.GeoSeries([], crs=crs))
