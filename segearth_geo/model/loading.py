"""Resolve what the user passes as ``--model`` into a ready :class:`~segearth_geo.Segmenter`.

Accepted forms:

* ``"demo"`` – the small demo model bundled in ``segearth_geo/weights/demo``;
* a directory holding a checkpoint in the official merged layout (``config.json`` + safetensors);
* a Hugging Face repo id (``owner/name``), resolved through ``huggingface_hub`` when online;
* ``"<module or file.py>:<callable>"`` – any Python factory returning a segmenter (called with
  no arguments); this is how custom or test segmenters plug into the CLI and the worker.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from pathlib import Path

from segearth_geo.errors import ModelError
from segearth_geo.prediction import Segmenter

log = logging.getLogger(__name__)

DEMO_MODEL_DIR = Path(__file__).resolve().parent.parent / "weights" / "demo"


def _load_factory(spec: str) -> Segmenter:
    target, _, attr = spec.rpartition(":")
    try:
        if target.endswith(".py"):
            path = Path(target).expanduser().resolve()
            if not path.is_file():
                raise ModelError(f"segmenter file not found: {path}")
            name = f"_segearth_user_segmenter_{abs(hash(str(path)))}"
            module_spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[name] = module
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
        factory = getattr(module, attr)
    except ModelError:
        raise
    except (ImportError, AttributeError, OSError, SyntaxError) as exc:
        raise ModelError(f"cannot load segmenter factory {spec!r}: {exc}") from exc
    segmenter = factory()
    if not isinstance(segmenter, Segmenter):
        raise ModelError(f"{spec!r} did not return a segmenter (needs `chip_size` and `segment(chips, prompt)`)")
    return segmenter


def _is_factory_spec(model: str) -> bool:
    target, sep, attr = model.rpartition(":")
    # "C:\\models\\x" is a Windows path, not a factory spec.
    return bool(sep) and bool(target) and attr.isidentifier() and not (len(target) == 1 and target.isalpha())


def load_segmenter(model: str | Path = "demo", device: str = "auto", dtype=None, batch_size: int | None = None) -> Segmenter:
    """Return a ready segmenter for ``model`` (see the module docstring for the accepted forms).

    Args:
        model: ``"demo"``, a checkpoint directory, a Hugging Face repo id, or ``"module:factory"``.
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        dtype: compute dtype for the LLM branches (default: bf16 on CUDA, fp32 on CPU).
        batch_size: chips per forward pass (default: 16 on CUDA, 2 on CPU; halved on CUDA out-of-memory).

    The device actually used is logged at INFO and available as ``segmenter.device_description``.
    Raises:
        ModelError / CheckpointError: the model cannot be found or loaded; UsageError: CUDA asked but absent.
    """
    model = str(model)
    if _is_factory_spec(model):
        return _load_factory(model)
    from segearth_geo.model.segmenter import SegEarthR2Segmenter

    path = DEMO_MODEL_DIR if model == "demo" else model
    if model == "demo" and not (DEMO_MODEL_DIR / "config.json").is_file():
        raise ModelError(f"the bundled demo model is missing from {DEMO_MODEL_DIR}; reinstall segearth-geo")
    segmenter = SegEarthR2Segmenter.from_pretrained(path, device=device, dtype=dtype, batch_size=batch_size)
    log.info("SegEarth-R2 model %s runs on %s, batch size %d", model, segmenter.device_description,
             segmenter.batch_size)
    return segmenter
