"""Benchmark of the rule engine: classify + mask + decide, as a ratio to `json.loads` of the same body.

    .venv/bin/python scripts/bench_rules.py [--repeat N]

Bodies: a 1 KB and a 256 KB customer list (the large one holds about 1,000 sensitive values:
SSNs, card numbers, emails, phone numbers), evaluated as the response of `GET /customers` with the
bundled packs, then with 500 extra rules that cannot match the call (other functions, the other
direction). Each figure is the best of N repeats (timeit). Targets: 1 KB <= 3x json.loads,
256 KB <= 5x json.loads, and the 500 extra rules add < 10%.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import sys
import tempfile
import timeit
from pathlib import Path


from toolgate.rules import Call, RuleSet, bundled_packs_path, evaluate, load_rules

KEY = b"bench-mask-key-0123456789abcdef"
NOW = datetime.datetime(2026, 11, 21, tzinfo=datetime.timezone.utc)


def customer(i: int) -> dict:
    record = {
        "id": i,
        "sku": f"SKU-{i:06d}",
        "name": f"Customer number {i}",
        "notes": "prefers email contact, weekday mornings only",
        "created": "2024-01-02T10:00:00Z",
        "status": "active",
        "tags": ["retail", "tier-2"],
        "balance": 1234.5,
        "score": 87,
    }
    kind = i % 4
    if kind == 0:
        record["ssn"] = f"123-45-{1000 + i % 8000:04d}"
    elif kind == 1:
        record["card"] = "4242 4242 4242 4242"
    elif kind == 2:
        record["email"] = f"user{i}@example.com"
    else:
        record["phone"] = f"(415) 555-{i % 10000:04d}"
    return record


def body_text(target_bytes: int) -> str:
    records: list[dict] = []
    while len(json.dumps({"customers": records})) < target_bytes:
        records.append(customer(len(records)))
    return json.dumps({"customers": records[:-1] or records})


EXTRA_RULES = "\n".join(
    [
        "rules:",
        *(f"  - {{id: extra-prefix-{i}, match: {{function: 'billing{i}.*'}}, action: block}}" for i in range(200)),
        *(f"  - {{id: extra-exact-{i}, match: {{function: 'inventory.op{i}', labels: [ssn]}}, action: mask, mask: redact}}" for i in range(200)),
        *(f"  - {{id: extra-request-{i}, match: {{direction: request, labels: [email]}}, action: block}}" for i in range(100)),
    ]
)


def with_extra_rules(tmp: Path) -> RuleSet:
    for pack in sorted(bundled_packs_path().glob("*.yaml")):
        shutil.copy(pack, tmp / pack.name)
    (tmp / "zz-extra.yaml").write_text(EXTRA_RULES + "\n")
    return load_rules(tmp)


def best(func, repeat: int) -> float:
    number = 1
    while min(timeit.repeat(func, number=number, repeat=1)) < 0.05:
        number *= 2
    return min(timeit.repeat(func, number=number, repeat=repeat)) / number


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    packs = load_rules(bundled_packs_path())
    with tempfile.TemporaryDirectory() as tmp:
        extra = with_extra_rules(Path(tmp))
    print(f"rule sets: bundled packs ({len(packs.rules)} rules), bundled + 500 non-matching ({len(extra.rules)} rules)")
    print(f"{'body':>8} {'values':>7} {'json.loads':>11} {'packs':>10} {'ratio':>6} {'target':>7} {'+500 rules':>11} {'ratio':>6} {'overhead':>9}")
    failures = 0
    for label, size, target in (("1 KB", 1024, 3.0), ("256 KB", 256 * 1024, 5.0)):
        text = body_text(size)
        body = json.loads(text)
        call = Call(direction="response", method="GET", path="/customers", subject="ana", groups=("support",), body=body, now=NOW)
        decision = evaluate(packs, call, KEY)
        assert decision.action == "mask" and decision.changed
        assert evaluate(extra, call, KEY).rules == decision.rules, "the extra rules must not match"
        base = best(lambda: json.loads(text), args.repeat)
        plain = best(lambda: evaluate(packs, call, KEY), args.repeat)
        crowded = best(lambda: evaluate(extra, call, KEY), args.repeat)
        overhead = crowded / plain - 1
        ok = plain / base <= target and overhead < 0.10
        failures += not ok
        print(
            f"{label:>8} {len(decision.findings):>7} {base * 1e3:>9.3f}ms {plain * 1e3:>8.3f}ms {plain / base:>5.1f}x {target:>6.0f}x"
            f" {crowded * 1e3:>9.3f}ms {crowded / base:>5.1f}x {overhead:>+8.1%}  {'ok' if ok else 'MISSED'}"
        )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
