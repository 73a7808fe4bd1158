"""The fast paths of the engine give what the plain algorithms they replace give."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from toolgate.rules import Call, evaluate, load_rules_text
from toolgate.rules.detectors import DETECTORS
from reference.masking import apply_edits, reapply_edits
from reference.walk import Document


def test_find_retries_after_a_rejected_candidate_as_before():
    text = "1234 4242 4242 4242 4242 | 4242424242424242 | order 4242424242424241"
    assert [text[s:e] for s, e in DETECTORS["credit_card"].find(text)] == ["4242 4242 4242 4242", "4242424242424242"]


BODIES = st.recursive(
    st.sampled_from(["a", "123-45-6789", "x 4242 4242 4242 4242 y", "(415) 555-2671"]),
    lambda children: st.one_of(
        st.lists(children, min_size=1, max_size=3),
        st.dictionaries(st.sampled_from("abc"), children, min_size=1, max_size=3),
        st.lists(children, min_size=1, max_size=3).map(json.dumps),
    ),
    max_leaves=12,
)


@settings(max_examples=60)
@given(BODIES, st.data())
def test_reapplying_a_few_edits_equals_applying_them_all(body, data):
    document = Document(body)
    slots = document.string_slots
    if not slots:
        return
    first = dict.fromkeys(data.draw(st.lists(st.sampled_from(slots), unique=True)), "one")
    changed = data.draw(st.lists(st.sampled_from(slots), min_size=1, unique=True))
    second = {**first, **dict.fromkeys(changed, "two")}
    changes: dict = {}
    apply_edits(document, first, changes)
    assert reapply_edits(document, second, changes, changed) == apply_edits(document, second)


RULES = load_rules_text(
    """
labels:
  - {name: ssn, level: restricted, detector: us_ssn}
  - {name: phone, level: confidential, detector: phone}
rules:
  - {id: mask-ssn, match: {labels: [ssn]}, action: mask, mask: partial}
  - {id: watch-phones, match: {labels: [phone]}, action: mask, mask: redact, mode: monitor}
"""
)


def test_matches_and_reasons_are_rendered_on_first_use_and_stay():
    decision = evaluate(RULES, Call(direction="response", body={"ssn": "123-45-6789", "phone": "(415) 555-2671"}), b"k")
    assert decision.rules == ("mask-ssn", "watch-phones")
    assert decision.matches is decision.matches and [m.rule for m in decision.matches] == list(decision.rules)
    assert decision.matches[0].reason == "labels ssn at $.ssn"
    assert decision.reasons is decision.reasons and decision.explain().endswith("decision: mask")
    assert decision.record_body == {"ssn": "***-**-6789", "phone": "[REDACTED:phone]"}
    assert decision.body == {"ssn": "***-**-6789", "phone": "(415) 555-2671"}
