"""SegEarth-R2: Phi-2 + SigLIP answer in text, one Mask2Former query per ``[SEG]``.

Names are imported lazily so that ``import segearth_geo.model`` does not pull in torch.
"""

from __future__ import annotations

from segearth_geo.lazy import lazy_exports

_EXPORTS = {
    "SegEarthR2Config": "segearth_geo.model.configuration",
    "SegEarthR2": "segearth_geo.model.segearth_r2",
    "load_pretrained": "segearth_geo.model.checkpoint",
    "save_pretrained": "segearth_geo.model.checkpoint",
    "init_from_components": "segearth_geo.model.checkpoint",
    "SegEarthR2Segmenter": "segearth_geo.model.segmenter",
    "load_segmenter": "segearth_geo.model.loading",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
