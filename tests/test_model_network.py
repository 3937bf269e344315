"""SegEarth-R2 network on the tiny preset: config, sequence assembly, towers, batching invariances."""

from __future__ import annotations

import json

import pytest
import torch
from model_network_fixtures import sample_ids, tiny_model

from segearth_geo.errors import CheckpointError, UsageError
from segearth_geo.model import SegEarthR2, SegEarthR2Config

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model() -> SegEarthR2:
    return tiny_model()


# ---------------------------------------------------------------- configuration
def test_presets_and_derived_values():
    big = SegEarthR2Config.from_preset("segearth-r2-3b")
    assert (big.vocab_size, big.seg_token_id, big.pad_token_id, big.lm_head_size) == (50296, 50295, 50256, 51200)
    assert big.vision.num_image_tokens == big.num_image_tokens == 729
    assert big.vision.num_layers_run == 26  # hidden_states[-2] of 27 layers
    assert big.mask.swin_dims == (128, 256, 512, 1024) and big.mask.mask_size == 256
    tiny = SegEarthR2Config.from_preset("tiny", vocab_size=300, mask={"image_size": 256})
    assert tiny.seg_token_id == 299 and tiny.mask.image_size == 256 and tiny.mask.swin_window_size == 3


def test_config_errors_are_usage_errors():
    with pytest.raises(UsageError, match="unknown SegEarth-R2 preset"):
        SegEarthR2Config.from_preset("huge")
    with pytest.raises(UsageError, match="multiple of 32"):
        SegEarthR2Config.from_preset("tiny", mask={"image_size": 100})
    with pytest.raises(UsageError, match="lm_head_size"):
        SegEarthR2Config.from_preset("tiny", vocab_size=1000)
    with pytest.raises(UsageError, match="unknown MaskConfig fields"):
        SegEarthR2Config.from_preset("tiny", mask={"windw": 3})


def test_config_round_trips_through_config_json(tmp_path):
    cfg = SegEarthR2Config.from_preset("demo", vocab_size=700, text={"attn_implementation": "eager"})
    path = cfg.save_json(tmp_path)
    data = json.loads(path.read_text())
    assert data["model_type"] == "mipha_phi" and data["architectures"] == ["SegEarthR2"]
    assert data["vocab_size"] == 700 and data["image_aspect_ratio"] == "square" and data["use_mm_proj"] is True
    back = SegEarthR2Config.from_json(tmp_path)
    assert back == cfg
    assert back.to_dict() == cfg.to_dict()


def test_official_config_without_our_block_reads_as_3b(tmp_path):
    official = SegEarthR2Config.from_preset("segearth-r2-3b").to_official_dict()
    del official["segearth_geo"]
    official["vocab_size"] = 50300
    (tmp_path / "config.json").write_text(json.dumps(official))
    cfg = SegEarthR2Config.from_json(tmp_path)
    assert cfg.vocab_size == 50300 and cfg.seg_token_id == 50299 and cfg.text.hidden_size == 2560
    with pytest.raises(CheckpointError, match="no config.json"):
        SegEarthR2Config.from_json(tmp_path / "missing")


# ---------------------------------------------------------------- towers
def test_siglip_tower_is_hidden_states_minus_two_before_post_layernorm(model):
    pixels = torch.randn(2, 3, 56, 56)
    vision = model.model.vision_tower.vision_model
    with torch.no_grad():
        reference = vision(pixels, output_hidden_states=True).hidden_states[-2]
        ours = model.model.vision_tower(pixels)
        embeds = model.encode_images(pixels)
    torch.testing.assert_close(ours, reference)
    assert embeds.shape == (2, 16, 64)
    proj = model.model.mm_projector
    torch.testing.assert_close(embeds, proj[2](torch.nn.functional.gelu(proj[0](ours), approximate="none")))


def test_phi_uses_partial_rotary_gelu_new_and_no_padding_row(model):
    phi = model.model.config
    assert phi.rope_parameters["partial_rotary_factor"] == 0.4
    assert phi.hidden_act == "gelu_new" and phi.pad_token_id is None
    assert model.model.embed_tokens.padding_idx is None
    assert model.model.layers[0].self_attn.rotary_ndims == int(16 * 0.4)
    assert model.lm_head.bias is None and model.lm_head.out_features == 512


def test_eager_and_sdpa_attention_agree():
    model = tiny_model()
    ids = sample_ids(model.config, [3, 1], [5, 2])
    pixels = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        sdpa = model(ids, pixels)
        model.set_attn_implementation("eager")
        eager = model(ids, pixels, output_attentions=True)
    mask = sdpa.inputs.attention_mask.bool()
    torch.testing.assert_close(eager.hidden_states[mask], sdpa.hidden_states[mask], atol=1e-5, rtol=1e-5)
    assert len(eager.attentions) == 2 and eager.attentions[0].shape == (2, 4, 24, 24)


# ---------------------------------------------------------------- sequence assembly
def test_build_inputs_splices_image_and_masks_labels(model):
    cfg = model.config
    ids = sample_ids(cfg, [3, 1], [4, 2])
    labels = [torch.where(i < 0, torch.full_like(i, -100), i) for i in ids]
    images = torch.randn(2, 16, 64)
    inputs = model.build_inputs(ids, images, labels)
    assert inputs.lengths.tolist() == [23, 19]
    assert inputs.image_start.tolist() == [3, 1]
    assert inputs.attention_mask.tolist()[1] == [1] * 19 + [0] * 4
    assert inputs.position_ids[1, :19].tolist() == list(range(19))
    torch.testing.assert_close(inputs.inputs_embeds[0, 3:19], images[0])
    torch.testing.assert_close(inputs.inputs_embeds[1, 1:17], images[1])
    torch.testing.assert_close(inputs.inputs_embeds[0, 19:], model.model.embed_tokens(ids[0][4:]))
    assert torch.count_nonzero(inputs.inputs_embeds[1, 19:]) == 0
    assert (inputs.labels[0, 3:19] == -100).all() and inputs.labels[0, 19:].tolist() == ids[0][4:].tolist()
    assert (inputs.labels[1, 19:] == -100).all()
    assert (inputs.token_ids[0, 3:19] == cfg.image_token_index).all()


def test_left_and_right_padding_give_identical_hidden_states(model):
    ids = sample_ids(model.config, [2, 4, 1], [9, 1, 3], seed=3)
    images = model.encode_images(torch.randn(3, 3, 56, 56))
    states = {}
    for side in ("left", "right"):
        inputs = model.build_inputs(ids, images, padding_side=side)
        with torch.no_grad():
            hidden = model.model(inputs_embeds=inputs.inputs_embeds, attention_mask=inputs.attention_mask,
                                 position_ids=inputs.position_ids).last_hidden_state
        states[side] = [hidden[b][inputs.attention_mask[b].bool()] for b in range(3)]
        starts = inputs.image_start.tolist()
        assert [inputs.token_ids[b, s].item() for b, s in enumerate(starts)] == [model.config.image_token_index] * 3
    for left, right in zip(states["left"], states["right"]):
        torch.testing.assert_close(left, right, atol=1e-5, rtol=1e-5)


def test_build_inputs_rejects_bad_rows(model):
    cfg = model.config
    images = torch.randn(1, 16, 64)
    with pytest.raises(UsageError, match="exactly one"):
        model.build_inputs([torch.tensor([1, 2])], images)
    with pytest.raises(UsageError, match="exactly one"):
        model.build_inputs([torch.tensor([cfg.image_token_index, 2, cfg.image_token_index])], images)
    with pytest.raises(UsageError, match="refer"):
        model.build_inputs([torch.tensor([cfg.image_token_index, cfg.refer_token_index])], images)
    with pytest.raises(UsageError, match="max_length"):
        model.build_inputs([torch.cat([torch.tensor([cfg.image_token_index]), torch.ones(600, dtype=torch.long)])],
                           images)
    with pytest.raises(UsageError, match="padding_side"):
        model.build_inputs([torch.tensor([cfg.image_token_index])], images, padding_side="middle")


# ---------------------------------------------------------------- masks
def test_forward_uses_only_supervised_seg_tokens_as_queries(model):
    cfg = model.config
    seg, img = cfg.seg_token_id, cfg.image_token_index
    ids = [torch.tensor([5, img, 7, seg, 9, 10, seg, 11, seg]), torch.tensor([img, 4, 3]),
           torch.tensor([3, img, seg, 8])]
    labels = [torch.tensor([-100, -100, -100, -100, -100, 10, seg, 11, seg]), torch.tensor([-100, 4, 3]),
              torch.tensor([-100, -100, -100, 8])]
    with torch.no_grad():
        out = model(ids, torch.randn(3, 3, 56, 56), torch.randn(3, 3, 128, 128), labels)
    # sample 0: the refer-side [SEG] (position 2 + 16 image tokens - 1) is not a query
    assert out.seg_positions.tolist() == [[0, 21], [0, 23]]
    assert out.pred_masks.shape == (2, 1, 32, 32) and len(out.aux_masks) == 3
    assert out.logits.shape == (3, 24, 512)


def test_forward_without_targets_skips_the_mask_branch(model):
    ids = sample_ids(model.config, [1, 2], [2, 2])
    with torch.no_grad():
        out = model(ids, torch.randn(2, 3, 56, 56), torch.randn(2, 3, 128, 128))
    assert out.pred_masks is None and out.aux_masks == [] and out.seg_positions.shape == (0, 2)


def test_decode_masks_batched_equals_one_at_a_time(model):
    images = torch.randn(3, 3, 128, 128)
    states = torch.randn(4, 64)
    owner = torch.tensor([2, 0, 2, 1])
    with torch.no_grad():
        features = model.encode_mask_features(images)
        batched = model.decode_masks(states, features, owner)
        for n in range(4):
            single_features = model.encode_mask_features(images[owner[n]:owner[n] + 1])
            single = model.decode_masks(states[n:n + 1], single_features, torch.tensor([0]))
            torch.testing.assert_close(batched.pred_masks[n:n + 1], single.pred_masks, atol=1e-5, rtol=1e-5)
            for a, b in zip(batched.aux_masks, single.aux_masks):
                torch.testing.assert_close(a[n:n + 1], b, atol=1e-5, rtol=1e-5)
    assert batched.pred_masks.shape == (4, 1, 32, 32)
    assert not torch.allclose(batched.pred_masks[0], batched.pred_masks[2])  # same image, different query


def test_pixel_features_shapes(model):
    with torch.no_grad():
        features = model.encode_mask_features(torch.randn(2, 3, 128, 128))
    assert features.mask_features.shape == (2, 32, 32, 32)
    assert [tuple(m.shape) for m in features.multi_scale] == [(2, 32, 4, 4), (2, 32, 8, 8), (2, 32, 16, 16)]


def test_training_step_reaches_trained_parts_but_not_checkpoint_only_ones():
    model = tiny_model().train()
    cfg = model.config
    seg, img = cfg.seg_token_id, cfg.image_token_index
    ids = [torch.tensor([5, img, 7, seg, 1])]
    labels = [torch.tensor([-100, -100, 7, seg, 1])]
    out = model(ids, torch.randn(1, 3, 56, 56), torch.randn(1, 3, 128, 128), labels)
    loss = out.pred_masks.sum() + sum(m.sum() for m in out.aux_masks) + out.logits.sum()
    loss.backward()
    for part in (model.SEG_token_projector, model.predictor.mask_embed, model.pixel_decoder.layer_1, model.lm_head,
                 model.model.layers[0].self_attn.q_proj):
        assert all(p.grad is not None and torch.count_nonzero(p.grad) > 0 for p in part.parameters())
    unused = model.checkpoint_only_parameters()
    assert unused and all(p.grad is None for p in unused)


def test_meta_build_then_assign_load_reproduces_outputs(model):
    with torch.device("meta"):
        copy = SegEarthR2(model.config)
    copy.load_state_dict(model.state_dict(), assign=True)
    copy.materialize_buffers("cpu")
    copy.eval()
    ids = sample_ids(model.config, [2], [3])
    pixels = torch.randn(1, 3, 56, 56)
    with torch.no_grad():
        torch.testing.assert_close(copy(ids, pixels).logits, model(ids, pixels).logits)


def test_dtype_cast_keeps_rotary_frequencies_in_fp32():
    model = tiny_model()
    reference = model.model.rotary_emb.inv_freq.clone()
    model.to(torch.bfloat16)
    assert model.lm_head.weight.dtype == torch.bfloat16
    assert model.model.rotary_emb.inv_freq.dtype == torch.float32
    torch.testing.assert_close(model.model.rotary_emb.inv_freq, reference, rtol=0, atol=0)
    assert model.model.vision_tower_mask.layers[0].blocks[0].attn.relative_position_index.dtype == torch.int64


def test_bf16_autocast_and_bf16_weights_stay_close_to_fp32():
    model = tiny_model()
    cfg = model.config
    seg, img = cfg.seg_token_id, cfg.image_token_index
    ids = [torch.tensor([5, img, 7, seg, 1]), torch.tensor([img, seg, 3])]
    pixels, canvases = torch.randn(2, 3, 56, 56), torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        reference = model(ids, pixels, canvases).pred_masks
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = model(ids, pixels, canvases).pred_masks
        bf16 = model.to(torch.bfloat16)(ids, pixels, canvases).pred_masks
    scale = reference.abs().max()
    for masks in (autocast, bf16):
        assert masks.dtype == torch.bfloat16
        assert (masks.float() - reference).abs().max() < 0.05 * scale
