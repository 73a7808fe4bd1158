"""Event streams checked event by event: however the network splits them, the same output;
a refused unit ends the stream with an error event in the protocol's shape."""

import json

from hypothesis import given, settings, strategies as st

from rules.protocols import Refused, StreamChecker
from rules.protocols.sse import parse_all
from scripts.demo_service import anthropic_stream, chat_stream, sse

SSN = "536-22-1234"


def masking_check(units):
    for unit in units:
        text = json.dumps(unit.body)
        if SSN in text:
            unit.put(json.loads(text.replace(SSN, "***-**-1234")))
    return None


def render(refused, rpc_id, jsonrpc):
    detail = {"code": refused.code, "rule": refused.rule}
    if jsonrpc:
        return {"jsonrpc": "2.0", "id": rpc_id, "error": {"code": -32001, "data": detail}}
    return {"error": detail}


def run(protocol, body: bytes, cuts=(), check=masking_check, context=None):
    checker = StreamChecker(protocol, context or {"protocol": protocol}, check, render)
    out, start = b"", 0
    for cut in sorted(set(cuts)) + [len(body)]:
        out += b"".join(checker(body[start:cut]))
        start = cut
    return out + b"".join(checker(b""))


MCP = ("".join(sse({"jsonrpc": "2.0", "id": i, "result": {"ssn": SSN, "i": i}}, "message")
               for i in range(3))).encode()
STREAMS = {"mcp": MCP, "openai": chat_stream("m").encode(),
           "anthropic": anthropic_stream("m").encode()}


@settings(max_examples=60, deadline=None)
@given(protocol=st.sampled_from(sorted(STREAMS)), data=st.data())
def test_any_network_split_gives_the_same_masked_stream(protocol, data):
    body = STREAMS[protocol]
    cuts = data.draw(st.lists(st.integers(0, len(body)), max_size=40))
    whole = run(protocol, body)
    assert run(protocol, body, cuts) == whole
    assert SSN.encode() not in whole and b"***-**-1234" in whole.replace(b"\\", b"")


def tool_arguments(protocol: str, out: bytes) -> str:
    """The arguments a client would assemble from the stream's fragments."""
    parts = []
    for event in parse_all(out):
        if event.data in (None, "[DONE]"):
            continue
        payload = json.loads(event.data)
        if protocol == "openai":
            for choice in payload.get("choices", []):
                for call in choice.get("delta", {}).get("tool_calls") or []:
                    parts.append(call.get("function", {}).get("arguments", ""))
        elif payload.get("type") == "content_block_delta" and payload["index"] == 1:
            parts.append(payload["delta"]["partial_json"])
    return "".join(parts)


def test_fragments_are_released_whole_and_masked():
    for protocol in ("openai", "anthropic"):
        arguments = json.loads(tool_arguments(protocol, run(protocol, STREAMS[protocol], range(0, 4000, 5))))
        assert arguments["ssn"] == "***-**-1234"
        assert arguments["customer"]["card"] == "4111 1111 1111 1111"  # this check masks SSNs only


def test_a_refused_mcp_event_becomes_a_jsonrpc_error_and_ends_the_stream():
    out = run("mcp", MCP, check=lambda units: Refused("blocked", "no", "r1")
              if any(u.rpc_id == 1 for u in units) else None)
    events = [json.loads(e.data) for e in parse_all(out)]
    assert [e.get("id") for e in events] == [0, 1]
    assert events[1]["error"]["data"] == {"code": "blocked", "rule": "r1"}


def test_a_refused_openai_call_ends_with_an_error_and_done():
    out = run("openai", STREAMS["openai"], check=lambda units: Refused("blocked", "no", "r2"))
    events = parse_all(out)
    assert json.loads(events[-2].data) == {"error": {"code": "blocked", "rule": "r2"}}
    assert events[-1].data == "[DONE]"
    assert SSN.encode() not in out and b"4111" not in out


def test_a_refused_anthropic_call_ends_with_an_error_event():
    out = run("anthropic", STREAMS["anthropic"], check=lambda units: Refused("blocked", "no"))
    last = parse_all(out)[-1]
    assert last.fields[0] == ("event", "error")
    assert json.loads(last.data)["error"]["type"] == "toolgate_blocked"
    assert b"message_stop" not in out


def test_a_malformed_event_ends_the_stream():
    body = MCP + b"event: message\ndata: {not json\n\n" + MCP
    out = run("mcp", body)
    events = parse_all(out)
    assert len(events) == 4
    assert json.loads(events[-1].data)["error"]["data"]["code"] == "malformed"


def test_invalid_utf8_in_a_stream_is_refused():
    out = run("rest", b"data: \xff\xfe\n\n")
    assert json.loads(parse_all(out)[-1].data)["error"]["code"] == "malformed"


def test_events_before_an_undecodable_one_in_the_same_chunk_still_pass():
    body = MCP + b"data: \xff\n\n"
    events = parse_all(run("mcp", body))
    assert [json.loads(e.data).get("id") for e in events] == [0, 1, 2, None]
    assert json.loads(events[-1].data)["error"]["data"]["code"] == "malformed"


def test_an_event_larger_than_the_limit_is_refused():
    checker = StreamChecker("rest", {}, masking_check, render)
    checker.parser.max_event = 100
    out = b"".join(checker(b"data: " + b"x" * 200))
    assert json.loads(parse_all(out)[-1].data)["error"]["code"] == "malformed"
