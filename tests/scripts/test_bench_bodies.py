"""The bodies of the benchmarks (toolgate.scripts.bench_bodies) are what bench.py and
bench_rules.py say they measure: their sizes, and what the bundled packs find in them."""

from __future__ import annotations

import collections
import json

import pytest

from toolgate.rules import Call, bundled_packs_path, evaluate, load_rules
from toolgate.scripts.bench_bodies import BODY_NAMES, KB, build_bodies, card, count_values, ssn

BODIES = build_bodies()

# name: (bytes, rows, values, sensitive values), each "about" (within 15%)
CLAIMS = {
    "1k-clean": (1 * KB, None, None, 0),
    "1k-customers": (1 * KB, 3, None, 9),
    "256k-clean": (256 * KB, 1500, 10_000, 0),
    "256k-customers": (256 * KB, 1200, None, 3500),
}


def about(measured: int, claimed: int) -> bool:
    return abs(measured - claimed) <= 0.15 * claimed


@pytest.fixture(scope="module")
def packs():
    return load_rules(bundled_packs_path())


def findings(packs, name: str):
    body = BODIES[name]
    call = Call(direction="response", method="GET", path=body.path, subject="bench",
                groups=("support",), body=json.loads(body.content))
    return evaluate(packs, call, b"bench-bodies-test-key-0123456789").findings


def test_the_four_bodies_are_built_in_the_order_the_benches_print_them():
    assert tuple(BODIES) == BODY_NAMES
    assert {body.path for body in BODIES.values()} == {f"/bench/{name}" for name in BODY_NAMES}


@pytest.mark.parametrize("name", BODY_NAMES)
def test_each_body_has_the_size_rows_and_values_it_claims(name):
    size, rows, values, sensitive = CLAIMS[name]
    body = BODIES[name]
    decoded = json.loads(body.content)
    (listing,) = decoded.values()
    assert about(len(body.content), size), len(body.content)
    if rows:
        assert about(len(listing), rows), len(listing)
    if values:
        assert about(count_values(decoded), values), count_values(decoded)
    if sensitive:
        assert about(body.sensitive, sensitive), body.sensitive
    else:
        assert body.sensitive == 0


@pytest.mark.parametrize("name", ["1k-clean", "256k-clean"])
def test_the_bundled_packs_find_nothing_in_the_clean_bodies(packs, name):
    assert findings(packs, name) == ()


@pytest.mark.parametrize("name", ["1k-customers", "256k-customers"])
def test_the_bundled_packs_find_every_sensitive_value_of_the_customer_bodies(packs, name):
    found = findings(packs, name)
    assert len(found) == BODIES[name].sensitive
    (rows,) = json.loads(BODIES[name].content).values()
    labels = collections.Counter(finding.label for finding in found)
    assert labels["email"] == labels["phone"] == len(rows)
    assert labels["ssn"] == sum("ssn" in row for row in rows)
    assert labels["credit_card"] == sum("card" in row for row in rows)
    cards = {"credit_card"} if name.startswith("256k") else set()  # the small one: SSNs only
    assert set(labels) == {"email", "phone", "ssn"} | cards
    # a different value in every row: as many fingerprints as findings
    assert len({finding.fingerprint for finding in found}) == len(found)


def test_the_generated_ssns_and_cards_are_distinct_and_well_formed():
    ssns = [ssn(i) for i in range(20_000)]
    assert len(set(ssns)) == len(ssns)
    assert not any(s.startswith(("000", "666", "9")) or s[4:6] == "00" or s.endswith("0000") for s in ssns)
    cards = [card(i) for i in range(2_000)]
    assert len(set(cards)) == len(cards)
    for number in cards:
        digits = [int(c) for c in number.replace(" ", "")]
        total = sum(d if k % 2 == 0 else (2 * d - 9 if 2 * d > 9 else 2 * d)
                    for k, d in enumerate(reversed(digits)))
        assert len(digits) == 16 and total % 10 == 0
