"""Expanding what the user names as inputs into GDAL sources, and reading the AOI.

Accepted inputs (in any mix, order kept, duplicates dropped):

* a path or any GDAL source (``/vsicurl/https://…``, ``https://…``, ``/vsis3/…``);
* a glob (``tiles/*.tif``, ``**`` recursive) — expanded and sorted; one matching nothing is
  an error;
* ``@list.txt`` — one source per line; blank lines and lines starting with ``#`` are
  ignored; relative paths are relative to the list file's folder;
* a STAC ItemCollection JSON (:func:`stac_sources`, read with pystac) and the asset to use;
  relative hrefs are relative to the JSON file.

Local paths are made absolute and symbolic links resolved, so that a job does not depend on
the working directory, every worker of a cluster reads the same file, and one file reached
through two names is processed once. Existence is not checked here: a missing or corrupt
raster fails its scene, not the job.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Sequence

from segearth_geo.errors import UsageError
from segearth_geo.params import field_name

_GLOB_CHARS = set("*?[")


def is_remote(source: str) -> bool:
    """``True`` for GDAL virtual file systems and URLs (never resolved against the file system)."""
    return source.startswith("/vsi") or "://" in source


def _absolute(source: str, base: Path | None = None) -> str:
    if is_remote(source):
        return source
    path = Path(source).expanduser()
    if not path.is_absolute() and base is not None:
        path = base / path
    return os.path.realpath(path)


def expand_inputs(inputs: Sequence[str | os.PathLike]) -> list[str]:
    """Paths, globs and ``@list`` files -> GDAL sources (see the module docstring)."""
    sources: list[str] = []
    for item in inputs:
        text = os.fspath(item).strip()
        if not text:
            raise UsageError(f"an input is empty; give raster paths, globs, @list.txt files or {field_name('stac')}")
        if text.startswith("@"):
            sources.extend(_read_list(Path(text[1:]).expanduser()))
        elif not is_remote(text) and _GLOB_CHARS & set(text) and not os.path.exists(text):
            matches = sorted(glob.glob(os.path.expanduser(text), recursive=True))
            matches = [m for m in matches if os.path.isfile(m)]
            if not matches:
                raise UsageError(f"input pattern {text!r} matches no file")
            sources.extend(_absolute(m) for m in matches)
        else:
            sources.append(_absolute(text))
    return list(dict.fromkeys(sources))


def _read_list(path: Path) -> list[str]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read the input list {path}: {exc.strerror or exc}") from None
    try:
        lines = data.decode("utf-8-sig").splitlines()  # a byte-order mark (Windows editors) is not part of a path
    except UnicodeDecodeError as exc:
        raise UsageError(f"the input list {path} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
                         f"{exc.start}); save it as UTF-8") from None
    base = path.resolve().parent
    sources = [_absolute(line.strip(), base) for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not sources:
        raise UsageError(f"the input list {path} names no source (one raster path or URL per line)")
    return sources


def stac_sources(path: str | os.PathLike, asset: str | None) -> list[str]:
    """The hrefs of ``asset`` of every item of a STAC ItemCollection (or a single Item) JSON file.

    Without ``asset`` the items' only asset with role ``data`` (or only GeoTIFF asset) is used.
    Raises :class:`UsageError` when pystac is missing, the file is not STAC, or an item lacks the asset.
    """
    try:
        import pystac
    except ImportError as exc:
        raise UsageError('reading STAC needs pystac: pip install "segearth-geo[stac]" (or pip install pystac)') from exc
    file = Path(path).expanduser().resolve()
    try:
        collection = pystac.ItemCollection.from_file(str(file))
        items = list(collection)
    except Exception as exc:  # pystac raises many kinds (JSON, STACTypeError, KeyError…)
        try:
            items = [pystac.Item.from_file(str(file))]
        except Exception:
            raise UsageError(f"{file} is not a STAC ItemCollection or Item: {type(exc).__name__}: {exc}") from exc
    if not items:
        raise UsageError(f"the STAC ItemCollection {file} has no items")
    sources = []
    for item in items:
        chosen = asset or _default_asset(item, file)
        if chosen not in item.assets:
            names = ", ".join(sorted(item.assets)) or "none"
            raise UsageError(f"STAC item {item.id!r} has no asset {chosen!r} (assets: {names}); choose one with "
                             f"{field_name('asset')}")
        href = item.assets[chosen].get_absolute_href() or item.assets[chosen].href
        sources.append(_absolute(href, file.parent))
    return list(dict.fromkeys(sources))


def _default_asset(item, file: Path) -> str:
    data = [k for k, a in item.assets.items() if "data" in (a.roles or [])]
    tiffs = [k for k, a in item.assets.items() if (a.media_type or "").startswith("image/tiff")]
    for candidates in (data, tiffs):
        if len(candidates) == 1:
            return candidates[0]
    names = ", ".join(sorted(item.assets)) or "none"
    if len(item.assets) > 1:
        raise UsageError(f"STAC item {item.id!r} in {file} has several assets ({names}); choose one with "
                         f"{field_name('asset')}")
    raise UsageError(f"STAC item {item.id!r} in {file} has no data asset (assets: {names}); name the one to read "
                     f"with {field_name('asset')}")


def read_aoi(path: str | os.PathLike):
    """The AOI layer as a GeoDataFrame of polygons (first layer of the file).

    Raises :class:`UsageError` when it cannot be read, has no CRS or holds no polygon.
    """
    import geopandas as gpd
    import shapely

    file = Path(path).expanduser()
    if file.is_dir():
        raise UsageError(f"the AOI {file} is a folder; give a polygon layer file (.gpkg, .geojson, .shp, ...)")
    if not file.is_file():
        raise UsageError(f"AOI file not found: {file}")
    try:
        frame = gpd.read_file(file, engine="pyogrio")
    except Exception as exc:
        raise UsageError(f"cannot read the AOI {file}: {exc}") from exc
    if frame.crs is None:
        raise UsageError(f"the AOI {file} has no CRS; assign one (e.g. in QGIS) so it can be matched to the rasters")
    geoms = frame.geometry.values
    polygonal = shapely.get_type_id(geoms) if len(geoms) else []
    frame = frame[[t in (3, 6) for t in polygonal]]  # Polygon, MultiPolygon
    if frame.empty:
        raise UsageError(f"the AOI {file} holds no polygon; give a polygon layer")
    return frame
