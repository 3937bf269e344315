"""A bounded cache of per-chip image state, so a second prompt on the same chip skips the image work.

Everything a segmenter computes from a chip's pixels alone is the same for every prompt: for
SegEarth-R2 the projected SigLIP tokens, the LLM key/value cache of the prompt-independent prefix
(the template and the 729 image tokens come before the instruction) and the mask branch's Swin +
pixel-decoder features. :class:`ImageCache` keeps such *state* per chip and *tier*, keyed by the
chip's content (:func:`chip_key`: a hash of its pixels, shape and dtype), so it is correct whatever
the source, window, GSD or band choice that produced the pixels, and it never returns state
computed from other pixels. The model-dependent preprocessing is fixed per segmenter, and each
segmenter owns its cache.

Bounded in bytes with least-recently-used eviction. Tiers differ a lot in size (3B model, bf16:
the prefix key/values are about 260 MB per chip, the SigLIP tokens 4 MB, the mask features about
45 MB at 1024 px), so when room is needed the *largest* tier is evicted first (LRU within it):
under a small bound the cheap tiers of many chips are kept rather than the prefix of one. An item
larger than the whole bound is not stored. Stored tensors stay on the model's device.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def chip_key(image: np.ndarray, salt: str = "") -> str:
    """Content key of a chip: BLAKE2b of its pixels, shape, dtype and ``salt`` (the preprocessing)."""
    array = np.ascontiguousarray(image)
    digest = hashlib.blake2b(digest_size=20)
    digest.update(f"{array.shape}|{array.dtype.str}|{salt}|".encode())
    digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def nbytes(value: Any) -> int:
    """Bytes held by ``value``: tensors and arrays (``nbytes``) inside lists, tuples, dicts and dataclasses."""
    if hasattr(value, "element_size") and hasattr(value, "nelement"):  # torch.Tensor
        return int(value.element_size() * value.nelement())
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, dict):
        return sum(nbytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(nbytes(v) for v in value)
    if hasattr(value, "__dataclass_fields__"):
        return sum(nbytes(getattr(value, name)) for name in value.__dataclass_fields__)
    return 0


@dataclass
class CacheStats:
    """Counters of one cache: per tier hits and misses, and the bytes and items held now."""

    hits: dict[str, int] = field(default_factory=dict)
    misses: dict[str, int] = field(default_factory=dict)
    evictions: int = 0
    bytes: int = 0
    items: int = 0
    max_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"hits": dict(self.hits), "misses": dict(self.misses), "evictions": self.evictions,
                "bytes": self.bytes, "items": self.items, "max_bytes": self.max_bytes}

    def summary(self) -> str:
        tiers = sorted(set(self.hits) | set(self.misses))
        parts = [f"{t} {self.hits.get(t, 0)} hit / {self.misses.get(t, 0)} miss" for t in tiers]
        return (f"image cache: {', '.join(parts) or 'unused'}; {self.items} items, "
                f"{self.bytes / 2**20:.1f} of {self.max_bytes / 2**20:.0f} MiB, {self.evictions} evicted")


class ImageCache:
    """Per-chip, per-tier state with a byte bound (see the module docstring). Thread-safe.

    Args:
        max_bytes: the bound; ``0`` disables the cache (every lookup misses, nothing is stored).
        tier_order: tiers from the one to keep longest to the one to evict first (default: by size,
            largest evicted first, decided per eviction).
    """

    def __init__(self, max_bytes: int, tier_order: Iterable[str] | None = None) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self._tier_order = list(tier_order) if tier_order is not None else None
        self._items: dict[str, OrderedDict[str, tuple[Any, int]]] = {}
        self._bytes = 0
        self._lock = threading.Lock()
        self._stats = CacheStats(max_bytes=self.max_bytes)

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def get(self, key: str, tier: str) -> Any | None:
        """The stored state of ``key`` in ``tier`` (marked as recently used), or ``None``."""
        with self._lock:
            items = self._items.get(tier)
            entry = None if items is None else items.get(key)
            counter = self._stats.hits if entry is not None else self._stats.misses
            counter[tier] = counter.get(tier, 0) + 1
            if entry is None:
                return None
            items.move_to_end(key)
            return entry[0]

    def put(self, key: str, tier: str, value: Any, size: int | None = None) -> bool:
        """Store ``value``; evict until it fits. Returns ``False`` when it was not stored (too large, disabled)."""
        size = nbytes(value) if size is None else int(size)
        if not self.enabled or size > self.max_bytes:
            return False
        with self._lock:
            items = self._items.setdefault(tier, OrderedDict())
            old = items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            while self._bytes + size > self.max_bytes:
                self._evict_one()
            items[key] = (value, size)
            self._bytes += size
            return True

    def _evict_one(self) -> None:
        """Drop the least recently used item of the tier evicted first (lock held)."""
        candidates = [t for t, items in self._items.items() if items]
        if self._tier_order is not None:
            rank = {t: k for k, t in enumerate(self._tier_order)}
            tier = max(candidates, key=lambda t: rank.get(t, len(rank)))
        else:  # the tier whose items are largest on average goes first
            tier = max(candidates, key=lambda t: sum(s for _, s in self._items[t].values()) / len(self._items[t]))
        _, (_, size) = self._items[tier].popitem(last=False)
        self._bytes -= size
        self._stats.evictions += 1

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    @property
    def bytes(self) -> int:
        return self._bytes

    def stats(self) -> CacheStats:
        """A snapshot of the counters."""
        with self._lock:
            return CacheStats(hits=dict(self._stats.hits), misses=dict(self._stats.misses),
                              evictions=self._stats.evictions, bytes=self._bytes,
                              items=sum(len(items) for items in self._items.values()), max_bytes=self.max_bytes)


def default_cache_bytes(device: Any) -> int:
    """A bound that fits the device: a quarter of the free GPU memory on CUDA, on CPU 1/8 of RAM (≤ 4 GiB)."""
    import torch

    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(device)
        return int(free // 4)
    try:
        import os

        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        ram = 8 * 2**30
    return int(min(ram // 8, 4 * 2**30))
