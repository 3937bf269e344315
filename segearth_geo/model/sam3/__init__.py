"""SAM3 (``facebook/sam3``) through transformers' ``Sam3Model``: one target per detected instance of each concept.

Names are imported lazily so that ``import segearth_geo.model.sam3`` does not pull in torch.
"""

from __future__ import annotations

from segearth_geo.lazy import lazy_exports

_EXPORTS = {
    "Sam3Preprocessing": "segearth_geo.model.sam3.configuration",
    "DEFAULT_SCORE_THRESHOLD": "segearth_geo.model.sam3.configuration",
    "SAM3_MODEL_TYPES": "segearth_geo.model.sam3.configuration",
    "split_concepts": "segearth_geo.model.sam3.concepts",
    "Sam3Segmenter": "segearth_geo.model.sam3.segmenter",
    "load_sam3_segmenter": "segearth_geo.model.sam3.segmenter",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
