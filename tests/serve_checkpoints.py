"""A factory that loads the tiny checkpoint named by ``SEGEARTH_TEST_CHECKPOINT`` (written by the tests with
:mod:`segearth_geo.model.testing`), for ``segearth-geo serve`` and in-process runs alike:
``--model /abs/tests/serve_checkpoints.py:checkpoint``. SegEarth-R2's generation is cut at 12 tokens (as in
tests/test_backend_contract.py) so that random weights stay fast."""

from __future__ import annotations

import os


def checkpoint(batch_size: int | None = None, score_threshold: float | None = None):
    from segearth_geo import load_segmenter

    options = {} if score_threshold is None else {"score_threshold": score_threshold}
    segmenter = load_segmenter(os.environ["SEGEARTH_TEST_CHECKPOINT"], device="cpu", batch_size=batch_size, **options)
    if hasattr(segmenter, "max_new_tokens"):
        segmenter.max_new_tokens = 12
    return segmenter
