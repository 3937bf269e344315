"""The wire format of the model server: lossless chips, uint8 probabilities whose threshold bits are exact, and a
decoder that refuses anything malformed with a :class:`WireError` (never another exception)."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segearth_geo.prediction import ChipPrediction, Target
from segearth_geo.serve.wire import (
    PREFIX,
    Limits,
    WireError,
    decode_request,
    decode_response,
    decode_target,
    encode_request,
    encode_response,
    target_block,
)

LIMITS = Limits(chip_size=64, max_chips=8, max_prompts=3, max_prompt_chars=50)


def _body(parts) -> bytes:
    return b"".join(bytes(p) for p in parts)


def test_chips_and_prompts_round_trip_losslessly():
    rng = np.random.default_rng(0)
    chips = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(64, 64), (5, 64), (1, 1)]]
    request = decode_request(_body(encode_request(chips, ["red", " the  blue\u200b "], 0.3, None)), LIMITS)
    assert request.prompts == ["red", "the blue"] and request.threshold == 0.3 and request.compress
    for a, b in zip(chips, request.chips):
        np.testing.assert_array_equal(a, b)
        assert b.flags.writeable  # an owned copy, not a view of the request body


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), threshold=st.floats(0, 1), compress=st.booleans(),
       h=st.integers(1, 40), w=st.integers(1, 40))
def test_rebuilt_probabilities_threshold_exactly_like_the_server(seed, threshold, compress, h, w):
    rng = np.random.default_rng(seed)
    prob = rng.random((h, w), dtype=np.float32)
    near = rng.random((h, w)) < 0.5  # half the pixels within a hair of the threshold
    prob[near] = np.float32(threshold) + rng.uniform(-2e-3, 2e-3, near.sum()).astype(np.float32)
    prob = np.clip(prob, 0, 1).astype(np.float32)
    rebuilt = decode_target(target_block(prob, threshold, compress), h, w, threshold, compress)
    assert rebuilt.dtype == np.float32 and rebuilt.shape == (h, w)
    np.testing.assert_array_equal(rebuilt >= threshold, prob >= threshold)
    assert np.abs(rebuilt - prob).max() < 1 / 255


def test_response_round_trip_keeps_answers_labels_scores_and_cache():
    probs = [np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4), np.zeros((3, 4), np.float32)]
    results = [[ChipPrediction("Sure [SEG] [SEG]", [Target("roof", probs[0], 0.75), Target("pool\udcfe", probs[1])]),
                ChipPrediction("nothing", [])]]
    cache = {"hits": {"vision": 1}, "misses": {}, "evictions": 0}
    body = _body(encode_response(results, 0.5, True, cache))
    out, got_cache = decode_response(body, [(3, 4), (3, 4)], 1, 0.5)
    assert got_cache == cache
    first = out[0][0]
    assert first.answer == "Sure [SEG] [SEG]" and [t.label for t in first.targets] == ["roof", "pool\udcfe"]
    assert first.targets[0].score == 0.75 and first.targets[1].score is None
    np.testing.assert_array_equal(first.targets[0].probability >= 0.5, probs[0] >= 0.5)
    assert out[0][1].targets == []


def _request(header: bytes, payload: bytes = b"", magic: bytes = b"SEGC", version: int = 1) -> bytes:
    return PREFIX.pack(magic, version, len(header)) + header + payload


@pytest.mark.parametrize("body, status, words", [
    (b"", 400, "shorter"),
    (b"GET / HTTP/1.1\r\n\r\n", 400, "does not start"),
    (_request(b"{}", version=9), 400, "version 9"),
    (PREFIX.pack(b"SEGC", 1, 2**31) + b"{}", 400, "header length"),
    (_request(b"\xff\xfe"), 400, "UTF-8 JSON"),
    (_request(b"[1, 2]"), 400, "JSON object"),
    (_request(b'{"prompts": ["red"], "chips": [[2, 2]], "treshold": 0.5}'), 400, "treshold"),
    (_request(b'{"prompts": [], "chips": [[2, 2]]}'), 400, "non-empty list"),
    (_request(b'{"prompts": ["a", "b", "c", "d"], "chips": [[2, 2]]}'), 413, "limit is 3"),
    (_request(b'{"prompts": ["' + b"x" * 60 + b'"], "chips": [[2, 2]]}'), 413, "60 characters"),
    (_request(b'{"prompts": ["\\u200b"], "chips": [[2, 2]]}'), 400, "empty"),
    (_request(b'{"prompts": ["red"], "chips": [[65, 2]]}'), 413, "1 to 64"),
    (_request(b'{"prompts": ["red"], "chips": [[2, 2.0]]}'), 400, "two integers"),
    (_request(b'{"prompts": ["red"], "chips": [[0, 2]]}'), 413, "1 to 64"),
    (_request(b'{"prompts": ["red"], "chips": ' + str([[1, 1]] * 9).encode() + b'}'), 413, "limit is 8"),
    (_request(b'{"prompts": ["red"], "chips": [[2, 2]], "threshold": NaN}', bytes(12)), 400, "finite"),
    (_request(b'{"prompts": ["red"], "chips": [[2, 2]], "threshold": 2}', bytes(12)), 400, "between"),
    (_request(b'{"prompts": ["red"], "chips": [[2, 2]], "score_threshold": 1}', bytes(12)), 400, "below 1"),
    (_request(b'{"prompts": ["red"], "chips": [[2, 2]], "compress": "yes"}', bytes(12)), 400, "true or false"),
    (_request(b'{"prompts": ["red"], "chips": [[2, 2]]}', bytes(11)), 400, "need 12"),
    (_request(b'{"prompts": ["red"], "chips": [[2, 2]]}', bytes(13)), 400, "need 12"),
    (_request(b'{"prompts": ["red"], "chips": [[2, 2]]}' + b" " * 20, b"", b"SEGC") [:30], 400, "header length"),
    (_request(b'[' * 100000 + b']' * 100000), 400, "header length"),
])
def test_malformed_requests_are_refused_with_a_status_and_one_line(body, status, words):
    with pytest.raises(WireError) as caught:
        decode_request(body, Limits(chip_size=64, max_chips=8, max_prompts=3, max_prompt_chars=50,
                                    max_header_bytes=4096))
    assert caught.value.status == status and words in str(caught.value) and "\n" not in str(caught.value)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_no_byte_string_raises_anything_but_a_wire_error(data):
    for body in (data, PREFIX.pack(b"SEGC", 1, len(data)) + data):
        try:
            decode_request(body, LIMITS)
        except WireError:
            pass


def test_a_malformed_response_is_a_wire_error():
    good = _body(encode_response([[ChipPrediction("a", [Target("x", np.ones((2, 2), np.float32))])]], 0.5, True))
    with pytest.raises(WireError):
        decode_response(good[:-3], [(2, 2)], 1, 0.5)
    with pytest.raises(WireError):
        decode_response(good, [(2, 2), (2, 2)], 1, 0.5)
    bomb = struct.pack("<4sB3xI", b"SEGM", 1, 0)
    with pytest.raises(WireError):
        decode_response(bomb, [(2, 2)], 1, 0.5)
