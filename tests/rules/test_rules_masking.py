"""Mask styles, in-string spans, whole values, embedded JSON, and leaving the input untouched."""

import copy
import json

import pytest

from toolgate.rules import Call, evaluate, fingerprint, hash_token, load_rules_text
from toolgate.rules.masking import candidate_fingerprints, generic_partial, is_mask_token
from toolgate.rules.walk import Document

LABELS = """
labels:
  - {name: ssn, level: restricted, detector: us_ssn}
  - {name: card, level: restricted, detector: credit_card}
  - {name: email, level: confidential, detector: email}
  - {name: password, level: restricted, paths: ["$..password"]}
  - {name: customer_ssn, level: restricted, paths: ["$.customers[*].ssn"]}
  - {name: note_email, level: confidential, detector: email, paths: ["$.notes"]}
"""


def ruleset(style: str, labels: str = "[ssn, card, email, password]"):
    return load_rules_text(LABELS + f"rules:\n  - {{id: m, match: {{labels: {labels}}}, action: mask, mask: {style}}}\n")


def mask(body, style="redact", key=b"k", labels="[ssn, card, email, password]"):
    return evaluate(ruleset(style, labels), Call(direction="response", body=body), key)


def test_redact_replaces_only_the_span_inside_text():
    decision = mask({"note": "call me, ssn 123-45-6789, thanks"})
    assert decision.body == {"note": "call me, ssn [REDACTED:ssn], thanks"}
    [finding] = decision.findings
    assert finding.path == "$.note" and finding.span == (13, 24) and finding.label == "ssn"
    assert finding.action == "mask" and finding.mask == "redact"


def test_partial_forms_in_a_body():
    body = {"ssn": "123-45-6789", "card": "4242 4242 4242 4242", "email": "jane.doe@example.com"}
    assert mask(body, "partial").body == {"ssn": "***-**-6789", "card": "**** **** **** 4242", "email": "j***@example.com"}


def test_a_card_in_a_json_number_becomes_a_string():
    decision = mask({"card": 4242424242424242, "id": 4242424242424241, "small": 42}, "partial")
    assert decision.body == {"card": "************4242", "id": 4242424242424241, "small": 42}
    assert [f.path for f in decision.findings] == ["$.card"]


def test_hash_tokens_are_keyed_stable_and_normalized():
    body = {"a": "4242 4242 4242 4242", "b": "4242424242424242", "c": 4242424242424242, "ssn": "123-45-6789"}
    first = mask(body, "hash", key=b"one").body
    assert first["a"] == first["b"] == first["c"]
    assert first["a"] == hash_token("card", "4242424242424242", b"one")
    assert first["a"].startswith("tok_card_") and len(first["a"]) == len("tok_card_") + 12
    assert first["ssn"].startswith("tok_ssn_")
    assert mask(body, "hash", key=b"one").body == first
    assert mask(body, "hash", key=b"two").body["a"] != first["a"]


def test_remove_deletes_fields_and_array_items():
    body = {"keep": "x", "ssn": "123-45-6789", "list": ["a", "123-45-6789", "b", "234-56-7890"], "nested": {"note": "ssn 123-45-6789"}}
    assert mask(body, "remove").body == {"keep": "x", "list": ["a", "b"], "nested": {}}


def test_a_plain_text_body_cannot_be_removed_so_it_is_redacted():
    assert mask("ssn 123-45-6789", "remove").body == "[REDACTED:ssn]"
    assert mask("ssn 123-45-6789", "redact").body == "ssn [REDACTED:ssn]"


def test_path_labels_mask_whole_values_of_any_type():
    body = {"user": {"password": "hunter2"}, "other": [{"password": {"old": "a", "new": "b"}}, {"password": 1234}]}
    decision = mask(body, "redact")
    assert decision.body == {
        "user": {"password": "[REDACTED:password]"},
        "other": [{"password": "[REDACTED:password]"}, {"password": "[REDACTED:password]"}],
    }
    assert sorted(f.path for f in decision.findings) == ["$.other[0].password", "$.other[1].password", "$.user.password"]
    assert all(f.span is None for f in decision.findings)


def test_path_labels_with_navigation_steps():
    body = {"customers": [{"ssn": "123456789"}, {"name": "x"}, {"ssn": 987654321}]}
    decision = mask(body, "partial", labels="[customer_ssn]")
    assert decision.body == {"customers": [{"ssn": "*****6789"}, {"name": "x"}, {"ssn": "*****4321"}]}


def test_a_detector_with_paths_only_looks_inside_them():
    body = {"notes": ["mail a@example.com"], "contact": "b@example.com"}
    decision = mask(body, "redact", labels="[note_email]")
    assert decision.body == {"notes": ["mail [REDACTED:note_email]"], "contact": "b@example.com"}


def test_json_inside_a_string_is_decoded_masked_and_re_encoded():
    inner = {"customer": {"ssn": "123-45-6789", "name": "Jane"}}
    body = {"result": {"content": [{"type": "text", "text": json.dumps(inner)}]}}
    decision = mask(body, "partial")
    text = decision.body["result"]["content"][0]["text"]
    assert json.loads(text) == {"customer": {"ssn": "***-**-6789", "name": "Jane"}}
    assert decision.findings[0].path == "$.result.content[0].text<json>.customer.ssn"


def test_json_strings_are_left_alone_when_nothing_inside_is_masked():
    text = '{"a":   1}'
    decision = mask({"t": text})
    assert decision.body["t"] is text and not decision.changed


def test_the_input_is_never_modified_and_untouched_branches_are_shared():
    body = {"customers": [{"ssn": "123-45-6789"}], "untouched": {"deep": ["x"] * 3}}
    before = copy.deepcopy(body)
    decision = mask(body)
    assert body == before
    assert decision.body["untouched"] is body["untouched"]
    assert decision.body["customers"] is not body["customers"]


def test_nothing_to_mask_returns_the_same_object():
    body = {"a": "nothing here"}
    decision = mask(body)
    assert decision.body is body and not decision.changed


@pytest.mark.parametrize("style", ["redact", "partial", "hash", "remove"])
def test_masking_masked_output_changes_nothing(style):
    body = {
        "ssn": "123-45-6789",
        "card": 4242424242424242,
        "text": "write to jane@example.com or 4111-1111-1111-1111",
        "password": "hunter2",
        "nested": json.dumps({"email": "x@example.org", "list": ["123-45-6789"]}),
    }
    once = mask(body, style).body
    twice = mask(once, style)
    assert twice.body == once
    assert not twice.changed


def test_the_strongest_style_wins_on_the_same_value():
    rules = load_rules_text(
        LABELS
        + """
rules:
  - {id: soft, match: {labels: [ssn]}, action: mask, mask: partial}
  - {id: hard, match: {labels: [ssn]}, action: mask, mask: redact}
"""
    )
    decision = evaluate(rules, Call(direction="response", body={"s": "123-45-6789"}), b"k")
    assert decision.body == {"s": "[REDACTED:ssn]"}
    assert decision.findings[0].mask == "redact" and decision.findings[0].rules == ("soft", "hard")


def test_query_parameters_are_classified_and_masked():
    decision = evaluate(
        ruleset("redact"),
        Call(direction="request", method="GET", path="/search?q=123-45-6789&page=2&e=a@b.co&e=c@d.co"),
        b"k",
    )
    assert decision.query == {"q": "[REDACTED:ssn]", "page": "2", "e": ["[REDACTED:email]", "[REDACTED:email]"]}
    assert [f.path for f in decision.findings] == ["?q", "?e[0]", "?e[1]"]


def test_findings_carry_a_keyed_fingerprint_never_the_value(key):
    decision = mask({"ssn": "123-45-6789"}, key=key)
    [finding] = decision.findings
    assert finding.fingerprint == fingerprint("123456789", key)
    assert "123-45-6789" not in json.dumps(finding.as_dict())
    assert finding.fingerprint in candidate_fingerprints("123 45 6789", key)


def test_tokens_and_partials():
    assert is_mask_token("[REDACTED:ssn]") and is_mask_token("tok_ssn_0123456789ab")
    assert not is_mask_token("tok_ssn_xyz") and not is_mask_token("hello")
    assert generic_partial("secret-value-1234") == "******-*****-1234"
    assert generic_partial("short") == "*****"
    assert generic_partial(generic_partial("secret-value-1234")) == generic_partial("secret-value-1234")
    assert generic_partial("jane@example.com") == "j***@example.com"


def test_walk_paths_and_embedded_json_depth_limit():
    document = Document({"a b": ["x" * 5, {"c": "y" * 5}]})
    assert sorted(document.path(n, k) for n, k in document.string_slots) == ["$['a b'][0]", "$['a b'][1].c"]
    nested = "123-45-6789"
    for _ in range(12):
        nested = json.dumps([nested])
    deep = Document(nested)
    assert any("123-45-6789" in s for s in deep.strings)  # beyond the limit it is scanned as text


def test_form_fields_and_plain_text_bodies():
    from toolgate.rules import encode_form, parse_form

    form = parse_form("name=Jane&ssn=123-45-6789&tag=a&tag=b")
    decision = mask(form, "partial")
    assert encode_form(decision.body) == "name=Jane&ssn=%2A%2A%2A-%2A%2A-6789&tag=a&tag=b"
    text = mask("Dear Jane, your card 4242-4242-4242-4242 was charged.", "partial")
    assert text.body == "Dear Jane, your card ****-****-****-4242 was charged."
    assert text.findings[0].path == "$"
