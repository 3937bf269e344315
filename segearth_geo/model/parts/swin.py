"""Swin Transformer backbone of the mask branch, exact to Mask2Former's ``D2SwinTransformer`` (spec §2.4).

Why our own: timm's Swin shifts *before* padding and is wrong at 1024² (every stage needs padding
there: 256/128/64/32 are not multiples of 12). Here, as in Mask2Former, each block zero-pads the
normalised tokens right/bottom to a multiple of the window, *then* shifts; the shifted-window region
mask (−100 between regions) is built on the padded grid; padded tokens are otherwise unmasked, and the
output is cropped back.

Module and parameter names are the checkpoint's (``model.vision_tower_mask.*``): ``patch_embed``,
``layers.{i}.blocks.{j}``, ``layers.{i}.downsample``, per-stage output norms ``norm0..norm3``.

Notation: B batch, H×W token grid of a stage, C stage width, ws window side, N = ws² tokens per window,
nW windows per image, h heads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segearth_geo.model.branch_configuration import MaskConfig


def drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth: drop the whole residual branch per sample with probability ``rate``."""
    if rate == 0.0 or not training:
        return x
    keep = 1.0 - rate
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask / keep


def window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """``[B, Hp, Wp, C]`` → ``[B, nW, N, C]`` (windows in row-major order)."""
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, (h // ws) * (w // ws), ws * ws, c)


def window_reverse(windows: torch.Tensor, ws: int, h: int, w: int) -> torch.Tensor:
    """``[B, nW, N, C]`` → ``[B, Hp, Wp, C]`` (inverse of :func:`window_partition`)."""
    b, _, _, c = windows.shape
    x = windows.view(b, h // ws, w // ws, ws, ws, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)


def relative_position_index(ws: int) -> torch.Tensor:
    """``[N, N]`` int64 index into the ``(2ws−1)²`` bias table for every (query, key) pair of a window."""
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)  # [2, N]
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (ws - 1)  # [N, N, 2], in 0..2ws-2
    return rel[:, :, 0] * (2 * ws - 1) + rel[:, :, 1]


def shifted_window_mask(h: int, w: int, ws: int, shift: int, device: torch.device) -> torch.Tensor:
    """Additive mask ``[nW, N, N]`` (0 within a region, −100 across) for the padded ``h × w`` grid."""
    hp, wp = -(-h // ws) * ws, -(-w // ws) * ws
    regions = torch.zeros((1, hp, wp, 1), device=device)
    slices = (slice(0, -ws), slice(-ws, -shift), slice(-shift, None))
    count = 0
    for hs in slices:
        for vs in slices:
            regions[:, hs, vs, :] = count
            count += 1
    ids = window_partition(regions, ws).view(-1, ws * ws)  # [nW, N]
    mask = ids[:, None, :] - ids[:, :, None]
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


class Mlp(nn.Module):
    """``fc1 → GELU (exact) → fc2``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows with a learned relative position bias."""

    def __init__(self, dim: int, window_size: int, num_heads: int) -> None:
        super().__init__()
        self.window_size = window_size
        self.num_heads = num_heads
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        # Persistent int64 buffer: the official checkpoint stores it.
        self.register_buffer("relative_position_index", relative_position_index(window_size), persistent=True)
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """``x [B, nW, N, C]``, ``mask [nW, N, N]`` additive or None → ``[B, nW, N, C]``."""
        b, nw, n, c = x.shape
        heads = self.num_heads
        # 4-D [B·nW, h, N, d] layout: SDPA's fused kernels (CPU and CUDA) take 4-D inputs; 5-D falls back to math
        qkv = self.qkv(x).view(b * nw, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)  # [3, B·nW, h, N, d]
        q, k, v = qkv.unbind(0)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]  # [N·N, h]
        bias = bias.view(n, n, heads).permute(2, 0, 1)  # [h, N, N]
        if mask is not None:  # [nW, h, N, N] repeated per image (a copy only when B > 1)
            bias = (bias[None] + mask[:, None].to(bias.dtype)).expand(b, nw, heads, n, n).reshape(b * nw, heads, n, n)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))  # [B·nW, h, N, d]
        out = out.transpose(1, 2).reshape(b, nw, n, c)
        return self.proj(out)


class SwinTransformerBlock(nn.Module):
    """Pre-norm block: ``x + W-MSA(norm1 x)`` with pad-then-shift, then ``x + MLP(norm2 x)``."""

    def __init__(self, dim: int, num_heads: int, window_size: int, shift_size: int, mlp_ratio: float,
                 drop_path_rate: float) -> None:
        super().__init__()
        self.window_size = window_size
        self.shift_size = shift_size
        self.drop_path_rate = drop_path_rate
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, h: int, w: int, shift_mask: torch.Tensor | None) -> torch.Tensor:
        """``x [B, H·W, C]`` → ``[B, H·W, C]``; ``shift_mask [nW, N, N]`` is used by shifted blocks only."""
        b, _, c = x.shape
        ws, shift = self.window_size, self.shift_size
        shortcut = x
        x = self.norm1(x).view(b, h, w, c)
        pad_b, pad_r = (-h) % ws, (-w) % ws
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))  # zero-pad right/bottom: [B, Hp, Wp, C]
        hp, wp = h + pad_b, w + pad_r
        if shift > 0:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
        x = self.attn(window_partition(x, ws), shift_mask if shift > 0 else None)
        x = window_reverse(x, ws, hp, wp)
        if shift > 0:
            x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
        x = x[:, :h, :w, :].reshape(b, h * w, c)
        x = shortcut + drop_path(x, self.drop_path_rate, self.training)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_path_rate, self.training)


class PatchMerging(nn.Module):
    """2×2 neighbourhood → ``LayerNorm(4C)`` → ``Linear(4C → 2C, no bias)``; halves H and W (rounding up)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """``[B, H·W, C]`` → ``[B, ⌈H/2⌉·⌈W/2⌉, 2C]``."""
        b, _, c = x.shape
        x = x.view(b, h, w, c)
        x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        # gather order: (even row, even col), (odd row, even col), (even row, odd col), (odd row, odd col)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x.view(b, -1, 4 * c)))


class BasicLayer(nn.Module):
    """One stage: ``depth`` blocks (odd ones shifted by ws//2) then an optional :class:`PatchMerging`."""

    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int, mlp_ratio: float,
                 drop_path_rates: list[float], downsample: bool) -> None:
        super().__init__()
        self.window_size = window_size
        self.shift_size = window_size // 2
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(dim, num_heads, window_size, 0 if i % 2 == 0 else self.shift_size, mlp_ratio,
                                 drop_path_rates[i])
            for i in range(depth)
        )
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        """``x [B, H·W, C]`` → (stage output ``[B, H·W, C]``, next input ``[B, H'·W', 2C]``, H', W')."""
        shift_mask = shifted_window_mask(h, w, self.window_size, self.shift_size, x.device)
        for block in self.blocks:
            x = block(x, h, w, shift_mask)
        if self.downsample is None:
            return x, x, h, w
        return x, self.downsample(x, h, w), (h + 1) // 2, (w + 1) // 2


class PatchEmbed(nn.Module):
    """Conv ``p×p / p`` (3 → C) then LayerNorm(C); inputs are padded right/bottom to a multiple of p."""

    def __init__(self, patch_size: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` → ``[B, C, H/p, W/p]``."""
        p = self.patch_size
        x = F.pad(x, (0, (-x.shape[3]) % p, 0, (-x.shape[2]) % p))
        x = self.proj(x)
        b, c, h, w = x.shape
        x = self.norm(x.flatten(2).transpose(1, 2))  # [B, H·W, C]
        return x.transpose(1, 2).view(b, c, h, w)


class SwinTransformer(nn.Module):
    """Four-stage Swin returning ``[res2, res3, res4, res5]`` = ``[B, C·2^i, S/2^(i+2), S/2^(i+2)]``."""

    def __init__(self, config: MaskConfig) -> None:
        super().__init__()
        depths = list(config.swin_depths)
        rates = torch.linspace(0, config.swin_drop_path_rate, sum(depths), device="cpu").tolist()
        self.patch_embed = PatchEmbed(config.swin_patch_size, config.swin_embed_dim)
        dims = config.swin_dims
        self.num_features = dims
        self.layers = nn.ModuleList(
            BasicLayer(dims[i], depths[i], config.swin_num_heads[i], config.swin_window_size, config.swin_mlp_ratio,
                       rates[sum(depths[:i]):sum(depths[: i + 1])], downsample=i < len(depths) - 1)
            for i in range(len(depths))
        )
        for i, dim in enumerate(dims):  # per-stage output norms (checkpoint names norm0..norm3)
            self.add_module(f"norm{i}", nn.LayerNorm(dim))

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """``images [B, 3, S, S]`` (normalised) → list of 4 maps ``[B, C_i, H_i, W_i]``, strides 4/8/16/32."""
        x = self.patch_embed(images)  # [B, C, S/4, S/4]
        b, _, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)  # [B, H·W, C]
        outputs = []
        for i, layer in enumerate(self.layers):
            out, x, h_next, w_next = layer(x, h, w)
            out = getattr(self, f"norm{i}")(out)
            outputs.append(out.view(b, h, w, -1).permute(0, 3, 1, 2).contiguous())
            h, w = h_next, w_next
        return outputs
