"""The one writer: the threads that own the store's journal and its DuckDB connection.

Everything that changes the store goes through `Writer`: the request of a call let through
under audit durability (`submit_request`, a `pending` row), a call held for approval
(`submit_held`, a `pending` row marked held), a finished call (`submit_call`: its
`calls` row and its findings, in one transaction), an approval decision (`record_approval`).
Each returns a `concurrent.futures.Future`, resolved on the writer's thread that kept the record;
the event loop awaits it (the recorder through `addons.recording.waiters`, one wake-up for a
group of records; others with `asyncio.wrap_future`) and never touches the files itself.

Two threads, in a line. The journal thread takes what was submitted, makes each record's
values (checked against the columns: once acknowledged, a record must fit the store), and,
for records submitted under audit durability (`journaled`), appends them to the write-ahead
journal beside the store (`sessions.journal`) in one synchronous write: their futures resolve
once it returned, all the records that arrived while the last write ran sharing it (group
commit). Then it hands every record, in that order, to the store thread, which inserts them into
DuckDB as Arrow tables in large transactions (at most one every `commit_interval`), with the
journal's position in the same transaction (`journal_applied`), and resolves the futures of
records that were not journaled (async durability) once they are committed. The hash chain is
computed there, in journal order. Reads (`run_query`) wait until DuckDB has every record
accepted before they were asked.

At start the journal is checked (a torn last record is cut off, damage elsewhere stops the
writer: `fatal`), the records DuckDB lacks are applied before anything new, and then calls
interrupted by a crash are recovered (`pending` rows without a `calls` row). If DuckDB cannot be
written, journaled records wait (and are retried) while the journal takes new ones, up to
`journal_max` bytes of backlog; records that are not journaled fail with the commit. Once DuckDB
has every record of a journal that has grown past `ROTATE_AT`, the journal is replaced by an
empty one of a new generation.

A gateway that runs as a node of a fleet opens its store with its node id (`node_id`): every
`calls`, `approvals` and `findings` row it commits carries it, and the chained rows' hashes cover
it. A store is one node's chain: one that already carries another node's id is not written (the
writer is `fatal`); one written without a node id takes it from its next row on, and a writer
given none goes on with the id the store has.

A `pending` row whose call has its `calls` row is a leftover: such rows are deleted in bulk
(`ANSWERED_BATCH` at a time, or when the writer is idle) rather than by every commit, where the
statement would add to the latency each caller waits for; recovery ignores them.
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

from toolgate.rules.toolpins import PinEvent
from toolgate.sessions import hashchain
from toolgate.sessions.hashchain import ChainHead, Position
from toolgate.sessions.journal import HEADER_SIZE, Journal, JournalCorrupt, journal_path
from toolgate.sessions.journal import scan as journal_scan
from toolgate.sessions.migrations import migrate
from toolgate.sessions.records import (
    INTERRUPTED, ApprovalRecord, CallRecord, FindingRow, finding_table,
)
from toolgate.sessions.schema import (
    APPROVAL_CONTENT,
    BLOB,
    BOOL,
    CALL_CONTENT,
    CHAIN_PREFIX,
    CHAINED,
    FINDING_COLUMNS,
    INT,
    NODE_ID,
    PENDING_COLUMNS,
    STR,
    STRLIST,
    TOOL_EVENT_COLUMNS,
    TS,
    arrow_schema,
    chained_columns,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

MAX_BATCH = 4096
# The journal may hold this many bytes the store has not taken yet; past it, calls are refused
# (503 `unrecorded`) rather than the disk filled (the option `toolgate_journal_max`).
JOURNAL_MAX = 256 << 20
# How long a read waits for the records accepted before it to be in DuckDB.
READ_WAIT = 10.0
ANSWERED_BATCH = 512  # leftover pending rows deleted together
# Never resolve an unknown table name to a Python variable of the caller (DuckDB's default).
CONNECTION_CONFIG = {"python_enable_replacements": False}
# The writer's store works with one DuckDB thread. Its work is appends and their checkpoints,
# background work that parallelism hardly speeds up, while DuckDB's thread pool (one thread per
# core by default) takes cores from the event loop. With 256 KB answers, the gateway's CPU per
# call was 5-40% lower (median 17%) with one thread in all 8 pairs of four alternating
# `scripts/bench.py` runs, throughput better in 6 of them; 1 KB calls showed no difference.
# It is SET after connecting, not given as a connection option: DuckDB refuses a second
# connection to the same file in the process with options that differ, and the setting belongs
# to the database, so the gateway's in-process readers share it. The CLI, a process of its
# own, keeps DuckDB's default.
WRITER_THREADS = 1

# One writer per store per process: a new writer for the same file (a script reload) waits
# for the previous one to finish; pending rows are recovered once per process.
_registry_lock = threading.Lock()
_latest: dict[str, "Writer"] = {}
_recovered: set[str] = set()


class RecordingError(Exception):
    """The store did not record: under audit durability the call must not go on."""


class NodeMismatch(Exception):
    """The store holds another node's chain: writing this node's rows into it would mix two."""


@dataclass(slots=True)
class _Item:
    kind: str  # request | call | approval | tool
    record: Any
    future: Future
    durable: bool = False  # made durable in the journal before its future resolves


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


def tool_event_values(event: PinEvent) -> dict[str, Any]:
    return {
        "server": event.server, "tool": event.tool, "kind": event.kind,
        "fingerprint": event.fingerprint,
        "definition": None if event.definition is None else orjson.dumps(
            event.definition, option=orjson.OPT_SORT_KEYS).decode(),
        "seen_at": _us(event.at), "call_id": event.call_id, "reviewer": event.reviewer,
        "reason": event.reason,
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


# What each kind of value may be in the store's columns (checked before a record is journaled:
# once acknowledged, a record must go into DuckDB, so it cannot be refused there).
_KINDS: dict[str, tuple[type, ...]] = {
    STR: (str,), TS: (int,), INT: (int,), BOOL: (bool,), BLOB: (bytes,), STRLIST: (list,),
}
_NOT_NULL = {"call_id", "started_at", "server", "tool", "kind", "seen_at"}
_MAY_BE_NULL = {"tool": {"call_id"}}  # a pin forgotten by a reviewer belongs to no call
_COLUMNS = {"request": PENDING_COLUMNS, "call": CALL_CONTENT, "approval": APPROVAL_CONTENT,
            "tool": TOOL_EVENT_COLUMNS}
# Blobs travel beside a record's JSON in the journal.
_BLOBS = ("request_body", "response_body")
# The journal is replaced by an empty one once all of it is in the store and it is this big.
ROTATE_AT = 8 << 20
# How long the applier waits before it tries the store again after a failed commit.
RETRY_AFTER = 0.5


def _check(kind: str, values: dict[str, Any]) -> None:
    for name, column in _COLUMNS[kind]:
        value = values[name]
        if value is None:
            if name in _NOT_NULL and name not in _MAY_BE_NULL.get(kind, ()):
                raise ValueError(f"{name} is missing")
        elif not isinstance(value, _KINDS[column]) or (column == INT and isinstance(value, bool)):
            raise ValueError(f"{name} is a {type(value).__name__}, not a {column}")
        elif column == STRLIST and not all(isinstance(v, str) for v in value):
            raise ValueError(f"{name} holds something other than strings")


@dataclass(slots=True)
class _Entry:
    """A record in the store's terms, on its way through the journal to DuckDB."""

    kind: str  # request | call | approval | tool
    values: dict[str, Any]
    findings: Any = None  # a call's FindingTable
    future: Future | None = None  # resolved once in DuckDB: a record that is not journaled
    position: int = 0  # the journal's end just past this record (0: not journaled)

    def encode(self) -> list[bytes]:
        """The journal's payload, in parts: u32 length, JSON (the values, the blobs' lengths),
        the blobs (bodies, findings) as they are, never copied together."""
        values = dict(self.values)
        blobs = [values.pop(name, None) for name in _BLOBS]
        if self.findings is not None:
            blobs.append(self.findings.encode())
        head = orjson.dumps({"kind": self.kind, "values": values,
                             "blobs": [None if b is None else len(b) for b in blobs]})
        return [len(head).to_bytes(4, "little"), head, *(b for b in blobs if b)]

    @classmethod
    def decode(cls, payload: bytes) -> "_Entry":
        size = int.from_bytes(payload[:4], "little")
        head = orjson.loads(payload[4:4 + size])
        kind, values, at = head["kind"], head["values"], 4 + size
        blobs: list[bytes | None] = []
        for length in head["blobs"]:
            blobs.append(None if length is None else payload[at:at + length])
            at += length or 0
        if kind not in _COLUMNS or at != len(payload) or len(blobs) != len(_BLOBS) + (kind == "call"):
            raise ValueError("not a journal record of the session store")
        if kind in ("request", "call"):
            values["request_body"] = blobs[0]
        if kind == "call":
            values["response_body"] = blobs[1]
        findings = finding_table([blobs[len(_BLOBS)]]) if kind == "call" else None
        _check(kind, values)
        return cls(kind, values, findings)


def _drain(source: queue.SimpleQueue, add: Callable[[Any], None],
           room: Callable[[], bool]) -> bool:
    """`add` what `source` holds now, while there is `room`; whether it held `_STOP`."""
    while room():
        try:
            item = source.get_nowait()
        except queue.Empty:
            return False
        if item is _STOP:
            return True
        add(item)
    return False


def _resolve(futures: list[Future]) -> None:
    """Tell the waiters of a group of records that they are kept, on the thread that kept them
    (the recorder's `Waiters` wakes the event loop once for the whole group: a thread of its
    own for this cost every record a thread switch more)."""
    for future in futures:
        future.set_result(None)


def _entry(item: _Item) -> _Entry:
    rec = item.record
    findings = None
    if item.kind == "request":
        values = call_values(rec)
        values["findings"] = rec.findings.objects()
        values["held_at"] = _us(rec.held_at)
    elif item.kind == "call":
        values, findings = call_values(rec), rec.findings
    elif item.kind == "approval":
        values = approval_values(rec)
    elif item.kind == "tool":
        values = tool_event_values(rec)
    else:
        raise ValueError(f"unknown record kind {item.kind!r}")
    if item.kind == "request":  # a pending row has some of a call's columns
        values = {name: values[name] for name, _ in PENDING_COLUMNS}
    _check(item.kind, values)
    return _Entry(item.kind, values, findings)


class Writer:
    """Owns the store at `path`; see the module's docstring."""

    def __init__(self, path: str | os.PathLike[str], max_batch: int = MAX_BATCH,
                 journal: bool = True, journal_max: int = JOURNAL_MAX,
                 node_id: str | None = None) -> None:
        self.path = str(Path(path).expanduser().resolve())
        self.node_id = node_id  # the fleet node whose chain this store is (None: no fleet)
        self.head_file = hashchain.head_path(self.path)
        self.max_batch = max_batch
        # The shortest time between two commits to DuckDB. Records nobody waits for (async)
        # are cheaper in fewer, larger transactions: DuckDB spends about a millisecond of CPU
        # per statement. Under audit the journal makes them durable, and commits are spaced
        # the same way.
        self.commit_interval = 0.0
        # Whether records submitted now are made durable in the journal before their futures
        # resolve (audit), or only once in DuckDB (async). Without a journal, always the latter.
        self.journaled = journal
        self.journal_max = journal_max
        self._journal = Journal(journal_path(self.path)) if journal else None
        self._last_commit = 0.0
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._apply: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="toolgate-writer")
        self._applier = threading.Thread(target=self._run_applier, name="toolgate-store")
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
        self._checked = threading.Event()  # set once the journal was checked (see `fatal`)
        self._previous: Writer | None = None
        # The journal's records of the last run, still to be applied when the store opens.
        self._backlog: list[_Entry] = []
        self._generation = ""
        # How far the records handed to the applier, and those in DuckDB, go (for readers).
        self._progress = threading.Condition()
        self._handed = 0
        self._applied = 0
        self._applied_position = 0  # the journal's offset up to which DuckDB has every record
        # The journal is damaged, or the store is another node's: the gateway must not go on.
        self.fatal: str | None = None
        self.healthy: bool | None = None  # None until records were first accepted or refused
        self.last_error: str | None = None
        self.store_healthy: bool | None = None  # DuckDB itself (behind the journal)
        self.store_error: str | None = None
        # Counts, and the seconds spent in DuckDB commits and journal appends (for /metrics).
        self.stats = {"commits": 0, "calls": 0, "requests": 0, "approvals": 0, "failures": 0,
                      "journaled": 0, "journal_appends": 0, "commit_seconds": 0.0,
                      "journal_seconds": 0.0}

    # -- the API (any thread) ---------------------------------------------------------------

    def start(self) -> "Writer":
        with _registry_lock:
            self._previous = _latest.get(self.path)
            _latest[self.path] = self
        if self._previous is not None:
            self._previous.stop()
        self._thread.start()
        return self

    def wait_checked(self, timeout: float | None = None) -> bool:
        """Wait until the journal was read and checked (a quick pass over the file; `fatal` is
        set then if it is damaged): what the gateway's start waits for."""
        return self._checked.wait(timeout)

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until the store was first tried (and the journal of the last run applied, if
        it could be): what the gateway waits for before it lets calls through."""
        return self._first_open.wait(timeout)

    @property
    def ready(self) -> bool:
        return self._first_open.is_set()

    def backlog(self) -> dict[str, Any]:
        """What is accepted but not yet in DuckDB: records, and journal bytes."""
        with self._progress:
            records = self._handed - self._applied
        journal = self._journal
        return {
            "records": records + len(self._backlog),
            "journal_bytes": 0 if journal is None else max(0, journal.end - self._applied_position),
            "journal_max": self.journal_max if journal is not None else None,
        }

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

    def submit_tool_event(self, event: PinEvent) -> Future:
        """Record a pinned MCP tool definition, a change of one, or a reviewer's decision."""
        return self._submit("tool", event)

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

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every record accepted so far is in DuckDB (False: not within `timeout`)."""
        with self._progress:
            target = self._handed
            return self._progress.wait_for(lambda: self._applied >= target, timeout)

    def run_query(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> "Future[T]":
        """Run `fn(connection)` on a reading connection to the store, off the caller's thread
        and off the writer's: a long query never holds up a commit. It sees every record
        accepted before it was asked, journaled ones included (it waits for them to be in
        DuckDB, `READ_WAIT` at most)."""
        with self._progress:
            target = self._handed
        return self._queries.submit(self._query, fn, target)

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

    # -- the journal thread: accepts records --------------------------------------------------

    def _submit(self, kind: str, record: Any) -> Future:
        future: Future = Future()
        if self._stopping:
            future.set_exception(RecordingError("the session store is closing"))
        else:
            self._queue.put(_Item(kind, record, future, self.journaled))
        return future

    def _run(self) -> None:
        if self._previous is not None:
            self._previous.join()
            self._pending |= self._previous._pending  # its calls in flight are recorded here
            self._previous = None
        stop = False
        try:
            if self._journal is not None:
                try:
                    self._open_journal()
                except (JournalCorrupt, OSError) as exc:
                    message = str(exc) if isinstance(exc, JournalCorrupt) else (
                        f"cannot open the journal {self._journal.path}: {exc}")
                    self.fatal = self.last_error = message
                    self.healthy = False
                    logger.error("toolgate: the gateway cannot start: %s", message)
                    return
                finally:
                    self._checked.set()
                self.healthy = True  # records can be made durable
            self._checked.set()
            self._applier.start()
            while not stop:
                try:
                    first = self._queue.get(timeout=1.0)
                except queue.Empty:
                    # A program that forgot to stop its writer must still be able to exit.
                    stop = not threading.main_thread().is_alive()
                    self._maybe_rotate()
                    continue
                batch: list[_Item] = []
                if first is _STOP:
                    stop = True
                else:
                    batch.append(first)
                    stop = _drain(self._queue, batch.append,
                                  lambda: len(batch) < self.max_batch)
                if batch:
                    self._accept(batch)
        except BaseException:  # noqa: BLE001 - the thread must not die with futures unresolved
            logger.exception("toolgate: the session store's writer failed")
        finally:
            self._fail_queued(self._queue, RecordingError("the session store's writer stopped"))
            if self._applier.is_alive():
                self._apply.put(_STOP)
                self._applier.join()
            else:
                self._checked.set()
                self._first_open.set()
            if self._journal is not None:
                self._journal.close()

    def _open_journal(self) -> None:
        """Check the journal; keep the records of the last run for the applier (it applies
        those DuckDB lacks before anything new); cut off a torn last record."""
        assert self._journal is not None
        found = journal_scan(self._journal.path)
        if found is not None and found.torn_at is not None:
            logger.warning(
                "toolgate: the journal %s ends in a record cut off while it was written (at byte "
                "%d, %d bytes); it was never acknowledged: dropped", self._journal.path,
                found.torn_at, self._journal.path.stat().st_size - found.torn_at)
        self._journal.open(found)
        if found is not None and found.records:
            start = HEADER_SIZE
            for number, (payload, end) in enumerate(found.records, 1):
                try:
                    entry = _Entry.decode(payload)
                except (ValueError, KeyError, TypeError, orjson.JSONDecodeError) as exc:
                    raise JournalCorrupt(self._journal.path, start, f"record {number} passed "
                                         f"its checksum but is not a record of ours ({exc})")
                entry.position, start = end, end
                self._backlog.append(entry)
        self._generation = self._journal.generation

    def _accept(self, batch: list[_Item]) -> None:
        self._maybe_rotate()  # before appending: the store may have every record so far
        # A future whose waiter gave up (cancelled) before we got to it is not recorded.
        items = [i for i in batch if i.future.set_running_or_notify_cancel()]
        entries: list[_Entry] = []
        durable: list[tuple[_Item, _Entry]] = []
        for item in items:
            try:  # a record that cannot be stored fails alone, not its whole batch
                entry = _entry(item)
            except Exception as exc:  # noqa: BLE001
                item.future.set_exception(RecordingError(f"the record is not valid: {exc!r}"))
                continue
            if item.durable and self._journal is not None:
                durable.append((item, entry))
            else:
                entry.future = item.future
            entries.append(entry)
        refused: set[int] = set()
        if durable:
            refused = self._journal_append(durable)
            if refused:
                entries = [e for e in entries if id(e) not in refused]
        if not entries:
            return
        with self._progress:
            self._handed += len(entries)
        self._apply.put(entries)
        if durable:  # only now: a reader asked after this sees them (see run_query)
            _resolve([item.future for item, entry in durable if id(entry) not in refused])

    def _journal_append(self, durable: list[tuple[_Item, _Entry]]) -> set[int]:
        """Append the records to the journal, durably; those refused (journal full, disk
        full) have their futures failed: ids of their entries."""
        journal = self._journal
        assert journal is not None
        backlog = journal.end - self._applied_position
        if backlog > self.journal_max:
            message = (f"the journal {journal.path} holds {backlog} bytes the session store has "
                       f"not taken yet (toolgate_journal_max: {self.journal_max}); "
                       f"{self.store_error or 'the store is behind'}")
            self._refuse(durable, message)
            return {id(entry) for _, entry in durable}
        try:
            payloads = [entry.encode() for _, entry in durable]
        except Exception as exc:  # noqa: BLE001
            for item, _ in durable:
                item.future.set_exception(RecordingError(f"the record is not valid: {exc!r}"))
            return {id(entry) for _, entry in durable}
        began = time.perf_counter()
        try:
            ends = journal.append(payloads)
        except OSError as exc:
            self._refuse(durable, f"cannot append to the journal {journal.path}: {exc}")
            return {id(entry) for _, entry in durable}
        for (_, entry), end in zip(durable, ends):
            entry.position = end
        if self.healthy is False:
            logger.warning("toolgate: the session store %s records again", self.path)
        self.healthy, self.last_error = True, None
        self.stats["journaled"] += len(durable)
        self.stats["journal_appends"] += 1
        self.stats["journal_seconds"] += time.perf_counter() - began
        return set()

    def _refuse(self, durable: list[tuple[_Item, _Entry]], message: str) -> None:
        if self.healthy is not False or message != self.last_error:
            logger.error("toolgate: %s", message)
        self.healthy, self.last_error = False, message
        self.stats["failures"] += 1
        error = RecordingError(message)
        for item, _ in durable:
            item.future.set_exception(error)

    def _maybe_rotate(self) -> None:
        """Start an empty journal once every record of this one is in the store."""
        journal = self._journal
        if journal is None or journal.end < ROTATE_AT or self._applied_position < journal.end:
            return
        try:
            journal.start_new()
        except OSError as exc:
            logger.warning("toolgate: could not start a new journal %s: %s", journal.path, exc)
            return
        self._generation = journal.generation
        self._applied_position = journal.end

    @staticmethod
    def _fail_queued(source: queue.SimpleQueue, error: Exception) -> None:
        while True:
            try:
                item = source.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _Item) and item.future.set_running_or_notify_cancel():
                item.future.set_exception(error)

    # -- the applier thread: DuckDB -----------------------------------------------------------

    def _run_applier(self) -> None:
        stop = False
        waiting: list[_Entry] = []  # accepted, not yet in DuckDB (a failed commit keeps them)
        retry_at = 0.0
        try:
            self._first_store_open()
            while True:
                try:
                    first = self._apply.get(timeout=RETRY_AFTER if waiting else 1.0)
                except queue.Empty:
                    first = None
                    # A program that forgot to stop its writer must still be able to exit.
                    stop = stop or not threading.main_thread().is_alive()
                if first is _STOP:
                    stop = True
                elif first is not None:
                    waiting.extend(first)
                    wait = self._last_commit + self.commit_interval - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                if not stop:
                    stop = _drain(self._apply, waiting.extend, lambda: True)
                if waiting and (stop or time.monotonic() >= retry_at):
                    while waiting:
                        applied = self._store(waiting[: self.max_batch])
                        if not applied:
                            break
                        del waiting[:applied]
                    self._last_commit = time.monotonic()
                    if waiting:  # the store failed: keep what was journaled, try again later
                        waiting = [e for e in waiting if e.future is None or not e.future.done()]
                        retry_at = time.monotonic() + RETRY_AFTER
                idle = stop or self._apply.empty()
                if self._answered and (idle or len(self._answered) >= ANSWERED_BATCH):
                    self._forget_answered()
                if idle and not self._settled and self._con is not None:
                    try:
                        self._settle()
                    except Exception as exc:  # noqa: BLE001 - a full disk must not end the thread
                        # The unsettled head still accepts the store; a later commit settles it.
                        logger.warning("toolgate: could not settle the chain head file %s: %s",
                                       self.head_file, exc)
                if stop:
                    if waiting:
                        logger.error(
                            "toolgate: stopping with %d journaled record(s) not yet in the "
                            "session store; the next start applies them from the journal",
                            len(waiting))
                    break
        except BaseException:  # noqa: BLE001 - the thread must not die with futures unresolved
            logger.exception("toolgate: the session store's writer failed")
        finally:
            self._first_open.set()
            for entry in waiting:
                if entry.future is not None and not entry.future.done():
                    entry.future.set_exception(RecordingError("the session store's writer stopped"))
            self._close()

    @staticmethod
    def _journaled(entries: list[_Entry]) -> bool:
        return any(e.position for e in entries)

    def _first_store_open(self) -> None:
        """Open the store at once: the journal's records of the last run are applied and
        interrupted calls recovered before the first new record."""
        try:
            self._ensure_open()
            self._store_ok()
            if self.healthy is None:
                self.healthy = True
        except NodeMismatch as exc:  # a configuration error: no call goes on until it is fixed
            self.fatal = self.store_error = self.last_error = str(exc)
            self.healthy = self.store_healthy = False
            logger.error("toolgate: the gateway cannot record: %s", exc)
        except Exception as exc:  # noqa: BLE001 - retried by every batch
            # A warning, not an error: mitmdump exits on an error logged while it starts,
            # and a gateway that answers 503 until its store is back is the better outcome.
            message = f"cannot open the session store {self.path}: {exc}"
            self.store_healthy, self.store_error = False, message
            if self._journal is None:
                self.healthy, self.last_error = False, message
            logger.warning("toolgate: %s; %s", message,
                           "calls are journaled until it can be opened" if self._journal
                           else "calls are refused until it can be opened (toolgate_durability=audit)")
        finally:
            self._first_open.set()

    def _store(self, entries: list[_Entry]) -> int:
        """Commit `entries` to DuckDB in one transaction: how many were (all, or none)."""
        try:
            self._ensure_open()
        except Exception as exc:  # noqa: BLE001
            self._store_failed(entries, f"cannot open the session store {self.path}: {exc}")
            return 0
        try:
            self._commit(entries)
        except Exception as exc:  # noqa: BLE001
            self._store_failed(entries, f"cannot write to the session store {self.path}: {exc}")
            self._close()  # reopened (and the chain re-read) by the next batch
            return 0
        self._store_ok()
        with self._progress:
            self._applied += len(entries)
            position = max((e.position for e in entries), default=0)
            if position:
                self._applied_position = position
            self._progress.notify_all()
        _resolve([e.future for e in entries if e.future is not None])
        return len(entries)

    def _store_ok(self) -> None:
        if self.store_healthy is False:
            logger.warning("toolgate: the session store %s records again", self.path)
        self.store_healthy, self.store_error = True, None
        if self._journal is None:
            self.healthy, self.last_error = True, None

    def _store_failed(self, entries: list[_Entry], message: str) -> None:
        if self.store_healthy is not False or message != self.store_error:
            if self._journal is not None and self._journaled(entries):
                logger.error("toolgate: %s; %d journaled record(s) wait in %s", message,
                             len(entries), self._journal.path)
            else:
                logger.error("toolgate: %s", message)
        self.store_healthy, self.store_error = False, message
        self.stats["failures"] += 1
        error = RecordingError(message)
        unjournaled = [e for e in entries if e.future is not None]
        for entry in unjournaled:  # records nobody journaled are not kept: their waiters are told
            if not entry.future.done():
                entry.future.set_exception(error)
        if self._journal is None:
            self.healthy, self.last_error = False, message
        if unjournaled:
            with self._progress:
                self._applied += len(unjournaled)
                self._progress.notify_all()

    def _commit(self, entries: list[_Entry]) -> None:
        """Write `entries` in one transaction."""
        con = self._con
        assert con is not None
        pending = _Columns(PENDING_COLUMNS)
        calls = _Columns(chained_columns("calls"))
        findings = _FindingBatches()
        approvals = _Columns(chained_columns("approvals"))
        tools = _Columns(TOOL_EVENT_COLUMNS)
        positions = dict(self._positions)
        # A call whose final row is in this transaction needs no pending row (it would be
        # deleted again): under audit most calls end within one `commit_interval`.
        ended = {e.values["call_id"] for e in entries if e.kind == "call"}
        for entry in entries:
            if entry.kind == "request":
                if entry.values["call_id"] not in ended:
                    pending.add(entry.values)
            elif entry.kind == "call":
                positions["calls"] = self._add_call(entry, positions["calls"], calls, findings)
            elif entry.kind == "tool":
                tools.add(entry.values)
            else:
                positions["approvals"] = self._add_chained(
                    "approvals", entry.values, positions["approvals"], approvals, self.node_id)
        # The head file first: if we crash before the commit, it still accepts the store.
        hashchain.write_head(self.head_file, {
            table: ChainHead(self._positions[table], positions[table]) for table in CHAINED
        })
        self._settled = positions == self._positions
        batch = [(name, columns) for name, columns in (
            ("pending", pending), ("calls", calls), ("findings", findings),
            ("approvals", approvals), ("tool_events", tools)) if columns.rows]
        position = max((e.position for e in entries), default=0)
        began = time.perf_counter()
        try:
            con.execute("BEGIN TRANSACTION")
            for name, columns in batch:
                con.register(f"_batch_{name}", columns.table())
                if name == "pending":
                    con.execute(self._insert_statement(name, columns))
                else:
                    con.execute(self._insert_statement(name, columns, NODE_ID), [self.node_id])
            if position:
                con.execute("UPDATE journal_applied SET generation = ?, position = ?",
                            [self._generation, position])
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
        self.stats["commit_seconds"] += time.perf_counter() - began
        self.stats["requests"] += pending.rows
        self.stats["calls"] += calls.rows
        self.stats["approvals"] += approvals.rows

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
    def _insert_statement(table: str, columns: _Columns | _FindingBatches,
                          constant: str | None = None) -> str:
        """The INSERT of a batch; with `constant`, that column too, from the one parameter
        (the node id: the same for every row of the store)."""
        names = ", ".join(name for name, _ in columns.columns)
        if constant is None:
            return f"INSERT INTO {table} ({names}) SELECT {names} FROM _batch_{table}"
        return (f"INSERT INTO {table} ({names}, {constant}) SELECT {names}, ?::VARCHAR "
                f"FROM _batch_{table}")

    def _add_call(
        self, entry: _Entry, position: Position, calls: _Columns, findings: _FindingBatches
    ) -> Position:
        values = entry.values
        position = self._add_chained("calls", values, position, calls, self.node_id,
                                     findings_json=entry.findings.canonical())
        findings.add(values["call_id"], entry.findings)
        return position

    @staticmethod
    def _add_chained(
        table: str, values: dict[str, Any], position: Position, rows: _Columns,
        node_id: str | None, findings_json: bytes | None = None,
    ) -> Position:
        seq = position.seq + 1
        content = CHAINED[table]
        digest = hashchain.row_hash(
            position.hash,
            CHAIN_PREFIX + content,
            [seq, *(values[name] for name, _ in content)],
            findings_json,
            node_id,
        )
        rows.add({**values, "seq": seq, "prev_hash": position.hash, "hash": digest})
        return Position(seq, digest)

    # -- opening, recovering, closing ------------------------------------------------------

    def _ensure_open(self) -> None:
        if self._con is not None:
            return
        con = duckdb.connect(self.path, config=CONNECTION_CONFIG)
        try:
            con.execute(f"SET threads = {WRITER_THREADS}")
            migrate(con)
            self._check_node(con)
            self._positions = self._chain_positions(con)
            self._con = con
            if self._backlog:
                self._apply_backlog(con)
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

    def _check_node(self, con: duckdb.DuckDBPyConnection) -> None:
        """The store's node id (its chains' last rows') must be this writer's: a store is one
        node's chain. A writer given none goes on with the store's."""
        found = {row[0] for table in CHAINED for row in con.execute(
            f"SELECT {NODE_ID} FROM {table} ORDER BY seq DESC LIMIT 1").fetchall()} - {None}
        if self.node_id is None and len(found) == 1:
            self.node_id = found.pop()
        elif found - {self.node_id}:
            raise NodeMismatch(
                f"the session store {self.path} holds the chain of node "
                f"{', '.join(sorted(found))}, not of node {self.node_id or '(none)'}: set "
                f"toolgate_node={sorted(found)[0]}, or give this node its own toolgate_db")

    def _apply_backlog(self, con: duckdb.DuckDBPyConnection) -> None:
        """The journal's records of the last run that DuckDB does not have, in journal order."""
        row = con.execute("SELECT generation, position FROM journal_applied").fetchone()
        done = int(row[1]) if row and row[0] == self._generation else 0
        todo = [e for e in self._backlog if e.position > done]
        for start in range(0, len(todo), self.max_batch):
            self._commit(todo[start:start + self.max_batch])
        if todo:
            logger.warning("toolgate: applied %d record(s) from the journal %s to the session "
                           "store", len(todo), self._journal.path if self._journal else "?")
        self._applied_position = max((e.position for e in self._backlog), default=0)
        self._backlog = []

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
        self._pending.update(by_call)  # their pending rows go once they are recorded
        self._commit([_entry(item) for item in items])
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

    def _query(self, fn: Callable[[duckdb.DuckDBPyConnection], T], target: int = 0) -> T:
        self._first_open.wait(30)
        with self._progress:
            if not self._progress.wait_for(lambda: self._applied >= target, READ_WAIT):
                raise RecordingError(
                    f"the session store {self.path} is behind the journal "
                    f"({target - self._applied} record(s) not in it yet): "
                    f"{self.store_error or 'still applying'}")
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
