"""The model the worker and plugin tests use — configured in this ONE place.

``TEST_MODEL`` is the model of the end-to-end test on ``sample_tiles/``: the environment
variable ``SEGEARTH_TEST_MODEL`` if set, else ``demo`` once the bundled demo model exists
(``segearth_geo/weights/demo/config.json``), else the colour segmenter below.
``COLOUR_MODEL`` is the deterministic colour segmenter that the plumbing tests (exact
geometry on the synthetic scene, CRS handling, cancel, kill) always use. ``SLOW_MODEL``
wraps it with a pause of ``SEGEARTH_TEST_DELAY`` seconds (default 0.6) per segmenter call,
so cancel / kill tests can act mid-run.

The factories run inside the engine's Python (the worker loads them with
``--model /abs/path/engine_models.py:colour``); this module is also imported by the QGIS
tests for the constants only, so it imports nothing outside the standard library at top level.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

HERE = Path(__file__).resolve()
REPO = HERE.parents[2]
COLOUR_MODEL = f"{HERE}:colour"
SLOW_MODEL = f"{HERE}:slow"
OFFLINE_MODEL = f"{HERE}:offline"  # fails to load with sam3's long offline error (message tests)
_DEMO_READY = (REPO / "segearth_geo" / "weights" / "demo" / "config.json").is_file()
TEST_MODEL = os.environ.get("SEGEARTH_TEST_MODEL") or ("demo" if _DEMO_READY else COLOUR_MODEL)
# Labels and prompt the colour segmenter answers (used by tests on the synthetic scene).
PROMPT = "segment the red roofs and the pools"
LABELS = ("pool", "red roof")


class ColourSegmenter:
    """Finds saturated red (label "red roof") and saturated blue (label "pool") pixels.

    Deterministic and instant; answers like SegEarth-R2 would (one ``[SEG]`` per target).
    """

    chip_size = 256

    def segment(self, chips, prompt):
        import numpy as np

        from segearth_geo import ChipPrediction, Target

        out = []
        for chip in chips:  # chip: (h, w, 3) uint8
            rgb = chip.astype(np.int16)
            red = (rgb[..., 0] > 180) & (rgb[..., 1] < 90) & (rgb[..., 2] < 90)
            blue = (rgb[..., 2] > 180) & (rgb[..., 0] < 90) & (rgb[..., 1] < 90)
            targets = [Target("red roof", red.astype(np.float32) * 0.9), Target("pool", blue.astype(np.float32) * 0.8)]
            out.append(ChipPrediction("Sure, <p>red roof</p> [SEG] and <p>pool</p> [SEG].", targets))
        return out


class SlowSegmenter:
    """Wraps the colour segmenter and sleeps before every call (``SEGEARTH_TEST_DELAY`` seconds)."""

    def __init__(self, inner, delay: float) -> None:
        self.inner, self.delay = inner, delay
        self.chip_size = inner.chip_size

    def segment(self, chips, prompt):
        time.sleep(self.delay)
        return self.inner.segment(chips, prompt)


def colour() -> ColourSegmenter:
    return ColourSegmenter()


def slow() -> SlowSegmenter:
    return SlowSegmenter(ColourSegmenter(), float(os.environ.get("SEGEARTH_TEST_DELAY", "0.6")))


def noisy() -> ColourSegmenter:
    """Loads like ``colour`` but writes to stdout in every way a library might (tests stdout hygiene)."""
    import logging
    import sys

    print("noise from print")
    sys.stdout.write("noise from sys.stdout\n")
    sys.stdout.flush()
    os.write(1, b"noise from fd 1\n")
    logging.getLogger("segearth_geo.test").warning("noise from logging")
    return ColourSegmenter()


# The engine's own words when sam3 cannot be fetched on an offline machine (about 600 characters).
OFFLINE_MESSAGE = (
    "cannot fetch 'facebook/sam3' (config.json, weights, tokenizer files) from the Hugging Face Hub and there is no "
    "local folder of that name (not in the local cache (LocalEntryNotFoundError); download failed: "
    "LocalEntryNotFoundError: Got: ConnectError: [Errno -2] Name or service not known); cache: "
    "/root/.cache/huggingface/hub. To download (a gated model: accept its licence on huggingface.co first): go online, "
    "set HF_TOKEN or run `hf auth login` (`huggingface-cli login`), then `hf download facebook/sam3`; or pass a local "
    "checkpoint folder")


def offline():
    """Fails to load as sam3 does on an offline machine (a long, multi-clause error)."""
    from segearth_geo.errors import ModelError

    raise ModelError(OFFLINE_MESSAGE)
