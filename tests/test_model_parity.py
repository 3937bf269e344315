"""Numeric parity of the network parts against independent references (tiny sizes, CPU)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from model_network_fixtures import naive_ms_deform_attn, swin_to_hf_state_dict, tiny_model

from segearth_geo.model.branch_configuration import MaskConfig
from segearth_geo.model.parts.mask_decoder import CrossAttentionLayer, MultiScaleMaskedTransformerDecoder, clear_full_rows
from segearth_geo.model.parts.msdeform_attn import MSDeformAttn, ms_deform_attn_core
from segearth_geo.model.parts.pixel_decoder import PixelFeatures, reference_points
from segearth_geo.model.parts.position_encoding import sine_position_encoding
from segearth_geo.model.parts.swin import SwinTransformer

torch.set_num_threads(1)


# ---------------------------------------------------------------- Swin vs transformers' SwinBackbone
@pytest.mark.parametrize(("size", "window"), [((128, 128), 3), ((128, 152), 3)])
def test_swin_matches_transformers_swin_backbone_with_padding_at_every_stage(size, window):
    from transformers import SwinBackbone, SwinConfig

    h, w = size
    sides = [(-(-h // 4 // 2**i), -(-w // 4 // 2**i)) for i in range(4)]  # merging rounds odd sides up
    # every stage needs padding (no side is a multiple of the window) and no side clamps HF's window
    assert all(a % window and b % window and min(a, b) > window for a, b in sides)
    cfg = MaskConfig(image_size=max(size), swin_embed_dim=16, swin_depths=(2, 2, 2, 2), swin_num_heads=(1, 2, 2, 4),
                     swin_window_size=window, swin_drop_path_rate=0.0)
    torch.manual_seed(0)
    ours = SwinTransformer(cfg).eval()
    with torch.no_grad():  # non-trivial norms and biases so that every weight matters
        for p in ours.parameters():
            p.add_(0.1 * torch.randn_like(p))
    hf = SwinBackbone(SwinConfig(image_size=max(size), patch_size=4, embed_dim=16, depths=[2, 2, 2, 2],
                                 num_heads=[1, 2, 2, 4], window_size=window, drop_path_rate=0.0,
                                 out_features=["stage1", "stage2", "stage3", "stage4"])).eval()
    converted = swin_to_hf_state_dict(ours.state_dict(), cfg.swin_depths)
    missing, unexpected = hf.load_state_dict(converted, strict=False)
    assert unexpected == []
    assert [k for k in missing if "layernorm" in k and "hidden_states_norms" not in k] == ["swin.layernorm.weight",
                                                                                           "swin.layernorm.bias"]
    assert all("relative_position_index" in k or k.startswith("swin.layernorm") for k in missing)
    x = torch.randn(2, 3, h, w)
    with torch.no_grad():
        expected = hf(x).feature_maps
        got = ours(x)
    assert len(got) == 4
    for g, e, (a, b), c in zip(got, expected, sides, cfg.swin_dims):
        assert g.shape == e.shape == (2, c, a, b)
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- deformable attention vs a naive loop
def test_ms_deform_attn_core_matches_per_point_bilinear_loop():
    g = torch.Generator().manual_seed(0)
    shapes = [(2, 3), (3, 5), (4, 4)]
    b, lq, heads, d, points = 2, 3, 2, 4, 2
    value = torch.randn(b, sum(h * w for h, w in shapes), heads, d, generator=g)
    # locations include points outside [0, 1] (zero padding) and on pixel borders
    locations = torch.rand(b, lq, heads, len(shapes), points, 2, generator=g) * 1.4 - 0.2
    weights = torch.rand(b, lq, heads, len(shapes), points, generator=g)
    got = ms_deform_attn_core(value, shapes, locations, weights)
    expected = naive_ms_deform_attn(value, shapes, locations, weights)
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=1e-5)


def test_ms_deform_attn_module_offsets_are_in_pixels_of_each_level():
    torch.manual_seed(0)
    shapes = [(2, 3), (3, 5), (4, 6)]
    attn = MSDeformAttn(d_model=8, n_levels=3, n_heads=2, n_points=2).eval()
    with torch.no_grad():
        for p in attn.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    tokens = torch.randn(1, sum(h * w for h, w in shapes), 8)
    ref = reference_points(shapes, 1, torch.device("cpu"))
    query = tokens[:, :4]
    with torch.no_grad():
        got = attn(query, ref[:, :4], tokens, shapes)
        value = attn.value_proj(tokens).view(1, -1, 2, 4)
        offsets = attn.sampling_offsets(query).view(1, 4, 2, 3, 2, 2)
        weights = attn.attention_weights(query).view(1, 4, 2, 6).softmax(-1).view(1, 4, 2, 3, 2)
        locations = torch.empty_like(offsets)
        for lvl, (h, w) in enumerate(shapes):
            locations[:, :, :, lvl, :, 0] = ref[:, :4, None, lvl, None, 0] + offsets[:, :, :, lvl, :, 0] / w
            locations[:, :, :, lvl, :, 1] = ref[:, :4, None, lvl, None, 1] + offsets[:, :, :, lvl, :, 1] / h
        expected = attn.output_proj(naive_ms_deform_attn(value, shapes, locations, weights).float())
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_reference_points_are_pixel_centres_of_the_own_level():
    ref = reference_points([(2, 4), (3, 3)], 1, torch.device("cpu"))
    assert ref.shape == (1, 17, 2, 2)
    torch.testing.assert_close(ref[0, 1, 0], torch.tensor([1.5 / 4, 0.5 / 2]))  # level 0, row 0, col 1
    torch.testing.assert_close(ref[0, 8 + 5, 1], torch.tensor([2.5 / 3, 1.5 / 3]))  # level 1, row 1, col 2


# ---------------------------------------------------------------- sine position encoding
def test_sine_position_encoding_matches_closed_form():
    h, w, feats = 5, 7, 16
    pe = sine_position_encoding(h, w, feats)
    assert pe.shape == (2 * feats, h, w)
    for i, j, k in [(0, 0, 0), (4, 6, 1), (2, 3, 6), (3, 1, 15), (1, 5, 9)]:
        d_k = 10000 ** (2 * (k // 2) / feats)
        y = (i + 1) / (h + 1e-6) * 2 * math.pi
        x = (j + 1) / (w + 1e-6) * 2 * math.pi
        fn = math.sin if k % 2 == 0 else math.cos
        assert pe[k, i, j].item() == pytest.approx(fn(y / d_k), abs=1e-6)
        assert pe[feats + k, i, j].item() == pytest.approx(fn(x / d_k), abs=1e-6)


# ---------------------------------------------------------------- decoder attention-mask rule and level cycle
def test_clear_full_rows_only_clears_rows_that_block_everything():
    mask = torch.tensor([[[True, True, True]], [[True, False, True]], [[False, False, False]]])
    assert clear_full_rows(mask).tolist() == [[[False, False, False]], [[True, False, True]],
                                              [[False, False, False]]]


def _capture_cross_attention(decoder):
    seen = []

    def hook(module, args):
        tgt, memory, memory_mask, pos, query_pos = args
        seen.append((memory.shape[0], memory_mask.clone(), query_pos.clone()))

    handles = [m.register_forward_pre_hook(hook) for m in decoder.modules() if isinstance(m, CrossAttentionLayer)]
    return seen, handles


def test_decoder_level_cycle_and_attention_masks_follow_previous_prediction():
    cfg = MaskConfig(hidden_dim=16, decoder_layers=5, decoder_heads=2, decoder_ffn_dim=32, num_queries=3)
    torch.manual_seed(0)
    decoder = MultiScaleMaskedTransformerDecoder(cfg).eval()
    sizes = [(2, 3), (4, 5), (8, 9)]
    n = 3
    features = PixelFeatures(torch.randn(n, 16, 12, 14), [torch.randn(n, 16, h, w) for h, w in sizes])
    seen, handles = _capture_cross_attention(decoder)
    with torch.no_grad():
        out = decoder(torch.randn(n, 16), features)
    for handle in handles:
        handle.remove()
    assert [length for length, _, _ in seen] == [6, 20, 72, 6, 20]  # levels 0,1,2,0,1
    assert len(out.aux_masks) == 5 and out.pred_masks.shape == (n, 1, 12, 14)
    for i, (_, mask, query_pos) in enumerate(seen):
        assert torch.count_nonzero(query_pos) == 0
        h, w = sizes[i % 3]
        prev = F.interpolate(out.aux_masks[i], size=(h, w), mode="bilinear", align_corners=False)
        expected = (prev.sigmoid().flatten(2) < 0.5).repeat_interleave(2, dim=0)  # [N·heads, 1, h·w], batch-major
        expected = clear_full_rows(expected)
        assert mask.dtype == torch.bool and torch.equal(mask, expected)


def test_decoder_clears_an_all_blocked_mask_before_cross_attention():
    cfg = MaskConfig(hidden_dim=16, decoder_layers=3, decoder_heads=2, decoder_ffn_dim=32, num_queries=3)
    torch.manual_seed(0)
    decoder = MultiScaleMaskedTransformerDecoder(cfg).eval()
    with torch.no_grad():  # every mask logit = -50 (sigmoid < 0.5 everywhere -> all rows fully blocked)
        last = decoder.mask_embed.layers[-1]
        last.weight.zero_()
        last.bias.fill_(-50.0 / 16)
    features = PixelFeatures(torch.ones(2, 16, 8, 8), [torch.randn(2, 16, s, s) for s in (2, 4, 8)])
    seen, handles = _capture_cross_attention(decoder)
    with torch.no_grad():
        out = decoder(torch.randn(2, 16), features)
    for handle in handles:
        handle.remove()
    assert torch.all(out.aux_masks[0] < 0)
    assert all(not mask.any() for _, mask, _ in seen)
    assert torch.isfinite(out.pred_masks).all()


def test_decode_masks_gradient_does_not_flow_through_attention_masks():
    model = tiny_model()
    features = model.encode_mask_features(torch.randn(1, 3, 128, 128))
    states = torch.randn(2, 64, requires_grad=True)
    out = model.decode_masks(states, features, torch.tensor([0, 0]))
    out.pred_masks.sum().backward()
    assert states.grad is not None and torch.isfinite(states.grad).all()
