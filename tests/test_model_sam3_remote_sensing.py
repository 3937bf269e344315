"""SAM3 for remote sensing (after SegEarth-OV3 and ProC-SAM3) on the tiny random checkpoint: synonyms, the presence
gate, the semantic head and their fusion. Mechanics, shapes, gating and determinism; quality needs real weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segearth_geo.errors import UsageError
from segearth_geo.model.loading import load_segmenter
from segearth_geo.model.sam3 import Sam3Segmenter
from segearth_geo.model.sam3.preprocess import chip_probabilities, prepare_chips
from segearth_geo.model.sam3.prompt import concept_queries, split_concepts
from tests.sam3_fixtures import TINY_IMAGE_SIZE, write_tiny_sam3

S = TINY_IMAGE_SIZE


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_tiny_sam3(tmp_path_factory.mktemp("sam3rs") / "hub", layout="hub")


@pytest.fixture(scope="module")
def base(folder):
    return Sam3Segmenter.from_pretrained(folder, device="cpu", score_threshold=0.0)


def _like(base, **kwargs) -> Sam3Segmenter:
    return Sam3Segmenter(base.model, base.tokenizer, base.preprocessing, device="cpu",
                         **({"score_threshold": 0.0} | kwargs))


def _chips(*shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*shape, 3), dtype=np.uint8) for shape in shapes]


def _presence(seg: Sam3Segmenter, chip: np.ndarray, name: str) -> tuple[float, torch.Tensor]:
    """The model's own presence probability and semantic logits ``[1,m,m]`` for one chip (padded as the segmenter
    pads it) and name."""
    pixels, _ = prepare_chips([chip], seg.preprocessing, torch.device("cpu"), torch.float32)
    tokens = seg.tokenizer([name], padding="max_length", max_length=seg.max_text_length, return_tensors="pt")
    with torch.no_grad():
        out = seg.model(pixel_values=pixels, input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
    return float(out.presence_logits.sigmoid()[0, 0]), out.semantic_seg[0]


def test_synonyms_are_one_concept_and_commas_still_separate():
    assert concept_queries("building|roof|house, tree | forest ;water") == [("building", "roof", "house"),
                                                                           ("tree", "forest"), ("water",)]
    assert concept_queries("find all the roofs|the houses") == [("roofs", "houses")]
    assert concept_queries("roof|Roof|roof, roofs") == [("roof",), ("roofs",)]
    assert split_concepts("building|roof, pools") == ["building", "pools"]
    with pytest.raises(UsageError, match="synonyms of one concept"):
        concept_queries(" | , |")


def test_synonym_masks_are_the_names_own_masks_under_the_concepts_label(base):
    chip = _chips((S, S - 9))
    both = base.segment(chip, "roof|house")[0].targets
    roof = base.segment(chip, "roof")[0].targets
    house = base.segment(chip, "house")[0].targets
    assert {t.label for t in both} == {"roof"} and len(both) == len(roof) + len(house) > 0
    want = sorted([(t.score, t.probability.tobytes()) for t in roof + house], key=lambda x: -x[0])
    got = [(t.score, t.probability.tobytes()) for t in both]
    assert [g[0] for g in got] == pytest.approx([w[0] for w in want], abs=1e-6)
    assert all(t.probability.shape == (S, S - 9) for t in both)


def test_text_features_are_kept_per_name(base):
    seg = _like(base)
    seg.segment(_chips((20, 20)), "roof|house")
    house = seg._names["house"][0]
    calls = []
    original = seg.tokenizer

    def counting(texts, **kwargs):
        calls.append(list(texts))
        return original(texts, **kwargs)

    seg.tokenizer = counting
    try:
        seg.segment(_chips((20, 20)), "house|hut, roof")
    finally:
        seg.tokenizer = original
    assert calls == [["hut"]]  # only the new name went through the text encoder
    assert seg._names["house"][0] is house


def test_presence_gate_drops_absent_concepts(base):
    chip = _chips((S, S), seed=4)
    presence, _ = _presence(base, chip[0], "harbour")
    closed = _like(base, presence_threshold=min(presence + 0.05, 0.99))
    assert closed.segment(chip, "harbour")[0].targets == []
    assert "harbour: 0" in closed.segment(chip, "harbour")[0].answer
    opened = _like(base, presence_threshold=max(presence - 0.05, 0.0))
    assert len(opened.segment(chip, "harbour")[0].targets) > 0
    with pytest.raises(UsageError, match="presence threshold"):
        _like(base, presence_threshold=1.0)


def test_semantic_mode_returns_the_semantic_head_gated_by_presence(base):
    chip = _chips((S, S - 20), seed=2)
    presence, logits = _presence(base, chip[0], "water")
    seg = _like(base, output="semantic", presence_threshold=0.0)
    (target,) = seg.segment(chip, "water")[0].targets
    assert target.label == "water" and target.score == pytest.approx(presence, abs=1e-5)
    assert target.probability.shape == (S, S - 20) and target.probability.dtype == np.float32
    want = chip_probabilities(logits, (S, S - 20), S)[0]  # the head's map, resized and cropped to the chip
    np.testing.assert_allclose(target.probability, want, atol=1e-5)
    gated = _like(base, output="semantic")  # default gate 0.5 for the semantic map
    assert len(gated.segment(chip, "water")[0].targets) == (1 if presence >= 0.5 else 0)
    assert "present" in seg.segment(chip, "water")[0].answer


def test_both_fuses_instances_and_the_semantic_map(base):
    chip = _chips((S, S), seed=6)
    instances = _like(base, presence_threshold=0.0).segment(chip, "field|meadow")[0].targets
    semantic = _like(base, output="semantic", presence_threshold=0.0).segment(chip, "field|meadow")[0].targets
    both = _like(base, output="both", presence_threshold=0.0).segment(chip, "field|meadow")[0].targets
    assert len(semantic) == 2 and len(both) == len(instances) + 2  # one semantic map per name
    assert {t.probability.tobytes() for t in both} == {t.probability.tobytes() for t in instances + semantic}
    fused = np.max([t.probability for t in both], axis=0)  # what the stitcher keeps for the label
    assert np.all(fused >= np.max([t.probability for t in semantic], axis=0))


def test_results_are_deterministic_and_batch_independent(base):
    chips = _chips((S, S), (S, 50), (30, S), seed=9)
    one = _like(base, output="both", presence_threshold=0.0, batch_size=1).segment(chips, "road|street, water")
    three = _like(base, output="both", presence_threshold=0.0, batch_size=3).segment(chips, "road|street, water")
    again = _like(base, output="both", presence_threshold=0.0, batch_size=1).segment(chips, "road|street, water")
    for a, b, c in zip(one, three, again):
        assert [t.label for t in a.targets] == [t.label for t in b.targets] == [t.label for t in c.targets]
        for ta, tb, tc in zip(a.targets, b.targets, c.targets):
            assert np.array_equal(ta.probability, tc.probability)
            np.testing.assert_allclose(ta.probability, tb.probability, atol=1e-4)


def test_options_reach_sam3_and_other_backends_refuse_them(folder):
    seg = load_segmenter(folder, device="cpu", sam3_output="both", presence_threshold=0.3)
    assert seg.output == "both" and seg.presence_threshold == 0.3
    with pytest.raises(UsageError, match="does not take sam3_output"):
        load_segmenter("demo", device="cpu", sam3_output="semantic")
    with pytest.raises(UsageError, match="sam3_output must be one of instances, semantic, both"):
        load_segmenter(folder, device="cpu", sam3_output="panoptic")


def test_engine_stitches_semantic_maps_by_concept_whatever_the_batches(base, tmp_path):
    from rasterio.transform import from_origin

    from segearth_geo.engine import segment_scene
    from segearth_geo.params import SegmentParams
    from tests.geo_fixtures import UTM, UTM_ORIGIN, pattern, write_raster

    scene = write_raster(tmp_path / "s.tif", pattern(3, 2 * S - 30, 2 * S - 10), crs=UTM,
                         transform=from_origin(*UTM_ORIGIN, 0.5, 0.5))
    runs = [segment_scene(scene, "water|lake, road", _like(base, output="both", presence_threshold=0.0,
                                                           batch_size=b), SegmentParams(overlap=16, threshold=0.5,
                                                                                        batch_size=b))
            for b in (1, 4)]
    one, four = (r.segments for r in runs)
    assert set(one["label"]) <= {"water", "road"} and len(one) > 0
    for label in ("water", "road"):  # the same polygons up to float noise at a pixel exactly on the threshold
        a, b = (f[f["label"] == label].geometry.union_all() for f in (one, four))
        assert a.symmetric_difference(b).area <= 1e-3 * max(a.area, 1.0)
