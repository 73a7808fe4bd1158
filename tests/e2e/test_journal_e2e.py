"""The write-ahead journal under audit durability, through a real mitmdump: a torn last record
is dropped and the gateway starts; a damaged record in the middle stops it at start, saying
where; a session store that cannot be written while the journal can does not stop calls (the
backlog is applied later, `/healthz` and `/metrics` say so); past `toolgate_journal_max` calls
are refused 503 `unrecorded`; reads through the admin API see every call answered."""

from __future__ import annotations

import json
import re

import httpx
import pytest
from click.testing import CliRunner

from harness import wait_until
from toolgate.scripts.cli import cli
from toolgate.scripts.harness import query
from toolgate.sessions.journal import HEADER_SIZE, RECORD_HEAD, journal_path, scan

pytestmark = pytest.mark.e2e


def bearer(issuer, sub="alice", groups=("sre",)):
    return {"Authorization": f"Bearer {issuer.keys.mint(sub, list(groups))}"}


def verify(db) -> None:
    verified = CliRunner().invoke(cli, ["sessions", "verify", "--db", str(db)])
    assert verified.exit_code == 0, verified.output


def calls(gateway, issuer, n: int) -> list[str]:
    ids = []
    with gateway.client() as http:
        for i in range(n):
            answer = http.post("/echo", json={"i": i}, headers=bearer(issuer))
            assert answer.status_code == 200, answer.text
            ids.append(answer.headers["X-Toolgate-Call-Id"])
    return ids


def health(gateway, issuer) -> dict:
    return httpx.get(gateway.admin_url + "/healthz", timeout=10).json()["store"]


def test_a_torn_last_record_is_dropped_and_the_gateway_starts(start_gateway, backend, issuer, tmp_path):
    db = tmp_path / "toolgate.duckdb"
    gateway = start_gateway()
    answered = calls(gateway, issuer, 5)
    gateway.proc.kill()
    gateway.proc.wait(10)
    journal = journal_path(db)
    before = scan(journal)
    assert before is not None and before.torn_at is None
    # A crash in the middle of an append: half a record (never acknowledged) at the end.
    with journal.open("ab") as f:
        f.write(RECORD_HEAD.pack(b"TGR1", 500, 12345) + b"x" * 100)

    again = start_gateway()
    again.wait_for(re.compile("cut off while it was written"))
    later = calls(again, issuer, 1)
    again.stop()
    recorded = [r[0] for r in query(db, "SELECT call_id FROM calls")]
    assert set(answered + later) <= set(recorded)
    assert len(recorded) == len(set(recorded)), "a call was recorded twice"
    verify(db)


def test_a_damaged_record_in_the_middle_stops_the_gateway_and_says_where(
    start_gateway, backend, issuer, tmp_path
):
    db = tmp_path / "toolgate.duckdb"
    gateway = start_gateway()
    calls(gateway, issuer, 3)
    gateway.proc.kill()
    gateway.proc.wait(10)
    journal = journal_path(db)
    data = bytearray(journal.read_bytes())
    assert len(scan(journal).records) >= 4, "the calls' records are not in the journal"
    where = HEADER_SIZE + RECORD_HEAD.size + 20  # inside the first record's payload
    data[where] ^= 0xFF
    journal.write_bytes(bytes(data))

    backend.reset()
    stopped = start_gateway(wait=False)
    assert stopped.proc.wait(30) != 0, "the gateway started on a damaged journal"
    assert f"damaged at byte {HEADER_SIZE}" in stopped.output and str(journal) in stopped.output
    assert backend.received == []
    assert journal.read_bytes() == bytes(data), "the damaged journal was changed"


def test_an_unwritable_store_behind_a_good_journal_does_not_stop_calls(
    start_gateway, backend, issuer, tmp_path
):
    db = tmp_path / "toolgate.duckdb"
    db.mkdir()  # DuckDB cannot open a folder (this works even as root); the journal is beside it
    gateway = start_gateway()
    answered = calls(gateway, issuer, 6)
    assert len(backend.received) == 6
    store = health(gateway, issuer)
    assert store["recording"] is True and store["store_ok"] is False
    assert "cannot open the session store" in store["store_error"]
    assert store["backlog"]["records"] >= 12 and store["backlog"]["journal_bytes"] > 0
    admin = bearer(issuer, "carol", ("sre-leads",))
    metrics = httpx.get(gateway.admin_url + "/metrics", headers=admin, timeout=10).text
    backlog = [line for line in metrics.splitlines() if line.startswith("toolgate_store_backlog_records ")]
    assert backlog and float(backlog[0].split()[1]) >= 12

    db.rmdir()  # the store can be written again: the backlog goes in, in journal order
    assert wait_until(lambda: health(gateway, issuer)["backlog"]["records"] == 0, timeout=20)
    assert health(gateway, issuer)["store_ok"] is True
    listed = httpx.get(gateway.admin_url + "/api/calls?limit=1000", headers=admin, timeout=10)
    assert listed.status_code == 200, listed.text
    assert set(answered) <= {c["call_id"] for c in listed.json()["calls"]}
    gateway.stop()
    recorded = [r[0] for r in query(db, "SELECT call_id FROM calls")]
    assert sorted(recorded) == sorted(answered)
    assert query(db, "SELECT count(*) FROM pending") == [(0,)]
    verify(db)


def test_past_its_limit_the_journal_refuses_calls_rather_than_fill_the_disk(
    start_gateway, backend, issuer, tmp_path
):
    db = tmp_path / "toolgate.duckdb"
    db.mkdir()  # the store is behind: nothing leaves the journal
    gateway = start_gateway("toolgate_journal_max=4KiB")
    refused = None
    with gateway.client() as http:
        for i in range(200):
            answer = http.post("/echo", json={"i": i, "pad": "p" * 200}, headers=bearer(issuer))
            if answer.status_code != 200:
                refused = answer
                break
    assert refused is not None, "the journal grew past its limit"
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "unrecorded"
    # The call whose answer could not be recorded was withheld; the next is not even forwarded.
    backend.reset()
    with gateway.client() as http:
        next_one = http.post("/echo", json={"after": True}, headers=bearer(issuer))
    assert next_one.status_code == 503 and next_one.json()["error"]["code"] == "unrecorded"
    assert backend.received == []
    assert "toolgate_journal_max" in health(gateway, issuer)["error"]
    metrics = httpx.get(gateway.admin_url + "/metrics", headers=bearer(issuer, "carol", ("sre-leads",)),
                        timeout=10).text
    assert "toolgate_store_recording 0" in metrics

    db.rmdir()  # the store catches up; calls are accepted again
    assert wait_until(lambda: health(gateway, issuer)["backlog"]["records"] == 0, timeout=20)
    answered = calls(gateway, issuer, 1)
    gateway.stop()
    again = start_gateway()  # the withheld call, forwarded and unanswered: interrupted
    again.stop()
    recorded = dict(query(db, "SELECT call_id, decision FROM calls"))
    assert recorded[refused.headers["X-Toolgate-Call-Id"]] == "interrupted"
    assert answered[0] in recorded  # (the refused one could not be recorded: it went nowhere)
    verify(db)


def test_the_cli_reads_calls_a_dead_gateway_left_only_in_its_journal(
    start_gateway, backend, issuer, tmp_path
):
    db = tmp_path / "toolgate.duckdb"
    db.mkdir()  # DuckDB takes nothing: every record stays in the journal
    gateway = start_gateway()
    answered = calls(gateway, issuer, 4)
    gateway.proc.kill()  # SIGKILL: no chance to apply anything
    gateway.proc.wait(10)
    db.rmdir()

    listed = CliRunner().invoke(cli, ["sessions", "list", "--db", str(db), "--json"])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.output[listed.output.index("{"):])["calls"]
    assert sorted(c["call_id"] for c in rows) == sorted(answered)
    assert {c["decision"] for c in rows} == {"allow"}
    verify(db)
