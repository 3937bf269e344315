"""The evaluation loop end to end: fixture dataset → test segmenters → gIoU / cIoU."""

from __future__ import annotations

import json

import numpy as np
import pytest
from data_fixtures import ColourPredictor, RedSegmenter, write_eval_lasers

from segearth_geo.data import open_dataset
from segearth_geo.errors import ModelError, UsageError
from segearth_geo.evaluation import evaluate
from segearth_geo.prediction import ChipPrediction, Target

# Hand-computed from the fixture (see data_fixtures.py): red-only predictions give target
# IoUs s1: 16/32, s2: 16/16 and 0/8 (second mask missing → empty), s3: 0/4.
GENERATE_GIOU = (0.5 + 1 + 0 + 0) / 4
GENERATE_CIOU = (16 + 16) / (32 + 16 + 8 + 4)


@pytest.fixture()
def reader(tmp_path):
    return open_dataset("synthearth", write_eval_lasers(tmp_path / "synth"), "test")


def test_plain_segmenter_generate(reader):
    segmenter = RedSegmenter()
    result = evaluate(segmenter, reader, batch_size=2)
    assert segmenter.calls == [1, 1, 1]  # no predict(): one segment() call per sample
    assert result.giou == pytest.approx(GENERATE_GIOU) and result.ciou == pytest.approx(GENERATE_CIOU)
    assert result.n == 4 and [s.id for s in result.samples] == ["s1", "s2", "s3"]
    assert result.samples[1].ious == [1.0, 0.0] and result.samples[1].n_predicted == 1
    semantic, instance = result.per_dimension["semantic"], result.per_dimension["instance"]
    assert (semantic.giou, semantic.ciou, semantic.n) == pytest.approx((0.25, 16 / 36, 2))
    assert (instance.giou, instance.ciou, instance.n) == pytest.approx((0.5, 16 / 24, 2))
    assert list(result.per_dimension) == ["semantic", "instance", "single", "multiple", "explicit", "implicit",
                                          "short", "long"]
    table = result.to_markdown()
    assert "| overall | 37.50 | 53.33 | 4 |" in table and "| instance | 50.00 | 66.67 | 2 |" in table


def test_batched_predict_and_teacher_forcing(reader):
    predictor = ColourPredictor()
    generated = evaluate(predictor, reader, batch_size=2)
    assert predictor.calls == [2, 1]
    assert generated.giou == pytest.approx(GENERATE_GIOU)
    forced = evaluate(predictor, reader, batch_size=8, mode="teacher-forced")
    # the reference answer of s2 has two [SEG]: the second (green) target now matches: 0/8 → 8/8
    assert forced.giou == pytest.approx((0.5 + 1 + 1 + 0) / 4)
    assert forced.ciou == pytest.approx((16 + 16 + 8) / (32 + 16 + 8 + 4))
    assert forced.samples[1].answer == "<p>court</p> [SEG] and <p>court</p> [SEG]."


def test_teacher_forcing_needs_predict(reader):
    with pytest.raises(UsageError, match="teacher-forced"):
        evaluate(RedSegmenter(), reader, mode="teacher-forced")
    with pytest.raises(UsageError, match="mode"):
        evaluate(RedSegmenter(), reader, mode="sampled")
    with pytest.raises(UsageError, match="batch"):
        evaluate(RedSegmenter(), reader, batch_size=0)


def test_limit_and_json(reader, tmp_path):
    result = evaluate(RedSegmenter(), reader, limit=1)
    assert [s.id for s in result.samples] == ["s1"] and result.giou == pytest.approx(0.5)
    path = result.write_json(tmp_path / "r.json")
    data = json.loads(path.read_text())
    assert data["giou"] == pytest.approx(0.5) and data["ciou"] == pytest.approx(0.5)
    assert data["per_dimension"]["semantic"] == {"giou": 0.5, "ciou": 0.5, "n": 1}
    assert data["samples"][0]["ious"] == [0.5] and data["samples"][0]["intersections"] == [16]


class _WrongSize(RedSegmenter):
    def segment(self, chips, prompt):
        return [ChipPrediction("[SEG]", [Target("x", np.ones((3, 3), np.float32))]) for _ in chips]


def test_wrong_mask_size_is_a_model_error(reader):
    with pytest.raises(ModelError, match="mask"):
        evaluate(_WrongSize(), reader)


def test_probability_threshold_is_strictly_above_half(reader):
    class Half(RedSegmenter):
        def segment(self, chips, prompt):
            return [ChipPrediction("[SEG]", [Target("x", np.full(c.shape[:2], 0.5, np.float32))]) for c in chips]

    result = evaluate(Half(), reader)
    assert all(s.intersection == 0 for r in result.samples for s in r.scores)


def test_nothing_loadable_is_a_dataset_error(tmp_path):
    from data_fixtures import box, write_lasers

    from segearth_geo.errors import DatasetError

    (tmp_path / "test" / "images").mkdir(parents=True)
    (tmp_path / "test" / "images" / "x.png").write_bytes(b"\x89PNG broken")
    write_lasers(tmp_path, "test", [{"id": 1, "image_name": "x.png", "description": "q", "answer": "[SEG]",
                                     "masks": [box(0, 1, 0, 1)]}])
    reader = open_dataset("lasers", tmp_path, "test")
    with pytest.raises(DatasetError, match="unreadable_image"):
        evaluate(RedSegmenter(), reader)


def test_images_larger_than_chip_size_are_fitted_and_masks_restored(reader):
    class SmallChips(RedSegmenter):
        chip_size = 6

        def segment(self, chips, prompt):
            self.calls.append(chips[0].shape)
            return [ChipPrediction("[SEG]", [Target("x", (c[..., 0] > 127).astype(np.float32))]) for c in chips]

    segmenter = SmallChips()
    result = evaluate(segmenter, reader)
    assert segmenter.calls == [(4, 6, 3)] * 3  # 8×12 images shrunk to long side 6
    # the red blocks lie on even pixel boundaries, so a 2× down/up round trip keeps them exactly:
    # same target counts as at full resolution (see GENERATE_* above)
    assert [[(s.intersection, s.union) for s in r.scores] for r in result.samples] == [
        [(16, 32)], [(16, 16), (0, 8)], [(0, 4)]]
    assert result.giou == pytest.approx(GENERATE_GIOU)


def test_tiny_segearth_r2_end_to_end(reader):
    """The real SegEarthR2Segmenter (tiny random model) through evaluate(): teacher forcing yields
    one mask per reference [SEG], at the image's size, independent of the batch size."""
    import torch
    from model_fixtures import tiny_model_and_tokenizer

    from segearth_geo.model.segearth_r2.segmenter import SegEarthR2Segmenter

    torch.set_num_threads(1)
    model, tokenizer = tiny_model_and_tokenizer(steer=True)
    segmenter = SegEarthR2Segmenter(model, tokenizer, device="cpu")
    forced = evaluate(segmenter, reader, batch_size=3, mode="teacher-forced")
    assert [r.n_predicted for r in forced.samples] == [1, 2, 1]
    assert all(s.union >= s.intersection >= 0 and s.union <= 8 * 12 for r in forced.samples for s in r.scores)
    single = evaluate(segmenter, reader, batch_size=1, mode="teacher-forced")
    assert [r.scores for r in single.samples] == [r.scores for r in forced.samples]
    generated = evaluate(segmenter, reader, batch_size=2)
    assert [r.n_predicted for r in generated.samples] == [r.answer.count("[SEG]") for r in generated.samples]


def test_evaluate_is_the_function_whichever_import_comes_first():
    """``evaluation.evaluate`` names a submodule and a function; the package must export the function."""
    import subprocess
    import sys

    code = ("import segearth_geo.evaluation.evaluate\n"
            "from segearth_geo.evaluation import evaluate\n"
            "assert callable(evaluate) and evaluate.__name__ == 'evaluate', evaluate\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
