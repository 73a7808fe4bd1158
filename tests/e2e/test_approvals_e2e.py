"""Approvals end to end: real mitmdump / mitmweb processes with the gateway, the demo backend
behind them, reviewers on the admin API and the `toolgate approvals` CLI, mitmweb's REST API."""

from __future__ import annotations

import json
import time
from concurrent.futures import Future, ThreadPoolExecutor

import httpx
import pytest
from click.testing import CliRunner
from harness import MITMWEB, wait_until

from toolgate.scripts.cli import cli
from toolgate.scripts.harness import StubHandler, StubServer, free_port, query

pytestmark = pytest.mark.e2e

DEPLOY = {"service": "api", "version": "2"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class People:
    """Tokens from the dev issuer: bob deploys (sre), carol approves deploys (sre-leads)."""

    def __init__(self, issuer) -> None:
        mint = issuer.keys.mint
        self.bob, self.alice = mint("bob", ["sre"]), mint("alice", ["support", "sre"])
        self.carol = mint("carol", ["sre-leads"])
        self.bob_lead = mint("bob", ["sre", "sre-leads"])  # an approver who is also the caller
        self.dana = mint("dana", ["crm-team"])


@pytest.fixture
def people(issuer) -> People:
    return People(issuer)


@pytest.fixture
def pool():
    executor = ThreadPoolExecutor(max_workers=80)
    yield executor
    # Calls still held when a test fails end when its gateway stops: do not wait for them here.
    executor.shutdown(wait=False, cancel_futures=True)


def call(gateway, token: str, method: str = "POST", path: str = "/deploy", body=None,
         timeout: float = 30) -> httpx.Response:
    with httpx.Client(base_url=gateway.url, timeout=timeout) as http:
        return http.request(method, path, json=body if body is not None else (
            DEPLOY if method == "POST" else None), headers=bearer(token))


def held_list(gateway, token: str) -> list[dict]:
    answer = httpx.get(gateway.admin_url + "/api/approvals", headers=bearer(token), timeout=10)
    answer.raise_for_status()
    return answer.json()["approvals"]


def wait_held(gateway, token: str, count: int = 1, timeout: float = 10) -> list[dict]:
    def enough() -> list[dict] | None:
        held = held_list(gateway, token)
        return held if len(held) >= count else None

    found = wait_until(enough, timeout=timeout, interval=0.05)
    assert found and len(found) >= count, f"expected {count} held call(s), got {found}"
    return found


def admin_post(gateway, token: str, path: str, body: dict) -> httpx.Response:
    return httpx.post(gateway.admin_url + path, json=body, headers=bearer(token), timeout=10)


def toolgate(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def error(answer: httpx.Response) -> dict:
    return answer.json()["error"]


def deploys(backend) -> list:
    return [r for r in backend.received if r.path == "/deploy"]


# -- deciding with identity ------------------------------------------------------------------------

def test_held_then_approved_by_an_approver_through_the_cli(start_gateway, backend, people, pool):
    gateway = start_gateway()
    pending: Future = pool.submit(call, gateway, people.bob)
    (held,) = wait_held(gateway, people.carol)
    assert held["subject"] == "bob" and held["function"] == "deploy.start"
    assert held["rule"] == "demo-deploys-need-approval" and held["arguments"] == DEPLOY
    assert deploys(backend) == []  # nothing reaches the backend while held

    code, out = toolgate("approvals", "list", "--admin", gateway.admin_url, "--token", people.carol)
    assert code == 0 and held["id"] in out and "deploy.start" in out
    code, out = toolgate("approvals", "show", held["id"], "--admin", gateway.admin_url,
                         "--token", people.carol, "--json")
    assert code == 0 and json.loads(out)["approvers"] == ["sre-leads"]
    code, out = toolgate("approvals", "approve", held["id"], "--reason", "release 2",
                         "--admin", gateway.admin_url, "--token", people.carol)
    assert code == 0 and "this one call only" in out

    answer = pending.result(10)
    assert answer.status_code == 202 and answer.json()["service"] == "api"
    assert len(deploys(backend)) == 1
    assert held_list(gateway, people.carol) == []
    metrics = httpx.get(gateway.admin_url + "/metrics", headers=bearer(people.carol)).text
    assert 'toolgate_approvals_decisions_total{channel="cli",decision="approved"} 1' in metrics


def test_held_then_denied_through_the_cli(start_gateway, backend, people, pool):
    gateway = start_gateway()
    rest = pool.submit(call, gateway, people.bob)
    mcp = pool.submit(call, gateway, people.bob, path="/mcp", body={
        "jsonrpc": "2.0", "id": "d-1", "method": "tools/call",
        "params": {"name": "deploy", "arguments": DEPLOY}})
    held = wait_held(gateway, people.carol, 2)
    code, out = toolgate("approvals", "watch", "--iterations", "2", "--interval", "0.2", "--json",
                         "--admin", gateway.admin_url, "--token", people.carol)
    frames = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(frames) == 2 and all(len(f) == 2 for f in frames)
    code, out = toolgate("approvals", "watch", "--iterations", "1",
                         "--admin", gateway.admin_url, "--token", people.carol)
    assert code == 0 and "2 held call(s)" in out and held[0]["id"] in out
    for entry in held:
        code, out = toolgate("approvals", "deny", entry["id"], "--reason", "change freeze",
                             "--admin", gateway.admin_url, "--token", people.carol)
        assert code == 0, out
    answer = rest.result(10)
    assert answer.status_code == 403
    assert error(answer)["code"] == "denied" and "change freeze" in error(answer)["message"]
    rpc = mcp.result(10).json()
    assert rpc["id"] == "d-1" and rpc["error"]["data"]["code"] == "denied"
    assert backend.received == []


def test_non_approvers_and_the_caller_are_refused_and_the_call_stays_held(
    start_gateway, backend, people, pool
):
    gateway = start_gateway()
    pending = pool.submit(call, gateway, people.bob_lead)
    (held,) = wait_held(gateway, people.carol)
    approve = f"/api/approvals/{held['id']}/approve"
    not_approver = admin_post(gateway, people.alice, approve, {"reason": "trust me"})
    assert not_approver.status_code == 403 and "not in the approvers" in error(not_approver)["message"]
    own = admin_post(gateway, people.bob_lead, approve, {"reason": "my own"})
    assert own.status_code == 403 and "own call" in error(own)["message"]
    no_reason = admin_post(gateway, people.carol, approve, {})
    assert no_reason.status_code == 400
    no_token = httpx.post(gateway.admin_url + approve, json={"reason": "x"})
    assert no_token.status_code == 401 and error(no_token)["code"] == "identity"
    code, out = toolgate("approvals", "approve", held["id"], "--reason", "x",
                         "--admin", gateway.admin_url, "--token", people.alice)
    assert code == 1 and "not in the approvers" in out

    assert [h["id"] for h in held_list(gateway, people.carol)] == [held["id"]]  # still held
    assert not pending.done() and backend.received == []
    assert admin_post(gateway, people.carol, approve, {"reason": "ok"}).status_code == 200
    assert pending.result(10).status_code == 202


# -- time --------------------------------------------------------------------------------------------

def test_an_undecided_call_times_out_and_a_failing_webhook_changes_nothing(
    start_gateway, backend, people
):
    gateway = start_gateway("toolgate_approval_timeout=1",
                            "toolgate_webhook=http://127.0.0.1:9/nobody-listens")
    started = time.monotonic()
    answer = call(gateway, people.bob)
    assert 0.9 < time.monotonic() - started < 5
    assert answer.status_code == 403 and error(answer)["code"] == "approval_timeout"
    assert error(answer)["rule"] == "demo-deploys-need-approval"
    assert backend.received == []
    assert wait_until(lambda: "webhook" in gateway.output and "failed" in gateway.output)


def test_timeout_zero_denies_at_once(start_gateway, backend, people):
    gateway = start_gateway("toolgate_approval_timeout=0")
    started = time.monotonic()
    answer = call(gateway, people.bob)
    assert time.monotonic() - started < 1
    assert answer.status_code == 403 and error(answer)["code"] == "approval_timeout"
    assert backend.received == []


def test_a_caller_that_disconnects_is_recorded_and_forgotten(start_gateway, backend, people):
    gateway = start_gateway()
    with pytest.raises(httpx.ReadTimeout):
        call(gateway, people.bob, timeout=1)
    assert wait_until(lambda: held_list(gateway, people.carol) == [], timeout=5)
    metrics = httpx.get(gateway.admin_url + "/metrics", headers=bearer(people.carol)).text
    assert 'channel="disconnect",decision="expired"} 1' in metrics
    assert backend.received == []


# -- scope ---------------------------------------------------------------------------------------------

def test_a_grant_covers_the_next_identical_call_but_not_another_caller(
    start_gateway, backend, people, pool
):
    gateway = start_gateway()
    first = pool.submit(call, gateway, people.bob)
    (held,) = wait_held(gateway, people.carol)
    code, out = toolgate("approvals", "approve", held["id"], "--reason", "release day",
                         "--for", "10m", "--admin", gateway.admin_url, "--token", people.carol)
    assert code == 0 and "for 10m" in out and "with ANY arguments" in out
    assert first.result(10).status_code == 202

    started = time.monotonic()
    again = call(gateway, people.bob)  # not held: the grant covers it
    assert again.status_code == 202 and time.monotonic() - started < 2

    other = pool.submit(call, gateway, people.alice)  # alice is not covered
    (alices,) = wait_held(gateway, people.carol)
    assert alices["subject"] == "alice"
    admin_post(gateway, people.carol, f"/api/approvals/{alices['id']}/deny", {"reason": "no"})
    assert other.result(10).status_code == 403
    assert len(deploys(backend)) == 2


def test_a_one_call_approval_does_not_cover_different_arguments(
    start_gateway, backend, people, pool
):
    gateway = start_gateway()
    first = pool.submit(call, gateway, people.bob)
    (held,) = wait_held(gateway, people.carol)
    assert admin_post(gateway, people.carol, f"/api/approvals/{held['id']}/approve",
                      {"reason": "this one"}).status_code == 200
    assert first.result(10).status_code == 202

    other = pool.submit(call, gateway, people.bob, body={"service": "db", "version": "9"})
    (next_held,) = wait_held(gateway, people.carol)
    assert next_held["arguments"] == {"service": "db", "version": "9"}
    assert next_held["id"] != held["id"]
    code, out = toolgate("approvals", "approve", next_held["id"], "--reason", "x", "--same-args",
                         "--admin", gateway.admin_url, "--token", people.carol)
    assert code == 2 and "--same-args needs --for" in out  # a usage error; still held
    admin_post(gateway, people.carol, f"/api/approvals/{next_held['id']}/deny", {"reason": "no"})
    assert other.result(10).status_code == 403
    assert len(deploys(backend)) == 1


def test_an_overdue_access_review_is_held_and_says_so(start_gateway, backend, people, pool):
    gateway = start_gateway()
    pending = pool.submit(call, gateway, people.alice, "GET", "/customers/export?limit=10")
    (held,) = wait_held(gateway, people.dana)
    detail = httpx.get(f"{gateway.admin_url}/api/approvals/{held['id']}",
                       headers=bearer(people.dana)).json()
    assert detail["access_review"] is True and detail["rule"] == "access:crm.export"
    assert "access review" in detail["message"] and detail["approvers"] == ["crm-team"]
    assert detail["arguments"] == {"limit": "10"}
    assert admin_post(gateway, people.dana, f"/api/approvals/{held['id']}/approve",
                      {"reason": "review booked"}).status_code == 200
    answer = pending.result(10)
    assert answer.status_code == 200 and len(answer.json()["customers"]) == 10


# -- notification ------------------------------------------------------------------------------------

class Hook(StubHandler):
    received: list[dict] = []

    def do_POST(self):
        length = int(self.headers["Content-Length"])
        Hook.received.append(json.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()


def test_the_webhook_receives_each_held_call_with_how_to_approve(start_gateway, people, pool):
    server = StubServer(Hook).start()
    Hook.received = []
    try:
        gateway = start_gateway(f"toolgate_webhook={server.url}/hook")
        pending = pool.submit(call, gateway, people.bob)
        (held,) = wait_held(gateway, people.carol)
        assert wait_until(lambda: Hook.received, timeout=5)
        note = Hook.received[0]
        assert note["id"] == held["id"] and note["caller"] == "bob"
        assert note["function"] == "deploy.start" and note["arguments"] == DEPLOY
        assert note["how_to_approve"]["api"] == \
            f"POST {gateway.admin_url}/api/approvals/{held['id']}/approve"
        assert f"toolgate approvals approve {held['id']}" in note["how_to_approve"]["cli"]
        assert not pending.done()  # notified, not approved
        admin_post(gateway, people.carol, f"/api/approvals/{held['id']}/deny", {"reason": "no"})
        assert pending.result(10).status_code == 403
    finally:
        server.stop()


# -- mitmweb -----------------------------------------------------------------------------------------

class Web:
    """mitmweb's REST API, with its XSRF cookie echoed as X-XSRFToken."""

    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=10)
        self.http.get("/")
        self.xsrf = self.http.cookies["_xsrf"]

    def flows(self) -> list[dict]:
        return self.http.get("/flows").json()

    def post(self, path: str, body: dict | None = None) -> dict | None:
        answer = self.http.post(path, json=body, headers={"X-XSRFToken": self.xsrf})
        assert answer.status_code == 200, answer.text
        return answer.json() if answer.content else None


@pytest.fixture
def mitmweb(start_gateway):
    port = free_port()
    gateway = start_gateway(program=MITMWEB, extra_args=(
        "--web-host", "127.0.0.1", "--web-port", str(port), "--no-web-open-browser"))
    web = Web(f"http://127.0.0.1:{port}")
    yield gateway, web
    web.http.close()


def intercepted(web: Web) -> list[dict]:
    found = wait_until(lambda: [f for f in web.flows() if f.get("intercepted")], timeout=10)
    assert found, "no intercepted flow in mitmweb"
    return found


def test_mitmweb_shows_the_held_call_and_resume_forwards_it(mitmweb, backend, people, pool):
    gateway, web = mitmweb
    pending = pool.submit(call, gateway, people.bob)
    (flow,) = intercepted(web)
    assert flow["marked"] == "⌛"  # :hourglass:
    for part in ("demo-deploys-need-approval", "bob", "deploy.start", '"service":"api"'):
        assert part in flow["comment"]
    web.post(f"/flows/{flow['id']}/resume")
    answer = pending.result(10)
    assert answer.status_code == 202 and len(deploys(backend)) == 1
    metrics = httpx.get(gateway.admin_url + "/metrics", headers=bearer(people.carol)).text
    assert 'channel="mitmweb",decision="approved"} 1' in metrics


def test_mitmwebs_command_bar_approves_and_denies(mitmweb, backend, people, pool):
    gateway, web = mitmweb
    first = pool.submit(call, gateway, people.bob, body={"service": "one"})
    second = pool.submit(call, gateway, people.bob, body={"service": "two"})
    one, two = sorted(wait_held(gateway, people.carol, 2), key=lambda h: h["arguments"]["service"])
    result = web.post("/commands/toolgate.approve",
                      {"arguments": [f"~comment {one['id']}", "change", "CHG-7"]})
    assert "error" not in result, result
    web.post("/commands/toolgate.deny", {"arguments": [f"~comment {two['id']}", "not", "now"]})
    assert first.result(10).status_code == 202
    denied = second.result(10)
    assert denied.status_code == 403 and "not now" in error(denied)["message"]
    assert [json.loads(r.body)["service"] for r in deploys(backend)] == ["one"]


def test_mitmweb_abort_answers_403_denied_instead_of_hanging(mitmweb, backend, people, pool):
    gateway, web = mitmweb
    pending = pool.submit(call, gateway, people.bob)
    (flow,) = intercepted(web)
    started = time.monotonic()
    web.post(f"/flows/{flow['id']}/kill")
    answer = pending.result(10)
    assert time.monotonic() - started < 3
    assert answer.status_code == 403 and error(answer)["code"] == "denied"
    assert "mitmweb" in error(answer)["message"]
    assert backend.received == []
    assert wait_until(lambda: held_list(gateway, people.carol) == [], timeout=5)


# -- load ----------------------------------------------------------------------------------------------

def test_fifty_held_calls_never_block_five_hundred_others(start_gateway, backend, people, pool):
    gateway = start_gateway()
    held_calls = {i: pool.submit(call, gateway, people.bob, body={"service": f"s{i}",
                                                                  "version": "1"}, timeout=60)
                  for i in range(50)}
    wait_held(gateway, people.carol, 50, timeout=20)

    def read(i: int) -> int:
        with httpx.Client(base_url=gateway.url, timeout=20, headers=bearer(people.alice)) as http:
            return [http.get(f"/customers/{1 + (i + j) % 2}").status_code
                    for j in range(25)].count(200)

    with ThreadPoolExecutor(max_workers=20) as readers:
        assert sum(readers.map(read, range(20))) == 500
    held = held_list(gateway, people.carol)
    assert len(held) == 50 and not any(f.done() for f in held_calls.values())

    by_service = {h["arguments"]["service"]: h["id"] for h in held}
    with httpx.Client(base_url=gateway.admin_url, timeout=10, headers=bearer(people.carol)) as adm:
        for i in range(50):
            verb = "approve" if i % 2 == 0 else "deny"
            decided = adm.post(f"/api/approvals/{by_service[f's{i}']}/{verb}",
                               json={"reason": f"load {i}"})
            assert decided.status_code == 200, decided.text
    for i, future in held_calls.items():
        answer = future.result(20)
        if i % 2 == 0:
            assert answer.status_code == 202 and answer.json()["service"] == f"s{i}"
        else:
            assert answer.status_code == 403 and error(answer)["code"] == "denied"
    assert sorted(json.loads(r.body)["service"] for r in deploys(backend)) == \
        sorted(f"s{i}" for i in range(0, 50, 2))


# -- the spec's rule: a call approved once is answered once ------------------------------------------

SPEC_RULES = """
labels:
  - {name: email, level: confidential, detector: email}
functions:
  - {name: deploy.start, match: {method: POST, path: /deploy}}
  - {name: crm.get_customer, match: {method: GET, path: "/customers/*"}}
rules:
  - id: deploys-need-approval          # the spec's example: no direction
    match: {function: "deploy.*"}
    action: approve
    approvers: [sre-leads]
  - id: tool-deploys-need-approval     # the same for the MCP tool, no direction either
    match: {function: deploy, protocol: mcp}
    action: approve
    approvers: [sre-leads]
  - id: customer-reads-need-release
    match: {function: crm.get_customer, direction: response}
    action: approve
    approvers: [sre-leads]
  - id: no-emails
    match: {labels: [email]}
    action: mask
    mask: redact
"""


@pytest.fixture
def spec_rules(tmp_path):
    path = tmp_path / "spec-rules.yaml"
    path.write_text(SPEC_RULES)
    return f"toolgate_rules={path}"


def approval_rows(gateway, tmp_path) -> list[tuple]:
    """The store's approvals rows (read once the gateway has stopped and let go of the file)."""
    gateway.stop()
    return query(tmp_path / "toolgate.duckdb", "SELECT call_id, decision, channel FROM approvals")


def decide_through(channel: str, gateway, held_id: str, token: str, verb: str = "approve"):
    if channel == "cli":
        code, out = toolgate("approvals", verb, held_id, "--reason", "release 2",
                             "--admin", gateway.admin_url, "--token", token)
        assert code == 0, out
    else:
        answer = admin_post(gateway, token, f"/api/approvals/{held_id}/{verb}",
                            {"reason": "release 2"})
        assert answer.status_code == 200, answer.text


@pytest.mark.parametrize("channel", ["cli", "admin"])
def test_a_call_approved_under_the_specs_rule_gets_the_backends_answer_once(
    start_gateway, backend, people, pool, spec_rules, tmp_path, channel
):
    gateway = start_gateway(spec_rules)
    pending = pool.submit(call, gateway, people.bob)
    (held,) = wait_held(gateway, people.carol)
    assert held["rule"] == "deploys-need-approval" and deploys(backend) == []
    decide_through(channel, gateway, held["id"], people.carol)

    answer = pending.result(20)  # before the fix: held again on its way back, then 403
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert body["service"] == "api" and body["status"] == "started" and body["deployment"]
    assert len(deploys(backend)) == 1  # the deploy ran once
    assert held_list(gateway, people.carol) == []  # nothing held on the way back
    call_id = answer.headers["X-Toolgate-Call-Id"]
    assert approval_rows(gateway, tmp_path) == [(call_id, "approved", channel)]


def test_an_mcp_tool_call_approved_under_a_rule_without_direction_returns_its_result(
    start_gateway, backend, people, pool, spec_rules, tmp_path
):
    gateway = start_gateway(spec_rules)
    pending = pool.submit(call, gateway, people.bob, path="/mcp", body={
        "jsonrpc": "2.0", "id": 9, "method": "tools/call",
        "params": {"name": "deploy", "arguments": DEPLOY}})
    (held,) = wait_held(gateway, people.carol)
    decide_through("admin", gateway, held["id"], people.carol)
    rpc = pending.result(20).json()
    assert rpc["id"] == 9 and "error" not in rpc, rpc
    result = rpc["result"]["structuredContent"]
    assert result["status"] == "started" and result["service"] == "api" and result["deployment"]
    assert [r.path for r in backend.received] == ["/mcp"]
    assert held_list(gateway, people.carol) == []
    rows = approval_rows(gateway, tmp_path)
    assert len(rows) == 1 and rows[0][1:] == ("approved", "admin")


def test_a_direction_response_rule_holds_the_answer_and_releases_it_on_approval(
    start_gateway, backend, people, pool, spec_rules, tmp_path
):
    gateway = start_gateway(spec_rules)
    released = pool.submit(call, gateway, people.alice, "GET", "/customers/1")
    (held,) = wait_held(gateway, people.carol)
    assert held["rule"] == "customer-reads-need-release"
    assert [r.path for r in backend.received] == ["/customers/1"]  # the call went through
    detail = httpx.get(f"{gateway.admin_url}/api/approvals/{held['id']}",
                       headers=bearer(people.carol), timeout=10).json()
    assert detail["phase"] == "response" and detail["result"]["name"] == "Ada Lovelace"
    assert detail["result"]["email"] == "[REDACTED:email]"  # the reviewer sees it masked
    assert not released.done()
    decide_through("admin", gateway, held["id"], people.carol)
    answer = released.result(20)
    assert answer.status_code == 200 and answer.json()["name"] == "Ada Lovelace"

    refused = pool.submit(call, gateway, people.alice, "GET", "/customers/2")
    (second,) = wait_held(gateway, people.carol)
    decide_through("cli", gateway, second["id"], people.carol, verb="deny")
    denied = refused.result(20)
    assert denied.status_code == 403 and error(denied)["code"] == "denied"
    assert "Alan" not in denied.text and "219-09-9999" not in denied.text
    assert [r.path for r in backend.received] == ["/customers/1", "/customers/2"]  # once each
    ids = [answer.headers["X-Toolgate-Call-Id"], denied.headers["X-Toolgate-Call-Id"]]
    assert sorted(approval_rows(gateway, tmp_path)) == sorted(
        [(ids[0], "approved", "admin"), (ids[1], "denied", "cli")])


def test_mitmweb_resume_of_a_call_held_under_the_specs_rule_answers_once(
    start_gateway, backend, people, pool, spec_rules, tmp_path
):
    port = free_port()
    gateway = start_gateway(spec_rules, program=MITMWEB, extra_args=(
        "--web-host", "127.0.0.1", "--web-port", str(port), "--no-web-open-browser"))
    web = Web(f"http://127.0.0.1:{port}")
    try:
        pending = pool.submit(call, gateway, people.bob)
        (flow,) = intercepted(web)
        assert "deploys-need-approval" in flow["comment"]
        web.post(f"/flows/{flow['id']}/resume")
        answer = pending.result(20)
        assert answer.status_code == 202 and answer.json()["status"] == "started"
        assert len(deploys(backend)) == 1
        assert not [f for f in web.flows() if f.get("intercepted")]
    finally:
        web.http.close()
    assert approval_rows(gateway, tmp_path) == [
        (answer.headers["X-Toolgate-Call-Id"], "approved", "mitmweb")]


# -- what a reviewer sees of a held MCP call ---------------------------------------------------------

def test_a_held_mcp_tool_call_shows_the_tools_masked_arguments(
    start_gateway, backend, people, pool, spec_rules
):
    gateway = start_gateway(spec_rules)
    pending = pool.submit(call, gateway, people.bob, path="/mcp", body={
        "jsonrpc": "2.0", "id": "m-1", "method": "tools/call",
        "params": {"name": "deploy", "arguments": {"service": "api", "notify": "ada@example.com"}}})
    (held,) = wait_held(gateway, people.carol)
    shown = {"service": "api", "notify": "[REDACTED:email]"}
    assert held["function"] == "deploy" and held["arguments"] == shown
    common = ("--admin", gateway.admin_url, "--token", people.carol)
    code, out = toolgate("approvals", "list", *common)
    assert code == 0 and '{"service":"api","notify":"[REDACTED:email]"}' in out
    code, out = toolgate("approvals", "list", "--json", *common)
    assert code == 0 and json.loads(out)[0]["arguments"] == shown
    code, out = toolgate("approvals", "show", held["id"], *common)
    assert code == 0 and '{"service": "api", "notify": "[REDACTED:email]"}' in out
    for text in (out, json.dumps(held)):
        assert "jsonrpc" not in text and "tools/call" not in text and "ada@example.com" not in text
    decide_through("admin", gateway, held["id"], people.carol, verb="deny")
    assert pending.result(20).json()["error"]["data"]["code"] == "denied"
    assert backend.received == []
