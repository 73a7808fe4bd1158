"""Turning HTTP pieces into the Python values rules look at: query strings, form bodies, and the
arguments a `when` condition of a REST call sees.

REST "arguments" are the query parameters merged with the JSON body (when the body is an object;
body fields win on a clash). Query parameters are text on the wire, so for `when` a parameter
that is written as a number (`limit=500`) is compared as a number: `$[?(@.limit > 100)]` works
for `GET /customers/export?limit=500` and for a JSON body `{"limit": 500}` alike.
"""

from __future__ import annotations

import re
from typing import Any, Mapping
from urllib.parse import parse_qsl, urlencode

_INTEGER = re.compile(r"-?[0-9]{1,18}")
_DECIMAL = re.compile(r"-?[0-9]{1,18}\.[0-9]{1,18}")


def parse_query(query: str) -> dict[str, str | list[str]]:
    """`a=1&b=2&b=3` → {"a": "1", "b": ["2", "3"]}: repeated keys become lists."""
    return parse_form(query.lstrip("?"))


def parse_form(text: str) -> dict[str, str | list[str]]:
    """An application/x-www-form-urlencoded body as a dict (repeated fields become lists)."""
    fields: dict[str, str | list[str]] = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        if key in fields:
            existing = fields[key]
            fields[key] = [*existing, value] if isinstance(existing, list) else [existing, value]
        else:
            fields[key] = value
    return fields


def encode_form(fields: Mapping[str, Any]) -> str:
    """The inverse of parse_form, for re-encoding a masked form body or query string."""
    return urlencode([(k, v) for k, values in fields.items() for v in (values if isinstance(values, list) else [values])])


def split_path(path: str | None) -> tuple[str | None, dict[str, str | list[str]]]:
    """`/customers/export?limit=5` → ("/customers/export", {"limit": "5"})."""
    if path is None or "?" not in path:
        return path, {}
    bare, _, query = path.partition("?")
    return bare, parse_query(query)


def _typed(value: Any) -> Any:
    if isinstance(value, list):
        return [_typed(item) for item in value]
    if isinstance(value, str):
        if _INTEGER.fullmatch(value):
            return int(value)
        if _DECIMAL.fullmatch(value):
            return float(value)
    return value


def rest_arguments(body: Any, query: Mapping[str, Any] | None) -> Any:
    """What `when` sees for a REST request: query parameters (numbers typed) merged with the body."""
    if not query:
        return body
    arguments = {key: _typed(value) for key, value in query.items()}
    if isinstance(body, dict):
        arguments.update(body)
    elif body not in (None, "", [], {}):
        arguments["body"] = body
    return arguments
