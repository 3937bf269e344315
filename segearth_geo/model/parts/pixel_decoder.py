"""Mask2Former MSDeformAttn pixel decoder in the official SegEarth ("Simplify") form (spec §2.5).

Inputs: Swin ``[res2, res3, res4, res5]``. Outputs (:class:`PixelFeatures`):
``mask_features [B, C, S/4, S/4]`` and three multi-scale maps ``[B, C, S/32]``, ``[B, C, S/16]``,
``[B, C, S/8]`` (low → high resolution) for the masked-attention decoder. C = ``mask.hidden_dim``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from segearth_geo.model.branch_configuration import MaskConfig
from segearth_geo.model.parts.msdeform_attn import MSDeformAttn, SpatialShapes
from segearth_geo.model.parts.position_encoding import sine_position_encoding


@dataclass
class PixelFeatures:
    """Per-image pixel features consumed by the mask decoder.

    Attributes:
        mask_features: ``[B, C, S/4, S/4]``.
        multi_scale: 3 maps ``[B, C, h_l, w_l]``, low → high resolution (S/32, S/16, S/8).
    """

    mask_features: torch.Tensor
    multi_scale: list[torch.Tensor]

    def select(self, index: torch.Tensor) -> PixelFeatures:
        """Features of the images ``index [K]`` (a gather; rows may repeat)."""
        return PixelFeatures(self.mask_features[index], [m[index] for m in self.multi_scale])


def c2_xavier_fill(module: nn.Module) -> None:
    """detectron2's ``c2_xavier_fill``: Kaiming-uniform with a=1 and zero bias."""
    nn.init.kaiming_uniform_(module.weight, a=1)
    if module.bias is not None:
        nn.init.constant_(module.bias, 0)


def reference_points(spatial_shapes: SpatialShapes, batch: int, device: torch.device) -> torch.Tensor:
    """Pixel centres ``((j+0.5)/W, (i+0.5)/H)`` of every token's own level → ``[B, Lv, L, 2]``.

    Valid ratios are all 1 (no padding mask), so the same point is reused on every level.
    """
    points = []
    for h, w in spatial_shapes:
        ref_y, ref_x = torch.meshgrid(
            torch.linspace(0.5, h - 0.5, h, dtype=torch.float32, device=device) / h,
            torch.linspace(0.5, w - 0.5, w, dtype=torch.float32, device=device) / w,
            indexing="ij",
        )
        points.append(torch.stack((ref_x.reshape(-1), ref_y.reshape(-1)), -1))  # [H·W, 2]
    ref = torch.cat(points, 0)  # [Lv, 2]
    return ref[None, :, None, :].expand(batch, -1, len(spatial_shapes), 2)


class MSDeformAttnTransformerEncoderLayer(nn.Module):
    """Post-norm: ``x = norm1(x + MSDA(x + pos, ref, x))``; ``x = norm2(x + linear2(relu(linear1 x)))``."""

    def __init__(self, d_model: int, d_ffn: int, n_levels: int, n_heads: int, n_points: int) -> None:
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, src: torch.Tensor, pos: torch.Tensor, ref: torch.Tensor, shapes: SpatialShapes) -> torch.Tensor:
        """``src, pos [B, Lv, C]``, ``ref [B, Lv, L, 2]`` → ``[B, Lv, C]``."""
        src = self.norm1(src + self.self_attn(src + pos, ref, src, shapes))
        return self.norm2(src + self.linear2(F.relu(self.linear1(src))))


class MSDeformAttnTransformerEncoder(nn.Module):
    def __init__(self, config: MaskConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            MSDeformAttnTransformerEncoderLayer(config.hidden_dim, config.encoder_ffn_dim, config.num_levels,
                                                config.encoder_heads, config.encoder_points)
            for _ in range(config.encoder_layers)
        )

    def forward(self, src: torch.Tensor, pos: torch.Tensor, shapes: SpatialShapes) -> torch.Tensor:
        ref = reference_points(shapes, src.shape[0], src.device)
        for layer in self.layers:
            src = layer(src, pos, ref, shapes)
        return src


class MSDeformAttnTransformerEncoderOnly(nn.Module):
    """Flattens the levels, adds sine position + ``level_embed``, runs the deformable encoder."""

    def __init__(self, config: MaskConfig) -> None:
        super().__init__()
        self.level_embed = nn.Parameter(torch.empty(config.num_levels, config.hidden_dim))
        self.encoder = MSDeformAttnTransformerEncoder(config)
        # upstream init: Xavier on every matrix, then the deformable-attention init, then N(0, 1) level embeds
        for p in self.encoder.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for module in self.encoder.modules():
            if isinstance(module, MSDeformAttn):
                module.reset_parameters()
        nn.init.normal_(self.level_embed)

    def forward(self, srcs: list[torch.Tensor]) -> list[torch.Tensor]:
        """``srcs``: L maps ``[B, C, H_l, W_l]`` → the same maps after the encoder."""
        shapes: SpatialShapes = [(int(s.shape[2]), int(s.shape[3])) for s in srcs]
        flat, pos = [], []
        for level, src in enumerate(srcs):
            b, c, h, w = src.shape
            pe = sine_position_encoding(h, w, c // 2, device=src.device, dtype=src.dtype)  # [C, H, W]
            flat.append(src.flatten(2).transpose(1, 2))  # [B, H·W, C]
            pos.append((pe.flatten(1).transpose(0, 1) + self.level_embed[level])[None].expand(b, -1, -1))
        memory = self.encoder(torch.cat(flat, 1), torch.cat(pos, 1), shapes)  # [B, Lv, C]
        out = memory.split([h * w for h, w in shapes], dim=1)
        return [o.transpose(1, 2).reshape(o.shape[0], -1, h, w) for o, (h, w) in zip(out, shapes)]


class MSDeformAttnPixelDecoder(nn.Module):
    """``input_proj`` (res5, res4, res3) → deformable encoder → FPN step on res2 → ``mask_features``."""

    def __init__(self, config: MaskConfig) -> None:
        super().__init__()
        dim, groups = config.hidden_dim, config.norm_groups
        in_dims = config.swin_dims  # res2..res5
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(in_dims[k], dim, kernel_size=1), nn.GroupNorm(groups, dim)) for k in (3, 2, 1)
        )
        self.transformer = MSDeformAttnTransformerEncoderOnly(config)
        self.mask_features = nn.Conv2d(dim, dim, kernel_size=1)
        self.adapter_1 = nn.Sequential(nn.Conv2d(in_dims[0], dim, kernel_size=1), nn.GroupNorm(groups, dim), nn.ReLU())
        self.layer_1 = nn.Sequential(nn.Conv2d(dim, dim, kernel_size=3, padding=1), nn.GroupNorm(groups, dim),
                                     nn.ReLU())
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.constant_(proj[0].bias, 0)
        for conv in (self.mask_features, self.adapter_1[0], self.layer_1[0]):
            c2_xavier_fill(conv)

    def forward(self, features: list[torch.Tensor]) -> PixelFeatures:
        """Swin ``[res2 [B,C0,S/4,S/4], res3, res4, res5 [B,C3,S/32,S/32]]`` → :class:`PixelFeatures`."""
        res2 = features[0]
        srcs = [proj(features[k]) for proj, k in zip(self.input_proj, (3, 2, 1))]  # [B, C, S/32|S/16|S/8]
        out = self.transformer(srcs)
        lateral = self.adapter_1(res2)  # [B, C, S/4, S/4]
        y = lateral + F.interpolate(out[-1], size=lateral.shape[-2:], mode="bilinear", align_corners=False)
        y = self.layer_1(y)
        return PixelFeatures(mask_features=self.mask_features(y), multi_scale=out)
