"""The model family: SegEarth-R2 (``segearth_r2/``: Phi-2 + SigLIP, one query per ``[SEG]``), SegEarth-R1
(``segearth_r1/``: Phi-1.5 + Swin-B, one query per prompt) and SAM3 (``sam3/``: transformers' ``Sam3Model``).

Package map:

* ``parts/`` – the network parts the backends share, one file per part (``swin``, ``msdeform_attn``,
  ``pixel_decoder``, ``mask_decoder``, ``position_encoding``, ``phi``, ``crop_back``);
* ``base`` – :class:`~segearth_geo.model.base.SegmenterBase`: device/dtype, batch size and OOM back-off, image
  cache, autocast, chip-shape check, declared capabilities, ``from_pretrained``;
* ``configuration_base`` – presets, dict / ``config.json`` round-trip and validation of the backends' configs;
  ``branch_configuration`` – the configs of the shared parts (``TextConfig``, ``MaskConfig``);
* ``device`` – the one device picker (``auto``: CUDA, then MPS, then CPU) and the one device description;
* ``hub`` – the one Hugging Face repo-id rule and download; ``checkpoint_files`` – the one ``config.json``
  reader, weight files and shards; ``tokenizer`` – the Phi tokenizers; ``image_cache`` – per-chip image state;
* ``testing`` – random checkpoints of any preset in the real layouts (tests, benchmarks);
* ``registry`` – maps a ``--model`` spec to a backend; ``loading`` – :func:`load_segmenter`.

Every backend folder has the same files: ``configuration``, ``modeling`` (SAM3: transformers' class),
``prompt``, ``preprocess``, ``checkpoint`` (the real checkpoint layout), ``segmenter`` and ``loading`` (its one
``load(folder, options)`` entry).

Names are imported lazily so that ``import segearth_geo.model`` does not pull in torch.
"""

from __future__ import annotations

from segearth_geo.lazy import lazy_exports

_EXPORTS = {
    "SegEarthR2Config": "segearth_geo.model.segearth_r2.configuration",
    "SegEarthR2": "segearth_geo.model.segearth_r2.modeling",
    "load_pretrained": "segearth_geo.model.segearth_r2.checkpoint",
    "save_pretrained": "segearth_geo.model.segearth_r2.checkpoint",
    "init_from_components": "segearth_geo.model.segearth_r2.checkpoint",
    "SegEarthR2Segmenter": "segearth_geo.model.segearth_r2.segmenter",
    "SegEarthR1Config": "segearth_geo.model.segearth_r1.configuration",
    "SegEarthR1": "segearth_geo.model.segearth_r1.modeling",
    "SegEarthR1Segmenter": "segearth_geo.model.segearth_r1.segmenter",
    "Sam3Segmenter": "segearth_geo.model.sam3.segmenter",
    "SegmenterBase": "segearth_geo.model.base",
    "load_segmenter": "segearth_geo.model.loading",
    "load_model": "segearth_geo.model.loading",
    "list_models": "segearth_geo.model.registry",
    "resolve_spec": "segearth_geo.model.registry",
    "resolve_device": "segearth_geo.model.device",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
