"""Strict JSON for bodies where rules apply.

A body the gateway reads differently from the backend is a bypass: duplicate keys (the backend
may read the other copy), invalid UTF-8, `NaN`, or nesting too deep to walk are refused as
malformed rather than guessed at. A body is read by orjson and checked for duplicate keys by the
native core; a body that fails either (or holds what orjson reads otherwise: NaN, numbers of 19
digits or more, lone surrogates) is read again by the strict reader, one Python call per
object, which accepts or refuses it and says why: the same values and refusals as that reader
alone.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from toolgate.rules.core import native
from toolgate.rules.protocols.base import Malformed


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        duplicate = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise Malformed(f"duplicate key {duplicate!r} in a JSON object")
    return obj


def _no_constants(name: str) -> Any:
    raise Malformed(f"{name} is not valid JSON")


# The reader of record, one Python call per object: it says exactly what is wrong with a body.
_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_constant=_no_constants)


def loads(data: bytes | str) -> Any:
    """Parse a JSON body, refusing what a backend could read differently."""
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise Malformed(f"the body is not valid UTF-8 (byte {exc.start})") from None
    else:
        text = data
    if text.startswith("\ufeff"):
        raise Malformed("the body starts with a byte order mark")
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        pass  # the reader of record decides (and says why): NaN, big integers, lone surrogates...
    else:
        if native.duplicate_key(text) == "":  # None: a lone surrogate or a huge number
            return value
    try:
        return _DECODER.decode(text)
    except RecursionError:
        raise Malformed("the JSON is nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise Malformed(f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        raise Malformed(f"invalid JSON: {exc}") from None


def dumps(value: Any) -> bytes:
    """Compact JSON, as forwarded after masking."""
    try:
        return orjson.dumps(value)
    except TypeError:  # integers beyond 64 bits, which orjson refuses
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def looks_like_json(data: bytes) -> bool:
    """Whether a body (whatever its content type claims) should be inspected as JSON."""
    head = data.lstrip()[:1]
    return head in (b"{", b"[")


def is_json(data: bytes | str) -> bool:
    """Whether `data` is JSON at all (leniently: duplicate keys are `loads`'s business)."""
    try:
        json.loads(data)
    except RecursionError:
        return True  # too deep to tell: `loads` refuses it as malformed, never read as text
    except ValueError:
        return False
    return True
