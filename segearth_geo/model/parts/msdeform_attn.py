"""Multi-scale deformable attention (Deformable DETR) in pure PyTorch, as used by Mask2Former's pixel decoder.

Notation: B batch, Lq queries, Lv value tokens (all levels concatenated, Lv = Σ H_l·W_l), C width,
h heads, d = C/h, L levels, P sampling points per (head, level).

Each query samples P points per level around its reference point: location = reference +
offset / (W_l, H_l) in normalised [0, 1] image coordinates; values are read with bilinear
interpolation (zero padding, ``align_corners=False``, grid = 2·location − 1) and combined with
weights softmax-normalised over the L·P (level, point) pairs of each head.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

SpatialShapes = list[tuple[int, int]]  # (H_l, W_l) per level, as Python ints (no device syncs)


def ms_deform_attn_core(
    value: torch.Tensor,
    spatial_shapes: SpatialShapes,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """The sampling-and-weighting core.

    Args:
        value: ``[B, Lv, h, d]``.
        spatial_shapes: ``[(H_l, W_l)] * L`` matching the concatenation order of ``value``.
        sampling_locations: ``[B, Lq, h, L, P, 2]`` as (x, y) in [0, 1].
        attention_weights: ``[B, Lq, h, L, P]`` (already normalised).

    Returns:
        ``[B, Lq, h·d]``. Levels are accumulated one at a time (no ``[.., L, P]`` stack kept).
    """
    b, _, heads, d = value.shape
    _, lq, _, levels, points, _ = sampling_locations.shape
    value_list = value.split([h * w for h, w in spatial_shapes], dim=1)
    grids = 2 * sampling_locations - 1
    output = value.new_zeros(b * heads, d, lq)
    for level, (h, w) in enumerate(spatial_shapes):
        # [B, H·W, h, d] -> [B·h, d, H, W]
        value_l = value_list[level].flatten(2).transpose(1, 2).reshape(b * heads, d, h, w)
        # [B, Lq, h, P, 2] -> [B·h, Lq, P, 2]
        grid_l = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)
        sampled = F.grid_sample(value_l, grid_l, mode="bilinear", padding_mode="zeros", align_corners=False)
        # sampled [B·h, d, Lq, P] weighted by [B·h, 1, Lq, P]
        weights_l = attention_weights[:, :, :, level].transpose(1, 2).reshape(b * heads, 1, lq, points)
        output = output + (sampled * weights_l).sum(-1)
    return output.view(b, heads * d, lq).transpose(1, 2)  # [B, Lq, C]


class MSDeformAttn(nn.Module):
    """Deformable attention module; parameter names follow the checkpoint (``sampling_offsets``, …)."""

    def __init__(self, d_model: int, n_levels: int, n_heads: int, n_points: int) -> None:
        super().__init__()
        self.d_model, self.n_levels, self.n_heads, self.n_points = d_model, n_levels, n_heads, n_points
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Deformable-DETR init: offsets start on a ring of directions, uniform weights."""
        nn.init.constant_(self.sampling_offsets.weight, 0.0)
        thetas = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(self.n_heads, 1, 1, 2)
        grid = grid.repeat(1, self.n_levels, self.n_points, 1)
        for i in range(self.n_points):
            grid[:, :, i, :] *= i + 1
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.view(-1))
        nn.init.constant_(self.attention_weights.weight, 0.0)
        nn.init.constant_(self.attention_weights.bias, 0.0)
        for layer in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.constant_(layer.bias, 0.0)

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        input_flatten: torch.Tensor,
        spatial_shapes: SpatialShapes,
    ) -> torch.Tensor:
        """``query [B, Lq, C]``, ``reference_points [B, Lq, L, 2]`` (x, y in [0, 1]), ``input_flatten [B, Lv, C]``
        → ``[B, Lq, C]``. The core runs in fp32 even under autocast (as the official CUDA op)."""
        b, lq, _ = query.shape
        heads, levels, points = self.n_heads, self.n_levels, self.n_points
        value = self.value_proj(input_flatten).view(b, -1, heads, self.d_model // heads)  # [B, Lv, h, d]
        offsets = self.sampling_offsets(query).view(b, lq, heads, levels, points, 2)
        weights = self.attention_weights(query).view(b, lq, heads, levels * points)
        weights = weights.float().softmax(-1).view(b, lq, heads, levels, points)
        # offsets are in pixels of each level: divide by (W_l, H_l)
        normalizer = torch.tensor([[w, h] for h, w in spatial_shapes], dtype=torch.float32, device=query.device)
        # locations [B, Lq, h, L, P, 2]
        locations = reference_points.float()[:, :, None, :, None, :] + offsets.float() / normalizer[:, None, :]
        with torch.autocast(device_type=query.device.type, enabled=False):
            output = ms_deform_attn_core(value.float(), spatial_shapes, locations, weights)
        return self.output_proj(output.to(query.dtype))  # [B, Lq, C]
