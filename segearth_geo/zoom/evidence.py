"""What a coarse level saw: per prompt, where its target may be (evidence) and what the model answered there.

:class:`EvidenceSink` takes the place of a :class:`~segearth_geo.stitch.Stitcher` in
:func:`~segearth_geo.pipeline.run_chips` at a coarse level (same ``add(chip, targets, valid)``, thread-safe, the
result independent of the order chips arrive in). From each chip's core it keeps:

* **evidence blocks**: the maximum probability of the prompt's relevant targets
  (:func:`~segearth_geo.zoom.prompts.relevant`) over each :data:`BLOCK` × :data:`BLOCK` block of level pixels,
  stored sparsely (blocks at or above :data:`FLOOR` only), so memory follows what was seen, not the level's
  size. A second set keeps the maximum over *all* targets, the fall-back for a prompt none of whose answers
  carried a relevant label anywhere (an implicit question: "where could a boat sail?" → "water");
* **detections**: the relevant targets thresholded at the run's ``threshold`` and stitched as usual
  (a Stitcher over the level's grid): the overview's answer, used to pick a referring prompt's one object and
  to report targets seen but not confirmed at full resolution.

Evidence is the model's *probability*, never its thresholded mask: a target the model half sees at a coarse
level (p = 0.2) still counts when that is above the calibrated :data:`~segearth_geo.zoom.areas.EVIDENCE_THRESHOLD`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

import numpy as np

from segearth_geo.chips import Chip
from segearth_geo.prediction import Target
from segearth_geo.stitch import Stitcher
from segearth_geo.vectorize import normalise_label
from segearth_geo.zoom.prompts import PromptKind, relevant

BLOCK = 4  # level pixels per evidence block side
FLOOR = 0.01  # block maxima below this are not stored (far below any evidence threshold)

BlockMap = dict[tuple[int, int], float]  # (block row, block col) -> max probability


class EvidenceSink:
    """Collects one prompt's evidence and detections over one coarse level (see the module docstring).

    Args:
        width, height: the level's grid in pixels.
        prompt: the cleaned prompt; ``kind``: its :class:`~segearth_geo.zoom.prompts.PromptKind`.
        threshold: the run's threshold (detections; also handed to segmenters that take one).
    """

    def __init__(self, width: int, height: int, prompt: str, kind: PromptKind, threshold: float) -> None:
        self.prompt, self.kind = prompt, kind
        self.threshold = float(threshold)
        self.detections = Stitcher(width, height, threshold, default_label=prompt)
        self.relevant_blocks: BlockMap = {}
        self.any_blocks: BlockMap = {}
        self.relevant_seen = False  # some target of some chip had a relevant label
        self._lock = threading.Lock()

    def add(self, chip: Chip, targets: Iterable[Target], valid: np.ndarray) -> list[str]:
        """One chip's targets (``probability`` ``(h, w)``, ``valid`` bool ``(h, w)``); returns its labels."""
        core = chip.core_in_chip
        rows = slice(int(core.row_off), int(core.row_off + core.height))
        cols = slice(int(core.col_off), int(core.col_off + core.width))
        valid_core = valid[rows, cols]  # (core_h, core_w)
        labels: list[str] = []
        best_relevant: np.ndarray | None = None
        best_any: np.ndarray | None = None
        keep: list[Target] = []
        for target in targets:
            label = normalise_label(target.label) or normalise_label(self.prompt)
            if label not in labels:
                labels.append(label)
            prob = np.where(valid_core, target.probability[rows, cols], 0.0)  # (core_h, core_w)
            best_any = prob if best_any is None else np.maximum(best_any, prob)
            if relevant(label, self.prompt, self.kind):
                keep.append(target)
                best_relevant = prob if best_relevant is None else np.maximum(best_relevant, prob)
        origin = (int(chip.core.row_off), int(chip.core.col_off))
        with self._lock:
            self.relevant_seen = self.relevant_seen or bool(keep)
            if best_relevant is not None:
                _pool_into(self.relevant_blocks, best_relevant, origin)
            if best_any is not None:
                _pool_into(self.any_blocks, best_any, origin)
        self.detections.add(chip, keep, valid)
        return labels

    def blocks(self) -> tuple[BlockMap, bool]:
        """The evidence to zoom on and whether it is the relevant targets' (``False``: the fall-back to all)."""
        if self.relevant_seen:
            return self.relevant_blocks, True
        return self.any_blocks, False


def _pool_into(blocks: BlockMap, prob: np.ndarray, origin: tuple[int, int]) -> None:
    """Max-pool ``prob`` ``(h, w)`` (level pixels from ``origin`` = (row, col)) into :data:`BLOCK` blocks."""
    row0, col0 = origin
    h, w = prob.shape
    br0, bc0 = row0 // BLOCK, col0 // BLOCK
    br1, bc1 = -(-(row0 + h) // BLOCK), -(-(col0 + w) // BLOCK)
    canvas = np.zeros(((br1 - br0) * BLOCK, (bc1 - bc0) * BLOCK), dtype=np.float32)
    canvas[row0 - br0 * BLOCK:row0 - br0 * BLOCK + h, col0 - bc0 * BLOCK:col0 - bc0 * BLOCK + w] = prob
    pooled = canvas.reshape(br1 - br0, BLOCK, bc1 - bc0, BLOCK).max(axis=(1, 3))  # (nbr, nbc)
    for r, c in zip(*np.nonzero(pooled >= FLOOR)):
        key = (br0 + int(r), bc0 + int(c))
        value = float(pooled[r, c])
        if value > blocks.get(key, 0.0):
            blocks[key] = value


__all__ = ["BLOCK", "BlockMap", "EvidenceSink", "FLOOR"]
