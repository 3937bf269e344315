"""What looks at the overview: the segmenter itself, another segmenter, or a localizer such as ZoomEarth.

``zoom_model`` (``--zoom-model``) names it:

* unset — the run's own segmenter answers the prompt on the coarse levels;
* a model spec whose backend is a **localizer** (``zoomearth`` = ``HappyBug/ZoomEarth-3B``, or a folder in its
  layout) — one look at the whole area per prompt, answered by one box (:class:`Localization`); the run then
  segments inside that box at full resolution with its own segmenter. No box (a whole-scene instruction, or an
  answer that cannot be parsed) → the whole area is segmented (a grid), and the run says so;
* any other spec (``demo``, an alias, a folder, ``file.py:factory``) — that segmenter answers on the coarse levels.

A localizer is any object with ``overview_side`` (the long side of the image it looks at), ``read_side`` (the
long side it wants to resize from; the engine reads the area at most that large) and
``localize(image, prompt) -> Localization`` plus ``zoom_region(box, width, height)`` (its own rule for the region
to look at around a box). The loaded zoom model is kept for the next run with the same spec and device (the
worker answers many requests with one load); :func:`forget` drops it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Localization:
    """A localizer's answer for one image and prompt.

    Attributes:
        box: ``(x_min, y_min, x_max, y_max)`` in pixels of the image it was given (ordered, inside the image),
            ``None`` when the answer held no usable box.
        text: the model's text answer, as decoded.
    """

    box: tuple[float, float, float, float] | None
    text: str


@runtime_checkable
class Localizer(Protocol):
    """Finds the region of an image that an instruction is about (see the module docstring)."""

    overview_side: int
    read_side: int

    def localize(self, image: np.ndarray, prompt: str) -> Localization: ...

    def zoom_region(self, box: tuple[float, float, float, float], width: int,
                    height: int) -> tuple[float, float, float, float]: ...


def is_localizer(model: Any) -> bool:
    return callable(getattr(model, "localize", None)) and callable(getattr(model, "zoom_region", None))


_held: tuple[tuple[str, str], Any] | None = None
_lock = threading.Lock()


def load_zoom_model(spec: str, device: str = "auto", style: str | None = None) -> Any:
    """The localizer or segmenter ``spec`` names (see the module docstring), loaded once per spec and device."""
    global _held
    key = (spec, device)
    with _lock:
        if _held is not None and _held[0] == key:
            return _held[1]
        model = _load(spec, device, style)
        _held = (key, model)
        return model


def forget() -> None:
    """Drop the zoom model kept from the last run."""
    global _held
    with _lock:
        _held = None


def _load(spec: str, device: str, style: str | None) -> Any:
    from segearth_geo.model.loading import is_factory_spec, load_model
    from segearth_geo.params import LoadOptions
    from segearth_geo.serve import is_remote_spec

    options = LoadOptions(model=spec, device=device).check(style)
    if is_factory_spec(spec) or is_remote_spec(spec) or spec.strip().lower() == "demo":
        return load_model(options, style)
    from segearth_geo.model.registry import resolve_spec

    resolved = resolve_spec(spec, role=None)
    if resolved.backend.role == "localizer":
        return resolved.load(options, style, role="localizer")
    return load_model(options, style)


__all__ = ["Localization", "Localizer", "forget", "is_localizer", "load_zoom_model"]
