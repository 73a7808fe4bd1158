"""Durations written the way people write them in rule files and on the command line: `90d`, `12h`, `30m`, `45s`."""

from __future__ import annotations

import datetime
import re

_UNITS = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}
_DURATION = re.compile(r"(\d+)([dhms])", re.ASCII)


def parse_duration(text: str) -> datetime.timedelta:
    """`90d` → 90 days. One positive whole number and one unit; anything else is a ValueError that says what to write."""
    if not isinstance(text, str):
        raise ValueError(f"bad duration {text!r}: expected a string such as 90d, 12h, 30m or 45s")
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"bad duration {text!r}: use a whole number and a unit d, h, m or s (e.g. 90d, 12h, 30m, 45s)")
    amount = int(match.group(1))
    if amount == 0:
        raise ValueError(f"bad duration {text!r}: must be longer than zero (e.g. 90d, 12h, 30m, 45s)")
    return datetime.timedelta(**{_UNITS[match.group(2)]: amount})


def format_duration(delta: datetime.timedelta) -> str:
    """The inverse of parse_duration, picking the largest unit that divides exactly (for messages)."""
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
