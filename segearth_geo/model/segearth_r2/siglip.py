"""LLM image branch: SigLIP vision tower and the ``mlp2x_gelu`` projector (spec §2.1, §2.2).

Notation: B images, s SigLIP side, T_img = (s/patch)² image tokens, Dv SigLIP width, D LLM width.
"""

from __future__ import annotations

import torch
from torch import nn

from segearth_geo.model.segearth_r2.configuration import VisionConfig


class SiglipVisionTower(nn.Module):
    """Holds a transformers ``SiglipVisionModel`` at ``vision_model`` (checkpoint path
    ``model.vision_tower.vision_model.*``) and returns ``hidden_states[select_layer]``.

    Only the encoder layers needed for ``select_layer`` run; the remaining layer(s), ``post_layernorm``
    and the attention-pooling ``head`` are checkpoint-only (spec §16.7) and never used.
    """

    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        from transformers import SiglipVisionModel

        self.config = config
        self.vision_model = SiglipVisionModel(config.to_siglip_config())

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``pixel_values [B, 3, s, s]`` (normalised to [-1, 1]) → ``[B, T_img, Dv]`` (before post_layernorm)."""
        model = self.vision_model
        dtype = model.embeddings.patch_embedding.weight.dtype
        hidden = model.embeddings(pixel_values.to(dtype))  # [B, T_img, Dv]
        for layer in model.encoder.layers[: self.config.num_layers_run]:
            hidden = layer(hidden, None)
        return hidden


def build_projector(vision_width: int, text_width: int) -> nn.Sequential:
    """``mlp2x_gelu``: ``Linear(Dv → D), GELU (exact erf), Linear(D → D)``; keys ``0.*`` and ``2.*``."""
    return nn.Sequential(nn.Linear(vision_width, text_width), nn.GELU(), nn.Linear(text_width, text_width))
