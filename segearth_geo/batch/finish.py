"""Finishing a scene: its units' shards -> one file per prompt, as ``segment`` would write it.

All shards of the scene are loaded into one :class:`~segearth_geo.stitch.Stitcher`
per prompt, whose :meth:`~segearth_geo.stitch.Stitcher.finish` unions the border pieces
of every unit (objects crossing unit borders become one polygon) and sorts the result;
the frame is then built by the engine's own ``_segments_frame`` (simplification, areas,
``min_area``), so a scene processed as many units equals one ``segment_raster`` run.
With an AOI the polygons are clipped to it (areas and pixel counts of clipped polygons
are re-measured). A ``source`` column is added.

Outputs: ``OUT_DIR/results/<scene name>/<prompt slug>.gpkg`` (layers ``segments`` and
``chips``), in the scene's CRS, written atomically.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely
from rasterio.crs import CRS

from segearth_geo.batch.config import JobSpec
from segearth_geo.batch.plan import ScenePlan, chips_at, prompt_slug
from segearth_geo.batch.shard import read_shard
from segearth_geo.batch.unit import shard_path
from segearth_geo.engine import _segments_frame
from segearth_geo.output import write_output
from segearth_geo.stitch import Stitcher
from segearth_geo.vectorize import area_m2, to_map, window_box

RESULTS_DIR = "results"


def scene_crs(text: str | None) -> CRS | None:
    return None if text is None else CRS.from_user_input(text)


def result_path(out_dir: Path, scene: ScenePlan, prompt: str) -> Path:
    return Path(out_dir) / RESULTS_DIR / scene.name / f"{prompt_slug(prompt)}.gpkg"


def scene_frames(scene: ScenePlan, spec: JobSpec, shard_dir: Path) -> list[tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]]:
    """Per prompt (job order): ``(segments, chips)`` frames of the scene, from its units' shards.

    ``segments`` has the columns of ``segment`` plus ``source``; ``chips`` one row per
    processed chip (index, answer, labels, footprint), in chip order.
    """
    crs = scene_crs(scene.crs_wkt)
    transform = scene.affine
    stitchers = [Stitcher(scene.width, scene.height, spec.engine.threshold, default_label=p) for p in spec.prompts]
    chips: list[list[tuple[int, str, str]]] = [[] for _ in spec.prompts]
    for unit in scene.units:
        for k, pieces in enumerate(read_shard(shard_path(shard_dir, unit), len(spec.prompts))):
            stitchers[k].load(pieces.final, pieces.border)
            chips[k].extend(pieces.chips)
    aoi = None if scene.aoi_wkb is None else shapely.from_wkb(scene.aoi_wkb)
    frames = []
    for k, prompt in enumerate(spec.prompts):
        regions = stitchers[k].finish(transform)
        stitchers[k] = None
        segments = _segments_frame(regions, crs, prompt, spec.engine.min_area, spec.engine.simplify)
        del regions
        if aoi is not None:
            segments = clip_to_aoi(segments, aoi, crs, abs(transform.determinant))
        segments.insert(segments.columns.get_loc("geometry"), "source", scene.source)
        frames.append((segments, _chips_frame(sorted(chips[k]), scene, spec, crs)))
    return frames


def _chips_frame(records: list[tuple[int, str, str]], scene: ScenePlan, spec: JobSpec, crs) -> gpd.GeoDataFrame:
    windows = chips_at(scene.width, scene.height, spec.engine.chip_size, spec.engine.overlap, [r[0] for r in records])
    footprints = to_map([window_box(c.window) for c in windows], scene.affine)
    return gpd.GeoDataFrame(
        {"chip": [i for i, _, _ in records], "answer": [a for _, a, _ in records], "labels": [lb for _, _, lb in records]},
        geometry=gpd.GeoSeries(footprints, crs=crs),
    )


def clip_to_aoi(segments: gpd.GeoDataFrame, aoi: shapely.Geometry, crs, pixel_area: float) -> gpd.GeoDataFrame:
    """Polygons clipped to ``aoi`` (same CRS), one row per resulting polygon.

    Rows inside the AOI are kept as they are; clipped ones get their ``area_m2`` re-measured
    and ``pixels`` = clipped area / pixel area (rounded). Lines and points left by the clip are dropped.
    """
    if segments.empty:
        return segments
    geoms = segments.geometry.values
    shapely.prepare(aoi)
    inside = shapely.contains(aoi, geoms)
    clipped = np.array(geoms, dtype=object)
    clipped[~inside] = shapely.intersection(geoms[~inside], aoi)
    parts, owner = shapely.get_parts(clipped, return_index=True)
    keep = (shapely.get_type_id(parts) == 3) & (shapely.area(parts) > 0)
    parts, owner = parts[keep], owner[keep]
    out = segments.iloc[owner].copy()
    out = out.set_geometry(gpd.GeoSeries(shapely.normalize(parts), crs=segments.crs, index=out.index))
    changed = ~inside[owner]
    if changed.any():
        area = area_m2(parts[changed], crs)
        out.loc[out.index[changed], "area_m2"] = area
        out.loc[out.index[changed], "pixels"] = np.rint(shapely.area(parts[changed]) / pixel_area).astype(np.int64)
    return out.reset_index(drop=True)


def write_scene(out_dir: Path, scene: ScenePlan, spec: JobSpec, shard_dir: Path) -> dict[str, str]:
    """Write the scene's result files (atomically, replacing earlier ones); returns ``{prompt: path}``."""
    outputs = {}
    for prompt, (segments, chips) in zip(spec.prompts, scene_frames(scene, spec, shard_dir)):
        path = result_path(out_dir, scene, prompt)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_output(path, segments, chips, overwrite=True)
        outputs[prompt] = str(path)
    return outputs
