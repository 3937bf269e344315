"""Resolve what the user passes as ``--model`` into a ready :class:`~segearth_geo.Segmenter`.

Accepted forms (the backend is chosen by :mod:`segearth_geo.model.registry`):

* ``"demo"`` – the small synthetic-only demo model bundled in ``segearth_geo/weights/demo``;
* an alias – ``segearth-r1-earthreason``, ``segearth-r1-rrsisd``, ``sam3`` (see ``segearth-geo models``);
* a checkpoint folder – the backend from its ``config.json`` (``mipha_phi`` SegEarth-R2, ``llava_phi``
  SegEarth-R1, ``sam3``/``sam3_video`` SAM3);
* a Hugging Face repo id (``owner/name``) – from the local cache or downloaded with ``huggingface_hub``;
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
    except Exception as exc:  # noqa: BLE001 - user code: any error at import is one line, cause chained
        raise ModelError(f"cannot load segmenter factory {spec!r}: {type(exc).__name__}: {exc}") from exc
    if not callable(factory):
        raise ModelError(f"{spec!r} is not callable; point at a function or class that returns a segmenter")
    try:
        segmenter = factory()
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - user code
        raise ModelError(f"segmenter factory {spec!r} failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(segmenter, Segmenter):
        raise ModelError(f"{spec!r} did not return a segmenter (needs `chip_size` and `segment(chips, prompt)`)")
    return segmenter


def _is_factory_spec(model: str) -> bool:
    target, sep, attr = model.rpartition(":")
    # "C:\\models\\x" is a Windows path, not a factory spec.
    return bool(sep) and bool(target) and attr.isidentifier() and not (len(target) == 1 and target.isalpha())


def load_segmenter(model: str | Path = "demo", device: str = "auto", dtype=None, batch_size: int | None = None,
                   **options) -> Segmenter:
    """Return a ready segmenter for ``model`` (see the module docstring for the accepted forms).

    Args:
        model: ``"demo"``, an alias, a checkpoint folder, a Hugging Face repo id, or ``"module:factory"``.
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        dtype: compute dtype (default: bf16 on CUDA, fp32 on CPU).
        batch_size: chips per forward pass (default: the backend's; halved on CUDA out-of-memory).
        options: backend-specific keywords, e.g. ``template="reasoning"`` (SegEarth-R1) or
            ``score_threshold=0.4`` (SAM3).

    The device actually used is logged at INFO and available as ``segmenter.device_description``.
    Raises:
        ModelError / CheckpointError: the model cannot be found or loaded; UsageError: CUDA asked but absent.
    """
    from segearth_geo.model.registry import resolve_spec

    model = str(model)
    if _is_factory_spec(model):
        return _load_factory(model)
    resolved = resolve_spec(model)
    segmenter = resolved.load(device=device, dtype=dtype, batch_size=batch_size, **options)
    log.info("%s model %s runs on %s, batch size %s", resolved.backend.title, model,
             getattr(segmenter, "device_description", device), getattr(segmenter, "batch_size", "?"))
    return segmenter
