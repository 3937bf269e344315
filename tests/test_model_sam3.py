"""The SAM3 adapter on tiny random checkpoints in the real layouts (tests/sam3_fixtures.py)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from segearth_geo.errors import CheckpointError, UsageError
from segearth_geo.model.sam3 import Sam3Preprocessing, Sam3Segmenter
from segearth_geo.model.sam3.preprocess import chip_probabilities, prepare_chips
from segearth_geo.prediction import ChipPrediction, Segmenter
from tests.sam3_fixtures import TINY_IMAGE_SIZE, TINY_NUM_QUERIES, write_tiny_sam3

S = TINY_IMAGE_SIZE


@pytest.fixture(scope="module")
def hub_folder(tmp_path_factory):
    return write_tiny_sam3(tmp_path_factory.mktemp("sam3") / "hub", layout="hub")


@pytest.fixture(scope="module")
def segmenter(hub_folder):
    # Random weights score every query near 0.25: a threshold of 0 keeps all of them.
    return Sam3Segmenter.from_pretrained(hub_folder, device="cpu", score_threshold=0.0)


def _chips(*shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*shape, 3), dtype=np.uint8) for shape in shapes]


# ------------------------------------------------------------------------------------------------ loading
@pytest.mark.parametrize("layout", ["hub", "model"])
def test_both_layouts_load_the_same_weights(tmp_path, layout):
    folder = write_tiny_sam3(tmp_path / layout, layout=layout, seed=3)
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == ("sam3_video" if layout == "hub" else "sam3")
    seg = Sam3Segmenter.from_pretrained(folder, device="cpu")
    assert isinstance(seg, Segmenter)
    assert seg.chip_size == S and seg.score_threshold == 0.5 and seg.dtype == torch.float32
    assert seg.batch_size == 1  # CPU default
    torch.manual_seed(3)
    reference = type(seg.model)(seg.model.config).state_dict()  # the fixture's seed-3 initialisation
    loaded = seg.model.state_dict()
    assert set(loaded) == set(reference)
    assert all(torch.equal(loaded[k], reference[k]) for k in reference)


def test_loading_is_silent(hub_folder, capfd):
    Sam3Segmenter.from_pretrained(hub_folder, device="cpu")
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""


def test_processor_values_are_read_from_processor_config(tmp_path):
    folder = write_tiny_sam3(tmp_path / "m", layout="model")
    config = json.loads((folder / "processor_config.json").read_text())
    config["image_processor"]["image_mean"] = [0.4, 0.45, 0.5]
    (folder / "processor_config.json").write_text(json.dumps(config))
    prep = Sam3Preprocessing.from_folder(folder)
    assert prep.size == S and prep.image_mean == (0.4, 0.45, 0.5) and prep.image_std == (0.5, 0.5, 0.5)
    (folder / "processor_config.json").unlink()
    assert Sam3Preprocessing.from_folder(folder) == Sam3Preprocessing()  # SAM3's defaults: 1008, 0.5/0.5
    assert Sam3Preprocessing().size == 1008


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("model_type", "not a SAM3 checkpoint"),
        ("no_config", "no config.json"),
        ("no_tokenizer", "CLIP tokenizer"),
        ("missing_weights", "do not match"),
        ("size", "input size 224 differs"),
        ("not_square", "square input size"),
    ],
)
def test_broken_folders_are_one_line_checkpoint_errors(hub_folder, tmp_path, damage, message):
    folder = tmp_path / "broken"
    shutil.copytree(hub_folder, folder)
    config_path, processor_path = folder / "config.json", folder / "processor_config.json"
    if damage == "model_type":
        config = json.loads(config_path.read_text())
        config["model_type"] = "llava_phi"
        config_path.write_text(json.dumps(config))
    elif damage == "no_config":
        config_path.unlink()
    elif damage == "no_tokenizer":
        for name in ("tokenizer.json", "tokenizer_config.json"):
            (folder / name).unlink()
    elif damage == "missing_weights":
        from safetensors.torch import load_file, save_file

        weights = load_file(folder / "model.safetensors")
        weights = {k: v for k, v in weights.items() if "mask_decoder" not in k}
        save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    elif damage in ("size", "not_square"):
        processor = json.loads(processor_path.read_text())
        processor["image_processor"]["size"] = {"height": 224, "width": 224 if damage == "size" else 112}
        processor_path.write_text(json.dumps(processor))
    with pytest.raises(CheckpointError, match=message) as info:
        Sam3Segmenter.from_pretrained(folder, device="cpu")
    assert "\n" not in str(info.value)


def test_missing_folder_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        Sam3Segmenter.from_pretrained(tmp_path / "nowhere")


@pytest.mark.parametrize("value", [-0.1, 1.0, 2, "0.5", True])
def test_score_threshold_is_checked(segmenter, value):
    with pytest.raises(UsageError, match="score threshold"):
        Sam3Segmenter(segmenter.model, segmenter.tokenizer, segmenter.preprocessing, device="cpu",
                      score_threshold=value)



# ------------------------------------------------------------------------------------------------ pre/post
def test_small_chips_are_padded_top_left_with_the_mean_colour():
    prep = Sam3Preprocessing(size=8)
    chip = np.full((3, 5, 3), 255, dtype=np.uint8)
    chip[0, 0] = (0, 0, 0)
    pixels, sizes = prepare_chips([chip], prep, torch.device("cpu"), torch.float32)
    assert pixels.shape == (1, 3, 8, 8) and sizes == [(3, 5)]
    assert torch.all(pixels[0, :, :3, :5].flatten(1)[:, 1:] == 1.0)  # (255/255 - 0.5) / 0.5
    assert torch.all(pixels[0, :, 0, 0] == -1.0)
    assert torch.all(pixels[0, :, 3:, :] == 0) and torch.all(pixels[0, :, :, 5:] == 0)


def test_chip_probabilities_crop_the_canvas_to_the_chip():
    """A mask square at canvas rows/cols [8, 16) of a 32-px canvas comes back at the same chip pixels."""
    size, m = 32, 8  # mask cells of 4 px
    logits = torch.full((1, m, m), -20.0)
    logits[0, 2:4, 2:4] = 20.0  # canvas pixels [8, 16)
    full = chip_probabilities(logits, (size, size), size)
    part = chip_probabilities(logits, (20, 12), size)
    assert full.shape == (1, size, size) and full.dtype == np.float32
    assert part.shape == (1, 20, 12)
    np.testing.assert_array_equal(part[0], full[0, :20, :12])
    rows, cols = np.nonzero(full[0] >= 0.5)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (8, 15, 8, 15)
    assert chip_probabilities(torch.zeros(0, m, m), (5, 7), size).shape == (0, 5, 7)


# ------------------------------------------------------------------------------------------------ segment
def test_one_target_per_instance_and_concept_at_each_chips_size(segmenter):
    chips = _chips((S, S), (60, 90), (S, 17))
    predictions = segmenter.segment(chips, "buildings, swimming pools")
    assert len(predictions) == 3 and all(isinstance(p, ChipPrediction) for p in predictions)
    for chip, prediction in zip(chips, predictions):
        labels = [t.label for t in prediction.targets]
        # threshold 0: every query is an instance, concepts in prompt order
        assert labels == ["buildings"] * TINY_NUM_QUERIES + ["swimming pools"] * TINY_NUM_QUERIES
        for target in prediction.targets:
            assert target.probability.shape == chip.shape[:2] and target.probability.dtype == np.float32
            assert 0.0 <= target.probability.min() and target.probability.max() <= 1.0
            assert isinstance(target.score, float) and 0.0 < target.score < 1.0
        for concept in ("buildings", "swimming pools"):
            scores = [t.score for t in prediction.targets if t.label == concept]
            assert scores == sorted(scores, reverse=True)
        assert prediction.answer.startswith(f"buildings: {TINY_NUM_QUERIES}, swimming pools: {TINY_NUM_QUERIES}")


def test_score_threshold_keeps_only_higher_scores(segmenter):
    chip = _chips((S, S))
    scores = sorted(t.score for t in segmenter.segment(chip, "ships")[0].targets)
    middle = (scores[3] + scores[4]) / 2
    strict = Sam3Segmenter(segmenter.model, segmenter.tokenizer, segmenter.preprocessing, device="cpu",
                           score_threshold=middle)
    kept = strict.segment(chip, "ships")[0]
    assert sorted(t.score for t in kept.targets) == pytest.approx(scores[4:])
    assert kept.answer.startswith("ships: 4 ")
    assert Sam3Segmenter(segmenter.model, segmenter.tokenizer, device="cpu", score_threshold=0.99).segment(
        chip, "ships")[0].targets == []


def test_full_chip_masks_match_the_model_outputs(segmenter):
    """For an S×S chip the probabilities are sigmoid(pred_masks) resized to S (the processor's post-processing)."""
    chip = _chips((S, S), seed=4)
    targets = segmenter.segment(chip, "cars")[0].targets
    tokens = segmenter.tokenizer(["cars"], padding="max_length", max_length=32, return_tensors="pt")
    pixels, _ = prepare_chips(chip, segmenter.preprocessing, torch.device("cpu"), torch.float32)
    with torch.no_grad():
        out = segmenter.model(pixel_values=pixels, input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
    scores = (out.pred_logits.sigmoid() * out.presence_logits.sigmoid())[0]
    order = scores.argsort(descending=True)
    expected = torch.nn.functional.interpolate(out.pred_masks[:, order].sigmoid(), size=(S, S), mode="bilinear",
                                               align_corners=False)[0].numpy()
    np.testing.assert_allclose(np.stack([t.probability for t in targets]), expected, atol=1e-5)
    np.testing.assert_allclose([t.score for t in targets], scores[order].numpy(), atol=1e-6)



def test_text_is_encoded_once_per_prompt_and_special_tokens_stay_text(segmenter):
    segmenter.segment(_chips((20, 20)), "piers, docks")
    first = segmenter._text_cache
    segmenter.segment(_chips((20, 20)), "piers, docks")
    assert segmenter._text_cache is first
    tokens = segmenter.tokenizer(["<|endoftext|> dock"], split_special_tokens=True)["input_ids"][0]
    eos = segmenter.tokenizer.eos_token_id
    assert tokens.count(eos) == 1 and tokens[-1] == eos  # only the real end-of-text id


def test_bfloat16_runs_and_gives_float32_masks(hub_folder):
    seg = Sam3Segmenter.from_pretrained(hub_folder, device="cpu", dtype=torch.bfloat16, score_threshold=0.0)
    assert seg.dtype == torch.bfloat16 and next(seg.model.parameters()).dtype == torch.bfloat16
    target = seg.segment(_chips((S, 40)), "fields")[0].targets[0]
    assert target.probability.dtype == np.float32 and target.probability.shape == (S, 40)



def test_processor_parity(hub_folder, segmenter):
    """Same pixels, ids, scores and masks as transformers' own Sam3Processor (needs torchvision, which README's test
    command installs beside torch; the lowest-versions stage has none, and skips)."""
    pytest.importorskip("torchvision", reason="transformers' Sam3Processor needs torchvision (README's test command "
                                              "installs it beside torch; the lowest-versions stage does not)")
    from transformers import Sam3Processor

    processor = Sam3Processor.from_pretrained(hub_folder)
    chip = _chips((S, S), seed=5)[0]
    inputs = processor(images=chip, text="harbour cranes", return_tensors="pt")
    pixels, _ = prepare_chips([chip], segmenter.preprocessing, torch.device("cpu"), torch.float32)
    torch.testing.assert_close(pixels, inputs["pixel_values"], atol=1e-6, rtol=0)
    with torch.no_grad():
        outputs = segmenter.model(**inputs)
    reference = processor.post_process_instance_segmentation(outputs, threshold=0.2, target_sizes=[(S, S)])[0]
    strict = Sam3Segmenter(segmenter.model, segmenter.tokenizer, segmenter.preprocessing, device="cpu",
                           score_threshold=0.2)
    targets = strict.segment([chip], "harbour cranes")[0].targets
    order = reference["scores"].argsort(descending=True)
    np.testing.assert_allclose([t.score for t in targets], reference["scores"][order].numpy(), atol=1e-5)
    ours = np.stack([t.probability > 0.5 for t in targets])
    theirs = reference["masks"][order].numpy().astype(bool)
    assert ours.shape == theirs.shape and 0.05 < theirs.mean() < 0.95
    assert (ours != theirs).mean() < 1e-3  # float noise may flip a pixel sitting at exactly 0.5
