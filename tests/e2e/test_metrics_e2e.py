"""Metrics end to end: a real mitmdump with the gateway, a mixed run (allowed, masked, blocked,
held then approved and denied, LLM calls plain and streamed, no token, bad tokens), then
`GET /metrics` parsed with prometheus-client's own parser: every counter matches what the
session store recorded, every call was timed, and nothing that names a caller, a call or a
URL is in the text."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from click.testing import CliRunner
from harness import wait_until
from prometheus_client.parser import text_string_to_metric_families

from toolgate.scripts.cli import cli
from toolgate.scripts.harness import query

pytestmark = pytest.mark.e2e

CALLER, REVIEWER = "e2e-caller-7f3a", "e2e-reviewer-91c2"
DEPLOY = {"service": "api", "version": "2"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def mcp_call(tool: str, arguments: dict, rpc_id: int) -> dict:
    return {"jsonrpc": "2.0", "id": rpc_id, "method": "tools/call",
            "params": {"name": tool, "arguments": arguments}}


def held(gateway, token: str) -> list[dict]:
    answer = httpx.get(gateway.admin_url + "/api/approvals", headers=bearer(token), timeout=10)
    answer.raise_for_status()
    return answer.json()["approvals"]


def samples(families: dict, name: str, suffix: str = "") -> list:
    family = families.get(name)
    return [] if family is None else [s for s in family.samples if s.name == name + suffix]


def function_label(function: str, method: str) -> str:
    """What the metrics call a function: never its path (see the metrics addon)."""
    return "unnamed" if not function or function.startswith(method.upper() + " /") else function


def test_metrics_after_a_mixed_run_match_the_store(start_gateway, backend, issuer, tmp_path):
    caller = issuer.keys.mint(CALLER, ["support", "sre"])
    reviewer = issuer.keys.mint(REVIEWER, ["sre-leads"])
    expired = issuer.keys.mint(CALLER, ["sre"], ttl=-300)
    gateway = start_gateway()
    tokens = [caller, reviewer, expired]

    with gateway.client() as http, ThreadPoolExecutor(4) as pool:
        answers = [
            http.get("/healthz", headers=bearer(caller)),  # allowed, named by its path
            http.get("/customers/1", headers=bearer(caller)),  # masked answer
            http.get("/customers", headers=bearer(caller)),
            http.post("/mcp", json=mcp_call("get_customer", {"id": 7}, 1), headers=bearer(caller)),
            http.get("/customers/export?limit=500", headers=bearer(caller)),  # blocked
            http.post("/mcp", json=mcp_call("export_customers", {"limit": 500}, 2),
                      headers=bearer(caller)),
            http.post("/v1/chat/completions", headers=bearer(caller), json={
                "model": "m", "messages": [{"role": "user", "content": "hi"}]}),
            http.post("/v1/chat/completions", headers=bearer(caller), json={
                "model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}),
            http.get("/customers/1"),  # no token
            http.get("/customers/1", headers=bearer(expired)),
            http.get("/customers/1", headers={"Authorization": "Bearer not-a-token"}),
        ]
        approved = pool.submit(lambda: httpx.post(gateway.url + "/deploy", json=DEPLOY,
                                                  headers=bearer(caller), timeout=30))
        (first,) = wait_until(lambda: held(gateway, reviewer), timeout=10, interval=0.05)
        decided = httpx.post(f"{gateway.admin_url}/api/approvals/{first['id']}/approve",
                             json={"reason": "release 2"}, headers=bearer(reviewer), timeout=10)
        assert decided.status_code == 200, decided.text
        assert approved.result(15).status_code == 202
        denied = pool.submit(lambda: httpx.post(gateway.url + "/deploy", json=DEPLOY,
                                                headers=bearer(caller), timeout=30))
        (second,) = wait_until(lambda: held(gateway, reviewer), timeout=10, interval=0.05)
        result = CliRunner().invoke(cli, ["approvals", "deny", second["id"], "--reason", "freeze",
                                          "--admin", gateway.admin_url, "--token", reviewer])
        assert result.exit_code == 0, result.output
        assert denied.result(15).status_code == 403
    statuses = [a.status_code for a in answers]
    assert statuses[:4] == [200, 200, 200, 200] and statuses[4] == 403
    assert statuses[8:] == [401, 401, 401]

    scraped = httpx.get(gateway.admin_url + "/metrics", headers=bearer(reviewer), timeout=10)
    assert scraped.status_code == 200
    assert scraped.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = scraped.text
    families = {f.name: f for f in text_string_to_metric_families(text)}

    gateway.stop()  # the store is read once the gateway has let go of it
    db = tmp_path / "toolgate.duckdb"
    rows = query(db, "SELECT call_id, protocol, function, method, decision, enforced, forwarded, "
                     "error FROM calls")
    assert len(rows) == len(answers) + 2
    call_ids = [row[0] for row in rows]

    # Calls by protocol, function, decision and what was enforced.
    stored = Counter((p, function_label(f, m), d, e) for _, p, f, m, d, e, _, _ in rows)
    counted = Counter({(s.labels["protocol"], s.labels["function"], s.labels["decision"],
                        s.labels["enforced"]): int(s.value)
                       for s in samples(families, "toolgate_calls", "_total")})
    assert counted == stored
    assert {d for _, _, d, _ in stored} >= {"allow", "mask", "block", "deny", "approve"}
    assert {p for p, _, _, _ in stored} >= {"rest", "mcp", "openai", "http"}

    # Findings by label and action.
    found = Counter({(label, action): n for label, action, n in query(
        db, "SELECT coalesce(label, ''), coalesce(action, ''), count(*) FROM findings "
            "GROUP BY ALL")})
    counted = Counter({(s.labels["label"], s.labels["action"]): int(s.value)
                       for s in samples(families, "toolgate_findings", "_total")})
    assert counted == found and sum(found.values()) > 0

    # Decisions on held calls, by outcome and channel; and how long they waited.
    decisions = Counter({(d, c): n for d, c, n in query(
        db, "SELECT decision, channel, count(*) FROM approvals GROUP BY ALL")})
    counted = Counter({(s.labels["decision"], s.labels["channel"]): int(s.value)
                       for s in samples(families, "toolgate_approvals_decisions", "_total")})
    assert counted == decisions == Counter({("approved", "admin"): 1, ("denied", "cli"): 1})
    waits = {s.labels["decision"]: s.value
             for s in samples(families, "toolgate_approvals_wait_seconds", "_count")}
    assert waits == {"approved": 1, "denied": 1}

    # Identity refusals, by reason.
    refusals = {s.labels["reason"]: int(s.value)
                for s in samples(families, "toolgate_identity_refusals", "_total")}
    assert refusals == {"missing": 1, "expired": 1, "malformed": 1}
    assert sum(refusals.values()) == sum(1 for row in rows if row[7] == "identity")

    # Every call timed once; the backend's time for each forwarded one.
    def observed(name: str) -> int:
        return int(sum(s.value for s in samples(families, name, "_count")))

    assert observed("toolgate_call_seconds") == len(rows)
    assert observed("toolgate_gateway_seconds") == len(rows)
    assert observed("toolgate_backend_seconds") == sum(1 for row in rows if row[6])
    for name in ("toolgate_call_seconds", "toolgate_gateway_seconds", "toolgate_backend_seconds"):
        for sample in samples(families, name, "_bucket"):
            assert sample.labels["protocol"] in {"rest", "mcp", "openai", "anthropic", "http"}

    # The state: nothing held, the store recording, the admin API's own requests.
    assert samples(families, "toolgate_approvals_held")[0].value == 0
    assert samples(families, "toolgate_store_recording")[0].value == 1
    assert samples(families, "toolgate_store_commits", "_total")[0].value > 0
    assert any(s.labels["code"] == "200"
               for s in samples(families, "toolgate_admin_requests", "_total"))

    # Nothing names a caller, a token, a call or a URL.
    raw = scraped.content
    for secret in [CALLER, REVIEWER, *tokens, *call_ids, gateway.url, backend.url, "127.0.0.1",
                   "/customers", "/deploy", "/mcp", "/healthz", "/v1/", "limit=", "not-a-token"]:
        assert secret.encode() not in raw, secret
