"""The writer with its journal (audit durability): a record's future resolves once it is in the
journal, DuckDB takes it later in journal order, reads wait for it; a store that cannot be
written does not refuse records (until the journal's limit), and its backlog goes in once it
can; a restart applies what the last run journaled and nothing twice; an empty journal of a new
generation replaces one whose records are all in the store."""

from __future__ import annotations

import threading
import time

import pytest

from toolgate.scripts.harness import open_store
from toolgate.sessions import writer as writer_module
from toolgate.sessions.journal import journal_path, scan
from toolgate.sessions.verify import verify_store
from toolgate.sessions.writer import RecordingError
from storekit import make_call, query

PENDING = dict(status=None, response_body=None, response_headers=None, ended_at=None)


def in_store(w, sql: str):
    return w.run_query(lambda con: con.execute(sql).fetchall()).result(20)


def verified(db) -> None:
    with open_store(db) as con:
        report = verify_store(con)
    assert report["ok"] is True, report


def test_records_are_durable_in_the_journal_and_reads_see_them(open_writer, db):
    w = open_writer(journal=True)
    calls = [make_call() for _ in range(30)]
    futures = [w.submit_call(c) for c in calls]
    for f in futures:
        f.result(10)
    assert len(scan(journal_path(db)).records) == 30  # durable before DuckDB has them
    # A read asked now sees all of them, in the order they were journaled.
    assert [r[0] for r in in_store(w, "SELECT call_id FROM calls ORDER BY seq")] == [
        c.call_id for c in calls]
    assert w.stats["journaled"] == 30


def test_a_store_that_cannot_be_written_does_not_refuse_journaled_records(open_writer, db):
    db.mkdir()  # DuckDB cannot open a folder (even as root); the journal is beside it
    w = open_writer(journal=True)
    assert w.wait_ready(10)
    call = make_call(**PENDING)
    w.submit_request(call).result(10)
    done = make_call(call_id=call.call_id)
    w.submit_call(done).result(10)
    w.record_approval(call.call_id, 1.0, 2.0, "approved", "carol").result(10)
    assert w.healthy is True and w.store_healthy is False
    assert "cannot open the session store" in w.store_error
    assert w.backlog()["records"] == 3 and w.backlog()["journal_bytes"] > 0
    with pytest.raises(RecordingError, match="behind the journal"):
        w.run_query(lambda con: 1).result(writer_module.READ_WAIT + 10)

    db.rmdir()
    assert w.flush(20), "the backlog was not applied once the store could be written"
    assert w.store_healthy is True and w.backlog()["records"] == 0
    assert in_store(w, "SELECT call_id FROM calls") == [(call.call_id,)]
    assert in_store(w, "SELECT decision FROM approvals") == [("approved",)]
    w.stop()
    assert w.join(10)
    assert query(db, "SELECT count(*) FROM pending") == [(0,)]
    verified(db)


def test_a_restart_applies_what_the_last_run_journaled_and_nothing_twice(open_writer, db):
    first = open_writer(journal=True)
    early = make_call()
    first.submit_call(early).result(10)
    assert first.flush(10)
    first.stop()
    assert first.join(10)

    db.rename(db.with_name("aside.duckdb"))  # the store out of reach: records stay in the journal
    db.mkdir()
    second = open_writer(journal=True)
    let_through = make_call(**PENDING)
    second.submit_request(let_through).result(10)  # then the gateway dies before its answer
    finished = make_call()
    second.submit_request(make_call(call_id=finished.call_id, **PENDING)).result(10)
    second.submit_call(finished).result(10)
    second.stop()
    assert second.join(10)
    db.rmdir()
    db.with_name("aside.duckdb").rename(db)

    third = open_writer(journal=True)  # applies the journal, then recovers interrupted calls
    later = make_call()
    third.submit_call(later).result(10)
    rows = in_store(third, "SELECT call_id, decision FROM calls ORDER BY seq")
    assert [r[0] for r in rows] == [early.call_id, finished.call_id, let_through.call_id,
                                    later.call_id]
    assert dict(rows)[let_through.call_id] == "interrupted"
    third.stop()
    assert third.join(10)

    fourth = open_writer(journal=True)  # nothing of the journal is applied twice
    fourth.submit_call(make_call()).result(10)
    assert in_store(fourth, "SELECT count(*), count(DISTINCT call_id) FROM calls") == [(5, 5)]
    fourth.stop()
    assert fourth.join(10)
    assert query(db, "SELECT count(*) FROM pending") == [(0,)]
    verified(db)


def test_past_its_limit_the_journal_refuses_records(open_writer, db):
    db.mkdir()
    w = open_writer(journal=True, journal_max=2000)
    accepted, refused = 0, None
    for _ in range(50):
        try:
            w.submit_call(make_call()).result(10)
            accepted += 1
        except RecordingError as exc:
            refused = exc
            break
    assert refused is not None and "toolgate_journal_max" in str(refused)
    assert accepted >= 1 and w.healthy is False
    db.rmdir()
    assert w.flush(20)
    w.submit_call(make_call()).result(10)  # room again
    assert w.healthy is True
    assert in_store(w, "SELECT count(*) FROM calls") == [(accepted + 1,)]


def test_a_journal_whose_records_are_all_in_the_store_is_replaced(open_writer, db, monkeypatch):
    monkeypatch.setattr(writer_module, "ROTATE_AT", 4096)
    w = open_writer(journal=True)
    assert w.wait_ready(10)
    first = scan(journal_path(db)).generation
    for _ in range(40):
        w.submit_call(make_call()).result(10)
        w.flush(10)
    deadline = time.monotonic() + 10
    while scan(journal_path(db)).generation == first:
        w.submit_call(make_call()).result(10)
        assert time.monotonic() < deadline, "the journal was never replaced"
    w.stop()
    assert w.join(10)
    assert scan(journal_path(db)).end <= 4096 + 2048
    again = open_writer(journal=True)
    again.submit_call(make_call()).result(10)
    counts = in_store(again, "SELECT count(*), count(DISTINCT call_id) FROM calls")
    assert counts[0][0] == counts[0][1] >= 41
    again.stop()
    assert again.join(10)
    verified(db)


def test_concurrent_callers_share_fsyncs(open_writer, db):
    w = open_writer(journal=True)
    w.submit_call(make_call()).result(10)
    futures, lock = [], threading.Lock()

    def caller():
        for _ in range(25):
            f = w.submit_call(make_call())
            with lock:
                futures.append(f)
            f.result(10)

    threads = [threading.Thread(target=caller) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert w.flush(20)
    assert in_store(w, "SELECT count(*) FROM calls") == [(201,)]
    assert w.stats["commits"] < 201 / 4  # DuckDB takes them in large batches


def test_a_call_that_ends_within_one_commit_leaves_no_pending_row_to_delete(open_writer, db):
    w = open_writer(journal=True)
    w.commit_interval = 0.3  # both records of the call reach DuckDB in one transaction
    w.submit_call(make_call()).result(10)
    assert w.flush(10)
    call = make_call()
    w.submit_request(make_call(call_id=call.call_id, **PENDING)).result(10)
    w.submit_call(call).result(10)
    open_call = make_call(**PENDING)
    w.submit_request(open_call).result(10)  # still open: its pending row must be there
    assert w.flush(10)
    assert w.stats["requests"] == 1
    assert in_store(w, "SELECT call_id FROM pending") == [(open_call.call_id,)]
    assert in_store(w, f"SELECT count(*) FROM calls WHERE call_id = '{call.call_id}'") == [(1,)]
