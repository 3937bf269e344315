"""SegEarth-R1: Swin-B + Phi-1.5, one Mask2Former query per prompt from the instruction, no text generation.

Files, the same in every backend folder: ``configuration`` (typed config + presets), ``modeling`` (the network,
wired from :mod:`segearth_geo.model.parts`), ``prompt`` (templates and ids), ``preprocess`` (letterbox and its
inverse), ``checkpoint`` (the released format), ``segmenter``, ``loading`` (the registry's ``load`` entry).
Names are imported lazily so that importing this package does not pull in torch.
"""

from __future__ import annotations

from segearth_geo.lazy import lazy_exports

_EXPORTS = {
    "SegEarthR1Config": "segearth_geo.model.segearth_r1.configuration",
    "SegEarthR1": "segearth_geo.model.segearth_r1.modeling",
    "load_pretrained": "segearth_geo.model.segearth_r1.checkpoint",
    "save_pretrained": "segearth_geo.model.segearth_r1.checkpoint",
    "SegEarthR1Segmenter": "segearth_geo.model.segearth_r1.segmenter",
    "load": "segearth_geo.model.segearth_r1.loading",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
