"""What every segmenter of the model family shares: :class:`SegmenterBase`.

A backend's segmenter (``segearth_r2/segmenter.py``, ``segearth_r1/segmenter.py``, ``sam3/segmenter.py``)
subclasses it and states only what differs, as class attributes: its name, its declared ``capabilities``
(:data:`~segearth_geo.prediction.CAPABILITIES`), its default batch sizes per device type and its cache tiers.
The base owns the rest:

* device and dtype, chosen by the one picker (:func:`~segearth_geo.model.device.resolve_device`), the model
  moved there once (``model.to(device, dtype).eval()``) and described in words (``device_description``);
* the batch size (the backend's default for the device type unless given) and :meth:`~SegmenterBase.in_batches`,
  which halves it on CUDA out-of-memory;
* the per-chip image-state cache (:class:`~segearth_geo.model.image_cache.ImageCache`, bounded by ``cache_mb``)
  and :meth:`~SegmenterBase.cache_stats`;
* :meth:`~SegmenterBase.autocast` (CUDA in bf16/fp16 only) and the chip-shape check
  (:meth:`~SegmenterBase.check_chips`: RGB ``(h, w, 3)`` with ``h, w <= chip_size``);
* :meth:`~SegmenterBase.from_pretrained`: a checkpoint folder through the backend's one ``load(folder, options)``
  entry, with the same option checks as :func:`~segearth_geo.model.loading.load_segmenter`.
"""

from __future__ import annotations

import contextlib
import logging
import numbers
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import numpy as np
import torch

from segearth_geo.errors import ModelError, UsageError
from segearth_geo.model.device import describe_device, resolve_device
from segearth_geo.model.image_cache import ImageCache, default_cache_bytes

log = logging.getLogger(__name__)


def rgb_uint8(image: np.ndarray) -> np.ndarray:
    """``image`` as a contiguous ``uint8 (H, W, 3)`` array; :class:`UsageError` for any other dtype or shape."""
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise UsageError(f"expected a uint8 RGB array (H, W, 3), got dtype {array.dtype} shape {array.shape}")
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise UsageError(f"empty image of shape {array.shape}")
    return np.ascontiguousarray(array)


class SegmenterBase:
    """Shared set-up and plumbing of the family's segmenters (see the module docstring).

    Args:
        model: the backend's network (moved to ``device``/``dtype`` and put in eval mode here); ``model.config``
            becomes ``self.config``.
        chip_size: the largest chip side the segmenter takes.
        device: ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` or a
            ``torch.device``.
        dtype: compute dtype (a ``torch.dtype`` or its name); default: the device's (bf16 on CUDA, else fp32).
        batch_size: chips per forward pass; default :attr:`cuda_batch_size` on CUDA, else :attr:`cpu_batch_size`.
        cache_mb: bound of the image-state cache in MiB (``None``: a default that fits the device; ``0``: off).

    Class attributes a backend sets:
        name: short name, first part of the cache keys' salt (``"segearth-r2"``).
        capabilities: the optional capabilities it declares (``"image_cache"``, ``"scores"``, ``"predict"``).
        cuda_batch_size, cpu_batch_size: default batch sizes (MPS shares the machine's memory: CPU default).
        cache_tiers: the image cache's tiers, cheapest first (the largest is evicted first).
    """

    name: ClassVar[str] = "segmenter"
    capabilities: ClassVar[frozenset[str]] = frozenset({"image_cache"})
    cuda_batch_size: ClassVar[int] = 8
    cpu_batch_size: ClassVar[int] = 1
    cache_tiers: ClassVar[tuple[str, ...]] = ("vision",)

    def __init__(self, model, *, chip_size: int, device: str | torch.device = "auto", dtype=None,
                 batch_size: int | None = None, cache_mb: float | None = None) -> None:
        self.device, self.dtype = resolve_device(device, dtype)
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self.config = model.config
        self.chip_size = int(chip_size)
        size = self.default_batch_size(self.device) if batch_size is None else batch_size
        if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
            raise UsageError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        self.batch_size = int(size)
        if cache_mb is not None and cache_mb < 0:
            raise UsageError(f"cache_mb must be >= 0 MiB (0: no cache), got {cache_mb}")
        max_bytes = default_cache_bytes(self.device) if cache_mb is None else int(cache_mb * 2**20)
        self.cache = ImageCache(max_bytes, tier_order=self.cache_tiers)

    @classmethod
    def default_batch_size(cls, device: torch.device) -> int:
        """The backend's default chips per forward pass on ``device``."""
        return cls.cuda_batch_size if device.type == "cuda" else cls.cpu_batch_size

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "auto", dtype=None,
                        batch_size: int | None = None, **options: Any):
        """Load a checkpoint folder of this backend (a SegEarth-R2 repo id is also accepted).

        ``options`` are backend options (``template``, ``score_threshold``, ``cache_mb``); one the backend does
        not take is refused in one line, as by :func:`~segearth_geo.model.loading.load_segmenter`.
        """
        from segearth_geo.model.registry import backend_of
        from segearth_geo.params import LoadOptions

        unknown = sorted(set(options) - set(LoadOptions.names()))
        if unknown:
            raise UsageError(f"unknown load option(s) {', '.join(unknown)}")
        dtype_name = None if dtype is None else str(dtype).replace("torch.", "")
        load = LoadOptions(model=str(path), device=str(device), dtype=dtype_name, batch_size=batch_size,
                           **options).check()
        return backend_of(cls).load(Path(path).expanduser(), load)

    # ------------------------------------------------------------------------------------------ what it declares
    @property
    def device_description(self) -> str:
        """What it runs on, in words: ``"cuda:0 (NVIDIA H200, bfloat16)"``."""
        return describe_device(self.device, self.dtype)

    def cache_stats(self) -> dict:
        """Hits, misses (per tier), bytes and items of the image-state cache (logged by the engine after a run)."""
        return self.cache.stats().to_dict()

    # ------------------------------------------------------------------------------------------ helpers
    def check_chips(self, chips: Sequence[np.ndarray]) -> None:
        """:class:`UsageError` (one message) for a chip that is not RGB ``(h, w, 3)`` within ``chip_size``."""
        for chip in chips:
            shape = np.shape(chip)
            if len(shape) != 3 or shape[2] != 3 or not (1 <= shape[0] <= self.chip_size
                                                        and 1 <= shape[1] <= self.chip_size):
                raise UsageError(f"chip of shape {shape} is not an RGB array (h, w, 3) with h, w within "
                                 f"chip_size {self.chip_size}")

    def autocast(self):
        """Mixed precision around a forward: CUDA in bf16/fp16 only (elsewhere the model is already in its dtype)."""
        if self.device.type == "cuda" and self.dtype != torch.float32:
            return torch.autocast("cuda", dtype=self.dtype)
        return contextlib.nullcontext()

    def in_batches(self, count: int, run: Callable[[int, int], list]) -> list:
        """``run(start, stop)`` over ``[0, count)`` in batches of ``batch_size``; results concatenated.

        On CUDA out-of-memory the batch is halved (``batch_size`` keeps the smaller size for later calls) and
        the same chips are tried again; at one chip per batch it is a :class:`ModelError`.
        """
        results: list = []
        start = 0
        while start < count:
            batch = self.batch_size
            stop = min(start + batch, count)
            try:
                results.extend(run(start, stop))
            except torch.cuda.OutOfMemoryError as exc:
                torch.cuda.empty_cache()
                if batch == 1:
                    raise ModelError("CUDA out of memory with one chip per batch; free GPU memory, use a smaller "
                                     "model or --device cpu") from exc
                self.batch_size = max(1, batch // 2)
                log.warning("CUDA out of memory: retrying with batch size %d", self.batch_size)
                continue
            start = stop
        return results
