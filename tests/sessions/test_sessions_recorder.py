"""The recorder addon on mitmproxy's test flows: what it records at each hook, that audit
durability refuses calls it cannot record, and that it leaves non-live flows alone."""

from __future__ import annotations

import asyncio
import errno
from pathlib import Path

import pytest
from mitmproxy.test import taddons, tflow

from toolgate.addons.failclosed.hooks import unguarded_hooks
from toolgate.addons.recording.addon import Recorder
from toolgate.sessions import journal as journal_module
from storekit import query


def run(db: Path, scenario, durability: str = "audit"):
    async def main():
        recorder = Recorder()
        with taddons.context(recorder) as tctx:
            tctx.configure(recorder, toolgate_db=str(db), toolgate_durability=durability)
            try:
                return await scenario(recorder)
            finally:
                recorder.done()
                recorder_writer_join(recorder)

    return asyncio.run(main())


def recorder_writer_join(recorder: Recorder) -> None:
    from toolgate.sessions import writer

    w = writer._latest.get(str(Path(recorder.db_path)))
    if w is not None:
        w.join(10)


async def on_store(recorder: Recorder, fn):
    """`fn(connection)` on the store of the recorder's own writer (the recorder itself has no
    such door), awaited."""
    return await asyncio.wrap_future(recorder.writer.run_query(fn))


def flow_with_identity(**kwargs):
    f = tflow.tflow(**kwargs)
    f.metadata["toolgate.call_id"] = f"call-{f.id}"
    f.metadata["toolgate.started"] = f.request.timestamp_start
    f.metadata["toolgate.identity"] = {"subject": "alice", "issuer": "https://i", "groups": ["sre"],
                                       "token_id": "jti-1", "anonymous": False}
    f.request.headers["Authorization"] = "Bearer caller-token"
    f.request.headers["X-Backend-Key"] = "vaulted-credential"
    f.metadata["toolgate.injected_headers"] = ["X-Backend-Key"]
    return f


def test_every_flow_hook_fails_closed():
    assert unguarded_hooks(Recorder()) == []


def test_the_recorder_runs_no_sql_it_is_handed():
    # Addons and the admin server read the store through `query(path, params)`'s routes only.
    assert not hasattr(Recorder(), "run_query")


def test_a_call_is_recorded_in_two_phases(tmp_path):
    db = tmp_path / "s.duckdb"

    async def scenario(recorder):
        f = flow_with_identity()
        await recorder.request(f)
        assert f.response is None  # let through
        assert f.metadata["toolgate.recorded"] == "request"
        pending = await on_store(recorder, lambda con: con.execute(
            "SELECT call_id FROM pending").fetchall())
        assert pending == [(f.metadata["toolgate.call_id"],)]
        f.response = tflow.tresp()
        f.metadata["toolgate.decision"] = {"action": "mask", "rules": ["r1"], "mode": "enforce",
                                           "protocol": "mcp", "function": "get_customer"}
        f.metadata["toolgate.findings"] = [{"direction": "response", "path": "$.ssn",
                                            "label": "ssn", "level": "restricted",
                                            "action": "mask", "fingerprint": "cd" * 32}]
        await recorder.response(f)
        assert f.response.status_code == 200
        return f.metadata["toolgate.call_id"]

    call_id = run(db, scenario)
    [row] = query(db, "SELECT call_id, subject, groups, token_id, decision, rules, protocol, "
                      "function, status, forwarded, request_headers, session_id FROM calls")
    assert row[:10] == (call_id, "alice", ["sre"], "jti-1", "mask", ["r1"], "mcp",
                        "get_customer", 200, True)
    assert "caller-token" not in row[10] and "vaulted-credential" not in row[10]
    assert row[11].startswith("s-")
    assert query(db, "SELECT label, fingerprint FROM findings") == [("ssn", "cd" * 32)]
    assert query(db, "SELECT count(*) FROM pending") == [(0,)]


def test_a_call_refused_before_forwarding_is_recorded_once(tmp_path):
    db = tmp_path / "s.duckdb"

    async def scenario(recorder):
        from toolgate.addons.answers import Refusal, refuse

        f = flow_with_identity()
        refuse(f, Refusal("identity", "no token"))
        await recorder.request(f)
        await recorder.response(f)
        await recorder.response(f)  # hooks may repeat: recorded once

    run(db, scenario)
    assert query(db, "SELECT status, decision, enforced, forwarded, error FROM calls") == [
        (401, "deny", "deny", False, "identity")]


def full_journal(monkeypatch) -> None:
    """Every append to the journal fails, as on a full disk."""
    def append(self, payloads):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(journal_module.Journal, "append", append)


def test_a_call_that_cannot_be_journaled_is_refused_under_audit(tmp_path, monkeypatch):
    db = tmp_path / "s.duckdb"
    full_journal(monkeypatch)

    async def scenario(recorder):
        f = flow_with_identity()
        await recorder.request(f)
        return f

    f = run(db, scenario)
    assert f.response.status_code == 503
    assert f.metadata["toolgate.refused"] == "unrecorded"
    assert b'"unrecorded"' in f.response.content


def test_an_answer_that_cannot_be_recorded_is_withheld(tmp_path, monkeypatch):
    db = tmp_path / "s.duckdb"

    async def scenario(recorder):
        f = flow_with_identity(resp=True)
        await recorder.request(tflow.tflow())  # opens the store
        f.response.content = b'{"secret": "backend answer"}'
        full_journal(monkeypatch)  # the disk fills up
        await recorder.response(f)
        return f

    f = run(db, scenario)
    assert f.response.status_code == 503
    assert b"backend answer" not in f.response.content


def test_async_durability_does_not_wait_and_still_records(tmp_path):
    db = tmp_path / "s.duckdb"

    async def scenario(recorder):
        f = flow_with_identity()
        await recorder.request(f)
        f.response = tflow.tresp()
        await recorder.response(f)

    run(db, scenario, durability="async")
    assert query(db, "SELECT count(*), min(forwarded) FROM calls") == [(1, True)]
    assert query(db, "SELECT count(*) FROM pending") == [(0,)]  # async writes no pending row


def test_async_durability_builds_no_pending_record_but_assigns_the_session_at_the_request(tmp_path):
    db = tmp_path / "s.duckdb"
    built: list[bool] = []

    class Counting(Recorder):
        def _record(self, flow, final, *args, **kwargs):
            built.append(final)
            return super()._record(flow, final, *args, **kwargs)

    async def main():
        recorder = Counting()
        with taddons.context(recorder) as tctx:
            tctx.configure(recorder, toolgate_db=str(db), toolgate_durability="async")
            try:
                f = flow_with_identity()
                await recorder.request(f)
                assert built == []  # nothing is written at the request under async
                assert f.metadata["toolgate.recorded"] == "request"
                session = f.metadata["toolgate.session_id"]  # as under audit: at the request
                f.response = tflow.tresp()
                await recorder.response(f)
                assert built == [True]
                return session
            finally:
                recorder.done()
                recorder_writer_join(recorder)

    session = asyncio.run(main())
    assert query(db, "SELECT session_id, forwarded FROM calls") == [(session, True)]


def test_flows_loaded_from_a_file_are_not_recorded(tmp_path):
    db = tmp_path / "s.duckdb"

    async def scenario(recorder):
        f = flow_with_identity(resp=True)
        f.live = False
        await recorder.request(f)
        await recorder.response(f)
        return f

    f = run(db, scenario)
    assert "toolgate.recorded" not in f.metadata
    assert not db.exists()  # nothing was even opened


@pytest.mark.parametrize("header, expected", [
    ("Mcp-Session-Id", "mcp-abc"), ("X-Toolgate-Session", "mcp-abc")])
def test_a_named_session_is_used(tmp_path, header, expected):
    db = tmp_path / "s.duckdb"

    async def scenario(recorder):
        f = flow_with_identity(resp=True)
        f.request.headers[header] = "mcp-abc"
        await recorder.request(f)
        await recorder.response(f)

    run(db, scenario)
    assert query(db, "SELECT session_id FROM calls") == [(expected,)]


def test_an_initialize_answer_names_the_session(tmp_path):
    db = tmp_path / "s.duckdb"

    async def scenario(recorder):
        f = flow_with_identity(resp=True)
        f.response.headers["Mcp-Session-Id"] = "from-server"
        await recorder.request(f)
        await recorder.response(f)

    run(db, scenario)
    assert query(db, "SELECT session_id FROM calls") == [("from-server",)]


def test_the_admin_query_runs_the_api_on_the_live_store(tmp_path):
    db = tmp_path / "s.duckdb"

    async def scenario(recorder):
        f = flow_with_identity(resp=True)
        await recorder.request(f)
        await recorder.response(f)
        return await asyncio.wrap_future(recorder.query("/api/calls", {"subject": "alice"}))

    status, body = run(db, scenario)
    assert status == 200 and body["count"] == 1 and body["calls"][0]["subject"] == "alice"


def test_stored_headers_are_the_policys_record_versions(tmp_path):
    """Header values the policy let through are stored as its record versions (redacted); a
    repeated header keeps its order, and the values the record version lacks are not stored.
    A header changed after the policy (an echoed credential scrubbed) is stored `[REDACTED]`."""
    import json

    db = tmp_path / "s.duckdb"

    async def scenario(recorder):
        f = flow_with_identity()
        f.request.headers["X-Reply-To"] = "jane@example.com"
        f.metadata["toolgate.record_request_headers"] = {
            "x-reply-to": {"sent": ["jane@example.com"], "stored": ["[REDACTED:email]"]}}
        await recorder.request(f)
        f.response = tflow.tresp()
        f.response.headers.add("X-Card", "4111 1111 1111 1111")
        f.response.headers.add("X-Card", "5555 5555 5555 4444")
        f.response.headers.add("X-Card", "gone")
        f.response.headers.add("X-Debug", "key=[REDACTED] for jane@example.com")
        f.metadata["toolgate.record_response_headers"] = {
            "x-card": {"sent": ["4111 1111 1111 1111", "5555 5555 5555 4444", "gone"],
                       "stored": ["[REDACTED:credit_card]", "[REDACTED:credit_card]"]},
            "x-debug": {"sent": ["key=s3cr3t-vaulted for jane@example.com"],
                        "stored": ["key=s3cr3t-vaulted for [REDACTED:email]"]}}
        await recorder.response(f)

    run(db, scenario)
    [(request_headers, response_headers)] = query(
        db, "SELECT request_headers, response_headers FROM calls")
    assert ["X-Reply-To", "[REDACTED:email]"] in json.loads(request_headers)
    stored = json.loads(response_headers)
    assert [v for k, v in stored if k == "X-Card"] == [
        "[REDACTED:credit_card]", "[REDACTED:credit_card]"]
    assert ["X-Debug", "[REDACTED]"] in stored
    assert "jane@example.com" not in request_headers + response_headers
    assert "4111" not in response_headers and "s3cr3t" not in response_headers


@pytest.mark.parametrize("value", ["lots", "-1", "0", "12 parsecs"])
def test_a_journal_limit_that_is_not_a_size_is_refused_at_start(tmp_path, value):
    from mitmproxy import exceptions

    recorder = Recorder()
    with taddons.context(recorder) as tctx:
        with pytest.raises(exceptions.OptionsError, match="toolgate_journal_max"):
            tctx.configure(recorder, toolgate_db=str(tmp_path / "s.duckdb"),
                           toolgate_journal_max=value)


def test_the_journal_limit_reaches_the_writer(tmp_path):
    async def scenario(recorder):
        return recorder._writer().journal_max

    async def main():
        recorder = Recorder()
        with taddons.context(recorder) as tctx:
            tctx.configure(recorder, toolgate_db=str(tmp_path / "s.duckdb"),
                           toolgate_journal_max="3MiB")
            try:
                return await scenario(recorder)
            finally:
                recorder.done()
                recorder_writer_join(recorder)

    assert asyncio.run(main()) == 3 << 20


def test_a_call_before_the_store_is_open_is_refused_and_not_let_through(tmp_path, monkeypatch):
    """The journal of the last run still being applied (here: never done): after a short wait
    the call is answered 503 `unavailable`, never let through unrecorded."""
    from toolgate.addons.recording import addon as recording_addon
    from toolgate.sessions.writer import Writer

    monkeypatch.setattr(recording_addon, "READY_WAIT", 0.2)
    monkeypatch.setattr(Writer, "ready", property(lambda self: False))

    async def scenario(recorder):
        f = flow_with_identity()
        await recorder.request(f)
        return f

    f = run(tmp_path / "s.duckdb", scenario)
    assert f.response.status_code == 503
    assert f.metadata["toolgate.refused"] == "unavailable"
    assert f.metadata.get("toolgate.recorded") is None  # not marked as let through
