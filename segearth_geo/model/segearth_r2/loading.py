"""SegEarth-R2's entry in the model registry: a checkpoint folder and the load options → a ready segmenter."""

from __future__ import annotations

import logging
from pathlib import Path

from segearth_geo.model.device import resolve_device
from segearth_geo.model.segearth_r2.checkpoint import load_pretrained
from segearth_geo.model.segearth_r2.prompt import get_template
from segearth_geo.model.segearth_r2.segmenter import SegEarthR2Segmenter
from segearth_geo.params import LoadOptions

log = logging.getLogger(__name__)


def load(folder: Path, options: LoadOptions) -> SegEarthR2Segmenter:
    """The merged checkpoint in ``folder`` (or a repo id) as a segmenter; ``options.template`` overrides the
    checkpoint's prompt template, ``options.cache_mb`` bounds the image cache."""
    if options.template is not None:
        get_template(options.template)  # fail before loading the weights
    device, dtype = resolve_device(options.device, options.dtype_name)
    loaded = load_pretrained(folder, device=device, dtype=dtype)
    segmenter = SegEarthR2Segmenter(loaded.model, loaded.tokenizer, device=device, dtype=dtype,
                                    batch_size=options.batch_size, cache_mb=options.cache_mb,
                                    template=options.template)
    log.info("SegEarth-R2 from %s on %s, %s template", loaded.path, segmenter.device_description, segmenter.template)
    return segmenter
