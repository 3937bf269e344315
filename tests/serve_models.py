"""Deterministic numpy-only segmenters for the model-server tests (no torch: they also run in CI's thin-client
virtualenv). The server loads them with ``--model /abs/path/tests/serve_models.py:<factory>``.

* :class:`SmoothSegmenter` — for each colour word (red, green, blue) of the prompt, one target whose probability
  where that channel is the pixel's strict maximum is ``0.9 * c / 255 + 0.1 * f`` (``f`` a pixel hash in [0, 1)),
  else 0: values off the 1/255 grid, many near any threshold, so uint8 transport alone would flip pixels. It keeps
  a per-chip image cache (tier ``vision``) and reports ``cache_stats()`` like the real backends.
* :class:`ScoredSegmenter` — the same targets with a detection score each (``0.3 + 0.6 * mean channel``), kept when
  above ``score_threshold`` (like SAM3).
* ``slow`` — sleeps ``SEGEARTH_TEST_DELAY`` seconds (default 0.3) per call; ``poison`` — fails on a chip whose
  first pixel is (1, 2, 3); ``noisy_bytes``-free: nothing here writes to stdout.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence

import numpy as np

from segearth_geo.prediction import ChipPrediction, Target

COLOURS = ("red", "green", "blue")
POISON = (1, 2, 3)


def smooth_probability(chip: np.ndarray, channel: int) -> np.ndarray:
    """float32 ``(h, w)``: see the module docstring."""
    rgb = chip.astype(np.int32)
    others = np.delete(rgb, channel, axis=2).max(axis=2)
    frac = ((rgb[..., 0] * 31 + rgb[..., 1] * 17 + rgb[..., 2] * 7) % 97).astype(np.float32) / np.float32(97.0)
    value = np.float32(0.9) * rgb[..., channel].astype(np.float32) / np.float32(255.0) + np.float32(0.1) * frac
    return np.where(rgb[..., channel] > others, value, np.float32(0.0)).astype(np.float32)


class SmoothSegmenter:
    """Smooth colour probabilities with an image cache (see the module docstring)."""

    capabilities = frozenset({"image_cache"})

    def __init__(self, chip_size: int = 64, delay: float = 0.0) -> None:
        self.chip_size = chip_size
        self.delay = delay
        self.device_description = "cpu (numpy test segmenter)"
        self._cache: dict[str, list[np.ndarray]] = {}
        self._hits = self._misses = 0

    def _planes(self, chip: np.ndarray) -> list[np.ndarray]:
        key = hashlib.blake2b(chip.tobytes() + str(chip.shape).encode(), digest_size=16).hexdigest()
        if key in self._cache:
            self._hits += 1
            return self._cache[key]
        self._misses += 1
        planes = [smooth_probability(chip, c) for c in range(3)]
        self._cache[key] = planes
        return planes

    def cache_stats(self) -> dict:
        size = sum(p.nbytes for planes in self._cache.values() for p in planes)
        return {"hits": {"vision": self._hits}, "misses": {"vision": self._misses}, "evictions": 0, "bytes": size,
                "items": len(self._cache), "max_bytes": 1 << 30}

    def segment(self, chips: Sequence[np.ndarray], prompt: str) -> list[ChipPrediction]:
        if self.delay:
            time.sleep(self.delay)
        words = [c for c in COLOURS if c in prompt.lower()]
        out = []
        for chip in chips:
            if chip.dtype != np.uint8 or chip.ndim != 3 or chip.shape[2] != 3 or max(chip.shape[:2]) > self.chip_size:
                raise ValueError(f"bad chip {chip.dtype} {chip.shape}")
            if tuple(int(v) for v in chip[0, 0]) == POISON:
                raise ValueError("poisoned chip")
            planes = self._planes(chip)
            targets = [Target(f"{w} object", planes[COLOURS.index(w)]) for w in words]
            answer = "Sure, " + ", ".join(f"the {w} object [SEG]" for w in words) + "." if words else "Nothing found."
            out.append(ChipPrediction(answer, targets))
        return out


class ScoredSegmenter(SmoothSegmenter):
    """Targets with detection scores, kept above ``score_threshold`` (see the module docstring)."""

    capabilities = frozenset({"image_cache", "scores"})

    def __init__(self, chip_size: int = 64, score_threshold: float = 0.5) -> None:
        super().__init__(chip_size)
        self.score_threshold = score_threshold

    def segment(self, chips: Sequence[np.ndarray], prompt: str) -> list[ChipPrediction]:
        out = []
        for chip, prediction in zip(chips, super().segment(chips, prompt)):
            kept = []
            for target in prediction.targets:
                channel = COLOURS.index(target.label.split()[0])
                score = 0.3 + 0.6 * float(chip[..., channel].mean()) / 255.0
                if score > self.score_threshold:
                    kept.append(Target(target.label, target.probability, score))
            out.append(ChipPrediction(f"{len(kept)} instances above {self.score_threshold:g}", kept))
        return out


def smooth() -> SmoothSegmenter:
    return SmoothSegmenter(64)


def smooth_big() -> SmoothSegmenter:
    """256-px chips (benchmarks, QGIS)."""
    return SmoothSegmenter(256)


def scored(score_threshold: float = 0.5) -> ScoredSegmenter:
    return ScoredSegmenter(64, score_threshold)


def slow() -> SmoothSegmenter:
    return SmoothSegmenter(64, delay=float(os.environ.get("SEGEARTH_TEST_DELAY", "0.3")))


def poison() -> SmoothSegmenter:
    return SmoothSegmenter(64)
