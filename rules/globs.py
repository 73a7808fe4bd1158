"""Glob patterns for function names, hosts, subjects and URL paths.

Names (`deploy.*`) use shell-style globs where `*` matches anything. Paths (`/customers/*`) are
segment-aware, like URL routers: `*` stays within one segment and `**` crosses `/`, so
`/customers/*` matches `/customers/42` but not `/customers/42/orders`. A bad glob (an unclosed
`[`, an empty pattern, `***`) is a load error rather than a silent literal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


class GlobError(ValueError):
    """A glob that cannot be compiled; the message says what is wrong."""


@dataclass(frozen=True)
class Glob:
    """A compiled glob; `literal_prefix` lets the rule index skip rules cheaply."""

    text: str
    kind: str  # "name" | "path" | "host"
    regex: re.Pattern[str] = field(compare=False, repr=False)
    literal_prefix: str = field(compare=False)

    @property
    def is_literal(self) -> bool:
        return self.literal_prefix == self.text

    def matches(self, value: str | None) -> bool:
        if value is None:
            return False
        if self.kind == "host":
            value = value.lower()
        return self.regex.fullmatch(value) is not None


def compile_glob(text: object, kind: str = "name") -> Glob:
    """Compile `text` as a glob of the given kind ("name", "path" or "host"), or raise GlobError."""
    if not isinstance(text, str) or not text:
        raise GlobError("a glob must be a non-empty string")
    if "***" in text:
        raise GlobError("'***' is not a glob (use * or **)")
    if kind == "path" and not text.startswith(("/", "*")):
        raise GlobError("a path glob starts with '/' (e.g. /customers/*)")
    pattern = text.lower() if kind == "host" else text
    parts: list[str] = []
    prefix_end: int | None = None
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "*":
            prefix_end = i if prefix_end is None else prefix_end
            if pattern.startswith("**", i):
                parts.append(".*")
                i += 2
                continue
            parts.append("[^/]*" if kind == "path" else ".*")
        elif char == "?":
            prefix_end = i if prefix_end is None else prefix_end
            parts.append("[^/]" if kind == "path" else ".")
        elif char == "[":
            prefix_end = i if prefix_end is None else prefix_end
            close = _class_end(pattern, i)
            body = pattern[i + 1 : close]
            if body.startswith("!"):
                body = "^" + body[1:]
            parts.append("[" + body.replace("\\", "\\\\") + "]")
            i = close + 1
            continue
        elif char == "]":
            raise GlobError("']' without a matching '['")
        else:
            parts.append(re.escape(char))
        i += 1
    literal_prefix = pattern if prefix_end is None else pattern[:prefix_end]
    return Glob(text=text, kind=kind, regex=re.compile("".join(parts), re.DOTALL), literal_prefix=literal_prefix)


def _class_end(pattern: str, start: int) -> int:
    """Index of the `]` closing the character class opened at `start`."""
    i = start + 1
    if i < len(pattern) and pattern[i] == "!":
        i += 1
    close = pattern.find("]", i)
    if close == -1:
        raise GlobError("unclosed '[' (write [abc], or [[] for a literal '[')")
    if close == i:
        raise GlobError("empty character class '[]'")
    return close
