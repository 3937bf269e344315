"""What a segmenter returns for one chip, and the protocol every segmenter follows.

The geo engine never imports torch: it talks to models only through
:class:`Segmenter`, handing over ``uint8`` RGB chips and receiving
:class:`ChipPrediction` objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence, runtime_checkable

import numpy as np


@dataclass
class Target:
    """One ``[SEG]`` target of an answer.

    Attributes:
        label: the phrase the model attached to this ``[SEG]`` (e.g. ``"tennis net"``).
        probability: float32 array ``(h, w)`` in ``[0, 1]`` with the chip's own size.
    """

    label: str
    probability: np.ndarray

    def __post_init__(self) -> None:
        prob = np.asarray(self.probability, dtype=np.float32)
        if prob.ndim != 2:
            raise ValueError(f"Target.probability must be 2-D (h, w), got shape {prob.shape}")
        self.probability = prob


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
