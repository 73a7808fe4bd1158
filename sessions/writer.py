"""The one writer: a thread that owns the store's DuckDB connection.

Everything that changes the store goes through `Writer`: the request of a call let through
under audit durability (`submit_request`, a `pending` row), a call held for approval
(`submit_held`, a `pending` row marked held), a finished call (`submit_call`: its
`calls` row and its findings, in one transaction), an approval decision (`record_approval`).
Each returns a `concurrent.futures.Future` that resolves once the transaction holding the
record has committed, and fails (with `RecordingError`) if it did not; the event loop awaits
it with `asyncio.wrap_future` and never touches DuckDB itself.

A `pending` row whose call has its `calls` row is a leftover: such rows are deleted in bulk
(`ANSWERED_BATCH` at a time, or when the writer is idle) rather than by every commit, where the
statement would add to the latency each caller waits for; recovery ignores them.

Records that arrive while a commit is running are committed together in the next one (group
commit), inserted as Arrow tables rather than row by row: one fsync serves many calls. With a
`commit_interval` (async durability: nobody waits), commits are spaced out to carry more.

If the store cannot be written (disk full, file unwritable, a broken connection) the batch
fails, the connection is dropped, and the next batch tries to open the store again: recording
resumes by itself once the file is writable.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import orjson
import pyarrow as pa

from toolgate.sessions import hashchain
from toolgate.sessions.hashchain import ChainHead, Position
from toolgate.sessions.migrations import migrate
from toolgate.sessions.records import INTERRUPTED, ApprovalRecord, CallRecord, FindingRow
from toolgate.sessions.schema import (
    CHAIN_PREFIX,
    CHAINED,
    FINDING_COLUMNS,
    PENDING_COLUMNS,
    arrow_schema,
    chained_columns,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

MAX_BATCH = 4096
ANSWERED_BATCH = 512  # leftover pending rows deleted together
# Never resolve an unknown table name to a Python variable of the caller (DuckDB's default).
CONNECTION_CONFIG = {"python_enable_replacements": False}

# One writer per store per process: a new writer for the same file (a script reload) waits
# for the previous one to finish; pending rows are recovered once per process.
_registry_lock = threading.Lock()
_latest: dict[str, "Writer"] = {}
_recovered: set[str] = set()


class RecordingError(Exception):
    """The store did not record: under audit durability the call must not go on."""


@dataclass(slots=True)
class _Item:
    kind: str  # request | call | approval
    record: Any
    future: Future


_STOP = object()


def _us(seconds: float | None) -> int | None:
    return None if seconds is None else int(round(seconds * 1_000_000))


def _headers_json(headers: Sequence[tuple[str, str]] | None) -> str | None:
    return None if headers is None else orjson.dumps([list(h) for h in headers]).decode()


def call_values(rec: CallRecord) -> dict[str, Any]:
    """A call record in the store's terms (CALL_CONTENT's columns)."""
    return {
        "call_id": rec.call_id,
        "session_id": rec.session_id,
        "started_at": _us(rec.started_at),
        "ended_at": _us(rec.ended_at),
        "client_addr": rec.client_addr,
        "subject": rec.subject,
        "issuer": rec.issuer,
        "token_id": rec.token_id,
        "groups": [str(g) for g in rec.groups],
        "protocol": rec.protocol,
        "function": rec.function,
        "method": rec.method,
        "url": rec.url,
        "request_headers": _headers_json(rec.request_headers),
        "request_body": rec.request_body,
        "status": None if rec.status is None else int(rec.status),
        "response_headers": _headers_json(rec.response_headers),
        "response_body": rec.response_body,
        "decision": rec.decision,
        "enforced": rec.enforced,
        "rules": [str(r) for r in rec.rules],
        "mode": rec.mode,
        "error": rec.error,
        "forwarded": bool(rec.forwarded),
    }


def approval_values(rec: ApprovalRecord) -> dict[str, Any]:
    return {
        "call_id": rec.call_id,
        "requested_at": _us(rec.requested_at),
        "decided_at": _us(rec.decided_at),
        "decision": rec.decision,
        "reviewer": rec.reviewer,
        "channel": rec.channel,
        "reason": rec.reason,
        "scope": rec.scope,
    }


class _Columns:
    """Rows gathered column by column, then handed to DuckDB as one Arrow table."""

    def __init__(self, columns: list[tuple[str, str]]) -> None:
        self.columns = columns
        self.data: dict[str, list[Any]] = {name: [] for name, _ in columns}
        self.rows = 0

    def add(self, values: dict[str, Any]) -> None:
        for name, _ in self.columns:
            self.data[name].append(values[name])
        self.rows += 1

    def table(self) -> pa.Table:
        return pa.table(self.data, schema=arrow_schema(self.columns))


class _FindingBatches:
    """Calls' findings for the `findings` table, each call's columns made by the native core
    as Arrow buffers (a large response has thousands of findings: no Python object per one)."""

    columns = FINDING_COLUMNS
    schema = arrow_schema(FINDING_COLUMNS)

    def __init__(self) -> None:
        self.batches: list[pa.RecordBatch] = []
        self.rows = 0

    def add(self, call_id: str, findings: Any) -> None:
        rows = len(findings)
        if not rows:
            return
        columns = [
            pa.Array.from_buffers(pa.string(), rows, [
                None if validity is None else pa.py_buffer(validity),
                pa.py_buffer(offsets), pa.py_buffer(data),
            ], null_count=nulls)
            for validity, offsets, data, nulls in findings.arrow(call_id)
        ]
        self.batches.append(pa.RecordBatch.from_arrays(columns, schema=self.schema))
        self.rows += rows

    def table(self) -> pa.Table:
        return pa.Table.from_batches(self.batches, schema=self.schema)


class Writer:
    """Owns the store at `path`; see the module's docstring."""

    def __init__(self, path: str | os.PathLike[str], max_batch: int = MAX_BATCH) -> None:
        self.path = str(Path(path).expanduser().resolve())
        self.head_file = hashchain.head_path(self.path)
        self.max_batch = max_batch
        # The shortest time between two commits. 0 under audit durability, where callers wait
        # for each commit; records nobody waits for (async) are cheaper in fewer, larger
        # transactions: DuckDB spends about a millisecond of CPU per statement.
        self.commit_interval = 0.0
        self._last_commit = 0.0
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="toolgate-writer")
        self._queries = ThreadPoolExecutor(1, thread_name_prefix="toolgate-query")
        self._con: duckdb.DuckDBPyConnection | None = None
        self._reader: duckdb.DuckDBPyConnection | None = None
        self._reader_lock = threading.Lock()
        self._positions: dict[str, Position] = {}
        self._settled = True
        self._answered: list[str] = []  # calls recorded whose pending rows are left over
        # Calls with a pending row in the store, written by this writer (or the one before it
        # in this process, or recovered): only their calls rows leave a row to delete. Under
        # async durability most calls have none, and the DELETE would cost a statement a commit.
        self._pending: set[str] = set()
        self._stopping = False
        self._first_open = threading.Event()  # set once the store was first tried
        self._resolved: queue.SimpleQueue[list[_Item] | None] = queue.SimpleQueue()
        self._resolver = threading.Thread(target=self._resolve, name="toolgate-writer-done",
                                          daemon=True)
        self._previous: Writer | None = None
        self.healthy: bool | None = None  # None until the store was first opened
        self.last_error: str | None = None
        self.stats = {"commits": 0, "calls": 0, "requests": 0, "approvals": 0, "failures": 0}

    # -- the API (any thread) ---------------------------------------------------------------

    def start(self) -> "Writer":
        with _registry_lock:
            self._previous = _latest.get(self.path)
            _latest[self.path] = self
        if self._previous is not None:
            self._previous.stop()
        self._resolver.start()
        self._thread.start()
        return self

    def submit_request(self, record: CallRecord) -> Future:
        """Record that `record`'s request is being let through (a `pending` row)."""
        return self._submit("request", record)

    def submit_held(self, record: CallRecord) -> Future:
        """Record that `record`'s call is held for approval since `record.held_at` (a `pending`
        row marked held): a gateway killed while it waits leaves a call that is recorded, at the
        next start, as interrupted and never forwarded, its approval expired."""
        if record.held_at is None:
            raise ValueError("a held call's record needs held_at")
        return self._submit("request", record)

    def submit_call(self, record: CallRecord) -> Future:
        """Record a finished call: its `calls` row and findings; its `pending` row goes."""
        return self._submit("call", record)

    def submit_approval(self, record: ApprovalRecord) -> Future:
        return self._submit("approval", record)

    def record_approval(
        self,
        call_id: str,
        requested_at: float | None,
        decided_at: float | None,
        decision: str,
        reviewer: str | None = None,
        channel: str | None = None,
        reason: str | None = None,
        scope: str | None = None,
    ) -> Future:
        """Record a reviewer's decision (approved, denied, expired) on a held call."""
        return self.submit_approval(
            ApprovalRecord(call_id, requested_at, decided_at, decision, reviewer, channel,
                           reason, scope)
        )

    def run_query(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> "Future[T]":
        """Run `fn(connection)` on a reading connection to the store, off the caller's thread
        and off the writer's: a long query never holds up a commit. It sees committed data."""
        return self._queries.submit(self._query, fn)

    def stop(self) -> None:
        """Commit what was submitted, then close the store (without waiting for it)."""
        if not self._stopping:
            self._stopping = True
            self._queue.put(_STOP)
            self._queries.shutdown(wait=False)

    def join(self, timeout: float | None = None) -> bool:
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    # -- the writer thread ------------------------------------------------------------------

    def _submit(self, kind: str, record: Any) -> Future:
        future: Future = Future()
        if self._stopping:
            future.set_exception(RecordingError("the session store is closing"))
        else:
            self._queue.put(_Item(kind, record, future))
        return future

    def _run(self) -> None:
        if self._previous is not None:
            self._previous.join()
            self._pending |= self._previous._pending  # its calls in flight are recorded here
            self._previous = None
        stop = False
        try:
            try:  # open at once: interrupted calls are recovered before the first new one
                self._ensure_open()
                self.healthy = True
            except Exception as exc:  # noqa: BLE001 - retried by every batch
                # A warning, not an error: mitmdump exits on an error logged while it starts,
                # and a gateway that answers 503 until its store is back is the better outcome.
                self.healthy = False
                self.last_error = f"cannot open the session store {self.path}: {exc}"
                logger.warning("toolgate: %s; calls are refused until it can be opened "
                               "(toolgate_durability=audit)", self.last_error)
            finally:
                self._first_open.set()
            while not stop:
                try:
                    first = self._queue.get(timeout=1.0)
                except queue.Empty:
                    # A program that forgot to stop its writer must still be able to exit.
                    stop = not threading.main_thread().is_alive()
                    continue
                batch: list[_Item] = []
                if first is _STOP:
                    stop = True
                else:
                    batch.append(first)
                    wait = self._last_commit + self.commit_interval - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                while len(batch) < self.max_batch and not stop:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is _STOP:
                        stop = True
                    else:
                        batch.append(item)
                if batch:
                    self._commit_batch(batch)
                    self._last_commit = time.monotonic()
                idle = self._queue.empty()
                if self._answered and (idle or len(self._answered) >= ANSWERED_BATCH):
                    self._forget_answered()
                if idle and not self._settled and self._con is not None:
                    try:
                        self._settle()
                    except Exception as exc:  # noqa: BLE001 - a full disk must not end the thread
                        # The unsettled head still accepts the store; a later commit settles it.
                        logger.warning("toolgate: could not settle the chain head file %s: %s",
                                       self.head_file, exc)
        except BaseException:  # noqa: BLE001 - the thread must not die with futures unresolved
            logger.exception("toolgate: the session store's writer failed")
        finally:
            self._first_open.set()
            self._fail_queued(RecordingError("the session store's writer stopped"))
            self._close()
            self._resolved.put(None)
            self._resolver.join()

    def _resolve(self) -> None:
        while (items := self._resolved.get()) is not None:
            for item in items:
                item.future.set_result(None)

    def _fail_queued(self, error: Exception) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _Item) and item.future.set_running_or_notify_cancel():
                item.future.set_exception(error)

    def _commit_batch(self, batch: list[_Item]) -> None:
        # A future whose waiter gave up (cancelled) before we got to it is not recorded.
        items = [i for i in batch if i.future.set_running_or_notify_cancel()]
        if not items:
            return
        try:
            self._ensure_open()
        except Exception as exc:  # noqa: BLE001
            self._failed(items, f"cannot open the session store {self.path}: {exc}")
            return
        try:
            done = self._commit(items)
        except Exception as exc:  # noqa: BLE001
            self._failed(items, f"cannot write to the session store {self.path}: {exc}")
            self._close()  # reopened (and the chain re-read) by the next batch
            return
        if self.healthy is False:
            logger.warning("toolgate: the session store %s records again", self.path)
        self.healthy, self.last_error = True, None  # before any waiter wakes up
        # Waking each waiter costs a syscall per future (asyncio's self-pipe): a helper
        # thread does it while this one starts the next commit.
        self._resolved.put(done)

    def _failed(self, items: Iterable[_Item], message: str) -> None:
        if self.healthy is not False or message != self.last_error:
            logger.error("toolgate: %s", message)
        self.healthy, self.last_error = False, message
        self.stats["failures"] += 1
        error = RecordingError(message)
        for item in items:
            if not item.future.done():
                item.future.set_exception(error)

    def _commit(self, items: list[_Item]) -> list[_Item]:
        """Write `items` in one transaction; the ones committed are returned (a record that
        cannot be stored has its future failed here and is left out)."""
        con = self._con
        assert con is not None
        pending = _Columns(PENDING_COLUMNS)
        calls = _Columns(chained_columns("calls"))
        findings = _FindingBatches()
        approvals = _Columns(chained_columns("approvals"))
        positions = dict(self._positions)
        done: list[_Item] = []
        for item in items:
            try:  # a record that cannot be stored fails alone, not its whole batch
                if item.kind == "request":
                    pending.add(self._pending_values(item.record))
                elif item.kind == "call":
                    positions["calls"] = self._add_call(item.record, positions["calls"],
                                                        calls, findings)
                elif item.kind == "approval":
                    positions["approvals"] = self._add_chained(
                        "approvals", approval_values(item.record), positions["approvals"],
                        approvals)
                else:
                    raise ValueError(f"unknown record kind {item.kind!r}")
            except Exception as exc:  # noqa: BLE001
                item.future.set_exception(RecordingError(f"the record is not valid: {exc!r}"))
                continue
            done.append(item)
        if not done:
            return done
        # The head file first: if we crash before the commit, it still accepts the store.
        hashchain.write_head(self.head_file, {
            table: ChainHead(self._positions[table], positions[table]) for table in CHAINED
        })
        self._settled = positions == self._positions
        batch = [(name, columns) for name, columns in (
            ("pending", pending), ("calls", calls), ("findings", findings),
            ("approvals", approvals)) if columns.rows]
        try:
            con.execute("BEGIN TRANSACTION")
            for name, columns in batch:
                con.register(f"_batch_{name}", columns.table())
                con.execute(self._insert_statement(name, columns))
            con.execute("COMMIT")
        except BaseException:
            try:
                con.execute("ROLLBACK")
            except Exception:  # noqa: BLE001 - the connection may be gone; it is dropped
                pass
            raise
        finally:
            for name, _ in batch:
                try:
                    con.unregister(f"_batch_{name}")
                except Exception:  # noqa: BLE001
                    pass
        self._positions = positions
        self._pending.update(pending.data["call_id"])
        answered = [call_id for call_id in calls.data["call_id"] if call_id in self._pending]
        self._pending.difference_update(answered)
        self._answered.extend(answered)
        self.stats["commits"] += 1
        self.stats["requests"] += pending.rows
        self.stats["calls"] += calls.rows
        self.stats["approvals"] += approvals.rows
        return done

    def _forget_answered(self) -> None:
        """Delete the pending rows of calls that have their `calls` row (see the module)."""
        answered, self._answered = self._answered, []
        if self._con is None:
            return  # recovery ignores them at the next open
        try:
            self._con.execute("DELETE FROM pending WHERE call_id IN (SELECT unnest(?))",
                              [answered])
        except Exception as exc:  # noqa: BLE001 - harmless leftovers; a full disk must not stop us
            logger.warning("toolgate: could not delete answered pending rows: %s", exc)

    @staticmethod
    def _insert_statement(table: str, columns: _Columns | _FindingBatches) -> str:
        names = ", ".join(name for name, _ in columns.columns)
        return f"INSERT INTO {table} ({names}) SELECT {names} FROM _batch_{table}"

    @staticmethod
    def _pending_values(rec: CallRecord) -> dict[str, Any]:
        values = call_values(rec)
        values["findings"] = rec.findings.objects()
        values["held_at"] = _us(rec.held_at)
        return values

    def _add_call(
        self, rec: CallRecord, position: Position, calls: _Columns, findings: _FindingBatches
    ) -> Position:
        values = call_values(rec)
        position = self._add_chained("calls", values, position, calls,
                                     findings_json=rec.findings.canonical())
        findings.add(rec.call_id, rec.findings)
        return position

    @staticmethod
    def _add_chained(
        table: str, values: dict[str, Any], position: Position, rows: _Columns,
        findings_json: bytes | None = None,
    ) -> Position:
        seq = position.seq + 1
        content = CHAINED[table]
        digest = hashchain.row_hash(
            position.hash,
            CHAIN_PREFIX + content,
            [seq, *(values[name] for name, _ in content)],
            findings_json,
        )
        rows.add({**values, "seq": seq, "prev_hash": position.hash, "hash": digest})
        return Position(seq, digest)

    # -- opening, recovering, closing ------------------------------------------------------

    def _ensure_open(self) -> None:
        if self._con is not None:
            return
        con = duckdb.connect(self.path, config=CONNECTION_CONFIG)
        try:
            migrate(con)
            self._positions = self._chain_positions(con)
            self._con = con
            if self.path not in _recovered:
                self._recover_pending(con)
                _recovered.add(self.path)
            self._settle()
            with self._reader_lock:
                self._reader = con.cursor()
        except BaseException:
            self._con = None
            con.close()
            raise

    def _chain_positions(self, con: duckdb.DuckDBPyConnection) -> dict[str, Position]:
        """Where each chain goes on: its last row, unless the head file shows rows were cut
        from its end (then from the head file's position, so the cut stays visible)."""
        try:
            heads = hashchain.read_head(self.head_file)
        except ValueError as exc:
            logger.error("toolgate: %s", exc)
            self._keep_evidence("unreadable")
            heads = None
        positions: dict[str, Position] = {}
        for table in CHAINED:
            row = con.execute(
                f"SELECT seq, hash FROM {table} ORDER BY seq DESC LIMIT 1"
            ).fetchone()
            tail = Position(int(row[0]), str(row[1])) if row else Position()
            head = (heads or {}).get(table)
            if head is None or head.accepts(tail):
                if head is None and heads is None and tail.seq:
                    logger.warning(
                        "toolgate: %s has no chain head file; starting one at %s row %d",
                        self.path, table, tail.seq,
                    )
                positions[table] = tail
            elif head.committed.seq > tail.seq:
                logger.error(
                    "toolgate: the session store %s has lost %s rows %d..%d from its end; "
                    "`toolgate sessions verify` reports it", self.path, table,
                    tail.seq + 1, head.committed.seq,
                )
                positions[table] = head.committed
            else:
                logger.error(
                    "toolgate: the session store %s does not end where its chain head says "
                    "(%s row %d, head %d): it was changed outside the gateway; keeping the head "
                    "file as evidence", self.path, table, tail.seq, head.committed.seq,
                )
                self._keep_evidence("mismatch")
                positions[table] = tail
        return positions

    def _keep_evidence(self, why: str) -> None:
        if self.head_file.exists():
            target = self.head_file.with_name(f"{self.head_file.name}.{why}-{int(time.time())}")
            shutil.copy2(self.head_file, target)

    def _recover_pending(self, con: duckdb.DuckDBPyConnection) -> None:
        """Calls let through before the gateway last stopped, whose answer was never
        recorded, become `interrupted` calls: nobody got an answer recorded as given. Calls
        that were held for approval and never let through become `interrupted` calls that were
        not forwarded, with an `expired` approval."""
        names = [name for name, _ in PENDING_COLUMNS]
        select = ", ".join(f"epoch_us({n})" if n in ("started_at", "held_at") else n
                           for n in names)
        rows = con.execute(
            f"SELECT {select} FROM pending ORDER BY started_at, call_id"
        ).fetchall()
        if not rows:
            return
        done = con.execute("SELECT DISTINCT call_id FROM calls WHERE call_id IN "
                           "(SELECT call_id FROM pending)").fetchall()
        finished = {r[0] for r in done}
        decided = {r[0] for r in con.execute(
            "SELECT DISTINCT call_id FROM approvals WHERE call_id IN "
            "(SELECT call_id FROM pending WHERE held_at IS NOT NULL)").fetchall()}
        # A call held, then approved, has two rows: its hold and its request let through.
        by_call: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            if row[0] not in finished:
                by_call.setdefault(row[0], []).append(dict(zip(names, row)))
        now = time.time()
        items: list[_Item] = []
        for versions in by_call.values():
            let_through = [v for v in versions if v["held_at"] is None]
            held = [v for v in versions if v["held_at"] is not None]
            items.append(_Item("call", _interrupted((let_through or held)[0],
                                                    forwarded=bool(let_through)), Future()))
            if held and held[0]["call_id"] not in decided:
                items.append(_Item("approval", ApprovalRecord(
                    held[0]["call_id"], held[0]["held_at"] / 1_000_000, now, "expired",
                    None, "gateway", "the gateway stopped while the call was held", "call",
                ), Future()))
        for item in items:
            item.future.set_running_or_notify_cancel()
        self._pending.update(by_call)  # their pending rows go once they are recorded
        self._commit(items)
        self._forget_answered()  # now, not when idle: the store opens with no leftovers
        if finished:  # already recorded: only the leftover pending rows go
            con.execute("DELETE FROM pending WHERE call_id IN (SELECT call_id FROM calls)")
        logger.warning(
            "toolgate: recorded %d call(s) interrupted when the gateway last stopped",
            len(by_call),
        )

    def _settle(self) -> None:
        hashchain.write_head(self.head_file, {
            table: ChainHead(pos, pos) for table, pos in self._positions.items()
        }, sync=False)
        self._settled = True

    def _query(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        self._first_open.wait(30)
        with self._reader_lock:
            if self._reader is None:
                raise RecordingError(
                    f"the session store {self.path} is not open: {self.last_error or 'starting'}"
                )
            return fn(self._reader)

    def _close(self) -> None:
        with self._reader_lock:
            if self._reader is not None:
                try:
                    self._reader.close()
                except Exception:  # noqa: BLE001
                    pass
                self._reader = None
        if self._con is not None:
            con, self._con = self._con, None
            try:
                con.close()
            except Exception:  # noqa: BLE001
                logger.exception("toolgate: closing the session store failed")


def _interrupted(row: dict[str, Any], forwarded: bool = True) -> CallRecord:
    started = row["started_at"]  # microseconds
    findings = [FindingRow.from_dict(f) for f in orjson.loads(row.get("findings") or "[]")]
    headers = [tuple(h) for h in orjson.loads(row["request_headers"] or "[]")]
    return CallRecord(
        call_id=row["call_id"],
        session_id=row["session_id"],
        started_at=started / 1_000_000,
        method=row["method"],
        url=row["url"],
        request_headers=headers,  # type: ignore[arg-type]
        request_body=row["request_body"],
        client_addr=row["client_addr"],
        subject=row["subject"],
        issuer=row["issuer"],
        token_id=row["token_id"],
        groups=list(row["groups"] or []),
        protocol=row["protocol"],
        function=row["function"],
        decision=INTERRUPTED,
        enforced=row["enforced"],
        rules=list(row["rules"] or []),
        mode=row["mode"],
        error=("the gateway stopped before this call's answer was recorded" if forwarded else
               "the gateway stopped while this call was held for approval; it was never "
               "forwarded"),
        forwarded=forwarded,
        findings=findings,
    )
