"""SegEarth-R1's entry in the model registry: a checkpoint folder and the load options → a ready segmenter."""

from __future__ import annotations

import logging
from pathlib import Path

from segearth_geo.model.device import resolve_device
from segearth_geo.model.segearth_r1.checkpoint import load_pretrained
from segearth_geo.model.segearth_r1.segmenter import SegEarthR1Segmenter
from segearth_geo.params import LoadOptions

log = logging.getLogger(__name__)


def load(folder: Path, options: LoadOptions) -> SegEarthR1Segmenter:
    """The released checkpoint in ``folder`` as a segmenter; ``options.template`` overrides the checkpoint's
    (``referring`` / ``reasoning``), ``options.cache_mb`` bounds the image cache."""
    device, dtype = resolve_device(options.device, options.dtype_name)
    loaded = load_pretrained(folder, device=device, dtype=dtype, template=options.template)
    segmenter = SegEarthR1Segmenter(loaded.model, loaded.tokenizer, device=device, dtype=dtype,
                                    batch_size=options.batch_size, cache_mb=options.cache_mb)
    log.info("SegEarth-R1 from %s on %s, %s template", loaded.path, segmenter.device_description, segmenter.template)
    return segmenter
