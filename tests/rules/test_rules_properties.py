"""Property tests: random nested JSON seeded with sensitive values, masked in every style."""

from __future__ import annotations

import json
import re
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toolgate.rules import Call, evaluate, load_rules_text

SENSITIVE = [
    "123-45-6789",
    "234 56 7890",
    "4242 4242 4242 4242",
    "4111-1111-1111-1111",
    "378282246310005",
    "jane.doe@example.com",
    "ops+alerts@mail.example.org",
    "DE89 3704 0044 0532 0130 00",
    "GB82WEST12345698765432",
    "+44 20 7946 0958",
    "(415) 555-2671",
    "AKIAIOSFODNN7EXAMPLE",
]
CARD_NUMBERS = [4242424242424242, 5555555555554444, 4111111111111111]

RULES = {
    style: load_rules_text(
        f"""
labels:
  - {{name: ssn, level: restricted, detector: us_ssn}}
  - {{name: card, level: restricted, detector: credit_card}}
  - {{name: email, level: confidential, detector: email}}
  - {{name: iban, level: restricted, detector: iban}}
  - {{name: phone, level: confidential, detector: phone}}
  - {{name: aws, level: restricted, detector: aws_access_key}}
rules:
  - {{id: mask-all, match: {{levels: [restricted, confidential]}}, action: mask, mask: {style}}}
"""
    )
    for style in ("redact", "partial", "hash", "remove")
}
KEY = b"property-test-key"
PLAIN = re.compile(r"[a-z ]*")  # unlabelled text is drawn from this alphabet; no mask output matches it

words = st.text(alphabet="abcdefghij ", max_size=12)
unlabelled = st.one_of(words, st.integers(min_value=-1000, max_value=10**6), st.booleans(), st.none())
embedded = st.builds(lambda before, value, after: f"{before} {value} {after}", st.text("abc", max_size=5), st.sampled_from(SENSITIVE), st.text("xyz", max_size=5))
sensitive = st.one_of(st.sampled_from(SENSITIVE), st.sampled_from(CARD_NUMBERS), embedded)
leaves = st.one_of(unlabelled, unlabelled, sensitive)


def _containers(children):
    structures = st.one_of(st.lists(children, min_size=1, max_size=4), st.dictionaries(st.text("kLmN", min_size=1, max_size=4), children, min_size=1, max_size=4))
    as_json_text = structures.map(lambda value: json.dumps(value))  # JSON nested inside a string
    return st.one_of(structures, structures, as_json_text)


bodies = st.recursive(leaves, _containers, max_leaves=16)
styles = st.sampled_from(sorted(RULES))


def mask(body, style):
    return evaluate(RULES[style], Call(direction="response", body=body), KEY)


def raw_values(body) -> set[str]:
    """Every sensitive value placed in the body, as text."""
    found = set()
    text = json.dumps(body)
    for value in SENSITIVE:
        if value in text:
            found.add(value)
    for number in CARD_NUMBERS:
        if str(number) in text:
            found.add(str(number))
    return found


def decoded(value):
    """A string holding a non-empty JSON object or array, decoded (masking reaches inside it);
    any other value as it is."""
    if isinstance(value, str):
        stripped = value.strip()
        if stripped[:1] in ("{", "[") and stripped[-1:] in ("}", "]"):
            try:
                inner = json.loads(stripped)
            except ValueError:
                return value
            if isinstance(inner, (dict, list)) and inner:
                return inner
    return value


def leaves_of(value) -> list:
    """Leaf values, with JSON-in-string decoded, so masking inside it is seen."""
    value = decoded(value)
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in leaves_of(item)]
    if isinstance(value, list):
        return [leaf for item in value for leaf in leaves_of(item)]
    return [value]


def unlabelled_leaves(value) -> Counter:
    def plain(leaf) -> bool:
        if isinstance(leaf, str):
            return PLAIN.fullmatch(leaf) is not None
        return leaf is None or isinstance(leaf, bool) or (isinstance(leaf, int) and abs(leaf) < 10**12)

    return Counter(json.dumps(leaf) for leaf in leaves_of(value) if plain(leaf))


def skeleton(value):
    """Shape only: dict keys and list lengths (JSON-in-string decoded)."""
    value = decoded(value)
    if isinstance(value, dict):
        return {key: skeleton(item) for key, item in value.items()}
    if isinstance(value, list):
        return [skeleton(item) for item in value]
    return "leaf"


def leaf_pairs(before, after):
    """(input leaf, output leaf) at the same places of two bodies of the same shape."""
    before, after = decoded(before), decoded(after)
    if isinstance(before, dict):
        for key in before:
            yield from leaf_pairs(before[key], after[key])
    elif isinstance(before, list):
        for item, masked in zip(before, after):
            yield from leaf_pairs(item, masked)
    else:
        yield before, after


SPLIT = re.compile("|".join(re.escape(value) for value in SENSITIVE))


SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(body=bodies, style=styles)
def test_masked_output_is_valid_json_without_raw_values(body, style):
    decision = mask(body, style)
    text = json.dumps(decision.body)
    assert json.loads(text) == decision.body
    for value in raw_values(body):
        assert value not in text, f"{value!r} survived {style} masking"


@SETTINGS
@given(body=bodies, style=styles)
def test_unlabelled_values_are_unchanged(body, style):
    decision = mask(body, style)
    assert unlabelled_leaves(decision.body) == unlabelled_leaves(body)
    if style != "remove":
        assert skeleton(decision.body) == skeleton(body)
        for original, masked in leaf_pairs(body, decision.body):
            if isinstance(original, str):  # the text around a masked span is kept as it was
                pieces = SPLIT.split(original)
                assert masked.startswith(pieces[0]) and masked.endswith(pieces[-1])
                position = 0
                for piece in pieces:
                    position = masked.index(piece, position) + len(piece)


@SETTINGS
@given(body=bodies, style=styles)
def test_masking_twice_equals_masking_once(body, style):
    once = mask(body, style).body
    twice = mask(once, style)
    assert twice.body == once
    assert not twice.changed


@SETTINGS
@given(body=bodies)
def test_every_raw_value_is_found(body):
    decision = mask(body, "redact")
    if raw_values(body):
        assert decision.findings
    assert all(len(finding.fingerprint) == 64 for finding in decision.findings)
