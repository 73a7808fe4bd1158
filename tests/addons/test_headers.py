"""`addons.headers` reads and removes a header exactly as mitmproxy's `Headers.get` and
`Headers.pop` do."""

from __future__ import annotations

import pytest
from mitmproxy import http

from toolgate.addons.headers import header_value, pop_header

FIELDS = [
    (b"Content-Type", b"application/json"),
    (b"accept", b"text/event-stream"),
    (b"X-Toolgate-Session", b"s-1"),
    (b"x-toolgate-session", b"s-2"),  # repeated, another case: folded with ", "
    (b"Empty", b""),
    (b"Latin", "caf\u00e9".encode("latin-1")),  # not UTF-8: a lone surrogate, as mitmproxy has it
    (b"Utf8", "caf\u00e9".encode()),
]


@pytest.mark.parametrize("name", ["content-type", "CONTENT-TYPE", "Accept", "x-toolgate-session",
                                  "empty", "latin", "utf8", "missing", "Mcp-Session-Id"])
@pytest.mark.parametrize("default", [None, "", "identity"])
def test_header_is_headers_get(name, default):
    headers = http.Headers(FIELDS)
    assert header_value(headers, name, default) == headers.get(name, default)
    assert header_value(headers, name) == headers.get(name)


def test_it_reads_the_fields_as_they_are_now():
    headers = http.Headers(FIELDS)
    headers["content-type"] = "text/plain"
    del headers["accept"]
    assert header_value(headers, "content-type") == "text/plain"
    assert header_value(headers, "accept", "none") == "none"


@pytest.mark.parametrize("name", ["content-type", "X-TOOLGATE-SESSION", "empty", "latin",
                                  "missing"])
def test_pop_header_is_headers_pop(name):
    ours, theirs = http.Headers(FIELDS), http.Headers(FIELDS)
    assert pop_header(ours, name, "gone") == theirs.pop(name, "gone")
    assert ours.fields == theirs.fields
    assert pop_header(ours, name) is None and theirs.pop(name, None) is None
