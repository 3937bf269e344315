"""One progress type for every run: :class:`Progress` events, and :class:`Reporter`, which turns them into a
progress bar on stderr or hands them to the caller's callable.

A one-scene run (:func:`~segearth_geo.segment_raster`) emits ``chips`` events; a batch job also emits
``unit`` and ``scene`` events. The worker turns each event into a ``progress`` reply, the CLI into a bar.
A callable taking two positional arguments is called as ``progress(chips_done, chips_total)`` (the form
:func:`~segearth_geo.segment_raster` documents); any other callable receives the :class:`Progress` event.
Any callable may raise (e.g. :class:`~segearth_geo.errors.Cancelled`) to stop the run.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Union


@dataclass(frozen=True)
class Progress:
    """A progress event.

    ``kind`` is ``"chips"`` (chips processed), ``"unit"`` (a batch unit finished or failed) or
    ``"scene"`` (a batch scene's outputs written, or its failure); ``message`` is a one-line description
    for ``unit``/``scene`` events; ``source`` the scene it is about.
    """

    kind: str
    units_done: int
    units_total: int
    chips_done: int
    chips_total: int
    message: str = ""
    source: str = ""


ProgressCallback = Union[Callable[[Progress], None], Callable[[int, int], None]]


def _wants_counts(callback: Callable[..., Any]) -> bool:
    """Whether ``callback`` takes ``(done, total)`` rather than one :class:`Progress`."""
    try:
        parameters = list(inspect.signature(callback).parameters.values())
    except (TypeError, ValueError):  # builtins without a signature
        return False
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return sum(p.default is p.empty for p in positional) >= 2


class Reporter:
    """Counts chips, units and scenes and reports them: a tqdm bar (``progress=True``), a callable, or nothing.

    Args:
        progress: ``True`` (bar on stderr), ``False``/``None`` (silent) or a callable (see the module docstring).
        chips_total, units_total: the totals; ``chips_done``/``units_done``: already done (a resumed job).
        desc: the bar's label.
        announce: emit a first ``chips`` event at 0 (a one-scene run does, so the caller sees the total at once).
    """

    def __init__(self, progress: bool | ProgressCallback | None, chips_total: int, *, units_total: int = 0,
                 chips_done: int = 0, units_done: int = 0, desc: str = "chips", announce: bool = False) -> None:
        self.callback = progress if callable(progress) else None
        self._counts = self.callback is not None and _wants_counts(self.callback)
        self.chips_total, self.chips_done = int(chips_total), int(chips_done)
        self.units_total, self.units_done = int(units_total), int(units_done)
        self.bar = None
        if progress is True:
            from tqdm import tqdm

            self.bar = tqdm(total=self.chips_total, initial=self.chips_done, unit="chip", desc=desc,
                            dynamic_ncols=True)
            self._postfix()
        if announce:
            self._emit("chips")

    def _postfix(self) -> None:
        if self.bar is not None and self.units_total:
            self.bar.set_postfix_str(f"units {self.units_done}/{self.units_total}", refresh=False)

    def _emit(self, kind: str, message: str = "", source: str = "") -> None:
        if self.callback is None:
            return
        if self._counts:
            if kind == "chips":
                self.callback(self.chips_done, self.chips_total)  # type: ignore[call-arg]
            return
        self.callback(Progress(kind, self.units_done, self.units_total, self.chips_done, self.chips_total,  # type: ignore[call-arg]
                               message, source))

    def __call__(self, n: int) -> None:
        self.chips(n)

    def chips(self, n: int) -> None:
        """``n`` more chips processed (or skipped)."""
        self.chips_done += int(n)
        if self.bar is not None:
            self.bar.update(n)
        self._emit("chips")

    def unit(self, message: str, source: str, done: bool) -> None:
        """A unit finished (``done``) or failed."""
        self.units_done += int(done)
        self._postfix()
        self._emit("unit", message, source)

    def scene(self, message: str, source: str) -> None:
        """A scene's outputs were written, or failed (``message`` is shown above the bar)."""
        if self.bar is not None:
            self.bar.write(message, file=sys.stderr)  # above the bar, on the bar's stream
        self._emit("scene", message, source)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


__all__ = ["Progress", "ProgressCallback", "Reporter"]
