"""[SEG] → image attention rows recomputed beside SDPA equal eager attention (values and gradients)."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import PhiConfig, PhiModel

from segearth_geo.errors import ModelError
from segearth_geo.training.attention_rows import (
    ATTENTION_NAME,
    SegRowRequest,
    capture_rows,
    use_seg_rows_attention,
)
from segearth_geo.training.losses import attention_loss

torch.set_num_threads(1)
LAYERS, HEADS, T_IMG = 3, 4, 6


def _pair():
    """Same tiny Phi twice: eager (reference) and with the row-capturing attention."""
    torch.manual_seed(0)
    cfg = PhiConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=LAYERS,
                    num_attention_heads=HEADS, resid_pdrop=0.0, max_position_embeddings=128)
    eager = PhiModel._from_config(copy.deepcopy(cfg), attn_implementation="eager")
    ours = PhiModel._from_config(copy.deepcopy(cfg), attn_implementation="sdpa")
    ours.load_state_dict(eager.state_dict())
    use_seg_rows_attention(ours)
    assert ours.config._attn_implementation == ATTENTION_NAME
    return eager, ours


def _inputs(padded: bool):
    torch.manual_seed(1)
    b, length = 2, 20
    embeds = torch.randn(b, length, 32)
    mask = torch.ones(b, length, dtype=torch.long)
    if padded:
        mask[1, 15:] = 0  # right padding of the second sample
    positions = torch.arange(length).expand(b, length)
    request = SegRowRequest(
        batch_index=torch.tensor([0, 0, 1]),
        positions=torch.tensor([12, 17, 14]),
        image_start=torch.tensor([2, 2, 3]),
        num_image_tokens=T_IMG,
    )
    return embeds, mask, positions, request


def _eager_rows(attentions, request):
    cols = request.image_start[:, None] + torch.arange(T_IMG)
    return [a.sum(1)[request.batch_index, request.positions].gather(1, cols) for a in attentions]


@pytest.mark.parametrize("padded", [False, True])
def test_rows_equal_eager_attention(padded):
    eager, ours = _pair()
    embeds, mask, positions, request = _inputs(padded)
    ref = eager(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, output_attentions=True)
    out = ours(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, output_attentions=True,
               seg_rows=request)
    rows = capture_rows(out.attentions, LAYERS)
    for got, want in zip(rows, _eager_rows(ref.attentions, request)):
        assert got.shape == (3, T_IMG)
        assert (got - want).abs().max().item() <= 1e-6
    real = mask.bool()
    assert (out.last_hidden_state[real] - ref.last_hidden_state[real]).abs().max().item() <= 1e-5


def test_padding_is_honoured_by_the_registered_mask():
    # Without AttentionMaskInterface registration the padded keys would be attended to silently.
    _, ours = _pair()
    embeds, mask, positions, _ = _inputs(True)
    a = ours(inputs_embeds=embeds, attention_mask=mask, position_ids=positions).last_hidden_state
    changed = embeds.clone()
    changed[1, 15:] = 100.0  # garbage in the padding
    b = ours(inputs_embeds=changed, attention_mask=mask, position_ids=positions).last_hidden_state
    assert torch.allclose(a[1, :15], b[1, :15], atol=1e-6)


@pytest.mark.parametrize(("checkpointing", "dtype", "tol"), [
    (False, torch.float32, 3e-6),  # fp32: SDPA and eager sum in different orders (hidden states differ ~2e-7)
    (True, torch.float32, 3e-6),
])
def test_attention_loss_gradients_equal_eager(checkpointing, dtype, tol):
    eager, ours = _pair()
    eager.to(dtype)
    ours.to(dtype)
    if checkpointing:
        ours.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        ours.train()
        eager.train()
    embeds, mask, positions, request = _inputs(True)
    embeds = embeds.to(dtype)
    grids = torch.zeros(3, T_IMG, dtype=torch.bool)
    grids[0, :2] = True
    grids[1, 3] = True
    grids[2, 4:] = True

    e1 = embeds.clone().requires_grad_(True)
    ref = eager(inputs_embeds=e1, attention_mask=mask, position_ids=positions, output_attentions=True)
    loss_ref = attention_loss(_eager_rows(ref.attentions, request), grids)
    loss_ref.backward()

    e2 = embeds.clone().requires_grad_(True)
    out = ours(inputs_embeds=e2, attention_mask=mask, position_ids=positions, output_attentions=True,
               seg_rows=request)
    rows = capture_rows(out.attentions, LAYERS)  # replayed layers must not add rows
    loss = attention_loss(rows, grids)
    loss.backward()

    assert abs(loss.item() - loss_ref.item()) <= 1e-5
    # relative error of each gradient tensor (norm of the difference / norm of the reference)
    assert _relative(e2.grad, e1.grad) <= tol
    for (name, p_ref), (_, p) in zip(eager.named_parameters(), ours.named_parameters()):
        if p_ref.grad is None:
            assert p.grad is None or not p.grad.any(), name
            continue
        assert _relative(p.grad, p_ref.grad) <= tol, name


def _relative(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got - want).norm() / want.norm().clamp(min=1e-12)).item()


def test_without_request_it_is_plain_sdpa():
    _, ours = _pair()
    sdpa = PhiModel._from_config(copy.deepcopy(ours.config), attn_implementation="sdpa")
    sdpa.load_state_dict(ours.state_dict())
    embeds, mask, positions, _ = _inputs(True)
    a = ours(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, output_attentions=True)
    b = sdpa(inputs_embeds=embeds, attention_mask=mask, position_ids=positions)
    assert torch.equal(a.last_hidden_state, b.last_hidden_state)
    with pytest.raises(ModelError):
        capture_rows(a.attentions, LAYERS)
