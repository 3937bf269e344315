"""The released SegEarth-R1 module tree equals the official key inventory (built on the meta device, no memory)."""

from __future__ import annotations

import pytest
import torch
from model_network_fixtures import key_pattern
from r1_fixtures import R1_INVENTORY, read_r1_inventory

from segearth_geo.model.segearth_r1.checkpoint import official_to_ours, ours_to_official
from segearth_geo.model.segearth_r1.configuration import SegEarthR1Config
from segearth_geo.model.segearth_r1.modeling import SegEarthR1

pytestmark = pytest.mark.skipif(not R1_INVENTORY.is_file(), reason="spec key inventory not available")


@pytest.fixture(scope="module")
def meta_r1() -> SegEarthR1:
    with torch.device("meta"):
        return SegEarthR1(SegEarthR1Config.from_preset("segearth-r1"))


def _compare(state: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]]) -> None:
    assert sorted(set(state) - set(expected)) == []  # extra
    assert sorted(set(expected) - set(state)) == []  # missing
    assert {k: (state[k], s) for k, s in expected.items() if state[k] != s} == {}  # wrong shape


def test_released_tree_in_checkpoint_layout_equals_inventory(meta_r1):
    expected = read_r1_inventory(vocab_size=50297)
    assert len(expected) == 935
    official = ours_to_official(meta_r1.state_dict(), num_heads=32)
    _compare({k: tuple(v.shape) for k, v in official.items()}, expected)


def test_inventory_mapped_to_our_names_equals_our_tree(meta_r1):
    expected = read_r1_inventory(vocab_size=50297)
    fused = {k: torch.empty(shape, device="meta") for k, shape in expected.items()}
    ours = official_to_ours(fused, num_heads=32)
    assert len(ours) == 935 + 24 * 4  # two fused tensors per layer become six: the 1031 of the inventory header
    _compare({k: tuple(v.shape) for k, v in ours.items()}, {k: tuple(v.shape) for k, v in meta_r1.state_dict().items()})


def test_parameter_count_matches_the_spec(meta_r1):
    assert sum(p.numel() for p in meta_r1.parameters()) == 1_588_495_416
    groups = {"pixel_decoder.": 5_544_896, "predictor.": 14_747_904, "model.mm_projector.": 62_134_272,
              "model.vision_tower.": 86_880_376}
    for prefix, count in groups.items():
        assert sum(p.numel() for n, p in meta_r1.named_parameters() if n.startswith(prefix)) == count, prefix
    description = ("text_projector.", "origin_SEG_token_projector.", "local_project.", "d_layers.",
                   "SEG_token_projector.")
    assert sum(p.numel() for n, p in meta_r1.named_parameters() if n.startswith(description)) == 4_462_336


def test_buffers_rotary_is_transient_swin_index_is_saved(meta_r1):
    state = meta_r1.state_dict()
    assert "model.rotary_emb.inv_freq" in dict(meta_r1.named_buffers())
    assert not any("inv_freq" in k for k in state)
    index = [k for k in state if k.endswith("relative_position_index")]
    assert len(index) == 24 and all(state[k].dtype == torch.int64 for k in index)


def test_official_config_without_our_block_builds_the_released_tree():
    official = SegEarthR1Config.from_preset("segearth-r1").to_official_dict()
    del official["segearth_geo"]
    config = SegEarthR1Config.from_official_dict(official)
    assert config == SegEarthR1Config.from_preset("segearth-r1")
    assert (config.num_image_tokens, config.grid_sizes) == (64, (32, 16, 8))
    assert (config.pad_token_id, config.seg_token_id) == (50295, 50296)
    official["mm_projector_type"] = "compression_connector"  # the briefly used name is accepted
    assert SegEarthR1Config.from_official_dict(official) == config


def test_mask_only_build_has_no_lm_head():
    with torch.device("meta"):
        model = SegEarthR1(SegEarthR1Config.from_preset("segearth-r1"), lm_head=False)
    assert "lm_head.weight" not in model.state_dict()
    assert len(model.state_dict()) == 935 + 24 * 4 - 1  # split q/k/v, no lm_head


def test_tiny_preset_shares_the_released_module_tree(meta_r1):
    with torch.device("meta"):
        tiny = SegEarthR1(SegEarthR1Config.from_preset("tiny"))
    assert {key_pattern(k) for k in tiny.state_dict()} == {key_pattern(k) for k in meta_r1.state_dict()}
