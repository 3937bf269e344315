"""The models: SegEarth-R2 (``segearth_r2/``: Phi-2 + SigLIP, one query per ``[SEG]``), SegEarth-R1
(``segearth_r1/``), SAM3 (``sam3/``), and the registry that maps a ``--model`` spec to one of them (``registry``).

Each model is a folder that wires the parts kept here, shared by several backends: ``swin``, ``pixel_decoder``,
``msdeform_attn``, ``mask_decoder``, ``position_encoding``, ``phi``, ``tokenizer``, ``branch_configuration``,
``checkpoint_files``, ``crop_back``, ``device``, ``image_cache``, ``batching``; ``loading`` and ``registry``
choose the backend.

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
    "load_segmenter": "segearth_geo.model.loading",
    "SegEarthR1Config": "segearth_geo.model.segearth_r1.configuration",
    "SegEarthR1": "segearth_geo.model.segearth_r1.modeling",
    "SegEarthR1Segmenter": "segearth_geo.model.segearth_r1.segmenter",
    "list_models": "segearth_geo.model.registry",
    "resolve_spec": "segearth_geo.model.registry",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
