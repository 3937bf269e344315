"""The threaded pipeline shared by one-scene runs and batch units: reader -> segmenter -> vectorisers.

:func:`run_chips` reads chips ahead on a reader thread, runs the segmenter on the calling thread (each
batch by every prompt, back to back, so the chips' image work can be reused) and hands each segmented
batch to a pool of vectoriser threads that feed one :class:`~segearth_geo.stitch.Stitcher` per prompt.
:func:`segments_frame` turns a stitcher's regions into the output table. The engine
(:func:`~segearth_geo.engine.segment_scene`) and batch units (:mod:`segearth_geo.batch.unit`) both use them,
with one policy for the number of vectoriser threads (:func:`vectoriser_count`) and one GDAL block-cache
default (:func:`gdal_options`).
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import geopandas as gpd
import numpy as np
import shapely

from segearth_geo.chips import Chip
from segearth_geo.errors import ModelError, SegEarthGeoError
from segearth_geo.prediction import ChipPrediction, describe_segmenter
from segearth_geo.raster import SceneReader
from segearth_geo.stitch import Region, Stitcher
from segearth_geo.vectorize import area_m2, simplify_coverage

QUEUE_BATCHES = 1  # batches read ahead (besides the one the reader is filling)
VECTORISE_BATCHES = 1  # segmented batches waiting for the vectoriser threads
# Memory: at most QUEUE_BATCHES + VECTORISE_BATCHES + 3 batches of chips (and their
# probabilities) exist at a time, whatever the scene size.
# GDAL's block cache defaults to 5 % of RAM and fills up as a large scene is read, which would make
# peak memory grow with the scene. Chips are read in row-major order and only neighbouring chips
# share blocks, so a small fixed cache is enough (a re-read costs a block decode, not memory).
# A GDAL_CACHEMAX set by the user is respected.
GDAL_CACHE_MB = 32
MAX_VECTORISERS = 8
COLUMNS = ["label", "score", "area_m2", "pixels", "prompt"]
ChipRecord = tuple[Chip, str, list[str]]  # a processed chip, its answer, the labels found on it


def gdal_options(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """GDAL configuration for a run's reads: ``extra`` plus the bounded block cache (unless the user set one)."""
    options = dict(extra or {})
    if "GDAL_CACHEMAX" not in os.environ and "GDAL_CACHEMAX" not in options:
        options["GDAL_CACHEMAX"] = GDAL_CACHE_MB * 2**20  # rasterio passes an int to GDALSetCacheMax64: bytes
    return options


def available_cores() -> int:
    """CPU cores this process may run on (affinity-aware where the OS tells)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def vectoriser_count(cores: int | None = None) -> int:
    """Vectoriser threads for ``cores`` (default: the cores available): one core is left to the segmenter,
    at least 2 threads (GDAL's polygonizer and GEOS release the GIL while a thread waits on I/O), at most
    :data:`MAX_VECTORISERS`."""
    return max(2, min(MAX_VECTORISERS, (cores or available_cores()) - 1))


@dataclass
class _Batch:
    """Chips read ahead by the reader thread: the ones to segment, and how many were skipped."""

    chips: list[Chip] = field(default_factory=list)
    rgbs: list[np.ndarray] = field(default_factory=list)  # each uint8 (h, w, 3)
    valids: list[np.ndarray] = field(default_factory=list)  # each bool (h, w)
    skipped: int = 0


_END = object()


def run_chips(
    reader: SceneReader,
    chips: list[Chip],
    segmenter: Any,
    prompts: list[str],
    batch_size: int,
    stitchers: list[Stitcher],
    report: Callable[[int], None],
    vectorisers: int | None = None,
) -> list[list[ChipRecord]]:
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
    """
    batches: queue.Queue = queue.Queue(maxsize=QUEUE_BATCHES)
    segmented: queue.Queue = queue.Queue(maxsize=max(VECTORISE_BATCHES, len(prompts)))
    stop = threading.Event()
    failure: list[BaseException] = []  # an error of the vectoriser thread, re-raised here
    records: list[list[ChipRecord]] = [[] for _ in prompts]
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
                    predictions = _segment(segmenter, item.rgbs, prompt, item.chips, stitchers[k].threshold)
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
    records: list[list[ChipRecord]],
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


def _segment(segmenter: Any, rgbs: list[np.ndarray], prompt: str, chips: list[Chip],
             threshold: float | None = None) -> list[ChipPrediction]:
    """Call the segmenter on one batch and check what it returns; a segmenter that declares ``"threshold"``
    gets the prompt's ``threshold`` too."""
    try:
        if threshold is not None and describe_segmenter(segmenter).has("threshold"):
            predictions = segmenter.segment(rgbs, prompt, threshold=threshold)
        else:
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


def segments_frame(
    regions: list[Region], crs: Any, prompt: str, min_area: float | None, simplify: float | None
) -> gpd.GeoDataFrame:
    """A stitcher's regions (map coordinates) -> the output table (:data:`COLUMNS` + geometry) for ``prompt``.

    ``simplify`` (map units) simplifies each label's polygons as one coverage (shared edges stay shared);
    ``min_area`` (m²) drops smaller polygons; areas are measured after both.
    """
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


__all__ = ["COLUMNS", "GDAL_CACHE_MB", "available_cores", "gdal_options", "run_chips", "segments_frame",
           "vectoriser_count"]
