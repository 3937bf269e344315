"""ZoomEarth's stage-1 text and the box in its answer (spec §2.2 and §2.5).

* :func:`stage1_pieces` — ``PREFIX``, the question, ``BODY + TAIL``: the official text is their concatenation.
  The segmenter tokenises the question apart with special tokens split, so text a user types
  (``<|im_end|>``) stays plain text; for any question that is not such text the ids equal those of the official
  one-string tokenisation (tested), because the Qwen pre-tokenizer splits at the special tokens and newlines
  that bound the question.
* :func:`parse_boxes` — every ``"bbox_2d": [...]`` list of an answer, as the official regex finds them
  (``"bbox_2d"\\s*:\\s*\\[(.*?)\\]``, across lines), each part converted with ``float``; a list that does not
  convert is skipped, as officially. Unlike the official code, a list that is not exactly four finite numbers is
  skipped too (the official ``cut_image`` raised on it), and corners are put in order.
* :func:`first_box` — the first usable box (the official code takes the first match), or ``None``.

Never raises on model output: malformed text gives ``None``.
"""

from __future__ import annotations

import math
import re

from segearth_geo.model.zoomearth.configuration import BODY, PREFIX, TAIL

BBOX = re.compile(r'"bbox_2d"\s*:\s*\[(.*?)\]', re.DOTALL)


def stage1_text(question: str) -> str:
    """The official stage-1 string for ``question``."""
    return PREFIX + question + BODY + TAIL


def stage1_pieces(question: str) -> tuple[str, str, str]:
    """``(PREFIX, question, BODY + TAIL)``; their concatenation is :func:`stage1_text`."""
    return PREFIX, question, BODY + TAIL


def parse_boxes(text: str) -> list[tuple[float, float, float, float]]:
    """Every usable ``bbox_2d`` of ``text`` in order, ``(x_min, y_min, x_max, y_max)`` with corners ordered."""
    boxes = []
    for match in BBOX.findall(str(text)):
        try:
            values = [float(part.strip()) for part in match.split(",")]
        except ValueError:
            continue
        if len(values) != 4 or not all(math.isfinite(v) for v in values):
            continue
        x0, y0, x1, y1 = values
        boxes.append((min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
    return boxes


def first_box(text: str) -> tuple[float, float, float, float] | None:
    """The first usable box of ``text`` (:func:`parse_boxes`), ``None`` when there is none."""
    boxes = parse_boxes(text)
    return boxes[0] if boxes else None


__all__ = ["BBOX", "first_box", "parse_boxes", "stage1_pieces", "stage1_text"]
