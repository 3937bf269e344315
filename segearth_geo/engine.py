"""The one-scene API: ``segment_scene()`` / ``segment_raster()``: raster -> chips -> segmenter -> labeled polygons.

Flow: :func:`~segearth_geo.raster.open_scene` gives the processing grid, :func:`~segearth_geo.chips.chip_grid`
cuts it into chips of the segmenter's ``chip_size``, :func:`~segearth_geo.pipeline.run_chips` reads, segments
and vectorises them (memory stays a few batches of chips plus the polygons, whatever the scene size), each
prompt's :class:`~segearth_geo.stitch.Stitcher` merges the pieces across chip borders, and
:func:`~segearth_geo.pipeline.segments_frame` moves them to map coordinates, simplifies, filters and measures
them. The output is written atomically.

The run's parameters are one :class:`~segearth_geo.params.SegmentParams`; the result is one
:class:`~segearth_geo.results.SegmentResult` (polygons, chips, :class:`~segearth_geo.results.RunStats`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import geopandas as gpd
import pandas as pd
import rasterio

from segearth_geo.chips import check_grid, chip_grid, default_overlap
from segearth_geo.errors import UsageError
from segearth_geo.output import check_output, run_description, with_provenance, write_output
from segearth_geo.params import SegmentParams, field_name
from segearth_geo.pipeline import COLUMNS, gdal_options, run_chips, segments_frame
from segearth_geo.postprocess import postprocess
from segearth_geo.prediction import SegmenterInfo, clean_prompts, describe_segmenter
from segearth_geo.progress import ProgressCallback, Reporter
from segearth_geo.raster import open_scene
from segearth_geo.raster_output import check_raster_outputs, raster_outputs
from segearth_geo.results import RunStats, SegmentResult
from segearth_geo.stitch import Stitcher
from segearth_geo.vectorize import to_map, window_box

logger = logging.getLogger(__name__)


def make_params(params: SegmentParams | None = None, options: dict[str, Any] | None = None,
                style: str | None = None) -> SegmentParams:
    """``params`` with ``options`` (keyword arguments named like its fields) applied, checked.

    Raises :class:`UsageError` for a bad value and ``TypeError`` for a keyword that is no field.
    """
    options = dict(options or {})
    unknown = sorted(set(options) - set(SegmentParams.names()))
    if unknown:
        raise TypeError(f"unexpected keyword argument(s) {', '.join(unknown)}; the run parameters are "
                        f"{', '.join(SegmentParams.names())}")
    base = params if params is not None else SegmentParams()
    if options:
        from dataclasses import replace

        base = replace(base, **options)
    return base.check(style)


def check_request(prompt: str | Sequence[str], *, out: str | os.PathLike | None = None, overwrite: bool = False,
                  params: SegmentParams | None = None, style: str | None = None,
                  **options: Any) -> tuple[list[str], SegmentParams]:
    """Validate a request before a model is loaded: the prompts, the parameters and the output path.

    Returns the cleaned prompts and the checked parameters. Raises :class:`UsageError` for a bad value and
    :class:`~segearth_geo.errors.OutputError` when ``out`` cannot be written.
    """
    prompts = clean_prompts(prompt)
    checked = make_params(params, options, style)
    if out is not None:
        check_output(out, overwrite)
    check_raster_outputs(checked, out, overwrite)
    return prompts, checked


def segment_scene(
    source: str | os.PathLike,
    prompt: str | Sequence[str],
    segmenter: Any,
    params: SegmentParams | None = None,
    *,
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool | ProgressCallback = False,
    model: str | None = None,
) -> SegmentResult:
    """Segment ``source`` by one or more prompts; see :func:`segment_raster` for the arguments.

    ``model`` is only recorded (the spec the caller loaded ``segmenter`` from). Returns a
    :class:`~segearth_geo.results.SegmentResult`.
    """
    started = time.perf_counter()
    prompts, params = check_request(prompt, out=out, overwrite=overwrite, params=params)
    info = describe_segmenter(segmenter)
    params = params.resolve(info.chip_size)
    cache_before = segmenter.cache_stats() if info.has("image_cache") else None
    with rasterio.Env(**gdal_options()), open_scene(source, bands=params.bands, gsd=params.gsd, bbox=params.bbox,
                                                    bbox_crs=params.bbox_crs) as reader:
        scene = reader.scene
        if params.min_area is not None and scene.crs is None:
            raise UsageError(f"{source} has no CRS, so min_area (m²) cannot be measured; omit min_area")
        check_grid(scene.width, scene.height, info.chip_size, params.overlap, params.max_chips)
        notes = gsd_notes(info, scene.gsd, model)
        chips = chip_grid(scene.width, scene.height, info.chip_size, params.overlap)
        stitchers = [Stitcher(scene.width, scene.height, params.threshold, default_label=p) for p in prompts]
        run = run_description(source, prompts, params, model or type(segmenter).__name__, device=info.device,
                              chip_size=info.chip_size)
        rasters = raster_outputs(scene, prompts, params, run)  # raster_out/labels_out (issue 19)
        sinks = rasters.taps(stitchers)  # the stitchers, seen through the raster outputs when there are some
        records, zoomed = _look(reader, chips, segmenter, prompts, params, sinks, progress)
    frames = [segments_frame(stitcher.finish(scene.transform), scene.crs, p, params.min_area, params.simplify)
              for p, stitcher in zip(prompts, stitchers)]
    del stitchers, sinks
    if zoomed is not None:  # a referring prompt keeps its one answer; unconfirmed coarse targets are noted
        from segearth_geo.zoom import select

        frames, confirmed_notes = select(zoomed, frames, prompts, scene.transform)
        notes = [*notes, *zoomed.notes, *confirmed_notes]
    segments = frames[0] if len(frames) == 1 else gpd.GeoDataFrame(pd.concat(frames, ignore_index=True),
                                                                   crs=scene.crs)
    # after the exact stitching: regularize/smooth, then source, model and id on every row (issue 19)
    segments = with_provenance(postprocess(segments, scene.transform, params), source, run["model"])
    chips_frame = _chips_table(records, prompts, scene, zoomed)
    rasters.finish(segments)  # temporary COGs, renamed once the vector output is in place
    if out is not None:
        write_output(out, segments, chips_frame, overwrite=overwrite, run=run)
    rasters.commit(overwrite)
    cache = None
    if cache_before is not None:
        cache = _cache_delta(cache_before, segmenter.cache_stats())
        logger.info("segmenter cache in this run: %s", cache)
    stats = RunStats(
        chips_total=len(chips), chips_processed=len(records[0]),
        chips_skipped=len(chips) - len(records[0]) if zoomed is None else zoomed.skipped,
        **({} if zoomed is None else zoomed.stats_fields()),
        chip_size=info.chip_size, overlap=int(params.overlap), prompts=tuple(prompts),
        seconds=time.perf_counter() - started,
        answers_by_prompt={p: {c.index: answer for c, answer, _ in recs} for p, recs in zip(prompts, records)},
        cache=cache, device=info.device, model=model, output=None if out is None else os.fspath(out),
        notes=tuple(notes), notice=info.notice)
    return SegmentResult(segments, chips_frame, stats)


def _look(reader: Any, chips: list, segmenter: Any, prompts: list[str], params: SegmentParams, sinks: list,
          progress: bool | ProgressCallback) -> tuple[list, Any]:
    """Run the segmenter over the scene: every chip (``grid``), or an overview first, then full resolution where
    the target may be (``zoom``/``auto``, :mod:`segearth_geo.zoom`). Returns the records per prompt and the zoom
    run (``None`` for a grid run)."""
    if params.strategy != "grid":
        from segearth_geo.zoom import run_zoom

        zoomed = run_zoom(reader, segmenter, prompts, params, sinks, progress)
        return zoomed.records, zoomed
    report = Reporter(progress, len(chips), announce=True)
    try:
        return run_chips(reader, chips, segmenter, prompts, params.batch_size, sinks, report.chips), None
    finally:
        report.close()


def _chips_table(records: list, prompts: list[str], scene: Any, zoomed: Any) -> gpd.GeoDataFrame:
    """The ``chips`` layer: one row per processed chip and prompt (index, prompt, answer, labels, level,
    footprint); a zoom run lists the chips of every level."""
    if zoomed is not None:
        from segearth_geo.zoom import chips_frame as zoom_chips_frame

        return zoom_chips_frame(zoomed, prompts, scene.transform, scene.crs)
    footprints = to_map([window_box(c.window) for recs in records for c, _, _ in recs], scene.transform)
    return gpd.GeoDataFrame(
        {
            "chip": [c.index for recs in records for c, _, _ in recs],
            "prompt": [p for p, recs in zip(prompts, records) for _ in recs],
            "answer": [answer for recs in records for _, answer, _ in recs],
            "labels": [", ".join(labels) for recs in records for _, _, labels in recs],
            "level": [0] * sum(len(recs) for recs in records),  # the zoom strategy's levels; 0 = full resolution
        },
        geometry=gpd.GeoSeries(footprints, crs=scene.crs),
    )


def segment_raster(
    source: str | os.PathLike,
    prompt: str | Sequence[str],
    *,
    segmenter: Any,
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool | ProgressCallback = False,
    params: SegmentParams | None = None,
    **options: Any,
) -> gpd.GeoDataFrame:
    """Segment ``source`` by ``prompt`` and return labeled polygons in the source CRS.

    Args:
        source: any GDAL raster source (path, VRT, ``/vsicurl/…``).
        prompt: the instruction, e.g. ``"segment the tennis courts"``, or several: they run in one pass
            over the chips (each chip read once, its prompts back to back, so a segmenter that caches
            per-chip image work reuses it), and the ``prompt`` column tells their polygons apart.
        segmenter: object with int ``chip_size`` and ``segment(chips, prompt)`` (see
            :class:`~segearth_geo.prediction.Segmenter`).
        out: optional output file; format from the extension (see :mod:`segearth_geo.output`).
        overwrite: replace an existing ``out``.
        progress: ``True`` for a tqdm bar on stderr, or a callable ``(done, total)`` (or one taking a
            :class:`~segearth_geo.progress.Progress`) called after each batch (it may raise
            :class:`~segearth_geo.errors.Cancelled`).
        params: a :class:`~segearth_geo.params.SegmentParams`; keyword arguments named like its fields
            override it: ``bbox``, ``bbox_crs`` (default: the raster's CRS), ``overlap`` (default
            :func:`default_overlap` of the chip size), ``gsd`` (m/px), ``bands`` (1-based, R,G,B),
            ``threshold`` (a pixel belongs to a target when its probability is ``>= threshold``),
            ``min_area`` (m², needs a CRS), ``simplify`` (map units), ``batch_size`` (chips per
            ``segment`` call; fully invalid chips are never sent), ``max_chips`` (refuse a larger grid before
            building it; ``None``/0: no limit; see :func:`~segearth_geo.chips.check_grid`), ``strategy``
            (``"grid"``: every chip; ``"zoom"``: an overview first, full resolution only where the target may
            be; ``"auto"``; see :mod:`segearth_geo.zoom`) with ``zoom_model`` and ``min_coverage``.

    Returns:
        GeoDataFrame with columns ``label, score, area_m2, pixels, prompt, source, model, id, geometry``, one row
        per polygon, in the raster's CRS (``regularize``/``smooth`` applied; ``raster_out``/``labels_out`` written
        beside ``out``: :mod:`segearth_geo.postprocess`, :mod:`segearth_geo.raster_output`).
        ``attrs["segearth"]`` is :meth:`RunStats.to_dict` (kept for one release; call :func:`segment_scene` for
        the typed :class:`~segearth_geo.results.RunStats`).
    """
    result = segment_scene(source, prompt, segmenter, make_params(params, options), out=out, overwrite=overwrite,
                           progress=progress)
    result.segments.attrs["segearth"] = result.stats.to_dict()
    return result.segments


GSD_FAR = 2.0  # a scene more than this factor outside the model's training GSD range gets a warning


def gsd_notes(info: SegmenterInfo, gsd: float | None, model: str | None = None, log: bool = True) -> list[str]:
    """A warning when the scene's ground resolution is far (more than :data:`GSD_FAR` times) outside what the
    model was trained on, saying what to do: logged once (unless ``log`` is false) and returned for the run's
    notes."""
    if gsd is None or info.gsd_range is None:
        return []
    low, high = info.gsd_range
    name = model or "the model"
    if gsd > high * GSD_FAR:
        note = (f"the scene's ground resolution ({gsd:.3g} m/px) is far coarser than what {name} was trained on "
                f"({low:g}–{high:g} m): expect poor results; use a model made for this resolution "
                "(`segearth-geo models` lists each model's range)")
    elif gsd < low / GSD_FAR:
        note = (f"the scene's ground resolution ({gsd:.3g} m/px) is far finer than what {name} was trained on "
                f"({low:g}–{high:g} m): objects look larger than it knows them; resample with "
                f"{field_name('gsd')} {low:g} (or up to {high:g})")
    else:
        return []
    if log:
        logger.warning(note)
    return [note]


def _cache_delta(before: dict, after: dict) -> dict:
    """This run's share of a segmenter's cache counters (hits, misses, evictions); sizes as they are now."""
    delta = dict(after)
    for name in ("hits", "misses"):
        old, new = before.get(name, {}), after.get(name, {})
        delta[name] = {tier: new[tier] - old.get(tier, 0) for tier in new if new[tier] - old.get(tier, 0)}
    if "evictions" in after:
        delta["evictions"] = after["evictions"] - before.get("evictions", 0)
    return delta


__all__ = ["COLUMNS", "check_request", "default_overlap", "make_params", "segment_raster", "segment_scene"]
