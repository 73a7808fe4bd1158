"""Policy on the wire, through a real mitmdump in front of the real demo service, with the
bundled packs: what the client receives holds no raw value a mask rule covers, refused calls
never reach the backend, and every bad input gets its answer while the next call still works."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import httpx
import pytest

from harness import wait_until
from toolgate.rules import bundled_packs_path
from toolgate.scripts.demo_service import CUSTOMERS, REFUND_ARGS
from toolgate.scripts.harness import StubHandler, StubServer

pytestmark = pytest.mark.e2e

# Every raw value the bundled packs mask in a customer record (phones are only monitored).
MASKED_FIELDS = ("ssn", "card", "email", "iban")


def raw_values(records) -> set[str]:
    values = set()
    for record in records:
        for field in MASKED_FIELDS:
            value = str(record[field])
            values |= {value, value.replace(" ", "").replace("-", "")}
    return values


CUSTOMER_VALUES = raw_values(CUSTOMERS)
REFUND_VALUES = {"ada@example.com", "4111 1111 1111 1111", "4111111111111111", "536-22-1234"}


def assert_none_in(values: set[str], received: bytes) -> None:
    text = received.decode("utf-8", "replace").replace("\\", "")
    leaked = sorted(v for v in values if v in text)
    assert not leaked, f"raw values reached the client: {leaked}"


def auth(issuer, sub="alice", groups=("support",)) -> dict[str, str]:
    return {"Authorization": f"Bearer {issuer.keys.mint(sub, list(groups))}"}


def rpc(name, arguments, rid=1):
    return {"jsonrpc": "2.0", "id": rid, "method": "tools/call",
            "params": {"name": name, "arguments": arguments}}


# -- masking, one protocol shape each -----------------------------------------------------------


def test_rest_answers_are_masked(gateway, backend, issuer):
    with gateway.client() as http:
        answer = http.get("/customers", headers=auth(issuer))
    assert answer.status_code == 200
    assert_none_in(CUSTOMER_VALUES, answer.content)
    first = answer.json()["customers"][0]
    assert first["ssn"] == "***-**-1234" and first["email"].startswith("tok_email_")
    assert first["name"] == "Ada Lovelace"  # unlabelled values are untouched


def test_mcp_json_results_are_masked(gateway, backend, issuer):
    with gateway.client() as http:
        answer = http.post("/mcp", json=rpc("get_customer", {"id": 3}), headers=auth(issuer))
    assert answer.status_code == 200 and answer.json()["id"] == 1
    assert_none_in(raw_values([CUSTOMERS[2]]), answer.content)
    # Both the text content (JSON inside a string) and structuredContent are masked.
    result = answer.json()["result"]
    assert json.loads(result["content"][0]["text"])["ssn"] == "***-**-5462"
    assert result["structuredContent"]["card"].endswith("4242")


def test_mcp_event_stream_is_masked_event_by_event(gateway, backend, issuer):
    batch = [rpc("get_customer", {"id": 1}, 1), rpc("search_customers", {"query": "a"}, 2)]
    headers = {**auth(issuer), "Accept": "text/event-stream, application/json"}
    with gateway.client() as http:
        answer = http.post("/mcp", json=batch, headers=headers)
    assert answer.headers["content-type"] == "text/event-stream"
    assert_none_in(CUSTOMER_VALUES, answer.content)
    events = [json.loads(line[6:]) for line in answer.text.splitlines() if line.startswith("data: ")]
    assert sorted(e["id"] for e in events) == [1, 2]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_llm_tool_calls_are_masked(gateway, backend, issuer, path, stream):
    body = {"model": "m", "max_tokens": 10, "stream": stream,
            "messages": [{"role": "user", "content": "refund Ada"}]}
    with gateway.client() as http:
        answer = http.post(path, json=body, headers=auth(issuer))
    assert answer.status_code == 200
    assert_none_in(REFUND_VALUES, answer.content)
    assert b"issue_refund" in answer.content  # the tool call itself still arrives


def test_tool_results_sent_to_the_model_are_masked_before_the_backend(gateway, backend, issuer):
    body = {"model": "m", "messages": [
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {
            "name": "get_customer", "arguments": json.dumps({"id": 1})}}]},
        {"role": "tool", "tool_call_id": "c1", "content": json.dumps(CUSTOMERS[0])},
    ]}
    with gateway.client() as http:
        assert http.post("/v1/chat/completions", json=body, headers=auth(issuer)).status_code == 200
    [received] = backend.received
    assert_none_in(raw_values([CUSTOMERS[0]]), received.body)


def test_masked_answers_keep_their_content_encoding(start_gateway, issuer, faulty):
    gateway = start_gateway(upstream=faulty.url)
    with gateway.client() as http:
        with http.stream("GET", "/gzip-pii", headers={**auth(issuer), "Accept-Encoding": "gzip"}) as answer:
            raw = b"".join(answer.iter_raw())
    assert answer.headers["content-encoding"] == "gzip"
    assert int(answer.headers["content-length"]) == len(raw)
    body = gzip.decompress(raw)
    assert_none_in(raw_values([CUSTOMERS[0]]), body)
    assert json.loads(body)["ssn"] == "***-**-1234"


# -- refusals never reach the backend -----------------------------------------------------------


def test_blocked_rest_call_never_reaches_the_backend(gateway, backend, issuer):
    with gateway.client() as http:
        answer = http.get("/customers/export?limit=500", headers=auth(issuer))
    assert answer.status_code == 403
    error = answer.json()["error"]
    assert error["code"] == "blocked" and error["rule"] == "demo-no-bulk-export"
    assert "100 or fewer" in error["message"]
    assert backend.received == []


def test_blocked_mcp_call_is_a_tool_error_with_its_id(gateway, backend, issuer):
    with gateway.client() as http:
        answer = http.post("/mcp", json=rpc("export_customers", {"limit": 500}, rid="x-9"),
                           headers=auth(issuer))
    assert answer.status_code == 200
    body = answer.json()
    assert body["id"] == "x-9" and body["error"]["code"] == -32001
    assert body["error"]["data"]["code"] == "blocked"
    assert body["error"]["data"]["field"] == "$.params.arguments.limit"
    assert backend.received == []


def test_a_batch_with_one_blocked_call_is_refused_whole(gateway, backend, issuer):
    batch = [rpc("get_customer", {"id": 1}, 1), rpc("export_customers", {"limit": 900}, 2)]
    with gateway.client() as http:
        answer = http.post("/mcp", json=batch, headers=auth(issuer))
    assert [e["id"] for e in answer.json()] == [1, 2]
    assert backend.received == []


@pytest.mark.parametrize("call", ["rest", "mcp"])
def test_calls_needing_approval_never_reach_the_backend_undecided(start_gateway, backend, issuer, call):
    gateway = start_gateway("toolgate_approval_timeout=0")  # nobody to approve: CI mode
    with gateway.client() as http:
        if call == "rest":
            answer = http.post("/deploy", json={"service": "api", "version": "2"},
                               headers=auth(issuer, "bob", ["sre"]))
            assert answer.status_code == 403
            error = answer.json()["error"]
        else:
            answer = http.post("/mcp", json=rpc("deploy", {"service": "api", "version": "2"}),
                               headers=auth(issuer, "bob", ["sre"]))
            assert answer.status_code == 200
            error = answer.json()["error"]["data"]
    assert error["code"] == "approval_timeout" and error["rule"] == "demo-deploys-need-approval"
    assert backend.received == []


def test_credentials_in_arguments_are_blocked(gateway, backend, issuer):
    with gateway.client() as http:
        answer = http.post("/echo", json={"note": "use AKIAIOSFODNN7EXAMPLE"}, headers=auth(issuer))
    assert answer.status_code == 403
    assert answer.json()["error"]["rule"] == "secrets-block-in-requests"
    assert backend.received == []


# -- what cannot be inspected is refused --------------------------------------------------------

BOMB = gzip.compress(b"\0" * (20 * 1024 * 1024))


@pytest.fixture(scope="module")
def small_gateway(tmp_path_factory, mitm_confdir, issuer, demo_backend):
    from harness import Launcher

    launcher = Launcher(tmp_path_factory.mktemp("small"), mitm_confdir, issuer, demo_backend)
    yield launcher("toolgate_max_body=64KiB")
    launcher.stop_all()


@pytest.mark.parametrize("content, headers, status, code", [
    (b'{"limit": 5, "limit": 500}', {"Content-Type": "application/json"}, 400, "malformed"),
    (b'{"limit": 5, "limit": 500}', {"Content-Type": "text/plain"}, 400, "malformed"),
    (b'{"a": ', {"Content-Type": "application/json"}, 400, "malformed"),
    (b'{"a": "\xff\xfe"}', {"Content-Type": "application/json"}, 400, "malformed"),
    (b"[" * 30_000 + b"]" * 30_000, {"Content-Type": "application/json"}, 400, "malformed"),
    (b'{"a": NaN}', {"Content-Type": "application/json"}, 400, "malformed"),
    (b"\x00\x01\x02\xff binary", {"Content-Type": "application/octet-stream"}, 400, "uninspectable"),
    (b"x", {"Content-Type": "text/plain", "Content-Encoding": "compress"}, 400, "uninspectable"),
    (b"not gzip", {"Content-Type": "application/json", "Content-Encoding": "gzip"}, 400, "uninspectable"),
    (BOMB, {"Content-Type": "application/json", "Content-Encoding": "gzip"}, 413, "uninspectable"),
    (b"x" * (100 * 1024), {"Content-Type": "text/plain"}, 413, "uninspectable"),
], ids=["duplicate-keys", "duplicate-keys-as-text", "truncated", "invalid-utf8", "deep-nesting",
        "nan", "binary", "unknown-encoding", "bad-gzip", "gzip-bomb", "too-large"])
def test_uninspectable_requests_are_refused_and_the_next_call_works(
    small_gateway, backend, issuer, content, headers, status, code
):
    with small_gateway.client() as http:
        answer = http.post("/echo", content=content, headers={**auth(issuer), **headers})
        assert answer.status_code == status, answer.text
        assert answer.json()["error"]["code"] == code
        assert backend.received == []
        assert http.get("/healthz", headers=auth(issuer)).status_code == 200
    assert [r.path for r in backend.received] == ["/healthz"]


def test_a_chunked_body_over_the_limit_is_refused(small_gateway, backend, issuer):
    def chunks():
        for _ in range(100):
            yield b"x" * 1024

    with small_gateway.client() as http:
        answer = http.post("/echo", content=chunks(), headers={**auth(issuer),
                                                               "Content-Type": "text/plain"})
    assert answer.status_code == 413
    assert backend.received == []


class FaultyHandler(StubHandler):
    protocol_version = "HTTP/1.1"
    ANSWERS = {
        "/bad-json": ("application/json", {}, b'{"ssn": "536-22-1234",'),
        "/dup-keys": ("application/json", {}, b'{"ssn": "***", "ssn": "536-22-1234"}'),
        "/binary": ("application/octet-stream", {}, b"\x00\xff\x10 536-22-1234"),
        "/gzip-pii": ("application/json", {"Content-Encoding": "gzip"},
                      gzip.compress(json.dumps(CUSTOMERS[0]).encode())),
        "/bomb": ("application/json", {"Content-Encoding": "gzip"}, BOMB),
        "/sse-gzip": ("text/event-stream", {"Content-Encoding": "gzip"},
                      gzip.compress(b'data: {"ssn": "536-22-1234"}\n\n')),
    }

    def do_GET(self):  # noqa: N802
        ctype, headers, body = self.ANSWERS.get(self.path, ("text/plain", {}, b"?"))
        self.server.hits.append(self.path)
        self.send(200, body, ctype, headers)


@pytest.fixture(scope="module")
def faulty():
    server = StubServer(FaultyHandler)
    server.hits = []
    with server:
        yield server


@pytest.mark.parametrize("path, code", [
    ("/bad-json", "malformed"), ("/dup-keys", "malformed"), ("/binary", "uninspectable"),
    ("/bomb", "uninspectable"), ("/sse-gzip", "uninspectable"),
])
def test_backend_answers_that_cannot_be_checked_are_withheld(start_gateway, issuer, faulty, path, code):
    gateway = start_gateway(upstream=faulty.url)
    with gateway.client() as http:
        answer = http.get(path, headers=auth(issuer))
        assert answer.status_code == 502
        assert answer.json()["error"]["code"] == code
        assert b"536-22-1234" not in answer.content
        assert http.get("/gzip-pii", headers=auth(issuer)).status_code == 200


# -- monitor mode and reloading -----------------------------------------------------------------


def test_monitor_mode_changes_nothing_and_says_what_would_have_happened(start_gateway, backend, issuer):
    gateway = start_gateway("toolgate_mode=monitor")
    with gateway.client() as http:
        blocked = http.get("/customers/export?limit=500", headers=auth(issuer))
        masked = http.get("/customers/1", headers=auth(issuer))
    assert blocked.status_code == 200
    assert blocked.headers["X-Toolgate-Decision"].startswith("block; mode=monitor")
    assert "demo-no-bulk-export" in blocked.headers["X-Toolgate-Decision"]
    assert masked.json()["ssn"] == "536-22-1234"
    assert masked.headers["X-Toolgate-Decision"].startswith("mask; mode=monitor")
    assert [r.path for r in backend.received] == ["/customers/export?limit=500", "/customers/1"]


def test_rule_files_reload_on_change_and_a_broken_edit_keeps_the_last_good_rules(
    start_gateway, backend, issuer, tmp_path
):
    packs = tmp_path / "packs"
    shutil.copytree(bundled_packs_path(), packs, ignore=shutil.ignore_patterns("__*"))
    # Timeout 0: a call held for approval is refused at once (nobody approves in a test).
    gateway = start_gateway(f"toolgate_rules={packs}", "toolgate_approval_timeout=0")
    demo = packs / "demo.yaml"

    def export(limit: int) -> str:
        """blocked (the bulk-export rule), or held (its overdue access review)."""
        with gateway.client() as http:
            answer = http.get(f"/customers/export?limit={limit}", headers=auth(issuer))
        code = answer.json()["error"]["code"]
        return "held" if code in ("denied", "approval_timeout") else code

    assert export(500) == "blocked"
    demo.write_text(demo.read_text().replace("@.limit > 100", "@.limit > 1000"))
    assert wait_until(lambda: export(500) == "held", timeout=15), "the edit was not picked up"
    good = demo.read_text()
    demo.write_text(good + "\nrules: [this is: not valid\n")
    assert wait_until(lambda: "demo.yaml:" in gateway.output, timeout=15)
    assert "previous rules stay in force" in gateway.output
    assert export(500) == "held" and export(5000) == "blocked"  # the last good rules
    assert backend.received == []


def test_request_side_masks_reach_query_parameters_and_form_fields(start_gateway, backend, issuer, tmp_path):
    packs = tmp_path / "packs"
    shutil.copytree(bundled_packs_path(), packs, ignore=shutil.ignore_patterns("__*"))
    (packs / "outbound.yaml").write_text(
        "rules:\n"
        "  - id: no-emails-out\n"
        "    match: {labels: [email], direction: request}\n"
        "    action: mask\n"
        "    mask: redact\n"
    )
    gateway = start_gateway(f"toolgate_rules={packs}")
    with gateway.client() as http:
        assert http.get("/echo?email=ada@example.com&n=1", headers=auth(issuer)).status_code == 200
        form = http.post("/echo", content=b"who=ada%40example.com&why=refund",
                         headers={**auth(issuer), "Content-Type": "application/x-www-form-urlencoded"})
        assert form.status_code == 200
    query, posted = backend.received
    assert "ada@example.com" not in query.path and "ada%40example.com" not in query.path
    assert "n=1" in query.path and "REDACTED" in query.path
    assert b"ada%40example.com" not in posted.body and b"why=refund" in posted.body
