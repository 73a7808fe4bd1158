"""The store's pure parts: decisions, sessions, times, JSON shapes, migrations."""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timezone

import duckdb
import pytest

from toolgate.sessions import api
from toolgate.sessions.migrations import LATEST, current_version, migrate
from toolgate.sessions.records import final_decision
from toolgate.sessions.replay import shape, shape_differences
from toolgate.sessions.sessionize import Sessionizer
from toolgate.sessions.timeparse import parse_time, to_us, iso_us


@pytest.mark.parametrize("policy, refused, forwarded, expected", [
    (None, None, True, ("allow", "allow")),
    (None, "identity", False, ("deny", "deny")),
    (None, "unrecorded", False, ("unrecorded", "unrecorded")),
    ({"action": "mask", "would": "mask"}, None, True, ("mask", "mask")),
    ({"action": "allow", "would": "block", "mode": "monitor"}, None, True, ("block", "allow")),
    ({"action": "block", "would": "block"}, "blocked", False, ("block", "block")),
    ({"action": "deny", "would": "deny"}, "blocked", False, ("deny", "deny")),
    ({"action": "approve", "would": "approve"}, "denied", False, ("deny", "deny")),
    ({"action": "approve", "would": "approve"}, "approval_timeout", False, ("deny", "deny")),
    ({"action": "approve", "would": "approve"}, None, True, ("approve", "approve")),
    ({"action": "mask"}, "upstream", True, ("mask", "mask")),
])
def test_final_decision(policy, refused, forwarded, expected):
    decision, enforced, _, _ = final_decision(policy, refused, forwarded)
    assert (decision, enforced) == expected


def test_sessions_by_idle_gap_per_caller():
    ids = iter(f"s{i}" for i in range(10))
    s = Sessionizer(idle=60, new_id=lambda: next(ids))
    assert s.assign("sub:alice", 0) == "s0"
    assert s.assign("sub:alice", 50) == "s0"
    assert s.assign("sub:bob", 55) == "s1"
    assert s.assign("sub:alice", 105) == "s0"  # the gap counts from the last call
    assert s.assign("sub:alice", 200) == "s2"  # idle for longer than the gap
    assert s.assign("sub:alice", 201, mcp_session="m-1", toolgate_session="t-1") == "m-1"
    assert s.assign("sub:alice", 202, toolgate_session=" t-1 ") == "t-1"
    assert s.assign("sub:alice", 203) == "s2"  # named sessions do not break the gap's


def test_times():
    now = datetime(2026, 5, 1, 12, tzinfo=timezone.utc)
    assert parse_time("90m", now) == datetime(2026, 5, 1, 10, 30, tzinfo=timezone.utc)
    assert parse_time("2d", now).day == 29
    assert parse_time("2026-05-01T10:00:00Z") == datetime(2026, 5, 1, 10, tzinfo=timezone.utc)
    assert parse_time("2026-05-01 10:00").tzinfo is timezone.utc
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_time("last tuesday")
    assert iso_us(to_us(now)) == "2026-05-01T12:00:00Z"


def test_json_shapes():
    before = shape({"a": 1, "b": [{"x": "s"}], "c": None})
    assert before == {"a": "number", "b": [{"x": "string"}], "c": "null"}
    after = shape({"a": "1", "b": [{"x": "s", "y": True}]})
    assert shape_differences(before, after) == [
        "$.a: number -> string", "$.b[*].y: new", "$.c: missing now"]
    assert shape_differences(before, before) == []


def test_migrations_are_versioned_and_run_once():
    con = duckdb.connect()
    assert current_version(con) == 0
    assert migrate(con) == LATEST
    assert migrate(con) == LATEST
    assert con.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] == LATEST
    con.execute("INSERT INTO schema_migrations (version, name) VALUES (999, 'future')")
    with pytest.raises(RuntimeError, match="upgrade toolgate"):
        migrate(con)


@pytest.mark.parametrize("path, params, status", [
    ("/api/calls", {"limit": "0"}, 400),
    ("/api/calls", {"limit": "x"}, 400),
    ("/api/calls", {"level": "secret"}, 400),
    ("/api/calls", {"since": "soon"}, 400),
    ("/api/findings", {"fingerprint": "not hex"}, 400),
    ("/api/sessions/none", {}, 404),
    ("/api/nothing", {}, 404),
    ("/api/calls", {"subject": "x", "decision": "block, deny", "limit": "5"}, 200),
])
def test_api_parameters_are_checked(path, params, status):
    con = duckdb.connect()
    migrate(con)
    got, body = api.handle(con, path, params)
    assert got == status
    if status != 200:
        assert body["error"]["code"] in ("bad_request", "not_found") and body["error"]["message"]


def test_canonical_findings_order_is_the_same_with_and_without_none_values():
    import random

    from toolgate.sessions import hashchain

    rng = random.Random(7)
    words = ["", "a", "ab", "b", "$.x", "$.x[1]", "ssn", "card", "mask", "None"]
    rows = [tuple(rng.choice(words) for _ in range(6)) for _ in range(500)]
    expected = sorted(rows, key=hashchain.finding_key)  # what stores were hashed with
    assert hashchain.canonical_findings(rows) == expected
    assert hashchain.canonical_findings(reversed(rows)) == expected
    with_none = [row[:3] + (None,) + row[4:] if i % 7 == 0 else row for i, row in enumerate(rows)]
    assert hashchain.canonical_findings(with_none) == sorted(with_none, key=hashchain.finding_key)


def test_a_finding_row_from_the_gateways_dict_is_the_row_of_the_general_path():
    from toolgate.sessions.records import FindingRow

    typed = {"direction": "response", "path": "$.a", "label": "ssn", "level": "restricted",
             "action": "mask", "fingerprint": "ab" * 32}
    fast = FindingRow.from_dict(typed)
    assert fast == FindingRow("response", "$.a", "ssn", "restricted", "mask", "ab" * 32)
    assert type(fast) is FindingRow and fast.label == "ssn"
    odd = FindingRow.from_dict({**typed, "level": None, "path": 7})  # the general path converts
    assert odd == FindingRow("response", "7", "ssn", None, "mask", "ab" * 32)
