"""Test segmenters (tests only): deterministic, pixel-driven, no model.

Load them in the CLI with ``--model /abs/path/tests/segmenters.py:<factory>``; every
factory takes no argument.

* :class:`ColourSegmenter` — for each colour word (red, green, blue) in the prompt, one
  target labelled ``"<colour> object"`` whose probability at a pixel is that channel / 255
  where the channel is the pixel's strict maximum, else 0. Output depends only on the
  pixels, so a tiled run must equal an untiled one.
* :class:`RecordingSegmenter` — a ColourSegmenter that records every call (batch sizes,
  chip shapes, which chips were seen) to check batching and skipped chips.
* :class:`EverythingSegmenter` — probability 1 everywhere (checks that invalid pixels stay out).
* :class:`SlowSegmenter` — sleeps in each call and records when (checks read-ahead).
* :class:`FailingSegmenter` — raises on every call.
* :class:`NoisySegmenter` — a ColourSegmenter that, like a chatty library, emits a
  ``FutureWarning`` and a warning on a third-party logger in every call.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections.abc import Sequence

import numpy as np

from segearth_geo.prediction import ChipPrediction, Target

COLOURS = ("red", "green", "blue")


class ColourSegmenter:
    """Labels pure-colour regions by the colour words of the prompt (see the module docstring)."""

    def __init__(self, chip_size: int = 64, label_case: str = "lower") -> None:
        self.chip_size = chip_size
        self.label_case = label_case
        self.device = "cpu"

    def segment(self, chips: Sequence[np.ndarray], prompt: str) -> list[ChipPrediction]:
        words = [c for c in COLOURS if c in prompt.lower()]
        results = []
        for chip in chips:  # chip: uint8 (h, w, 3)
            if chip.dtype != np.uint8 or chip.ndim != 3 or chip.shape[2] != 3:
                raise TypeError(f"chip must be uint8 (h, w, 3), got {chip.dtype} {chip.shape}")
            if max(chip.shape[:2]) > self.chip_size:
                raise ValueError(f"chip {chip.shape} larger than chip_size {self.chip_size}")
            targets = []
            rgb = chip.astype(np.int16)
            for word in words:
                c = COLOURS.index(word)
                others = np.delete(rgb, c, axis=2).max(axis=2)  # (h, w)
                prob = np.where(rgb[..., c] > others, rgb[..., c] / 255.0, 0.0).astype(np.float32)
                label = f"{word} object" if self.label_case == "lower" else f"  {word.upper()}   Object "
                targets.append(Target(label, prob))
            answer = "Sure, " + ", ".join(f"the {w} object [SEG]" for w in words) + "." if words else "Nothing found."
            results.append(ChipPrediction(answer, targets))
        return results


class RecordingSegmenter(ColourSegmenter):
    """A :class:`ColourSegmenter` that records ``(batch size, [chip shapes], thread name)`` per call."""

    def __init__(self, chip_size: int = 64) -> None:
        super().__init__(chip_size)
        self.calls: list[tuple[int, list[tuple[int, ...]], str]] = []
        self.chip_sums: list[int] = []

    def segment(self, chips: Sequence[np.ndarray], prompt: str) -> list[ChipPrediction]:
        self.calls.append((len(chips), [c.shape for c in chips], threading.current_thread().name))
        self.chip_sums.extend(int(c.sum()) for c in chips)
        return super().segment(chips, prompt)


class EverythingSegmenter:
    """One target ``"area"`` with probability 1 on every pixel it is given (tests validity masks)."""

    def __init__(self, chip_size: int = 64) -> None:
        self.chip_size = chip_size
        self.calls = 0

    def segment(self, chips: Sequence[np.ndarray], prompt: str) -> list[ChipPrediction]:
        self.calls += 1
        return [ChipPrediction("[SEG]", [Target("area", np.ones(c.shape[:2], np.float32))]) for c in chips]


class SlowSegmenter(RecordingSegmenter):
    """A recording segmenter that also records ``(start, end)`` times of each call and sleeps in it."""

    def __init__(self, chip_size: int = 64, seconds: float = 0.05) -> None:
        super().__init__(chip_size)
        self.seconds = seconds
        self.spans: list[tuple[float, float]] = []

    def segment(self, chips: Sequence[np.ndarray], prompt: str) -> list[ChipPrediction]:
        start = time.perf_counter()
        time.sleep(self.seconds)
        result = super().segment(chips, prompt)
        self.spans.append((start, time.perf_counter()))
        return result


class FailingSegmenter(ColourSegmenter):
    """Raises ``RuntimeError`` on every call."""

    def segment(self, chips: Sequence[np.ndarray], prompt: str) -> list[ChipPrediction]:
        raise RuntimeError("simulated model crash")


def colour_small() -> ColourSegmenter:
    """Colour segmenter with 64-pixel chips (many chips on small test rasters)."""
    return ColourSegmenter(chip_size=64)


def colour_mixed_case() -> ColourSegmenter:
    """Colour segmenter whose labels need normalising (``"  RED   Object "``)."""
    return ColourSegmenter(chip_size=64, label_case="upper")


def failing() -> FailingSegmenter:
    """A segmenter that always raises."""
    return FailingSegmenter(chip_size=64)


class NoisySegmenter(ColourSegmenter):
    """Warns like a third-party library on every call (checks the CLI keeps the terminal clean)."""

    def segment(self, chips: Sequence[np.ndarray], prompt: str) -> list[ChipPrediction]:
        warnings.warn("`old_argument` is deprecated, use `new_argument` instead", FutureWarning, stacklevel=1)
        logging.getLogger("chatty_library").warning("chatty library warning")
        return super().segment(chips, prompt)


def noisy() -> NoisySegmenter:
    """A colour segmenter that emits library warnings."""
    return NoisySegmenter(chip_size=64)


def slow() -> SlowSegmenter:
    """A colour segmenter that sleeps 0.5 s per call (for interrupting a run)."""
    return SlowSegmenter(chip_size=64, seconds=0.5)


def factory_raises() -> ColourSegmenter:
    """A factory that fails, as a model constructor can."""
    raise RuntimeError("simulated factory failure")

