"""The training forward pass: one :class:`TrainBatch` → the loss parts of spec §8.4.

``TrainingModule`` wraps a :class:`~segearth_geo.model.segearth_r2.SegEarthR2` so that DDP sees one
``forward`` (it registers its gradient hooks there). It reuses the model's parts
(``encode_images``, ``build_inputs``, the Phi ``model``, ``lm_head``, ``encode_mask_features``,
``decode_masks``) and differs from the model's teacher-forced ``forward`` in three ways:

* logits are computed only at the positions whose next label is supervised (no ``[B,L,51200]``);
* the Phi runs with the row-capturing attention and a :class:`SegRowRequest`, so the spatial
  attention rows come back without attention maps;
* the mask branch runs only for the images that own at least one target.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from segearth_geo.errors import ModelError
from segearth_geo.training.attention_rows import (
    SegRowRequest,
    capture_rows,
    use_seg_rows_attention,
)
from segearth_geo.training.collate import TrainBatch
from segearth_geo.training.losses import (
    MaskLossSettings,
    attention_loss,
    mask_loss,
    shifted_text_targets,
    text_loss,
)


@dataclass
class LossWeights:
    """How the parts are combined: ``text·L_t + L_mask (5/5 inside) + λ_S·L_S``."""

    text: float = 1.0
    attention: float = 0.01
    attention_variant: str = "per_layer"


@dataclass
class LossParts:
    """Scalar losses of one micro-batch (``attention`` already multiplied by λ_S, like the official log)."""

    total: torch.Tensor
    text: torch.Tensor
    bce: torch.Tensor
    dice: torch.Tensor
    attention: torch.Tensor
    num_targets: int

    def as_floats(self) -> dict[str, float]:
        return {"loss": float(self.total.detach()), "text": float(self.text), "bce": float(self.bce),
                "dice": float(self.dice), "attn": float(self.attention)}


class TrainingModule(nn.Module):
    """``forward(batch) -> LossParts`` around a SegEarth-R2 model (attribute ``segearth``)."""

    def __init__(self, model: nn.Module, mask_settings: MaskLossSettings, weights: LossWeights) -> None:
        super().__init__()
        self.segearth = model
        self.mask_settings = mask_settings
        self.weights = weights
        use_seg_rows_attention(model.model)

    def forward(self, batch: TrainBatch, target_normalizer: float | None = None) -> LossParts:
        """Loss parts of one batch (already on the model's device).

        Args:
            target_normalizer: ``M`` of the mask loss (targets per rank averaged over ranks); default local ``N``.
        """
        model = self.segearth
        cfg = model.config
        t_img = cfg.num_image_tokens
        image_embeds = model.encode_images(batch.siglip)  # [B,T_img,D]
        inputs = model.build_inputs(batch.input_ids, image_embeds, batch.labels)
        owner = batch.target_owner  # [N]
        n = int(owner.numel())
        # Answer [SEG]s come after the image placeholder: shift by the T_img − 1 inserted positions.
        positions = inputs.image_start[owner] + (batch.target_positions - batch.image_positions[owner]) + (t_img - 1)
        if n and not bool((inputs.token_ids[owner, positions] == cfg.seg_token_id).all()):
            raise ModelError("target positions do not point at [SEG] tokens after splicing; collate/model mismatch")
        want_rows = n > 0 and self.weights.attention > 0
        request = SegRowRequest(owner, positions, inputs.image_start[owner], t_img) if want_rows else None
        llm = model.model(
            inputs_embeds=inputs.inputs_embeds,
            attention_mask=inputs.attention_mask,
            position_ids=inputs.position_ids,
            use_cache=False,
            output_attentions=want_rows,
            seg_rows=request,
        )
        hidden = llm.last_hidden_state  # [B,L,D] after final_layernorm

        rows_b, rows_p, targets = shifted_text_targets(inputs.labels)
        logits = model.lm_head(hidden[rows_b, rows_p])  # [M,lm_head_size]
        loss_text = text_loss(logits, targets)

        zero = hidden.sum() * 0.0
        bce = dice = attn = zero
        if n:
            images, local_owner = owner.unique(return_inverse=True)  # only images with targets
            features = model.encode_mask_features(batch.mask_images[images])
            preds = model.decode_masks(hidden[owner, positions], features, local_owner)
            sets = [preds.pred_masks, *preds.aux_masks]  # final + auxiliary, [N,1,S/4,S/4] each
            parts = mask_loss(sets, batch.gt_masks, batch.resized_hw[owner], cfg.mask.image_size,
                              self.mask_settings, normalizer=target_normalizer)
            bce, dice = parts.bce, parts.dice
            if want_rows:
                rows = capture_rows(llm.attentions, cfg.text.num_hidden_layers)
                attn = self.weights.attention * attention_loss(
                    rows, batch.attention_grids, self.weights.attention_variant, cfg.text.num_attention_heads
                )
        total = self.weights.text * loss_text + bce + dice + attn
        return LossParts(total, loss_text.detach(), bce.detach(), dice.detach(), attn.detach(), n)
