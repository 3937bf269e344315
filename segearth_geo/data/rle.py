"""COCO run-length encoding (RLE) of binary masks, without pycocotools.

A COCO RLE is ``{"size": [h, w], "counts": ...}``. ``counts`` holds alternating run
lengths of 0s and 1s (starting with 0s) over the mask flattened in **column-major**
(Fortran) order. It is either a list of ints ("uncompressed", used by COCO ``iscrowd``
annotations) or a string ("compressed", LaSeRS and most JSON files): each run length,
from the third on, is stored as the difference to the run two places earlier, then
written as little-endian groups of 5 bits, one character per group (``chr(48 + bits)``,
bit 0x20 = more groups follow, bit 0x10 of the last group = sign).

Malformed input raises :class:`RLEError` (a :class:`~segearth_geo.errors.DatasetError`).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from segearth_geo.errors import DatasetError


class RLEError(DatasetError):
    """A COCO RLE is malformed (bad characters, negative runs, runs not covering ``h*w``)."""


def decode_counts(counts: str) -> list[int]:
    """Decode a compressed COCO counts string into run lengths (inverse of :func:`encode_counts`)."""
    runs: list[int] = []
    value = shift = 0
    pending = False
    for char in counts:
        code = ord(char) - 48
        if not 0 <= code < 64:
            raise RLEError(f"invalid character {char!r} in RLE counts")
        value |= (code & 0x1F) << shift
        shift += 5
        pending = True
        if code & 0x20:
            continue
        if code & 0x10:
            value |= -1 << shift  # sign-extend the last group
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
        value = shift = 0
        pending = False
    if pending:
        raise RLEError("RLE counts string ends in the middle of a value")
    return runs


def encode_counts(runs: list[int]) -> str:
    """Encode run lengths as a compressed COCO counts string (``rleToString`` of pycocotools)."""
    chars: list[str] = []
    for i, run in enumerate(runs):
        value = int(run) - (int(runs[i - 2]) if i > 2 else 0)
        more = True
        while more:
            code = value & 0x1F
            value >>= 5  # arithmetic shift: negative values end at -1
            more = value != -1 if code & 0x10 else value != 0
            if more:
                code |= 0x20
            chars.append(chr(code + 48))
    return "".join(chars)


def rle_runs(rle: Mapping[str, Any]) -> tuple[tuple[int, int], list[int]]:
    """Validate ``rle`` and return ``((h, w), run lengths)``; raises :class:`RLEError` when malformed."""
    if not isinstance(rle, Mapping) or "size" not in rle or "counts" not in rle:
        raise RLEError("an RLE must be a mapping with 'size' and 'counts'")
    size = rle["size"]
    if (
        not isinstance(size, (list, tuple))
        or len(size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in size)
    ):
        raise RLEError(f"RLE 'size' must be [height, width] non-negative ints, got {size!r}")
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii", errors="replace")
    if isinstance(counts, str):
        runs = decode_counts(counts)
    elif isinstance(counts, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in counts):
        runs = [int(v) for v in counts]
    else:
        raise RLEError("RLE 'counts' must be a string or a list of ints")
    height, width = int(size[0]), int(size[1])
    if any(run < 0 for run in runs):
        raise RLEError("RLE has a negative run length")
    if sum(runs) != height * width:
        raise RLEError(f"RLE runs cover {sum(runs)} pixels, size {height}x{width} needs {height * width}")
    return (height, width), runs


def rle_decode(rle: Mapping[str, Any]) -> np.ndarray:
    """Decode a COCO RLE (compressed or uncompressed counts) into a bool mask ``(h, w)``."""
    (height, width), runs = rle_runs(rle)
    values = np.arange(len(runs)) % 2 == 1  # runs alternate 0, 1, 0, ...
    flat = np.repeat(values, runs)
    return flat.reshape(width, height).T.copy()  # column-major → (h, w)


def rle_encode(mask: np.ndarray) -> dict[str, Any]:
    """Encode a 2-D mask (nonzero = inside) as ``{"size": [h, w], "counts": str}`` (compressed)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"rle_encode expects a 2-D mask, got shape {mask.shape}")
    height, width = mask.shape
    flat = (mask != 0).T.ravel()  # column-major order
    if flat.size == 0:
        return {"size": [int(height), int(width)], "counts": ""}
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], change, [flat.size]))
    runs = np.diff(bounds).tolist()
    if flat[0]:
        runs.insert(0, 0)
    return {"size": [int(height), int(width)], "counts": encode_counts(runs)}
