"""One large georeferenced SynthEarth scene: a tiled GeoTIFF plus its ground-truth GeoPackage.

:func:`write_scene` composes one layout over the whole scene (objects placed globally, so
they cross chip borders), renders it block by block (memory bounded by the block size, not
the scene size), writes a tiled, compressed GeoTIFF with overviews, and writes
``<name>_truth.gpkg`` with layer ``objects`` (one polygon per object, ``label`` = category)
and layer ``parts`` (one polygon per part and object, ``label`` = part phrase such as
``airplane wing``, ``part`` = ``wing``, ``object_id``). Ground-truth polygons are the full
object footprints clipped to the scene; pixels of an object hidden under another object
(a car on a parking lot) still belong to the footprint.

The scene's top-left corner is placed near the centre of the CRS's area of use, snapped
to whole metres, so UTM scenes lie inside their zone.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segearth_geo.errors import OutputError, OutputNameError, UsageError
from segearth_geo.synthetic.layout import THEMES, compose_layout
from segearth_geo.synthetic.objects import PARTS
from segearth_geo.synthetic.scene import SceneRenderer

COMPRESSIONS = ("jpeg", "deflate")
MAX_SIDE = 200_000


@dataclass
class SceneSummary:
    """What :func:`write_scene` wrote."""

    path: Path
    truth_path: Path
    width: int
    height: int
    gsd: float
    crs: str
    bounds: tuple[float, float, float, float]  # (left, bottom, right, top) in the scene CRS
    n_objects: int
    n_parts: int
    seconds: float


def scene_origin(crs: str, width_m: float, height_m: float) -> tuple[float, float]:
    """Top-left corner ``(x, y)`` of a ``width_m × height_m`` scene centred in ``crs``'s area of use.

    Raises :class:`UsageError` unless ``crs`` is a projected CRS in metres.
    """
    from pyproj import CRS, Transformer
    from pyproj.exceptions import CRSError

    try:
        proj = CRS.from_user_input(crs)
    except CRSError as exc:
        raise UsageError(f"unknown CRS {crs!r}: give an EPSG code such as EPSG:32650") from exc
    unit = proj.axis_info[0].unit_name if proj.axis_info else ""
    if not proj.is_projected or unit not in ("metre", "meter"):
        raise UsageError(f"--crs must be a projected CRS in metres (e.g. a UTM zone such as EPSG:32650), got {crs!r}")
    area = proj.area_of_use
    lon, lat = (0.0, 0.0) if area is None else ((area.west + area.east) / 2, (area.south + area.north) / 2)
    if area is not None and area.west > area.east:  # area crossing the antimeridian
        lon = ((area.west + area.east + 360) / 2 + 180) % 360 - 180
    lat = float(np.clip(lat, -60, 60))
    x, y = Transformer.from_crs("EPSG:4326", proj, always_xy=True).transform(lon, lat)
    if not (math.isfinite(x) and math.isfinite(y)):
        raise UsageError(f"cannot place a scene in {crs!r}: its area of use does not project")
    return float(round(x - width_m / 2)), float(round(y + height_m / 2))


def write_scene(
    out_dir: str | os.PathLike,
    width: int,
    height: int,
    gsd: float = 0.5,
    crs: str = "EPSG:32650",
    seed: int = 0,
    theme: str = "city",
    name: str | None = None,
    block: int = 1024,
    compress: str = "jpeg",
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
    sparse: bool = False,
) -> SceneSummary:
    """Write ``<out_dir>/<name>.tif`` (``width × height`` px at ``gsd`` m) and ``<name>_truth.gpkg``.

    Args:
        out_dir: folder to write into (created if missing).
        width, height: scene size in pixels (256 … 200,000).
        gsd: metres per pixel; objects keep their size in metres.
        crs: a projected CRS in metres.
        seed: the only source of randomness (layout and textures).
        theme: ``city``, ``airport``, ``harbour`` or ``rural``.
        name: file stem; default ``synthearth_<theme>``.
        block: render block side in pixels (a multiple of 256); bounds memory use.
        compress: ``jpeg`` (YCbCr, quality 90) or ``deflate`` (lossless, predictor 2).
        overwrite: replace existing outputs instead of raising :class:`OutputError`.
        progress: called with 1 after each rendered block.
        sparse: the rare-target variant of the ``harbour`` or ``rural`` theme (a few ships / tennis courts far
            apart: the zoom strategy's benchmark; see :mod:`segearth_geo.synthetic.layout`).
    """
    import geopandas as gpd
    from affine import Affine

    _check_scene_args(width, height, gsd, theme, compress, block, seed)
    name = name or f"synthearth_{theme}"
    if not name or any(c in name for c in "/\\") or name.startswith("."):
        raise UsageError(f"scene name must be a plain file stem, got {name!r}")
    out_dir = Path(out_dir)
    path, truth_path = out_dir / f"{name}.tif", out_dir / f"{name}_truth.gpkg"
    for target in (path, truth_path):
        if target.exists() and not overwrite:
            raise OutputNameError(f"{target} already exists; pass --overwrite to replace it")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {out_dir}: {exc}") from exc

    started = time.perf_counter()
    width_m, height_m = width * gsd, height * gsd
    x0, y0 = scene_origin(crs, width_m, height_m)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(7,)))
    layout = compose_layout(theme, width_m, height_m, rng, angle=float(rng.uniform(-0.3, 0.3)), sparse=sparse)
    renderer = SceneRenderer(layout, gsd, int(rng.integers(2**31)))
    transform = Affine(gsd, 0.0, x0, 0.0, -gsd, y0)
    tag = f"theme={theme} seed={seed} gsd={gsd}" + (" sparse" if sparse else "")
    _write_image(path, renderer, width, height, crs, transform, compress, block, tag, progress)

    objects, parts = _truth_frames(layout, x0, y0, crs)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}-", suffix=".gpkg", dir=out_dir)
    os.close(fd)
    os.unlink(tmp)  # let the GPKG driver create the file
    try:
        gpd.GeoDataFrame(objects, geometry="geometry", crs=crs).to_file(tmp, layer="objects", driver="GPKG")
        gpd.GeoDataFrame(parts, geometry="geometry", crs=crs).to_file(tmp, layer="parts", driver="GPKG")
        os.replace(tmp, truth_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    bounds = (x0, y0 - height_m, x0 + width_m, y0)
    return SceneSummary(path, truth_path, width, height, float(gsd), str(crs), bounds,
                        len(objects["label"]), len(parts["label"]), time.perf_counter() - started)


def _check_scene_args(width: int, height: int, gsd: float, theme: str, compress: str, block: int, seed: int) -> None:
    for label, value in (("--width", width), ("--height", height)):
        if not isinstance(value, int) or not 256 <= value <= MAX_SIDE:
            raise UsageError(f"{label} must be an integer between 256 and {MAX_SIDE} pixels, got {value!r}")
    if not (isinstance(gsd, (int, float)) and 0.05 <= gsd <= 5.0):
        raise UsageError(f"--gsd must be between 0.05 and 5 metres per pixel, got {gsd!r}")
    if theme not in THEMES:
        raise UsageError(f"unknown scene theme {theme!r}; choose one of {', '.join(THEMES)}")
    if compress not in COMPRESSIONS:
        raise UsageError(f"compress must be one of {', '.join(COMPRESSIONS)}, got {compress!r}")
    if not isinstance(block, int) or block < 256 or block % 256:
        raise UsageError(f"block must be a multiple of 256 pixels, got {block!r}")
    if not isinstance(seed, int) or seed < 0:
        raise UsageError(f"--seed must be a non-negative integer, got {seed!r}")


def _write_image(path: Path, renderer: SceneRenderer, width: int, height: int, crs: str, transform, compress: str,
                 block: int, tag: str, progress: Callable[[int], None] | None) -> None:
    """Render the scene block by block into a tiled GeoTIFF with overviews, written to a temporary name beside
    ``path`` and renamed."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.windows import Window

    name = path.stem
    out_dir = path.parent
    profile = {
        "driver": "GTiff", "width": width, "height": height, "count": 3, "dtype": "uint8", "crs": crs,
        "transform": transform, "tiled": True, "blockxsize": 256, "blockysize": 256, "interleave": "pixel",
        "BIGTIFF": "IF_SAFER",
    }
    if compress == "jpeg":
        profile.update(compress="jpeg", photometric="ycbcr", jpeg_quality=90)
        env = {"COMPRESS_OVERVIEW": "JPEG", "PHOTOMETRIC_OVERVIEW": "YCBCR", "JPEG_QUALITY_OVERVIEW": "90", "INTERLEAVE_OVERVIEW": "PIXEL"}
    else:
        profile.update(compress="deflate", predictor=2, zlevel=6)
        env = {"COMPRESS_OVERVIEW": "DEFLATE", "PREDICTOR_OVERVIEW": "2"}
    fd, tmp = tempfile.mkstemp(prefix=f".{name}-", suffix=".tif", dir=out_dir)
    os.close(fd)
    try:
        with rasterio.Env(**env), rasterio.open(tmp, "w", **profile) as dst:
            for row0 in range(0, height, block):
                for col0 in range(0, width, block):
                    h, w = min(block, height - row0), min(block, width - col0)
                    image = renderer.render(row0, col0, h, w).image  # (h, w, 3)
                    dst.write(image.transpose(2, 0, 1), window=Window(col0, row0, w, h))
                    if progress is not None:
                        progress(1)
            factors = [f for f in (2, 4, 8, 16, 32, 64) if min(width, height) / f >= 128]
            if factors:
                dst.build_overviews(factors, Resampling.average)
                dst.update_tags(ns="rio_overview", resampling="average")
            dst.update_tags(SYNTHEARTH=tag)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _multipolygon(geom):
    """Polygonal part of ``geom`` as a MultiPolygon (GeoPackage layers need one geometry type)."""
    from shapely.geometry import MultiPolygon, Polygon

    if isinstance(geom, Polygon):
        return MultiPolygon([geom])
    if isinstance(geom, MultiPolygon):
        return geom
    polys = [g for g in getattr(geom, "geoms", []) if isinstance(g, Polygon)]
    polys += [p for g in getattr(geom, "geoms", []) if isinstance(g, MultiPolygon) for p in g.geoms]
    return MultiPolygon(polys) if polys else None


def _truth_frames(layout, x0: float, y0: float, crs: str) -> tuple[dict, dict]:
    """Objects and parts as column dicts, geometries moved from scene metres (y down) to ``crs``."""
    from shapely import affinity

    to_crs = [1.0, 0.0, 0.0, -1.0, x0, y0]  # x' = x0 + x, y' = y0 - y
    objects: dict[str, list] = {"object_id": [], "label": [], "area_m2": [], "geometry": []}
    parts: dict[str, list] = {"object_id": [], "label": [], "part": [], "object_label": [], "area_m2": [], "geometry": []}
    for obj in layout.objects:
        geom = _multipolygon(affinity.affine_transform(obj.footprint, to_crs))
        if geom is None or geom.is_empty:
            continue
        objects["object_id"].append(obj.index)
        objects["label"].append(obj.category)
        objects["area_m2"].append(float(geom.area))
        objects["geometry"].append(geom)
        for part, part_geom in obj.parts.items():
            pg = _multipolygon(affinity.affine_transform(part_geom, to_crs))
            if pg is None or pg.is_empty:
                continue
            parts["object_id"].append(obj.index)
            parts["label"].append(PARTS[obj.category][part])
            parts["part"].append(part)
            parts["object_label"].append(obj.category)
            parts["area_m2"].append(float(pg.area))
            parts["geometry"].append(pg)
    return objects, parts
