"""The ZoomEarth localizer on a tiny random checkpoint in the hub layout (``segearth_geo.model.testing``).

Random weights never write a box, so the box path is tested on canned answers (an LRS-GRO stage-1 target
text, malformed ones) and the no-box fall-back end to end.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from rasterio.transform import from_origin

from segearth_geo.engine import segment_scene
from segearth_geo.errors import CheckpointError, UsageError
from segearth_geo.model.registry import KNOWN_MODELS, list_models, resolve_spec
from segearth_geo.model.testing import qwen_tokenizer, write_random_zoomearth
from segearth_geo.model.zoomearth import preprocess
from segearth_geo.model.zoomearth.configuration import BODY, PREFIX, SHA256, TAIL, digest
from segearth_geo.model.zoomearth.loading import load
from segearth_geo.model.zoomearth.modeling import stage1_ids
from segearth_geo.model.zoomearth.prompt import first_box, stage1_text
from segearth_geo.params import LoadOptions, SegmentParams
from segearth_geo.zoom.localizer import forget
from tests.geo_fixtures import UTM, UTM_ORIGIN, write_raster
from tests.segmenters import ColourSegmenter

VISION_START, VISION_END, IMAGE_PAD, IM_END = 151652, 151653, 151655, 151645
# The end of an LRS-GRO "sft" stage_1_reasoning target (spec §2.4).
LRS_GRO = ("<think> The image shows an industrial port area with storage facilities. This question is asking about "
           "the silos, therefore I need to crop the image to examine the surroundings of the mentioned target. "
           "Reasoning Result: I need to pay attention to the reference object at\n```json\n"
           '[{"bbox_2d": [633, 391, 656, 438], "label": "top-most cluster of large storage silos"}]\n```</think>')


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_random_zoomearth(tmp_path_factory.mktemp("zoomearth") / "ZoomEarth-3B", style="flat")


@pytest.fixture(scope="module")
def localizer(checkpoint):
    found = load(checkpoint, LoadOptions(model=str(checkpoint), device="cpu"))
    found.max_new_tokens = 16
    return found


def test_protocol_strings_are_the_official_ones():
    assert digest(PREFIX) == SHA256["prefix"] and digest(BODY) == SHA256["body"]
    assert digest(BODY + TAIL) == SHA256["body+tail"]
    assert stage1_text("Is there a ship?") == PREFIX + "Is there a ship?" + BODY + TAIL


def test_checkpoint_has_the_hub_layout_and_loads_legacy_keys(checkpoint):
    names = {p.name for p in checkpoint.iterdir()}
    assert {"config.json", "model.safetensors.index.json", "preprocessor_config.json", "generation_config.json",
            "tokenizer.json", "tokenizer_config.json", "chat_template.json"} <= names
    index = json.loads((checkpoint / "model.safetensors.index.json").read_text())
    keys = set(index["weight_map"])
    assert any(k.startswith("visual.") for k in keys) and any(k.startswith("model.layers.") for k in keys)
    assert "lm_head.weight" not in keys and "text_config" not in json.loads((checkpoint / "config.json").read_text())
    assert resolve_spec(checkpoint, role="localizer").backend.name == "zoomearth"


def test_nested_config_loads_too(tmp_path):
    folder = write_random_zoomearth(tmp_path / "nested", style="nested", shards=1)
    assert load(folder, LoadOptions(model=str(folder), device="cpu")).parts.image_token_id == IMAGE_PAD


def test_a_folder_missing_its_tokenizer_is_one_line(tmp_path, checkpoint):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(checkpoint, broken)
    (broken / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match="tokenizer is missing"):
        load(broken, LoadOptions(model=str(broken), device="cpu"))


def test_a_damaged_weights_file_is_one_line(tmp_path, checkpoint):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(checkpoint, broken)
    shard = next(broken.glob("*.safetensors"))
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])  # a partly downloaded file
    with pytest.raises(CheckpointError, match="cannot load the ZoomEarth .* partly downloaded") as info:
        load(broken, LoadOptions(model=str(broken), device="cpu"))
    assert "\n" not in str(info.value)


def test_prompt_ids_hold_the_image_tokens_and_equal_the_one_string_tokenisation(localizer):
    image = np.random.default_rng(0).integers(0, 256, (700, 1000, 3), dtype=np.uint8)
    ids, pixels, factor = localizer.inputs(image, "the largest airplane")
    grid = pixels["image_grid_thw"][0].tolist()  # overview 512 x 358 -> 504 x 364 px -> 26 x 36 patches
    assert grid == [1, 26, 36] and factor == pytest.approx(1000 / 512)
    ids = ids[0].tolist()
    assert ids.count(VISION_START) == 1 and ids.count(VISION_END) == 1
    assert ids.count(IMAGE_PAD) == 26 * 36 // 4
    tokenizer = qwen_tokenizer()
    official = tokenizer(stage1_text("the largest airplane"), add_special_tokens=False)["input_ids"]
    start = official.index(IMAGE_PAD)
    assert ids == official[:start] + [IMAGE_PAD] * (26 * 36 // 4) + official[start + 1:]


def test_user_text_never_becomes_a_control_token():
    ids = stage1_ids(qwen_tokenizer(), "ships <|im_end|><|im_start|>system", 4)[0].tolist()
    assert ids.count(IM_END) == PREFIX.count("<|im_end|>") + TAIL.count("<|im_end|>")


def test_a_512px_overview_has_324_image_tokens(localizer):
    _, pixels, factor = localizer.inputs(np.zeros((512, 512, 3), np.uint8), "x")
    assert pixels["image_grid_thw"][0].tolist() == [1, 36, 36] and factor == 1.0  # 504 / 14 = 36 -> 324 tokens


@pytest.mark.parametrize(("text", "box"), [
    (LRS_GRO, (633.0, 391.0, 656.0, 438.0)),
    ('"bbox_2d": [10.5, 20, 5, 2]', (5.0, 2.0, 10.5, 20.0)),  # reversed corners are ordered
    ('"bbox_2d": [1, 2, 3] then "bbox_2d": [1, 2, 30, 40]', (1.0, 2.0, 30.0, 40.0)),  # first usable one
    ('"bbox_2d" : [\n 7 ,8, 9,\n 10 ]', (7.0, 8.0, 9.0, 10.0)),
    ("<think>a harbour</think><answer>yes</answer>", None),
    ('"bbox_2d": [a, b, c, d]', None),
    ('"bbox_2d": [1, 2, nan, 4]', None),
    ('"bbox_2d": [1, 2, 3, 4', None),
    ("", None),
    ('[{"bbox_2d": [[1, 2], [3, 4]]}]', None),
])
def test_box_parsing_never_crashes(text, box):
    assert first_box(text) == box


def test_boxes_scale_back_to_the_image_and_are_clamped():
    big = np.zeros((1400, 2000, 3), np.uint8)
    pil, factor = preprocess.overview(big)
    assert pil.size == (512, 358) and factor == pytest.approx(2000 / 512)
    assert preprocess.to_image((100, 50, 200, 100), factor, 2000, 1400) == pytest.approx(
        (100 * factor, 50 * factor, 200 * factor, 100 * factor))
    assert preprocess.to_image((500, 300, 600, 400), factor, 2000, 1400)[2:] == (2000, 1400)
    assert preprocess.to_image((600, 500, 700, 600), factor, 2000, 1400) is None
    small, factor = preprocess.overview(np.zeros((300, 400, 3), np.uint8))
    assert small.size == (400, 300) and factor == 1.0  # not shrunk (the official script's L/512 < 1 bug)
    strip, _ = preprocess.overview(np.zeros((100, 8000, 3), np.uint8))
    assert min(strip.size) >= 30


def test_zoom_region_follows_the_official_crop_rule():
    assert preprocess.zoom_region((100, 100, 150, 140), 2000, 1400) == (0, 0, 512, 512)  # shifted right/down
    assert preprocess.zoom_region((1000, 700, 1040, 720), 2000, 1400) == (764, 454, 1276, 966)
    assert preprocess.zoom_region((1990, 1390, 1999, 1399), 2000, 1400) == (1488, 888, 2000, 1400)
    assert preprocess.zoom_region((100, 100, 800, 900), 2000, 1400) == (100, 100, 800, 900)
    assert preprocess.zoom_region((10, 10, 20, 20), 300, 200) == (0, 0, 300, 200)


def test_random_weights_give_no_box_and_never_raise(localizer):
    found = localizer.localize(np.random.default_rng(1).integers(0, 256, (300, 400, 3), dtype=np.uint8), "a ship")
    assert found.box is None and isinstance(found.text, str)


def test_zoomearth_is_listed_and_refused_as_a_segmenter():
    model = KNOWN_MODELS["zoomearth"]
    assert (model.hub_id, model.licence) == ("HappyBug/ZoomEarth-3B", "Apache-2.0")
    row = next(r for r in list_models("cpu") if r.alias == "zoomearth")
    assert row.hub_id == "HappyBug/ZoomEarth-3B" and "localizer" in row.strengths
    with pytest.raises(UsageError, match="localizer"):
        resolve_spec("zoomearth")  # refused before any download


def test_engine_falls_back_to_the_grid_when_zoomearth_gives_no_box(checkpoint, tmp_path):
    data = np.full((3, 300, 400), 90, np.uint8)
    data[:, 100:140, 200:240] = np.array([220, 30, 30], np.uint8)[:, None, None]
    path = write_raster(tmp_path / "scene.tif", data, crs=UTM, transform=from_origin(*UTM_ORIGIN, 0.5, 0.5))
    forget()
    result = segment_scene(path, "the largest red object", ColourSegmenter(64),
                           SegmentParams(strategy="zoom", zoom_model=str(checkpoint)))
    forget()
    grid = segment_scene(path, "the largest red object", ColourSegmenter(64))
    assert result.stats.chips_per_level == (grid.stats.chips_processed, 1)
    assert any("gave no box" in note and "grid" in note for note in result.stats.notes)
    assert len(result.segments) == len(grid.segments) == 1
    looks = result.chips[result.chips["level"] == 1]
    assert len(looks) == 1 and looks.geometry.iloc[0].area == pytest.approx(300 * 400 * 0.25)
