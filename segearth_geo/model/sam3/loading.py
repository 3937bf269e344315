"""SAM3's entry in the model registry: a checkpoint folder and the load options → a ready segmenter."""

from __future__ import annotations

import logging
from pathlib import Path

from segearth_geo.model.device import resolve_device
from segearth_geo.model.sam3.checkpoint import load_pretrained
from segearth_geo.model.sam3.configuration import (
    DEFAULT_OUTPUT,
    DEFAULT_SCORE_THRESHOLD,
    Sam3Preprocessing,
)
from segearth_geo.model.sam3.segmenter import Sam3Segmenter
from segearth_geo.params import LoadOptions

log = logging.getLogger(__name__)


def load(folder: Path, options: LoadOptions) -> Sam3Segmenter:
    """The ``facebook/sam3``-layout folder as a segmenter; ``options.score_threshold`` (default 0.5) decides
    which detections count, ``options.presence_threshold`` which chips show a concept at all,
    ``options.sam3_output`` what they return (instances, semantic, both), ``options.cache_mb`` bounds the
    vision-feature cache."""
    device, dtype = resolve_device(options.device, options.dtype_name)
    preprocessing = Sam3Preprocessing.from_folder(folder)  # a bad processor config fails before the weights load
    loaded = load_pretrained(folder, device=device, dtype=dtype)
    threshold = DEFAULT_SCORE_THRESHOLD if options.score_threshold is None else options.score_threshold
    segmenter = Sam3Segmenter(loaded.model, loaded.tokenizer, preprocessing,
                              device=device, dtype=dtype, batch_size=options.batch_size, score_threshold=threshold,
                              cache_mb=options.cache_mb, presence_threshold=options.presence_threshold,
                              output=options.sam3_output or DEFAULT_OUTPUT)
    log.info("SAM3 from %s on %s, chip size %d, batch size %d, score threshold %g, presence threshold %s, output %s",
             loaded.path, segmenter.device_description, segmenter.chip_size, segmenter.batch_size,
             segmenter.score_threshold, segmenter.presence_threshold, segmenter.output)
    return segmenter
