"""Tokenizers: phi-2 built offline (ids of spec §4.1), small trained BPEs, checkpoint tokenizer files."""

from __future__ import annotations

import json

import pytest

from segearth_geo.errors import CheckpointError
from segearth_geo.model.tokenizer import (
    PHI2_EOS_ID,
    PHI2_SEG_ID,
    PHI2_VOCAB_SIZE,
    SEG_TOKEN,
    build_phi2_tokenizer,
    encode_text,
    load_tokenizer,
    train_tokenizer,
)


@pytest.fixture(scope="module")
def phi2():
    return build_phi2_tokenizer()


def test_phi2_ids_match_the_published_layout(phi2):
    assert len(phi2) == PHI2_VOCAB_SIZE == 50296
    assert phi2.convert_tokens_to_ids(SEG_TOKEN) == PHI2_SEG_ID == 50295
    assert phi2.eos_token_id == phi2.pad_token_id == PHI2_EOS_ID == 50256
    # whitespace added tokens: 31 spaces first (50257), 2 spaces 50286, 9 tabs 50287, 2 tabs last (50294)
    assert phi2.convert_tokens_to_ids(" " * 31) == 50257
    assert phi2.convert_tokens_to_ids("  ") == 50286
    assert phi2.convert_tokens_to_ids("\t" * 9) == 50287
    assert phi2.convert_tokens_to_ids("\t\t") == 50294
    # GPT-2 BPE ids (well known): "hello world" → [31373, 995]; "<|endoftext|>" → 50256
    assert phi2.encode("hello world", add_special_tokens=False) == [31373, 995]
    assert phi2.encode("<|endoftext|>", add_special_tokens=False) == [50256]


def test_seg_splitting_keeps_the_space_as_its_own_token(phi2):
    ids = encode_text(phi2, "The tennis net is [SEG].")
    assert phi2.convert_ids_to_tokens(ids) == ["The", "Ġtennis", "Ġnet", "Ġis", "Ġ", SEG_TOKEN, "."]
    assert encode_text(phi2, "[SEG][SEG]") == [PHI2_SEG_ID, PHI2_SEG_ID]
    assert phi2.decode(encode_text(phi2, "a [SEG] b\n")) == "a [SEG] b\n"


def test_trained_tokenizer_has_eos_first_and_seg_last():
    corpus = ["the roofs of the houses [SEG]", "segment the cars and the trees"] * 3
    tok = train_tokenizer(corpus, 300)
    assert tok.eos_token_id == tok.pad_token_id == 0
    assert tok.convert_tokens_to_ids(SEG_TOKEN) == len(tok) - 1
    assert len(tok) <= 300
    ids = encode_text(tok, "the roofs [SEG].")
    assert ids.count(len(tok) - 1) == 1 and tok.decode(ids) == "the roofs [SEG]."
    # deterministic for a given corpus
    assert train_tokenizer(corpus, 300).get_vocab() == tok.get_vocab()


def test_save_and_load_round_trip(tmp_path, phi2):
    phi2.save_pretrained(str(tmp_path))
    (tmp_path / "added_tokens.json").write_text(json.dumps({SEG_TOKEN: PHI2_SEG_ID}))
    loaded = load_tokenizer(tmp_path)
    text = "USER: This is an image \n, the   roofs\t\tare [SEG]."
    assert encode_text(loaded, text) == encode_text(phi2, text)
    assert len(loaded) == PHI2_VOCAB_SIZE and loaded.eos_token_id == PHI2_EOS_ID


def test_slow_layout_with_added_tokens_json(tmp_path, phi2):
    """Official checkpoints may carry vocab.json + merges.txt + added_tokens.json only."""
    from segearth_geo.model.tokenizer import PHI2_WHITESPACE_TOKENS, _gpt2_bpe_files

    encoder, merges = _gpt2_bpe_files()
    (tmp_path / "vocab.json").write_text(encoder.read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "merges.txt").write_text(merges.read_text(encoding="utf-8"), encoding="utf-8")
    added = {tok: 50257 + k for k, tok in enumerate(PHI2_WHITESPACE_TOKENS)} | {SEG_TOKEN: PHI2_SEG_ID}
    (tmp_path / "added_tokens.json").write_text(json.dumps(added))
    loaded = load_tokenizer(tmp_path)
    assert len(loaded) == PHI2_VOCAB_SIZE
    assert encode_text(loaded, "x  is [SEG]") == encode_text(phi2, "x  is [SEG]")


def test_missing_files_and_missing_seg_are_reported(tmp_path):
    with pytest.raises(CheckpointError, match="no tokenizer"):
        load_tokenizer(tmp_path)
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel()
    PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|endoftext|>").save_pretrained(str(tmp_path))
    with pytest.raises(CheckpointError, match=r"\[SEG\]"):
        load_tokenizer(tmp_path)
