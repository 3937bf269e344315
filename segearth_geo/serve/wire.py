"""The bodies of ``POST /v1/segment`` (wire format 1): chips in, probabilities out. Never pickle.

Both bodies are a 12-byte prefix, a UTF-8 JSON header and a binary payload::

    magic (4 bytes: b"SEGC" request, b"SEGM" response) | version (u8, 1) | 3 zero bytes | header length (u32 LE)
    header (JSON object, UTF-8) | payload

* **Request** (``application/x-segearth-chips``): header ``{"prompts": [str, ...], "chips": [[h, w], ...],
  "threshold": 0.5, "score_threshold": null, "compress": true}``; payload: every chip's pixels, uint8 RGB,
  row-major ``(h, w, 3)``, back to back (lossless, 3 bytes a pixel).
* **Response** (``application/x-segearth-masks``): header ``{"results": [[{"answer": str, "targets": [{"label":
  str, "score": float | null, "size": n}]}, ...per chip], ...per prompt], "compress": bool, "cache": {...} | null}``;
  payload, per prompt, chip and target in that order: ``round(p * 255)`` as uint8 ``(h, w)`` then the bits of
  ``p >= threshold`` (computed from the float32 probabilities, ``np.packbits`` row-major, ``ceil(h*w/8)`` bytes);
  with ``compress`` each target's block is zlib-compressed (``size`` is its length on the wire).

The client rebuilds float32 probabilities ``u / 255`` and moves a pixel across the threshold only where its bit
disagrees (a move of less than 1/255), so ``p >= threshold`` — what the engine thresholds — is exactly the
server's: the polygons equal an in-process run's and the probabilities are within 1/255.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from segearth_geo.errors import SegEarthGeoError
from segearth_geo.prediction import ChipPrediction, Target, clean_prompt

VERSION = 1
REQUEST_MAGIC, RESPONSE_MAGIC = b"SEGC", b"SEGM"
PREFIX = struct.Struct("<4sB3xI")  # magic, version, 3 reserved bytes, header length
CHIPS_TYPE = "application/x-segearth-chips"
MASKS_TYPE = "application/x-segearth-masks"
REQUEST_FIELDS = ("prompts", "chips", "threshold", "score_threshold", "compress")
COMPRESS_LEVEL = 1  # zlib: probability maps are mostly 0 or 255; level 1 gets most of it at ~200 MB/s


class WireError(SegEarthGeoError, ValueError):
    """A body that does not follow the wire format; ``status`` is the HTTP status the server answers with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    """What one request may hold (the server refuses more with a 4xx and says which limit)."""

    chip_size: int
    max_chips: int = 64
    max_prompts: int = 16
    max_prompt_chars: int = 1000
    max_header_bytes: int = 256 * 1024

    @property
    def max_body(self) -> int:
        return PREFIX.size + self.max_header_bytes + self.max_chips * self.chip_size**2 * 3

    def to_dict(self) -> dict[str, int]:
        return {"chip_size": self.chip_size, "max_chips": self.max_chips, "max_prompts": self.max_prompts,
                "max_prompt_chars": self.max_prompt_chars, "max_header_bytes": self.max_header_bytes,
                "max_body": self.max_body}


@dataclass
class SegmentRequest:
    """A decoded request: cleaned prompts, chips (owned copies), the client's threshold and options."""

    prompts: list[str]
    chips: list[np.ndarray]
    threshold: float = 0.5
    score_threshold: float | None = None
    compress: bool = False


# ---------------------------------------------------------------------------------------------- framing
def _frame(magic: bytes, header: dict[str, Any]) -> bytes:
    text = json.dumps(header, separators=(",", ":"), allow_nan=False).encode("ascii")  # lone surrogates escaped
    return PREFIX.pack(magic, VERSION, len(text)) + text


def _unframe(body: bytes | memoryview, magic: bytes, max_header: int) -> tuple[dict[str, Any], memoryview]:
    view = memoryview(body)
    if len(view) < PREFIX.size:
        raise WireError(f"the body is {len(view)} bytes, shorter than the {PREFIX.size}-byte prefix")
    got, version, size = PREFIX.unpack_from(view)
    if got != magic:
        raise WireError(f"the body does not start with {magic!r} (wire format {VERSION}, see docs/serve.md)")
    if version != VERSION:
        raise WireError(f"wire format version {version} is not supported (this server speaks {VERSION})")
    if size > max_header or size > len(view) - PREFIX.size:
        raise WireError(f"the header length {size} exceeds the body or the limit of {max_header} bytes")
    try:
        header = json.loads(bytes(view[PREFIX.size:PREFIX.size + size]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise WireError(f"the header is not UTF-8 JSON ({type(exc).__name__})") from None
    if not isinstance(header, dict):
        raise WireError("the header must be a JSON object")
    return header, view[PREFIX.size + size:]


# ---------------------------------------------------------------------------------------------- request
def encode_request(chips: list[np.ndarray], prompts: list[str], threshold: float = 0.5,
                   score_threshold: float | None = None, compress: bool = True) -> list[bytes | memoryview]:
    """The request body as buffers to send back to back (the chips are not copied)."""
    arrays = [np.ascontiguousarray(chip, dtype=np.uint8) for chip in chips]
    for chip in arrays:
        if chip.ndim != 3 or chip.shape[2] != 3:
            raise WireError(f"a chip must be uint8 (h, w, 3), got shape {chip.shape}")
    header = {"prompts": list(prompts), "chips": [[int(c.shape[0]), int(c.shape[1])] for c in arrays],
              "threshold": float(threshold), "score_threshold": score_threshold, "compress": bool(compress)}
    return [_frame(REQUEST_MAGIC, header), *(memoryview(chip).cast("B") for chip in arrays)]


def decode_request(body: bytes | memoryview, limits: Limits) -> SegmentRequest:
    """Check a request body against ``limits``; :class:`WireError` (with its HTTP status) for anything wrong."""
    header, payload = _unframe(body, REQUEST_MAGIC, limits.max_header_bytes)
    unknown = sorted(set(header) - set(REQUEST_FIELDS))
    if unknown:
        raise WireError(f"unknown header field(s) {', '.join(map(repr, unknown))[:200]}; the fields are "
                        f"{', '.join(REQUEST_FIELDS)}")
    prompts = _prompts(header.get("prompts"), limits)
    shapes = _shapes(header.get("chips"), limits)
    threshold = _number(header.get("threshold", 0.5), "threshold", 0.0, 1.0)
    score = header.get("score_threshold")
    score = None if score is None else _number(score, "score_threshold", 0.0, 1.0)
    if score is not None and score >= 1.0:
        raise WireError("\"score_threshold\" must be below 1")
    compress = header.get("compress", False)
    if not isinstance(compress, bool):
        raise WireError("\"compress\" must be true or false")
    expected = sum(h * w * 3 for h, w in shapes)
    if len(payload) != expected:
        raise WireError(f"the payload holds {len(payload)} bytes; the chips declared need {expected}")
    chips, offset = [], 0
    for h, w in shapes:  # owned copies: nothing refers to the request's buffer afterwards
        chips.append(np.frombuffer(payload, np.uint8, h * w * 3, offset).reshape(h, w, 3).copy())
        offset += h * w * 3
    return SegmentRequest(prompts, chips, threshold, score, compress)


def _prompts(value: Any, limits: Limits) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(p, str) for p in value):
        raise WireError("\"prompts\" must be a non-empty list of strings")
    if len(value) > limits.max_prompts:
        raise WireError(f"{len(value)} prompts in one request; the limit is {limits.max_prompts}", 413)
    cleaned = []
    for text in value:
        if len(text) > limits.max_prompt_chars:
            raise WireError(f"a prompt of {len(text)} characters; the limit is {limits.max_prompt_chars}", 413)
        try:
            cleaned.append(clean_prompt(text))
        except SegEarthGeoError as exc:
            raise WireError(str(exc)) from None
    return list(dict.fromkeys(cleaned))


def _shapes(value: Any, limits: Limits) -> list[tuple[int, int]]:
    if not isinstance(value, list) or not value:
        raise WireError("\"chips\" must be a non-empty list of [height, width] pairs")
    if len(value) > limits.max_chips:
        raise WireError(f"{len(value)} chips in one request; the limit is {limits.max_chips}", 413)
    shapes = []
    for pair in value:
        if (not isinstance(pair, list) or len(pair) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair)):
            raise WireError("each entry of \"chips\" must be [height, width] (two integers)")
        h, w = pair
        if not (1 <= h <= limits.chip_size and 1 <= w <= limits.chip_size):
            raise WireError(f"a chip of {h} x {w} pixels; the model takes chips of 1 to {limits.chip_size} pixels "
                            "a side", 413)
        shapes.append((h, w))
    return shapes


def _number(value: Any, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise WireError(f"\"{name}\" must be a finite number")
    if not low <= value <= high:
        raise WireError(f"\"{name}\" must be between {low:g} and {high:g}")
    return float(value)


# ---------------------------------------------------------------------------------------------- response
def target_block(probability: np.ndarray, threshold: float, compress: bool) -> bytes:
    """One target on the wire: uint8 ``round(p * 255)`` then the packed bits of ``p >= threshold``."""
    prob = np.asarray(probability, dtype=np.float32)
    quantised = np.rint(np.clip(np.nan_to_num(prob, nan=0.0), 0.0, 1.0) * 255.0).astype(np.uint8)
    # The same comparison as the engine's Stitcher (float32 array against a Python float).
    bits = np.packbits(prob >= float(threshold), axis=None)
    block = quantised.tobytes() + bits.tobytes()
    return zlib.compress(block, COMPRESS_LEVEL) if compress else block


def encode_response(results: list[list[ChipPrediction]], threshold: float, compress: bool,
                    cache: dict[str, Any] | None = None) -> list[bytes]:
    """The response body as buffers (``results``: per prompt, per chip)."""
    header_results, blocks = [], []
    for per_prompt in results:
        rows = []
        for prediction in per_prompt:
            targets = []
            for target in prediction.targets:
                block = target_block(target.probability, threshold, compress)
                blocks.append(block)
                score = target.score
                targets.append({"label": str(target.label), "size": len(block),
                                "score": None if score is None or not math.isfinite(score) else float(score)})
            rows.append({"answer": str(prediction.answer), "targets": targets})
        header_results.append(rows)
    header = {"results": header_results, "compress": bool(compress), "cache": cache}
    return [_frame(RESPONSE_MAGIC, header), *blocks]


def decode_response(body: bytes, shapes: list[tuple[int, int]], prompts: int,
                    threshold: float) -> tuple[list[list[ChipPrediction]], dict[str, Any] | None]:
    """Rebuild ``(per prompt, per chip predictions, cache counters)``; :class:`WireError` for a malformed body."""
    header, payload = _unframe(body, RESPONSE_MAGIC, 64 * 2**20)
    results, compress = header.get("results"), header.get("compress")
    if not isinstance(results, list) or len(results) != prompts or not isinstance(compress, bool):
        raise WireError("the response does not answer the request's prompts")
    out, offset = [], 0
    for per_prompt in results:
        if not isinstance(per_prompt, list) or len(per_prompt) != len(shapes):
            raise WireError("the response does not answer every chip")
        predictions = []
        for row, (h, w) in zip(per_prompt, shapes):
            targets = []
            for item in row.get("targets", []) if isinstance(row, dict) else []:
                size = item.get("size") if isinstance(item, dict) else None
                if not isinstance(size, int) or size < 0 or offset + size > len(payload):
                    raise WireError("the response's payload is shorter than its header says")
                probability = decode_target(payload[offset:offset + size], h, w, threshold, compress)
                offset += size
                targets.append(Target(str(item.get("label", "")), probability, item.get("score")))
            predictions.append(ChipPrediction(str(row.get("answer", "")) if isinstance(row, dict) else "", targets))
        out.append(predictions)
    if offset != len(payload):
        raise WireError("the response's payload is longer than its header says")
    cache = header.get("cache")
    return out, cache if isinstance(cache, dict) else None


def decode_target(block: memoryview | bytes, h: int, w: int, threshold: float, compress: bool) -> np.ndarray:
    """float32 ``(h, w)`` probabilities whose ``>= threshold`` equals the server's bits, within 1/255 of its values."""
    pixels, packed = h * w, (h * w + 7) // 8
    if compress:
        inflater = zlib.decompressobj()
        try:
            data = inflater.decompress(bytes(block), pixels + packed)
        except zlib.error as exc:
            raise WireError(f"a target block is not zlib data ({exc})") from None
        if not inflater.eof or inflater.unconsumed_tail:
            raise WireError("a target block is longer than its chip")
    else:
        data = bytes(block)
    if len(data) != pixels + packed:
        raise WireError("a target block does not match its chip's size")
    quantised = np.frombuffer(data, np.uint8, pixels).reshape(h, w)
    above = np.unpackbits(np.frombuffer(data, np.uint8, packed, pixels), count=pixels).reshape(h, w).astype(bool)
    probability = quantised.astype(np.float32) / np.float32(255.0)
    t = float(threshold)
    rebuilt = probability >= t
    probability[above & ~rebuilt] = np.float32(t)  # float32(t) >= t in the engine's float32 comparison
    probability[~above & rebuilt] = np.nextafter(np.float32(t), np.float32(-1.0))
    return probability


# ---------------------------------------------------------------------------------------------- errors
def error_body(error: str, message: str) -> bytes:
    """A one-line JSON error (``{"error": "BadRequest", "message": "..."}``)."""
    line = " ".join(str(message).split())[:500]
    return json.dumps({"error": error, "message": line}).encode("utf-8")


__all__ = ["CHIPS_TYPE", "Limits", "MASKS_TYPE", "SegmentRequest", "VERSION", "WireError", "decode_request",
           "decode_response", "decode_target", "encode_request", "encode_response", "error_body", "target_block"]
