"""SAM3 (``facebook/sam3``) through transformers' ``Sam3Model``: per concept (synonyms ``"building|roof"`` combined),
its detected instances, the semantic head's map, or both; gated by the presence head (after SegEarth-OV3).

Files, the same names as the other backend folders where they apply (the network is transformers' class, so
there is no ``modeling``): ``configuration`` (what a folder holds besides the weights), ``prompt`` (concepts),
``preprocess`` (padding and mask crop-back), ``checkpoint`` (the folder's model and tokenizer, checked),
``segmenter``, ``loading`` (the registry's ``load`` entry).
Names are imported lazily so that ``import segearth_geo.model.sam3`` does not pull in torch.
"""

from __future__ import annotations

from segearth_geo.lazy import lazy_exports

_EXPORTS = {
    "Sam3Preprocessing": "segearth_geo.model.sam3.configuration",
    "DEFAULT_SCORE_THRESHOLD": "segearth_geo.model.sam3.configuration",
    "SAM3_MODEL_TYPES": "segearth_geo.model.sam3.configuration",
    "split_concepts": "segearth_geo.model.sam3.prompt",
    "concept_queries": "segearth_geo.model.sam3.prompt",
    "DEFAULT_PRESENCE_THRESHOLD": "segearth_geo.model.sam3.configuration",
    "load_pretrained": "segearth_geo.model.sam3.checkpoint",
    "Sam3Segmenter": "segearth_geo.model.sam3.segmenter",
    "load": "segearth_geo.model.sam3.loading",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
