"""Benchmark of the rule engine: classify + mask + decide, against parsing the same body.

    .venv/bin/python scripts/bench_rules.py [--repeat N] [--bodies 1k-clean,256k-customers]

The four bodies of scripts/bench_bodies.py (a clean inventory listing and a customer list, 1 KB
and 256 KB), each evaluated as the response of `GET /bench/<body>` (the call bench.py makes)
with the bundled packs, beside `orjson.loads` and `json.loads` of the same bytes and the
gateway's strict reader of them (`strict`: `jsonbody.loads`, orjson and the core's duplicate-key
check, which runs before the engine); then with 500 extra rules that cannot match the call
(other functions, the other direction). Each figure is the best of N repeats (timeit). Prints
the time, the ratio to `orjson.loads` and, for the customer bodies, the microseconds per
sensitive value (per finding) beyond `orjson.loads`.

Targets (issue 14): the clean 256 KB body <= 1.5x `orjson.loads` of it; each sensitive value
<= 1.5 us beyond `orjson.loads`; the 500 extra rules add < 10%.
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

import orjson

from toolgate.rules import Call, RuleSet, bundled_packs_path, evaluate, load_rules
from toolgate.rules.protocols import jsonbody
from toolgate.scripts.bench_bodies import BODY_NAMES, Body, build_bodies

KEY = b"bench-mask-key-0123456789abcdef"
NOW = datetime.datetime(2026, 11, 21, tzinfo=datetime.timezone.utc)
CLEAN_TARGET = 1.5  # x orjson.loads, for 256k-clean
PER_VALUE_TARGET = 1.5e-6  # seconds per sensitive value beyond orjson.loads
EXTRA_TARGET = 0.10

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


def response_call(body: Body) -> Call:
    """The response of the call bench.py makes for `body`, decoded as the gateway decodes it."""
    return Call(direction="response", method="GET", path=body.path, subject="ana",
                groups=("support",), body=json.loads(body.content), now=NOW)


def best(func, repeat: int) -> float:
    return best_of(repeat, func)[0]


def best_of(repeat: int, *funcs) -> list[float]:
    """The best time of each of `funcs`, measured in turns (so that a slower moment of the
    machine, or a heap grown by the one before, does not land on one of them only)."""
    numbers = []
    for func in funcs:
        number = 1
        while min(timeit.repeat(func, number=number, repeat=1)) < 0.05:
            number *= 2
        numbers.append(number)
    times = [float("inf")] * len(funcs)
    for _ in range(repeat):
        for index, (func, number) in enumerate(zip(funcs, numbers)):
            times[index] = min(times[index], timeit.timeit(func, number=number) / number)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--bodies", default=",".join(BODY_NAMES),
                        help=f"a subset of {', '.join(BODY_NAMES)}, comma-separated")
    args = parser.parse_args()
    bodies = build_bodies()
    names = [name for name in BODY_NAMES if name in args.bodies.split(",")]
    packs = load_rules(bundled_packs_path())
    with tempfile.TemporaryDirectory() as tmp:
        extra = with_extra_rules(Path(tmp))
    print(f"rule sets: bundled packs ({len(packs.rules)} rules), bundled + 500 non-matching ({len(extra.rules)} rules)")
    print(f"{'body':>15} {'bytes':>7} {'found':>6} {'orjson':>9} {'json':>9} {'strict':>9} {'engine':>9} {'/orjson':>8}"
          f" {'us/value':>9} {'+500 rules':>11} {'overhead':>9}")
    verdicts: list[tuple[str, str, bool]] = []
    for name in names:
        body = bodies[name]
        call = response_call(body)
        decision = evaluate(packs, call, KEY)
        found = len(decision.findings)
        assert (found == 0) == (body.sensitive == 0), f"{name}: {found} findings"
        assert evaluate(extra, call, KEY).rules == decision.rules, "the extra rules must not match"
        fast = best(lambda: orjson.loads(body.content), args.repeat)
        std = best(lambda: json.loads(body.content), args.repeat)
        strict = best(lambda: jsonbody.loads(body.content), args.repeat)
        plain, crowded = best_of(args.repeat, lambda: evaluate(packs, call, KEY),
                                 lambda: evaluate(extra, call, KEY))
        overhead = crowded / plain - 1
        per_value = (plain - fast) / found if found else None
        shown = f"{per_value * 1e6:9.2f}" if per_value is not None else f"{'-':>9}"
        print(f"{name:>15} {len(body.content):>7} {found:>6} {fast * 1e3:>7.3f}ms {std * 1e3:>7.3f}ms"
              f" {strict * 1e3:>7.3f}ms {plain * 1e3:>7.3f}ms {plain / fast:>7.1f}x {shown} {crowded * 1e3:>9.3f}ms {overhead:>+8.1%}")
        if name == "256k-clean":
            verdicts.append((name, f"{plain / fast:.2f}x orjson.loads (target <= {CLEAN_TARGET}x)",
                             plain / fast <= CLEAN_TARGET))
        if per_value is not None:
            verdicts.append((name, f"{per_value * 1e6:.2f} us per sensitive value beyond orjson.loads "
                                   f"(target <= {PER_VALUE_TARGET * 1e6} us)", per_value <= PER_VALUE_TARGET))
        verdicts.append((name, f"500 extra rules {overhead:+.1%} (target < {EXTRA_TARGET:.0%})",
                         overhead < EXTRA_TARGET))
    print("\nacceptance (issue 14)")
    for name, text, ok in verdicts:
        print(f"  {name:15} {text}  {'ok' if ok else 'MISSED'}")
    return 0 if all(ok for _, _, ok in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
