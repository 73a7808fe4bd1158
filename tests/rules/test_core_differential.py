"""The native core against the pure-Python reference engine on generated calls: identical
decisions, findings (paths, spans, fingerprints, verdicts), reasons, forwarded and recorded
bodies, on 100,000 bodies full of look-alikes (`TOOLGATE_DIFFERENTIAL_CASES` to change it).

Bodies mix the detectors' values and near misses (from test_core_detectors' generator), JSON
nested in strings, card numbers as JSON numbers, invisible characters, other scripts, odd keys,
keys that hold values (and keys their renaming collides with), and lists; the rule sets mix every mask style, path labels, a label with a detector and paths,
two labels on one detector, monitored, blocking and approving rules and `when` conditions."""

from __future__ import annotations

import datetime
import json
import os
import random

import pytest
from reference import engine as reference
from reference.masking import hash_token
from reference.differential import comparable, differences
from test_core_detectors import NAMES, generated

from toolgate.rules import Call, bundled_packs_path, load_rules, load_rules_text
from toolgate.rules import engine

CASES = int(os.environ.get("TOOLGATE_DIFFERENTIAL_CASES", "100000"))
KEY = b"differential-mask-key-0123456789"
NOW = datetime.datetime(2026, 12, 2, tzinfo=datetime.timezone.utc)
native_evaluate = getattr(engine.evaluate, "__wrapped__", engine.evaluate)

CUSTOM = """
labels:
  - {name: ssn, level: restricted, detector: us_ssn}
  - {name: ssn_field, level: restricted, paths: ["$..ssn", "$.rows[*].tax_id"]}
  - {name: card, level: restricted, detector: credit_card}
  - {name: card_copy, level: confidential, detector: credit_card}
  - {name: email, level: confidential, detector: email}
  - {name: phone_in_contact, level: confidential, detector: phone, paths: ["$..contact"]}
  - {name: ip, level: internal, detector: ip_address}
  - {name: iban, level: restricted, detector: iban}
  - {name: secret, level: restricted, detector: aws_access_key}
  - {name: pem, level: restricted, detector: private_key}
  - {name: token, level: restricted, detector: jwt}
  - {name: gh, level: restricted, detector: github_token}
  - {name: note_field, level: internal, paths: ["$..note"]}
rules:
  - {id: hash-ssn, match: {labels: [ssn, ssn_field]}, action: mask, mask: hash}
  - {id: partial-cards, match: {labels: [card]}, action: mask, mask: partial}
  - {id: redact-copy, match: {labels: [card_copy]}, action: mask, mask: redact}
  - {id: remove-emails, match: {labels: [email], direction: response}, action: mask, mask: remove}
  - {id: partial-emails, match: {labels: [email], direction: request}, action: mask, mask: partial}
  - {id: watch-ip, match: {labels: [ip]}, action: mask, mask: redact, mode: monitor}
  - {id: block-secrets, match: {labels: [secret, pem], direction: request}, action: block}
  - {id: hold-tokens, match: {labels: [token]}, action: approve, approvers: [security]}
  - {id: mask-rest, match: {levels: [restricted]}, action: mask, mask: redact}
  - {id: big-export, match: {when: ["$[?(@.limit > 100)]"]}, action: approve, approvers: [owners]}
  - {id: notes, match: {labels: [note_field], direction: response}, action: mask, mask: partial}
"""

KEYS = ["id", "name", "ssn", "note", "contact", "tax_id", "card", "a b", "x'y", "é", "args", "value", "limit"]
# keys that collide once keys holding values are renamed: an email in other cases (one token),
# and the very tokens the email and the SSN become
COLLIDING_KEYS = [
    "jane.doe@example.com", "Jane.Doe@example.com", "JANE.DOE@EXAMPLE.COM", "536-22-1234", "536 22 1234",
    *(hash_token(label, value, KEY) for label in ("email", "ssn", "us_ssn") for value in ("jane.doe@example.com", "536221234")),
    hash_token("email", "jane.doe@example.com", KEY) + "~2", "[REDACTED:email]",
]


def _value(rng: random.Random, strings: list[str], depth: int):
    kind = rng.random()
    if kind < 0.55 or depth > 3:
        return rng.choice(strings)
    if kind < 0.62:
        return rng.choice([4242424242424242, 378282246310005, 4.242424242424242e15, 10**12 + rng.randrange(10**6),
                           rng.randrange(200), -5, True, None, 1.5, 10**25])
    if kind < 0.72:  # JSON inside a string
        inner = _body(rng, strings, depth + 1)
        return rng.choice(["", " ", "\n"]) + json.dumps(inner, ensure_ascii=rng.random() < 0.5)
    if kind < 0.86:
        return [_value(rng, strings, depth + 1) for _ in range(rng.randint(0, 3))]
    return _body(rng, strings, depth + 1)


def _key(rng: random.Random, strings: list[str]) -> str:
    kind = rng.random()
    if kind < 0.8:
        return rng.choice(KEYS)
    if kind < 0.93:
        return rng.choice(strings)  # a key holding a value, or a near miss
    return rng.choice(COLLIDING_KEYS)


def _body(rng: random.Random, strings: list[str], depth: int = 0) -> dict:
    return {_key(rng, strings): _value(rng, strings, depth) for _ in range(rng.randint(1, 4))}


def calls(count: int, seed: int = 14):
    rng = random.Random(seed)
    strings = [s for name in NAMES for s in generated(name, 400, seed)]
    for i in range(count):
        body = _body(rng, strings)
        if rng.random() < 0.15:
            body = {"rows": [_body(rng, strings, 2) for _ in range(rng.randint(1, 3))]}
        direction = "request" if i % 2 else "response"
        query = {"q": rng.choice(strings)} if rng.random() < 0.1 else None
        yield Call(direction=direction, protocol="rest", method="POST", host="api", path="/customers",
                   query=query, subject="alice", groups=("support",), body=body, now=NOW)


@pytest.fixture(scope="module")
def rulesets():
    return {"packs": load_rules(bundled_packs_path()), "custom": load_rules_text(CUSTOM)}


def test_generated_calls_get_the_reference_decisions(rulesets):
    compared = findings = 0
    mismatches = []
    for i, call in enumerate(calls(CASES)):
        ruleset = rulesets["custom" if i % 3 else "packs"]
        monitor = i % 17 == 0
        expected = reference.evaluate(ruleset, call, KEY, monitor=monitor)
        actual = native_evaluate(ruleset, call, KEY, monitor=monitor)
        diff = differences(comparable(expected), comparable(actual))
        if diff:
            mismatches.append((call.body, diff))
            if len(mismatches) >= 3:
                break
        compared += 1
        findings += len(actual.findings)
    assert mismatches == []
    assert compared == CASES
    assert findings > CASES  # the bodies are dense with values, not empty
