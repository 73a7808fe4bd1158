"""An index of rules by what they must match, so a call only looks at rules that could apply.

Each rule is filed under one anchor: its function globs (exact name, or literal prefix such as
`crm.` for `crm.*`), else its labels, else its levels, else "always"; and under its direction
(an approve rule that names none is a request rule: the loader gives it `direction: request`).
A call gathers candidates with a few dictionary lookups, then checks them fully, in file order.
Rules for other functions, other directions or absent labels cost nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from toolgate.rules.model import Rule


@dataclass
class _Bucket:
    exact: dict[str, list[int]] = field(default_factory=dict)
    prefix: dict[str, list[int]] = field(default_factory=dict)
    labels: dict[str, list[int]] = field(default_factory=dict)
    levels: dict[str, list[int]] = field(default_factory=dict)
    always: list[int] = field(default_factory=list)
    prefix_lengths: tuple[int, ...] = ()


class RuleIndex:
    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules = tuple(rules)
        self.buckets: dict[str | None, _Bucket] = {None: _Bucket(), "request": _Bucket(), "response": _Bucket()}
        for position, rule in enumerate(self.rules):
            bucket = self.buckets[rule.match.direction]
            match = rule.match
            if match.function and all(glob.literal_prefix for glob in match.function):
                for glob in match.function:
                    table = bucket.exact if glob.is_literal else bucket.prefix
                    table.setdefault(glob.literal_prefix, []).append(position)
            elif match.labels:
                for name in match.labels:
                    bucket.labels.setdefault(name, []).append(position)
            elif match.levels:
                for level in match.levels:
                    bucket.levels.setdefault(level, []).append(position)
            else:
                bucket.always.append(position)
        for bucket in self.buckets.values():
            bucket.prefix_lengths = tuple(sorted({len(prefix) for prefix in bucket.prefix}))

    def candidates(self, direction: str, function: str, labels: Iterable[str], levels: Iterable[str]) -> list[Rule]:
        """Rules that might match, in file order; the caller checks every condition."""
        found: set[int] = set()
        for bucket in (self.buckets[None], self.buckets.get(direction)):
            if bucket is None:
                continue
            found.update(bucket.always)
            found.update(bucket.exact.get(function, ()))
            for length in bucket.prefix_lengths:
                if length > len(function):
                    break
                found.update(bucket.prefix.get(function[:length], ()))
            if bucket.labels:
                for name in labels:
                    found.update(bucket.labels.get(name, ()))
            if bucket.levels:
                for level in levels:
                    found.update(bucket.levels.get(level, ()))
        return [self.rules[position] for position in sorted(found)]
