"""SegEarth-R1 checkpoints in the released layout: fused per-head qkv, V and [PAD]/[SEG] from the files, strictness."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from r1_fixtures import (
    tiny_prompt_ids,
    tiny_r1_model,
    tiny_r1_tokenizer,
    write_official_checkpoint,
    write_slow_tokenizer,
)
from safetensors.torch import load_file, save_file

from segearth_geo.errors import CheckpointError
from segearth_geo.model.segearth_r1.checkpoint import (
    MASK_ONLY_DROPPED,
    fuse_qkv,
    load_pretrained,
    official_to_ours,
    resolve_template,
    split_qkv,
)
from segearth_geo.model.segearth_r1.configuration import SegEarthR1Config

INSTRUCTIONS = ["the white storage tank on the left", "water"]


@pytest.fixture(scope="module")
def model():
    return tiny_r1_model(seed=3)


@pytest.fixture(scope="module")
def official_dir(model, tmp_path_factory):
    return write_official_checkpoint(model, tmp_path_factory.mktemp("r1") / "SegEarth-R1-tiny")


def _logits(model, tokenizer, images, template="referring"):
    ids, refer = tiny_prompt_ids(tokenizer, model.config, INSTRUCTIONS, template)
    with torch.no_grad():
        return model(images, ids, refer).pred_masks


# ---------------------------------------------------------------------------------------------- fused qkv
def _gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def _fused_phi_reference(state: dict[str, torch.Tensor], layers: int, heads: int, rotary_factor: float,
                         embeds: torch.Tensor) -> torch.Tensor:
    """transformers-4.36 Phi with a fused ``query_key_value`` (``view(B, L, heads, 3, hd)``), eager, causal."""
    b, length, width = embeds.shape
    hd = width // heads
    rot = int(hd * rotary_factor)
    inv_freq = 1.0 / (10000 ** (torch.arange(0, rot, 2, dtype=torch.float64) / rot))
    angles = torch.outer(torch.arange(length, dtype=torch.float64), inv_freq)
    cos, sin = torch.cat([angles, angles], -1).cos().float(), torch.cat([angles, angles], -1).sin().float()

    def rope(t):  # [B, H, L, hd]
        r, rest = t[..., :rot], t[..., rot:]
        half = torch.cat([-r[..., rot // 2:], r[..., : rot // 2]], -1)
        return torch.cat([r * cos + half * sin, rest], -1)

    x = embeds
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    for i in range(layers):
        p = f"model.layers.{i}."
        h = F.layer_norm(x, (width,), state[p + "input_layernorm.weight"], state[p + "input_layernorm.bias"])
        qkv = F.linear(h, state[p + "self_attn.query_key_value.weight"], state[p + "self_attn.query_key_value.bias"])
        qkv = qkv.view(b, length, heads, 3, hd)
        q, k, v = (qkv[..., j, :].transpose(1, 2) for j in range(3))  # [B, H, L, hd]
        scores = rope(q) @ rope(k).transpose(-1, -2) / math.sqrt(hd)
        attn = scores.masked_fill(~causal, float("-inf")).softmax(-1) @ v
        attn = F.linear(attn.transpose(1, 2).reshape(b, length, width), state[p + "self_attn.dense.weight"],
                        state[p + "self_attn.dense.bias"])
        mlp = F.linear(_gelu_new(F.linear(h, state[p + "mlp.fc1.weight"], state[p + "mlp.fc1.bias"])),
                       state[p + "mlp.fc2.weight"], state[p + "mlp.fc2.bias"])
        x = x + attn + mlp
    return F.layer_norm(x, (width,), state["model.final_layernorm.weight"], state["model.final_layernorm.bias"])


def test_per_head_split_reproduces_fused_attention(model):
    from segearth_geo.model.segearth_r1.checkpoint import ours_to_official

    cfg = model.config
    official = ours_to_official(model.state_dict(), cfg.text.num_attention_heads)
    embeds = torch.randn(2, 9, cfg.text.hidden_size, generator=torch.Generator().manual_seed(0))
    reference = _fused_phi_reference(official, cfg.text.num_hidden_layers, cfg.text.num_attention_heads,
                                     cfg.text.partial_rotary_factor, embeds)
    fresh = tiny_r1_model(seed=99)  # other weights, then the split of the fused tensors
    fresh.load_state_dict(official_to_ours(official, cfg.text.num_attention_heads))
    with torch.no_grad():
        ours = fresh.model(inputs_embeds=embeds, use_cache=False).last_hidden_state
    assert (ours - reference).abs().max().item() <= 1e-6
    # A plain three-way chunk is not the 4.36 layout: it changes the result by far more than rounding.
    naive = dict(official_to_ours(official, cfg.text.num_attention_heads))
    for i in range(cfg.text.num_hidden_layers):
        p = f"model.layers.{i}.self_attn."
        for kind in ("weight", "bias"):
            for name, part in zip("qkv", official[p + f"query_key_value.{kind}"].chunk(3)):
                naive[p + f"{name}_proj.{kind}"] = part
    fresh.load_state_dict(naive)
    with torch.no_grad():
        wrong = fresh.model(inputs_embeds=embeds, use_cache=False).last_hidden_state
    assert (wrong - reference).abs().max().item() > 1e-2


def test_split_and_fuse_are_inverse_and_per_head():
    heads, hd, width = 4, 3, 12
    fused = torch.arange(3 * heads * hd * width, dtype=torch.float32).view(3 * heads * hd, width)
    q, k, v = split_qkv(fused, heads)
    assert torch.equal(q[:hd], fused[:hd]) and torch.equal(k[:hd], fused[hd:2 * hd])  # head 0: rows q, k, v
    assert torch.equal(q[hd:2 * hd], fused[3 * hd:4 * hd])  # head 1 starts after head 0's three slots
    assert torch.equal(fuse_qkv(q, k, v, heads), fused)
    bias = torch.arange(3 * heads * hd, dtype=torch.float32)
    assert torch.equal(fuse_qkv(*split_qkv(bias, heads), num_heads=heads), bias)
    with pytest.raises(CheckpointError, match="multiple of 3"):
        split_qkv(torch.zeros(10, 4), heads)


# ---------------------------------------------------------------------------------------------- loading
def test_official_layout_on_disk(official_dir):
    names = {p.name for p in official_dir.iterdir()}
    assert {"config.json", "model.safetensors", "vocab.json", "merges.txt", "added_tokens.json"} <= names
    assert "tokenizer.json" not in names  # the slow CodeGen tokenizer of the official training
    keys = set(load_file(str(official_dir / "model.safetensors")))
    assert "model.layers.0.self_attn.query_key_value.weight" in keys
    assert not any("q_proj" in k for k in keys)
    config = json.loads((official_dir / "config.json").read_text())
    assert config["model_type"] == "llava_phi" and config["mm_projector_type"] == "SparseConv_1"
    assert config["projector_outdim"] == config["hidden_size"] and config["mask_decode_train"] is True


def test_tiny_official_checkpoint_reproduces_in_memory_outputs(model, official_dir):
    loaded = load_pretrained(official_dir)
    tokenizer = tiny_r1_tokenizer()
    images = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    expected = _logits(model, tokenizer, images)
    got = _logits(loaded.model, loaded.tokenizer, images)
    assert got.shape == (2, 1, 64, 64)
    assert (got - expected).abs().max().item() <= 1e-6
    assert type(loaded.tokenizer).__name__ != "PreTrainedTokenizerFast"  # read from vocab.json + merges.txt


@pytest.mark.parametrize("fmt", ["sharded", "bin"])
def test_other_weight_formats_load_identically(model, tmp_path, fmt):
    folder = write_official_checkpoint(model, tmp_path / fmt, fmt=fmt)
    if fmt == "sharded":
        assert json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
        assert len(list(folder.glob("model-*-of-*.safetensors"))) > 1
    state = load_pretrained(folder).model.state_dict()
    reference = model.state_dict()
    assert all(torch.equal(state[k], reference[k]) for k in state)


def test_already_split_qkv_keys_load(model, tmp_path):
    folder = write_official_checkpoint(model, tmp_path / "split", fused=False)
    assert "model.layers.0.self_attn.q_proj.weight" in load_file(str(folder / "model.safetensors"))
    state = load_pretrained(folder).model.state_dict()
    assert all(torch.equal(state[k], model.state_dict()[k]) for k in state)


def test_bf16_file_is_cast_to_the_requested_dtype(model, tmp_path):
    folder = write_official_checkpoint(model, tmp_path / "bf16", dtype=torch.bfloat16)
    loaded = load_pretrained(folder, dtype="fp32").model
    key = "model.layers.0.self_attn.q_proj.weight"
    assert loaded.state_dict()[key].dtype == torch.float32
    assert torch.equal(loaded.state_dict()[key], model.state_dict()[key].bfloat16().float())


def test_vocab_and_special_ids_come_from_the_checkpoint(official_dir):
    loaded = load_pretrained(official_dir)
    tokenizer = tiny_r1_tokenizer()
    cfg = loaded.model.config
    assert cfg.vocab_size == len(tokenizer) == loaded.model.model.embed_tokens.weight.shape[0]
    assert (cfg.pad_token_id, cfg.seg_token_id) == (tokenizer.pad_token_id, tokenizer.convert_tokens_to_ids("[SEG]"))
    assert loaded.tokenizer.pad_token == "[PAD]"


def test_unused_tensors_are_accepted_and_lm_head_dropped_explicitly(official_dir):
    stored = load_file(str(official_dir / "model.safetensors"))
    for key in ("seg_query", "predictor.CLASS_proj.layers.0.weight", "predictor.SEG_proj.layers.1.bias",
                "predictor.query_feat.weight", "lm_head.weight"):
        assert key in stored
    mask_only = load_pretrained(official_dir).model
    assert mask_only.lm_head is None and MASK_ONLY_DROPPED == ("lm_head.weight",)
    assert torch.equal(mask_only.state_dict()["seg_query"], stored["seg_query"])
    full = load_pretrained(official_dir, lm_head=True).model
    assert torch.equal(full.lm_head.weight, stored["lm_head.weight"])


def _rewrite(folder, edit):
    path = folder / "model.safetensors"
    state = load_file(str(path))
    edit(state)
    save_file(state, str(path), metadata={"format": "pt"})


def test_strict_loading_names_the_problem(model, tmp_path):
    extra = write_official_checkpoint(model, tmp_path / "extra")
    _rewrite(extra, lambda s: s.__setitem__("model.vision_tower.surprise", torch.zeros(2)))
    with pytest.raises(CheckpointError, match="do not belong"):
        load_pretrained(extra)
    missing = write_official_checkpoint(model, tmp_path / "missing")
    _rewrite(missing, lambda s: s.pop("d_layers.norm.weight"))
    with pytest.raises(CheckpointError, match="missing from the checkpoint.*d_layers.norm.weight"):
        load_pretrained(missing)
    shape = write_official_checkpoint(model, tmp_path / "shape")
    _rewrite(shape, lambda s: s.__setitem__("local_project.bias", torch.zeros(3)))
    with pytest.raises(CheckpointError, match="local_project.bias has shape"):
        load_pretrained(shape)
    index = write_official_checkpoint(model, tmp_path / "index")
    _rewrite(index, lambda s: s.__setitem__("model.vision_tower.layers.0.blocks.0.attn.relative_position_index",
                                            torch.zeros(9, 9, dtype=torch.int64)))
    with pytest.raises(CheckpointError, match="relative position index"):
        load_pretrained(index)


def test_tokenizer_without_seg_or_wrong_length_is_refused(model, tmp_path):
    folder = write_official_checkpoint(model, tmp_path / "tok")
    (folder / "added_tokens.json").write_text(json.dumps({"[PAD]": len(tiny_r1_tokenizer()) - 2}))
    with pytest.raises(CheckpointError, match=r"no \[SEG\]"):
        load_pretrained(folder)


def test_slow_and_fast_tokenizer_files_give_the_same_ids(model, tmp_path):
    from segearth_geo.model.segearth_r1.checkpoint import load_tokenizer

    slow_dir = write_slow_tokenizer(tmp_path / "slow")
    fast_dir = tmp_path / "fast"
    tiny_r1_tokenizer().save_pretrained(str(fast_dir))
    assert (fast_dir / "tokenizer.json").is_file()
    rows = len(tiny_r1_tokenizer())
    slow, pad_s, seg_s = load_tokenizer(slow_dir, rows)
    fast, pad_f, seg_f = load_tokenizer(fast_dir, rows)
    assert (pad_s, seg_s) == (pad_f, seg_f) == (rows - 2, rows - 1)
    config = SegEarthR1Config.from_preset("tiny", vocab_size=rows)
    for template in ("referring", "reasoning"):
        assert tiny_prompt_ids(slow, config, INSTRUCTIONS, template) == tiny_prompt_ids(fast, config, INSTRUCTIONS,
                                                                                       template)


def test_template_comes_from_the_checkpoint_and_can_be_overridden(official_dir, tmp_path):
    assert load_pretrained(official_dir).model.config.template == "referring"
    assert load_pretrained(official_dir, template="reasoning").model.config.template == "reasoning"
    official = {"model_type": "llava_phi", "_name_or_path": "./checkpoint/SegEarth-R1_ReasonSeg"}
    assert resolve_template(official, tmp_path, None) == "reasoning"
    assert resolve_template({"model_type": "llava_phi"}, tmp_path / "models--earth-insights--SegEarth-R1-EarthReason",
                            None) == "reasoning"
    assert resolve_template({"model_type": "llava_phi"}, tmp_path / "SegEarth-R1-RRSIS-D", None) == "referring"
    assert resolve_template({"model_type": "llava_phi"}, tmp_path / "SegEarth-R1-RRSIS-D", "reasoning") == "reasoning"


def test_not_a_segearth_r1_folder(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_pretrained(tmp_path / "nope")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mipha_phi"}))
    with pytest.raises(CheckpointError, match="expected 'llava_phi'"):
        load_pretrained(tmp_path)
