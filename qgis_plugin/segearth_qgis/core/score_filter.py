"""The score filter's arithmetic: slider position → minimum score → the result layer's subset string, and the line
saying what it filters. Pure Python (no Qt), tested without QGIS (``tests/test_plugin_results.py``).

The filter is a layer filter (QGIS' subset string), not a re-run: the GeoPackage keeps every polygon the engine wrote,
and moving the slider back shows them again.
"""

from __future__ import annotations

SCORE_FIELD = "score"
STEPS = 100  # slider positions per unit of score: 0.01 resolution


def minimum_score(position: int) -> float:
    """The minimum score of slider ``position`` (0 … :data:`STEPS`)."""
    return round(min(max(int(position), 0), STEPS) / STEPS, 2)


def subset_string(minimum: float) -> str:
    """The layer filter keeping polygons whose score, read at the slider's two decimals, is at least ``minimum``:
    ``'"score" >= 0.845'`` for 0.85; ``""`` (no filter, so polygons without a score stay shown too) at 0.

    Half a step below ``minimum``, because scores are float32 (SAM3's 0.9 is stored as 0.8999999762): a polygon
    whose score reads 0.90 must pass "Score ≥ 0.90".
    """
    return f'"{SCORE_FIELD}" >= {minimum - 0.5 / STEPS:.3f}' if minimum > 0 else ""


def shown_text(minimum: float, shown: int | None, total: int | None) -> str:
    """``"Score ≥ 0.85: 1 of 2 polygons shown"``; without a layer: ``"Score ≥ 0.85: no result layer"``."""
    head = f"Score ≥ {minimum:.2f}"
    if shown is None or total is None:
        return f"{head}: no result layer"
    return f"{head}: {shown} of {total} polygon{'s' if total != 1 else ''} shown"
