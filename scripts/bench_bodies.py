"""The four bodies of the benchmarks (`scripts/bench.py`, `scripts/bench_rules.py`), built here
so that both measure the same thing:

- `1k-clean`: an inventory listing of about 1 KB with nothing sensitive in it;
- `1k-customers`: a few customer rows of about 1 KB, each with an email, a phone and an SSN
  (about 9 sensitive values);
- `256k-clean`: an inventory listing of about 256 KB (about 1,500 rows, 10,000 values), nothing
  sensitive;
- `256k-customers`: a customer list of about 256 KB (about 1,200 rows, 3,500 sensitive values:
  an email, a phone and an SSN or a card number in each row).

The sensitive values are ones the bundled detectors really find (SSA-valid SSNs, Luhn-valid card
numbers, emails, NANP phones written `(415) 555-0123`), different in every row; the clean rows
hold nothing any bundled detector labels (tests/scripts/test_bench_bodies.py checks both).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

KB = 1024

_CATEGORIES = ("hardware", "fasteners", "tools", "electrical", "plumbing", "garden", "paint")
_WAREHOUSES = ("north", "south", "east", "west", "central")
_ADJECTIVES = ("steel", "brass", "zinc", "oak", "nylon", "copper", "ceramic", "rubber")
_ITEMS = ("bracket", "hinge", "washer", "anchor", "clamp", "valve", "hook", "spacer", "latch")
_TIERS = ("gold", "silver", "bronze")
_FIRST = ("Ada", "Alan", "Grace", "Edsger", "Barbara", "Donald", "Frances", "John", "Radia", "Ken")
_LAST = ("Lovelace", "Turing", "Hopper", "Dijkstra", "Liskov", "Knuth", "Allen", "Backus",
         "Perlman", "Thompson")


def inventory_row(i: int) -> dict:
    """One row of an inventory listing: seven values, none of them sensitive."""
    return {
        "sku": f"SKU-{i:06d}",
        "name": f"{_ADJECTIVES[i % len(_ADJECTIVES)]} {_ITEMS[i % len(_ITEMS)]}, size {i % 40 + 1}, "
                f"pack of {5 * (i % 4 + 1)}",
        "category": _CATEGORIES[i % len(_CATEGORIES)],
        "warehouse": f"{_WAREHOUSES[i % len(_WAREHOUSES)]}-{i % 9 + 1}, aisle {i % 30 + 1}",
        "quantity": (i * 37) % 500,
        "price": round(1.25 + (i * 13) % 9000 / 100, 2),
        "in_stock": i % 7 != 0,
    }


def ssn(i: int) -> str:
    """An SSA-valid SSN, different for every i below 8 million: area 100-899 without 666, group
    01-99, serial 0001-9999."""
    area = 100 + i % 799
    area += area >= 666
    group = 1 + (i // 799) % 99
    serial = 1 + (i * 7919) % 9999
    return f"{area:03d}-{group:02d}-{serial:04d}"


def card(i: int) -> str:
    """A Luhn-valid 16-digit Visa-like card number, written in groups of four."""
    digits = [int(c) for c in f"4{i:014d}"]
    total = 0
    for position, digit in enumerate(reversed(digits)):  # the check digit will be appended
        if position % 2 == 0:
            digit *= 2
            digit -= 9 if digit > 9 else 0
        total += digit
    number = "".join(map(str, digits)) + str((10 - total % 10) % 10)
    return " ".join(number[k:k + 4] for k in range(0, 16, 4))


def customer_row(i: int, with_card: bool = False, note: str = "prefers email contact, weekday mornings") -> dict:
    """One customer: an email, a phone and an SSN (or, with `with_card`, a card number)."""
    first, last = _FIRST[i % len(_FIRST)], _LAST[(i // len(_FIRST)) % len(_LAST)]
    row = {
        "id": i + 1,
        "name": f"{first} {last}",
        "email": f"{first.lower()}.{last.lower()}{i}@example.com",
        "phone": f"(415) 555-{i % 10000:04d}",
        "tier": _TIERS[i % len(_TIERS)],
        "note": note,
        "since": f"20{10 + i % 15}-{i % 12 + 1:02d}-{i % 28 + 1:02d}",
    }
    if with_card:
        row["card"] = card(i)
    else:
        row["ssn"] = ssn(i)
    return row


def _fill(key: str, row, target: int) -> bytes:
    """`{key: [rows...]}` with the number of rows that comes closest to `target` bytes."""
    rows: list[dict] = []
    size = len(json.dumps({key: []}))
    while True:
        candidate = row(len(rows))
        grown = size + len(json.dumps(candidate)) + (2 if rows else 0)  # ", " between rows
        if grown > target and rows and grown - target > target - size:
            break
        rows.append(candidate)
        size = grown
    return json.dumps({key: rows}).encode()


@dataclass(frozen=True)
class Body:
    name: str
    description: str
    content: bytes
    sensitive: int  # how many sensitive values the body holds, as built

    @property
    def path(self) -> str:
        return f"/bench/{self.name}"


# The small body's rows carry a longer note, so that about three fit in 1 KB.
_SMALL_NOTE = ("prefers email contact, weekday mornings; renewal discussed in the last call, "
               "follow up after the quarter closes with the updated pricing sheet")


def _customers(target: int, note: str | None = None) -> tuple[bytes, int]:
    """A customer list of about `target` bytes; one row in four has a card instead of an SSN
    (none with a `note`), and the number of sensitive values (three a row)."""
    if note:
        content = _fill("customers", lambda i: customer_row(i, note=note), target)
    else:
        content = _fill("customers", lambda i: customer_row(i, with_card=i % 4 == 3), target)
    return content, 3 * len(json.loads(content)["customers"])


def build_bodies() -> dict[str, Body]:
    """The four bodies, by name, in the order the benches print them."""
    small_customers, small_count = _customers(1 * KB, note=_SMALL_NOTE)
    large_customers, large_count = _customers(256 * KB)
    return {
        "1k-clean": Body("1k-clean", "1 KB inventory listing, nothing sensitive",
                         _fill("items", inventory_row, 1 * KB), 0),
        "1k-customers": Body("1k-customers", "1 KB customer rows (email, phone, SSN each)",
                             small_customers, small_count),
        "256k-clean": Body("256k-clean", "256 KB inventory listing, nothing sensitive",
                           _fill("items", inventory_row, 256 * KB), 0),
        "256k-customers": Body("256k-customers", "256 KB customer list (email, phone, SSN or card)",
                               large_customers, large_count),
    }


BODY_NAMES = ("1k-clean", "1k-customers", "256k-clean", "256k-customers")


def count_values(value) -> int:
    """The scalar values (strings, numbers, booleans, nulls) of a decoded JSON body."""
    if isinstance(value, dict):
        return sum(count_values(v) for v in value.values())
    if isinstance(value, list):
        return sum(count_values(v) for v in value)
    return 1
