"""Mask2Former masked-attention decoder ("predictor") with one query per ``[SEG]`` (spec §2.6, §6).

Each target n is its own decoder batch element with a single query: the projected ``[SEG]`` state as the
content query and a zero positional query. Targets never interact, so results do not depend on which
other targets share the batch. Levels cycle 32², 64², 128² (for S = 1024) over the layers.

Notation: N targets, C hidden width, h heads, M = S/4 mask side, HW_l tokens of level l.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from segearth_geo.model.branch_configuration import MaskConfig
from segearth_geo.model.parts.pixel_decoder import PixelFeatures
from segearth_geo.model.parts.position_encoding import sine_position_encoding


@dataclass
class MaskPredictions:
    """Mask logits of every target.

    Attributes:
        pred_masks: ``[N, 1, M, M]`` after the last decoder layer.
        aux_masks: ``decoder_layers`` tensors ``[N, 1, M, M]``: before layer 0 (from the raw query), then
            after each layer but the last (deep supervision).
    """

    pred_masks: torch.Tensor
    aux_masks: list[torch.Tensor]


class MLP(nn.Module):
    """``layers.{i}`` Linear stack with ReLU between (not after the last)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims, dims[1:] + [output_dim]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


class SelfAttentionLayer(nn.Module):
    """Post-norm: ``q = norm(q + MHA(q + qpos, q + qpos, q))``. Trivial with one query, kept for the weights."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=0.0)
        self.norm = nn.LayerNorm(dim)

    def forward(self, tgt: torch.Tensor, query_pos: torch.Tensor) -> torch.Tensor:
        """``tgt, query_pos [Q, N, C]`` → ``[Q, N, C]``."""
        q = tgt + query_pos
        return self.norm(tgt + self.self_attn(q, q, value=tgt, need_weights=False)[0])


class CrossAttentionLayer(nn.Module):
    """Post-norm: ``q = norm(q + MHA(q + qpos, mem + pos, mem, mask))``."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(dim, heads, dropout=0.0)
        self.norm = nn.LayerNorm(dim)

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor, pos: torch.Tensor,
                query_pos: torch.Tensor) -> torch.Tensor:
        """``tgt [Q, N, C]``, ``memory, pos [HW, N, C]``, ``memory_mask`` bool ``[N·h, Q, HW]`` (True = blocked)."""
        out = self.multihead_attn(tgt + query_pos, memory + pos, value=memory, attn_mask=memory_mask,
                                  need_weights=False)[0]
        return self.norm(tgt + out)


class FFNLayer(nn.Module):
    """Post-norm: ``q = norm(q + linear2(relu(linear1 q)))``."""

    def __init__(self, dim: int, ffn_dim: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, tgt: torch.Tensor) -> torch.Tensor:
        return self.norm(tgt + self.linear2(F.relu(self.linear1(tgt))))


def clear_full_rows(attn_mask: torch.Tensor) -> torch.Tensor:
    """Rows of a bool mask ``[..., HW]`` that block every position are set to all-False (attend everywhere)."""
    full = attn_mask.all(dim=-1, keepdim=True)
    return attn_mask & ~full


def level_for_layer(layer: int, num_levels: int = 3) -> int:
    """Feature level (0 = lowest resolution) used by decoder layer ``layer``: 0,1,2,0,1,2,…"""
    return layer % num_levels


class MultiScaleMaskedTransformerDecoder(nn.Module):
    """The masked-attention decoder; parameter names follow the checkpoint (``predictor.*``)."""

    def __init__(self, config: MaskConfig) -> None:
        super().__init__()
        dim, heads, layers = config.hidden_dim, config.decoder_heads, config.decoder_layers
        self.num_heads = heads
        self.num_layers = layers
        self.num_levels = config.num_levels
        self.transformer_self_attention_layers = nn.ModuleList(SelfAttentionLayer(dim, heads) for _ in range(layers))
        self.transformer_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(dim, heads) for _ in range(layers))
        self.transformer_ffn_layers = nn.ModuleList(FFNLayer(dim, config.decoder_ffn_dim) for _ in range(layers))
        self.decoder_norm = nn.LayerNorm(dim)
        # Checkpoint-only tensors (spec §16.7): Mask2Former's learned proposal queries and SegEarth's
        # experimental [SEG] query tables. They are stored in checkpoints and never used in forward.
        self.query_feat = nn.Embedding(config.num_queries, dim)
        self.query_embed = nn.Embedding(config.num_queries, dim)
        self.SEG_query_embed = nn.Embedding(config.num_queries + 1, dim)
        self.new_query_embed = nn.Embedding(1, dim)  # only its shape was read upstream: query pos = zeros
        self.level_embed = nn.Embedding(config.num_levels, dim)
        self.mask_embed = MLP(dim, dim, dim, 3)
        self.SEG_proj = MLP(dim, dim, dim, 2)  # checkpoint-only, unused
        for layer in (*self.transformer_self_attention_layers, *self.transformer_cross_attention_layers,
                      *self.transformer_ffn_layers):
            for p in layer.parameters():
                if p.dim() > 1:
                    nn.init.xavier_uniform_(p)

    def checkpoint_only_parameters(self) -> list[nn.Parameter]:
        """Parameters that never receive a gradient (freeze them to keep DDP happy)."""
        modules = (self.query_feat, self.query_embed, self.SEG_query_embed, self.new_query_embed, self.SEG_proj)
        return [p for m in modules for p in m.parameters()]

    def prediction_heads(self, output: torch.Tensor, mask_features: torch.Tensor,
                         target_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """``output [1, N, C]``, ``mask_features [N, C, M, M]`` →
        (mask logits ``[N, 1, M, M]``, attention mask bool ``[N·h, 1, h_l·w_l]``, True = blocked, no gradient)."""
        embed = self.mask_embed(self.decoder_norm(output).transpose(0, 1))  # [N, 1, C]
        masks = torch.einsum("nqc,nchw->nqhw", embed, mask_features)  # [N, 1, M, M]
        with torch.no_grad():
            small = F.interpolate(masks.detach(), size=target_size, mode="bilinear", align_corners=False)
            attn_mask = small.sigmoid().flatten(2) < 0.5  # [N, 1, h_l·w_l]
            attn_mask = attn_mask.unsqueeze(1).repeat(1, self.num_heads, 1, 1).flatten(0, 1)  # [N·h, 1, h_l·w_l]
        return masks, attn_mask

    def forward(self, queries: torch.Tensor, features: PixelFeatures) -> MaskPredictions:
        """Decode one mask per query.

        Args:
            queries: ``[N, C]`` projected ``[SEG]`` states.
            features: pixel features already gathered per target (batch size N): ``mask_features [N, C, M, M]``,
                ``multi_scale`` 3 maps ``[N, C, h_l, w_l]``.
        """
        srcs, poss, sizes = [], [], []
        for level, feat in enumerate(features.multi_scale):
            n, c, h, w = feat.shape
            sizes.append((h, w))
            pe = sine_position_encoding(h, w, c // 2, device=feat.device, dtype=feat.dtype)  # [C, h, w]
            poss.append(pe.flatten(1).transpose(0, 1)[:, None, :].expand(-1, n, -1))  # [hw, N, C]
            srcs.append((feat.flatten(2) + self.level_embed.weight[level][None, :, None]).permute(2, 0, 1))
        output = queries[None]  # [1, N, C]: content query per target
        query_pos = torch.zeros_like(output)  # zero query positional embedding
        mask_features = features.mask_features
        masks, attn_mask = self.prediction_heads(output, mask_features, sizes[0])
        predictions = [masks]
        for i in range(self.num_layers):
            level = level_for_layer(i, self.num_levels)
            attn_mask = clear_full_rows(attn_mask)
            output = self.transformer_cross_attention_layers[i](output, srcs[level], attn_mask, poss[level], query_pos)
            output = self.transformer_self_attention_layers[i](output, query_pos)
            output = self.transformer_ffn_layers[i](output)
            masks, attn_mask = self.prediction_heads(output, mask_features,
                                                     sizes[level_for_layer(i + 1, self.num_levels)])
            predictions.append(masks)
        return MaskPredictions(pred_masks=predictions[-1], aux_masks=predictions[:-1])
