"""The strict JSON reader's fast path (Python's C decoder, then the core's duplicate-key check)
against its reader of record (one Python call per object): the same values, the same refusals
with the same messages, on generated bodies with duplicate keys at every depth, escaped keys,
long keys with escapes at every offset, objects of more than sixteen keys, surrogate pairs,
constants and broken text."""

from __future__ import annotations

import json
import random

import pytest

from toolgate.rules.protocols import jsonbody
from toolgate.rules.protocols.base import Malformed

KEYS = ["a", "b", "\\u0061", "\\ud83d\\ude00", "😀", "a\\\"", "a\\u0022", "é", "\\u00e9", "x y", "",
        "\\ud800", "\\udc00"]


# Pieces of long keys and strings: the duplicate-key check reads strings eight bytes at a time,
# so escapes and quotes must fall at every offset of those words.
PIECES = ["a", "bcdefgh", "\\\\", "\\\"", "\\u005c", "\\u0022", "é", "😀", "\\ud83d\\ude00", " ", "x"]


def _long(rng: random.Random) -> str:
    return "".join(rng.choice(PIECES) for _ in range(rng.randint(1, 8)))


def _text(rng: random.Random, depth: int = 0, pool: list[str] | None = None) -> str:
    if pool is None:  # per body: long keys that repeat, so that duplicates among them come up
        pool = [_long(rng) for _ in range(4)]
    kind = rng.random()
    if depth > 3 or kind < 0.3:
        return rng.choice(['1', '"s"', 'true', 'null', '"a,\\"b\\":"', '[]', '{}', 'NaN', '1e400', '"\\ud800"',
                           str(2**70), '-0', '-0.0', '1.5e-7', '0.1', '"\\u00e9\\n"', 'Infinity', '1E5',
                           f'"{_long(rng)}"', str(10**18), str(10**18 - 1)])
    if kind < 0.55:
        return "[" + ", ".join(_text(rng, depth + 1, pool) for _ in range(rng.randint(0, 3))) + "]"
    if rng.random() < 0.05:  # past the sixteen keys the check searches in a list: distinct
        keys = rng.sample([f"k{i}" for i in range(30)] + pool, rng.randint(17, 22))
        if rng.random() < 0.5:  # then one of them again, maybe escaped
            again = rng.choice(keys)
            keys.append(again.replace("k", "\\u006b", 1) if rng.random() < 0.5 else again)
        # plain values: one that orjson refuses would send the body to the reader of record
        return "{" + ", ".join(f'"{key}": {i}' for i, key in enumerate(keys)) + "}"
    keys = [rng.choice(KEYS + pool) for _ in range(rng.randint(0, 4))]
    pairs = [f'"{key}": {_text(rng, depth + 1, pool)}' for key in keys]
    return "{" + ", ".join(pairs) + "}"


def _outcome(read, text):
    try:
        return ("value", read(text))
    except Malformed as exc:
        return ("refused", str(exc))



@pytest.mark.parametrize("seed", range(4))
def test_the_fast_reader_reads_and_refuses_as_the_reader_of_record(seed):
    rng = random.Random(seed)
    duplicates = 0
    for _ in range(3000):
        text = _text(rng)
        if rng.random() < 0.1:  # broken text too
            cut = rng.randrange(len(text) + 1)
            text = text[:cut] + rng.choice(["", ",", "}", '"'])
        expected = _outcome(_strict, text)
        actual = _outcome(jsonbody.loads, text)
        assert actual == expected, text
        if expected[0] == "value":  # the same values, of the same types
            assert repr(actual[1]) == repr(expected[1]), text
        duplicates += expected[0] == "refused" and "duplicate key" in expected[1]
    assert duplicates > 100


def _strict(text):
    """The reader before the fast path: every body through the per-object hook."""
    try:
        return jsonbody._DECODER.decode(text)
    except RecursionError:
        raise Malformed("the JSON is nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise Malformed(f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except ValueError as exc:
        raise Malformed(f"invalid JSON: {exc}") from None


def test_an_inner_duplicate_is_named_before_an_outer_one():
    with pytest.raises(Malformed, match="duplicate key 'b'"):
        jsonbody.loads('{"a": 1, "a": {"b": 1, "b": 2}}')
    with pytest.raises(Malformed, match="duplicate key 'a'"):
        jsonbody.loads('{"a": 1, "\\u0061": 2}')
