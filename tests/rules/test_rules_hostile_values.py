"""Values written to slip past the detectors: split by characters a reader does not see
(zero-width, soft hyphen, word joiner, BOM, bidi and control characters), hidden behind JSON
unicode escapes, or written as JSON numbers in exponent form. Each must be found and masked like
its plain form, with the same fingerprint; look-alikes must still be rejected."""

from __future__ import annotations

import json

import pytest

from toolgate.rules import Call, evaluate
from toolgate.rules.protocols import Malformed, parse_request

CARD, SSN = "4111111111111111", "536-22-1234"


def decide(packs, key, body):
    return evaluate(packs, Call(direction="response", protocol="rest", function="x", body=body), key)


def fingerprints(decision, label):
    return {f.fingerprint for f in decision.findings if f.label == label}


@pytest.mark.parametrize("gap", ["\u200b", "\u200c", "\u200d", "\u00ad", "\u2060", "\ufeff",
                                 "\u202e", "\x00", "\x01", "\U000e0020"],
                         ids=["zwsp", "zwnj", "zwj", "soft-hyphen", "word-joiner", "bom",
                              "bidi-override", "nul", "soh", "tag-space"])
def test_cards_and_ssns_split_by_invisible_characters_are_masked(packs, key, gap):
    plain = decide(packs, key, {"card": CARD, "ssn": SSN})
    card = gap.join(CARD[i:i + 4] for i in range(0, 16, 4))
    ssn = SSN[:3] + gap + SSN[3:]
    hidden = decide(packs, key, {"card": card, "ssn": ssn, "note": f"pay with {card} today"})
    assert {f.label for f in hidden.findings} == {"credit_card", "ssn"}
    assert fingerprints(hidden, "credit_card") == fingerprints(plain, "credit_card")
    assert fingerprints(hidden, "ssn") == fingerprints(plain, "ssn")
    # Partial masks keep the invisible characters where they were and show the last four.
    assert hidden.body["card"] == gap.join(["****"] * 3 + ["1111"])
    assert hidden.body["ssn"] == "***" + gap + "-**-1234"
    assert hidden.body["note"] == f"pay with {hidden.body['card']} today"


def test_invisible_characters_do_not_make_look_alikes_valid(packs, key):
    # Not Luhn-valid, with or without the zero-width spaces.
    assert decide(packs, key, {"n": "4111\u200b1111\u200b1111\u200b1112"}).findings == ()
    # Digits from two separate strings never join into one value.
    assert decide(packs, key, {"a": "41111111", "b": "11111111"}).findings == ()


def test_unicode_escapes_hiding_digits_are_read_as_the_digits(packs, key):
    body = b'{"card": "\\u0034\\u0031\\u0031\\u0031 1111 1111 1111", "ssn": "\\u0035\\u00336-22-1234"}'
    [unit] = parse_request("/x", "application/json", body).units
    decision = decide(packs, key, unit.body)
    assert decision.body == {"card": "**** **** **** 1111", "ssn": "***-**-1234"}


@pytest.mark.parametrize("number", ["4.111111111111111e15", "4111111111111111e0",
                                    "4111111111111111.0", "41111111111111.11e2"])
def test_a_card_in_exponent_form_is_the_card(packs, key, number):
    """A JSON number with a fraction or exponent whose value is a whole number is the integer
    a backend reads (cards up to 16 digits are exact in a double): it is a card like the
    integer form, masked whole, with the same fingerprint."""
    plain = decide(packs, key, {"card": int(CARD)})
    [unit] = parse_request("/x", "application/json", b'{"card": %s}' % number.encode()).units
    decision = decide(packs, key, unit.body)
    assert decision.body == {"card": "************1111"}
    assert fingerprints(decision, "credit_card") == fingerprints(plain, "credit_card")


@pytest.mark.parametrize("number", [4.1111111111111115e15, 1e300, -4.111111111111111e15, 4111.5])
def test_numbers_that_are_not_cards_are_left_alone(packs, key, number):
    assert decide(packs, key, {"n": number}).findings == ()


def test_json_too_deep_to_parse_is_malformed_whatever_its_type():
    deep = b"[" * 100_000 + b"]" * 100_000
    for ctype in ("application/json", "text/plain", "application/octet-stream", None):
        with pytest.raises(Malformed):
            parse_request("/x", ctype, deep)


def test_pii_in_json_nested_in_strings_several_levels_deep(packs, key):
    inner = {"ssn": SSN}
    for name in "dcba":
        inner = {name: json.dumps(inner)}
    decision = decide(packs, key, inner)
    assert [f.path for f in decision.findings] == ["$.a<json>.b<json>.c<json>.d<json>.ssn"]
    assert SSN not in json.dumps(decision.body)


def test_a_value_written_with_invisible_characters_is_fingerprinted_as_read():
    """`10.0.0\\u00ad.1` reads as 10.0.0.1: found, masked, and fingerprinted as the clean value
    (the engine before the core raised ValueError on it, failing the call)."""
    from toolgate.rules import bundled_packs_path, load_rules

    packs = load_rules(bundled_packs_path())
    key = b"k" * 32
    hidden = evaluate(packs, Call(direction="response", body={"host": "10.0.0\u00ad.1"}), key)
    clean = evaluate(packs, Call(direction="response", body={"host": "10.0.0.1"}), key)
    assert [f.label for f in hidden.findings] == ["ip_address"]
    assert hidden.findings[0].fingerprint == clean.findings[0].fingerprint
    assert "10.0.0" not in str(hidden.record_body)
