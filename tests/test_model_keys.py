"""The 3B module tree equals the official checkpoint key inventory (built on the meta device, no memory)."""

from __future__ import annotations

import pytest
import torch
from model_network_fixtures import KEY_INVENTORY, key_pattern, read_inventory

from segearth_geo.model import SegEarthR2, SegEarthR2Config

pytestmark = pytest.mark.skipif(not KEY_INVENTORY.is_file(), reason="spec key inventory not available")


def build_meta(**overrides) -> SegEarthR2:
    with torch.device("meta"):
        return SegEarthR2(SegEarthR2Config.from_preset("segearth-r2-3b", **overrides))


@pytest.fixture(scope="module")
def meta_3b() -> SegEarthR2:
    return build_meta()


def test_3b_state_dict_keys_and_shapes_equal_inventory(meta_3b):
    state = meta_3b.state_dict()
    expected = read_inventory(vocab_size=50296)
    assert len(expected) == 1561
    assert sorted(set(state) - set(expected)) == []
    assert sorted(set(expected) - set(state)) == []
    wrong = {k: (tuple(state[k].shape), s) for k, s in expected.items() if tuple(state[k].shape) != s}
    assert wrong == {}


def test_3b_top_level_groups_in_checkpoint_order(meta_3b):
    groups = []
    for key in meta_3b.state_dict():
        parts = key.split(".")
        group = ".".join(parts[:2]) if parts[0] == "model" and parts[1].startswith("vision") else parts[0]
        group = "model.mm_projector" if key.startswith("model.mm_projector") else group
        if not groups or groups[-1] != group:
            groups.append(group)
    assert groups == ["model", "model.vision_tower", "model.mm_projector", "model.vision_tower_mask", "lm_head",
                      "pixel_decoder", "predictor", "SEG_token_projector"]


def test_3b_parameter_count_matches_inventory_header(meta_3b):
    # Header of the inventory: 3,193,991,288 parameters excluding embed_tokens (V x 2560) and int buffers.
    params = sum(p.numel() for name, p in meta_3b.named_parameters() if name != "model.embed_tokens.weight")
    assert params == 3_193_991_288


def test_non_persistent_buffers_exist_but_are_not_saved(meta_3b):
    buffers = dict(meta_3b.named_buffers())
    state = meta_3b.state_dict()
    transient = [n for n in buffers if n.endswith("inv_freq") or n.endswith("position_ids")]
    assert "model.rotary_emb.inv_freq" in transient
    assert "model.vision_tower.vision_model.embeddings.position_ids" in transient
    assert not set(transient) & set(state)
    index = [k for k in state if k.endswith("relative_position_index")]
    assert len(index) == 24 and all(state[k].dtype == torch.int64 for k in index)
    assert all(v.dtype == torch.float32 for k, v in state.items() if k not in index)


def test_vocab_size_sizes_embed_tokens_only():
    model = build_meta(vocab_size=50297)
    state = model.state_dict()
    assert tuple(state["model.embed_tokens.weight"].shape) == (50297, 2560)
    assert tuple(state["lm_head.weight"].shape) == (51200, 2560)
    assert "lm_head.bias" not in state
    assert model.config.seg_token_id == 50296


@pytest.mark.parametrize("preset", ["tiny", "demo"])
def test_small_presets_share_the_3b_module_tree(meta_3b, preset):
    with torch.device("meta"):
        small = SegEarthR2(SegEarthR2Config.from_preset(preset))
    assert {key_pattern(k) for k in small.state_dict()} == {key_pattern(k) for k in meta_3b.state_dict()}
