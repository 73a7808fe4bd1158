"""Times on the command line and in the admin API: ISO 8601, or relative to now (`30m`,
`1h`, `2d`, `1w`, `90s`: that long ago)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

_RELATIVE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """An aware datetime (UTC if the text names no zone); ValueError says what is accepted."""
    now = now or datetime.now(timezone.utc)
    match = _RELATIVE.match(text)
    if match:
        number, unit = match.groups()
        return now - timedelta(**{_UNITS[unit]: int(number)})
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use ISO 8601 (2026-05-01T12:00:00Z) or a duration ago "
            "(30m, 1h, 2d, 1w)"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def to_us(value: datetime) -> int:
    """Microseconds since the epoch, as the store keeps time."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    delta = value - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def iso_us(micros: int | None) -> str | None:
    """Microseconds since the epoch as ISO 8601 in UTC."""
    if micros is None:
        return None
    value = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=int(micros))
    return value.isoformat().replace("+00:00", "Z")


def iso(value: datetime | None) -> str | None:
    """A stored timestamp as ISO 8601 in UTC, with microseconds."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
