"""Helpers for the session store's tests: records, and reading a store directly."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

from toolgate.scripts import harness
from toolgate.sessions.records import CallRecord, FindingRow
from toolgate.sessions.writer import Writer

_ids = itertools.count(1)


def make_call(**fields) -> CallRecord:
    """A finished call, with sensible values for what a test does not care about."""
    n = next(_ids)
    now = time.time()
    values = dict(
        call_id=f"call-{n:04d}",
        started_at=now,
        ended_at=now + 0.01,
        method="GET",
        url=f"http://backend.test/customers/{n}",
        request_headers=[("Host", "backend.test"), ("Accept", "application/json")],
        request_body=b"",
        session_id="s-1",
        client_addr="127.0.0.1:50000",
        subject="alice",
        issuer="https://issuer.test",
        groups=["support"],
        protocol="rest",
        function="crm.get_customer",
        status=200,
        response_headers=[("Content-Type", "application/json")],
        response_body=b'{"id": %d, "ssn": "***-**-1234"}' % n,
        decision="allow",
        enforced="allow",
        rules=[],
        mode="enforce",
        forwarded=True,
        findings=[FindingRow("response", "$.ssn", "ssn", "restricted", "mask", "ab" * 32)],
    )
    values.update(fields)
    return CallRecord(**values)


def record_all(w: Writer, calls: list[CallRecord], timeout: float = 10) -> None:
    futures = [w.submit_call(c) for c in calls]
    for f in futures:
        f.result(timeout)


def fill(w: Writer, n: int = 5) -> list[CallRecord]:
    calls = [make_call() for _ in range(n)]
    record_all(w, calls)
    w.record_approval(calls[0].call_id, time.time() - 5, time.time(), "approved", "bob", "api",
                      "looks fine", "call").result(10)
    return calls


def query(path: Path, sql: str, params=()) -> list[tuple]:
    """Read the store directly (sharing the database with a writer of this process, so not
    read-only)."""
    return harness.query(path, sql, params, read_only=False)
