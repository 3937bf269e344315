"""The zoom strategy (``strategy="zoom"`` / ``"auto"``): an overview of the whole area, then full resolution only
where the target may be (issue 22).

Modules, in data-flow order:

* ``prompts``    — referring (instance-level) or semantic instruction, and which labels answer a prompt;
* ``levels``     — the pyramid of one processing grid, its readers, the chips an area needs (exact geometry);
* ``evidence``   — what a coarse level saw, per prompt (sparse max-pooled probability, detections);
* ``areas``      — evidence → the next level's area (calibrated threshold, margin), coverage, ``min_coverage``;
* ``candidates`` — a referring prompt's one answer among per-chip candidates, kept at full resolution;
* ``localizer``  — what looks at the overview (the segmenter, another one, or a localizer such as ZoomEarth);
* ``runner``     — :func:`run_zoom`, called by :func:`~segearth_geo.engine.segment_scene`;
* ``frames``     — the ``chips`` layer over all levels, and the referring prompts' selection.

Nothing here imports torch.
"""

from __future__ import annotations

from segearth_geo.zoom.frames import chips_frame, select
from segearth_geo.zoom.prompts import PromptKind, prompt_kind
from segearth_geo.zoom.runner import ZoomRun, run_zoom

STRATEGIES = ("grid", "zoom", "auto")

__all__ = ["PromptKind", "STRATEGIES", "ZoomRun", "chips_frame", "prompt_kind", "run_zoom", "select"]
