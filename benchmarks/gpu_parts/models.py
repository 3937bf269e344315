"""Random-weight segmenters of each backend at a preset's size, built on the device in its dtype.

Speed does not depend on the weights' values, so the suite times the backends' real segmenters
(:class:`~segearth_geo.model.segearth_r2.SegEarthR2Segmenter`, ``SegEarthR1Segmenter``, ``Sam3Segmenter``) over
the random models of :mod:`segearth_geo.model.testing` (the real presets: ``segearth-r2-3b``, ``segearth-r1``,
``sam3``; ``tiny`` for the dry run). Built in memory: no checkpoint is written or read.

:func:`sam3_real` and :func:`sam3_tiny` are also ``file.py:factory`` model specs for ``segearth-geo serve``
(``--model benchmarks/gpu_parts/models.py:sam3_real``): the server loads them through ``load_model``, which
passes the load options each declares. This file is loaded by path there, so it imports only the library.
"""

from __future__ import annotations

import copy

import torch

from segearth_geo.model.device import resolve_device


def r2_segmenter(preset: str, device: str, dtype: str, cache_mb: float | None = 0, seed: int = 0):
    """SegEarth-R2 of ``preset`` (random weights) in its segmenter; the image cache off by default."""
    from segearth_geo.model.segearth_r2.segmenter import SegEarthR2Segmenter
    from segearth_geo.model.testing import random_r2

    dev, dt = resolve_device(device, dtype)
    model, tokenizer = random_r2(preset, seed, dev, dt)
    return SegEarthR2Segmenter(model, tokenizer, device=dev, dtype=dt, cache_mb=cache_mb)


def r1_segmenter(preset: str, device: str, dtype: str, cache_mb: float | None = 0, seed: int = 0):
    """SegEarth-R1 of ``preset`` (random weights, the mask-only model the loader builds) in its segmenter."""
    from segearth_geo.model.segearth_r1.segmenter import SegEarthR1Segmenter
    from segearth_geo.model.testing import r1_tokenizer, random_r1

    dev, dt = resolve_device(device, dtype)
    model = random_r1(preset, seed, dev, dt)
    return SegEarthR1Segmenter(model, r1_tokenizer(preset), device=dev, dtype=dt, cache_mb=cache_mb)


def sam3_segmenter(preset: str, device: str, dtype: str | None = None, batch_size: int | None = None,
                   score_threshold: float | None = None, cache_mb: float | None = 0, seed: int = 0):
    """SAM3 (``"sam3"``: ``Sam3Config()``, facebook/sam3's detector; ``"tiny"``) with random weights.

    Its presence gate (where the segmenter has one) is off: random weights give any presence probability, so the
    work per chip is set by the score threshold alone (:func:`gpu_parts.backends.calibrate_score_threshold`).
    """
    from transformers import Sam3Model

    from segearth_geo.model.sam3 import Sam3Segmenter
    from segearth_geo.model.testing import clip_tokenizer, sam3_config

    dev, dt = resolve_device(device, dtype)
    torch.manual_seed(seed)
    with torch.device(dev):
        model = Sam3Model(sam3_config(preset))
    options = {} if score_threshold is None else {"score_threshold": score_threshold}
    segmenter = Sam3Segmenter(model, clip_tokenizer(), device=dev, dtype=dt, batch_size=batch_size, cache_mb=cache_mb,
                              **options)
    if hasattr(segmenter, "presence_threshold"):  # random weights give any presence: the gate off, the score decides
        segmenter.presence_threshold = 0.0
    return segmenter


def with_cache(segmenter, cache_mb: float | None = None):
    """A second segmenter over the same model and tokenizer, with an image cache of ``cache_mb`` MiB
    (``None``: the device's default bound)."""
    from segearth_geo.model.image_cache import ImageCache, default_cache_bytes

    twin = copy.copy(segmenter)
    bound = default_cache_bytes(segmenter.device) if cache_mb is None else int(cache_mb * 2**20)
    twin.cache = ImageCache(bound, tier_order=segmenter.cache_tiers)
    return twin


# ------------------------------------------------------------------------------ factories for `segearth-geo serve`
def sam3_real(device: str = "auto", dtype: str | None = None, batch_size: int | None = None,
              score_threshold: float | None = None, cache_mb: float | None = None):
    """``--model benchmarks/gpu_parts/models.py:sam3_real``: SAM3 at the real size, random weights."""
    return sam3_segmenter("sam3", device, dtype, batch_size, score_threshold, cache_mb)


def sam3_tiny(device: str = "auto", dtype: str | None = None, batch_size: int | None = None,
              score_threshold: float | None = None, cache_mb: float | None = None):
    """``--model benchmarks/gpu_parts/models.py:sam3_tiny``: the tiny SAM3 of the dry run."""
    return sam3_segmenter("tiny", device, dtype, batch_size, score_threshold, cache_mb)


SERVE_FACTORIES = {"sam3": "sam3_real", "tiny": "sam3_tiny"}
