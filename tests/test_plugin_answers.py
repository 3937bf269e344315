"""The plugin's answer, label and message logic (pure Python: runs without QGIS)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

PLUGIN = Path(__file__).resolve().parents[1] / "qgis_plugin"
# The sam3 error of an offline machine, as the engine words it (about 600 characters).
OFFLINE_SAM3 = (
    "the engine failed to start: cannot fetch 'facebook/sam3' (config.json, weights, tokenizer files) from the "
    "Hugging Face Hub and there is no local folder of that name (not in the local cache (LocalEntryNotFoundError); "
    "download failed: LocalEntryNotFoundError: Got: ConnectError: [Errno -2] Name or service not known); cache: "
    "/root/.cache/huggingface/hub. To download (a gated model: accept its licence on huggingface.co first): go "
    "online, set HF_TOKEN or run `hf auth login` (`huggingface-cli login`), then `hf download facebook/sam3`; or "
    "pass a local checkpoint folder")


@pytest.fixture(scope="module")
def core():
    sys.path.insert(0, str(PLUGIN))
    try:
        from segearth_qgis.core import answers, messages, parameters, result

        yield answers, messages, parameters, result
    finally:
        sys.path.remove(str(PLUGIN))


@pytest.mark.parametrize(("raw", "shown"), [
    ("Here is the <p>road</p> [SEG].", "Here is the road."),
    ("Sure, <p>red roof</p> [SEG] and <p>pool</p> [SEG].", "Sure, red roof and pool."),
    ("<image>\nIt is <p>the grey storage tank</p> [SEG] .</s>", "It is the grey storage tank."),
    ("<|im_start|>The runway [SEG]<|endoftext|>", "The runway"),
    ("[SEG]", ""),
    ("SAM3 found: red roofs: 0, pools: 0", "SAM3 found: red roofs: 0, pools: 0"),  # no markup: unchanged
    ("a < b and c > d", "a < b and c > d"),  # not a tag
])
def test_answers_are_shown_without_markup(core, raw, shown):
    answers = core[0]
    assert answers.clean_answer(raw) == shown


def test_answer_lines_drop_repeats_and_empty_answers(core):
    answers = core[0]
    raw = ["Sure, <p>pool</p> [SEG].", "Sure, <p>pool</p>  [SEG] .", "[SEG]", "", "It is <p>road</p> [SEG]."]
    assert answers.answer_lines(raw) == ["Sure, pool.", "It is road."]


def test_labels_the_prompt_does_not_name_are_reported(core):
    answers = core[0]
    assert answers.unexpected_labels("all the airplanes", ["car", "road", "airplane"]) == ["car", "road"]
    note = answers.label_note("all the airplanes", ["car", "road"])
    assert "“car”, “road”" in note and "“all the airplanes”" in note and "something else" in note
    assert answers.label_note("Please segment all of the airplanes.", ["airplane"]) is None
    assert answers.label_note("segment the red roofs and the pools", {"red roof": 1, "pool": 2}) is None
    assert answers.label_note("where are the planes?", ["airplane"]) is None  # the end of a compound
    assert answers.label_note("buses and cities", ["bus", "city"]) is None  # plurals
    assert answers.label_note("the houses", ["house"]) is None
    assert answers.label_note("segment everything", ["object"]) is None  # a label that names nothing
    assert answers.label_note("buildings", []) is None
    assert answers.unexpected_labels("grass", ["glass"]) == ["glass"]


def test_long_errors_become_one_short_line_with_the_full_text_left_for_the_log(core):
    messages = core[1]
    short = messages.short_message(OFFLINE_SAM3)
    assert len(short) <= messages.MESSAGE_LIMIT
    assert short == ("The engine failed to start: cannot fetch 'facebook/sam3' from the Hugging Face Hub and there is "
                     "no local folder of that name; cache: /root/.cache/huggingface/hub.")
    bar = messages.bar_message(OFFLINE_SAM3)
    assert bar.startswith(short.rstrip(".")) and bar.endswith("details in the SegEarth log panel.")
    one_line = "engine program '/x/segearth-geo' not found; install the engine with 'pip install segearth-geo'"
    assert messages.bar_message(one_line) == one_line[0].upper() + one_line[1:]  # short: shown whole
    assert messages.bar_message("first line\nTraceback ...") == "First line — details in the SegEarth log panel."
    words = "word " * 100
    cut = messages.short_message(words)
    assert cut.endswith("…") and len(cut) <= messages.MESSAGE_LIMIT and " wor…" not in cut


def test_run_options_become_request_fields(core):
    parameters = core[2]
    fields = parameters.request_options({"gsd": 0.0, "threshold": 0.4, "min_area": 25, "simplify": 0.0})
    assert fields == {"threshold": 0.4, "min_area": 25.0}  # unset ones are left out: the engine's defaults apply
    assert [o.name for o in parameters.RUN_OPTIONS] == ["gsd", "strategy", "threshold", "min_area", "simplify",
                                                         "regularize", "smooth", "regularize_iou", "zoom_model",
                                                         "min_coverage"]
    params = parameters.SegmentParameters(raster="/r.tif", prompt="p", output="/o.gpkg", bbox=(1, 2, 3, 4),
                                          bbox_crs="EPSG:32633", options=fields, gsd=0.5)
    assert params.to_request() == {"raster": "/r.tif", "prompt": "p", "output": "/o.gpkg", "bbox": [1.0, 2.0, 3.0, 4.0],
                                   "bbox_crs": "EPSG:32633", "threshold": 0.4, "min_area": 25.0}
    extra = (parameters.RunOption("strategy", "Strategy", "choice", "grid", choices=("grid", "zoom", "auto")),
             parameters.RunOption("smooth", "Smooth", "flag", False),
             parameters.RunOption("zoom_model", "Zoom model", "text", ""),
             parameters.RunOption("overlap", "Overlap", "int", -1, minimum=-1, unset=-1))
    assert parameters.request_options({"strategy": "zoom", "smooth": True, "zoom_model": " ", "overlap": 64.0},
                                      extra) == {"strategy": "zoom", "smooth": True, "overlap": 64}
    with pytest.raises(ValueError, match="kind must be one of"):
        parameters.RunOption("x", "X", "slider")


def test_a_result_reply_gives_notes_and_the_label_note(core):
    result = core[3]
    reply = {"output": "/o.gpkg", "layer": "segments", "polygons": {"car": 2, "road": 1},
             "answers": [{"chip": 0, "answer": "Here is the <p>road</p> [SEG]."}],
             "notes": ["the scene's ground resolution (30 m/px) is far coarser than what demo was trained on"],
             "notice": "synthetic demo — not for real imagery"}
    parsed = result.SegmentResult.from_reply(reply)
    assert parsed.notice == "synthetic demo — not for real imagery" and parsed.count == 3
    remarks = parsed.remarks("all the airplanes")
    assert remarks[0] == reply["notes"][0] and "“car”, “road”" in remarks[1] and len(remarks) == 2
    assert result.SegmentResult.from_reply({"output": "/o.gpkg", "notes": None}).remarks("x") == []
