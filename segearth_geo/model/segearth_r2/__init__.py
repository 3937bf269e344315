"""SegEarth-R2: SigLIP + Phi-2 generate an answer, one Mask2Former query per ``[SEG]`` token it emits.

Files, the same in every backend folder: ``configuration`` (typed config + presets), ``modeling`` (the network,
wired from :mod:`segearth_geo.model.parts`; ``siglip``: its vision tower and projector), ``prompt`` (templates
and ids), ``preprocess`` (resize and bottom/right padding), ``checkpoint`` (the merged release format and the
Mipha + Mask2Former components), ``segmenter``, ``loading`` (the registry's ``load`` entry).
Names are imported lazily so that importing this package does not pull in torch.
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
    "load": "segearth_geo.model.segearth_r2.loading",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
