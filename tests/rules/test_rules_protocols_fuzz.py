"""Property-based fuzzing of the protocol adapters, the rule engine and the stream checker with
generated bodies: random bytes, random JSON under every content type and path, JSON-RPC
batches, and event streams split at random. Nothing may raise except a `ProtocolError` (which
the gateway answers as `malformed` / `uninspectable`), and a parsed JSON message re-encodes to
valid JSON, also after the engine masked it.

`make fuzz` runs the same properties with many more examples (TOOLGATE_FUZZ_EXAMPLES).
"""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from toolgate.rules import Call, bundled_packs_path, evaluate, load_rules
from toolgate.rules.protocols import (
    ProtocolError, Refused, StreamChecker, Uninspectable, parse_request, parse_response,
)

EXAMPLES = int(os.environ.get("TOOLGATE_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

PACKS = load_rules(bundled_packs_path())
KEY = b"fuzz-mask-key-0123456789abcdef!!"

PATHS = st.sampled_from(["/echo", "/mcp", "/v1/chat/completions", "/v1/messages", "/customers/1"])
CTYPES = st.sampled_from([None, "application/json", "application/json; charset=utf-8",
                          "text/plain", "application/octet-stream", "application/x-www-form-urlencoded",
                          "application/vnd.api+json", "text/event-stream", "multipart/form-data"])
CONTEXTS = st.sampled_from([{}, {"protocol": "rest"}, {"protocol": "mcp"},
                            {"protocol": "mcp", "tools": {"1": "get_customer"}},
                            {"protocol": "openai"}, {"protocol": "anthropic"}])
# Strings that look like what detectors and embedded-JSON decoding react to.
SPICY = st.sampled_from(["536-22-1234", "4111 1111 1111 1111", "4111\u200b1111\u200b1111\u200b1111",
                         "ada@example.com", "AKIAIOSFODNN7EXAMPLE", "DE89 3704 0044 0532 0130 00",
                         '{"ssn": "536-22-1234"}', "[1, 2", "\x00", "\ud7ff", "10.0.0.1"])
TEXT = st.one_of(st.text(max_size=30), SPICY)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), TEXT)
JSON = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(TEXT, inner, max_size=5)), max_leaves=25)


def rpc_message():
    return st.fixed_dictionaries(
        {"jsonrpc": st.just("2.0"), "method": st.sampled_from(["tools/call", "tools/list", "initialize", "x"])},
        optional={"id": st.one_of(st.integers(), TEXT, st.none()),
                  "params": st.one_of(JSON, st.fixed_dictionaries(
                      {"name": TEXT, "arguments": st.one_of(JSON, st.dictionaries(TEXT, JSON, max_size=4))})),
                  "result": JSON, "error": JSON})


def llm_body():
    tool_call = st.fixed_dictionaries({"id": TEXT, "type": st.just("function"), "function": st.fixed_dictionaries(
        {"name": TEXT, "arguments": st.one_of(TEXT, JSON.map(json.dumps))})})
    message = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "tool"])}, optional={
        "content": st.one_of(TEXT, st.lists(st.fixed_dictionaries(
            {"type": st.sampled_from(["text", "tool_use", "tool_result"])},
            optional={"input": JSON, "content": JSON, "name": TEXT, "id": TEXT}), max_size=3)),
        "tool_calls": st.lists(tool_call, max_size=2), "tool_call_id": TEXT})
    return st.fixed_dictionaries({"model": TEXT, "messages": st.lists(message, max_size=3)},
                                 optional={"choices": st.lists(st.fixed_dictionaries({"message": message}), max_size=2)})


BODIES = st.one_of(JSON, rpc_message(), st.lists(rpc_message(), min_size=1, max_size=4), llm_body())


def check_message(message, direction: str) -> None:
    """Run the engine over every unit, mask in place, re-encode."""
    for unit in message.units:
        decision = evaluate(PACKS, Call(direction=unit.direction, protocol=unit.protocol,
                                        function=unit.function, method="POST", path="/x",
                                        subject="fuzz", groups=("support",), body=unit.body), KEY)
        if decision.changed and decision.action != "block":
            unit.put(decision.body)
    return message.encode()


def readable(ctype: str | None, body: bytes, request: bool) -> bool:
    """Whether a body must parse: empty, or UTF-8 text under a type that does not claim JSON
    (JSON-looking text that is not JSON is read as text), except a multipart request."""
    media = (ctype or "").split(";")[0]
    if not body:
        return True
    if (request and media.startswith("multipart/")) or media.endswith("json"):
        return False
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@FUZZ
@given(path=PATHS, ctype=CTYPES,
       body=st.one_of(st.binary(max_size=300), st.text(max_size=100).map(str.encode)))
def test_random_bytes_parse_or_raise_a_protocol_error(path, ctype, body):
    for request, parse in ((True, lambda: parse_request(path, ctype, body, {})),
                           (False, lambda: parse_response({"protocol": "mcp"}, ctype, body))):
        try:
            message = parse()
        except ProtocolError:
            # Refused only when it cannot be read: never a readable body (a parser refusing
            # everything would pass the rest of this test).
            assert not readable(ctype, body, request), (ctype, body)
            continue
        assert isinstance(check_message(message, "request"), bytes)


@FUZZ
@given(path=PATHS, ctype=CTYPES, context=CONTEXTS, value=BODIES,
       anthropic=st.booleans())
def test_random_json_parses_checks_masks_and_reencodes_as_json(path, ctype, context, value, anthropic):
    body = json.dumps(value).encode()
    headers = {"anthropic-version": "2023-06-01"} if anthropic else {}
    for request, parse in ((True, lambda: parse_request(path, ctype, body, headers)),
                           (False, lambda: parse_response(context, ctype, body))):
        if request and ctype == "multipart/form-data":
            with pytest.raises(Uninspectable):
                parse()
            continue
        message = parse()  # valid JSON always parses, whatever type it is sent as
        encoded = check_message(message, "request")
        if ctype in ("application/json", "application/json; charset=utf-8", "application/vnd.api+json"):
            json.loads(encoded)  # a JSON body stays JSON, masked or not
        elif encoded.lstrip()[:1] in (b"{", b"["):
            json.loads(encoded)


def refuse_sometimes(flag):
    def check(units):
        for unit in units:
            json.dumps(unit.body)  # every unit is plain JSON-able data
        return Refused("blocked", "no", "fuzz-rule", None) if flag and units else None
    return check


def render(refused, rpc_id, jsonrpc):
    return {"error": {"code": refused.code}, "id": rpc_id} if jsonrpc else {"error": {"code": refused.code}}


def sse_event(data: str, name: str | None) -> str:
    lines = "".join(f"data: {line}\n" for line in data.split("\n"))
    return (f"event: {name}\n" if name else "") + lines + "\n"


EVENTS = st.lists(st.tuples(st.one_of(BODIES.map(json.dumps), TEXT, st.just("[DONE]")),
                            st.one_of(st.none(), st.sampled_from(["message", "content_block_delta", "x"]))),
                  max_size=6)


@FUZZ
@given(protocol=st.sampled_from(["mcp", "openai", "anthropic", "rest"]), events=EVENTS,
       noise=st.binary(max_size=40), refuse=st.booleans(), data=st.data())
def test_random_event_streams_split_anywhere_never_raise(protocol, events, noise, refuse, data):
    body = "".join(sse_event(d, n) for d, n in events).encode() + noise
    cuts = sorted(data.draw(st.lists(st.integers(0, len(body)), max_size=12)))
    checker = StreamChecker(protocol, {"protocol": protocol}, refuse_sometimes(refuse), render,
                            keep=1 << 20)
    out, start = [], 0
    for cut in cuts + [len(body)]:  # a malformed stream ends in an error event, never raises
        out += checker(body[start:cut])
        start = cut
    out += checker(b"")
    assert all(isinstance(piece, bytes) for piece in out)
    assert bytes(checker.transcript) == b"".join(out)
