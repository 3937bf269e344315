"""Resolve what the user passes as ``--model`` into a ready :class:`~segearth_geo.Segmenter`.

Accepted forms (the backend is chosen by :mod:`segearth_geo.model.registry`):

* ``"demo"`` – the small synthetic-only demo model bundled in ``segearth_geo/weights/demo``;
* an alias – ``segearth-r1-earthreason``, ``segearth-r1-rrsisd``, ``sam3`` (see ``segearth-geo models``);
* a checkpoint folder – the backend from its ``config.json`` (``mipha_phi`` SegEarth-R2, ``llava_phi``
  SegEarth-R1, ``sam3``/``sam3_video`` SAM3);
* a Hugging Face repo id (``owner/name``) – from the local cache or downloaded with ``huggingface_hub``;
* ``"<module or file.py>:<callable>"`` – any Python factory returning a segmenter (called with
  no arguments); this is how custom or test segmenters plug into the CLI and the worker;
* ``http://HOST:PORT`` / ``https://HOST:PORT`` – a model server (``segearth-geo serve``, :mod:`segearth_geo.serve`).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
from pathlib import Path

from segearth_geo.errors import ModelError, UsageError
from segearth_geo.params import LoadOptions, field_name
from segearth_geo.prediction import Segmenter, SegmenterInfo, describe_segmenter

log = logging.getLogger(__name__)


def _load_factory(options: LoadOptions, style: str) -> Segmenter:
    """Import and call ``module:factory`` / ``file.py:factory``.

    The factory is called with the load options it declares as parameters (``device``, ``dtype``,
    ``batch_size`` or a backend option) that are set; a backend option it does not declare is refused in one
    line. ``device`` is passed only when the factory takes it (a CPU-only factory ignores it).
    """
    spec = options.model
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
    kwargs = _factory_kwargs(spec, factory, options, style)
    try:
        segmenter = factory(**kwargs)
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - user code
        raise ModelError(f"segmenter factory {spec!r} failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(segmenter, Segmenter):
        raise ModelError(f"{spec!r} did not return a segmenter (needs `chip_size` and `segment(chips, prompt)`)")
    return segmenter


def _factory_kwargs(spec: str, factory, options: LoadOptions, style: str) -> dict:
    """The set load options ``factory`` takes; :class:`UsageError` for a backend option it does not take."""
    import inspect

    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        parameters = {}
    given = {"device": options.device, "dtype": options.dtype_name, "batch_size": options.batch_size,
             **options.backend_options()}
    given = {k: v for k, v in given.items() if v is not None and not (k == "device" and v == "auto")}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    refused = [] if takes_any else sorted(k for k in options.backend_options() if k not in parameters)
    if refused:
        names = ", ".join(field_name(k, style) for k in refused)
        raise UsageError(f"the segmenter factory {spec!r} does not take {names}; remove it or add the "
                         "parameter to the factory")
    return {k: v for k, v in given.items() if takes_any or k in parameters}


def is_factory_spec(model: str) -> bool:
    """``model`` names a Python factory (``file.py:factory`` or ``module:factory``), not a checkpoint or alias."""
    target, sep, attr = model.rpartition(":")
    # "C:\\models\\x" is a Windows path, not a factory spec.
    return bool(sep) and bool(target) and attr.isidentifier() and not (len(target) == 1 and target.isalpha())


def load_segmenter(model: str | Path = "demo", device: str = "auto", dtype=None, batch_size: int | None = None,
                   **options) -> Segmenter:
    """Return a ready segmenter for ``model`` (see the module docstring for the accepted forms).

    Args:
        model: ``"demo"``, an alias, a checkpoint folder, a Hugging Face repo id, or ``"module:factory"``.
        device: ``"auto"`` (CUDA, then Apple MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
        dtype: compute dtype (default: bf16 on CUDA, fp32 elsewhere).
        batch_size: chips per forward pass (default: the backend's; halved on CUDA out-of-memory).
        options: backend options (:data:`~segearth_geo.params.BACKEND_OPTIONS`), e.g. ``template="reasoning"``
            (SegEarth-R1) or ``score_threshold=0.4`` (SAM3); a backend that does not take one refuses it.

    The same as :func:`load_model` with a :class:`~segearth_geo.params.LoadOptions` of these fields.
    Raises:
        ModelError / CheckpointError: the model cannot be found or loaded; UsageError: a bad option, or CUDA
        asked but absent.
    """
    unknown = sorted(set(options) - set(LoadOptions.names()))
    if unknown:
        raise UsageError(f"unknown load option(s) {', '.join(unknown)}; the load options are "
                         f"{', '.join(n for n in LoadOptions.names() if n != 'model')}")
    dtype_name = None if dtype is None else str(dtype).replace("torch.", "")
    load = LoadOptions(model=str(model), device=str(device), dtype=dtype_name, batch_size=batch_size, **options)
    return load_model(load.check())


def check_load_options(options: LoadOptions, style: str | None = None) -> LoadOptions:
    """Check ``options`` before any weight is read: the values, and the backend options against the backend the
    spec names (found without downloading: the demo, an alias, a folder's ``config.json``, a factory's
    parameters). A hub id not in the registry is checked when it loads. Returns the checked options."""
    from segearth_geo.model.registry import BACKENDS, KNOWN_MODELS, backend_for_folder

    options = options.check(style)
    if not options.backend_options():
        return options
    if is_factory_spec(options.model):
        return options  # the factory's parameters are checked when it is imported, just before it runs
    known = KNOWN_MODELS.get(options.model.strip().lower())
    if known is not None:
        BACKENDS[known.backend].check_options(options, style)
    elif os.path.isdir(os.path.expanduser(options.model)):
        backend_for_folder(Path(options.model).expanduser()).check_options(options, style)
    return options


def _require_model_libraries(model: str) -> None:
    """One line saying what to install when a local model is asked for on a base (thin client) install."""
    missing = [name for name in ("torch", "transformers") if importlib.util.find_spec(name) is None]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise ModelError(f"the model {model!r} runs on this machine and needs {' and '.join(missing)}, which {verb} "
                         'not installed: pip install "segearth-geo[models]" (or use a model server: '
                         "--model http://HOST:PORT)")


def model_facts(options: LoadOptions) -> SegmenterInfo:
    """What the engine needs to know of a model before running it (chip size, training GSD, notice): from the
    registry for a known model (no weights read), else by loading it."""
    from segearth_geo.model.registry import KNOWN_MODELS

    known = KNOWN_MODELS.get(options.model.strip().lower())
    if known is not None:
        return SegmenterInfo(known.chip_size, None, frozenset(), known.gsd, known.notice)
    return describe_segmenter(load_model(options))


def load_model(options: LoadOptions, style: str | None = None) -> Segmenter:
    """Return a ready segmenter for ``options`` (checked here; errors name fields in ``style``).

    The device actually used is logged at INFO and available as ``segmenter.device_description``.
    """
    from segearth_geo.serve import is_remote_spec

    options = options.check(style)
    if is_remote_spec(options.model):  # a model server: nothing is loaded here (no torch needed)
        from segearth_geo.serve.client import load_remote

        return load_remote(options, style)
    if is_factory_spec(options.model):
        return _load_factory(options, style)
    _require_model_libraries(options.model)
    from segearth_geo.model.registry import resolve_spec

    resolved = resolve_spec(options.model)
    segmenter = resolved.load(options, style)
    log.info("%s model %s runs on %s", resolved.backend.title, options.model,
             describe_segmenter(segmenter).device or options.device)
    return segmenter
