"""What the plugin knows about the engine's named models before the engine runs: aliases, what each is for, the
ground resolution it was trained on, and what must be said wherever it runs.

Copied from ``segearth_geo/model/registry.py``'s ``KNOWN_MODELS`` (the plugin never imports the library; the
segmenter aliases only: a localizer such as ``zoomearth`` is not a model setting); ``tests/test_plugin_tables.py``
checks the copy. Once the engine runs, its ``ready`` reply (``gsd_range``, ``notice``) is what counts.
Pure Python (no Qt).
"""

from __future__ import annotations

# In the registry's order.
MODEL_ALIASES = ("demo", "segearth-r1-earthreason", "segearth-r1-rrsisd", "sam3")
# Ground resolution (m/px, low and high) of the imagery each model was trained on.
MODEL_GSD = {"demo": (0.3, 2.0), "segearth-r1-earthreason": (0.3, 10.0), "segearth-r1-rrsisd": (0.5, 30.0),
             "sam3": (0.1, 2.0)}
# Said wherever the model runs.
MODEL_NOTICES = {"demo": "synthetic demo — not for real imagery"}
# What each model is for, in the analyst's words (settings dialog).
MODEL_USES = {
    "demo": "synthetic demo — not for real imagery: shows the pipeline on SynthEarth scenes only",
    "segearth-r1-earthreason": "questions, e.g. “where could a plane land?” (one target per prompt)",
    "segearth-r1-rrsisd": "one described object, e.g. “the grey storage tank next to the road”",
    "sam3": "every instance of a class, e.g. “buildings, swimming pools” (with scores)",
}
GSD_FAR = 2.0  # a GSD more than this factor outside the model's range gets a warning (the engine's rule)


def _alias(model: str | None) -> str:
    return str(model or "").strip().lower()


def model_gsd_range(model: str | None) -> tuple[float, float] | None:
    """The training GSD range of a model alias, ``None`` for other specs (folders, repo ids, servers)."""
    return MODEL_GSD.get(_alias(model))


def model_notice(model: str | None) -> str | None:
    """What must be said wherever ``model`` runs (the demo's notice), or ``None``."""
    return MODEL_NOTICES.get(_alias(model))


def format_gsd(metres: float) -> str:
    """``0.5`` → ``"0.5 m/px"``, ``0.2986`` → ``"0.3 m/px"``, ``12.34`` → ``"12.3 m/px"`` (3 significant digits at most)."""
    return f"{metres:.3g} m/px" if metres < 100 else f"{metres:.0f} m/px"


def format_range(gsd_range: tuple[float, float] | list[float]) -> str:
    """``(0.3, 1.0)`` → ``"0.3–1 m/px"``."""
    low, high = gsd_range
    return f"{low:g}–{high:g} m/px"


def gsd_warning(gsd: float | None, gsd_range: tuple[float, float] | list[float] | None) -> str | None:
    """``"far coarser"`` / ``"far finer"`` when ``gsd`` is more than :data:`GSD_FAR` times outside ``gsd_range``."""
    if gsd is None or not gsd_range:
        return None
    low, high = gsd_range
    if gsd > high * GSD_FAR:
        return "far coarser"
    if gsd < low / GSD_FAR:
        return "far finer"
    return None
