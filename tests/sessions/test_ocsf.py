"""OCSF events for a SIEM (`sessions.ocsf`, `sessions.ocsf_stream`, `toolgate sessions export
--format ocsf`): every event holds exactly the fields of its class that we emit, with the types
and enumerations OCSF 1.3.0 gives them; decisions map to actions and dispositions; no body,
header value, query value or token is in the bytes; the stream and the export agree."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import stat
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import duckdb
import pytest
from click.testing import CliRunner
from mitmproxy import exceptions
from mitmproxy.test import taddons, tflow

from toolgate.addons.recording.addon import Recorder
from toolgate.scripts.cli import cli
from toolgate.sessions import api, ocsf
from toolgate.sessions.ocsf_stream import OcsfStream, call_row
from toolgate.sessions.records import FindingRow
from storekit import make_call, record_all

# -- the schema: the fields we emit per class, with their types ------------------------------
# A key starting with "?" is optional; a type tuple allows any of them (None: JSON null); a
# list holds one schema for its items; a dict is a nested object. No other key is allowed.

NULLABLE_STR = (str, type(None))
USER = {"name": str, "type_id": int, "type": str, "?uid": str, "?groups": [{"name": str}]}
ENDPOINT = {"?ip": str, "?hostname": str, "?port": int, "?name": str}
URL = {"url_string": str, "scheme": str, "hostname": str, "path": str, "?port": int}
HTTP_REQUEST = {"http_method": str, "?url": URL}
UNMAPPED = {"session_id": NULLABLE_STR, "decision": NULLABLE_STR, "enforced": NULLABLE_STR,
            "mode": NULLABLE_STR, "rules": [str], "labels": [str], "node": NULLABLE_STR,
            "protocol": NULLABLE_STR, "forwarded": bool, "error": NULLABLE_STR}
BASE = {
    "class_uid": int, "class_name": str, "category_uid": int, "category_name": str,
    "activity_id": int, "activity_name": str, "type_uid": int, "type_name": str,
    "severity_id": int, "severity": str, "time": int, "message": str,
    "metadata": {"version": str, "product": {"name": str, "vendor_name": str, "version": str},
                 "uid": str, "correlation_uid": str, "log_name": str, "profiles": [str]},
    # the security_control profile
    "action_id": int, "action": str, "disposition_id": int, "disposition": str,
    "status_id": int, "status": str,
    "actor": {"user": USER}, "src_endpoint": ENDPOINT, "?dst_endpoint": ENDPOINT,
    "unmapped": UNMAPPED,
}
SCHEMAS: dict[int, dict[str, Any]] = {
    6003: {**BASE,
           "api": {"operation": str, "service": {"name": str}, "request": {"uid": str},
                   "?response": {"?code": int, "?error": str}},
           "http_request": HTTP_REQUEST, "?http_response": {"code": int},
           "?status_code": str, "?status_detail": str,
           "?start_time": int, "?end_time": int, "?duration": int},
    3002: {**BASE, "user": USER, "auth_protocol_id": int, "auth_protocol": str,
           "is_remote": bool, "service": {"name": str}, "http_request": HTTP_REQUEST,
           "status_code": str, "status_detail": str},
    2006: {**BASE,
           "finding_info": {"uid": str, "title": str, "types": [str]},
           "data_security": {"data_lifecycle_state_id": int, "data_lifecycle_state": str,
                             "detection_system_id": int, "detection_system": str,
                             "detection_pattern": str, "confidentiality_id": int,
                             "confidentiality": str},
           "resources": [{"uid": str, "name": str, "type": str,
                          "data": {"direction": str, "path": str}}],
           "unmapped": {**UNMAPPED, "direction": str, "path": str, "label": str,
                        "level": NULLABLE_STR, "action": NULLABLE_STR,
                        "fingerprint": NULLABLE_STR}},
}
# OCSF 1.3.0's enumerations, as far as we use them: id -> caption (None: any caption, "Other").
CLASS_ENUMS = {
    6003: ("API Activity", 6, "Application Activity",
           {1: "Create", 2: "Read", 3: "Update", 4: "Delete", 99: None}),
    3002: ("Authentication", 3, "Identity & Access Management", {1: "Logon"}),
    2006: ("Data Security Finding", 2, "Findings", {1: "Create"}),
}
SEVERITY = {0: "Unknown", 1: "Informational", 2: "Low", 3: "Medium", 4: "High", 5: "Critical",
            6: "Fatal", 99: None}
ACTION = {0: "Unknown", 1: "Allowed", 2: "Denied"}  # 1.3.0: 99 is not an option
DISPOSITION = {0: "Unknown", 1: "Allowed", 2: "Blocked", 3: "Quarantined", 4: "Isolated",
               5: "Deleted", 6: "Dropped", 7: "Custom Action", 8: "Approved", 9: "Restored",
               10: "Exonerated", 11: "Corrected", 12: "Partially Corrected",
               13: "Uncorrected", 14: "Delayed", 15: "Detected", 16: "No Action",
               17: "Logged", 18: "Tagged", 99: None}
EVENT_STATUS = {0: "Unknown", 1: "Success", 2: "Failure", 99: None}
FINDING_STATUS = {0: "Unknown", 1: "New", 2: "In Progress", 3: "Suppressed", 4: "Resolved",
                  99: None}
AUTH_PROTOCOL = {0: "Unknown", 1: "NTLM", 2: "Kerberos", 3: "Digest", 4: "OpenID", 5: "SAML",
                 6: "OAUTH 2.0", 7: "PAP", 8: "CHAP", 9: "EAP", 10: "RADIUS", 99: None}
LIFECYCLE = {0: "Unknown", 1: "Data at-Rest", 2: "Data in-Transit", 3: "Data in-Use", 99: None}
DETECTION_SYSTEM = {0: "Unknown", 1: "Endpoint", 2: "DLP Gateway", 99: None}
CONFIDENTIALITY = {0: "Unknown", 1: "Not Confidential", 2: "Confidential", 3: "Secret",
                   4: "Top Secret", 5: "Private", 6: "Restricted", 99: None}
USER_TYPE = {0: "Unknown", 1: "User", 2: "Admin", 3: "System", 99: None}


def schema_errors(value: Any, schema: Any, where: str = "$") -> list[str]:
    """What in `value` does not fit `schema` (see above); empty when it fits."""
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            return [f"{where}: an object expected, not {type(value).__name__}"]
        errors = []
        fields = {k.lstrip("?"): k.startswith("?") for k in schema}
        for name, optional in fields.items():
            if name not in value:
                if not optional:
                    errors.append(f"{where}.{name}: missing")
                continue
            errors += schema_errors(value[name], schema[("?" if optional else "") + name],
                                    f"{where}.{name}")
        errors += [f"{where}.{k}: not a field we emit" for k in value if k not in fields]
        return errors
    if isinstance(schema, list):
        if not isinstance(value, list):
            return [f"{where}: an array expected, not {type(value).__name__}"]
        return [e for i, item in enumerate(value) for e in schema_errors(item, schema[0],
                                                                         f"{where}[{i}]")]
    types = schema if isinstance(schema, tuple) else (schema,)
    if type(value) not in types:  # exact: a bool is not an int here
        return [f"{where}: {type(value).__name__} is not {'/'.join(t.__name__ for t in types)}"]
    return []


def enum_errors(event: dict[str, Any]) -> list[str]:
    """The enumerations and the values derived from others."""
    errors = []

    def check(obj: dict[str, Any], id_key: str, name_key: str, enum: dict, where: str) -> None:
        if id_key not in obj:
            return
        if obj[id_key] not in enum:
            errors.append(f"{where}{id_key}: {obj[id_key]} is not one of {sorted(enum)}")
        elif enum[obj[id_key]] is not None and obj.get(name_key) != enum[obj[id_key]]:
            errors.append(f"{where}{name_key}: {obj.get(name_key)!r} for {id_key} "
                          f"{obj[id_key]} (expected {enum[obj[id_key]]!r})")

    class_uid = event["class_uid"]
    name, category, category_name, activities = CLASS_ENUMS[class_uid]
    if (event["class_name"], event["category_uid"], event["category_name"]) != (
            name, category, category_name):
        errors.append(f"class {class_uid}: wrong class or category names")
    check(event, "activity_id", "activity_name", activities, "")
    if event["type_uid"] != class_uid * 100 + event["activity_id"]:
        errors.append("type_uid is not class_uid * 100 + activity_id")
    if event["type_name"] != f"{name}: {event['activity_name']}":
        errors.append("type_name is not '<class>: <activity>'")
    check(event, "severity_id", "severity", SEVERITY, "")
    check(event, "action_id", "action", ACTION, "")
    check(event, "disposition_id", "disposition", DISPOSITION, "")
    check(event, "status_id", "status", FINDING_STATUS if class_uid == 2006 else EVENT_STATUS, "")
    check(event, "auth_protocol_id", "auth_protocol", AUTH_PROTOCOL, "")
    for user in (event["actor"]["user"], event.get("user") or event["actor"]["user"]):
        check(user, "type_id", "type", USER_TYPE, "user.")
    security = event.get("data_security") or {}
    check(security, "data_lifecycle_state_id", "data_lifecycle_state", LIFECYCLE, "data_security.")
    check(security, "detection_system_id", "detection_system", DETECTION_SYSTEM, "data_security.")
    check(security, "confidentiality_id", "confidentiality", CONFIDENTIALITY, "data_security.")
    if event["metadata"]["version"] != "1.3.0":
        errors.append("metadata.version is not 1.3.0")
    if event["metadata"]["product"]["name"] != "toolgate":
        errors.append("metadata.product.name is not toolgate")
    if isinstance(event["time"], int) and not 10**12 < event["time"] < 10**13:
        errors.append(f"time {event['time']} is not in milliseconds since the epoch")
    return errors


def assert_valid(events: list[dict[str, Any]]) -> None:
    problems = []
    for event in events:
        problems += [f"{event['metadata']['uid']}: {p}" for p in
                     schema_errors(event, SCHEMAS[event["class_uid"]]) + enum_errors(event)]
    assert problems == []


# -- calls -------------------------------------------------------------------------------------

SSN, EMAIL, CARD = "536-22-1234", "ada@example.com", "4111 1111 1111 1111"
JWT = ("eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJhbGljZSIsImdyb3VwcyI6WyJzdXBwb3J0Il19"
       ".c2lnbmF0dXJlLW9mLXRoZS1jYWxsZXJzLXRva2Vu")
NOW = time.time()  # one time for the module: the calls are the same every time they are made
RAW = [SSN, EMAIL, CARD, CARD.replace(" ", ""), JWT, *JWT.split("."), "hunter2",
       "vaulted-credential"]


def identity_body(message: str) -> bytes:
    return json.dumps({"error": {"code": "identity", "message": message, "rule": None,
                                 "field": None, "call_id": "x"}}).encode()


@functools.cache  # the same records each time: make_call numbers its URLs
def mixed_calls() -> tuple:
    """An allowed call, a masked one with findings, a blocked one, a bad token, a held call
    denied, a monitor-mode block and an MCP call: raw values everywhere the export must not
    look (headers, bodies, query strings, a refusal's message)."""
    def at(ago: float) -> dict[str, float]:
        return {"started_at": NOW - ago, "ended_at": NOW - ago + 0.0125}

    headers = [("Authorization", f"Bearer {JWT}"), ("Cookie", "session=hunter2"),
               ("X-Customer-Email", EMAIL), ("X-Backend-Key", "vaulted-credential")]
    body = json.dumps({"ssn": SSN, "email": EMAIL, "card": CARD}).encode()
    return (
        make_call(call_id="allow-1", session_id="s-1", **at(50), subject="alice",
                  request_headers=headers, secret_headers=("X-Backend-Key",),
                  response_body=b'{"tier": "gold"}', findings=[], decision="allow",
                  enforced="allow"),
        make_call(call_id="mask-1", session_id="s-1", **at(40), subject="alice",
                  url=f"http://backend.test/customers/1?ssn={SSN}&email={EMAIL}",
                  request_headers=headers, response_body=body, decision="mask", enforced="mask",
                  rules=["mask-ssn"],
                  findings=[FindingRow("response", "$.ssn", "ssn", "restricted", "mask", "ab" * 32),
                            FindingRow("response", "$.email", "email", "confidential", "mask",
                                       "cd" * 32),
                            FindingRow("request", "headers.x-customer-email", "email",
                                       "confidential", "allow", "ef" * 32)]),
        make_call(call_id="block-1", session_id="s-1", **at(30), subject="alice",
                  function="crm.export", url="http://backend.test/customers/export?limit=500",
                  status=403, decision="block", enforced="block", forwarded=False,
                  rules=["no-bulk-export"], error="blocked", findings=[],
                  response_body=json.dumps({"error": {"code": "blocked",
                                                      "message": f"not for {SSN}"}}).encode()),
        make_call(call_id="token-1", session_id="s-2", **at(20), subject=None,
                  groups=[], function="GET /customers/1", status=401, decision="deny",
                  enforced="deny", forwarded=False, error="identity", findings=[],
                  request_headers=headers, request_body=None,
                  response_body=identity_body(f"the token's signature does not verify: {JWT}")),
        make_call(call_id="deny-1", session_id="s-3", **at(10), subject="bob",
                  groups=["sre"], function="deploy.start", method="POST",
                  url="http://backend.test/deploy", request_body=b'{"service": "api"}',
                  status=403, decision="deny", enforced="deny", forwarded=False, error="denied",
                  rules=["deploys-need-approval"], findings=[]),
        make_call(call_id="monitor-1", session_id="s-3", **at(5), subject="bob",
                  decision="block", enforced="allow", mode="monitor", rules=["no-bulk-export"],
                  findings=[]),
        make_call(call_id="mcp-1", session_id="s-4", **at(1), subject="carol",
                  protocol="mcp", function="get_customer", method="POST",
                  url="http://backend.test/mcp", decision="mask", enforced="mask",
                  request_body=b'{"jsonrpc": "2.0"}', response_body=body,
                  findings=[FindingRow("response", "$.result.ssn", "ssn", "restricted", "mask",
                                       "01" * 32)]),
    )


def events_of(calls) -> list[dict[str, Any]]:
    return [e for call in calls for e in ocsf.call_events(call_row(call))]


def by_uid(events) -> dict[str, dict[str, Any]]:
    return {e["metadata"]["uid"]: e for e in events}


# -- the classes --------------------------------------------------------------------------------


def test_every_event_fits_its_class():
    events = events_of(mixed_calls())
    assert_valid(events)
    classes = [e["class_uid"] for e in events]
    assert classes.count(6003) == 7  # one API Activity per call
    assert classes.count(3002) == 1  # one Authentication per identity refusal
    assert classes.count(2006) == 4  # one finding event per finding


def test_the_checker_catches_what_does_not_fit():
    [event] = events_of(mixed_calls()[:1])
    broken = json.loads(json.dumps(event))
    broken["time"] = "yesterday"
    broken["api"]["surprise"] = 1
    del broken["actor"]
    broken["disposition"] = "Approved"
    errors = schema_errors(broken, SCHEMAS[6003]) + enum_errors(
        {**broken, "actor": event["actor"]})
    assert any("$.time" in e for e in errors)
    assert any("$.api.surprise: not a field" in e for e in errors)
    assert any("$.actor: missing" in e for e in errors)
    assert any("disposition" in e for e in errors)


def test_events_of_a_call_join_on_its_call_id():
    events = events_of(mixed_calls())
    for event in events:
        call_id = event["metadata"]["correlation_uid"]
        assert event["metadata"]["uid"].split("/")[0] == call_id
    assert len(by_uid(events)) == len(events)  # each event has its own uid
    uids = sorted(u for u in by_uid(events) if u.startswith("mask-1"))
    assert uids == ["mask-1", "mask-1/finding/0", "mask-1/finding/1", "mask-1/finding/2"]
    assert by_uid(events)["token-1/auth"]["class_uid"] == 3002


@pytest.mark.parametrize("call_id, action, disposition, status, severity", [
    ("allow-1", (1, "Allowed"), (1, "Allowed"), "Success", 1),
    ("mask-1", (1, "Allowed"), (99, "Masked"), "Success", 2),
    ("block-1", (2, "Denied"), (2, "Blocked"), "Failure", 3),
    ("token-1", (2, "Denied"), (2, "Blocked"), "Failure", 3),
    ("deny-1", (2, "Denied"), (2, "Blocked"), "Failure", 3),
    ("monitor-1", (1, "Allowed"), (15, "Detected"), "Success", 3),  # decided, not enforced
])
def test_decisions_map_to_actions_dispositions_and_status(call_id, action, disposition, status,
                                                          severity):
    event = by_uid(events_of(mixed_calls()))[call_id]
    assert (event["action_id"], event["action"]) == action
    assert (event["disposition_id"], event["disposition"]) == disposition
    assert event["status"] == status and event["severity_id"] == severity
    assert event["unmapped"]["decision"] == {"monitor-1": "block"}.get(call_id, event[
        "unmapped"]["enforced"])


@pytest.mark.parametrize("decision, expected", [
    ("approve", (1, 8, "Approved")),
    ("approval_pending", (0, 14, "Delayed")),
    ("interrupted", (0, 99, "Interrupted")),
    ("uninspectable", (0, 99, "uninspectable")),
])
def test_other_decisions(decision, expected):
    call = make_call(decision=decision, enforced=decision, findings=[])
    [event] = events_of([call])
    assert (event["action_id"], event["disposition_id"], event["disposition"]) == expected
    assert_valid([event])


def test_api_activity_names_the_caller_the_function_and_the_request():
    events = by_uid(events_of(mixed_calls()))
    masked = events["mask-1"]
    assert masked["actor"]["user"] == {"uid": "alice", "name": "alice", "type_id": 1,
                                       "type": "User", "groups": [{"name": "support"}]}
    assert masked["api"]["operation"] == "crm.get_customer"
    assert masked["api"]["service"]["name"] == "backend.test"
    assert masked["activity_name"] == "Read" and masked["http_response"] == {"code": 200}
    assert masked["http_request"]["url"]["url_string"] == "http://backend.test/customers/1"
    assert masked["src_endpoint"] == {"ip": "127.0.0.1", "port": 50000}
    assert masked["unmapped"]["labels"] == ["email", "ssn"]
    assert masked["unmapped"]["rules"] == ["mask-ssn"]
    assert masked["duration"] == masked["end_time"] - masked["start_time"]
    assert events["deny-1"]["activity_name"] == "Create"  # POST
    mcp = events["mcp-1"]
    assert (mcp["activity_id"], mcp["activity_name"]) == (99, "mcp")  # every MCP call is a POST
    assert events["token-1"]["actor"]["user"]["name"] == "anonymous"


def test_authentication_says_why_without_the_token():
    auth = by_uid(events_of(mixed_calls()))["token-1/auth"]
    assert auth["status"] == "Failure" and auth["status_code"] == "identity"
    assert auth["status_detail"] == ("identity: the token's signature does not verify: "
                                     "[REDACTED]")
    assert auth["activity_name"] == "Logon" and auth["user"]["type"] == "Unknown"


def test_findings_carry_label_level_action_and_where():
    events = by_uid(events_of(mixed_calls()))
    ssn = next(e for e in events.values()
               if e["class_uid"] == 2006 and e["unmapped"]["path"] == "$.ssn")
    assert ssn["metadata"]["correlation_uid"] == "mask-1"
    assert ssn["finding_info"]["types"] == ["ssn"]
    assert ssn["data_security"]["detection_pattern"] == "ssn"
    assert (ssn["severity_id"], ssn["data_security"]["confidentiality"]) == (4, "Restricted")
    assert (ssn["action"], ssn["disposition"]) == ("Allowed", "Masked")
    assert ssn["resources"][0]["data"] == {"direction": "response", "path": "$.ssn"}
    assert ssn["unmapped"]["fingerprint"] == "ab" * 32
    header = next(e for e in events.values() if e["class_uid"] == 2006
                  and e["unmapped"]["path"] == "headers.x-customer-email")
    assert (header["disposition"], header["severity"]) == ("Allowed", "Medium")


def test_no_raw_value_or_token_in_the_bytes():
    data = "".join(ocsf.lines(call_row(c) for c in mixed_calls())).encode()
    assert data.isascii() and data.endswith(b"\n")
    assert [v for v in RAW if v.encode() in data] == []
    assert b"Bearer" not in data and b"REDACTED]" in data  # the refusal's reason, cut


# -- the export command and the stream: the same events ----------------------------------------


@pytest.fixture
def store(open_writer, db) -> Path:
    w = open_writer()
    record_all(w, list(mixed_calls()))
    w.stop()
    w.join(10)
    return db


def toolgate(*args: str):
    return CliRunner().invoke(cli, list(args))


def read_lines(path: Path) -> list[dict[str, Any]]:
    data = path.read_bytes()
    assert data.endswith(b"\n")
    return [json.loads(line) for line in data.splitlines()]


def test_export_writes_what_the_stream_writes(store, tmp_path):
    out = tmp_path / "calls.jsonl"
    result = toolgate("sessions", "export", "--format", "ocsf", "-o", str(out), "--db", str(store))
    assert result.exit_code == 0, result.output
    assert "wrote 12 OCSF 1.3.0 event(s) for 7 call(s)" in result.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    exported = read_lines(out)
    assert_valid(exported)
    assert exported == events_of(mixed_calls())  # in the order the calls were made
    assert [v for v in RAW if v.encode() in out.read_bytes()] == []


def test_the_export_asks_for_the_identity_refusals_bodies_alone(store):
    con = duckdb.connect(str(store), read_only=True)
    try:
        status, full = api.handle(con, "/api/calls/full", {"bodies": "identity"})
        assert status == 200
        with_bodies = {c["call_id"] for c in full["calls"] if c["response_body"] is not None
                       or c["request_body"] is not None or c["request_headers"]}
        assert with_bodies == {"token-1"}  # the only identity refusal: its 401's reason
        assert len(full["calls"]) == 7 and all(c["findings"] is not None for c in full["calls"])
        status, every = api.handle(con, "/api/calls/full", {})
        assert status == 200 and all(c["response_body"] for c in every["calls"])
        status, bad = api.handle(con, "/api/calls/full", {"bodies": "some"})
        assert status == 400 and "bodies" in bad["error"]["message"]
    finally:
        con.close()


@pytest.mark.parametrize("args, calls", [
    (["--decision", "block,deny"], {"block-1", "token-1", "deny-1", "monitor-1"}),
    (["--subject", "alice", "--label", "ssn"], {"mask-1"}),
    (["--level", "restricted"], {"mask-1", "mcp-1"}),
    (["--function", "crm.*"], {"allow-1", "mask-1", "block-1", "monitor-1"}),
    (["--session", "s-3"], {"deny-1", "monitor-1"}),
    (["s-3"], {"deny-1", "monitor-1"}),
    (["--limit", "2"], {"monitor-1", "mcp-1"}),
])
def test_export_filters_like_list(store, args, calls):
    result = toolgate("sessions", "export", "--format", "ocsf", *args, "--db", str(store))
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert {e["metadata"]["correlation_uid"] for e in events} == calls
    listed = toolgate("sessions", "list", "--json", *(["--session", *args] if args == ["s-3"]
                                                      else args), "--db", str(store))
    assert {c["call_id"] for c in json.loads(listed.output)["calls"]} == calls


@pytest.mark.parametrize("args, message", [
    (["-o", "x.mitm"], "which session?"),
    (["s-1"], "-o FILE.mitm"),
    (["s-1", "-o", "x.mitm", "--subject", "alice"], "--subject select calls for --format ocsf"),
    (["--format", "ocsf", "s-1", "--session", "s-2"], "different sessions"),
])
def test_export_usage_errors(store, args, message):
    result = toolgate("sessions", "export", *args, "--db", str(store))
    assert result.exit_code == 2 and message in result.output, result.output


def test_export_as_mitm_is_unchanged(store, tmp_path):
    out = tmp_path / "s.mitm"
    result = toolgate("sessions", "export", "s-1", "-o", str(out), "--db", str(store))
    assert result.exit_code == 0 and "wrote 3 flow(s)" in result.output, result.output


def wait_for(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    return predicate()


def test_the_stream_appends_whole_lines_to_a_0600_file(tmp_path):
    path = tmp_path / "ocsf.jsonl"
    stream = OcsfStream(path)
    calls = mixed_calls()
    for call in calls:
        stream.submit(call)
    stream.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_lines(path) == events_of(calls)
    assert stream.health()["calls"] == 7 and stream.health()["events"] == 12


def test_the_stream_waits_for_the_store_and_skips_what_it_did_not_keep(tmp_path):
    path = tmp_path / "ocsf.jsonl"
    stream = OcsfStream(path)
    kept, lost = Future(), Future()
    allowed, masked = mixed_calls()[:2]
    stream.submit(allowed, kept)
    stream.submit(masked, lost)
    time.sleep(0.1)
    assert not path.exists()  # nothing before the store has it
    lost.set_exception(RuntimeError("disk full"))
    kept.set_result(None)
    stream.close()
    assert [e["metadata"]["uid"] for e in read_lines(path)] == ["allow-1"]


def test_the_stream_reopens_a_rotated_file_and_survives_failures(tmp_path):
    path = tmp_path / "ocsf.jsonl"
    stream = OcsfStream(path)
    first, second, third = mixed_calls()[:3]
    stream.submit(first)
    assert wait_for(lambda: path.exists() and path.read_bytes().endswith(b"\n"))
    path.rename(tmp_path / "ocsf.jsonl.1")  # logrotate moves it away
    stream.submit(second)
    assert wait_for(lambda: stream.health()["calls"] == 2)
    assert {e["metadata"]["correlation_uid"] for e in read_lines(path)} == {"mask-1"}
    path.unlink()
    path.mkdir()  # cannot be written: counted, logged, the stream goes on
    stream.submit(third)
    assert wait_for(lambda: stream.health()["failed"] == 1)
    assert "IsADirectoryError" in stream.health()["error"]
    path.rmdir()
    stream.submit(first)
    stream.close()
    assert stream.health()["error"] is None and stream.health()["calls"] == 3
    assert [e["metadata"]["uid"] for e in read_lines(path)] == ["allow-1"]


def test_a_full_queue_drops_rather_than_waits(tmp_path, monkeypatch):
    writing, release = threading.Event(), threading.Event()
    stream = OcsfStream(tmp_path / "ocsf.jsonl", max_queue=2)

    def stuck(calls):  # a file that takes forever
        writing.set()
        release.wait(10)

    monkeypatch.setattr(stream, "_write", stuck)
    first, *rest = mixed_calls()
    stream.submit(first)
    assert writing.wait(5)
    started = time.monotonic()
    for call in rest:
        stream.submit(call)
    assert time.monotonic() - started < 1  # never blocks the caller
    assert stream.health()["dropped"] == len(rest) - 2 and stream.health()["queued"] == 2
    release.set()
    stream.close()


def test_the_stream_leaves_no_half_line_when_a_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "ocsf.jsonl"
    stream = OcsfStream(path)
    stream.submit(mixed_calls()[0])
    assert wait_for(lambda: stream.health()["calls"] == 1)
    before = path.read_bytes()
    real_write = os.write

    def short_then_full(fd, data):  # half a batch goes in, then the disk is full
        if len(data) > 10 and not short_then_full.done:
            short_then_full.done = True
            return real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(28, "No space left on device")

    short_then_full.done = False
    monkeypatch.setattr(os, "write", short_then_full)
    stream.submit(mixed_calls()[1])
    assert wait_for(lambda: stream.health()["failed"] == 1)
    monkeypatch.setattr(os, "write", real_write)
    stream.close()
    assert path.read_bytes() == before


# -- the recorder's option -----------------------------------------------------------------------


def test_the_recorder_streams_each_recorded_call(tmp_path):
    db, path = tmp_path / "s.duckdb", tmp_path / "ocsf.jsonl"

    async def main():
        recorder = Recorder()
        with taddons.context(recorder) as tctx:
            with pytest.raises(exceptions.OptionsError, match="does not exist"):
                tctx.configure(recorder, toolgate_ocsf_file=str(tmp_path / "no" / "f.jsonl"))
            tctx.configure(recorder, toolgate_db=str(db), toolgate_ocsf_file=str(path))
            f = tflow.tflow(resp=False)
            f.metadata["toolgate.call_id"] = "rec-1"
            f.request.timestamp_start = time.time()
            f.metadata["toolgate.identity"] = {"subject": "alice", "groups": ["support"]}
            f.request.headers["Authorization"] = f"Bearer {JWT}"
            await recorder.request(f)
            f.response = tflow.tresp()
            f.metadata["toolgate.decision"] = {"action": "mask", "rules": ["r1"],
                                               "mode": "enforce", "function": "crm.get"}
            f.metadata["toolgate.findings"] = [{"direction": "response", "path": "$.ssn",
                                                "label": "ssn", "level": "restricted",
                                                "action": "mask", "fingerprint": "ab" * 32}]
            await recorder.response(f)
            assert recorder.health()["ocsf"]["file"] == str(path)
            recorder.done()

    asyncio.run(main())
    assert wait_for(lambda: path.exists() and len(path.read_bytes().splitlines()) == 2)
    streamed = read_lines(path)
    assert_valid(streamed)
    assert [e["class_uid"] for e in streamed] == [6003, 2006]
    assert streamed[0]["api"]["operation"] == "crm.get"
    assert JWT.encode() not in path.read_bytes()
    wait_for(lambda: toolgate("sessions", "list", "--db", str(db)).exit_code == 0)
    exported = toolgate("sessions", "export", "--format", "ocsf", "--db", str(db))
    assert exported.exit_code == 0, exported.output
    assert [json.loads(line) for line in exported.stdout.splitlines()] == streamed

