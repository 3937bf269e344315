"""Checkpoints in the official merged layout, Mipha-3B + Mask2Former components, and the safe unpickler."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch
from model_fixtures import tiny_model_and_tokenizer

from segearth_geo.errors import CheckpointError
from segearth_geo.model.segearth_r2.checkpoint import (
    INDEX_NAME,
    init_from_components,
    load_pretrained,
    read_numpy_pickle,
    save_pretrained,
)
from segearth_geo.model.segearth_r2.prompt import encode_conversation

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny():
    return tiny_model_and_tokenizer(seed=3)


def _outputs(model, tokenizer):
    torch.manual_seed(0)
    cfg = model.config
    enc = [encode_conversation(tokenizer, "find the roofs", "The roofs [SEG] and the trees [SEG]."),
           encode_conversation(tokenizer, "the water", "water [SEG]")]
    ids = [torch.tensor(e.input_ids) for e in enc]
    labels = [torch.tensor(e.labels) for e in enc]
    siglip = torch.randn(2, 3, cfg.vision.image_size, cfg.vision.image_size)
    canvas = torch.randn(2, 3, cfg.mask.image_size, cfg.mask.image_size)
    with torch.no_grad():
        return model(ids, siglip, canvas, labels=labels)


def test_sharded_round_trip_gives_identical_outputs(tmp_path, tiny):
    model, tokenizer = tiny
    save_pretrained(model, tokenizer, tmp_path, max_shard_size="1MB")
    index = json.loads((tmp_path / INDEX_NAME).read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and all((tmp_path / s).is_file() for s in shards)
    assert set(index["weight_map"]) == set(model.state_dict())
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "mipha_phi" and config["architectures"] == ["SegEarthR2"]
    assert config["vocab_size"] == len(tokenizer)
    assert json.loads((tmp_path / "added_tokens.json").read_text())["[SEG]"] == len(tokenizer) - 1
    assert "[SEG]" in (tmp_path / "tokenizer.json").read_text()

    loaded = load_pretrained(tmp_path)
    model2, tokenizer2 = loaded
    assert "lm_head.bias" not in model2.state_dict()
    assert model2.lm_head.weight.shape[0] == model.config.lm_head_size
    assert model2.model.embed_tokens.weight.shape[0] == len(tokenizer)
    assert len(tokenizer2) == len(tokenizer)
    a, b = _outputs(model, tokenizer), _outputs(model2, tokenizer2)
    assert torch.equal(a.logits, b.logits)
    assert a.pred_masks.shape[0] == 3 and torch.equal(a.pred_masks, b.pred_masks)


def test_mixed_dtypes_and_single_file(tmp_path, tiny):
    model, tokenizer = tiny
    import copy

    mixed = copy.deepcopy(model)
    mixed.model.layers.half()  # LLM fp16, mask branch fp32, as in the official merged file
    save_pretrained(mixed, tokenizer, tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and not (tmp_path / INDEX_NAME).exists()
    loaded, _ = load_pretrained(tmp_path)
    assert loaded.model.layers[0].self_attn.q_proj.weight.dtype == torch.float32
    expected = model.model.layers[0].self_attn.q_proj.weight.half().float()
    assert torch.equal(loaded.model.layers[0].self_attn.q_proj.weight, expected)
    bf16, _ = load_pretrained(tmp_path, dtype="bf16")
    assert bf16.lm_head.weight.dtype == torch.bfloat16
    assert bf16.model.rotary_emb.inv_freq.dtype == torch.float32


def _tamper(directory, edit):
    from safetensors.torch import load_file, save_file

    path = directory / "model.safetensors"
    state = load_file(str(path))
    edit(state)
    save_file(state, str(path))


def test_bad_checkpoints_are_refused_with_clear_errors(tmp_path, tiny):
    model, tokenizer = tiny
    save_pretrained(model, tokenizer, tmp_path / "extra")
    _tamper(tmp_path / "extra", lambda s: s.__setitem__("lm_head.bias", torch.zeros(model.config.lm_head_size)))
    with pytest.raises(CheckpointError, match="lm_head.bias"):
        load_pretrained(tmp_path / "extra")

    save_pretrained(model, tokenizer, tmp_path / "missing")
    _tamper(tmp_path / "missing", lambda s: s.pop("SEG_token_projector.bias"))
    with pytest.raises(CheckpointError, match="SEG_token_projector.bias"):
        load_pretrained(tmp_path / "missing")

    key = next(k for k in model.state_dict() if k.endswith("relative_position_index"))
    save_pretrained(model, tokenizer, tmp_path / "index")
    _tamper(tmp_path / "index", lambda s: s.__setitem__(key, s[key].flip(0).contiguous()))
    with pytest.raises(CheckpointError, match="relative position index"):
        load_pretrained(tmp_path / "index")

    save_pretrained(model, tokenizer, tmp_path / "shards", max_shard_size="1MB")
    victim = sorted((tmp_path / "shards").glob("model-*.safetensors"))[1]
    victim.unlink()
    with pytest.raises(CheckpointError, match=victim.name):
        load_pretrained(tmp_path / "shards")


def test_embed_rows_come_from_the_checkpoint(tmp_path, tiny):
    model, tokenizer = tiny
    save_pretrained(model, tokenizer, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["vocab_size"] = 51200  # a wrong config value must not size embed_tokens
    config["segearth_geo"]["vocab_size"] = model.config.lm_head_size
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded, _ = load_pretrained(tmp_path)
    assert loaded.model.embed_tokens.weight.shape[0] == len(tokenizer)
    assert loaded.config.seg_token_id == len(tokenizer) - 1


def test_offline_repo_id_names_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(CheckpointError) as info:
        load_pretrained("nobody-here/segearth-r2-none")
    message = str(info.value)
    assert "nobody-here/segearth-r2-none" in message and "config.json" in message and "HF_HUB_OFFLINE" in message
    with pytest.raises(CheckpointError, match="not found"):
        load_pretrained(tmp_path / "no_such_dir")


# ---------------------------------------------------------------------------------------------- components
def _official_pkl_state(model) -> dict[str, np.ndarray]:
    """The tiny model's mask branch under Mask2Former's key names (inverse of spec §14)."""
    inverse = {
        "pixel_decoder.adapter_1.0.weight": "sem_seg_head.pixel_decoder.adapter_1.weight",
        "pixel_decoder.adapter_1.1.weight": "sem_seg_head.pixel_decoder.adapter_1.norm.weight",
        "pixel_decoder.adapter_1.1.bias": "sem_seg_head.pixel_decoder.adapter_1.norm.bias",
        "pixel_decoder.layer_1.0.weight": "sem_seg_head.pixel_decoder.layer_1.weight",
        "pixel_decoder.layer_1.1.weight": "sem_seg_head.pixel_decoder.layer_1.norm.weight",
        "pixel_decoder.layer_1.1.bias": "sem_seg_head.pixel_decoder.layer_1.norm.bias",
    }
    skip = ("pixel_decoder.adapter_1.0.bias", "pixel_decoder.layer_1.0.bias", "predictor.SEG_query_embed",
            "predictor.new_query_embed", "predictor.SEG_proj", "predictor.query_feat")
    out = {}
    for key, value in model.state_dict().items():
        array = value.numpy().copy()
        if key.startswith("model.vision_tower_mask."):
            out["backbone." + key[len("model.vision_tower_mask."):]] = array
        elif key in inverse:
            out[inverse[key]] = array
        elif key.startswith(skip):
            continue
        elif key == "predictor.query_embed.weight":
            out["sem_seg_head.predictor.query_embed.weight"] = np.concatenate([array, array + 1])  # 2× rows
        elif key.startswith(("pixel_decoder.", "predictor.")):
            out["sem_seg_head." + key] = array
    out["sem_seg_head.predictor.class_embed.weight"] = np.zeros((134, 4), np.float32)
    out["pixel_mean"] = np.zeros(3, np.float32)
    return out


def test_init_from_components(tmp_path, tiny):
    from safetensors.torch import save_file

    model, tokenizer = tiny
    cfg = model.config
    mipha = {}
    for key, value in model.state_dict().items():
        if key.startswith(("model.vision_tower_mask.", "pixel_decoder.", "predictor.", "SEG_token_projector.")):
            continue
        if key.startswith("model.vision_tower."):
            key = "model.vision_tower.vision_tower." + key[len("model.vision_tower."):]  # LLaVA-style tower path
        mipha[key] = value.clone()
    extra_rows = torch.randn(cfg.lm_head_size - cfg.vocab_size, cfg.text.hidden_size)
    mipha["model.embed_tokens.weight"] = torch.cat([mipha["model.embed_tokens.weight"], extra_rows])
    mipha["lm_head.bias"] = torch.ones(cfg.lm_head_size)
    (tmp_path / "mipha").mkdir()
    save_file(mipha, str(tmp_path / "mipha" / "model.safetensors"))
    with open(tmp_path / "m2f.pkl", "wb") as handle:
        pickle.dump({"model": _official_pkl_state(model), "__author__": "test", "matching_heuristics": True},
                    handle, protocol=2)

    built, tok = init_from_components(tmp_path / "mipha", tmp_path / "m2f.pkl", config=cfg, tokenizer=tokenizer)
    assert tok is tokenizer
    ours, source = built.state_dict(), model.state_dict()
    assert "lm_head.bias" not in ours
    for key in source:
        if key.startswith(("SEG_token_projector.", "predictor.SEG_", "predictor.new_query", "predictor.query_feat",
                           "pixel_decoder.adapter_1.0.bias", "pixel_decoder.layer_1.0.bias")):
            continue
        assert torch.equal(ours[key], source[key]), key
    a, b = _outputs(model, tokenizer), None
    built.SEG_token_projector.load_state_dict(model.SEG_token_projector.state_dict())
    built.pixel_decoder.adapter_1[0].bias.data.copy_(model.pixel_decoder.adapter_1[0].bias)
    built.pixel_decoder.layer_1[0].bias.data.copy_(model.pixel_decoder.layer_1[0].bias)
    b = _outputs(built.eval(), tokenizer)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.pred_masks, b.pred_masks)

    # tokenizer files in the Mipha folder are used when no tokenizer is given
    tokenizer.save_pretrained(str(tmp_path / "mipha"))
    _, tok2 = init_from_components(tmp_path / "mipha", tmp_path / "m2f.pkl", config=cfg)
    assert len(tok2) == len(tokenizer) and tok2.convert_tokens_to_ids("[SEG]") == len(tokenizer) - 1


class _Exploit:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_malicious_pickle_is_refused_without_running_code(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(pickle.dumps({"model": {"backbone.x": _Exploit(marker)}}))
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        read_numpy_pickle(bad)
    assert not marker.exists()
    eval_payload = tmp_path / "eval.pkl"
    eval_payload.write_bytes(b"cbuiltins\neval\n(V__import__('os').system('touch " + str(marker).encode() + b"')\ntR.")
    with pytest.raises(CheckpointError, match="builtins.eval"):
        read_numpy_pickle(eval_payload)
    assert not marker.exists()
    good = tmp_path / "good.pkl"
    good.write_bytes(pickle.dumps({"model": {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}}))
    assert read_numpy_pickle(good)["model"]["w"].tolist() == [[0, 1, 2], [3, 4, 5]]
