"""`toolgate sessions ...` on a store: offline on the file, and through the admin API while a
process holds it, with the same answers; export, replay, report and find-value."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

from toolgate.scripts.cli import cli
from toolgate.scripts.harness import StubHandler, StubServer
from toolgate.rules import Call, bundled_packs_path, evaluate, load_rules
from toolgate.sessions.records import FindingRow
from toolgate.sessions.sessionize import hashed_session
from storekit import make_call, record_all

KEY = b"mask-key-for-tests"
HERE = Path(__file__).parent


def toolgate(*args: str, env: dict[str, str] | None = None, input: str | None = None):
    return CliRunner().invoke(cli, list(args), env=env, input=input)


def fingerprint(key: bytes, field: str, value) -> str:
    """The fingerprint the gateway's rule engine records for `value` found in `field`."""
    decision = evaluate(load_rules(bundled_packs_path()),
                        Call(direction="response", body={field: value}), key)
    [finding] = decision.findings
    return finding.fingerprint


@pytest.fixture
def store(open_writer, db) -> Path:
    """Two sessions: alice's (allowed, masked, blocked) and bob's (one denied call)."""
    w = open_writer()
    now = time.time()
    ssn = fingerprint(KEY, "ssn", "536-22-1234")
    record_all(w, [
        make_call(call_id="a1", session_id="s-alice", started_at=now - 7200, subject="alice",
                  function="crm.get_customer", decision="mask",
                  findings=[FindingRow("response", "$.ssn", "ssn", "restricted", "mask", ssn)]),
        make_call(call_id="a2", session_id="s-alice", started_at=now - 60, subject="alice",
                  function="crm.export", decision="block", status=403, forwarded=False,
                  rules=["no-bulk-export"], url="http://backend.test/customers/export?limit=500",
                  response_body=b'{"error": {"code": "blocked"}}', findings=[]),
        make_call(call_id="a3", session_id="s-alice", started_at=now - 30, subject="alice",
                  function="deploy.start", decision="approve", method="POST",
                  url="http://backend.test/deploy", request_body=b'{"service": "api"}',
                  response_body=b'{"deployment": "x1", "status": "started"}', status=202,
                  findings=[FindingRow("request", "$.email", "email", "confidential", "allow",
                                    fingerprint(KEY, "email", "ada@example.com"))]),
        make_call(call_id="b1", session_id="s-bob", started_at=now - 10, subject="bob",
                  function="crm.get_customer", decision="deny", status=401, forwarded=False,
                  findings=[]),
    ])
    w.record_approval("a3", now - 29, now - 20, "approved", "carol", "api", "release day",
                      "call").result(10)
    w.stop()
    w.join(10)
    return db


def call_ids(result) -> list[str]:
    assert result.exit_code == 0, result.output
    return [c["call_id"] for c in json.loads(result.output)["calls"]]


@pytest.mark.parametrize("args, expected", [
    ([], ["b1", "a3", "a2", "a1"]),
    (["--subject", "alice"], ["a3", "a2", "a1"]),
    (["--since", "1h"], ["b1", "a3", "a2"]),
    (["--until", "1h"], ["a1"]),
    (["--function", "crm.*"], ["b1", "a2", "a1"]),
    (["--label", "ssn"], ["a1"]),
    (["--level", "confidential"], ["a3", "a1"]),
    (["--level", "restricted"], ["a1"]),
    (["--decision", "block,deny"], ["b1", "a2"]),
    (["--session", "s-bob"], ["b1"]),
    (["--limit", "2"], ["b1", "a3"]),
])
def test_list_filters(store, args, expected):
    assert call_ids(toolgate("sessions", "list", *args, "--json", "--db", str(store))) == expected


def test_list_prints_a_table_for_people(store):
    result = toolgate("sessions", "list", "--db", str(store))
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0].split("\t")[:4] == ["started_at", "session_id", "subject", "function"]
    assert len(lines) == 5


@pytest.mark.parametrize("args, message", [
    (["sessions", "list", "--since", "yesterday"], "not a time"),
    (["sessions", "list", "--level", "secret"], "secret"),
    (["sessions", "list", "--db", "/nonexistent/x.duckdb"], "no session store"),
    (["sessions", "find-value", "x"], "mask key"),
])
def test_usage_errors_exit_2_and_say_what_to_do(store, args, message):
    result = toolgate(*args, env={"TOOLGATE_MASK_KEY": ""})
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_show_is_a_timeline_with_findings_and_approvals(store):
    result = toolgate("sessions", "show", "s-alice", "--db", str(store))
    assert result.exit_code == 0, result.output
    text = result.output
    assert text.index("crm.get_customer") < text.index("crm.export") < text.index("deploy.start")
    assert "finding response $.ssn: ssn (restricted) -> mask" in text
    assert "approved by carol via api" in text and "release day" in text
    assert "rules no-bulk-export" in text
    as_json = json.loads(toolgate("sessions", "show", "s-alice", "--json", "--full", "--db",
                                  str(store)).output)
    assert [c["call_id"] for c in as_json["calls"]] == ["a1", "a2", "a3"]
    assert as_json["calls"][2]["request_body"] == '{"service": "api"}'
    missing = toolgate("sessions", "show", "nope", "--db", str(store))
    assert missing.exit_code == 2 and "no session 'nope'" in missing.output


def test_report_fails_on_the_decisions_named(store):
    ok = toolgate("sessions", "report", "--fail-on", "interrupted", "--db", str(store))
    assert ok.exit_code == 0 and "PASSED" in ok.output
    bad = toolgate("sessions", "report", "--fail-on", "block", "--db", str(store))
    assert bad.exit_code == 1 and "a2" in bad.output and "b1" not in bad.output
    recent = toolgate("sessions", "report", "--since", "20s", "--fail-on", "block", "--db",
                      str(store))
    assert recent.exit_code == 0, recent.output  # the block was earlier
    junit = toolgate("sessions", "report", "--fail-on", "block,deny", "--format", "junit",
                     "--db", str(store))
    assert junit.exit_code == 1
    suite = ET.fromstring(junit.output.split("\n", 1)[1])
    failures = {c.get("name") for c in suite.iter("testcase") if c.find("failure") is not None}
    assert failures == {"crm.export", "crm.get_customer"}
    as_json = json.loads(toolgate("sessions", "report", "--format", "json", "--db",
                                  str(store)).output)
    assert as_json["by_decision"] == {"approve": 1, "block": 1, "deny": 1, "mask": 1}
    assert as_json["total"] == 4 and as_json["passed"] is True


def test_find_value_uses_the_fingerprint_only(store, tmp_path):
    key_file = tmp_path / "key"
    key_file.write_bytes(KEY + b"\n")
    seen = toolgate("sessions", "find-value", " 536-22-1234 ", "--json", "--mask-key",
                    f"file:{key_file}", "--db", str(store))
    assert seen.exit_code == 0, seen.output
    body = json.loads(seen.output)
    assert body["seen"] and [f["call_id"] for f in body["findings"]] == ["a1"]
    from_stdin = toolgate("sessions", "find-value", "-", "--json", "--db", str(store),
                          env={"TOOLGATE_MASK_KEY": "env:TEST_MASK", "TEST_MASK": KEY.decode()},
                          input="ada@example.com\n")
    assert json.loads(from_stdin.output)["findings"][0]["call_id"] == "a3"
    # Found in any form the engine normalizes to: spaces for dashes, upper-case email.
    reformatted = toolgate("sessions", "find-value", "536 22 1234", "--json", "--mask-key",
                           f"file:{key_file}", "--db", str(store))
    assert [f["call_id"] for f in json.loads(reformatted.output)["findings"]] == ["a1"]
    shouted = toolgate("sessions", "find-value", "ADA@EXAMPLE.COM", "--json", "--mask-key",
                       f"file:{key_file}", "--db", str(store))
    assert [f["call_id"] for f in json.loads(shouted.output)["findings"]] == ["a3"]
    unseen = toolgate("sessions", "find-value", "000-00-0000", "--mask-key", f"file:{key_file}",
                      "--db", str(store))
    assert unseen.exit_code == 0 and "not seen" in unseen.output
    wrong_key = toolgate("sessions", "find-value", "536-22-1234", "--json", "--db", str(store),
                         env={"TOOLGATE_MASK_KEY": "env:OTHER", "OTHER": "another-key"})
    assert json.loads(wrong_key.output)["seen"] is False


def test_find_value_finds_a_session_named_after_the_value(open_writer, db, tmp_path):
    """`X-Toolgate-Session: jane.doe@example.com` is stored under the name's keyed fingerprint
    (the policy's `hashed_session`): find-value finds the session from the value."""
    email = "jane.doe@example.com"
    session = hashed_session(email, KEY)
    w = open_writer()
    record_all(w, [make_call(call_id=f"j{n}", session_id=session, findings=[]) for n in range(3)]
               + [make_call(call_id="other", session_id="s-other", findings=[])])
    w.stop()
    w.join(10)
    key_file = tmp_path / "key"
    key_file.write_bytes(KEY)
    found = toolgate("sessions", "find-value", f" {email} ", "--json", "--mask-key", f"file:{key_file}",
                     "--db", str(db))
    assert found.exit_code == 0, found.output
    body = json.loads(found.output)
    assert body["seen"] and body["findings"] == [] and body["sessions"] == [{"session_id": session, "calls": 3}]
    text = toolgate("sessions", "find-value", email, "--mask-key", f"file:{key_file}", "--db", str(db))
    assert f"session {session} is named after this value (3 call(s))" in text.output
    other = toolgate("sessions", "find-value", "bob@example.com", "--json", "--mask-key", f"file:{key_file}",
                     "--db", str(db))
    assert json.loads(other.output)["sessions"] == [] and not json.loads(other.output)["seen"]


def test_export_loads_in_mitmproxy(store, tmp_path):
    from mitmproxy import io as mitm_io

    out = tmp_path / "alice.mitm"
    result = toolgate("sessions", "export", "s-alice", "-o", str(out), "--db", str(store))
    assert result.exit_code == 0, result.output
    with out.open("rb") as f:
        flows = list(mitm_io.FlowReader(f).stream())
    assert [f.metadata["toolgate.call_id"] for f in flows] == ["a1", "a2", "a3"]
    assert [f.response.status_code for f in flows] == [200, 403, 202]
    assert flows[2].request.method == "POST" and flows[2].request.content == b'{"service": "api"}'
    assert "approved by carol" in flows[2].comment and "no-bulk-export" in flows[1].comment
    assert flows[0].request.headers["Host"] == "backend.test"
    assert not any(f.live for f in flows)


class _Target(StubHandler):
    """A replay target whose deploy answer changed shape and whose customer reads fail."""

    seen: list[tuple[str, str, dict]] = []

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        _Target.seen.append((self.command, self.path, dict(self.headers), body))
        if self.path == "/deploy":
            data, status = b'{"deployment": 7, "status": "started", "eta": 3}', 202
        else:
            data, status = b'{"error": "gone"}', 404
        self.send(status, data)

    do_GET = do_POST = _answer


def test_replay_reports_status_and_shape_changes(store):
    _Target.seen = []
    with StubServer(_Target) as server:
        result = toolgate("sessions", "replay", "s-alice", "--target", server.url, "--json",
                          "--header", "X-Replay: yes", "--check", "--db", str(store))
    assert result.exit_code == 1, result.output  # --check: something changed
    body = json.loads(result.output)
    assert body["replayed"] == 2 and [s["call_id"] for s in body["skipped"]] == ["a2"]
    get, post = body["results"]
    assert (get["recorded_status"], get["status"], get["status_changed"]) == (200, 404, True)
    assert post["status_changed"] is False
    assert post["shape_differences"] == ["$.deployment: string -> number", "$.eta: new"]
    sent = {(m, p): (h, b) for m, p, h, b in _Target.seen}
    headers, sent_body = sent[("POST", "/deploy")]
    assert sent_body == b'{"service": "api"}' and headers["X-Replay"] == "yes"
    assert "X-Toolgate-Call-Id" not in headers


def test_the_same_answers_through_the_admin_api_while_a_gateway_holds_the_store(store):
    offline = {
        "list": toolgate("sessions", "list", "--subject", "alice", "--json", "--db",
                         str(store)).output,
        "show": toolgate("sessions", "show", "s-alice", "--json", "--db", str(store)).output,
        "report": toolgate("sessions", "report", "--fail-on", "block", "--format", "json",
                           "--db", str(store)).output,
    }
    holder = subprocess.Popen([sys.executable, str(HERE / "admin_stub.py"), str(store)],
                              stdout=subprocess.PIPE, text=True, cwd=HERE,
                              env={"PYTHONPATH": str(HERE.parents[1]), "PATH": "/usr/bin:/bin"})
    try:
        port = int(holder.stdout.readline())
        admin = ["--db", str(store), "--admin", f"http://127.0.0.1:{port}"]
        env = {"TOOLGATE_TOKEN": "admin-test-token"}
        live = {
            "list": toolgate("sessions", "list", "--subject", "alice", "--json", *admin,
                             env=env).output,
            "show": toolgate("sessions", "show", "s-alice", "--json", *admin, env=env).output,
            "report": toolgate("sessions", "report", "--fail-on", "block", "--format", "json",
                               *admin, env=env).output,
        }
        assert live == offline
        assert toolgate("sessions", "verify", *admin, env=env).exit_code == 0
        refused = toolgate("sessions", "list", *admin, env={"TOOLGATE_TOKEN": "wrong"})
        assert refused.exit_code == 2 and "--token" in refused.output
        gone = toolgate("sessions", "list", "--db", str(store), "--admin", "http://127.0.0.1:9")
        assert gone.exit_code == 2 and "held by a running gateway" in gone.output
    finally:
        holder.terminate()
        holder.wait(10)


# -- a new user's first commands, against a real gateway ------------------------------------


@pytest.fixture
def live_gateway(start_gateway, backend, issuer, tmp_path, monkeypatch):
    """A real mitmdump holding its store, one recorded call, and the user in another
    directory (no toolgate.duckdb there)."""
    gateway = start_gateway()
    token = issuer.keys.mint("carol", ["sre-leads"])
    with gateway.client() as http:
        assert http.get("/customers/1", headers={"Authorization": f"Bearer {token}"},
                        ).status_code == 200
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("TOOLGATE_TOKEN", raising=False)
    return {"admin": gateway.admin_url, "token": token, "db": tmp_path / "toolgate.duckdb"}


@pytest.mark.e2e
def test_sessions_commands_need_no_db_when_they_talk_to_the_admin_api(live_gateway):
    admin, token = live_gateway["admin"], live_gateway["token"]
    # --admin given: the file is not needed at all.
    listed = toolgate("sessions", "list", "--json", "--admin", admin, "--token", token)
    assert listed.exit_code == 0, listed.output
    [call] = json.loads(listed.output)["calls"]
    assert call["subject"] == "carol" and call["function"] == "crm.get_customer"
    shown = toolgate("sessions", "show", call["session_id"], "--json", "--admin", admin,
                     "--token", token)
    assert shown.exit_code == 0, shown.output
    assert [c["call_id"] for c in json.loads(shown.output)["calls"]] == [call["call_id"]]
    assert toolgate("sessions", "verify", "--admin", admin, "--token", token).exit_code == 0
    report = toolgate("sessions", "report", "--format", "json", "--admin", admin,
                      "--token", token)
    assert report.exit_code == 0 and json.loads(report.output)["total"] == 1
    # Neither option given, and no store at the default path: the default admin API is asked
    # (here the gateway's, as if it listened on the default address).
    defaulted = CliRunner().invoke(cli, ["sessions", "list", "--json", "--token", token],
                                   default_map={"sessions": {"list": {"admin": admin}}})
    assert defaulted.exit_code == 0, defaulted.output
    assert [c["call_id"] for c in json.loads(defaulted.output)["calls"]] == [call["call_id"]]
    # Both given, the gateway holding the file: the admin API answers, as before.
    both = toolgate("sessions", "list", "--json", "--db", str(live_gateway["db"]), "--admin",
                    admin, "--token", token)
    assert both.exit_code == 0 and json.loads(both.output)["calls"] == [call]


@pytest.mark.e2e
def test_sessions_errors_say_each_thing_once(live_gateway):
    admin, db = live_gateway["admin"], str(live_gateway["db"])

    def error(*args: str, **kwargs) -> str:
        result = CliRunner().invoke(cli, ["sessions", "list", *args], **kwargs)
        assert result.exit_code == 2, result.output
        assert result.output.count("Error:") == 1, result.output
        return result.output

    # No token, the gateway holding the store: one hint on how to pass it.
    for args in (["--admin", admin], ["--db", db, "--admin", admin]):
        out = error(*args)
        assert out.count("--token") == 1 and out.count("TOOLGATE_TOKEN") == 1, out
        assert out.count(admin) == 1, out
    # A token the gateway refuses: its reason, where, and the hint, once each.
    out = error("--admin", admin, "--token", "not-a-jwt")
    assert "well-formed" in out and out.count("--token") == 1 and out.count(admin) == 1, out
    # Nothing answers where the user says the admin API is.
    silent = "http://127.0.0.1:9"
    for args in (["--admin", silent], ["--db", db, "--admin", silent]):
        out = error(*args, "--token", "t")
        assert out.count(silent) == 1 and "did not answer" in out, out
    # Nothing at all: no store here, no admin API at the default address (moved to a silent
    # one): both said, once.
    out = error("--token", "t", default_map={"sessions": {"list": {"admin": silent}}})
    assert "no session store at toolgate.duckdb" in out and out.count(silent) == 1, out
    assert out.count("--db") == 1 and out.count("--admin") == 1, out
