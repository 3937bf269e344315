"""A unit's result on disk: its stitching pieces and chip answers, as one small Parquet file.

A shard holds, per prompt, exactly what a :class:`~segearth_geo.stitch.Stitcher` collected
for the unit's chips: the *final* pieces (touching no inner core edge: complete objects)
and the *border* pieces (touching an inner core edge: parts of objects that may continue
in another chip, of this unit or another). Pieces keep their exact integer pixel rings,
probability sum and pixel count, so finishing a scene from its shards
(:mod:`segearth_geo.batch.finish`) performs the same union as one ``segment`` run.

One row per piece or chip record; columns::

    prompt int32   index into the job's prompts
    kind   int8    0 final piece, 1 border piece, 2 chip record
    label  str     normalised label (pieces) or the chip's labels joined by ", " (chips)
    chip   int64   chip index (chip records), -1 for pieces
    answer str     the segmenter's text answer (chip records)
    prob_sum float64, pixels int64          (pieces)
    coords list<int32>      all rings' (col, row) corners, flattened (pieces)
    ring_sizes list<int32>  vertices per ring, exterior first (pieces)

Written to a temporary name, fsynced and renamed: a shard exists completely or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from segearth_geo.output import atomic_file
from segearth_geo.vectorize import Piece

FINAL, BORDER, CHIP = 0, 1, 2

SCHEMA = pa.schema([
    ("prompt", pa.int32()),
    ("kind", pa.int8()),
    ("label", pa.string()),
    ("chip", pa.int64()),
    ("answer", pa.string()),
    ("prob_sum", pa.float64()),
    ("pixels", pa.int64()),
    ("coords", pa.list_(pa.int32())),
    ("ring_sizes", pa.list_(pa.int32())),
])


@dataclass
class PromptPieces:
    """What one prompt of a unit produced: pieces per label and one record per processed chip."""

    final: dict[str, list[Piece]] = field(default_factory=dict)
    border: dict[str, list[Piece]] = field(default_factory=dict)
    chips: list[tuple[int, str, str]] = field(default_factory=list)  # (chip index, answer, labels joined by ", ")


def write_shard(path: Path, results: list[PromptPieces]) -> Path:
    """Write the unit's ``results`` (one per prompt, in job order) to ``path`` atomically."""
    columns: dict[str, list] = {name: [] for name in SCHEMA.names}

    def row(prompt, kind, label, chip=-1, answer="", prob_sum=0.0, pixels=0, coords=(), sizes=()):
        for name, value in zip(SCHEMA.names, (prompt, kind, label, chip, answer, prob_sum, pixels, coords, sizes)):
            columns[name].append(value)

    for k, result in enumerate(results):
        for kind, by_label in ((FINAL, result.final), (BORDER, result.border)):
            for label, pieces in by_label.items():
                for piece in pieces:
                    coords = np.concatenate(piece.rings).astype(np.int32).ravel()
                    row(k, kind, label, prob_sum=float(piece.prob_sum), pixels=int(piece.pixels),
                        coords=coords, sizes=[len(r) for r in piece.rings])
        for chip, answer, labels in result.chips:
            row(k, CHIP, labels, chip=int(chip), answer=answer)
    table = pa.table(columns, schema=SCHEMA)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, "wb", ".parquet") as handle:
        pq.write_table(table, handle, compression="zstd")
    return path


def read_shard(path: Path, prompts: int) -> list[PromptPieces]:
    """The results written by :func:`write_shard` (one :class:`PromptPieces` per prompt)."""
    table = pq.read_table(path, schema=SCHEMA)
    results = [PromptPieces() for _ in range(prompts)]
    data = table.to_pydict()
    for i in range(table.num_rows):
        result = results[data["prompt"][i]]
        kind, label = data["kind"][i], data["label"][i]
        if kind == CHIP:
            result.chips.append((data["chip"][i], data["answer"][i], label))
            continue
        flat = np.asarray(data["coords"][i], dtype=np.int32).reshape(-1, 2)
        rings = np.split(flat, np.cumsum(data["ring_sizes"][i])[:-1])
        piece = Piece(rings, data["prob_sum"][i], data["pixels"][i])
        (result.final if kind == FINAL else result.border).setdefault(label, []).append(piece)
    return results
