"""Running a segmenter's chips in batches, halving the batch on CUDA out-of-memory (every backend)."""

from __future__ import annotations

import logging
from typing import Any, Callable

import torch

from segearth_geo.errors import ModelError

log = logging.getLogger(__name__)


def in_batches(segmenter: Any, count: int, run: Callable[[int, int], list]) -> list:
    """``run(start, stop)`` over ``[0, count)`` in batches of ``segmenter.batch_size``; results concatenated.

    On CUDA out-of-memory the batch is halved (``segmenter.batch_size`` keeps the smaller size for
    later calls) and the same chips are tried again; at one chip per batch it is a :class:`ModelError`.
    """
    results: list = []
    start = 0
    while start < count:
        batch = segmenter.batch_size
        stop = min(start + batch, count)
        try:
            results.extend(run(start, stop))
        except torch.cuda.OutOfMemoryError as exc:
            torch.cuda.empty_cache()
            if batch == 1:
                raise ModelError("CUDA out of memory with one chip per batch; free GPU memory, use a smaller "
                                 "model or --device cpu") from exc
            segmenter.batch_size = max(1, batch // 2)
            log.warning("CUDA out of memory: retrying with batch size %d", segmenter.batch_size)
            continue
        start = stop
    return results
