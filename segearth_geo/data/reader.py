"""Common machinery of the benchmark readers: light records, lazy decoding, skip counting.

A reader parses its annotation files once, at construction, into :class:`SampleRecord`
objects (text and file paths only). Records whose annotations are unusable are dropped
and counted in :attr:`BenchmarkReader.skipped` by reason:

* ``path_outside_root`` – a file name from an annotation file points outside the
  dataset root (``..`` or an absolute path); refused, with a warning;
* ``missing_file`` – the image or mask file does not exist;
* ``bad_rle`` – an RLE mask is malformed; ``too_few_masks`` – fewer masks than ``[SEG]``s;
* reader-specific reasons (``bad_record``, ``bad_line``, ``unpaired_file`` …).

Images and masks are decoded when a sample is accessed. Iterating a reader skips
samples whose files cannot be decoded (``unreadable_image``, ``unreadable_mask``,
``mask_size_mismatch``), counting them too; ``reader[i]`` raises :class:`SampleLoadError`
for such a sample instead. Symlinks that the user placed inside the root are followed:
the check is on the annotation's text, not on the resolved target.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from segearth_geo.data.sample import Sample
from segearth_geo.errors import DatasetError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


class SampleLoadError(DatasetError):
    """One sample's image or mask cannot be decoded; ``reason`` is its ``skipped`` key."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class SampleRecord:
    """What a reader keeps per sample until it is loaded.

    ``mask_ref`` is reader-specific: RLE dicts (LaSeRS), a COCO segmentation (RRSIS-D) or a
    mask file path (RefSegRS, EarthReason, RISBench).
    """

    id: str
    image_path: Path
    instruction: str
    answer: str
    mask_ref: Any
    dimensions: dict[str, str] = field(default_factory=dict)
    source: str = ""


def path_inside(root: Path, relative: str) -> Path | None:
    """``root / relative`` if it stays inside ``root`` (lexically), else ``None``.

    Absolute paths and ``..`` components that climb out of ``root`` are refused.
    """
    if not isinstance(relative, str) or not relative or "\x00" in relative:
        return None
    joined = os.path.normpath(os.path.join(root, relative))
    if os.path.commonpath([str(root), joined]) != str(root) or joined == str(root):
        return None
    return Path(joined)


def read_rgb(path: Path) -> np.ndarray:
    """Decode an image file into ``uint8`` RGB ``(H, W, 3)`` (grey, palette, RGBA converted)."""
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise SampleLoadError("unreadable_image", f"cannot decode image {path}: {exc}") from exc


def read_binary_mask(path: Path) -> np.ndarray:
    """Decode a mask image into ``bool`` ``(H, W)``: a pixel is target where any channel is nonzero."""
    try:
        with Image.open(path) as img:
            values = np.asarray(img)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise SampleLoadError("unreadable_mask", f"cannot decode mask {path}: {exc}") from exc
    if values.ndim == 3:
        return (values != 0).any(axis=2)
    if values.ndim != 2:
        raise SampleLoadError("unreadable_mask", f"mask {path} has unsupported shape {values.shape}")
    return values != 0


def find_root(root: str | os.PathLike, *nested: str) -> Path:
    """The dataset folder: ``root`` itself, or ``root/<nested…>`` (SegEarth-R1's layout) when that exists."""
    base = Path(root).expanduser().resolve()
    if not base.is_dir():
        raise DatasetError(f"dataset root {base} is not a folder; pass the folder holding the dataset")
    if nested and (base.joinpath(*nested)).is_dir():
        return base.joinpath(*nested)
    return base


class BenchmarkReader(Sequence[Sample]):
    """A benchmark split as a sequence of :class:`Sample` (decoded on access).

    Attributes:
        root: the resolved dataset folder.
        split: ``"train"``, ``"val"``, ``"test"`` …
        records: the usable annotation records, in file order.
        skipped: ``{reason: count}`` of dropped records (updated while iterating too).
    """

    name: ClassVar[str] = ""

    def __init__(self, root: Path, split: str) -> None:
        self.root = root
        self.split = split
        self.records: list[SampleRecord] = []
        self.skipped: dict[str, int] = {}
        self._ids: set[str] = set()

    # --- indexing -----------------------------------------------------------------
    def _skip(self, reason: str, detail: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        if reason == "path_outside_root":
            log.warning("%s: refusing a path outside the dataset root: %s", self.name, detail)
        else:
            log.debug("%s: skipped (%s): %s", self.name, reason, detail)

    def _inside(self, relative: str, what: str) -> Path | None:
        """Resolve an annotation's file name under the root, counting refusals and missing files."""
        path = path_inside(self.root, relative)
        if path is None:
            self._skip("path_outside_root", f"{what} {relative!r}")
            return None
        if not path.is_file():
            self._skip("missing_file", f"{what} {path}")
            return None
        return path

    def _add(self, record: SampleRecord) -> None:
        """Append a record, making its id unique (``id``, ``id_1``, ``id_2`` …)."""
        rid, n = record.id, 0
        while rid in self._ids:
            n += 1
            rid = f"{record.id}_{n}"
        self._ids.add(rid)
        self.records.append(record if rid == record.id else SampleRecord(**{**record.__dict__, "id": rid}))

    def _finish(self) -> None:
        if self.skipped:
            log.warning("%s %s: skipped %s", self.name, self.split, self.skipped_summary())
        if not self.records:
            raise DatasetError(
                f"no usable {self.name} samples for split {self.split!r} under {self.root}"
                + (f" (skipped: {self.skipped_summary()})" if self.skipped else "")
                + "; check --data-root and --split"
            )

    # --- loading ------------------------------------------------------------------
    def load(self, record: SampleRecord) -> Sample:
        """Decode one record into a :class:`Sample`; raises :class:`SampleLoadError`."""
        image = read_rgb(record.image_path)
        masks, answer = self._masks(record, image.shape[0], image.shape[1])
        for mask in masks:
            if mask.shape != image.shape[:2]:
                raise SampleLoadError(
                    "mask_size_mismatch",
                    f"{record.id}: mask {mask.shape} does not match image {image.shape[:2]} ({record.image_path})",
                )
        return Sample(
            id=record.id,
            image=image,
            instruction=record.instruction,
            answer=answer,
            masks=masks,
            dimensions=dict(record.dimensions),
            source=record.source,
        )

    def _masks(self, record: SampleRecord, height: int, width: int) -> tuple[list[np.ndarray], str]:
        """Reader-specific: the record's masks (``bool (H, W)``, answer order) and its final answer."""
        raise NotImplementedError

    def skipped_summary(self) -> str:
        """``"reason: n, reason: n"`` (empty when nothing was skipped)."""
        return ", ".join(f"{reason}: {n}" for reason, n in sorted(self.skipped.items()))

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Sample:  # type: ignore[override]
        return self.load(self.records[index])

    def __iter__(self) -> Iterator[Sample]:
        for record in self.records:
            try:
                yield self.load(record)
            except SampleLoadError as exc:
                self.skipped[exc.reason] = self.skipped.get(exc.reason, 0) + 1
                log.warning("%s: skipped sample %s: %s", self.name, record.id, exc)
