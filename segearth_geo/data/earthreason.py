"""EarthReason reader (SegEarth-R1 layout, spec §13.4).

Layout (``root`` may also be the folder above ``rs_reason_seg/RSReasonSeg``)::

    <root>/<split>/images/*.jpg|png   <root>/<split>/labels/*.png   <root>/<split>/QAs/*.json

SegEarth-R1 sorts the three folders by name and zips them by index. We pair the files by
name stem instead, which is the same on a consistent copy and does not shift every later
sample when one file is missing (unpaired files are skipped as ``unpaired_file``); when no
stem is shared at all and the three folders have as many files, we fall back to pairing by
sorted index as R1 does.

QA JSON: ``{"questions": [str, …], "answer": [str, …]}``; the first question is the
instruction (R1). The label mask is "pixel ≠ 0". A sample whose label is empty is a
**no-target** sample: answer ``"There is no target object in the image."``, no ``[SEG]``,
no mask. Otherwise the answer is the QA answer followed by one ``[SEG]`` (R2-style answers
were never released, spec §17.7): ``"{answer} [SEG]."`` (``"It is [SEG]."`` when empty).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from segearth_geo.data.reader import IMAGE_SUFFIXES, BenchmarkReader, SampleRecord, find_root, read_binary_mask
from segearth_geo.data.sample import NO_TARGET_ANSWER
from segearth_geo.errors import DatasetError


def reasoning_answer(text: str) -> str:
    """The R2-style answer for a target sample: the reasoning text, then one ``[SEG]``."""
    text = text.strip().rstrip(".").rstrip()
    return f"{text} [SEG]." if text else "It is [SEG]."


def _first_text(value: object) -> str:
    if isinstance(value, list):
        value = value[0] if value else ""
    return value if isinstance(value, str) else ""


class EarthReasonReader(BenchmarkReader):
    """EarthReason split (see the module docstring)."""

    name = "earthreason"

    def __init__(self, root: str | os.PathLike, split: str = "test") -> None:
        super().__init__(find_root(root, "rs_reason_seg", "RSReasonSeg"), split)
        split_dir = self.root / split
        folders = [split_dir / name for name in ("images", "labels", "QAs")]
        for folder in folders:
            if not folder.is_dir():
                raise DatasetError(f"EarthReason folder {folder} not found; expected <root>/{split}/images|labels|QAs")
        images = sorted(p for p in folders[0].iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        labels = sorted(p for p in folders[1].iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        qas = sorted(p for p in folders[2].iterdir() if p.suffix.lower() == ".json")
        for image, label, qa in self._pair(images, labels, qas):
            self._index_triple(image, label, qa)
        self._finish()

    def _pair(self, images: list[Path], labels: list[Path], qas: list[Path]) -> list[tuple[Path, Path, Path]]:
        by_stem = [{p.stem: p for p in files} for files in (images, labels, qas)]
        shared = sorted(set(by_stem[0]) & set(by_stem[1]) & set(by_stem[2]))
        if not shared and len(images) == len(labels) == len(qas):
            return list(zip(images, labels, qas))  # R1's pairing by sorted index
        unpaired = len(images) + len(labels) + len(qas) - 3 * len(shared)
        if unpaired:
            self.skipped["unpaired_file"] = unpaired
        return [(by_stem[0][s], by_stem[1][s], by_stem[2][s]) for s in shared]

    def _index_triple(self, image: Path, label: Path, qa_path: Path) -> None:
        try:
            qa = json.loads(qa_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            self._skip("bad_record", f"{qa_path.name}: {exc}")
            return
        question = _first_text(qa.get("questions")) if isinstance(qa, dict) else ""
        if not question.strip():
            self._skip("bad_record", f"{qa_path.name}: no question")
            return
        self._add(
            SampleRecord(
                id=image.stem,
                image_path=image,
                instruction=question.strip(),
                answer=_first_text(qa.get("answer")),
                mask_ref=label,
                source=qa_path.name,
            )
        )

    def _masks(self, record: SampleRecord, height: int, width: int) -> tuple[list[np.ndarray], str]:
        mask = read_binary_mask(record.mask_ref)
        if not mask.any():
            return [], NO_TARGET_ANSWER
        return [mask], reasoning_answer(record.answer)
