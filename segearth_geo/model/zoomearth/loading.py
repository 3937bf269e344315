"""ZoomEarth's entry in the model registry: a checkpoint folder and the load options → a ready localizer.

It is a *localizer* backend (``Backend.role``): ``--zoom-model zoomearth`` with ``--strategy zoom``, never
``--model`` (the registry refuses that in one line before anything is downloaded).
"""

from __future__ import annotations

import logging
from pathlib import Path

from segearth_geo.model.device import resolve_device
from segearth_geo.model.zoomearth.checkpoint import load_pretrained
from segearth_geo.model.zoomearth.segmenter import ZoomEarthLocalizer
from segearth_geo.params import LoadOptions

log = logging.getLogger(__name__)


def load(folder: Path, options: LoadOptions) -> ZoomEarthLocalizer:
    """The ``HappyBug/ZoomEarth-3B``-layout folder as a localizer on ``options.device`` (bf16 on CUDA, fp32 else)."""
    device, dtype = resolve_device(options.device, options.dtype_name)
    parts = load_pretrained(folder, device, dtype)
    localizer = ZoomEarthLocalizer(parts, device, dtype)
    log.info("ZoomEarth from %s on %s", parts.path, localizer.device_description)
    return localizer
