"""Sine position encoding of a feature map (spec §2.7), as used by the pixel decoder and the mask decoder.

For row ``i`` (0-based) of an ``h × w`` map, ``ŷ = (i + 1) / (h + eps) · 2π`` (likewise ``x̂`` for column ``j``).
With ``d_k = T^(2⌊k/2⌋ / F)`` for ``k = 0..F-1`` (``F`` = features per axis, ``T`` = temperature):
``pe_y[k] = sin(ŷ / d_k)`` for even ``k`` and ``cos(ŷ / d_k)`` for odd ``k``. Output channels are
``[pe_y (F), pe_x (F)]``.
"""

from __future__ import annotations

import math

import torch


def sine_position_encoding(
    height: int,
    width: int,
    num_pos_feats: int,
    *,
    temperature: float = 10000.0,
    scale: float = 2 * math.pi,
    eps: float = 1e-6,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Return the encoding of an ``height × width`` grid, shape ``[2·num_pos_feats, height, width]``.

    It does not depend on the feature values, so callers broadcast it over the batch.
    """
    # y_embed / x_embed: [h, w], cumulative index 1..h / 1..w, normalised to (0, 2π]
    y_embed = torch.arange(1, height + 1, device=device, dtype=torch.float32)[:, None].expand(height, width)
    x_embed = torch.arange(1, width + 1, device=device, dtype=torch.float32)[None, :].expand(height, width)
    y_embed = y_embed / (height + eps) * scale
    x_embed = x_embed / (width + eps) * scale

    dim_t = torch.arange(num_pos_feats, device=device, dtype=torch.float32)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_pos_feats)  # d_k: [F]

    pos_x = x_embed[:, :, None] / dim_t  # [h, w, F]
    pos_y = y_embed[:, :, None] / dim_t
    # interleave sin (even k) and cos (odd k): [h, w, F/2, 2] -> [h, w, F]
    pos_x = torch.stack((pos_x[:, :, 0::2].sin(), pos_x[:, :, 1::2].cos()), dim=3).flatten(2)
    pos_y = torch.stack((pos_y[:, :, 0::2].sin(), pos_y[:, :, 1::2].cos()), dim=3).flatten(2)
    return torch.cat((pos_y, pos_x), dim=2).permute(2, 0, 1).to(dtype)  # [2F, h, w]
