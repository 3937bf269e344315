"""Finishing a scene: its units' shards -> one file per prompt, as ``segment`` would write it.

All shards of the scene are loaded into one :class:`~segearth_geo.stitch.Stitcher`
per prompt, whose :meth:`~segearth_geo.stitch.Stitcher.finish` unions the border pieces
of every unit (objects crossing unit borders become one polygon) and sorts the result;
the frame is then built by the pipeline's :func:`~segearth_geo.pipeline.segments_frame` (simplification, areas,
``min_area``), so a scene processed as many units equals one ``segment_raster`` run.
With an AOI the polygons are clipped to it (areas and pixel counts of clipped polygons
are re-measured). ``regularize``/``smooth`` run on the scene's polygons after the stitching, as in ``segment``;
``source``, ``model`` and ``id`` columns are added and each file records the run in its ``run`` table.

Outputs: ``OUT_DIR/results/<scene name>/<prompt slug>.gpkg`` (layers ``segments`` and
``chips``), in the scene's CRS, written atomically. With ``raster_out``/``labels_out`` (bare ``.tif`` file
names in a job) the scene's folder also gets those rasters, as ``segment`` writes them: each unit's owned
chip cores (its raster shard, :func:`raster_shard_path`) are pasted into one work file, and the labels are
burnt from the scene's final polygons (:mod:`segearth_geo.raster_output`). The raster shards are removed once the
scene's rasters are written (they are as large as the rasters): rasters deleted later are written again by running
the scene's units again.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from rasterio.crs import CRS
from rasterio.windows import Window, union

from segearth_geo.batch.config import JobSpec
from segearth_geo.batch.plan import ScenePlan, chips_at, prompt_slug
from segearth_geo.batch.shard import read_shard
from segearth_geo.batch.unit import raster_shard_path, shard_path
from segearth_geo.errors import UsageError
from segearth_geo.output import NAME_MAX, remove_stale_temporaries, run_description, with_provenance, write_output
from segearth_geo.params import field_name
from segearth_geo.pipeline import segments_frame
from segearth_geo.postprocess import postprocess
from segearth_geo.raster_output import RASTER_SUFFIXES, raster_outputs
from segearth_geo.stitch import Stitcher
from segearth_geo.vectorize import area_m2, to_map, window_box

RESULTS_DIR = "results"


def scene_crs(text: str | None) -> CRS | None:
    return None if text is None else CRS.from_user_input(text)


def result_path(out_dir: Path, scene: ScenePlan, prompt: str) -> Path:
    return Path(out_dir) / RESULTS_DIR / scene.name / f"{prompt_slug(prompt)}.gpkg"


def check_scene_rasters(params: Any, style: str = "python") -> None:
    """A job's ``raster_out``/``labels_out`` are file names written in each scene's results folder: bare ``.tif``
    names (no folder), different from each other."""
    names = {n: getattr(params, n) for n in ("raster_out", "labels_out") if getattr(params, n) is not None}
    for name, value in names.items():
        text = os.fspath(value)
        if (Path(text).name != text or text in (".", "..") or "\\" in text
                or Path(text).suffix.lower() not in RASTER_SUFFIXES):
            raise UsageError(f"{field_name(name, style)} in a batch job is a file name ending in .tif, written in "
                             f"each scene's results folder (e.g. probability.tif), got {text!r}")
        if len(os.fsencode(text)) > NAME_MAX:
            raise UsageError(f"{field_name(name, style)} is longer than {NAME_MAX} bytes; choose a shorter name")
    if len(names) == 2 and len({os.fspath(v).lower() for v in names.values()}) == 1:
        raise UsageError(f"{field_name('raster_out', style)} and {field_name('labels_out', style)} name the same "
                         "file; give each its own name")


def raster_paths(out_dir: Path, scene: ScenePlan, params: Any) -> dict[str, str]:
    """The scene's raster outputs ``{"raster_out": path, "labels_out": path}`` (those the job asks for)."""
    folder = Path(out_dir) / RESULTS_DIR / scene.name
    return {n: str(folder / os.fspath(getattr(params, n))) for n in ("raster_out", "labels_out")
            if getattr(params, n) is not None}


def scene_frames(scene: ScenePlan, spec: JobSpec, shard_dir: Path,
                 rasters: Any = None) -> list[tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]]:
    """Per prompt (job order): ``(segments, chips)`` frames of the scene, from its units' shards.

    ``segments`` has the columns of ``segment`` (``source``, ``model`` and ``id`` included: ids are unique across
    the scene's prompts); ``chips`` one row per processed chip (index, answer, labels, footprint), in chip order.
    ``rasters`` (a :class:`~segearth_geo.raster_output.RasterOutputs`): gets each unit's raster shard pasted and is
    finished with the scene's polygons.
    """
    crs = scene_crs(scene.crs_wkt)
    transform = scene.affine
    stitchers = [Stitcher(scene.width, scene.height, spec.params.threshold, default_label=p) for p in spec.prompts]
    chips: list[list[tuple[int, str, str]]] = [[] for _ in spec.prompts]
    for unit in scene.units:
        for k, pieces in enumerate(read_shard(shard_path(shard_dir, unit), len(spec.prompts))):
            stitchers[k].load(pieces.final, pieces.border)
            chips[k].extend(pieces.chips)
        if rasters is not None:
            rasters.paste(raster_shard_path(shard_dir, unit), _unit_region(scene, spec, unit.chips))
    zoomed = None  # strategy zoom/auto (issue 22): the units' sidecars (coarse levels, referring picks)
    if spec.params.strategy != "grid":
        from segearth_geo.zoom.batch import ZoomShards

        zoomed = ZoomShards.read([shard_path(shard_dir, u) for u in scene.units], list(spec.prompts))
    aoi = None if scene.aoi_wkb is None else shapely.from_wkb(scene.aoi_wkb)
    parts = []
    for k, prompt in enumerate(spec.prompts):
        regions = stitchers[k].finish(transform)
        stitchers[k] = None
        part = segments_frame(regions, crs, prompt, spec.params.min_area, spec.params.simplify)
        parts.append(part if zoomed is None else zoomed.select(k, part, transform))
        del regions
    # The scene's prompts post-processed together as `segment` does (issue 19), clipped, then source/model/id.
    segments = postprocess(gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), crs=crs), transform, spec.params)
    if aoi is not None:
        segments = clip_to_aoi(segments, aoi, crs, abs(transform.determinant))
    segments = with_provenance(segments, scene.source, spec.model)
    if rasters is not None:
        rasters.finish(segments)
    frames = [(segments[segments["prompt"] == prompt].reset_index(drop=True),
               _chips_frame(sorted(chips[k]), scene, spec, crs)) for k, prompt in enumerate(spec.prompts)]
    if zoomed is not None:
        frames = [(s, zoomed.chips(k, c, transform, crs)) for k, (s, c) in enumerate(frames)]
    return frames


def _unit_region(scene: ScenePlan, spec: JobSpec, chips: tuple[int, ...]) -> Window | None:
    """The part of the grid a unit's raster shard can hold (the union of its chips' cores); ``None``: all of it
    (a zoom unit, whose chips are not a fixed list)."""
    if spec.params.strategy != "grid" or not chips:
        return None
    return union(*[c.core for c in chips_at(scene.width, scene.height, spec.chip_size, spec.params.overlap,
                                                  chips)])


def _chips_frame(records: list[tuple[int, str, str]], scene: ScenePlan, spec: JobSpec, crs) -> gpd.GeoDataFrame:
    windows = chips_at(scene.width, scene.height, spec.chip_size, spec.params.overlap, [r[0] for r in records])
    footprints = to_map([window_box(c.window) for c in windows], scene.affine)
    return gpd.GeoDataFrame(
        {"chip": [i for i, _, _ in records], "answer": [a for _, a, _ in records], "labels": [lb for _, _, lb in records],
         "level": [0] * len(records)},  # 0 = full resolution (strategy zoom adds its coarser levels)
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
    # One row per part: a polygon the AOI cuts in two (a U-shaped building, a road across the AOI) gives two
    # rows of the same source row, so work by position (the index would repeat).
    out = segments.iloc[owner].reset_index(drop=True)
    out = out.set_geometry(gpd.GeoSeries(shapely.normalize(parts), crs=segments.crs))
    changed = ~inside[owner]
    if changed.any():
        areas = out["area_m2"].to_numpy(dtype=np.float64, copy=True)
        pixels = out["pixels"].to_numpy(dtype=np.int64, copy=True)
        areas[changed] = area_m2(parts[changed], crs)
        pixels[changed] = np.rint(shapely.area(parts[changed]) / pixel_area).astype(np.int64)
        out["area_m2"], out["pixels"] = areas, pixels
    return out


def write_scene(out_dir: Path, scene: ScenePlan, spec: JobSpec, shard_dir: Path) -> dict[str, str]:
    """Write the scene's result files (atomically, replacing earlier ones); returns ``{prompt: path}`` (the raster
    outputs, when asked for, are at :func:`raster_paths`)."""
    run = run_description(scene.source, list(spec.prompts), spec.params, spec.model)
    rasters = None
    paths = raster_paths(out_dir, scene, spec.params)
    if paths:
        folder = Path(next(iter(paths.values()))).parent
        folder.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(folder)  # a writer killed earlier
        grid = SimpleNamespace(width=scene.width, height=scene.height, crs=scene_crs(scene.crs_wkt),
                               transform=scene.affine)
        rasters = raster_outputs(grid, list(spec.prompts), SimpleNamespace(
            raster_out=paths.get("raster_out"), labels_out=paths.get("labels_out")), run)
    try:
        outputs = {}
        for prompt, (segments, chips) in zip(spec.prompts, scene_frames(scene, spec, shard_dir, rasters)):
            path = result_path(out_dir, scene, prompt)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_output(path, segments, chips, overwrite=True, run=run)
            outputs[prompt] = str(path)
        if rasters is not None:
            rasters.commit(overwrite=True)
            for unit in scene.units:  # as large as the rasters themselves; a rewrite reruns the scene's units
                raster_shard_path(shard_dir, unit).unlink(missing_ok=True)
    finally:
        if rasters is not None:
            rasters.discard()
    return outputs
