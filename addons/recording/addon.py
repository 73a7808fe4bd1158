"""The recorder: writes every call to the DuckDB session store, last in the chain.

Thin glue between mitmproxy's events and `sessions.Writer`, which owns the store on its own
thread. Under `toolgate_durability=audit` the recorder awaits the writer's word that a record
is durable (appended to the write-ahead journal beside the store and fsynced; DuckDB takes it
from there in the background: `sessions.journal`), never blocking the event loop, at two points:

- `request`: a call about to be forwarded first gets a durable `pending` record; if it cannot
  be recorded (disk full, journal full), the call is answered 503 `unrecorded`, never forwarded;
- `response` / `error`: the answer is released only once the call's `calls` record is durable;
  if that fails, the caller gets 503 `unrecorded` instead of the answer.

Until the store was opened at start (the journal's records of the last run applied), calls are
answered 503 `unavailable`. A gateway killed between the two leaves the `pending` record, which
the next start records as an `interrupted` call: no call that reached a backend or a caller goes
unrecorded. A call held for approval gets its `pending` record when it is held (`record_held`,
awaited by the approvals addon), so one that a killed gateway was holding is recorded too:
interrupted, never forwarded. Under `async` the same records are written to DuckDB in the
background, without the journal, and nothing waits.

In a fleet every row carries the node's id (`settings.node_id`). With `toolgate_archive`, the
node seals what its store has committed into the fleet's archive folder, as Parquet segments
(`sessions.archive`): once the store is open at start, every `toolgate_archive_interval`
seconds, and at shutdown; with `toolgate_control`, each segment is registered in PostgreSQL.
Sealing runs on the writer's reading thread and registration on a worker thread, never on the
event loop; a failure is logged, shown in `health()` and tried again at the next interval,
and never touches a call.

With `toolgate_ocsf_file`, each call's final record, once the writer has kept it, is also
handed to `sessions.ocsf_stream`, which appends its OCSF events to that file on its own thread.

For other addons and the admin server: `submit_approval(record)` records a reviewer's decision,
`query(path, params)` answers the admin API's session routes (see `sessions.api`), each
returning a concurrent Future to await with `asyncio.wrap_future`; nothing else reaches the
store's connection (no door for arbitrary SQL). The addon is found as
`ctx.master.addons.get("recorder")`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.parse
import weakref
from collections.abc import Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Optional

from mitmproxy import ctx, exceptions, http

from toolgate.addons import flowmeta, settings
from toolgate.addons.answers import Refusal, call_id_of, refuse
from toolgate.addons.failclosed.hooks import flow_hook
from toolgate.addons.headers import header_value
from toolgate.addons.recording.waiters import Waiters
from toolgate.rules.catalog import rest_name
from toolgate.rules.toolpins import PinEvent
from toolgate.sessions import api
from toolgate.sessions.query import tool_events as stored_tool_events
from toolgate.sessions.archive import Archive
from toolgate.sessions.ocsf_stream import OcsfStream
from toolgate.sessions.records import (
    REDACTED, ApprovalRecord, CallRecord, FindingTable, final_decision, finding_table,
)
from toolgate.sessions.sessionize import MCP_SESSION_HEADER, SESSION_HEADER, Sessionizer
from toolgate.sessions.writer import JOURNAL_MAX, RecordingError, Writer

logger = logging.getLogger(__name__)

DURABILITIES = ("audit", "async")
# Refusals that come after the policy read the request: its record version covers it.
CHECKED_REFUSALS = ("blocked", "denied", "approval_timeout", "approval_pending", "tool_changed",
                    "unrecorded")

DEFAULT_JOURNAL_MAX = "256MiB"
# How long the gateway's start waits for the journal's check (it reads the whole file), and
# how long a call waits for the store to be opened (its journal applied) before it gets 503.
JOURNAL_CHECK_WAIT = 60.0
READY_WAIT = 5.0

# How long a call waits for its record before it is refused as unrecorded.
COMMIT_TIMEOUT = 30.0

# Nobody waits for a DuckDB commit (async: nobody at all; audit: the journal made the records
# durable): one every 50 ms at most carries many calls (bench.py: the writer's DuckDB CPU
# otherwise takes a fifth of the gateway's throughput).
COMMIT_INTERVAL = 0.05

DEFAULT_ARCHIVE_INTERVAL = 60
# How long the shutdown waits for its last seal (and the registration of its segments).
LAST_SEAL_WAIT = 30.0
# The options that make this gateway a node of a fleet, or name it (`settings.node_id`).
FLEET_OPTIONS = {"toolgate_archive", "toolgate_node", "toolgate_control", "listen_port"}

UNRECORDED = (
    "the session store cannot record calls right now, so this call was not {what}; "
    "the gateway's log says why"
)


class Recorder:
    def __init__(self) -> None:
        self.writer: Writer | None = None
        self.db_path: str | None = None
        self.durability = "audit"
        self.journal_max = JOURNAL_MAX
        self.sessions = Sessionizer()
        self.node_id: str | None = None
        self.archive: Archive | None = None
        self.archive_interval = DEFAULT_ARCHIVE_INTERVAL
        self._sealing: asyncio.Task[None] | None = None
        self.ocsf: OcsfStream | None = None  # toolgate_ocsf_file's writer
        self._waiters: Waiters | None = None  # the event loop's side of the writer's futures

    def load(self, loader) -> None:
        loader.add_option("toolgate_db", str, "toolgate.duckdb", "The session store (DuckDB file).")
        loader.add_option(
            "toolgate_durability", str, "audit",
            "audit: nothing is forwarded or answered before its record is durable (in the "
            "write-ahead journal beside the store); async: calls are recorded in the background.",
            choices=DURABILITIES,
        )
        loader.add_option(
            "toolgate_journal_max", str, DEFAULT_JOURNAL_MAX,
            "audit: how much of the write-ahead journal may wait for the session store (a size: "
            "256MiB, 1GiB); past it, calls are refused 503 unrecorded rather than fill the disk.",
        )
        loader.add_option(
            "toolgate_archive", Optional[str], None,
            "A folder the fleet shares: this node seals what its store has committed into "
            "<folder>/<node id>/ as Parquet segments (and registers them in PostgreSQL when "
            "toolgate_control is set). Unset: no archive.",
        )
        loader.add_option(
            "toolgate_archive_interval", int, DEFAULT_ARCHIVE_INTERVAL,
            "Seconds between two seals into toolgate_archive.",
        )
        loader.add_option(
            "toolgate_ocsf_file", Optional[str], None,
            "A file to append every recorded call's OCSF events to, as JSON lines, for a log "
            "shipper (created 0600; reopened when rotated). Unset: no stream.",
        )

    def configure(self, updated: set[str]) -> None:
        if "toolgate_durability" in updated:
            try:
                self.durability = settings.check_choice(
                    "toolgate_durability", ctx.options.toolgate_durability, DURABILITIES
                )
            except ValueError as exc:
                raise exceptions.OptionsError(str(exc)) from None
            if self.writer is not None:
                self.writer.journaled = self.durability == "audit"
        if "toolgate_journal_max" in updated:
            try:
                self.journal_max = settings.parse_size(ctx.options.toolgate_journal_max)
            except ValueError as exc:
                raise exceptions.OptionsError(f"toolgate_journal_max: {exc}") from None
            if self.writer is not None:
                self.writer.journal_max = self.journal_max
        if "toolgate_archive_interval" in updated:
            if ctx.options.toolgate_archive_interval <= 0:
                raise exceptions.OptionsError(
                    "toolgate_archive_interval must be a positive number of seconds")
            self.archive_interval = ctx.options.toolgate_archive_interval
        if updated & FLEET_OPTIONS:
            self._configure_fleet()
        if "toolgate_ocsf_file" in updated:
            self._configure_ocsf(ctx.options.toolgate_ocsf_file)
        if "toolgate_db" in updated:
            path = Path(ctx.options.toolgate_db).expanduser().resolve()
            if not path.parent.is_dir():
                raise exceptions.OptionsError(
                    f"toolgate_db: the folder {path.parent} does not exist")
            if str(path) != self.db_path:
                self.db_path = str(path)
                if self.writer is not None:  # the next call opens the new store
                    self.writer.stop()
                    self.writer = None

    def _configure_ocsf(self, name: str | None) -> None:
        path = Path(name).expanduser().resolve() if name else None
        if path is not None and not path.parent.is_dir():
            raise exceptions.OptionsError(
                f"toolgate_ocsf_file: the folder {path.parent} does not exist")
        if self.ocsf is not None and self.ocsf.path == path:
            return
        if self.ocsf is not None:
            self.ocsf.close_after(None)
        self.ocsf = OcsfStream(path) if path is not None else None

    def _configure_fleet(self) -> None:
        control = getattr(ctx.options, "toolgate_control", None)  # the approvals addon's option
        try:
            node_id = settings.node_id(ctx.options)
            control = settings.control_url(control) if control else None
        except ValueError as exc:
            raise exceptions.OptionsError(str(exc)) from None
        root = None
        if ctx.options.toolgate_archive:
            root = Path(ctx.options.toolgate_archive).expanduser().resolve()
            if not root.is_dir():
                raise exceptions.OptionsError(
                    f"toolgate_archive: the folder {root} does not exist")
        if node_id != self.node_id:
            self.node_id = node_id
            if self.writer is not None:  # the next call opens the store as this node
                self.writer.stop()
                self.writer = None
        current = self.archive
        if root is None or node_id is None:
            self.archive = None
        elif current is None or (current.root, current.node_id, current.control) != (
                root, node_id, control):
            self.archive = Archive(root, node_id, control)

    def running(self) -> None:
        # Open the store before the first call: the journal is checked now (a quick pass over
        # the file; a damaged one stops the gateway), then its records are applied and
        # interrupted calls recovered on the writer's threads, the event loop going on: calls
        # that come sooner wait for it (`READY_WAIT`), then get 503 `unavailable`.
        writer = self._writer()
        writer.wait_checked(JOURNAL_CHECK_WAIT)
        if writer.fatal:  # a damaged journal: no gateway that could silently drop a record
            ctx.master.shutdown()
            return
        if self._sealing is None:
            self._sealing = asyncio.get_running_loop().create_task(self._seal_every())

    def done(self) -> None:
        if self._sealing is not None:
            self._sealing.cancel()
            self._sealing = None
        if self.writer is not None:
            if self.archive is not None:
                self._last_seal(self.writer, self.archive)
            # Commits what is queued (the process waits for it at exit). The stopped writer
            # stays: a call still in flight is refused (audit), not recorded in a new one.
            self.writer.stop()
        if self.ocsf is not None:  # after the writer's last records, off this thread
            self.ocsf.close_after(self.writer)
            self.ocsf = None

    # -- the API for the admin server and the approvals addon -------------------------------

    def submit_approval(self, record: ApprovalRecord) -> Future:
        """Record a decision on a held call; the Future resolves once it is committed."""
        return self._writer().submit_approval(record)

    def submit_tool_event(self, event: PinEvent) -> Future:
        """Record a pinned tool definition's event; the Future resolves once it is kept."""
        return self._writer().submit_tool_event(event)

    def tool_events(self) -> "Future[list[PinEvent]]":
        """Every pinned tool definition's event so far, for the tool pins to start from."""
        return self._writer().run_query(stored_tool_events)

    async def record_held(self, flow: http.HTTPFlow, held_at: float) -> bool:
        """Put a call held for approval on record before anyone sees it held. False if, under
        audit durability, the store did not commit it: then the call must not be held."""
        future = self._writer().submit_held(self._record(flow, final=False, held_at=held_at))
        return self.durability != "audit" or await self._committed(future)

    def query(self, path: str, params: Mapping[str, str]) -> "Future[tuple[int, dict[str, Any]]]":
        """Answer a GET on the admin API's session routes (`sessions.api`)."""
        writer = self._writer()
        return writer.run_query(lambda con: api.handle(con, path, params, writer.head_file))

    def health(self) -> dict[str, Any]:
        writer = self.writer
        return {
            "store": self.db_path,
            # this node's id; a writer given none goes on with its store's
            "node": self.node_id if writer is None else writer.node_id,
            "durability": self.durability,
            # whether calls can be recorded now (under audit: in the journal)
            "recording": None if writer is None else writer.healthy,
            "error": None if writer is None else writer.last_error,
            # the DuckDB file itself, which may be behind the journal
            "store_ok": None if writer is None else writer.store_healthy,
            "store_error": None if writer is None else writer.store_error,
            "backlog": None if writer is None else writer.backlog(),
            "stats": {} if writer is None else dict(writer.stats),
            "archive": None if self.archive is None else self.archive.health(),
            "ocsf": None if self.ocsf is None else self.ocsf.health(),
        }

    # -- the archive ------------------------------------------------------------------------

    async def _seal_every(self) -> None:
        """Seal at start (once the store is open: `run_query` waits for it), then every
        `toolgate_archive_interval` seconds, as long as an archive is set."""
        while True:
            archive = self.archive
            if archive is not None:
                try:
                    await asyncio.wrap_future(self._writer().run_query(archive.seal))
                except Exception as exc:  # noqa: BLE001 - the store not open, the writer stopping
                    archive.failed(str(exc) or repr(exc))
                await asyncio.to_thread(archive.register)
            await asyncio.sleep(self.archive_interval)

    @staticmethod
    def _last_seal(writer: Writer, archive: Archive) -> None:
        """At shutdown: seal what the store has committed, and register it, on the writer's
        reading thread (done() is synchronous: the shutdown waits, `LAST_SEAL_WAIT` at most).
        Calls still in flight are sealed by the next start."""
        def seal_and_register(con) -> None:
            archive.seal(con)
            archive.register()

        try:
            writer.run_query(seal_and_register).result(LAST_SEAL_WAIT)
        except Exception as exc:  # noqa: BLE001 - the shutdown goes on; the next start seals
            archive.failed(f"the last seal did not finish: {exc!r}")

    # -- hooks ------------------------------------------------------------------------------

    @flow_hook
    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or flow.error is not None:
            return  # answered by the gateway: recorded with its answer
        writer = self._writer()
        if not writer.ready:  # a store just (re)opened: its journal is being applied
            await asyncio.get_running_loop().run_in_executor(None, writer.wait_ready, READY_WAIT)
        if not writer.ready or writer.fatal:
            refuse(flow, Refusal("unavailable", writer.fatal or (
                "the gateway is applying its journal to the session store; try again shortly")))
            return
        if self.durability == "audit":
            record = self._record(flow, final=False)
            if not await self._committed(self._writer().submit_request(record)):
                refuse(flow, Refusal("unrecorded", UNRECORDED.format(what="forwarded")))
                return
        else:
            # Nothing is written before the call ends (async): its `pending` row is not built,
            # but its session is assigned now, as under audit, in the order calls arrive.
            self._session(flow, flow.metadata.get(flowmeta.IDENTITY) or {}, final=False)
        flow.metadata[flowmeta.RECORDED] = "request"

    @flow_hook
    async def response(self, flow: http.HTTPFlow) -> None:
        await self._finish(flow)

    @flow_hook
    async def error(self, flow: http.HTTPFlow) -> None:
        await self._finish(flow)

    async def _finish(self, flow: http.HTTPFlow) -> None:
        if flow.metadata.get(flowmeta.RECORDED) == "call":
            return
        forwarded = flow.metadata.get(flowmeta.RECORDED) == "request"
        flow.metadata[flowmeta.RECORDED] = "call"
        writer = self._writer()
        record = self._record(flow, final=True, forwarded=forwarded)
        future = writer.submit_call(record)
        if self.ocsf is not None:  # the SIEM's copy, once the store has kept the record
            self.ocsf.submit(record, future, writer.node_id)
        if self.durability != "audit":
            return
        if not await self._committed(future) and flow.response is not None and flow.error is None:
            # The answer is withheld: nobody may see a call that is not on record.
            if flow.metadata.get(flowmeta.REFUSED) != "unrecorded":
                refuse(flow, Refusal("unrecorded", UNRECORDED.format(what="answered")))

    # -- glue -------------------------------------------------------------------------------

    def _writer(self) -> Writer:
        if self.writer is None:
            self.writer = Writer(self.db_path or ctx.options.toolgate_db,
                                 journal_max=self.journal_max, node_id=self.node_id)
            self.writer.commit_interval = COMMIT_INTERVAL
            self.writer.journaled = self.durability == "audit"
            self.writer.start()
        return self.writer

    async def _committed(self, future: Future) -> bool:
        """Whether the writer made the record durable (False: it failed, or not within
        COMMIT_TIMEOUT)."""
        loop = asyncio.get_running_loop()
        if self._waiters is None or self._waiters.loop is not loop:
            self._waiters = Waiters(loop, COMMIT_TIMEOUT, (RecordingError,))
        return await self._waiters.wait(future)

    def _record(self, flow: http.HTTPFlow, final: bool, forwarded: bool = False,
                held_at: float | None = None) -> CallRecord:
        """The call as it stands: its request (as forwarded) and, if `final`, its outcome."""
        meta = flow.metadata
        identity = meta.get(flowmeta.IDENTITY) or {}
        policy = meta.get(flowmeta.DECISION) or {}
        refused = meta.get(flowmeta.REFUSED)
        request = flow.request
        findings = call_findings(flow)
        if not final:
            findings = findings.only("request")
        decision, enforced, rules, mode = final_decision(policy, refused if final else None,
                                               forwarded or not final)
        response = flow.response if final else None
        error = (refused or (flow.error.msg if flow.error else None)) if final else None
        # A buffered answer cut off by an error never reached the caller (mitmproxy answered
        # 502 instead): its status is not what the caller got. A stream's headers had left.
        released = response is not None and (flow.error is None or bool(response.stream))
        return CallRecord(
            call_id=call_id_of(flow),
            session_id=self._session(flow, identity, final),
            started_at=float(meta.get(flowmeta.STARTED) or request.timestamp_start),
            ended_at=time.time() if final else None,
            client_addr=_address(flow.client_conn.peername),
            subject=None if identity.get("anonymous") else identity.get("subject"),
            issuer=identity.get("issuer"),
            token_id=identity.get("token_id"),
            groups=list(identity.get("groups") or []),
            protocol=policy.get("protocol") or "http",
            function=_recorded_function(flow, policy.get("function")),
            method=request.method,
            url=_recorded_url(flow),
            request_headers=_headers(request.headers, decoded=flowmeta.RECORD_REQUEST in meta,
                                     record=meta.get(flowmeta.RECORD_REQUEST_HEADERS)),
            request_body=_recorded_body(meta, flowmeta.RECORD_REQUEST, request, refused),
            status=response.status_code if released else None,
            response_headers=(_headers(response.headers, decoded=flowmeta.RECORD_RESPONSE in meta,
                                       record=meta.get(flowmeta.RECORD_RESPONSE_HEADERS))
                              if response is not None else None),
            response_body=(_recorded_body(meta, flowmeta.RECORD_RESPONSE, response, refused)
                           if response is not None else None),
            decision=decision,
            enforced=enforced,
            rules=rules,
            mode=mode or getattr(ctx.options, "toolgate_mode", None),
            error=error,
            forwarded=forwarded,
            findings=findings,
            secret_headers=tuple(meta.get(flowmeta.INJECTED_HEADERS) or ()),
            held_at=held_at,
        )

    def _session(self, flow: http.HTTPFlow, identity: Mapping[str, Any], final: bool) -> str:
        headers = flow.request.headers
        mcp = header_value(headers, MCP_SESSION_HEADER)
        if not mcp and final and flow.response is not None:
            # the answer to `initialize`
            mcp = header_value(flow.response.headers, MCP_SESSION_HEADER)
        toolgate_session = flow.metadata.get(flowmeta.RECORD_SESSION) or header_value(
            headers, SESSION_HEADER)
        named = mcp or toolgate_session
        if not named and flowmeta.SESSION_ID in flow.metadata:
            return flow.metadata[flowmeta.SESSION_ID]
        subject = None if identity.get("anonymous") else identity.get("subject")
        caller = f"sub:{subject}" if subject else f"addr:{(flow.client_conn.peername or ('?',))[0]}"
        session_id = self.sessions.assign(
            caller, float(flow.metadata.get(flowmeta.STARTED) or time.time()),
            mcp, toolgate_session,
        )
        flow.metadata[flowmeta.SESSION_ID] = session_id
        return session_id


# A call's findings as a table, while its `flowmeta.FINDINGS` stay the same (see call_findings).
_TABLES: "weakref.WeakKeyDictionary[http.HTTPFlow, tuple[Any, int, FindingTable]]" = (
    weakref.WeakKeyDictionary())


def call_findings(flow: http.HTTPFlow) -> FindingTable:
    """The call's findings so far (`flowmeta.FINDINGS`) as one FindingTable, made once while
    they do not change: the recorder and the metrics both read the final ones, thousands of rows
    for a dense answer. Kept beside the flow, never in its metadata (a saved flow stays plain)."""
    items = flow.metadata.get(flowmeta.FINDINGS) or ()
    cached = _TABLES.get(flow)
    if cached is not None and cached[0] is items and cached[1] == len(items):
        return cached[2]
    table = finding_table(items)
    if isinstance(items, list):  # grows by extend(): same list, longer
        _TABLES[flow] = (items, len(items), table)
    return table


def _headers(headers: http.Headers, decoded: bool = False,
             record: Mapping[str, Any] | None = None) -> list[tuple[str, str]]:
    """The headers as stored; a body stored decoded loses its Content-Encoding. `record` holds
    the policy's record versions of some of them (every labelled value redacted), by lower-case
    name: {"sent": the values it left on the flow, "stored": what to store instead}. Where the
    flow's values are no longer those sent (an addon after the policy changed them), nothing
    of them is known to be clean: they are stored `[REDACTED]`."""
    stored = [(_text(k), _text(v)) for k, v in headers.fields
              if not (decoded and k.lower() == b"content-encoding")]
    if not record:
        return stored
    current: dict[str, list[str]] = {}
    for name, value in stored:
        current.setdefault(name.lower(), []).append(value)
    seen: dict[str, int] = {}
    kept = []
    for name, value in stored:
        key = name.lower()
        entry = record.get(key)
        if isinstance(entry, Mapping):
            index = seen[key] = seen.get(key, -1) + 1
            values = entry.get("stored") or []
            if current[key] != list(entry.get("sent") or []):
                value = REDACTED
            elif index < len(values):
                value = _text(str(values[index]).encode("utf-8", "surrogateescape"))
            else:
                continue
        kept.append((name, value))
    return kept


def _recorded_body(meta: Mapping[str, Any], key: str, message: http.Message,
                   refused: str | None) -> bytes | None:
    """A body as the store keeps it: the policy's record version (every labelled value
    redacted) when there is one; nothing for a request the gateway refused unread or could
    not inspect, since what it holds is unknown."""
    if key in meta and not (key == flowmeta.RECORD_RESPONSE and refused):
        return meta[key]
    if key == flowmeta.RECORD_REQUEST and refused and refused not in CHECKED_REFUSALS:
        return None
    return message.raw_content


def _recorded_url(flow: http.HTTPFlow) -> str:
    """The URL as the store keeps it: labelled values in its path and query redacted."""
    path = flow.metadata.get(flowmeta.RECORD_PATH)
    query = flow.metadata.get(flowmeta.RECORD_QUERY)
    if path is None and query is None:
        return flow.request.url
    parts = urllib.parse.urlsplit(flow.request.url)
    if path is not None:
        parts = parts._replace(path=path["stored"])
    if query is not None:
        parts = parts._replace(query=urllib.parse.urlencode(query, doseq=True))
    return parts.geturl()


def _recorded_function(flow: http.HTTPFlow, function: str | None) -> str:
    """The function as the store keeps it, a labelled value in its name redacted (the policy's
    `flowmeta.RECORD_FUNCTION`: a tool, or a call named by its method and path). A call the
    policy did not name is named by its method and path, as the policy would have."""
    if not function:
        path = flow.metadata.get(flowmeta.RECORD_PATH)
        function = rest_name(flow.request.method,
                             path["sent"] if path is not None else flow.request.path.split("?")[0])
    return flowmeta.shown_function(flow.metadata, function) or function


def _text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _address(peername: tuple | None) -> str | None:
    if not peername:
        return None
    host, port = peername[0], peername[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"

