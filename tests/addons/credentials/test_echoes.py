"""Echo protection on its own: every form of an injected value is masked, whole or in chunks."""

import base64
import json
import urllib.parse

import pytest

from toolgate.addons.credentials.echoes import REPLACEMENT, ScrubbedStream, Scrubber, StreamScrub
from toolgate.rules.protocols import StreamChecker

SECRET = "crm-secret-7f3a9c1e2b"
ODD = 'odd/"secret"+&=ü-0123'


@pytest.fixture
def scrubber() -> Scrubber:
    return Scrubber([SECRET, ODD], [(f"Bearer {SECRET}", SECRET)])


@pytest.mark.parametrize("secret, form", [
    (SECRET, SECRET.encode()),
    (SECRET, base64.b64encode(SECRET.encode())),
    (SECRET, base64.b64encode(f"Bearer {SECRET}".encode())),
    (ODD, ODD.encode()),
    (ODD, json.dumps(ODD)[1:-1].encode()),
    (ODD, json.dumps(ODD, ensure_ascii=False)[1:-1].encode()),
    (ODD, urllib.parse.quote(ODD, safe="").encode()),
    (ODD, urllib.parse.quote_plus(ODD).encode()),
    (ODD, base64.urlsafe_b64encode(ODD.encode()).rstrip(b"=")),
])
def test_every_form_is_masked_and_names_its_secret(scrubber, secret, form):
    masked, found = scrubber.scrub(b'{"echo": "' + form + b'", "n": 1}')
    assert masked == b'{"echo": "' + REPLACEMENT + b'", "n": 1}'
    assert found == [secret]


def test_an_echoing_json_answer(scrubber):
    echo = json.dumps({"headers": {"Authorization": f"Bearer {SECRET}", "X-Odd": ODD}}).encode()
    masked, found = scrubber.scrub(echo)
    assert SECRET.encode() not in masked and json.loads(masked)["headers"] == {
        "Authorization": "Bearer [REDACTED:injected_secret]", "X-Odd": "[REDACTED:injected_secret]"}
    assert found == [SECRET, ODD] or found == [ODD, SECRET]


def test_nothing_found_leaves_the_bytes_alone(scrubber):
    body = b"crm-secret- and 7f3a9c1e2b apart"
    assert scrubber.scrub(body) == (body, [])
    assert Scrubber([]).scrub(SECRET.encode()) == (SECRET.encode(), [])


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 64])
def test_a_secret_split_across_chunks_is_masked(scrubber, size):
    body = f"data: {{\"a\": \"Bearer {SECRET}\"}}\n\ndata: {SECRET[:6]}!\n\n{SECRET}".encode()
    stream = StreamScrub(scrubber)
    out = b"".join(stream.feed(body[i:i + size]) for i in range(0, len(body), size))
    out += stream.feed(b"", final=True)
    assert out == scrubber.scrub(body)[0]
    assert SECRET.encode() not in out and list(stream.found) == [SECRET]


def test_whole_events_are_not_held_back(scrubber):
    stream = StreamScrub(scrubber)
    assert stream.feed(b"data: {\"x\": 1}\n\n") == b"data: {\"x\": 1}\n\n"
    assert stream.feed(b"data: crm-sec") == b"data: "  # could be the start of the secret
    assert stream.feed(b"ond\n\n") == b"crm-second\n\n"


def test_the_policys_stream_checker_is_wrapped_as_one():
    seen = []
    inner = StreamChecker("rest", {}, lambda units: seen.append(units) and None,
                          lambda *a: {}, keep=1000)
    wrapped = ScrubbedStream(inner, Scrubber([SECRET]))
    assert isinstance(wrapped, StreamChecker) and wrapped.protocol == "rest"
    body = f'data: {{"echo": "{SECRET}"}}\n\n'.encode()
    out = b"".join(b"".join(wrapped(body[i:i + 4])) for i in range(0, len(body), 4)) + b"".join(wrapped(b""))
    assert SECRET.encode() not in out and REPLACEMENT in out
    assert bytes(wrapped.transcript) == out and wrapped.found == [SECRET]
