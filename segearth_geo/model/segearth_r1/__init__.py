"""SegEarth-R1: Swin-B + Phi-1.5, one Mask2Former query per prompt from the instruction, no text generation.

Files, in the manner of transformers' ``models/<name>/``: ``configuration`` (typed config + presets),
``modeling`` (the network, wired from the parts shared with R2), ``prompt`` (templates and ids),
``image_processing`` (letterbox and its inverse), ``checkpoint`` (the released format), ``segmenter``.
Names are imported lazily so that importing this package does not pull in torch.
"""

from __future__ import annotations

from segearth_geo.lazy import lazy_exports

_EXPORTS = {
    "SegEarthR1Config": "segearth_geo.model.segearth_r1.configuration",
    "SegEarthR1": "segearth_geo.model.segearth_r1.modeling",
    "load_r1_pretrained": "segearth_geo.model.segearth_r1.checkpoint",
    "save_r1_pretrained": "segearth_geo.model.segearth_r1.checkpoint",
    "SegEarthR1Segmenter": "segearth_geo.model.segearth_r1.segmenter",
    "load_r1_segmenter": "segearth_geo.model.segearth_r1.segmenter",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
