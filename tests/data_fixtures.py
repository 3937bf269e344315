"""Tiny datasets written in each benchmark's official on-disk format, and test segmenters.

Used by tests/test_data_readers.py, test_evaluate.py and test_cli_eval.py. The segmenter
factories at the bottom are also loaded by the CLI through ``--model tests/data_fixtures.py:NAME``.

The evaluation fixture (:func:`write_eval_lasers`) is built so that the colour-threshold
segmenters give hand-computable IoUs (images 8×12, non-square to catch transposes):

* ``s1``: red block rows 0–3 × cols 0–5 (24 px); GT rows 0–3 × cols 2–7 (24 px)
  → I = 16, U = 32, IoU 0.5.  Tags: semantic, single.
* ``s2``: answer with two ``[SEG]``. Red block rows 2–5 × cols 2–5 (16 px) = GT a → IoU 1;
  green block rows 6–7 × cols 0–3 (8 px) = GT b. Tags: instance, multiple.
* ``s3``: no coloured pixel; GT rows 0–1 × cols 0–1 (4 px) → IoU 0. Tags: semantic, single.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from segearth_geo.data.rle import rle_encode
from segearth_geo.prediction import ChipPrediction, Target

H, W = 8, 12


def box(r0: int, r1: int, c0: int, c1: int, shape: tuple[int, int] = (H, W)) -> np.ndarray:
    """Boolean mask, True on rows r0..r1-1 and cols c0..c1-1."""
    mask = np.zeros(shape, dtype=bool)
    mask[r0:r1, c0:c1] = True
    return mask


def paint(shape: tuple[int, int], red: np.ndarray | None = None, green: np.ndarray | None = None) -> np.ndarray:
    """A dark-grey uint8 RGB image with pure red / green where the given masks are set."""
    image = np.full((*shape, 3), 40, dtype=np.uint8)
    if red is not None:
        image[red] = (255, 0, 0)
    if green is not None:
        image[green] = (0, 255, 0)
    return image


def save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


# ---------------------------------------------------------------- LaSeRS / SynthEarth
def write_lasers(root: Path, split: str, records: list[dict], file_name: str | None = None) -> Path:
    """Write ``records`` (masks given as bool arrays under ``"masks"``) as a LaSeRS JSON file."""
    out = []
    for rec in records:
        rec = dict(rec)
        if "masks" in rec:
            rec["mask"] = [rle_encode(m) for m in rec.pop("masks")]
        out.append(rec)
    ann = root / split / "annotations" / (file_name or f"{split}.json")
    ann.parent.mkdir(parents=True, exist_ok=True)
    ann.write_text(json.dumps(out), encoding="utf-8")
    return ann


EVAL_GT = {
    "s1": [box(0, 4, 2, 8)],
    "s2": [box(2, 6, 2, 6), box(6, 8, 0, 4)],
    "s3": [box(0, 2, 0, 2)],
}


def write_eval_lasers(root: Path, split: str = "test") -> Path:
    """The evaluation fixture described in the module docstring (LaSeRS/SynthEarth layout)."""
    images = root / split / "images"
    save(images / "a.png", paint((H, W), red=box(0, 4, 0, 6)))
    save(images / "b.png", paint((H, W), red=box(2, 6, 2, 6), green=box(6, 8, 0, 4)))
    save(images / "c.png", paint((H, W)))
    tags_single = {"granularity": "semantic", "count": "single", "explicitness": "explicit", "length": "short"}
    tags_multi = {"granularity": "instance", "count": "multiple", "explicitness": "implicit", "length": "long"}
    write_lasers(root, split, [
        {"id": "s1", "image_name": "a.png", "description": "the red roof", "answer": "<p>roof</p> [SEG].",
         "masks": EVAL_GT["s1"], "dimensions": tags_single},
        {"id": "s2", "image_name": "b.png", "description": "both courts",
         "answer": "<p>court</p> [SEG] and <p>court</p> [SEG].", "masks": EVAL_GT["s2"], "dimensions": tags_multi},
        {"id": "s3", "image_name": "c.png", "description": "the pool", "answer": "<p>pool</p> [SEG].",
         "masks": EVAL_GT["s3"], "dimensions": tags_single},
    ])
    return root


# ---------------------------------------------------------------- RRSIS-D
def write_rrsisd(root: Path, refs: list[dict], images: list[dict], annotations: list[dict],
                 pixels: dict[str, np.ndarray]) -> Path:
    """RRSIS-D layout: refs(unc).p (plain pickle), instances.json, images/rrsisd/JPEGImages/*.jpg."""
    (root / "rrsisd").mkdir(parents=True, exist_ok=True)
    (root / "rrsisd" / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))
    (root / "rrsisd" / "instances.json").write_text(json.dumps({"images": images, "annotations": annotations}))
    for name, array in pixels.items():
        save(root / "images" / "rrsisd" / "JPEGImages" / name, array)
    return root


# ---------------------------------------------------------------- RefSegRS / RISBench
def write_phrase_list(root: Path, split: str, lines: list[str], image_dir: str, mask_dir: str,
                      files: dict[str, tuple[np.ndarray, np.ndarray]]) -> Path:
    """``output_phrase_{split}.txt`` plus image / mask files (mask written as 0/255 uint8)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / f"output_phrase_{split}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for name, (image, mask) in files.items():
        save(root / image_dir / name, image)
        save(root / mask_dir / name, mask.astype(np.uint8) * 255)
    return root


# ---------------------------------------------------------------- EarthReason
def write_earthreason(root: Path, split: str, items: dict[str, tuple[np.ndarray, np.ndarray, dict]]) -> Path:
    """``<split>/images/<stem>.png``, ``labels/<stem>.png`` (0/1), ``QAs/<stem>.json``."""
    for stem, (image, mask, qa) in items.items():
        save(root / split / "images" / f"{stem}.png", image)
        save(root / split / "labels" / f"{stem}.png", mask.astype(np.uint8))
        (root / split / "QAs").mkdir(parents=True, exist_ok=True)
        (root / split / "QAs" / f"{stem}.json").write_text(json.dumps(qa), encoding="utf-8")
    return root


# ---------------------------------------------------------------- test segmenters
class RedSegmenter:
    """Plain Segmenter: one target, probability 1 where the red channel > 127 (else 0)."""

    chip_size = 64

    def __init__(self) -> None:
        self.calls: list[int] = []

    def segment(self, chips, prompt):
        self.calls.append(len(chips))
        return [
            ChipPrediction("<p>it</p> [SEG].", [Target("it", (chip[..., 0] > 127).astype(np.float32))])
            for chip in chips
        ]


class ColourPredictor(RedSegmenter):
    """Batched segmenter with ``predict``: generate → one red target; teacher-forced → one target
    per ``[SEG]`` of the given answer, the k-th from colour channel k (red, green, blue)."""

    capabilities = frozenset({"predict"})  # declared, as the model family's segmenters do

    def predict(self, images, prompts, answers=None):
        self.calls.append(len(images))
        out = []
        for i, image in enumerate(images):
            n = 1 if answers is None else answers[i].count("[SEG]")
            targets = [Target("it", (image[..., k % 3] > 127).astype(np.float32) * 0.9) for k in range(n)]
            out.append(ChipPrediction(answers[i] if answers else "<p>it</p> [SEG].", targets))
        return out


def red_segmenter() -> RedSegmenter:
    return RedSegmenter()


def colour_predictor() -> ColourPredictor:
    return ColourPredictor()
