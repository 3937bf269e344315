"""Tiny random SAM3 checkpoints written in the real on-disk layouts, for the SAM3 adapter tests (by
:mod:`segearth_geo.model.testing`, which benchmarks use too).

Two layouts, both loaded by ``Sam3Model.from_pretrained``:

* ``"hub"`` — what ``facebook/sam3`` ships: ``config.json`` with ``model_type`` ``"sam3_video"``
  (``architectures: ["Sam3VideoModel"]``) holding the image detector under ``detector_config``, weights
  prefixed ``detector_model.`` next to tracker weights (``tracker_model.*``, ignored by the detector);
* ``"model"`` — ``Sam3Model.save_pretrained`` (``model_type`` ``"sam3"``).

Both get the CLIP BPE tokenizer saved with ``save_pretrained`` (a byte-level vocabulary, so any text
tokenizes) and a ``processor_config.json`` in ``Sam3Processor``'s format (an ``image_processor`` section with
the input size and normalisation). No weights are downloaded.

    from tests.sam3_fixtures import write_tiny_sam3
    folder = write_tiny_sam3(tmp_path / "sam3")
"""

from __future__ import annotations

from segearth_geo.model.testing import SAM3_TINY_IMAGE_SIZE as TINY_IMAGE_SIZE
from segearth_geo.model.testing import SAM3_TINY_NUM_QUERIES as TINY_NUM_QUERIES
from segearth_geo.model.testing import clip_tokenizer as tiny_clip_tokenizer
from segearth_geo.model.testing import write_random_sam3 as write_tiny_sam3

__all__ = ["TINY_IMAGE_SIZE", "TINY_NUM_QUERIES", "tiny_clip_tokenizer", "write_tiny_sam3"]
