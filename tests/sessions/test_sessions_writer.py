"""The writer: group commits, futures that resolve on commit, failures that fail only what
they must, recovery of calls interrupted by a crash, queries beside the writes."""

from __future__ import annotations

import errno
import threading
import time
from concurrent.futures import Future

import duckdb
import pytest

from toolgate.scripts.harness import open_store
from toolgate.sessions import hashchain
from toolgate.sessions.records import CallRecord
from toolgate.sessions.verify import verify_store
from toolgate.sessions.writer import RecordingError
from storekit import fill, make_call, query


def test_records_commit_and_futures_resolve(open_writer, db):
    w = open_writer()
    calls = fill(w, 5)
    rows = query(db, "SELECT call_id, seq, status, decision FROM calls ORDER BY seq")
    assert [r[0] for r in rows] == [c.call_id for c in calls]
    assert [r[1] for r in rows] == [1, 2, 3, 4, 5]
    assert query(db, "SELECT count(*) FROM findings") == [(5,)]
    assert query(db, "SELECT decision, reviewer FROM approvals") == [("approved", "bob")]


def test_a_future_resolves_only_once_its_transaction_committed(open_writer, db):
    w = open_writer()
    call = make_call()
    w.submit_call(call).result(10)
    # Committed means visible to another connection right away.
    seen = w.run_query(lambda con: con.execute(
        "SELECT count(*) FROM calls WHERE call_id = ?", [call.call_id]).fetchone()[0]).result(10)
    assert seen == 1


def test_the_writer_keeps_duckdb_to_one_thread(open_writer):
    # DuckDB's pool would otherwise take cores from the event loop (sessions/writer.py).
    w = open_writer()
    w.submit_call(make_call()).result(10)
    threads = w.run_query(lambda con: con.execute("SELECT current_setting('threads')").fetchone()[0])
    assert threads.result(10) == 1


def test_concurrent_submissions_are_grouped_into_few_commits(open_writer):
    w = open_writer()
    w.submit_call(make_call()).result(10)  # the store is open
    barrier = threading.Barrier(8)
    futures: list[Future] = []
    lock = threading.Lock()

    def producer():
        barrier.wait()
        for _ in range(50):
            f = w.submit_call(make_call())
            with lock:
                futures.append(f)

    threads = [threading.Thread(target=producer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for f in futures:
        f.result(10)
    assert w.stats["calls"] == 401
    assert w.stats["commits"] < 401 / 4  # group commit: many records per transaction


def test_request_then_call_leaves_no_pending_row(open_writer, db):
    w = open_writer()
    call = make_call()
    w.submit_request(make_call(call_id=call.call_id, status=None, response_body=None,
                               response_headers=None, ended_at=None)).result(10)
    assert w.run_query(lambda c: c.execute("SELECT call_id FROM pending").fetchall()
                       ).result(10) == [(call.call_id,)]
    w.submit_call(call).result(10)
    # The leftover row goes once the writer is idle (not in the commit, see sessions.writer).
    deadline = time.monotonic() + 10
    while w.run_query(lambda c: c.execute("SELECT count(*) FROM pending").fetchone()[0]
                      ).result(10):
        assert time.monotonic() < deadline, "the answered call's pending row stayed"
        time.sleep(0.02)


def wait_for_no_pending_row(w) -> None:
    deadline = time.monotonic() + 10
    while w.run_query(lambda c: c.execute("SELECT count(*) FROM pending").fetchone()[0]
                      ).result(10):
        assert time.monotonic() < deadline, "an answered call's pending row stayed"
        time.sleep(0.02)


def test_only_calls_with_a_pending_row_leave_one_to_delete(open_writer, db):
    w = open_writer()
    deleted: list[list[str]] = []
    forget = w._forget_answered

    def recorded_forget():
        deleted.append(list(w._answered))
        forget()

    w._forget_answered = recorded_forget  # before anything is committed
    unpending = make_call()  # async durability: the call's row comes alone
    w.submit_call(unpending).result(10)
    pending = make_call()
    w.submit_request(make_call(call_id=pending.call_id, status=None, response_body=None,
                               response_headers=None, ended_at=None)).result(10)
    w.submit_call(pending).result(10)
    wait_for_no_pending_row(w)
    ids = [call_id for batch in deleted for call_id in batch]
    assert pending.call_id in ids
    assert unpending.call_id not in ids  # no DELETE statement for a row that was never written


def test_a_reloaded_writer_deletes_the_pending_rows_of_the_calls_it_takes_over(open_writer, db):
    first = open_writer()
    call = make_call()
    first.submit_request(make_call(call_id=call.call_id, status=None, response_body=None,
                                   response_headers=None, ended_at=None)).result(10)
    second = open_writer(new_process=False)  # a script reload while the call is in flight
    second.submit_call(call).result(10)
    wait_for_no_pending_row(second)
    assert query(db, "SELECT count(*) FROM calls WHERE call_id = ?", [call.call_id]) == [(1,)]


def test_a_pending_row_left_for_a_recorded_call_is_not_an_interrupted_call(open_writer, db):
    w = open_writer()
    call = make_call()
    w.submit_request(call).result(10)
    w.submit_call(call).result(10)
    w.stop()
    assert w.join(10)
    # As if the gateway died after the commit, before the leftover row was deleted.
    with duckdb.connect(str(db)) as con:
        con.execute("DELETE FROM pending")
    w0 = open_writer()
    w0.submit_request(call).result(10)
    w0.stop()
    assert w0.join(10)
    assert query(db, "SELECT count(*) FROM pending") == [(1,)]

    w2 = open_writer()  # the gateway starts again
    w2.submit_call(make_call()).result(10)
    assert query(db, "SELECT call_id, decision FROM calls WHERE call_id = ?", [call.call_id]) \
        == [(call.call_id, "allow")]
    assert query(db, "SELECT count(*) FROM pending") == [(0,)]


def test_pending_calls_of_a_killed_gateway_are_recorded_as_interrupted(open_writer, db):
    w = open_writer()
    kept = make_call()
    w.submit_call(kept).result(10)
    lost = make_call(subject="mallory", request_body=b'{"deploy": "prod"}')
    w.submit_request(lost).result(10)
    w.stop()
    assert w.join(10)
    assert query(db, "SELECT call_id FROM pending") == [(lost.call_id,)]

    w2 = open_writer()  # the gateway starts again
    w2.submit_call(make_call()).result(10)
    rows = query(db, "SELECT call_id, decision, subject, request_body, forwarded, status, seq "
                     "FROM calls ORDER BY seq")
    interrupted = [r for r in rows if r[0] == lost.call_id]
    assert interrupted == [(lost.call_id, "interrupted", "mallory", b'{"deploy": "prod"}',
                            True, None, 2)]
    assert query(db, "SELECT count(*) FROM pending") == [(0,)]


def test_a_bad_record_fails_alone(open_writer, db):
    w = open_writer()
    good = make_call()
    bad = make_call(status="not a status")
    futures = [w.submit_call(good), w.submit_call(bad)]
    futures[0].result(10)
    with pytest.raises(RecordingError, match="not valid"):
        futures[1].result(10)
    assert query(db, "SELECT call_id FROM calls") == [(good.call_id,)]


def test_an_unwritable_store_fails_records_until_it_can_be_written(open_writer, db):
    db.mkdir()  # DuckDB cannot open a folder (this works even as root)
    w = open_writer()
    with pytest.raises(RecordingError, match="cannot open the session store"):
        w.submit_call(make_call()).result(10)
    assert w.healthy is False and "cannot open" in w.last_error
    with pytest.raises(RecordingError):
        w.run_query(lambda con: 1).result(10)
    db.rmdir()
    call = make_call()
    w.submit_call(call).result(10)
    assert w.healthy is True
    assert w.run_query(lambda c: c.execute("SELECT call_id FROM calls").fetchall()
                       ).result(10) == [(call.call_id,)]


def test_a_failed_commit_drops_the_connection_and_the_next_batch_reopens(open_writer, db):
    w = open_writer()
    w.submit_call(make_call()).result(10)

    def break_the_store(con):  # as if the disk went away under the writer
        con.execute("DROP TABLE findings")

    w.run_query(break_the_store).result(10)
    with pytest.raises(RecordingError, match="cannot write"):
        w.submit_call(make_call()).result(10)
    assert w.healthy is False
    # Reopening does not bring the table back; the chain itself is intact up to here.
    assert query(db, "SELECT max(seq) FROM calls") == [(1,)]


def test_a_record_given_up_before_its_commit_is_not_written(open_writer, db, monkeypatch):
    w = open_writer()
    w.submit_call(make_call()).result(10)
    release, entered = threading.Event(), threading.Event()
    real_write_head = hashchain.write_head

    def slow_write_head(path, heads, **kwargs):  # holds the writer inside a commit
        entered.set()
        release.wait(10)
        real_write_head(path, heads, **kwargs)

    monkeypatch.setattr(hashchain, "write_head", slow_write_head)
    first = w.submit_call(make_call())
    assert entered.wait(10)
    given_up, kept = make_call(), make_call()
    f_given_up, f_kept = w.submit_call(given_up), w.submit_call(kept)
    assert f_given_up.cancel()  # e.g. the caller's wait timed out
    release.set()
    first.result(10)
    f_kept.result(10)
    ids = {r[0] for r in query(db, "SELECT call_id FROM calls")}
    assert kept.call_id in ids and given_up.call_id not in ids


def test_stopping_commits_what_was_submitted_and_refuses_the_rest(open_writer, db):
    w = open_writer()
    futures = [w.submit_call(make_call()) for _ in range(20)]
    w.stop()
    late = w.submit_call(make_call())
    assert w.join(10)
    for f in futures:
        f.result(0)
    with pytest.raises(RecordingError, match="closing"):
        late.result(0)
    assert query(db, "SELECT count(*) FROM calls") == [(20,)]
    heads = hashchain.read_head(hashchain.head_path(db))
    tail = query(db, "SELECT seq, hash FROM calls ORDER BY seq DESC LIMIT 1")[0]
    assert heads["calls"].committed == heads["calls"].intent == hashchain.Position(*tail)


def test_a_new_writer_for_the_same_store_waits_for_the_old_one(open_writer, db):
    first = open_writer()
    futures = [first.submit_call(make_call()) for _ in range(50)]
    second = open_writer(new_process=False)  # a script reload: same process, same file
    second.submit_call(make_call()).result(10)
    for f in futures:
        f.result(10)
    second.stop()
    second.join(10)
    seqs = [r[0] for r in query(db, "SELECT seq FROM calls ORDER BY seq")]
    assert seqs == list(range(1, 52))  # one chain, no fork


def test_records_are_redacted_when_made():
    call = CallRecord(
        call_id="x", started_at=0, method="GET", url="http://b/", request_body=None,
        request_headers=[("Authorization", "Bearer abc"), ("cookie", "a=b"),
                         ("X-Backend-Key", "vaulted"), ("Accept", "*/*")],
        response_headers=[("Set-Cookie", "sid=1"), ("X-Backend-Key", "echoed")],
        secret_headers=("x-backend-key",),
    )
    assert call.request_headers == [("Authorization", "[REDACTED]"), ("cookie", "[REDACTED]"),
                                    ("X-Backend-Key", "[REDACTED]"), ("Accept", "*/*")]
    assert call.response_headers == [("Set-Cookie", "[REDACTED]"),
                                     ("X-Backend-Key", "[REDACTED]")]


def test_a_forgotten_writer_does_not_keep_a_program_alive(tmp_path):
    import subprocess
    import sys

    script = (
        "from sessions.writer import Writer\n"
        "from storekit import make_call\n"
        f"w = Writer({str(tmp_path / 'x.duckdb')!r}).start()\n"
        "w.submit_call(make_call()).result(10)\n"
    )
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], timeout=30,
                          cwd=str(__import__("pathlib").Path(__file__).parent),
                          env={**__import__("os").environ,
                               "PYTHONPATH": str(__import__("pathlib").Path(__file__).parents[2])})
    assert done.returncode == 0
    assert time.monotonic() - started < 15
    assert query(tmp_path / "x.duckdb", "SELECT count(*) FROM calls") == [(1,)]


def test_calls_held_when_a_gateway_was_killed_are_recorded_as_never_forwarded(open_writer, db):
    w = open_writer()
    pending = dict(status=None, response_body=None, response_headers=None, ended_at=None)
    held_at = time.time()
    # Held, and still waiting when the gateway died.
    waiting = make_call(function="deploy.start", decision="approve", **pending)
    w.submit_held(make_call(call_id=waiting.call_id, held_at=held_at, **pending)).result(10)
    # Held, approved (its decision recorded), let through, and cut off before its answer.
    approved = make_call(**pending)
    w.submit_held(make_call(call_id=approved.call_id, held_at=held_at, **pending)).result(10)
    w.record_approval(approved.call_id, held_at, held_at + 1, "approved", "carol", "admin",
                      "ok", "call").result(10)
    w.submit_request(approved).result(10)
    # Let through, then held on its answer (a response-side approval), still waiting.
    answered = make_call(**pending)
    w.submit_request(answered).result(10)
    w.submit_held(make_call(call_id=answered.call_id, held_at=held_at, **pending)).result(10)
    with pytest.raises(ValueError, match="held_at"):
        w.submit_held(make_call())
    w.stop()
    assert w.join(10)

    open_writer().submit_call(make_call()).result(10)  # the gateway starts again
    calls = {r[0]: r[1:] for r in query(
        db, "SELECT call_id, decision, forwarded, status, error FROM calls")}
    assert len(calls) == 4  # each call once, however many pending rows it had
    assert calls[waiting.call_id][:3] == ("interrupted", False, None)
    assert "held for approval" in calls[waiting.call_id][3]
    assert calls[approved.call_id][:3] == ("interrupted", True, None)
    assert calls[answered.call_id][:3] == ("interrupted", True, None)
    approvals = query(db, "SELECT call_id, decision, channel, epoch(requested_at) "
                          "FROM approvals ORDER BY seq")
    assert [a[:3] for a in approvals] == [
        (approved.call_id, "approved", "admin"),
        *sorted([(waiting.call_id, "expired", "gateway"),
                 (answered.call_id, "expired", "gateway")]),
    ]
    assert abs(approvals[-1][3] - held_at) < 0.001
    assert query(db, "SELECT count(*) FROM pending") == [(0,)]


def test_a_head_file_that_cannot_be_settled_does_not_stop_the_writer(open_writer, db,
                                                                     monkeypatch):
    """The disk fills up just after a commit, while the head file is being settled: the
    writer goes on (and settles it later); it does not die with every later call unrecorded."""
    w = open_writer()
    w.submit_call(make_call()).result(10)
    real = hashchain.write_head
    settle_failures = []

    def full_disk(path, heads, sync=True):
        if not sync:  # settling, after the commit
            settle_failures.append(path)
            raise OSError(errno.EFBIG, "File too large")
        real(path, heads, sync)

    monkeypatch.setattr(hashchain, "write_head", full_disk)
    w.submit_call(make_call()).result(10)
    w.submit_call(make_call()).result(10)
    assert settle_failures
    monkeypatch.setattr(hashchain, "write_head", real)
    w.submit_call(make_call()).result(10)
    w.stop()
    assert w.join(10)
    assert query(db, "SELECT count(*) FROM calls") == [(4,)]
    with open_store(db) as con:
        assert verify_store(con)["ok"] is True


@pytest.mark.parametrize("interval", [0.0, 0.3])
def test_a_commit_interval_gathers_records_nobody_waits_for(open_writer, db, interval):
    w = open_writer()
    w.commit_interval = interval
    w.submit_call(make_call()).result(10)  # the first commit
    before = w.stats["commits"]
    futures = []
    for _ in range(20):  # one record every 10 ms: each would get its own commit
        futures.append(w.submit_call(make_call()))
        time.sleep(0.01)
    for f in futures:
        f.result(10)
    commits = w.stats["commits"] - before
    if interval:
        assert commits <= 2
    else:
        assert commits >= 10
    assert query(db, "SELECT count(*) FROM calls") == [(21,)]
