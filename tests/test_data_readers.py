"""Benchmark readers on tiny fixtures written in each official format (see data_fixtures.py)."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
from data_fixtures import box, paint, save, write_earthreason, write_lasers, write_phrase_list, write_rrsisd

from segearth_geo.data import NO_TARGET_ANSWER, Sample, SampleLoadError, open_dataset
from segearth_geo.data.lasers import dimensions_from_name
from segearth_geo.data.rle import RLEError, decode_counts, encode_counts, rle_decode, rle_encode
from segearth_geo.data.rrsisd import load_plain_pickle, rasterize_segmentation
from segearth_geo.errors import DatasetError, UsageError

# ------------------------------------------------------------------------------ RLE


def test_rle_hand_cases():
    # 3×3 with only the centre set: column-major runs 4 zeros, 1 one, 4 zeros.
    centre = np.zeros((3, 3), bool)
    centre[1, 1] = True
    assert rle_encode(centre) == {"size": [3, 3], "counts": "414"}
    assert np.array_equal(rle_decode({"size": [3, 3], "counts": "414"}), centre)
    # Runs from the 4th on are stored as a difference to the run two before: 1 - 5 = -4 → 'L'.
    assert encode_counts([10, 5, 2, 1]) == ":52L"
    assert decode_counts(":52L") == [10, 5, 2, 1]
    # 16 needs two 5-bit groups ('`' = 16 | more, then '0').
    assert encode_counts([16]) == "`0" and decode_counts("`0") == [16]
    # Column-major: a mask set on the first row of a 2×3 image.
    row = np.array([[1, 1, 1], [0, 0, 0]], bool)
    assert rle_decode({"size": [2, 3], "counts": [0, 1, 1, 1, 1, 1, 1]}).tolist() == row.tolist()


def test_rle_round_trip_random_masks():
    rng = np.random.default_rng(0)
    for _ in range(100):
        h, w = rng.integers(1, 30, 2)
        mask = rng.random((h, w)) < rng.random()
        rle = rle_encode(mask)
        assert np.array_equal(rle_decode(rle), mask)
        assert np.array_equal(rle_decode({"size": rle["size"], "counts": decode_counts(rle["counts"])}), mask)


@pytest.mark.parametrize("rle", [
    {"size": [3, 3], "counts": "41"},           # runs cover 5 of 9 pixels
    {"size": [3, 3], "counts": "4\x7f4"},       # character outside the alphabet
    {"size": [3, 3], "counts": "4`"},           # ends inside a value
    {"size": [3, 3]},                           # no counts
    {"size": [3, 3], "counts": [4, -1, 6]},     # negative run
])
def test_rle_malformed(rle):
    with pytest.raises(RLEError):
        rle_decode(rle)


# ------------------------------------------------------------------------------ LaSeRS


def _lasers_fixture(tmp_path):
    root = tmp_path / "lasers"
    images = root / "test" / "images"
    save(images / "a.png", paint((8, 12)))
    save(images / "b.png", paint((8, 12)))
    save(tmp_path / "outside.png", paint((8, 12)))
    (images / "broken.png").write_bytes(b"not a png at all")
    m1, m2, m3 = box(0, 2, 0, 3), box(4, 8, 5, 12), box(1, 3, 1, 3)
    write_lasers(root, "test", [
        {"id": 7, "image_name": "a.png", "description": "the roof", "answer": "<p>roof</p> [SEG].", "masks": [m1],
         "dimensions": {"granularity": "part", "count": "single"}},
        # two targets, three RLEs: the first two are used, in answer order
        {"id": 8, "image_name": "b.png", "description": "two cars", "answer": "[SEG] and [SEG]",
         "masks": [m2, m1, m3]},
        {"id": 9, "image_name": "../../../outside.png", "description": "x", "answer": "[SEG]", "masks": [m1]},
        {"id": 10, "image_name": str(tmp_path / "outside.png"), "description": "x", "answer": "[SEG]", "masks": [m1]},
        {"id": 11, "image_name": "a.png", "description": "x", "answer": "[SEG] [SEG]", "masks": [m1]},
        {"id": 12, "image_name": "a.png", "description": "x", "answer": "[SEG]",
         "mask": [{"size": [8, 12], "counts": "garbage!"}]},
        {"id": 13, "image_name": "missing.png", "description": "x", "answer": "[SEG]", "masks": [m1]},
        {"id": 14, "image_name": "broken.png", "description": "x", "answer": "[SEG]", "masks": [m1]},
        {"id": 15, "image_name": "a.png", "description": "wrong size", "answer": "[SEG]", "masks": [box(0, 2, 0, 2, (5, 5))]},
        {"image_name": "a.png", "description": 3, "answer": "[SEG]"},
    ], file_name="test_implicit.json")
    return root, (m1, m2)


def test_lasers_reader(tmp_path):
    root, (m1, m2) = _lasers_fixture(tmp_path)
    reader = open_dataset("lasers", root, "test")
    assert [r.id for r in reader.records] == ["7", "8", "14", "15"]
    assert reader.skipped == {"path_outside_root": 2, "too_few_masks": 1, "bad_rle": 1, "missing_file": 1,
                              "bad_record": 1}
    samples = list(reader)
    assert [s.id for s in samples] == ["7", "8"]
    assert reader.skipped["unreadable_image"] == 1 and reader.skipped["mask_size_mismatch"] == 1
    first, second = samples
    assert isinstance(first, Sample) and first.image.shape == (8, 12, 3) and first.image.dtype == np.uint8
    assert first.instruction == "the roof" and first.answer == "<p>roof</p> [SEG]."
    assert len(first.masks) == 1 and np.array_equal(first.masks[0], m1)
    # explicit tags kept as given; a record without tags takes them from the file name
    assert first.dimensions == {"granularity": "part", "count": "single"}
    assert second.dimensions == {"explicitness": "implicit"}
    assert [m.sum() for m in second.masks] == [m2.sum(), m1.sum()]
    assert np.array_equal(second.masks[0], m2) and np.array_equal(second.masks[1], m1)
    assert second.source == "test_implicit.json"
    with pytest.raises(SampleLoadError):
        reader[2]


def test_lasers_missing_folder_and_bad_names(tmp_path):
    with pytest.raises(DatasetError, match="annotations"):
        open_dataset("lasers", tmp_path, "test")
    with pytest.raises(DatasetError, match="not a folder"):
        open_dataset("lasers", tmp_path / "nope", "test")
    with pytest.raises(UsageError, match="unknown dataset"):
        open_dataset("coco", tmp_path, "test")
    with pytest.raises(UsageError, match="split"):
        open_dataset("lasers", tmp_path, "../test")


def test_all_records_skipped_is_an_error(tmp_path):
    write_lasers(tmp_path, "test", [{"id": 1, "image_name": "../../../x.png", "description": "x", "answer": "x"}])
    with pytest.raises(DatasetError, match="path_outside_root: 1"):
        open_dataset("synthearth", tmp_path, "test")


def test_dimensions_from_file_name():
    assert dimensions_from_name("test_part_multiple.json") == {"granularity": "part", "count": "multiple"}
    assert dimensions_from_name("test_semantic_instance.json") == {}  # ambiguous: no tag
    assert dimensions_from_name("test.json") == {}


# ------------------------------------------------------------------------------ RRSIS-D


def test_rrsisd_reader(tmp_path):
    root = tmp_path / "rs_ref_seg" / "RRSIS-D"
    refs = [
        {"ref_id": 1, "ann_id": 10, "image_id": 100, "split": "test", "file_name": "img_1_10.jpg",
         "sentences": [{"raw": "the plane at the top", "sent": "plane top"}, {"raw": "upper plane"}]},
        # an RLE segmentation (uncompressed counts, as COCO crowd annotations)
        {"ref_id": 2, "ann_id": 11, "image_id": 100, "split": "test", "sentences": [{"sent": "a tank"}]},
        {"ref_id": 3, "ann_id": 10, "image_id": 100, "split": "train", "sentences": [{"raw": "train only"}]},
        {"ref_id": 4, "ann_id": 99, "image_id": 100, "split": "test", "sentences": [{"raw": "no annotation"}]},
        {"ref_id": 5, "ann_id": 12, "image_id": 101, "split": "test", "sentences": [{"raw": "escape"}]},
    ]
    images = [{"id": 100, "file_name": "img_1.jpg", "height": 10, "width": 16},
              {"id": 101, "file_name": "../../../../etc/hosts", "height": 10, "width": 16}]
    tank = box(6, 9, 10, 14, (10, 16))
    annotations = [
        # two polygon parts: the rectangle cols 2..6 × rows 1..4 (inclusive) and a triangle-free square
        {"id": 10, "image_id": 100,
         "segmentation": [[2, 1, 6, 1, 6, 4, 2, 4], [10, 0, 12, 0, 12, 2, 10, 2]]},
        {"id": 11, "image_id": 100, "segmentation": {"size": [10, 16], "counts": [
            int(v) for v in _runs(tank)]}},
        {"id": 12, "image_id": 101, "segmentation": [[0, 0, 1, 0, 1, 1]]},
    ]
    write_rrsisd(root, refs, images, annotations, {"img_1.jpg": paint((10, 16))})
    reader = open_dataset("rrsisd", tmp_path, "test")  # the R1 top folder is accepted too
    assert reader.skipped == {"bad_record": 1, "path_outside_root": 1}
    plane, tank_sample = list(reader)
    assert plane.id == "1" and plane.instruction == "the plane at the top"
    assert plane.answer == "<p>the plane at the top</p> [SEG]."
    expected = box(1, 5, 2, 7, (10, 16)) | box(0, 3, 10, 13, (10, 16))  # PIL fills edges inclusively
    assert np.array_equal(plane.masks[0], expected)
    assert tank_sample.instruction == "a tank" and np.array_equal(tank_sample.masks[0], tank)
    every = open_dataset("rrsisd", root, "test", all_sentences=True)
    assert [r.id for r in every.records] == ["1_0", "1_1", "2_0"]
    assert every.records[1].instruction == "upper plane"


def _runs(mask):
    flat = mask.T.ravel()
    runs, current, n = [], False, 0
    for v in flat:
        if v != current:
            runs.append(n)
            current, n = v, 0
        n += 1
    runs.append(n)
    return runs


class _Boom:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_rrsisd_refuses_unsafe_pickle(tmp_path):
    with pytest.raises(DatasetError, match="refusing to unpickle"):
        load_plain_pickle(pickle.dumps([{"ref": _Boom()}]))
    assert load_plain_pickle(pickle.dumps([{"a": (1, 2.5, "x", None, True)}], protocol=0)) == [
        {"a": (1, 2.5, "x", None, True)}]
    write_rrsisd(tmp_path, [], [], [], {})
    (tmp_path / "rrsisd" / "refs(unc).p").write_bytes(pickle.dumps([_Boom()]))
    with pytest.raises(DatasetError, match="refusing"):
        open_dataset("rrsisd", tmp_path, "test")


def test_rasterize_rejects_bad_polygon():
    with pytest.raises(SampleLoadError):
        rasterize_segmentation([[1, 2, 3]], 4, 4)


# ------------------------------------------------------------------------------ RefSegRS / RISBench


def test_refsegrs_reader(tmp_path):
    root = tmp_path / "rs_ref_seg" / "RefSegRS"
    road = box(0, 3, 0, 8, (6, 8))
    car = box(4, 6, 5, 7, (6, 8))
    write_phrase_list(root, "test", ["12 the road on the left", "", "13 a small car", "14", "15 missing files",
                                     "../../../outside car"],
                      "images", "masks", {"12.tif": (paint((6, 8)), road), "13.tif": (paint((6, 8)), car)})
    save(tmp_path / "outside.tif", paint((6, 8)))
    reader = open_dataset("refsegrs", root, "test")
    assert reader.skipped == {"bad_line": 1, "missing_file": 1, "path_outside_root": 1}
    first, second = list(reader)
    assert (first.id, first.instruction, first.answer) == ("12", "the road on the left", "<p>the road on the left</p> [SEG].")
    assert np.array_equal(first.masks[0], road) and np.array_equal(second.masks[0], car)


def test_risbench_reader(tmp_path):
    root = tmp_path / "risbench"
    ship = box(1, 4, 2, 9, (7, 10))
    write_phrase_list(root, "val", ["p001.png the ship near the dock"], "img_rgb", "mask",
                      {"p001.png": (paint((7, 10)), ship)})
    reader = open_dataset("risbench", root, "val")
    (sample,) = list(reader)
    assert sample.id == "p001" and sample.instruction == "the ship near the dock"
    assert np.array_equal(sample.masks[0], ship) and sample.image.shape == (7, 10, 3)
    with pytest.raises(DatasetError, match="output_phrase_test.txt"):
        open_dataset("risbench", root, "test")


# ------------------------------------------------------------------------------ EarthReason


def test_earthreason_reader(tmp_path):
    root = tmp_path / "rs_reason_seg" / "RSReasonSeg"
    runway = box(2, 5, 0, 9, (6, 9))
    write_earthreason(root, "test", {
        "0001": (paint((6, 9)), runway, {"questions": ["Where can the plane take off?", "q2"],
                                         "answer": ["The runway is where planes take off."]}),
        "0002": (paint((6, 9)), np.zeros((6, 9), bool), {"questions": ["Where is the harbour?"], "answer": [""]}),
        "0003": (paint((6, 9)), runway, {"questions": [], "answer": ["x"]}),
    })
    save(root / "test" / "images" / "0004.png", paint((6, 9)))  # no label, no QA
    reader = open_dataset("earthreason", tmp_path, "test")
    assert reader.skipped == {"unpaired_file": 1, "bad_record": 1}
    target, empty = list(reader)
    assert target.instruction == "Where can the plane take off?"
    assert target.answer == "The runway is where planes take off [SEG]."
    assert np.array_equal(target.masks[0], runway)
    assert empty.answer == NO_TARGET_ANSWER and empty.masks == [] and "[SEG]" not in empty.answer


def test_sample_checks_its_invariants():
    with pytest.raises(DatasetError, match="masks"):
        Sample("x", paint((4, 4)), "q", "[SEG] [SEG]", [box(0, 1, 0, 1, (4, 4))])
    with pytest.raises(DatasetError, match="shape"):
        Sample("x", paint((4, 4)), "q", "[SEG]", [box(0, 1, 0, 1, (4, 5))])
    with pytest.raises(DatasetError, match="uint8"):
        Sample("x", np.zeros((4, 4)), "q", "", [])


def test_reader_options_are_checked(tmp_path):
    with pytest.raises(UsageError, match="all_sentences"):
        open_dataset("refsegrs", tmp_path, "test", all_sentences=True)
