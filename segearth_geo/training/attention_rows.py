"""``[SEG]`` → image attention rows without materialising attention maps (spec §8.3).

The spatial attention loss needs, for every Phi layer, the softmax attention probabilities of
the answer ``[SEG]`` positions over the image positions, summed over heads. Eager attention with
``output_attentions=True`` would keep ``[B,H,L,L]`` fp32 probabilities per layer (≈112 MiB per
layer and sample at the 3B sequence length). Instead we register one custom attention function
with transformers' ``AttentionInterface`` that

* runs the real attention through transformers' SDPA function (output identical to ``"sdpa"``);
* when the call carries a :class:`SegRowRequest` (keyword ``seg_rows``), recomputes only the
  ``N`` needed softmax rows from the post-RoPE query/key: full-row normalisation over all ``L``
  keys with the causal + padding mask, then the image columns are sliced and the heads summed.
  The row computation runs under activation checkpointing, so it saves nothing beyond the
  query/key tensors SDPA keeps anyway.

The rows come back through the standard ``attentions`` output (``output_attentions=True``): the
library's output recorder collects them once per layer, also when HF gradient checkpointing
replays a layer during backward (a list filled by our function would get duplicates).

The same name is registered with ``AttentionMaskInterface`` (mapped to the SDPA mask builder);
without that, transformers silently skips mask creation for an unknown name and padding is
ignored. The SDPA mask builder may return ``None`` for an unpadded batch: that means "causal".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from segearth_geo.errors import ModelError

ATTENTION_NAME = "segearth_seg_rows"


@dataclass(frozen=True)
class SegRowRequest:
    """Which attention rows to capture: one per answer ``[SEG]`` target (``N`` targets in the batch).

    Attributes:
        batch_index: ``[N]`` long, the sample (row of the LLM batch) owning each target.
        positions: ``[N]`` long, the target's ``[SEG]`` position in the spliced sequence.
        image_start: ``[N]`` long, position of the owning sample's first image embedding.
        num_image_tokens: ``T_img`` image positions per sample (729 for the 3B model).
    """

    batch_index: torch.Tensor
    positions: torch.Tensor
    image_start: torch.Tensor
    num_image_tokens: int


def _mask_rows(attention_mask: torch.Tensor | None, request: SegRowRequest, kv_length: int, device) -> torch.Tensor:
    """Boolean ``[N,L]`` "may attend" rows of the layer's mask at the requested positions."""
    if attention_mask is None:  # unpadded batch: SDPA relies on is_causal
        cols = torch.arange(kv_length, device=device)
        return cols[None, :] <= request.positions[:, None]
    rows = attention_mask[request.batch_index, 0, request.positions, :kv_length]  # [N,L]
    if rows.dtype == torch.bool:
        return rows
    return rows > torch.finfo(rows.dtype).min / 2  # additive float mask: 0 = attend, min = blocked


def _row_probabilities(
    query: torch.Tensor,
    key: torch.Tensor,
    allowed: torch.Tensor,
    batch_index: torch.Tensor,
    positions: torch.Tensor,
    columns: torch.Tensor,
    scaling: float,
) -> torch.Tensor:
    """Head-summed softmax probabilities of the requested rows at the image columns.

    Args:
        query: ``[B,H,L,hd]`` post-RoPE queries; key: ``[B,H_kv,L,hd]`` post-RoPE keys.
        allowed: ``[N,L]`` bool mask rows; columns: ``[N,T_img]`` image column indices.
    Returns:
        ``[N,T_img]`` rows in fp32 (fp64 for fp64 inputs); probabilities are cast to the compute dtype
        first, like eager attention does.
    """
    q = query[batch_index, :, positions, :]  # [N,H,hd]
    k = key[batch_index]  # [N,H_kv,L,hd]
    heads, kv_heads = q.shape[1], k.shape[1]
    if kv_heads != heads:  # grouped-query attention
        k = k.repeat_interleave(heads // kv_heads, dim=1)
    scores = torch.einsum("nhd,nhld->nhl", q, k) * scaling  # [N,H,L], compute dtype (as eager)
    scores = scores.masked_fill(~allowed[:, None, :], torch.finfo(scores.dtype).min)
    probs = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)  # [N,H,L]
    image = probs.gather(2, columns[:, None, :].expand(-1, heads, -1))  # [N,H,T_img]
    return image.to(torch.promote_types(image.dtype, torch.float32)).sum(dim=1)  # [N,T_img], ≥ fp32


def seg_rows_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    seg_rows: SegRowRequest | None = None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Attention function registered as :data:`ATTENTION_NAME`.

    Returns ``(attn_output [B,L,H,hd], rows [N,T_img] | None)``; ``rows`` is ``None`` when the call
    carries no request (inference, generation), so the function then behaves exactly like SDPA.
    """
    kwargs.pop("output_attentions", None)  # rows are our answer to it; SDPA would only warn
    output, _ = sdpa_attention_forward(
        module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
    )
    if seg_rows is None or seg_rows.positions.numel() == 0:
        return output, None
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    kv_length = key.shape[2]
    allowed = _mask_rows(attention_mask, seg_rows, kv_length, query.device)
    columns = seg_rows.image_start[:, None] + torch.arange(seg_rows.num_image_tokens, device=query.device)
    args = (query, key, allowed, seg_rows.batch_index, seg_rows.positions, columns, scaling)
    if torch.is_grad_enabled() and (query.requires_grad or key.requires_grad):
        rows = checkpoint(_row_probabilities, *args, use_reentrant=False)
    else:
        rows = _row_probabilities(*args)
    return output, rows


def register() -> str:
    """Register the attention and mask functions (idempotent); returns the implementation name."""
    AttentionInterface.register(ATTENTION_NAME, seg_rows_attention_forward)
    AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)
    return ATTENTION_NAME


def use_seg_rows_attention(language_model: nn.Module) -> None:
    """Switch a transformers decoder (e.g. the SegEarth-R2 ``model`` Phi) to the row-capturing attention.

    Without a request the function is plain SDPA, so generation and evaluation are unaffected.
    """
    name = register()
    config = getattr(language_model, "config", None)
    if config is None or not hasattr(config, "_attn_implementation"):
        raise ModelError("the language model has no transformers config; cannot switch its attention function")
    config._attn_implementation = name


def capture_rows(attentions: tuple[torch.Tensor | None, ...] | None, num_layers: int) -> list[torch.Tensor]:
    """Check and return the per-layer rows collected through ``output_attentions`` (one ``[N,T_img]`` per layer)."""
    rows = [a for a in (attentions or ()) if a is not None]
    if len(rows) != num_layers:
        raise ModelError(
            f"expected attention rows from {num_layers} layers, got {len(rows)}: is the language model using "
            f"the {ATTENTION_NAME!r} attention (call use_seg_rows_attention) with output_attentions=True?"
        )
    return rows
