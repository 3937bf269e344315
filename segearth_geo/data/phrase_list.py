"""Readers for the "one phrase per line" benchmarks: RefSegRS and RISBench.

Both list their samples in ``output_phrase_{split}.txt``, one line per sample:
``<name> <referring phrase>``. The image and the mask file share the name
(a mask pixel is target where it is nonzero; RefSegRS stores 255). Since R2-style
answers were never released (spec §17.7), the instruction is the phrase and the answer
is synthesized as ``"<p>{phrase}</p> [SEG]."``.

* RefSegRS (spec §13.3): ``images/<id>.tif``, ``masks/<id>.tif`` (root may also be the
  folder above ``rs_ref_seg/RefSegRS``).
* RISBench (spec §13.5, third-party layout, inferred): ``img_rgb/<file name>``,
  ``mask/<file name>``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from segearth_geo.data.reader import BenchmarkReader, SampleRecord, find_root, read_binary_mask
from segearth_geo.errors import DatasetError


class PhraseListReader(BenchmarkReader):
    """Base of :class:`RefSegRSReader` and :class:`RISBenchReader`."""

    image_dir: str = ""
    mask_dir: str = ""
    suffix: str = ""  # appended to the name from the phrase file ("" when it has its own)
    nested: tuple[str, ...] = ()

    def __init__(self, root: str | os.PathLike, split: str = "test") -> None:
        super().__init__(find_root(root, *self.nested), split)
        phrase_file = self.root / f"output_phrase_{split}.txt"
        if not phrase_file.is_file():
            raise DatasetError(f"{self.name} phrase file {phrase_file} not found; check --data-root and --split")
        try:
            lines = phrase_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise DatasetError(f"cannot read {phrase_file}: {exc}") from exc
        for number, line in enumerate(lines, start=1):
            self._index_line(line, number, phrase_file.name)
        self._finish()

    def _index_line(self, line: str, number: int, source: str) -> None:
        if not line.strip():
            return
        parts = line.strip().split(maxsplit=1)
        if len(parts) != 2:
            self._skip("bad_line", f"{source}:{number}: expected '<name> <phrase>'")
            return
        name, phrase = parts[0], parts[1].strip()
        image_path = self._inside(os.path.join(self.image_dir, name + self.suffix), "image")
        if image_path is None:
            return
        mask_path = self._inside(os.path.join(self.mask_dir, name + self.suffix), "mask")
        if mask_path is None:
            return
        self._add(
            SampleRecord(
                id=Path(name).stem if not self.suffix else name,
                image_path=image_path,
                instruction=phrase,
                answer=f"<p>{phrase}</p> [SEG].",
                mask_ref=mask_path,
                source=source,
            )
        )

    def _masks(self, record: SampleRecord, height: int, width: int) -> tuple[list[np.ndarray], str]:
        return [read_binary_mask(record.mask_ref)], record.answer


class RefSegRSReader(PhraseListReader):
    """RefSegRS split: ``output_phrase_{split}.txt`` lines ``<digits> <phrase>``, ``images/``/``masks/`` ``<id>.tif``."""

    name = "refsegrs"
    image_dir = "images"
    mask_dir = "masks"
    suffix = ".tif"
    nested = ("rs_ref_seg", "RefSegRS")


class RISBenchReader(PhraseListReader):
    """RISBench split: ``output_phrase_{split}.txt`` lines ``<file name> <phrase>``, ``img_rgb/``, ``mask/``."""

    name = "risbench"
    image_dir = "img_rgb"
    mask_dir = "mask"
