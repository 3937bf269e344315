"""SegEarth-R1 prompt, letterbox, crop-back geometry and the Segmenter (tiny model, CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from r1_fixtures import tiny_r1_model, tiny_r1_tokenizer

from segearth_geo.errors import UsageError
from segearth_geo.model.segearth_r1.preprocess import (
    letterbox_geometry,
    letterbox_image,
    resize_bilinear_u8,
    uncrop_logits,
)
from segearth_geo.model.segearth_r1.prompt import ANSWER_TEXT, SYSTEM, encode_prompt, prompt_label, prompt_text
from segearth_geo.model.segearth_r1.segmenter import SegEarthR1Segmenter
from segearth_geo.prediction import Segmenter

MEAN, STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)


@pytest.fixture(scope="module")
def segmenter():
    return SegEarthR1Segmenter(tiny_r1_model(seed=5), tiny_r1_tokenizer(), device="cpu", batch_size=4)


def _chips(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    shapes = [(256, 256), (100, 60), (37, 250), (256, 180), (1, 1)]
    return [rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) for h, w in shapes]


# ---------------------------------------------------------------------------------------------- prompt
def test_prompt_text_is_the_official_template():
    referring = prompt_text("referring")
    assert referring == (
        "[INST] <<SYS>>\n" + SYSTEM + "\n<</SYS>>\n\nThis is an image <image>, Please doing Referring "
        "Segmentation according to the following instruction:\n<refer>")
    assert "Please doing Reasoning Segmentation" in prompt_text("reasoning")
    with pytest.raises(UsageError, match="unknown SegEarth-R1 template"):
        prompt_text("captioning")


def test_prompt_ids_pieces_leading_space_and_seg():
    tokenizer = tiny_r1_tokenizer()
    seg = tokenizer.convert_tokens_to_ids("[SEG]")
    encoded = encode_prompt(tokenizer, "  the grey   tank ", "referring", seg_token_id=seg)
    head = "[INST] <<SYS>>\n" + SYSTEM + "\n<</SYS>>\n\nThis is an image "
    middle = ", Please doing Referring Segmentation according to the following instruction:\n"
    expected = (tokenizer.encode(head, add_special_tokens=False) + [-200]
                + tokenizer.encode(middle, add_special_tokens=False) + [-204])
    assert encoded.input_ids == expected  # no BOS, pieces encoded separately, nothing after <refer>
    assert encoded.refer_ids == tokenizer.encode(" the grey tank", add_special_tokens=False) + [seg]
    with pytest.raises(UsageError, match="empty"):
        encode_prompt(tokenizer, "   ", "referring", seg_token_id=seg)


@pytest.mark.parametrize("prompt,label", [
    ("water", "water"),
    ("buildings.", "buildings"),
    ("segment the buildings next to the road", "buildings"),
    ("Please find all the white storage tanks near the harbour", "white storage tanks"),
    ("the grey car on the left", "grey car"),
    ("Where could a small plane land?", "Where could a small plane land"),
])
def test_label_is_the_prompt_noun_phrase(prompt, label):
    assert prompt_label(prompt) == label


# ---------------------------------------------------------------------------------------------- letterbox
def test_letterbox_geometry_floors_and_centres():
    box = letterbox_geometry(100, 60, 1024)  # portrait: height → 1024, width floor(60·10.24) = 614
    assert box.resized_hw == (1024, 614) and box.offset == (0, 205)
    box = letterbox_geometry(333, 1000, 1024)  # landscape: floor(333·1.024) = 340 (not round → 341)
    assert box.resized_hw == (340, 1024) and box.offset == (342, 0)
    assert letterbox_geometry(800, 800, 1024).resized_hw == (1024, 1024)  # upscaling allowed


# cv2.resize(IMAGE, (9, 7)) and (3, 2) with INTER_LINEAR, recorded with opencv-python-headless 5.0.0.
_BASE = np.arange(20).reshape(4, 5) * 53 % 256
IMAGE = np.stack([_BASE, 255 - _BASE, _BASE * 7 % 256], -1).astype(np.uint8)
CV2_UP = [[[0, 255, 0], [18, 237, 38], [47, 208, 102], [76, 178, 166], [106, 149, 230], [135, 119, 152], [165, 90, 102], [194, 61, 166], [212, 43, 204]], [[3, 252, 22], [21, 234, 61], [50, 204, 124], [80, 175, 148], [109, 146, 161], [139, 116, 134], [168, 87, 114], [197, 57, 127], [215, 40, 135]], [[8, 246, 59], [26, 229, 97], [55, 199, 161], [85, 170, 119], [114, 141, 51], [144, 111, 104], [173, 82, 134], [203, 52, 66], [220, 35, 25]], [[14, 242, 95], [31, 224, 133], [61, 194, 197], [90, 165, 147], [120, 136, 69], [149, 106, 132], [178, 77, 168], [208, 47, 90], [226, 30, 43]], [[18, 236, 130], [36, 218, 163], [66, 189, 216], [95, 160, 173], [124, 130, 104], [154, 101, 158], [183, 71, 187], [213, 42, 119], [231, 24, 78]], [[24, 231, 166], [41, 213, 150], [71, 184, 122], [100, 155, 127], [130, 125, 140], [159, 96, 113], [189, 66, 93], [218, 37, 106], [236, 19, 114]], [[27, 228, 189], [45, 210, 142], [74, 181, 64], [103, 151, 99], [133, 122, 163], [162, 92, 85], [192, 63, 35], [221, 33, 98], [239, 16, 137]]]  # noqa: E501
CV2_DOWN = [[[22, 233, 70], [111, 145, 134], [199, 56, 112]], [[40, 215, 153], [129, 127, 132], [217, 38, 110]]]


def test_resize_is_opencv_inter_linear_bit_for_bit():
    np.testing.assert_array_equal(resize_bilinear_u8(IMAGE, 7, 9), np.array(CV2_UP, dtype=np.uint8))
    np.testing.assert_array_equal(resize_bilinear_u8(IMAGE, 2, 3), np.array(CV2_DOWN, dtype=np.uint8))
    flat = np.full((5, 3, 3), 77, dtype=np.uint8)
    assert (resize_bilinear_u8(flat, 40, 24) == 77).all()


def test_letterbox_image_places_pixels_and_pads_with_black():
    chip = np.zeros((64, 32, 3), dtype=np.uint8)
    chip[:, :16] = (255, 0, 0)  # left half red
    canvas, box = letterbox_image(chip, 128, MEAN, STD)
    assert box.resized_hw == (128, 64) and box.offset == (0, 32)
    raw = canvas * torch.tensor(STD)[:, None, None] + torch.tensor(MEAN)[:, None, None]  # back to 0-255
    assert torch.allclose(raw[:, :, :32], torch.zeros(3, 128, 32), atol=1e-3)  # left padding: value 0
    assert torch.allclose(raw[:, :, 96:], torch.zeros(3, 128, 32), atol=1e-3)  # right padding
    assert torch.allclose(raw[0, :, 32:63], torch.full((128, 31), 255.0), atol=1e-3)  # red, resized ×2
    assert torch.allclose(raw[0, :, 66:96], torch.zeros(128, 30), atol=1e-3)
    with pytest.raises(UsageError, match="uint8 RGB"):
        letterbox_image(chip.astype(np.float32), 128, MEAN, STD)


def test_crop_back_puts_masks_on_the_chip_pixels_of_a_non_square_chip():
    """A canvas mask drawn at the letterboxed position of a chip rectangle comes back on that rectangle."""
    height, width, canvas = 90, 200, 256
    box = letterbox_geometry(height, width, canvas)
    top, left = box.offset
    scale_y, scale_x = box.resized_hw[0] / height, box.resized_hw[1] / width
    rows, cols = slice(30, 70), slice(120, 180)  # the target in chip pixels
    side = canvas // 4
    yy, xx = np.meshgrid((np.arange(side) + 0.5) * 4, (np.arange(side) + 0.5) * 4, indexing="ij")  # canvas px
    chip_y, chip_x = (yy - top) / scale_y, (xx - left) / scale_x
    inside = (chip_y >= rows.start) & (chip_y < rows.stop) & (chip_x >= cols.start) & (chip_x < cols.stop)
    logits = torch.from_numpy(np.where(inside, 8.0, -8.0)).float()[None, None]  # [1, 1, S/4, S/4]
    mask = (uncrop_logits(logits, box)[0] > 0).numpy()
    assert mask.shape == (height, width)
    truth = np.zeros((height, width), dtype=bool)
    truth[rows, cols] = True
    iou = (mask & truth).sum() / (mask | truth).sum()
    assert iou > 0.9
    # R2's top-left crop on the same canvas misses by the letterbox offset.
    from segearth_geo.model.parts.crop_back import crop_back

    shifted = (crop_back(logits, box.resized_hw, box.original_hw, canvas)[0] > 0).numpy()
    assert (shifted & truth).sum() / (shifted | truth).sum() < 0.5


# ---------------------------------------------------------------------------------------------- segmenter
def test_segment_returns_one_sigmoid_target_per_chip(segmenter):
    assert isinstance(segmenter, Segmenter) and segmenter.chip_size == 256
    chips = _chips()
    results = segmenter.segment(chips, "segment the buildings next to the road")
    assert len(results) == len(chips)
    logits, boxes = segmenter.mask_logits(chips[:2], ["segment the buildings next to the road"] * 2)
    for b, (chip, result) in enumerate(zip(chips, results)):
        assert result.answer == ANSWER_TEXT
        assert [t.label for t in result.targets] == ["buildings"]
        probability = result.targets[0].probability
        assert probability.shape == chip.shape[:2] and probability.dtype == np.float32
        assert 0.0 <= probability.min() and probability.max() <= 1.0
        if b < 2:
            expected = torch.sigmoid(uncrop_logits(logits[b:b + 1], boxes[b]))[0].numpy()
            np.testing.assert_allclose(probability, expected, atol=1e-6)



def test_prompt_and_template_change_the_mask(segmenter):
    chip = _chips()[0]
    a = segmenter.predict([chip, chip], ["water", "buildings"])
    assert np.abs(a[0].targets[0].probability - a[1].targets[0].probability).max() > 1e-4
    reasoning = SegEarthR1Segmenter(segmenter.model, segmenter.tokenizer, device="cpu", template="reasoning")
    b = reasoning.predict([chip], ["water"])
    assert np.abs(a[0].targets[0].probability - b[0].targets[0].probability).max() > 1e-4


def test_predict_accepts_images_larger_than_the_canvas(segmenter):
    big = np.random.default_rng(2).integers(0, 256, size=(300, 520, 3), dtype=np.uint8)
    result = segmenter.predict([big], ["water"])[0]
    assert result.targets[0].probability.shape == (300, 520)
