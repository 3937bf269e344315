"""The worker's wire format: strict JSON out, requests in (parsed once into a :class:`Request`), id keys.

Robustness rules (each one a hostile-input defect once):

* every reply goes through :func:`encode_reply`, which always yields strict JSON in valid UTF-8 (non-finite
  numbers become ``null``, lone surrogates the six characters ``\\udcXX``);
* ids are checked at the door (:func:`id_key`): any JSON id works except ``null`` and values strict JSON
  cannot carry back unchanged; the job table is keyed by an id's canonical JSON;
* a request names a known ``type`` and only the fields that type has (a typo is refused, never ignored).
"""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from segearth_geo.errors import SegEarthGeoError, UsageError


class RequestRejected(SegEarthGeoError):
    """A request refused before it ran; ``request_id`` is what the error reply carries (``None``: unknown)."""

    def __init__(self, request_id: Any, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.request_id = request_id
        self.fields = fields


@dataclass
class Request:
    """One parsed request.

    Attributes:
        id: the request's id as sent (any JSON value but ``null``); ``key`` its canonical JSON.
        type: the request type.
        fields: the request's other fields, as sent.
        arguments: what the request type's check made of ``fields`` (set at the door).
    """

    id: Any
    key: str
    type: str
    fields: dict[str, Any]
    arguments: Any = None
    describe: str = field(default="", repr=False)


# -- strict JSON out ------------------------------------------------------------------------------
def clean_text(text: str) -> str:
    """``text`` as valid Unicode: each lone surrogate becomes the six characters ``\\udcXX``.

    Lone surrogates are how Python carries bytes that are not UTF-8 (e.g. in file names,
    ``surrogateescape``); they cannot be written as UTF-8.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def json_safe(value: Any) -> Any:
    """``value`` made of plain JSON types: non-finite floats -> ``None``, text cleaned by :func:`clean_text`.

    Numpy values become Python ones (``tolist()``), paths and other objects their text;
    dict keys become text the way :func:`json.dumps` writes them.
    """
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {_json_key(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_safe(v) for v in (sorted(value) if isinstance(value, (set, frozenset)) else value)]
    if callable(getattr(value, "tolist", None)):  # numpy scalars and arrays
        return json_safe(value.tolist())
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return json_safe(float(value))
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, os.PathLike):
        return clean_text(os.fsdecode(value))
    return clean_text(str(value))


def _json_key(key: Any) -> str:
    if isinstance(key, str):
        return clean_text(key)
    safe = json_safe(key)
    return safe if isinstance(safe, str) else json.dumps(safe)


def encode_reply(message: dict[str, Any]) -> str:
    """One reply line (without the newline): strict JSON (no NaN/Infinity), valid UTF-8 text."""
    return json.dumps(json_safe(message), ensure_ascii=False, allow_nan=False)


# -- ids ------------------------------------------------------------------------------------------
def id_key(value: Any, what: str = "id") -> str:
    """The canonical JSON of a request id (or cancel target): the key of the job table.

    Any JSON value is a valid id except ``null`` (it marks messages that answer no request)
    and values that strict JSON cannot carry back unchanged: ``NaN``, ``Infinity``, numbers
    beyond the double range such as ``1e400`` (Python reads them as infinity) and strings
    with lone surrogates (``"\\ud800"``). Object keys are sorted, so ``{"a":1,"b":2}`` and
    ``{"b":2,"a":1}`` are the same id; ``1``, ``1.0`` and ``true`` are three different ids.

    Raises:
        UsageError: the value cannot be an id.
    """
    if value is None:
        raise UsageError(f"{what} must not be null (null marks replies that answer no request); use a string")
    try:
        key = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        key.encode("utf-8")
    except (ValueError, UnicodeEncodeError, RecursionError) as exc:
        raise UsageError(f"{what} cannot be echoed back as strict JSON (NaN, Infinity, a number beyond the "
                         f"double range or a lone surrogate: {type(exc).__name__}); use a string") from exc
    return key


def describe_id(request_id: Any) -> str:
    """An id as it appears in messages (its JSON)."""
    try:
        return clean_text(json.dumps(request_id, ensure_ascii=False))
    except (ValueError, RecursionError):
        return "<id>"


# -- requests in ----------------------------------------------------------------------------------
def parse_request(line: bytes | str, allowed: Mapping[str, tuple[str, ...]]) -> Request | None:
    """One input line -> a :class:`Request` with a valid ``id``, a type of ``allowed`` and only its fields.

    Returns ``None`` for a blank line. Raises :class:`RequestRejected` (with the id to answer: ``None``
    while the id is unknown or unusable).
    """
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RequestRejected(None, f"request line is not valid UTF-8 (byte 0x{exc.object[exc.start]:02x} at "
                                  f"offset {exc.start}); send UTF-8 JSON, one object per line") from exc
    line = line.strip()
    if not line:
        return None
    try:
        message = json.loads(line)
    except json.JSONDecodeError as exc:
        raise RequestRejected(None, f"request is not valid JSON ({exc.msg} at column {exc.colno}); "
                              "send one JSON object per line") from exc
    except (ValueError, RecursionError) as exc:  # e.g. an integer of more than 4300 digits, deep nesting
        raise RequestRejected(None, f"request cannot be read ({type(exc).__name__}: {exc})") from exc
    if not isinstance(message, dict):
        raise RequestRejected(None, "request must be a JSON object with \"id\" and \"type\"")
    if "id" not in message:
        raise RequestRejected(None, "request has no \"id\"; every request needs one")
    request_id = message["id"]
    try:
        key = id_key(request_id)
    except UsageError as exc:
        raise RequestRejected(None, str(exc)) from exc
    kind = message.get("type")
    if not isinstance(kind, str) or kind not in allowed:
        raise RequestRejected(request_id, f"unknown request type {kind!r}; expected one of {', '.join(allowed)}")
    unknown = sorted(set(message) - set(allowed[kind]))
    if unknown:
        raise RequestRejected(request_id, f"unknown field{'s' if len(unknown) > 1 else ''} "
                              f"{', '.join(map(repr, unknown))} in a {kind} request; allowed: "
                              f"{', '.join(allowed[kind])}", error="UsageError")
    fields = {k: v for k, v in message.items() if k not in ("id", "type")}
    return Request(request_id, key, kind, fields, describe=describe_id(request_id))


__all__ = ["Request", "RequestRejected", "clean_text", "describe_id", "encode_reply", "id_key", "json_safe",
           "parse_request"]
