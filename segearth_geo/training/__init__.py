"""Training SegEarth-R2: losses (spec §8), [SEG]-row attention capture, batches, the loop, LoRA merge.

Entry points (imported lazily so that ``import segearth_geo.training`` stays cheap)::

    from segearth_geo.training import TrainConfig, train, merge_checkpoint
    result = train(TrainConfig.load("cfg.yaml", ["max_steps=100"]))
"""

from __future__ import annotations

from segearth_geo.lazy import lazy_exports

_EXPORTS = {
    "TrainConfig": "segearth_geo.training.config",
    "train": "segearth_geo.training.trainer",
    "TrainResult": "segearth_geo.training.trainer",
    "merge_checkpoint": "segearth_geo.training.fold_lora",
    "export_merged": "segearth_geo.training.fold_lora",
    "Collator": "segearth_geo.training.collate",
    "TrainBatch": "segearth_geo.training.collate",
    "TrainingModule": "segearth_geo.training.forward",
}

__all__ = [
    "Collator",
    "TrainBatch",
    "TrainConfig",
    "TrainResult",
    "TrainingModule",
    "export_merged",
    "merge_checkpoint",
    "train",
]

__getattr__ = lazy_exports(__name__, _EXPORTS)
