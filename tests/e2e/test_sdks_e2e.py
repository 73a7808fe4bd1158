"""The official SDKs through a real gateway, as real clients use it: `mcp` (streamable HTTP),
`openai` and `anthropic`, against the demo backend (an MCP server and a loopback fake of the
OpenAI and Anthropic APIs whose model proposes a tool call full of PII). What the SDKs parse
is masked, streams end as the backend ended them, and a held MCP tool call answers once a
reviewer approves it."""

from __future__ import annotations

import asyncio
import json
import logging
import threading

import httpx
import pytest
from harness import wait_until

from toolgate.scripts.demo_service import REFUND_ARGS

pytestmark = pytest.mark.e2e

RAW = ("536-22-1234", "ada@example.com", "4111 1111 1111 1111")  # Ada's, in the backend
MASKED_SSN = "***-**-1234"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def mcp_session(url: str, token: str, work):
    """Run `work(session)` in an MCP client session through the gateway; its result."""
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async def run():
        # The SDK's own timeouts for MCP: 30 s, and 5 minutes to read an answer.
        http = httpx.AsyncClient(headers=bearer(token), timeout=httpx.Timeout(30, read=300))
        async with http, streamable_http_client(f"{url}/mcp", http_client=http) as streams:
            read, write, _ = streams
            async with ClientSession(read, write) as session:
                await session.initialize()
                return await work(session)

    return asyncio.run(run())


def assert_refund_masked(arguments: dict) -> None:
    assert arguments["ssn"] == MASKED_SSN and arguments["amount"] == REFUND_ARGS["amount"]
    assert arguments["customer"]["card"].endswith("1111")
    assert not any(raw in json.dumps(arguments) for raw in RAW)


def test_mcp_sdk_parses_a_masked_tool_result(start_gateway, backend, issuer, caplog):
    gateway = start_gateway()
    token = issuer.keys.mint("alice", ["support"])

    async def work(session):
        tools = await session.list_tools()
        return [t.name for t in tools.tools], await session.call_tool("get_customer", {"id": 1})

    with caplog.at_level(logging.WARNING, logger="mcp"):
        names, result = mcp_session(gateway.url, token, work)
    assert "get_customer" in names and result.isError is False
    assert result.structuredContent["ssn"] == MASKED_SSN
    text = json.loads(result.content[0].text)  # the text block is still JSON once masked
    assert text["ssn"] == MASKED_SSN and text["name"] == "Ada Lovelace"
    assert not any(raw in result.model_dump_json() for raw in RAW)
    # The session ended cleanly: the SDK's DELETE reached the server and was accepted (a
    # refusal is a warning in the SDK's log).
    assert [r.method for r in backend.received if r.method == "DELETE"] == ["DELETE"]
    assert [r.getMessage() for r in caplog.records if r.name.startswith("mcp")] == []


def test_openai_sdk_parses_masked_tool_call_arguments(start_gateway, backend, issuer):
    from openai import OpenAI

    gateway = start_gateway()
    client = OpenAI(base_url=f"{gateway.url}/v1", api_key=issuer.keys.mint("alice", ["support"]),
                    max_retries=0)
    completion = client.chat.completions.create(
        model="demo-model", messages=[{"role": "user", "content": "refund the customer"}])
    [call] = completion.choices[0].message.tool_calls
    assert call.function.name == "issue_refund"
    assert_refund_masked(json.loads(call.function.arguments))
    assert completion.choices[0].finish_reason == "tool_calls"


def test_openai_sdk_stream_iterates_to_its_end(start_gateway, backend, issuer):
    from openai import OpenAI

    gateway = start_gateway()
    client = OpenAI(base_url=f"{gateway.url}/v1", api_key=issuer.keys.mint("alice", ["support"]),
                    max_retries=0)
    stream = client.chat.completions.create(
        model="demo-model", stream=True,
        messages=[{"role": "user", "content": "refund the customer"}])
    chunks = list(stream)  # ends at the backend's `data: [DONE]`, without an exception
    assert chunks and chunks[-1].choices[0].finish_reason == "tool_calls"
    pieces = [tc.function.arguments or "" for chunk in chunks for choice in chunk.choices
              for tc in (choice.delta.tool_calls or []) if tc.function]
    assert_refund_masked(json.loads("".join(pieces)))
    # The gateway passed the stream's end on as the backend sent it.
    raw = httpx.post(f"{gateway.url}/v1/chat/completions", timeout=10,
                     headers=bearer(issuer.keys.mint("alice", ["support"])),
                     json={"model": "demo-model", "stream": True, "messages": []})
    assert raw.status_code == 200 and raw.text.rstrip().endswith("data: [DONE]")


def test_anthropic_sdk_parses_masked_tool_use_plain_and_streamed(start_gateway, backend, issuer):
    import anthropic

    gateway = start_gateway()
    # auth_token: the SDK sends `Authorization: Bearer`, what the gateway verifies.
    client = anthropic.Anthropic(base_url=gateway.url, api_key=None, max_retries=0,
                                 auth_token=issuer.keys.mint("alice", ["support"]))
    ask = {"model": "demo-model", "max_tokens": 100,
           "messages": [{"role": "user", "content": "refund the customer"}]}
    message = client.messages.create(**ask)
    [tool_use] = [b for b in message.content if b.type == "tool_use"]
    assert tool_use.name == "issue_refund"
    assert_refund_masked(tool_use.input)
    with client.messages.stream(**ask) as stream:
        final = stream.get_final_message()  # every event parsed, to message_stop
    [streamed] = [b for b in final.content if b.type == "tool_use"]
    assert_refund_masked(streamed.input)
    assert final.stop_reason == "tool_use"


HOLD_RULES = """
rules:
  - id: tool-deploys-need-approval     # an approve rule on an MCP tool, no direction
    match: {function: deploy, protocol: mcp}
    action: approve
    approvers: [sre-leads]
defaults:
  unknown_function: allow
"""


def test_a_held_mcp_tool_call_returns_its_result_after_approval(
    start_gateway, backend, issuer, tmp_path
):
    rules = tmp_path / "rules.yaml"
    rules.write_text(HOLD_RULES)
    gateway = start_gateway(f"toolgate_rules={rules}")
    bob, carol = issuer.keys.mint("bob", ["sre"]), issuer.keys.mint("carol", ["sre-leads"])
    decided: dict = {}

    def reviewer() -> None:
        """Carol, in another thread: approves the call once the gateway holds it."""
        def held():
            answer = httpx.get(f"{gateway.admin_url}/api/approvals", headers=bearer(carol),
                               timeout=10)
            return answer.json()["approvals"] if answer.status_code == 200 else None

        waiting = wait_until(held, timeout=30, interval=0.1)
        decided["held"] = waiting
        if waiting:
            decided["backend_before"] = deploy_calls()
            decided["answer"] = httpx.post(
                f"{gateway.admin_url}/api/approvals/{waiting[0]['id']}/approve",
                json={"reason": "release 2.1"}, headers=bearer(carol), timeout=10)

    def deploy_calls() -> list[dict]:
        bodies = [json.loads(r.body) for r in backend.received if r.path == "/mcp" and r.body]
        return [b for b in bodies if isinstance(b, dict) and b.get("method") == "tools/call"
                and b["params"]["name"] == "deploy"]

    async def work(session):
        thread = threading.Thread(target=reviewer, daemon=True)
        thread.start()
        result = await session.call_tool("deploy", {"service": "api", "version": "2.1"})
        thread.join(30)
        return result

    result = mcp_session(gateway.url, bob, work)
    [held] = decided["held"]
    assert held["subject"] == "bob" and held["rule"] == "tool-deploys-need-approval"
    assert held["arguments"] == {"service": "api", "version": "2.1"}
    assert decided["backend_before"] == []  # nothing reached the backend while it was held
    assert decided["answer"].status_code == 200, decided["answer"].text
    assert result.isError is False, result
    assert result.structuredContent["status"] == "started"
    assert result.structuredContent["service"] == "api"
    assert len(deploy_calls()) == 1  # the backend ran the deploy once
