"""``segment_raster()``: raster -> chips -> segmenter -> stitched, labeled polygons.

Flow: :func:`~segearth_geo.raster.open_scene` gives the processing grid,
:func:`~segearth_geo.chips.chip_grid` cuts it into chips of the segmenter's
``chip_size``; a reader thread reads chips ahead into a bounded queue (so reading the
next batch overlaps the segmenter's work) while this thread runs the segmenter batch by
batch and queues each batch's targets for a vectoriser thread, whose
:class:`~segearth_geo.stitch.Stitcher` vectorises each chip core at once (memory stays a
few batches of chips plus the polygons, whatever the scene size). Polygons are then moved to map coordinates, optionally
simplified and filtered by area, measured, and written atomically.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import shapely

from segearth_geo.chips import MAX_CHIPS, Chip, check_grid, chip_grid, default_overlap
from segearth_geo.errors import ModelError, SegEarthGeoError, UsageError
from segearth_geo.output import check_output, write_output
from segearth_geo.prediction import ChipPrediction, clean_prompt
from segearth_geo.raster import SceneReader, open_scene
from segearth_geo.stitch import Region, Stitcher
from segearth_geo.vectorize import area_m2, normalise_label, simplify_coverage, to_map, window_box

logger = logging.getLogger(__name__)

QUEUE_BATCHES = 1  # batches read ahead (besides the one the reader is filling)
VECTORISE_BATCHES = 1  # segmented batches waiting for the vectoriser thread
# Memory: at most QUEUE_BATCHES + VECTORISE_BATCHES + 3 batches of chips (and their
# probabilities) exist at a time, whatever the scene size.
# GDAL's block cache defaults to 5 % of RAM and fills up as a large scene is read, which would make
# peak memory grow with the scene. Chips are read in row-major order and only neighbouring chips
# share blocks, so a small fixed cache is enough (a re-read costs a block decode, not memory).
# A GDAL_CACHEMAX set by the user is respected.
GDAL_CACHE_MB = 32
Progress = Callable[[int, int], None]


def check_request(
    prompt: str | Sequence[str],
    *,
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
    overlap: int | None = None,
    threshold: float = 0.5,
    min_area: float | None = None,
    simplify: float | None = None,
    batch_size: int = 8,
) -> None:
    """Validate the cheap arguments of :func:`segment_raster` (before a model is loaded).

    Raises :class:`UsageError` for a bad value and :class:`OutputError` when ``out``
    cannot be written.
    """
    _prompt_list(prompt)
    if overlap is not None and (isinstance(overlap, bool) or not isinstance(overlap, (int, np.integer)) or overlap < 0):
        raise UsageError(f"overlap must be a non-negative number of pixels, got {overlap!r}")
    if not _is_number(threshold) or not 0.0 <= threshold <= 1.0:
        raise UsageError(f"threshold must be a probability between 0 and 1, got {threshold!r}")
    if min_area is not None and (not _is_number(min_area) or min_area < 0):
        raise UsageError(f"min_area must be a non-negative area in m², got {min_area!r}")
    if simplify is not None and (not _is_number(simplify) or simplify < 0):
        raise UsageError(f"simplify must be a non-negative tolerance in map units, got {simplify!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise UsageError(f"batch_size must be a positive number of chips, got {batch_size!r}")
    if out is not None:
        check_output(out, overwrite)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class _Batch:
    """Chips read ahead by the reader thread: the ones to segment, and how many were skipped."""

    chips: list[Chip] = field(default_factory=list)
    rgbs: list[np.ndarray] = field(default_factory=list)  # each uint8 (h, w, 3)
    valids: list[np.ndarray] = field(default_factory=list)  # each bool (h, w)
    skipped: int = 0


_END = object()


def segment_raster(
    source: str | os.PathLike,
    prompt: str | Sequence[str],
    *,
    segmenter: Any,
    out: str | os.PathLike | None = None,
    bbox: Sequence[float] | None = None,
    bbox_crs: Any = None,
    overlap: int | None = None,
    gsd: float | None = None,
    bands: Sequence[int] | str | None = None,
    threshold: float = 0.5,
    min_area: float | None = None,
    simplify: float | None = None,
    batch_size: int = 8,
    progress: bool | Progress = False,
    overwrite: bool = False,
    max_chips: int | None = MAX_CHIPS,
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
        bbox, bbox_crs: limit processing to this area (``bbox_crs`` default: the raster's CRS).
        overlap: pixels shared by neighbouring chips; default :func:`default_overlap` of the chip size.
        gsd: resample reads to this many metres per pixel.
        bands: 1-based source bands shown as R, G, B.
        threshold: a pixel belongs to a target when its probability is ``>= threshold``.
        min_area: drop polygons smaller than this many m² (needs a CRS).
        simplify: topology-preserving simplification tolerance in map units.
        batch_size: chips per ``segment`` call; fully invalid chips are never sent.
        progress: ``True`` for a tqdm bar on stderr, or a callable ``(done, total)`` called
            after each batch (it may raise :class:`~segearth_geo.errors.Cancelled`).
        overwrite: replace an existing ``out``.
        max_chips: refuse a grid of more chips than this before building it (``None``/0: no limit;
            see :func:`~segearth_geo.chips.check_grid`).

    Returns:
        GeoDataFrame with columns ``label, score, area_m2, pixels, prompt, geometry``, one
        row per polygon, in the raster's CRS; ``attrs["segearth"]`` holds run statistics
        (chip counts, seconds, answers per chip).
    """
    started = time.perf_counter()
    check_request(prompt, out=out, overwrite=overwrite, overlap=overlap, threshold=threshold,
                  min_area=min_area, simplify=simplify, batch_size=batch_size)
    chip_size = getattr(segmenter, "chip_size", None)
    if isinstance(chip_size, bool) or not isinstance(chip_size, (int, np.integer)) or chip_size < 1:
        raise UsageError(f"the segmenter needs a positive int attribute chip_size, got {chip_size!r}")
    if not callable(getattr(segmenter, "segment", None)):
        raise UsageError("the segmenter needs a method segment(chips, prompt)")
    prompts = _prompt_list(prompt)
    if overlap is None:
        overlap = default_overlap(int(chip_size))
    if max_chips is not None and (isinstance(max_chips, bool) or not isinstance(max_chips, (int, np.integer))
                                  or max_chips < 0):
        raise UsageError(f"max_chips must be a non-negative number of chips (0: no limit), got {max_chips!r}")

    cache_stats = getattr(segmenter, "cache_stats", None)
    cache_before = cache_stats() if callable(cache_stats) else None
    gdal_options = {} if "GDAL_CACHEMAX" in os.environ else {"GDAL_CACHEMAX": GDAL_CACHE_MB}
    with rasterio.Env(**gdal_options), open_scene(source, bands=bands, gsd=gsd, bbox=bbox, bbox_crs=bbox_crs) as reader:
        scene = reader.scene
        if min_area is not None and scene.crs is None:
            raise UsageError(f"{source} has no CRS, so min_area (m²) cannot be measured; omit min_area")
        check_grid(scene.width, scene.height, int(chip_size), overlap, max_chips)
        chips = chip_grid(scene.width, scene.height, int(chip_size), overlap)
        stitchers = [Stitcher(scene.width, scene.height, threshold, default_label=p) for p in prompts]
        report = _progress(progress, len(chips))
        try:
            records = run_chips(reader, chips, segmenter, prompts, int(batch_size), stitchers, report)
        finally:
            report.close()
    frames = []
    for p, stitcher in zip(prompts, stitchers):
        frames.append(_segments_frame(stitcher.finish(scene.transform), scene.crs, p, min_area, simplify))
    del stitchers
    segments = frames[0] if len(frames) == 1 else gpd.GeoDataFrame(pd.concat(frames, ignore_index=True),
                                                                   crs=scene.crs)
    footprints = to_map([window_box(c.window) for recs in records for c, _, _ in recs], scene.transform)
    chips_frame = gpd.GeoDataFrame(
        {
            "chip": [c.index for recs in records for c, _, _ in recs],
            "prompt": [p for p, recs in zip(prompts, records) for _ in recs],
            "answer": [answer for recs in records for _, answer, _ in recs],
            "labels": [", ".join(labels) for recs in records for _, _, labels in recs],
        },
        geometry=gpd.GeoSeries(footprints, crs=scene.crs),
    )
    if out is not None:
        write_output(out, segments, chips_frame, overwrite=overwrite)
    stats: dict[str, Any] = {
        "chips_total": len(chips),
        "chips_processed": len(records[0]),
        "chips_skipped": len(chips) - len(records[0]),
        "chip_size": int(chip_size),
        "overlap": int(overlap),
        "prompts": prompts,
        "seconds": time.perf_counter() - started,
        "answers": {c.index: answer for c, answer, _ in records[0]},
        "answers_by_prompt": {p: {c.index: answer for c, answer, _ in recs} for p, recs in zip(prompts, records)},
        "output": None if out is None else os.fspath(out),
    }
    if callable(cache_stats):  # a segmenter that reuses per-chip image work reports it (optional protocol)
        stats["cache"] = _cache_delta(cache_before, cache_stats())
        logger.info("segmenter cache in this run: %s", stats["cache"])
    segments.attrs["segearth"] = stats
    return segments


def _cache_delta(before: dict, after: dict) -> dict:
    """This run's share of a segmenter's cache counters (hits, misses, evictions); sizes as they are now."""
    delta = dict(after)
    for name in ("hits", "misses"):
        old, new = before.get(name, {}), after.get(name, {})
        delta[name] = {tier: new[tier] - old.get(tier, 0) for tier in new if new[tier] - old.get(tier, 0)}
    if "evictions" in after:
        delta["evictions"] = after["evictions"] - before.get("evictions", 0)
    return delta


def _prompt_list(prompt: str | Sequence[str]) -> list[str]:
    """One prompt or several → cleaned, distinct prompts in the given order (:class:`UsageError` if none)."""
    given = [prompt] if isinstance(prompt, str) else list(prompt)
    if not given:
        raise UsageError("give at least one prompt")
    prompts: list[str] = []
    for text in given:
        cleaned = clean_prompt(text)
        if cleaned not in prompts:
            prompts.append(cleaned)
    return prompts


class _Reporter:
    def __init__(self, callback: Progress | None, bar: Any, total: int) -> None:
        self.callback, self.bar, self.total, self.done = callback, bar, total, 0

    def __call__(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        if self.callback is not None:
            self.callback(self.done, self.total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _progress(progress: bool | Progress, total: int) -> _Reporter:
    if callable(progress):
        reporter = _Reporter(progress, None, total)
        progress(0, total)
        return reporter
    if progress:
        from tqdm import tqdm

        return _Reporter(None, tqdm(total=total, unit="chip", desc="chips", dynamic_ncols=True), total)
    return _Reporter(None, None, total)


def run_chips(
    reader: SceneReader,
    chips: list[Chip],
    segmenter: Any,
    prompts: list[str],
    batch_size: int,
    stitchers: list[Stitcher],
    report: Callable[[int], None],
    vectorisers: int | None = None,
) -> list[list[tuple[Chip, str, list[str]]]]:
    """Segment ``chips`` by every prompt; per prompt, ``(chip, answer, labels)`` per processed chip, in grid order.

    A pipeline of threads: the reader thread reads chips ahead, this thread runs the segmenter
    (each batch by every prompt, back to back, so the chips' image work can be reused by the
    segmenter), and the vectoriser thread hands each segmented batch to ``vectorisers`` threads
    (default: from the cores available) that threshold and vectorise its chips into
    ``stitchers[k]`` (:meth:`Stitcher.add`). GDAL reads, GDAL's polygonizer (see
    :func:`~segearth_geo.vectorize.polygonize`), GEOS and most numpy and torch work release
    the GIL, so reading and vectorising overlap the segmenter's work and use several
    cores; memory stays bounded by the two queues. ``report(n)`` is called with the number of
    chips (processed or skipped) after each batch; it may raise to stop the run.
    Batch jobs call this too, with their own chips and stitchers.
    """
    batches: queue.Queue = queue.Queue(maxsize=QUEUE_BATCHES)
    segmented: queue.Queue = queue.Queue(maxsize=max(VECTORISE_BATCHES, len(prompts)))
    stop = threading.Event()
    failure: list[BaseException] = []  # an error of the vectoriser thread, re-raised here
    records: list[list[tuple[Chip, str, list[str]]]] = [[] for _ in prompts]
    workers = vectorisers or vectoriser_count()
    threads = [
        threading.Thread(target=_read_ahead, args=(reader, chips, batch_size, batches, stop),
                         name="segearth-chip-reader", daemon=True),
        threading.Thread(target=_vectorise, args=(stitchers, segmented, records, failure, stop, workers),
                         name="segearth-vectoriser", daemon=True),
    ]
    for thread in threads:
        thread.start()
    try:
        while True:
            item = _get(batches, failure)
            if item is _END:
                break
            if isinstance(item, BaseException):
                raise item
            done = len(item.chips) + item.skipped
            if item.chips:
                for k, prompt in enumerate(prompts):  # back to back on the same chips
                    predictions = _segment(segmenter, item.rgbs, prompt, item.chips)
                    _put(segmented, (k, item.chips, item.valids, predictions), stop)
                    del predictions
            del item  # the chips' RGB is no longer needed: free it before waiting
            report(done)
        _put(segmented, _END, stop)
        threads[1].join()  # the vectoriser finishes the queued batches
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    if failure:
        raise failure[0]
    for recs in records:  # batches of one prompt arrive in order; keep grid order explicit
        recs.sort(key=lambda record: record[0].index)
    return records


def vectoriser_count() -> int:
    """Vectoriser threads: the cores this process may use, less one for the segmenter (at least 2)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 2
    return max(2, cores - 1)


def _get(items: queue.Queue, failure: list[BaseException]) -> Any:
    """Next item of ``items``; re-raises an error of the vectoriser thread instead of waiting forever."""
    while True:
        if failure:
            raise failure[0]
        try:
            return items.get(timeout=0.1)
        except queue.Empty:
            continue


def _vectorise(
    stitchers: list[Stitcher],
    segmented: queue.Queue,
    records: list[list[tuple[Chip, str, list[str]]]],
    failure: list[BaseException],
    stop: threading.Event,
    workers: int,
) -> None:
    """Vectoriser thread: hand each segmented chip to its prompt's stitcher until ``_END``."""
    pool = ThreadPoolExecutor(workers, thread_name_prefix="segearth-vectoriser")
    try:
        while not stop.is_set():
            try:
                item = segmented.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is _END:
                return
            k, chips, valids, predictions = item
            # Chips of a batch are vectorised concurrently (GDAL's polygonizer and GEOS run
            # without the GIL); the stitcher's result does not depend on the order.
            targets = [p.targets for p in predictions]
            labels = list(pool.map(stitchers[k].add, chips, targets, valids))
            records[k].extend((c, str(p.answer), ls) for c, p, ls in zip(chips, predictions, labels))
    except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which re-raises it
        failure.append(exc)
        stop.set()
    finally:
        pool.shutdown(wait=True)


def _read_ahead(
    reader: SceneReader, chips: list[Chip], batch_size: int, batches: queue.Queue, stop: threading.Event
) -> None:
    """Reader thread: fill ``batches`` with :class:`_Batch` items, then ``_END`` (or the error)."""
    try:
        batch = _Batch()
        for chip in chips:
            if stop.is_set():
                return
            rgb, valid = reader.read(chip.window)
            if not valid.any():  # fully invalid (nodata collar…): never sent to the segmenter
                batch.skipped += 1
                continue
            batch.chips.append(chip)
            batch.rgbs.append(rgb)
            batch.valids.append(valid)
            if len(batch.chips) == batch_size:
                _put(batches, batch, stop)
                batch = _Batch()
        if batch.chips or batch.skipped:
            _put(batches, batch, stop)
        _put(batches, _END, stop)
    except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which re-raises it
        _put(batches, exc, stop)


def _put(batches: queue.Queue, item: Any, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            batches.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


def _segment(segmenter: Any, rgbs: list[np.ndarray], prompt: str, chips: list[Chip]) -> list[ChipPrediction]:
    """Call the segmenter on one batch and check what it returns."""
    try:
        predictions = segmenter.segment(rgbs, prompt)
    except SegEarthGeoError:
        raise
    except Exception as exc:
        first = chips[0].index
        raise ModelError(f"the segmenter failed on chips {first}..{chips[-1].index}: {type(exc).__name__}: {exc}") from exc
    predictions = list(predictions) if predictions is not None else []
    if len(predictions) != len(rgbs):
        raise ModelError(f"the segmenter returned {len(predictions)} predictions for {len(rgbs)} chips")
    for rgb, prediction in zip(rgbs, predictions):
        if not isinstance(prediction, ChipPrediction):
            raise ModelError(f"the segmenter must return ChipPrediction objects, got {type(prediction).__name__}")
        for target in prediction.targets:
            if target.probability.shape != rgb.shape[:2]:
                raise ModelError(
                    f"target {target.label!r} has probability shape {target.probability.shape}, "
                    f"expected the chip's {rgb.shape[:2]}"
                )
    return predictions


COLUMNS = ["label", "score", "area_m2", "pixels", "prompt"]


def _segments_frame(
    regions: list[Region], crs: Any, prompt: str, min_area: float | None, simplify: float | None
) -> gpd.GeoDataFrame:
    """Regions (map coordinates) -> GeoDataFrame, simplified and filtered."""
    labels = np.array([r.label for r in regions], dtype=object)
    geoms = np.empty(len(regions), dtype=object)
    geoms[:] = [r.geometry for r in regions]
    scores = np.array([r.score for r in regions], dtype=np.float64)
    pixels = np.array([r.pixels for r in regions], dtype=np.int64)
    if simplify:
        for label in np.unique(labels):  # one coverage per label (labels may overlap each other)
            idx = np.flatnonzero(labels == label)
            geoms[idx] = simplify_coverage(geoms[idx], float(simplify))
        keep = ~shapely.is_empty(geoms)
        labels, geoms, scores, pixels = labels[keep], geoms[keep], scores[keep], pixels[keep]
        # A collapsed piece may come back as several polygons: one row per polygon.
        parts, owner = shapely.get_parts(geoms, return_index=True)
        labels, geoms, scores, pixels = labels[owner], shapely.normalize(parts), scores[owner], pixels[owner]
    areas = area_m2(geoms, crs)
    if min_area:
        keep = areas >= float(min_area)
        labels, geoms, scores, pixels, areas = labels[keep], geoms[keep], scores[keep], pixels[keep], areas[keep]
    frame = gpd.GeoDataFrame(
        {
            "label": labels.astype(str) if len(labels) else np.array([], dtype=str),
            "score": scores,
            "area_m2": areas,
            "pixels": pixels,
            "prompt": [prompt] * len(labels),
        },
        geometry=gpd.GeoSeries(np.asarray(geoms, dtype=object), crs=crs),
    )
    return frame.reset_index(drop=True)


__all__ = ["COLUMNS", "check_request", "default_overlap", "normalise_label", "run_chips", "segment_raster"]
