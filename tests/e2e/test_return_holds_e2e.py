"""`hold: return` through a real gateway with the official `mcp` SDK: the agent's tool call is
answered `approval_pending` at once (no connection waits on a human), a reviewer approves it
from the CLI, and the agent's retry of the same call goes through; the backend runs it once."""

from __future__ import annotations

import json

import httpx
import pytest
from click.testing import CliRunner
from test_sdks_e2e import bearer, mcp_session

from toolgate.scripts.cli import cli
from toolgate.scripts.harness import query

pytestmark = pytest.mark.e2e

RETURN_RULES = """
rules:
  - id: tool-deploys-need-approval
    match: {function: deploy, protocol: mcp}
    action: approve
    approvers: [sre-leads]
    hold: return
defaults:
  unknown_function: allow
"""
ARGS = {"service": "api", "version": "2.2"}


def deploy_calls(backend) -> list[dict]:
    bodies = [json.loads(r.body) for r in backend.received if r.path == "/mcp" and r.body]
    return [b for b in bodies if isinstance(b, dict) and b.get("method") == "tools/call"
            and b["params"]["name"] == "deploy"]


def toolgate(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_a_returned_hold_is_approved_from_the_cli_and_the_sdks_retry_succeeds(
        start_gateway, backend, issuer, tmp_path):
    from mcp.shared.exceptions import McpError

    rules = tmp_path / "rules.yaml"
    rules.write_text(RETURN_RULES)
    gateway = start_gateway(f"toolgate_rules={rules}")
    bob, carol = issuer.keys.mint("bob", ["sre"]), issuer.keys.mint("carol", ["sre-leads"])
    seen: dict = {}

    async def work(session):
        for attempt in ("first", "retry before the decision"):
            try:
                await session.call_tool("deploy", ARGS)
            except McpError as exc:
                seen[attempt] = exc.error
        # the reviewer, from the command line, while the agent's session stays open
        listed = httpx.get(gateway.admin_url + "/api/approvals", headers=bearer(carol),
                           timeout=10).json()["approvals"]
        seen["listed"] = listed
        seen["approve"] = toolgate("approvals", "approve", listed[0]["id"], "--reason", "ok 2.2",
                                   "--admin", gateway.admin_url, "--token", carol)
        return await session.call_tool("deploy", ARGS)

    result = mcp_session(gateway.url, bob, work)
    first, again = seen["first"], seen["retry before the decision"]
    assert first.data["code"] == "approval_pending"
    approval = first.data["approval"]
    assert approval["status"] == "pending" and approval["approvers"] == ["sre-leads"]
    assert again.data["approval"]["id"] == approval["id"]  # attached, not a new approval
    (listed,) = seen["listed"]
    assert listed["id"] == approval["id"] and listed["hold"] == "return"
    assert listed["arguments"] == ARGS
    code, out = seen["approve"]
    assert code == 0, out
    assert result.isError is False and result.structuredContent["status"] == "started"
    assert len(deploy_calls(backend)) == 1  # never before the approval, once after

    gateway.stop()
    db = tmp_path / "toolgate.duckdb"
    errors = sorted(e or "-" for (e,) in query(db, "SELECT error FROM calls WHERE function = "
                                                   "'deploy'"))
    assert errors == ["-", "approval_pending", "approval_pending"]
    decisions = query(db, "SELECT a.decision, a.reviewer, c.error FROM approvals a JOIN calls c "
                          "USING (call_id) ORDER BY a.seq")
    # the decision on the call that was held, and the retry that went through on it
    assert decisions == [("approved", "carol", "approval_pending"), ("approved", "carol", None)]
