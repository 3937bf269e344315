"""What a segmenter returns for one chip, and the protocol every segmenter follows.

The geo engine never imports torch: it talks to models only through
:class:`Segmenter`, handing over ``uint8`` RGB chips and receiving
:class:`ChipPrediction` objects.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from typing import Protocol, Sequence, runtime_checkable

import numpy as np


def clean_prompt(text: str) -> str:
    """The user's instruction as a segmenter receives it, or :class:`UsageError` when it says nothing.

    Unicode-normalised (NFC), with control and invisible format characters removed (zero-width
    spaces, BOM, bidi marks; category Cc/Cf) and runs of whitespace collapsed to one space. A
    prompt that is empty after that (``"\u200b"``, ``" \u3000 "``) is refused. Model control tokens
    typed by the user (``[SEG]``, ``<image>``) are *not* removed here: each segmenter must tokenize
    user text as plain text so that they stay ordinary characters.
    """
    from segearth_geo.errors import UsageError

    if not isinstance(text, str):
        raise UsageError(f"the prompt must be text, got {type(text).__name__}")
    text = unicodedata.normalize("NFC", text)
    text = "".join(" " if ch.isspace() else ch for ch in text if ch.isspace() or unicodedata.category(ch) not in ("Cc", "Cf"))
    text = " ".join(text.split())
    if not text:
        raise UsageError("the prompt is empty; say what to segment, e.g. 'buildings with a red roof'")
    return text


@dataclass
class Target:
    """One ``[SEG]`` target of an answer.

    Attributes:
        label: the phrase the model attached to this ``[SEG]`` (e.g. ``"tennis net"``).
        probability: float32 array ``(h, w)`` in ``[0, 1]`` with the chip's own size.
        score: the model's confidence in this target as a whole, in ``[0, 1]``, when it has one
            (SAM3's detection score); ``None`` when only per-pixel probabilities exist (SegEarth-R1/R2).
    """

    label: str
    probability: np.ndarray
    score: float | None = None

    def __post_init__(self) -> None:
        prob = np.asarray(self.probability, dtype=np.float32)
        if prob.ndim != 2:
            raise ValueError(f"Target.probability must be 2-D (h, w), got shape {prob.shape}")
        self.probability = prob
        if self.score is not None:
            self.score = float(self.score)


@dataclass
class ChipPrediction:
    """The model's result for one chip: its text answer and one :class:`Target` per ``[SEG]``."""

    answer: str
    targets: list[Target] = field(default_factory=list)


@runtime_checkable
class Segmenter(Protocol):
    """Anything that turns RGB chips plus a prompt into predictions.

    ``chip_size`` is the largest chip side the segmenter accepts (1024 for SegEarth-R2);
    ``segment`` receives ``uint8`` arrays ``(h, w, 3)`` with ``h, w <= chip_size`` and
    returns exactly one :class:`ChipPrediction` per chip, in the same order, each
    target's probability having that chip's ``(h, w)``. The segmenter does its own
    model-specific resize and padding.
    """

    chip_size: int

    def segment(self, chips: Sequence[np.ndarray], prompt: str) -> list[ChipPrediction]: ...
