"""The fleet's control plane: held calls, decisions, grants and node heads in PostgreSQL.

Several gateways (nodes) behind one load balancer share what a reviewer must see as one system:
every held call of the fleet, the first decision on each, the grants in force. This module owns
that SQL (the session store's own SQL is DuckDB's, in the other modules here); it speaks plain
values, so it knows nothing of mitmproxy: the approvals addon turns its held calls into rows
and rows back into decisions.

- `toolgate_nodes`: one row per node: its admin URL, when it was last seen, its chain heads.
- `toolgate_holds`: one row per held call, `pending` until the first decision, which a
  conditional UPDATE makes: a second decision, from any node, finds no pending row and loses.
- `toolgate_grants`: time-boxed approvals, read by every node.
- `toolgate_tool_events`: pinned MCP tool definitions' events, from which every node's pins are
  rebuilt and kept up to date (a listing seen by one node pins for all).

Every change is announced on the `toolgate` channel (NOTIFY, sent on commit), so the node that
holds a call releases it as soon as anyone decides; nodes also poll, in case a notification was
lost with a connection. The schema is created at first use, under an advisory lock (nodes start
together).
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

logger = logging.getLogger(__name__)

CHANNEL = "toolgate"
CONNECT_TIMEOUT = 3  # seconds to reach PostgreSQL
STATEMENT_TIMEOUT = 5.0  # seconds any one round trip may take before the node gives up on it
NODE_ALIVE = 15.0  # seconds since its last heartbeat after which a node's holds are not listed

SCHEMA = """
CREATE TABLE IF NOT EXISTS toolgate_nodes (
    node_id    text PRIMARY KEY,
    admin_url  text,
    started_at timestamptz NOT NULL,
    last_seen  timestamptz NOT NULL,
    heads      jsonb                   -- {"calls": {"seq", "hash"}, "approvals": {...}}
);
CREATE TABLE IF NOT EXISTS toolgate_holds (
    held_id      text PRIMARY KEY,
    call_id      text NOT NULL,
    node_id      text NOT NULL,        -- the node whose caller waits
    requested_at timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    status       text NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'approved', 'denied', 'expired')),
    held         jsonb NOT NULL,       -- the held call as reviewers see it (masked)
    verdict      jsonb,                -- the first decision
    decided_by   text                  -- the node that took it
);
-- A `hold: return` call's decision is used by one retry of it, on whichever node it lands.
ALTER TABLE toolgate_holds ADD COLUMN IF NOT EXISTS consumed_at timestamptz;
CREATE INDEX IF NOT EXISTS toolgate_holds_status ON toolgate_holds (status, requested_at);
CREATE INDEX IF NOT EXISTS toolgate_holds_call ON toolgate_holds (call_id);
CREATE TABLE IF NOT EXISTS toolgate_grants (
    grant_id   text PRIMARY KEY,
    expires_at timestamptz NOT NULL,
    grant_data jsonb NOT NULL
);
-- Pinned MCP tool definitions, shared: every node's pin events, in the fleet's order.
CREATE TABLE IF NOT EXISTS toolgate_tool_events (
    id      bigserial PRIMARY KEY,
    node_id text NOT NULL,
    event   jsonb NOT NULL,
    at      timestamptz NOT NULL DEFAULT now()
);
"""

_HOLD = ("SELECT held_id, node_id, status, held, verdict, "
         "extract(epoch FROM requested_at)::float8 AS requested_at, "
         "extract(epoch FROM expires_at)::float8 AS expires_at FROM toolgate_holds")


class ControlUnavailable(Exception):
    """PostgreSQL cannot be reached or did not answer in time: what needs it fails closed."""


def redact_url(url: str) -> str:
    """The URL without its password, for logs, /healthz and error messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname or ''}"
    if parts.port:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def check_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("postgresql", "postgres") or not parts.hostname:
        raise ValueError(f"{redact_url(url)!r} is not a PostgreSQL URL: use "
                         "postgresql://USER:PASSWORD@HOST:PORT/DATABASE")
    return url.strip()


class ControlPlane:
    """One node's connection to the control plane: `call` runs one statement group on the
    command connection (serialized; reconnects on demand), `listen` delivers notifications
    to a callback until cancelled, reconnecting as PostgreSQL comes and goes."""

    def __init__(self, url: str, node_id: str) -> None:
        self.url, self.node_id = check_url(url), node_id
        self.connected = False
        self.last_error: str | None = None
        self._conn: psycopg.AsyncConnection | None = None
        self._lock = asyncio.Lock()
        self._schema_ready = False

    # -- plumbing ----------------------------------------------------------------------------

    async def _connect(self) -> psycopg.AsyncConnection:
        return await psycopg.AsyncConnection.connect(
            self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT, row_factory=dict_row,
            application_name=f"toolgate {self.node_id}",
        )

    async def _run(self, work: Callable[[psycopg.AsyncConnection], Awaitable[Any]]) -> Any:
        async with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = await asyncio.wait_for(self._connect(), STATEMENT_TIMEOUT)
                    if not self._schema_ready:
                        await _create_schema(self._conn)
                        self._schema_ready = True
                result = await asyncio.wait_for(work(self._conn), STATEMENT_TIMEOUT)
            except (psycopg.Error, OSError, TimeoutError) as exc:
                await self._drop()
                self.connected = False
                self.last_error = f"{type(exc).__name__}: {str(exc).strip() or 'timed out'}"
                raise ControlUnavailable(
                    f"the fleet's control plane ({redact_url(self.url)}) cannot be reached: "
                    f"{self.last_error}") from None
            self.connected, self.last_error = True, None
            return result

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close()
            except Exception:  # noqa: BLE001 - it is gone either way
                pass

    async def close(self) -> None:
        async with self._lock:
            await self._drop()
        self.connected = False

    async def listen(self, on_notice: Callable[[dict[str, Any]], None],
                     on_connect: Callable[[], Awaitable[None]] | None = None,
                     retry: float = 1.0) -> None:
        """Deliver every notification on CHANNEL to `on_notice` (as a dict), forever;
        `on_connect` runs after each (re)connection, to catch up on what was missed."""
        failing = False  # logged once per outage
        while True:
            conn: psycopg.AsyncConnection | None = None
            try:
                conn = await asyncio.wait_for(self._connect(), STATEMENT_TIMEOUT)
                await conn.execute(f"LISTEN {CHANNEL}")
                failing = False
                if on_connect is not None:
                    await on_connect()
                async for notice in conn.notifies():
                    try:
                        on_notice(json.loads(notice.payload))
                    except Exception:  # noqa: BLE001 - one bad notice must not stop the rest
                        logger.exception("toolgate: a control plane notification failed")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - reconnect whatever went wrong
                if not failing:
                    logger.warning("toolgate: listening to the control plane %s failed: %s; "
                                   "retrying every %ss", redact_url(self.url), exc, retry)
                failing = True
            finally:
                if conn is not None:
                    try:
                        await conn.close()
                    except Exception:  # noqa: BLE001
                        pass
            await asyncio.sleep(retry)

    # -- nodes -------------------------------------------------------------------------------

    async def join(self, admin_url: str | None, started_at: float) -> int:
        """Register this node; holds its previous run left pending are expired (their callers
        are gone with it). Returns how many."""
        async def work(conn: psycopg.AsyncConnection) -> int:
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO toolgate_nodes (node_id, admin_url, started_at, last_seen) "
                    "VALUES (%s, %s, to_timestamp(%s), now()) ON CONFLICT (node_id) DO UPDATE "
                    "SET admin_url = EXCLUDED.admin_url, started_at = EXCLUDED.started_at, "
                    "last_seen = now()", (self.node_id, admin_url, started_at))
                cur = await conn.execute(
                    "UPDATE toolgate_holds SET status = 'expired', decided_by = %s, verdict = "
                    "%s WHERE node_id = %s AND status = 'pending' AND requested_at < "
                    "to_timestamp(%s)",
                    (self.node_id, _jsonb(_gone_verdict(started_at)), self.node_id,
                     started_at))
                return cur.rowcount
        return await self._run(work)

    async def heartbeat(self, admin_url: str | None, heads: dict[str, Any] | None) -> None:
        async def work(conn: psycopg.AsyncConnection) -> None:
            await conn.execute(
                "UPDATE toolgate_nodes SET last_seen = now(), admin_url = %s, "
                "heads = coalesce(%s, heads) WHERE node_id = %s",
                (admin_url, _jsonb(heads) if heads is not None else None, self.node_id))
        await self._run(work)

    async def nodes(self) -> list[dict[str, Any]]:
        async def work(conn: psycopg.AsyncConnection) -> list[dict[str, Any]]:
            cur = await conn.execute(
                "SELECT node_id, admin_url, heads, extract(epoch FROM last_seen)::float8 AS "
                "last_seen, extract(epoch FROM now() - last_seen)::float8 AS age FROM "
                "toolgate_nodes ORDER BY node_id")
            return await cur.fetchall()
        return await self._run(work)

    # -- held calls --------------------------------------------------------------------------

    async def hold(self, state: dict[str, Any]) -> None:
        """Put a held call (its `HeldCall` state) where every node's reviewers see it."""
        async def work(conn: psycopg.AsyncConnection) -> None:
            await conn.execute(
                "INSERT INTO toolgate_holds (held_id, call_id, node_id, requested_at, "
                "expires_at, held) VALUES (%s, %s, %s, to_timestamp(%s), to_timestamp(%s), %s)",
                (state["id"], state["call_id"], self.node_id, state["requested_at"],
                 state["expires_at"], _jsonb(state)))
        await self._run(work)

    async def pending(self) -> list[dict[str, Any]]:
        """Every held call of the fleet that waits for a decision, oldest first: not decided,
        not past its timeout, and held by a node that is alive."""
        async def work(conn: psycopg.AsyncConnection) -> list[dict[str, Any]]:
            cur = await conn.execute(
                f"{_HOLD} h WHERE status = 'pending' AND expires_at > now() AND EXISTS ("
                "SELECT 1 FROM toolgate_nodes n WHERE n.node_id = h.node_id AND n.last_seen > "
                "now() - make_interval(secs => %s)) ORDER BY requested_at, held_id",
                (NODE_ALIVE,))
            return await cur.fetchall()
        return await self._run(work)

    async def get(self, key: str) -> dict[str, Any] | None:
        """A held call by its held id, or by the call id its caller was answered with."""
        async def work(conn: psycopg.AsyncConnection) -> dict[str, Any] | None:
            cur = await conn.execute(
                f"{_HOLD} WHERE held_id = %s OR call_id = %s ORDER BY (held_id = %s) DESC, "
                "requested_at DESC LIMIT 1", (key, key, key))
            return await cur.fetchone()
        return await self._run(work)

    async def decide(self, held_id: str, status: str, verdict: dict[str, Any],
                     grant: dict[str, Any] | None = None) -> dict[str, Any]:
        """Take the first decision on a held call. Returns the row as it is after: its
        `verdict` is ours if `won`, else the one that came first. A grant is stored, and
        announced, only with a decision that won."""
        async def work(conn: psycopg.AsyncConnection) -> dict[str, Any]:
            async with conn.transaction():
                cur = await conn.execute(
                    "UPDATE toolgate_holds SET status = %s, verdict = %s, decided_by = %s "
                    "WHERE held_id = %s AND status = 'pending' RETURNING node_id",
                    (status, _jsonb(verdict), self.node_id, held_id))
                won = await cur.fetchone()
                if won is None:
                    cur = await conn.execute(f"{_HOLD} WHERE held_id = %s", (held_id,))
                    return {"won": False, "row": await cur.fetchone()}
                if grant is not None:
                    await conn.execute(
                        "INSERT INTO toolgate_grants (grant_id, expires_at, grant_data) VALUES "
                        "(%s, to_timestamp(%s), %s)",
                        (grant["id"], grant["expires_at"], _jsonb(grant)))
                await _notify(conn, {"kind": "decided", "held_id": held_id,
                                     "node": won["node_id"], "by": self.node_id,
                                     "grant": grant["id"] if grant else None})
                return {"won": True, "row": {"node_id": won["node_id"], "verdict": verdict,
                                              "status": status}}
        return await self._run(work)

    async def decided(self, held_ids: list[str]) -> list[dict[str, Any]]:
        """Those of `held_ids` (this node's waiting calls) that someone decided: the polling
        fallback of the notifications."""
        if not held_ids:
            return []

        async def work(conn: psycopg.AsyncConnection) -> list[dict[str, Any]]:
            cur = await conn.execute(
                f"{_HOLD} WHERE held_id = ANY(%s) AND status <> 'pending'", (held_ids,))
            return await cur.fetchall()
        return await self._run(work)

    async def find_return(self, binding: tuple) -> dict[str, Any] | None:
        """The newest `hold: return` call of this binding (caller, function, rule, argument
        hash) whose decision no retry has used yet, pending or decided."""
        subject, function, rule, arguments = binding

        async def work(conn: psycopg.AsyncConnection) -> dict[str, Any] | None:
            cur = await conn.execute(
                f"{_HOLD} WHERE consumed_at IS NULL AND held->>'hold' = 'return' AND "
                "held->>'subject' = %s AND held->>'function' IS NOT DISTINCT FROM %s AND "
                "held->>'rule' IS NOT DISTINCT FROM %s AND held->>'argument_hash' = %s "
                "ORDER BY requested_at DESC LIMIT 1", (subject, function, rule, arguments))
            return await cur.fetchone()
        return await self._run(work)

    async def consume(self, held_id: str) -> bool:
        """Use up a `return` hold's decision for one retry; False if another retry did."""
        async def work(conn: psycopg.AsyncConnection) -> bool:
            cur = await conn.execute(
                "UPDATE toolgate_holds SET consumed_at = now() WHERE held_id = %s AND "
                "consumed_at IS NULL", (held_id,))
            return cur.rowcount == 1
        return await self._run(work)

    async def publish_tool_events(self, states: list[dict[str, Any]]) -> None:
        """Add pin events (each a `PinEvent`'s fields) to the fleet's, and announce them."""
        async def work(conn: psycopg.AsyncConnection) -> None:
            async with conn.transaction():
                for state in states:
                    await conn.execute(
                        "INSERT INTO toolgate_tool_events (node_id, event) VALUES (%s, %s)",
                        (self.node_id, _jsonb(state)))
                await _notify(conn, {"kind": "tools", "by": self.node_id})
        await self._run(work)

    async def tool_events(self, after: int = 0) -> list[tuple[int, dict[str, Any]]]:
        """The fleet's pin events after id `after`, in order: (id, fields)."""
        async def work(conn: psycopg.AsyncConnection) -> list[tuple[int, dict[str, Any]]]:
            cur = await conn.execute(
                "SELECT id, event FROM toolgate_tool_events WHERE id > %s ORDER BY id",
                (after,))
            return [(row["id"], row["event"]) for row in await cur.fetchall()]
        return await self._run(work)

    async def grants(self) -> list[dict[str, Any]]:
        """The grants still in force, each as its `Grant` state."""
        async def work(conn: psycopg.AsyncConnection) -> list[dict[str, Any]]:
            cur = await conn.execute(
                "SELECT grant_data FROM toolgate_grants WHERE expires_at > now() "
                "ORDER BY grant_id")
            return [row["grant_data"] for row in await cur.fetchall()]
        return await self._run(work)


async def _create_schema(conn: psycopg.AsyncConnection) -> None:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('toolgate schema'))")
        await conn.execute(SCHEMA)


async def _notify(conn: psycopg.AsyncConnection, payload: dict[str, Any]) -> None:
    await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, json.dumps(payload)))


def _jsonb(value: Any) -> Jsonb:
    return Jsonb(value)


def _gone_verdict(now: float) -> dict[str, Any]:
    return {"decision": "expired", "channel": "gateway", "reviewer": None,
            "reason": "the node holding the call stopped while it was held", "decided_at": now,
            "grant": None, "argument_hash": None}
