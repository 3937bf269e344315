"""Training batches: label masking, truncation after splicing, targets, GT masks and attention grids."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from model_fixtures import tiny_config, tiny_tokenizer

from segearth_geo.data.sample import Sample
from segearth_geo.errors import UsageError
from segearth_geo.model.tokenizer import seg_token_id
from segearth_geo.training.collate import Collator, encode_sample

torch.set_num_threads(1)
IGNORE = -100


def _sample(answer: str, n_masks: int, h: int = 60, w: int = 90, instruction: str = "segment the roofs") -> Sample:
    image = np.zeros((h, w, 3), np.uint8)
    masks = []
    for k in range(n_masks):
        m = np.zeros((h, w), bool)
        m[: h // 3, k * (w // 3): (k + 1) * (w // 3)] = True  # k-th third of the top band
        masks.append(m)
    return Sample(f"s{n_masks}", image, instruction, answer, masks)


@pytest.fixture(scope="module")
def setup():
    tokenizer = tiny_tokenizer()
    return tokenizer, tiny_config(tokenizer)


def test_only_the_answer_and_eos_are_supervised(setup):
    tokenizer, config = setup
    answer = "The buildings are [SEG], and the roads are [SEG]."
    enc = encode_sample(tokenizer, "segment buildings and roads", answer, 2, config)
    seg = seg_token_id(tokenizer)
    ids, labels = enc.input_ids, enc.labels
    assert ids.count(config.image_token_index) == 1 and labels[enc.image_position] == IGNORE
    supervised = [i for i, lab in enumerate(labels) if lab != IGNORE]
    # one contiguous span at the end, labels equal the ids there
    assert supervised == list(range(supervised[0], len(ids)))
    assert all(labels[i] == ids[i] for i in supervised)
    assert ids[-1] == config.eos_token_id and labels[-1] == config.eos_token_id
    # the span is the two header tokens of the official "-2" rule (": ") then "\n" + answer + EOS
    assert tokenizer.decode([ids[i] for i in supervised]) == ": \n" + answer + "<|endoftext|>"
    assert tokenizer.decode([ids[i] for i in supervised[2:]]) == "\n" + answer + "<|endoftext|>"
    # every answer [SEG] is a target; the input-side [SEG] of <refer> is not
    seg_all = [i for i, t in enumerate(ids) if t == seg]
    assert len(seg_all) == 3
    assert enc.target_positions == seg_all[1:]
    assert labels[seg_all[0]] == IGNORE


def test_truncation_happens_after_splicing(setup):
    tokenizer, config = setup
    answer = "The buildings are [SEG], and the roads are [SEG], and the water is [SEG]."
    full = encode_sample(tokenizer, "segment", answer, 3, config)
    t_img = config.num_image_tokens
    # room for everything up to just after the second answer [SEG] once the image is spliced in
    keep = full.target_positions[1] + 1
    short = dataclasses.replace(config, max_length=keep + t_img - 1)
    enc = encode_sample(tokenizer, "segment", answer, 3, short)
    assert len(enc.input_ids) == keep
    assert len(enc.input_ids) - 1 + t_img == short.max_length  # spliced length fits exactly
    assert enc.target_positions == full.target_positions[:2]
    assert enc.input_ids == full.input_ids[:keep] and enc.labels == full.labels[:keep]


def test_prompt_that_does_not_fit_is_skipped(setup):
    tokenizer, config = setup
    tiny = dataclasses.replace(config, max_length=config.num_image_tokens + 5)
    assert encode_sample(tokenizer, "segment", "It is [SEG].", 1, tiny) is None
    with pytest.raises(UsageError):
        Collator(tokenizer, tiny)([_sample("It is [SEG].", 1)])
    with pytest.raises(UsageError):
        Collator(tokenizer, config, max_length=config.num_image_tokens)


def test_batch_targets_masks_and_grids(setup):
    from segearth_geo.model.segearth_r2.modeling import SegEarthR2

    tokenizer, config = setup
    samples = [
        _sample("Here: [SEG] and [SEG].", 2, h=60, w=90),
        _sample("There is no roof.", 0, h=40, w=40),
        _sample("The roof is [SEG].", 1, h=50, w=30),
    ]
    batch = Collator(tokenizer, config)(samples)
    assert batch.batch_size == 3 and batch.num_targets == 3
    assert batch.target_owner.tolist() == [0, 0, 2]
    assert [tuple(m.shape) for m in batch.gt_masks] == [(60, 90), (60, 90), (50, 30)]  # original resolution
    assert batch.original_hw.tolist() == [[60, 90], [40, 40], [50, 30]]
    canvas = config.mask.image_size
    assert batch.resized_hw.tolist() == [[85, 128], [128, 128], [128, 77]]
    assert batch.mask_images.shape == (3, 3, canvas, canvas)
    side = config.vision.grid_size
    assert batch.attention_grids.shape == (3, side * side)
    grid0 = batch.attention_grids[0].reshape(side, side)
    grid1 = batch.attention_grids[1].reshape(side, side)
    # first target = left third of the top band, second = middle third
    assert grid0[0, 0] and not grid0[0, -1] and not grid0[-1, 0]
    assert grid1[0, side // 2] and not grid1[0, 0]

    # after the model splices the image in, the target positions land on answer [SEG] tokens
    model = SegEarthR2(config)
    embeds = torch.zeros(3, config.num_image_tokens, config.text.hidden_size)
    inputs = model.build_inputs(batch.input_ids, embeds, batch.labels)
    owner = batch.target_owner
    pos = inputs.image_start[owner] + batch.target_positions - batch.image_positions[owner] + config.num_image_tokens - 1
    assert (inputs.token_ids[owner, pos] == config.seg_token_id).all()
    assert (inputs.labels[owner, pos] == config.seg_token_id).all()
