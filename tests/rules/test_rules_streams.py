"""Event streams checked event by event: however the network splits them, the same output;
a refused unit ends the stream with an error event in the protocol's shape."""

import json

import pytest
from hypothesis import given, settings, strategies as st

from toolgate.rules.protocols import Refused, StreamChecker
from toolgate.rules.protocols.sse import parse_all
from toolgate.scripts.demo_service import anthropic_stream, chat_stream, sse

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


# -- the text of completions ------------------------------------------------------------------

from toolgate.rules import Call, evaluate, load_rules_text  # noqa: E402
from toolgate.rules.protocols.streams import LINE_CROSSING  # noqa: E402

PROMPT_RULES = load_rules_text("""
labels:
  - {name: us_ssn, level: restricted, detector: us_ssn}
  - {name: card, level: restricted, detector: credit_card}
  - {name: key, level: restricted, detector: private_key}
rules:
  - id: mask-ssn
    match: {labels: [us_ssn, card]}
    action: mask
    mask: partial
  - id: no-keys
    match: {labels: [key]}
    action: block
""")
KEY = b"k" * 32


def engine_check(seen=None):
    """The real rule engine as the stream's check (as the policy runs it)."""
    def check(units):
        for unit in units:
            if seen is not None:
                seen.append(unit)
            decision = evaluate(PROMPT_RULES, Call(direction=unit.direction, protocol=unit.protocol,
                                                   function=unit.function, body=unit.body,
                                                   content=unit.content), KEY)
            if decision.action == "block":
                return Refused("blocked", decision.message or "no", decision.rule, decision.field)
            if decision.changed:
                unit.put(decision.body)
        return None
    return check


def chunk(index, delta, finish=None, **extra):
    return {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
            "choices": [{"index": index, "delta": delta, "finish_reason": finish, **extra}]}


def openai_body(*chunks, done=True):
    return ("".join(sse(c) for c in chunks) + (sse("[DONE]") if done else "")).encode()


def assembled(out: bytes) -> dict[int, str]:
    """What a client assembles from the content deltas, per choice."""
    texts: dict[int, str] = {}
    for event in parse_all(out):
        if event.data in (None, "[DONE]"):
            continue
        for choice in json.loads(event.data).get("choices", []):
            delta = choice.get("delta") or {}
            texts[choice["index"]] = texts.get(choice["index"], "") + (delta.get("content") or "")
    return texts


SPLIT = openai_body(
    chunk(0, {"role": "assistant", "content": ""}),
    chunk(0, {"content": "Your SSN is 536-22-"}),
    chunk(1, {"content": "Card 4111 1111 "}),
    chunk(0, {"content": "1234, noted."}),
    chunk(1, {"content": "1111 1111 on file."}),
    chunk(0, {}, "stop"),
    chunk(1, {}, "stop"),
)


@settings(max_examples=40, deadline=None)
@given(cuts=st.lists(st.integers(0, len(SPLIT)), max_size=30))
def test_openai_content_split_across_chunks_is_masked_in_every_choice(cuts):
    out = run("openai", SPLIT, cuts, check=engine_check())
    assert SSN.encode() not in out and b"4111 1111 1111 1111" not in out
    assert b"536-22-" not in out  # not even the first half went out on its own
    assert assembled(out) == {0: "Your SSN is ***-**-1234, noted.",
                              1: "Card **** **** **** 1111 on file."}
    assert parse_all(out)[-1].data == "[DONE]"


def test_completion_text_units_name_the_assistant_and_sit_at_the_chunks_path():
    seen = []
    run("openai", SPLIT, check=engine_check(seen))
    assert {(u.function, u.direction, u.content, u.location) for u in seen} == {
        ("message.assistant", "response", True, "$.choices[0].delta.content"),
        ("message.assistant", "response", True, "$.choices[1].delta.content"),
    }


def test_complete_lines_are_released_as_they_arrive():
    checker = StreamChecker("openai", {"protocol": "openai"}, engine_check(), render)
    first = b"".join(checker(openai_body(chunk(0, {"content": "Line one.\nLine t"}), done=False)))
    assert assembled(first) == {0: "Line one.\n"}  # released before the choice ends
    rest = b"".join(checker(openai_body(chunk(0, {"content": "wo, SSN 536-22-1234"}),
                                        chunk(0, {}, "stop"))))
    rest += b"".join(checker(b""))
    assert assembled(first + rest) == {0: "Line one.\nLine two, SSN ***-**-1234"}


def test_a_value_split_at_a_line_break_is_read_as_the_unstreamed_text_would_be():
    # No detector but PEM blocks matches across a line break: the cut changes nothing.
    assert LINE_CROSSING == ("-----BEGIN",)
    body = openai_body(chunk(0, {"content": "ids 536-22\n"}), chunk(0, {"content": "-1234\n"}),
                       chunk(0, {}, "stop"))
    assert assembled(run("openai", body, check=engine_check())) == {0: "ids 536-22\n-1234\n"}


@pytest.mark.parametrize("begin", ["-----BEGIN", "-----BEG\u200bIN"], ids=["plain", "invisible"])
def test_a_private_key_is_held_to_the_end_of_the_choice_and_blocked(begin):
    key_lines = [f"{begin} PRIVATE KEY-----", "MIIBVQIBADANBgkqhkiG9w0BAQEFAASCAT8wggE7AgEAAkEA",
                 "u1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0/Iz", "-----END PRIVATE KEY-----"]
    chunks = [chunk(0, {"content": "Here it is:\n"})]
    chunks += [chunk(0, {"content": line + "\n"}) for line in key_lines]
    chunks.append(chunk(0, {}, "stop"))
    seen = []
    out = run("openai", openai_body(*chunks), check=engine_check(seen))
    assert b"MIIBVQ" not in out and b" PRIVATE KEY" not in out
    assert assembled(out)[0] == "Here it is:\n"  # released before the key started
    assert json.loads(parse_all(out)[-2].data)["error"] == {"code": "blocked", "rule": "no-keys"}


def test_text_that_may_be_json_is_held_whole():
    first, second = chunk(0, {"content": '{"a": 1,\n'}), chunk(0, {"content": '"b": 2}'})
    checker = StreamChecker("openai", {"protocol": "openai"}, engine_check(), render)
    held = b"".join(checker(openai_body(first, done=False)))
    assert assembled(held) == {0: ""}  # a line, but maybe the start of a JSON document
    out = held + b"".join(checker(openai_body(second, chunk(0, {}, "stop")))) + b"".join(checker(b""))
    assert assembled(out) == {0: '{"a": 1,\n"b": 2}'}


ANTHROPIC_TEXT = "".join([
    sse({"type": "message_start", "message": {"type": "message", "role": "assistant",
                                              "content": []}}, "message_start"),
    sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        "content_block_start"),
    sse({"type": "content_block_delta", "index": 0,
         "delta": {"type": "text_delta", "text": "SSN 536-"}}, "content_block_delta"),
    sse({"type": "content_block_delta", "index": 0,
         "delta": {"type": "text_delta", "text": "22-1234 ok"}}, "content_block_delta"),
    sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
    sse({"type": "message_stop"}, "message_stop"),
]).encode()


def anthropic_text(out: bytes) -> str:
    text = ""
    for event in parse_all(out):
        payload = json.loads(event.data)
        if payload.get("type") == "content_block_delta":
            text += payload["delta"].get("text", "")
    return text


@settings(max_examples=30, deadline=None)
@given(cuts=st.lists(st.integers(0, len(ANTHROPIC_TEXT)), max_size=30))
def test_anthropic_text_deltas_split_across_events_are_masked(cuts):
    seen = []
    out = run("anthropic", ANTHROPIC_TEXT, cuts, check=engine_check(seen))
    assert SSN.encode() not in out and b"536-" not in out
    assert anthropic_text(out) == "SSN ***-**-1234 ok"
    assert [e.fields[0][1] for e in parse_all(out)][-2:] == ["content_block_stop", "message_stop"]
    assert {u.location for u in seen} == {"$.content[0].text"}


def test_an_unrecognized_stream_of_openai_chunks_gets_the_openai_treatment():
    out = run("rest", SPLIT, range(0, len(SPLIT), 7), check=engine_check(), context={})
    assert SSN.encode() not in out and b"536-22-" not in out
    assert assembled(out)[0] == "Your SSN is ***-**-1234, noted."


# -- data that is not JSON ---------------------------------------------------------------------

def test_data_that_is_not_json_is_checked_as_text_and_the_stream_ends_as_it_did():
    body = (sse({"n": 1}) + sse("[DONE]") + "data: [draft] call 536-22-1234\n\n").encode()
    seen = []
    out = run("rest", body, check=engine_check(seen), context={})
    events = parse_all(out)
    assert [e.data for e in events] == ['{"n":1}', "[DONE]", "[draft] call ***-**-1234"]
    assert [u.body for u in seen] == [{"n": 1}, "[DONE]", "[draft] call 536-22-1234"]


def test_json_data_in_a_stream_is_still_read_strictly():
    out = run("rest", b'data: {"a": 1, "a": 2}\n\n', context={})
    assert json.loads(parse_all(out)[-1].data)["error"]["code"] == "malformed"


# -- where a refused unit sits ------------------------------------------------------------------

def test_stream_refusals_name_the_path_of_the_chunks_not_a_python_tuple():
    locations = []

    def refuse_tools(units):
        for unit in units:
            if not unit.content:
                locations.append(unit.location)
                return Refused("blocked", "no", "r")
        return None

    run("openai", STREAMS["openai"], check=refuse_tools)
    run("anthropic", STREAMS["anthropic"], check=refuse_tools)
    assert locations == ["$.choices[0].delta.tool_calls[0].function.arguments", "$.content[1].input"]


def test_a_legacy_completion_stream_is_recognized_and_its_split_text_masked():
    def piece(text, finish=None):
        return {"id": "c", "object": "text_completion", "created": 0, "model": "m",
                "choices": [{"index": 0, "text": text, "finish_reason": finish}]}

    body = openai_body(piece("SSN 536-2"), piece("2-1234 ok"), piece("", "stop"))
    out = run("rest", body, range(0, len(body), 3), check=engine_check(), context={})
    assert SSN.encode() not in out and b"536-2" not in out
    text = "".join(c.get("text", "") for e in parse_all(out) if e.data != "[DONE]"
                   for c in json.loads(e.data)["choices"])
    assert text == "SSN ***-**-1234 ok"


def test_an_index_that_is_not_an_integer_ends_the_stream_as_malformed():
    for protocol, body in (
        ("openai", openai_body(chunk([0], {"content": "hi"}))),
        ("anthropic", sse({"type": "content_block_delta", "index": {"a": 1},
                           "delta": {"type": "text_delta", "text": "hi"}}, "content_block_delta").encode()),
    ):
        out = run(protocol, body, check=engine_check())
        assert b"malformed" in out and b'"hi"' not in out


def test_no_detector_but_those_marked_spans_lines_matches_across_a_line_break():
    # What makes a line break a safe place to cut held text.
    from toolgate.rules.detectors import DETECTORS

    for detector in DETECTORS.values():
        if detector.spans_lines:
            continue
        for example in detector.examples:
            assert list(detector.find(f"x {example} y"))
            for at in range(1, len(example)):
                text = f"x {example[:at]}\n{example[at:]} y"
                assert not any("\n" in text[start:end] for start, end in detector.find(text)), (detector.name, text)
