"""SegEarth-R2 prompt templates as a named choice (spec §4, §19): encodings, config round-trip, plumbing."""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import pytest
import torch
from model_fixtures import random_chip, tiny_model_and_tokenizer

from segearth_geo.errors import UsageError
from segearth_geo.model.segearth_r2.configuration import SegEarthR2Config
from segearth_geo.model.segearth_r2.prompt import (
    DEFAULT_TEMPLATE,
    IGNORE_INDEX,
    IMAGE_TOKEN_INDEX,
    TEMPLATE_NAMES,
    TEMPLATES,
    encode_conversation,
    encode_prompt,
    encode_prompt_parts,
)
from segearth_geo.model.tokenizer import PHI2_EOS_ID, PHI2_SEG_ID, build_phi2_tokenizer, encode_user_text

INSTRUCTIONS = ["find the roads", "Where could a plane land?", "tank 2", "The roofs; near the river.",
                "a [SEG] b <image>"]
ANSWER = "Of course! The runway [SEG] and the apron [SEG]."


@pytest.fixture(scope="module")
def phi2():
    return build_phi2_tokenizer()


def _official_ids(tokenizer, text: str) -> list[int]:
    """The official eval script's tokenization: split on <image>, each chunk encoded as a whole."""
    ids: list[int] = []
    for chunk in re.split("(<image>)", text):
        if chunk == "<image>":
            ids.append(IMAGE_TOKEN_INDEX)
        elif chunk:
            ids.extend(tokenizer.encode(chunk, add_special_tokens=False))
    return ids


# ---------------------------------------------------------------- the default is today's template, id for id
# Recorded from the single-template implementation before templates became a choice (phi-2 tokenizer).
TODAY = [
    ("  where is the net? ", "The <p>tennis net</p> is [SEG].", 87, 69, 54,
     "751dc28ed56a79b5e01409deed7d9ab76ada1f2aa894d56057462cfa633b96e1"),
    ("find the roads", "", 71, 67, 54, "5a29b9942ea87f68abbb868ff0ca9155770eb25cb167e3372fb7aefc0ddead4b"),
    ("Where could a plane land?", "Sure, the runway [SEG] and the apron [SEG].", 87, 70, 54,
     "a9efc652a608145ee5c7e058f4b2c5b236c797b87df5b42cb22fe1428311407e"),
    ("a [SEG] b <image>", "no target", 80, 74, 54, "d32188d3d6fb3f9e29d848ff28c6aef48df1013500b1d6b7a1d0c12ec7e98498"),
]
TODAY_FIND_THE_ROADS = [
    32, 8537, 1022, 257, 11040, 2836, 290, 281, 11666, 4430, 8796, 13, 383, 8796, 3607, 7613, 11, 6496, 11, 290,
    23507, 7429, 284, 262, 2836, 338, 2683, 13, 1294, 1137, 25, 770, 318, 281, 2939, 220, 198, -200, 198, 11, 3387,
    1804, 23219, 278, 1001, 5154, 341, 1864, 284, 262, 1708, 12064, 25, 198, 19796, 262, 9725, 50295, 1279, 91, 562,
    10167, 91, 29, 24994, 8808, 8643, 25, 220, 198, 50256,
]


@pytest.mark.parametrize("template", [None, "training"])
def test_default_template_gives_todays_ids(phi2, template):
    assert DEFAULT_TEMPLATE == "training" and TEMPLATE_NAMES[0] == "training"
    for instruction, answer, length, prompt_length, instruction_start, digest in TODAY:
        kwargs = {} if template is None else {"template": template}
        enc = encode_conversation(phi2, instruction, answer, **kwargs)
        got = hashlib.sha256(json.dumps([enc.input_ids, enc.labels, enc.prompt_length,
                                         enc.instruction_start]).encode()).hexdigest()
        assert (len(enc.input_ids), enc.prompt_length, enc.instruction_start, got) == (
            length, prompt_length, instruction_start, digest)
        ids, start = encode_prompt_parts(phi2, instruction, **kwargs)
        assert ids == enc.input_ids[:prompt_length] and start == instruction_start
    assert encode_conversation(phi2, "find the roads", "").input_ids == TODAY_FIND_THE_ROADS


# ---------------------------------------------------------------- every variant
@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_every_variant_has_one_image_before_the_instruction(phi2, name):
    template = TEMPLATES[name]
    prefixes = set()
    for instruction in INSTRUCTIONS:
        enc = encode_conversation(phi2, instruction, ANSWER, template=name)
        ids, labels = enc.input_ids, enc.labels
        assert enc.valid and len(ids) == len(labels) and ids[-1] == PHI2_EOS_ID
        assert ids.count(IMAGE_TOKEN_INDEX) == 1 and labels[ids.index(IMAGE_TOKEN_INDEX)] == IGNORE_INDEX
        assert ids.index(IMAGE_TOKEN_INDEX) < enc.instruction_start <= enc.prompt_length <= enc.answer_start
        # the instruction's ids (plain user text; + the input [SEG] in the training templates) start there
        refer = encode_user_text(phi2, instruction.strip()) + ([PHI2_SEG_ID] if template.refer_seg else [])
        assert ids[enc.instruction_start: enc.instruction_start + len(refer)] == refer
        assert all(label == IGNORE_INDEX for label in labels[: enc.prompt_length])
        assert labels[enc.prompt_length] != IGNORE_INDEX
        # from answer_start on: exactly the answer and the EOS, all supervised
        assert labels[enc.answer_start:] == ids[enc.answer_start:]
        answer_text = phi2.decode(ids[enc.answer_start:-1])
        assert answer_text.strip() == ANSWER and ids[enc.answer_start:].count(PHI2_SEG_ID) == 2
        prompt, start = encode_prompt_parts(phi2, instruction, template=name)
        assert prompt == ids[: enc.prompt_length] and start == enc.instruction_start
        assert encode_prompt(phi2, instruction, template=name) == prompt
        prefixes.add(tuple(ids[: enc.instruction_start]))
    assert len(prefixes) == 1  # the ids before instruction_start do not depend on the instruction
    # ... and instruction_start is the first id that differs between two instructions
    a = encode_conversation(phi2, "find the roads", "", template=name)
    b = encode_conversation(phi2, "Where could a plane land?", "", template=name)
    first_diff = next(k for k, (x, y) in enumerate(zip(a.input_ids, b.input_ids)) if x != y)
    assert first_diff == a.instruction_start == b.instruction_start


@pytest.mark.parametrize("name", ["llama2", "llama2-question"])
def test_llama2_variants_are_the_official_eval_prompt(phi2, name):
    """The eval script's prompt string (spec §4.3), tokenized as it does, gives the same ids."""
    prefix = {"llama2": "This is an image \n<image>\n, please doing Reasoning Segmentation according to the "
                        "following instruction:",
              "llama2-question": "This is an image \n<image>\n. If the instruction is a question, provide "
                                 "segmentation result + explanation; if it's a declarative phrase, provide only the "
                                 "segmentation result\n. Please doing Referring or Reasoning Segmentation according "
                                 "to the following instruction:"}[name]
    for instruction in INSTRUCTIONS[:4]:
        literal = ("[INST] <<SYS>>\nYou are a helpful language and vision assistant. You are able to understand the "
                   "visual content that the user provides, and assist the user with a variety of tasks using natural "
                   f"language.\n<</SYS>>\n\n{prefix}\n{instruction} [/INST]")
        assert encode_prompt(phi2, instruction, template=name) == _official_ids(phi2, literal)
        # a full LLaMA-2 round: " {answer} <|endoftext|>" (LLaVA's LLAMA_2 separator style)
        enc = encode_conversation(phi2, instruction, ANSWER, template=name)
        assert enc.input_ids == _official_ids(phi2, f"{literal} {ANSWER} <|endoftext|>")


def test_vision_tags_variant_has_the_announced_prefix(phi2):
    enc = encode_conversation(phi2, "where is the net?", "The net is [SEG].", template="training-vision-tags")
    text = phi2.decode([i if i >= 0 else phi2.encode("#")[0] for i in enc.input_ids])
    assert ("USER: This is an image <|vision_bos|> # <|vision_eos|> <|sep|> <|user|>, please doing Reasoning "
            "Segmentation according to the following instruction:\nwhere is the net?[SEG] <|assistant|> "
            "ASSISTANT: \nThe net is [SEG].<|endoftext|>") in text


def test_unknown_template_is_a_usage_error(phi2):
    with pytest.raises(UsageError, match="llama2-question"):
        encode_conversation(phi2, "x", "y", template="vicuna")


# ---------------------------------------------------------------- config and checkpoint
def test_template_round_trips_through_config_json(tmp_path):
    config = SegEarthR2Config.from_preset("tiny", template="llama2-question")
    config.save_json(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["segearth_geo"]["template"] == "llama2-question"
    assert SegEarthR2Config.from_json(tmp_path).template == "llama2-question"
    # absent (configs written before the field existed, official config.json) = the default
    del saved["segearth_geo"]["template"]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    assert SegEarthR2Config.from_json(tmp_path).template == DEFAULT_TEMPLATE
    assert SegEarthR2Config.from_official_dict({"vocab_size": 50296}).template == DEFAULT_TEMPLATE
    with pytest.raises(UsageError, match="template must be one of"):
        SegEarthR2Config.from_preset("tiny", template="vicuna")


@pytest.fixture(scope="module")
def llama2_checkpoint(tmp_path_factory):
    from segearth_geo.model.segearth_r2.checkpoint import save_pretrained

    model, tokenizer = tiny_model_and_tokenizer(steer=True, template="llama2")
    return save_pretrained(model, tokenizer, tmp_path_factory.mktemp("r2_llama2") / "ckpt")


def test_segmenter_reads_and_overrides_the_checkpoint_template(llama2_checkpoint):
    from segearth_geo.model.loading import load_segmenter
    from segearth_geo.model.segearth_r2.segmenter import SegEarthR2Segmenter

    assert SegEarthR2Segmenter.from_pretrained(llama2_checkpoint, device="cpu").template == "llama2"
    assert SegEarthR2Segmenter.from_pretrained(llama2_checkpoint, device="cpu", template="training").template == "training"
    assert load_segmenter(str(llama2_checkpoint), device="cpu", template="llama2-question").template == "llama2-question"
    assert load_segmenter(str(llama2_checkpoint), device="cpu").template == "llama2"
    with pytest.raises(UsageError, match="unknown SegEarth-R2 prompt template"):
        SegEarthR2Segmenter.from_pretrained(llama2_checkpoint, device="cpu", template="vicuna")


def _recording(segmenter) -> list[list[int]]:
    """Record the id rows the model is given (a spy on build_inputs; the real method still runs)."""
    seen: list[list[int]] = []
    real = segmenter.model.build_inputs

    def build_inputs(input_ids, *args, **kwargs):
        seen.extend([torch.as_tensor(row).tolist() for row in input_ids])
        return real(input_ids, *args, **kwargs)

    segmenter.model.build_inputs = build_inputs
    return seen


def test_the_template_changes_what_the_model_sees():
    from segearth_geo.model.segearth_r2.segmenter import SegEarthR2Segmenter

    model, tokenizer = tiny_model_and_tokenizer()
    chip = random_chip(40, 56, seed=3)
    instruction, answer = "find the roads", "The roads are [SEG]."
    probabilities = {}
    for name in TEMPLATE_NAMES:
        segmenter = SegEarthR2Segmenter(model, tokenizer, device="cpu", template=name, cache_mb=0)
        seen = _recording(segmenter)
        prediction = segmenter.predict([chip], [instruction], answers=[answer])[0]
        del segmenter.model.build_inputs  # back to the class method
        expected = encode_conversation(tokenizer, instruction, answer, eos_token_id=model.config.eos_token_id,
                                       template=name).input_ids
        assert seen == [expected]
        probabilities[name] = prediction.targets[0].probability
    assert len({tuple(encode_conversation(tokenizer, instruction, answer, template=n).input_ids)
                for n in TEMPLATE_NAMES}) == len(TEMPLATE_NAMES)
    # different context before [SEG] → a different query → a different mask
    assert not np.allclose(probabilities["training"], probabilities["llama2"], atol=1e-6)


@pytest.mark.parametrize("name", ["training", "llama2-question"])
def test_generation_with_each_template_reuses_its_prefix_cache(name):
    from segearth_geo.model.segearth_r2.segmenter import SegEarthR2Segmenter

    model, tokenizer = tiny_model_and_tokenizer(steer=True)
    segmenter = SegEarthR2Segmenter(model, tokenizer, device="cpu", template=name, max_new_tokens=8)
    chips = [random_chip(48, 48, seed=s) for s in range(3)]
    first = segmenter.predict(chips, ["find the roads", "where is the tank?", "the roofs"])
    again = segmenter.predict(chips, ["find the roads", "where is the tank?", "the roofs"])  # prefix from cache
    assert segmenter.cache_stats()["hits"].get("prefix", 0) >= 3
    for a, b in zip(first, again):
        assert a.answer == b.answer and len(a.targets) == len(b.targets)
        for ta, tb in zip(a.targets, b.targets):
            np.testing.assert_allclose(ta.probability, tb.probability, atol=1e-5)


def test_training_encodes_with_the_config_template():
    from segearth_geo.training.collate import encode_sample

    model, tokenizer = tiny_model_and_tokenizer(template="llama2")
    sample = encode_sample(tokenizer, "find the roads", "The roads are [SEG].", 1, model.config)
    expected = encode_conversation(tokenizer, "find the roads", "The roads are [SEG].",
                                   eos_token_id=model.config.eos_token_id, template="llama2")
    assert sample.input_ids == expected.input_ids and sample.labels == expected.labels
    assert len(sample.target_positions) == 1 and sample.input_ids[sample.target_positions[0]] == model.config.seg_token_id
