"""The recorder through a real mitmdump in front of a real backend: what is recorded, that a
refused call is recorded too, that a store that cannot record stops calls (503 `unrecorded`)
until it can, that a gateway killed under load loses no call anyone saw, and that no caller
token or credential reaches the store's files."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from harness import wait_until
from toolgate.scripts.cli import cli
from toolgate.scripts.harness import query, store_bytes

pytestmark = pytest.mark.e2e


def bearer(issuer, sub="alice", groups=("sre",)):
    return {"Authorization": f"Bearer {issuer.keys.mint(sub, list(groups))}"}


def db_of(tmp_path: Path) -> Path:
    return tmp_path / "toolgate.duckdb"  # the launcher's default toolgate_db


def store_view(answer: dict) -> dict:
    """A customer record as the store keeps it: phones (monitored, so passed to the caller)
    are redacted."""
    return {**answer, "phone": "[REDACTED:phone]"} if "phone" in answer else answer


def toolgate(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_calls_are_recorded_with_who_what_and_outcome(start_gateway, backend, issuer, tmp_path):
    gateway = start_gateway()
    token = issuer.keys.mint("alice", ["sre", "support"])
    auth = {"Authorization": f"Bearer {token}"}
    rpc = {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
           "params": {"name": "get_customer", "arguments": {"id": 2}}}
    with gateway.client() as http:
        masked = http.get("/customers/1", headers={**auth, "X-Toolgate-Session": "incident-42"})
        mcp = http.post("/mcp", json=rpc, headers=auth)
        blocked = http.get("/customers/export?limit=500", headers=auth)
        refused = http.get("/customers/1")  # no token: identity refuses it
    assert [a.status_code for a in (masked, mcp, blocked, refused)] == [200, 200, 403, 401]
    gateway.stop()

    db = db_of(tmp_path)
    recorded = {
        r[0]: r for r in query(db, """
            SELECT call_id, subject, groups, status, decision, method, url, session_id,
                   forwarded, request_headers, response_body, error, function
            FROM calls""")
    }
    call_id = {name: a.headers["X-Toolgate-Call-Id"]
               for name, a in zip(("masked", "mcp", "blocked", "refused"),
                                  (masked, mcp, blocked, refused))}
    assert set(recorded) == set(call_id.values())
    first = recorded[call_id["masked"]]
    assert first[1:5] == ("alice", ["sre", "support"], 200, "mask")
    assert first[5] == "GET" and first[6] == f"{backend.url}/customers/1"
    assert first[7] == "incident-42" and first[8] is True and first[12] == "crm.get_customer"
    # The answer as returned, after masking, except that what the rules let through (phones
    # are only monitored) is redacted in the store too.
    assert json.loads(first[10]) == store_view(masked.json())
    assert token not in first[9]
    findings = query(db, "SELECT label, fingerprint FROM findings WHERE call_id = ?",
                     [call_id["masked"]])
    assert {"ssn", "credit_card"} <= {label for label, _ in findings}
    assert all(len(fp) == 64 and int(fp, 16) >= 0 for _, fp in findings)
    second = recorded[call_id["mcp"]]
    assert second[3] == 200 and json.loads(second[10])["id"] == 7
    assert second[12] == "get_customer"
    block = recorded[call_id["blocked"]]
    assert block[3:5] == (403, "block") and block[8] is False and block[11] == "blocked"
    denied = recorded[call_id["refused"]]
    assert denied[3:5] == (401, "deny") and denied[8] is False and denied[11] == "identity"
    # The backend received exactly the calls that were let through, with their ids.
    assert {r.header("X-Toolgate-Call-Id") for r in backend.received} == {
        call_id["masked"], call_id["mcp"]}
    assert query(db, "SELECT count(*) FROM pending") == [(0,)]

    assert toolgate("sessions", "verify", "--db", str(db)).exit_code == 0
    failing = toolgate("sessions", "report", "--fail-on", "block", "--db", str(db))
    assert failing.exit_code == 1, failing.output
    assert call_id["blocked"] in failing.output and call_id["refused"] not in failing.output
    junit = toolgate("sessions", "report", "--fail-on", "deny", "--format", "junit",
                     "--db", str(db))
    assert junit.exit_code == 1 and call_id["refused"] in junit.output
    listed = toolgate("sessions", "list", "--subject", "alice", "--label", "ssn", "--json",
                      "--db", str(db))
    assert listed.exit_code == 0, listed.output
    # Both answers carried an SSN; newest first.
    assert [c["call_id"] for c in json.loads(listed.output)["calls"]] == [
        call_id["mcp"], call_id["masked"]]


def test_a_clean_run_passes_the_report(start_gateway, backend, issuer, tmp_path):
    gateway = start_gateway("toolgate_durability=async")
    with gateway.client() as http:
        for _ in range(3):
            assert http.get("/healthz", headers=bearer(issuer)).status_code == 200
    gateway.stop()  # async: what was queued is committed on the way out
    db = db_of(tmp_path)
    assert query(db, "SELECT count(*), min(decision), max(decision) FROM calls") == [
        (3, "allow", "allow")]
    result = toolgate("sessions", "report", "--fail-on", "deny,block", "--db", str(db))
    assert result.exit_code == 0, result.output
    assert "PASSED" in result.output


def test_a_journal_that_cannot_be_opened_stops_the_gateway_at_start(
    start_gateway, backend, issuer, tmp_path
):
    journal = Path(f"{db_of(tmp_path)}.journal")
    journal.mkdir()  # a folder where the journal should be: it cannot be opened (even as root)
    gateway = start_gateway(wait=False)
    assert gateway.proc.wait(30) != 0, "the gateway ran without its journal"
    assert f"cannot open the journal {journal}" in gateway.output
    assert backend.received == []


def test_killing_the_gateway_under_load_loses_no_call_anyone_saw(
    start_gateway, backend, issuer, tmp_path
):
    gateway = start_gateway("flow_detail=0")
    headers = bearer(issuer)
    answered: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def caller(n: int) -> None:
        with httpx.Client(base_url=gateway.url, timeout=5) as http:
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    if i % 2:
                        a = http.get(f"/customers/{1 + i % 4}", headers=headers)
                    else:
                        a = http.post("/echo", json={"caller": n, "i": i}, headers=headers)
                except httpx.HTTPError:
                    return  # the gateway is gone
                if a.status_code == 200:
                    with lock:
                        answered.append(a.headers["X-Toolgate-Call-Id"])

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    assert wait_until(lambda: len(answered) > 100, timeout=20), "no load reached the gateway"
    gateway.proc.kill()  # SIGKILL, mid-load
    gateway.proc.wait(10)
    stop.set()
    for t in threads:
        t.join(10)
    reached = {r.header("X-Toolgate-Call-Id") for r in backend.received}

    again = start_gateway("flow_detail=0")  # same store: recovers the interrupted calls
    with again.client() as http:
        assert http.get("/healthz", headers=headers).status_code == 200
    again.stop()

    db = db_of(tmp_path)
    recorded = dict(query(db, "SELECT call_id, decision FROM calls"))
    assert query(db, "SELECT count(*) - count(DISTINCT call_id) FROM calls") == [(0,)], \
        "a call was recorded twice"
    missing_answers = set(answered) - set(recorded)
    missing_reached = reached - set(recorded)
    assert not missing_answers, f"{len(missing_answers)} answered call(s) were not recorded"
    assert not missing_reached, f"{len(missing_reached)} forwarded call(s) were not recorded"
    # An answered call has its final row, not one recovered from `pending`.
    assert all(recorded[c] != "interrupted" for c in answered)
    assert query(db, "SELECT count(*) FROM pending") == [(0,)]
    verified = toolgate("sessions", "verify", "--db", str(db))
    assert verified.exit_code == 0, verified.output


@pytest.mark.parametrize("identity", ["required", "off"])
def test_no_token_credential_or_raw_value_reaches_the_store_files(
    start_gateway, backend, issuer, tmp_path, identity
):
    token = issuer.keys.mint("alice", ["support"])
    secrets = {
        "token": token,
        "token's signature": token.rsplit(".", 1)[1],
        "cookie": "sessioncookie-5f1d0c7e9a",
        "api key": "apikey-7c2e4b19d3",
    }
    if identity == "off":
        secrets["proxy credential"] = "proxysecret-0b8f2a6c1e"
    if identity == "required":  # the policy masks them in the answers (the demo rules)
        secrets.update({"ssn": "536-22-1234", "card": "4111 1111 1111 1111",
                        "other ssn": "219-09-9999", "other card": "5555-5555-5555-4444"})
    gateway = start_gateway(f"toolgate_identity={identity}")
    with gateway.client() as http:
        for path in ("/customers/1", "/customers"):
            headers = {
                "Authorization": f"Bearer {token}",
                "Cookie": f"sid={secrets['cookie']}",
                "X-Api-Key": secrets["api key"],
            }
            if identity == "off":  # with identity on, it would be taken for the caller's token
                headers["Proxy-Authorization"] = f"Basic {secrets['proxy credential']}"
            answer = http.get(path, headers=headers)
            assert answer.status_code == (200 if identity == "required" else 403), answer.text
    db = db_of(tmp_path)
    # Read the files as a crash leaves them: the WAL still holds the recent commits.
    gateway.proc.kill()
    gateway.proc.wait(10)
    data = store_bytes(db)  # the journal too: the last calls may be only there
    assert b"/customers/1" in data  # the calls are there...
    for name, secret in secrets.items():
        assert secret.encode() not in data, f"the {name} reached the store"
    # ... and the store is whole once a gateway opened it again.
    start_gateway().stop()
    assert query(db, "SELECT count(*) FROM calls") == [(2,)]
    headers = query(db, "SELECT request_headers FROM calls")[0][0]
    assert ["Cookie", "[REDACTED]"] in json.loads(headers)


def test_a_recorded_session_exports_to_a_mitm_file(start_gateway, backend, issuer, tmp_path):
    from mitmproxy import io as mitm_io

    gateway = start_gateway()
    with gateway.client() as http:
        answers = [http.get(f"/customers/{i}", headers={**bearer(issuer),
                                                        "X-Toolgate-Session": "export-me"})
                   for i in (1, 2)]
    gateway.stop()
    out = tmp_path / "session.mitm"
    result = toolgate("sessions", "export", "export-me", "-o", str(out), "--db",
                      str(db_of(tmp_path)))
    assert result.exit_code == 0, result.output
    with out.open("rb") as f:
        flows = list(mitm_io.FlowReader(f).stream())
    assert [f.metadata["toolgate.call_id"] for f in flows] == [
        a.headers["X-Toolgate-Call-Id"] for a in answers]
    assert [f.response.json() for f in flows] == [store_view(a.json()) for a in answers]
    assert all(f.request.path.startswith("/customers/") for f in flows)


def test_find_value_answers_with_the_gateways_default_key(start_gateway, backend, issuer, tmp_path):
    gateway = start_gateway()  # no toolgate_mask_key: the gateway keeps a key beside its store
    with gateway.client() as http:
        first = http.get("/customers/1", headers=bearer(issuer, groups=("support",))).json()
    assert first["ssn"] == "***-**-1234"
    gateway.stop()
    db = db_of(tmp_path)
    key_file = db.with_name(db.name + ".key")
    assert key_file.stat().st_mode & 0o077 == 0
    seen = toolgate("sessions", "find-value", "536 22 1234", "--json", "--db", str(db))
    assert seen.exit_code == 0, seen.output
    assert json.loads(seen.output)["seen"] is True
    unseen = toolgate("sessions", "find-value", "219-09-9999", "--json", "--db", str(db))
    assert json.loads(unseen.output)["seen"] is False
    # The key is kept: a restarted gateway masks with the same hash tokens.
    again = start_gateway()
    with again.client() as http:
        second = http.get("/customers/1", headers=bearer(issuer, groups=("support",))).json()
    assert first["email"].startswith("tok_email_") and second["email"] == first["email"]


def test_values_the_policy_lets_through_or_refuses_are_stored_redacted(
    start_gateway, backend, issuer, tmp_path
):
    """The store never keeps a raw labelled value: not one the rules let through (phones are
    only monitored), not one in a refused call, not one in a query string or a stream."""
    gateway = start_gateway()
    alice = bearer(issuer, groups=("support",))
    raw = {b"+1 415 555 0100", b"(212) 555-0199", b"AKIAIOSFODNN7EXAMPLE", b"536-22-1234",
           b"ada@example.com", b"ada%40example.com", b"4111 1111 1111 1111"}
    with gateway.client() as http:
        shown = http.get("/customers/1", headers=alice)
        assert b"+1 415 555 0100" in shown.content  # monitored, so the caller sees it...
        assert http.post("/echo", json={"key": "AKIAIOSFODNN7EXAMPLE", "ssn": "536-22-1234"},
                         headers=alice).status_code == 403
        assert http.get("/echo?contact=ada@example.com", headers=alice).status_code == 200
        stream = http.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                                         "params": {"name": "search_customers",
                                                    "arguments": {"query": "a"}}},
                           headers={**alice, "Accept": "text/event-stream"})
        assert b"(212) 555-0199" in stream.content
    db = db_of(tmp_path)
    gateway.proc.kill()
    gateway.proc.wait(10)
    data = b"".join(p.read_bytes() for p in (db, Path(f"{db}.wal")) if p.exists())
    assert b"/customers/1" in data and b"REDACTED:phone" in data  # ...but the store does not
    for value in raw:
        assert value not in data, f"{value!r} reached the store"
    start_gateway().stop()
    assert query(db, "SELECT count(*) FROM calls") == [(4,)]
