"""Prompts and completions through a real mitmdump, in front of a loopback fake LLM API that
records the bytes it received: the text of messages is classified in both directions (a
prompt's SSN never reaches the model, a completion's card never reaches the caller, even split
across stream chunks), nothing raw is stored, event data that is not JSON passes as text, and
stream refusals name the JSONPath of the refused value."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from toolgate.scripts.harness import StubHandler, StubServer, open_store, store_bytes

pytestmark = pytest.mark.e2e

SSN = "536-22-1234"
CARD = "4111 1111 1111 1111"
RAW = (SSN, CARD, CARD.replace(" ", ""), "536-22-", "4111 1111 ")

RULES = """
labels:
  - {name: us_ssn, level: restricted, detector: us_ssn}
  - {name: card, level: restricted, detector: credit_card}
functions:
  - {name: issue_refund, owner: payments}
  - {name: compat.generate, match: {method: POST, path: /compat/generate}}
  - {name: events, match: {method: POST, path: /events}}
rules:
  - id: no-ssn-to-models  # the issue's example: masks SSNs in prompts before they reach the model
    match: {protocol: openai, direction: request, labels: [us_ssn]}
    action: mask
    mask: redact
  - id: no-ssn-to-claude
    match: {protocol: anthropic, direction: request, labels: [us_ssn]}
    action: mask
    mask: redact
  - id: cards-out-partial
    match: {direction: response, labels: [card]}
    action: mask
    mask: partial
  - id: no-ssn-refunds
    match: {function: issue_refund, labels: [us_ssn]}
    action: block
    message: refunds carry no SSN
defaults:
  unknown_function: deny  # prompts are not function calls: never denied as unknown
"""

ANSWER = f"Your card is {CARD}, noted."
BASE = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "m"}
REFUND = json.dumps({"ssn": SSN, "amount": 5})


def sse(data) -> bytes:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n".encode()


def chunk(delta, finish=None):
    return sse(dict(BASE, choices=[{"index": 0, "delta": delta, "finish_reason": finish}]))


def openai_events(refund: bool) -> list[bytes]:
    if refund:
        return [chunk({"role": "assistant", "tool_calls": [{"index": 0, "id": "t", "type": "function",
                                                             "function": {"name": "issue_refund", "arguments": ""}}]}),
                chunk({"tool_calls": [{"index": 0, "function": {"arguments": REFUND[:14]}}]}),
                chunk({"tool_calls": [{"index": 0, "function": {"arguments": REFUND[14:]}}]}),
                chunk({}, "tool_calls"), sse("[DONE]")]
    return [chunk({"role": "assistant", "content": ""}), chunk({"content": ANSWER[:22]}),
            chunk({"content": ANSWER[22:]}), chunk({}, "stop"), sse("[DONE]")]


def anthropic_events(refund: bool) -> list[bytes]:
    def event(kind, **data):
        return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()

    out = [event("message_start", message={"type": "message", "role": "assistant", "content": []}),
           event("content_block_start", index=0, content_block={"type": "text", "text": ""}),
           event("content_block_delta", index=0, delta={"type": "text_delta", "text": ANSWER[:22]}),
           event("content_block_delta", index=0, delta={"type": "text_delta", "text": ANSWER[22:]}),
           event("content_block_stop", index=0)]
    if refund:
        out += [event("content_block_start", index=1, content_block={
                    "type": "tool_use", "id": "t", "name": "issue_refund", "input": {}}),
                event("content_block_delta", index=1, delta={"type": "input_json_delta", "partial_json": REFUND[:14]}),
                event("content_block_delta", index=1, delta={"type": "input_json_delta", "partial_json": REFUND[14:]}),
                event("content_block_stop", index=1)]
    return out + [event("message_stop")]


def openai_answer(refund: bool) -> dict:
    message = {"role": "assistant", "content": ANSWER}
    if refund:
        message["tool_calls"] = [{"id": "t", "type": "function",
                                  "function": {"name": "issue_refund", "arguments": REFUND}}]
    return {"id": "c1", "object": "chat.completion", "choices": [{"index": 0, "message": message}]}


def anthropic_answer(refund: bool) -> dict:
    content = [{"type": "text", "text": ANSWER}]
    if refund:
        content.append({"type": "tool_use", "id": "t", "name": "issue_refund", "input": json.loads(REFUND)})
    return {"id": "m1", "type": "message", "role": "assistant", "content": content}


class FakeLLM(StubHandler):
    """OpenAI at /v1/chat/completions, Anthropic at /v1/messages, an OpenAI-compatible server
    at /compat/generate (a path toolgate does not know), a plain event stream at /events."""

    protocol_version = "HTTP/1.1"

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        self.server.received.append(body)
        request = json.loads(body or b"{}")
        refund = "refund" in json.dumps(request.get("messages"))
        if self.path == "/events":
            return self.stream([sse(f"card {CARD}"), sse({"n": 1}), sse("[DONE]")])
        if request.get("stream"):
            events = anthropic_events(refund) if self.path == "/v1/messages" else openai_events(refund)
            return self.stream(events)
        answer = anthropic_answer(refund) if self.path == "/v1/messages" else openai_answer(refund)
        self.send_json(answer)

    def stream(self, events: list[bytes]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for event in events:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")


@pytest.fixture
def llm():
    server = StubServer(FakeLLM)
    server.received = []
    with server:
        yield server


@pytest.fixture
def llm_gateway(start_gateway, llm, tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    return start_gateway(f"toolgate_rules={rules}", upstream=llm.url)


def auth(issuer) -> dict[str, str]:
    return {"Authorization": f"Bearer {issuer.keys.mint('alice', ['support'])}"}


def stored(db: Path) -> tuple[bytes, str, list[tuple]]:
    """The store's files as bytes, every row of every table as text (DuckDB compresses
    strings: the bytes alone could hide a value), and the findings."""
    data = store_bytes(db)
    with open_store(db) as con:
        tables = [row[0] for row in con.execute("SELECT table_name FROM information_schema.tables").fetchall()]
        rows = "\n".join(repr(con.execute(f'SELECT * FROM "{table}"').fetchall()) for table in tables)
        findings = con.execute("SELECT direction, path, label, action FROM findings").fetchall()
    return data, rows, findings


def assert_no_raw(data: bytes | str, where: str) -> None:
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    leaked = [value for value in RAW if value in text.replace("\\", "")]
    assert not leaked, f"raw values in {where}: {leaked}"


def content_of(path: str, answer: httpx.Response, stream: bool) -> str:
    """The completion text as an SDK would assemble it."""
    if not stream:
        body = answer.json()
        return body["content"][0]["text"] if path == "/v1/messages" else body["choices"][0]["message"]["content"]
    text = ""
    for line in answer.text.splitlines():
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        event = json.loads(line[6:])
        if path == "/v1/messages":
            text += (event.get("delta") or {}).get("text", "") if event.get("type") == "content_block_delta" else ""
        else:
            text += "".join((c.get("delta") or {}).get("content") or "" for c in event.get("choices", []))
    return text


def request_body(path: str, stream: bool, prompt: str) -> dict:
    body = {"model": "m", "max_tokens": 50, "stream": stream,
            "messages": [{"role": "user", "content": prompt}]}
    if path == "/v1/messages":
        body["system"] = f"The caller's SSN is {SSN}."
    else:
        body["messages"].insert(0, {"role": "system", "content": f"The caller's SSN is {SSN}."})
    return body


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"], ids=["openai", "anthropic"])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_prompts_and_completions_are_masked_on_the_wire_and_in_the_store(
        llm_gateway, llm, issuer, tmp_path, path, stream):
    with llm_gateway.client() as http:
        answer = http.post(path, json=request_body(path, stream, f"my SSN is {SSN}"),
                           headers=auth(issuer))
    assert answer.status_code == 200, answer.text
    [received] = llm.received
    assert_no_raw(received, "what the model received")
    sent = json.loads(received)
    prompts = [m["content"] for m in sent["messages"]] + ([sent["system"]] if "system" in sent else [])
    assert sorted(prompts) == ["The caller's SSN is [REDACTED:us_ssn].", "my SSN is [REDACTED:us_ssn]"]
    assert_no_raw(answer.content, "the caller's answer")
    assert content_of(path, answer, stream) == "Your card is **** **** **** 1111, noted."
    if stream:
        assert answer.text.rstrip().endswith("data: [DONE]" if "chat" in path else '{"type": "message_stop"}')

    llm_gateway.stop()
    data, rows, findings = stored(tmp_path / "toolgate.duckdb")
    assert_no_raw(data, "the store's file")
    assert_no_raw(rows, "the store's rows")
    assert "[REDACTED:us_ssn]" in rows and "1111, noted." in rows
    assert {(d, label, action) for d, _, label, action in findings} == {
        ("request", "us_ssn", "mask"), ("response", "card", "mask")}


@pytest.mark.parametrize("path, field", [
    ("/v1/chat/completions", "$.choices[0].delta.tool_calls[0].function.arguments.ssn"),
    ("/v1/messages", "$.content[1].input.ssn"),
], ids=["openai", "anthropic"])
def test_a_refused_streamed_tool_call_names_its_jsonpath_in_the_error_and_the_store(
        llm_gateway, llm, issuer, tmp_path, path, field):
    with llm_gateway.client() as http:
        answer = http.post(path, json=request_body(path, True, "refund me"), headers=auth(issuer))
        plain = http.post(path, json=request_body(path, False, "refund me"), headers=auth(issuer))
    assert answer.status_code == 200
    errors = [json.loads(line[6:]) for line in answer.text.splitlines()
              if line.startswith("data: ") and '"error"' in line]
    [error] = errors
    detail = error["error"]["toolgate"] if path == "/v1/messages" else error["error"]
    assert (detail["code"], detail["rule"], detail["field"]) == ("blocked", "no-ssn-refunds", field)
    assert SSN not in answer.text
    # The same refusal without streaming names the same value (OpenAI: in `message`, not `delta`).
    assert plain.status_code == 403
    assert plain.json()["error"]["field"] == field.replace(".delta.", ".message.")

    llm_gateway.stop()
    data, rows, findings = stored(tmp_path / "toolgate.duckdb")
    paths = {p for d, p, label, action in findings if label == "us_ssn" and d == "request"}
    assert field in paths and field.replace(".delta.", ".message.") in paths
    assert not any("(" in p for _, p, _, _ in findings)
    assert_no_raw(data, "the store's file")


def test_an_openai_compatible_stream_on_another_path_is_checked_and_ends_as_the_backend_ended_it(
        llm_gateway, llm, issuer, tmp_path):
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    with llm_gateway.client() as http:
        compat = http.post("/compat/generate", json=body, headers=auth(issuer))
        events = http.post("/events", json={"stream": True}, headers=auth(issuer))
    # Not recognized by its request (no tools, unknown path), but by its chunks: split values
    # are seen whole, and `data: [DONE]` is text, not broken JSON.
    assert compat.status_code == 200 and compat.text.rstrip().endswith("data: [DONE]")
    assert content_of("/compat/generate", compat, True) == "Your card is **** **** **** 1111, noted."
    assert_no_raw(compat.content, "the compatible stream")
    assert events.status_code == 200
    assert [line for line in events.text.splitlines() if line] == [
        "data: card **** **** **** 1111", 'data: {"n":1}', "data: [DONE]"]
    llm_gateway.stop()
    data, rows, _ = stored(tmp_path / "toolgate.duckdb")
    assert_no_raw(data, "the store's file")
    assert_no_raw(rows, "the store's rows")


def test_the_openai_sdk_assembles_the_masked_completion_of_a_stream(llm_gateway, llm, issuer):
    from openai import OpenAI

    client = OpenAI(base_url=f"{llm_gateway.url}/v1", max_retries=0,
                    api_key=issuer.keys.mint("alice", ["support"]))
    chunks = list(client.chat.completions.create(
        model="m", stream=True, messages=[{"role": "user", "content": f"my SSN is {SSN}"}]))
    text = "".join(choice.delta.content or "" for chunk in chunks for choice in chunk.choices)
    assert text == "Your card is **** **** **** 1111, noted."
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert_no_raw(llm.received[0], "what the model received")
