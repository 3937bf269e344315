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
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        shown = text.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")
        raise UsageError(f"the prompt {shown[:60]!r} is not valid UTF-8 text (a byte that is not UTF-8 in the "
                         "command line or request); type it again") from None
    text = unicodedata.normalize("NFC", text)
    text = "".join(" " if ch.isspace() else ch for ch in text if ch.isspace() or unicodedata.category(ch) not in ("Cc", "Cf"))
    text = " ".join(text.split())
    if not text:
        raise UsageError("the prompt is empty; say what to segment, e.g. 'buildings with a red roof'")
    return text


def clean_prompts(prompt: str | Sequence[str]) -> list[str]:
    """One prompt or several -> cleaned (:func:`clean_prompt`), distinct prompts in the given order.

    Raises :class:`UsageError` when there is none or one says nothing.
    """
    from segearth_geo.errors import UsageError

    given = [prompt] if isinstance(prompt, str) else list(prompt)
    if not given:
        raise UsageError("give at least one prompt")
    return list(dict.fromkeys(clean_prompt(text) for text in given))


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
            from segearth_geo.errors import ModelError

            raise ModelError(f"Target.probability must be 2-D (h, w), got shape {prob.shape}")
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


# Optional capabilities a segmenter may declare in its ``capabilities`` attribute.
CAPABILITIES = {
    "image_cache": "keeps per-chip image state across prompts; has cache_stats()",
    "scores": "gives each target a detection score (Target.score)",
    "predict": "has predict(images, prompts[, answers]) for evaluation with per-image prompts",
    "cancel": "has cancel(): stops the calls in progress (a remote model drops its queued chips)",
    "threshold": "segment(chips, prompt, threshold=t) takes the engine's threshold (a remote model keeps p >= t exact)",
}


@dataclass(frozen=True)
class SegmenterInfo:
    """What the engine knows about a segmenter (read once by :func:`describe_segmenter`).

    Attributes:
        chip_size: the largest chip side it accepts.
        device: what it runs on, in words (``None`` when it does not say).
        capabilities: names from :data:`CAPABILITIES` it declares.
        gsd_range: the ground resolution (m/px, low, high) the model was trained for, when known.
        notice: a remark to show wherever it runs (the demo model: not for real imagery).
    """

    chip_size: int
    device: str | None
    capabilities: frozenset[str]
    gsd_range: tuple[float, float] | None = None
    notice: str | None = None

    def has(self, capability: str) -> bool:
        return capability in self.capabilities


def describe_segmenter(segmenter: object) -> SegmenterInfo:
    """Check that ``segmenter`` follows the :class:`Segmenter` protocol and read what it declares.

    The one place where a segmenter's optional attributes (``device_description``, ``capabilities``,
    ``gsd_range``, ``notice``) are read; segmenters of the model family declare them
    (:class:`~segearth_geo.model.base.SegmenterBase`, the registry), any other object may. Raises
    :class:`UsageError` when ``chip_size`` or ``segment`` is missing.
    """
    from segearth_geo.errors import UsageError

    chip_size = getattr(segmenter, "chip_size", None)
    if isinstance(chip_size, bool) or not isinstance(chip_size, (int, np.integer)) or chip_size < 1:
        raise UsageError(f"the segmenter needs a positive int attribute chip_size, got {chip_size!r}")
    if not callable(getattr(segmenter, "segment", None)):
        raise UsageError("the segmenter needs a method segment(chips, prompt)")
    device = getattr(segmenter, "device_description", None)
    capabilities = frozenset(getattr(segmenter, "capabilities", ()) or ())
    gsd = getattr(segmenter, "gsd_range", None)
    notice = getattr(segmenter, "notice", None)
    return SegmenterInfo(int(chip_size), None if device is None else str(device), capabilities,
                         None if gsd is None else (float(gsd[0]), float(gsd[1])), notice or None)
