"""The LLM key/values of a prompt-independent prefix, kept per chip, and the per-prompt block read on top of it.

SegEarth-R2 and SegEarth-R1 put the image tokens before the instruction, so the template and the image tokens
(the *prefix*, ``L_p`` positions ``0..L_p-1``) are the same for every prompt on a chip. Their Phi key/values are
computed once per chip (:func:`per_chip`), kept in the image cache, and stacked back into one batch cache
(:func:`stack_chips`) under which each chip's prompt ids run as one **left**-padded block (:func:`left_padded_block`).

Notation: B chips, H heads, d head width, L_p prefix length, W block width (the longest prompt part).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

PrefixState = list[tuple[torch.Tensor, torch.Tensor]]  # per layer (keys [H,L_p,d], values [H,L_p,d]) of one chip


def per_chip(cache) -> list[PrefixState]:
    """A batch ``DynamicCache`` (per layer ``[B,H,L_p,d]``) → one :data:`PrefixState` per chip (views)."""
    batch = cache.layers[0].keys.shape[0]
    return [[(layer.keys[k], layer.values[k]) for layer in cache.layers] for k in range(batch)]


def stack_chips(states: list[PrefixState], config):
    """The chips' prefix states → one ``DynamicCache`` (per layer ``[B,H,L_p,d]``) for the LLM of ``config``."""
    from transformers import DynamicCache

    kv = [(torch.stack([s[layer][0] for s in states]), torch.stack([s[layer][1] for s in states]))
          for layer in range(len(states[0]))]  # each [B,H,L_p,d]
    return DynamicCache(ddp_cache_data=kv, config=config)


@dataclass
class Block:
    """Each chip's ids after the prefix, left-padded to a common width.

    Attributes:
        ids: ``[B,W]`` (padding = ``pad_id``), so every row ends with a real id.
        mask: ``[B,W]`` 1 on real ids.
        positions: ``[B,W]`` position ids ``L_p + 0..n_b-1`` on real ids (0 on padding).
        attention_mask: ``[B,L_p+W]``: the prefix (all real) then ``mask``.
        lengths: ``[B]`` real sequence lengths ``L_p + n_b``.
    """

    ids: torch.Tensor
    mask: torch.Tensor
    positions: torch.Tensor
    attention_mask: torch.Tensor
    lengths: torch.Tensor


def left_padded_block(rows: list[list[int]], prefix_length: int, pad_id: int, device: torch.device) -> Block:
    """The :class:`Block` of ``rows`` (each chip's ids after the prefix) on top of ``prefix_length`` positions."""
    counts = torch.tensor([len(row) for row in rows], dtype=torch.long, device=device)  # [B]
    width, batch = int(counts.max()), len(rows)
    ids = torch.full((batch, width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros(batch, width, dtype=torch.long, device=device)
    positions = torch.zeros(batch, width, dtype=torch.long, device=device)
    for b, row in enumerate(rows):
        n = len(row)
        ids[b, width - n:] = torch.tensor(row, dtype=torch.long, device=device)
        mask[b, width - n:] = 1
        positions[b, width - n:] = prefix_length + torch.arange(n, device=device)
    attention_mask = torch.cat([torch.ones(batch, prefix_length, dtype=torch.long, device=device), mask],
                               dim=1)  # [B,L_p+W]
    return Block(ids, mask, positions, attention_mask, prefix_length + counts)
