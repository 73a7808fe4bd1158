"""Reading the store: pure functions from a DuckDB connection to JSON-able values.

The command line runs them on the file when the gateway is stopped, and the admin API runs the
same functions on the gateway's own connection while it holds the file (see `sessions.api`),
so both give the same answers. They also answer over a fleet's archive (`sessions.archive`:
views over every node's sealed segments), where each call carries its `node`.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import duckdb
import orjson
import pyarrow as pa

from toolgate.rules.toolpins import PinEvent
from toolgate.sessions.timeparse import iso, iso_us, to_us

LEVELS = ("public", "internal", "confidential", "restricted")
MAX_LIMIT = 10_000

_SUMMARY = """
    c.seq, c.call_id, c.session_id, epoch_us(c.started_at), epoch_us(c.ended_at),
    c.client_addr, c.subject,
    c.groups, c.protocol, c.function, c.method, c.url, c.status, c.decision, c.enforced,
    c.rules, c.mode,
    c.error, c.forwarded, c.node_id,
    (SELECT count(*) FROM findings f WHERE f.call_id = c.call_id) AS findings,
    (SELECT list(DISTINCT f.label ORDER BY f.label) FROM findings f
      WHERE f.call_id = c.call_id) AS labels
"""
_SUMMARY_NAMES = [
    "seq", "call_id", "session_id", "started_at", "ended_at", "client_addr", "subject",
    "groups", "protocol", "function", "method", "url", "status", "decision", "enforced", "rules",
    "mode",
    "error", "forwarded", "node", "findings", "labels",
]
_FULL = ", c.request_headers, c.request_body, c.response_headers, c.response_body"
_FULL_IDENTITY = "".join(f", CASE WHEN c.error = 'identity' THEN c.{column} END" for column in (
    "request_headers", "request_body", "response_headers", "response_body"))


@dataclass
class CallFilter:
    """What `search_calls` looks for; every field narrows the search."""

    subject: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    function: str | None = None  # a glob: crm.*, GET /customers/*
    label: str | None = None  # a finding's label
    level: str | None = None  # a finding at this level or above
    decisions: list[str] = field(default_factory=list)
    session_id: str | None = None
    call_id: str | None = None
    before: int | None = None  # only calls with a smaller seq (paging back in time)
    limit: int = 100

    def where(self) -> tuple[str, list[Any]]:
        clauses, params = [], []
        if self.subject:
            clauses.append("c.subject = ?")
            params.append(self.subject)
        if self.since:
            clauses.append("c.started_at >= make_timestamptz(?::BIGINT)")
            params.append(to_us(self.since))
        if self.until:
            clauses.append("c.started_at < make_timestamptz(?::BIGINT)")
            params.append(to_us(self.until))
        if self.function:
            clauses.append("c.function GLOB ?")
            params.append(self.function)
        if self.label:
            clauses.append(
                "EXISTS (SELECT 1 FROM findings f WHERE f.call_id = c.call_id AND f.label = ?)"
            )
            params.append(self.label)
        if self.level:
            levels = levels_at_least(self.level)
            marks = ", ".join("?" for _ in levels)
            clauses.append(
                "EXISTS (SELECT 1 FROM findings f WHERE f.call_id = c.call_id "
                f"AND f.level IN ({marks}))"
            )
            params.extend(levels)
        if self.decisions:
            marks = ", ".join("?" for _ in self.decisions)
            clauses.append(f"c.decision IN ({marks})")
            params.extend(self.decisions)
        if self.session_id:
            clauses.append("c.session_id = ?")
            params.append(self.session_id)
        if self.call_id:
            clauses.append("c.call_id = ?")
            params.append(self.call_id)
        if self.before is not None:
            clauses.append("c.seq < ?")
            params.append(self.before)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def levels_at_least(level: str) -> list[str]:
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}, not {level!r}")
    return list(LEVELS[LEVELS.index(level):])


def newest_first(con: duckdb.DuckDBPyConnection) -> str:
    """The ORDER BY of calls, newest first: the chain's order in a store; across the nodes of
    an archive (where `calls` is a view over their segments), whose seqs are unrelated, the
    time calls started."""
    archive = con.execute(
        "SELECT count(*) FROM duckdb_views() WHERE view_name = 'calls' AND NOT internal"
    ).fetchone()
    return "c.started_at DESC, c.node_id, c.seq DESC" if archive and archive[0] else "c.seq DESC"


def search_calls(con: duckdb.DuckDBPyConnection, flt: CallFilter) -> list[dict[str, Any]]:
    """Calls matching `flt`, newest first, at most `flt.limit`."""
    where, params = flt.where()
    limit = max(1, min(int(flt.limit), MAX_LIMIT))
    rows = con.execute(
        f"SELECT {_SUMMARY} FROM calls c{where} ORDER BY {newest_first(con)} LIMIT {limit}",
        params,
    ).fetchall()
    return [_summary(row) for row in rows]


def calls_with_bodies(con: duckdb.DuckDBPyConnection, flt: CallFilter,
                      identity_only: bool = False) -> list[dict[str, Any]]:
    """Calls matching `flt`, oldest first, with headers, bodies and findings (fingerprints
    included): what `toolgate rules test` re-evaluates. With `identity_only`, the headers and
    bodies of identity refusals alone (the gateway's own 401 answer, whose reason
    `sessions export --format ocsf` reads); other calls' are null and never read."""
    where, params = flt.where()
    limit = max(1, min(int(flt.limit), MAX_LIMIT))
    full = _FULL_IDENTITY if identity_only else _FULL
    rows = con.execute(
        f"SELECT {_SUMMARY}{full} FROM calls c{where} ORDER BY {newest_first(con)} "
        f"LIMIT {limit}", params
    ).fetchall()
    calls = [_call(row, True) for row in reversed(rows)]
    findings = _by_call(con, "findings", [c["call_id"] for c in calls],
                        "direction, path, label, level, action, fingerprint", "direction, path")
    for call in calls:
        call["findings"] = findings.get(call["call_id"], [])
    return calls


def session_timeline(
    con: duckdb.DuckDBPyConnection, session_id: str, full: bool = False
) -> dict[str, Any] | None:
    """A session's calls in order, each with its findings and approvals; with `full`, also
    headers and bodies (for export and replay). None if there is no such session."""
    select = _SUMMARY + (_FULL if full else "")
    rows = con.execute(
        f"SELECT {select} FROM calls c WHERE c.session_id = ? ORDER BY c.started_at, c.seq",
        [session_id],
    ).fetchall()
    if not rows:
        return None
    calls = [_call(row, full) for row in rows]
    ids = [c["call_id"] for c in calls]
    findings = _by_call(con, "findings", ids, "direction, path, label, level, action, fingerprint",
                        "direction, path")
    approvals = _by_call(con, "approvals", ids,
                         "epoch_us(requested_at) AS requested_at, epoch_us(decided_at) AS "
                         "decided_at, decision, reviewer, channel, reason, scope", "seq")
    for call in calls:
        call["findings"] = findings.get(call["call_id"], [])
        call["approvals"] = approvals.get(call["call_id"], [])
    return {
        "session_id": session_id,
        "started_at": calls[0]["started_at"],
        "ended_at": max((c["ended_at"] or c["started_at"]) for c in calls),
        "subjects": sorted({c["subject"] for c in calls if c["subject"]}),
        "count": len(calls),
        "calls": calls,
    }


def find_fingerprint(con: duckdb.DuckDBPyConnection, fingerprint: str) -> dict[str, Any]:
    """Where a value with this fingerprint was seen."""
    rows = con.execute(
        """
        SELECT f.call_id, c.session_id, epoch_us(c.started_at), c.subject, c.function, f.direction,
               f.path, f.label, f.level, f.action, f.node_id
        FROM findings f LEFT JOIN calls c ON c.call_id = f.call_id
        WHERE f.fingerprint = ? ORDER BY c.started_at, f.call_id, f.path
        """,
        [fingerprint.lower()],
    ).fetchall()
    names = ["call_id", "session_id", "started_at", "subject", "function", "direction",
             "path", "label", "level", "action", "node"]
    seen = [dict(zip(names, row)) for row in rows]
    for s in seen:
        s["started_at"] = iso_us(s["started_at"])
    return {"fingerprint": fingerprint.lower(), "seen": bool(seen), "count": len(seen),
            "findings": seen}


REPORT_BUCKETS = 40  # the most time buckets `report` cuts its range into, by default
MAX_REPORT_BUCKETS = 200
# Bucket widths a report's timeline chooses from (ms): the narrowest that fits the range into
# the buckets asked for, so that the axis reads in round numbers.
_BUCKET_MS = [
    10, 20, 50, 100, 200, 500,
    1_000, 2_000, 5_000, 10_000, 15_000, 30_000,
    60_000, 120_000, 300_000, 600_000, 900_000, 1_800_000,
    3_600_000, 7_200_000, 10_800_000, 21_600_000, 43_200_000,
    86_400_000, 172_800_000, 604_800_000,
]
_HOLD_DECISIONS = ("approved", "denied", "expired")


def report(
    con: duckdb.DuckDBPyConnection,
    since: datetime | None = None,
    until: datetime | None = None,
    fail_on: list[str] | None = None,
    buckets: int = REPORT_BUCKETS,
) -> dict[str, Any]:
    """A run's summary for CI and for people: calls by decision and by function (with their
    durations), the calls whose decision is in `fail_on` (then `passed` is false), calls over
    time by decision in at most `buckets` buckets, the labels found, and the held calls'
    waits. Every aggregate is computed by DuckDB, on a store or on a fleet's archive alike."""
    fail_on = list(fail_on or [])
    flt = CallFilter(since=since, until=until)
    where, params = flt.where()
    by_decision = dict(con.execute(
        f"SELECT c.decision, count(*) FROM calls c{where} GROUP BY 1 ORDER BY 1", params
    ).fetchall())
    functions = con.execute(
        f"""SELECT coalesce(c.function, '?'), coalesce(c.protocol, '?'), c.decision, count(*)
            FROM calls c{where} GROUP BY 1, 2, 3 ORDER BY 1, 2, 3""",
        params,
    ).fetchall()
    by_function: dict[tuple[str, str], dict[str, Any]] = {}
    for function, protocol, decision, count in functions:
        entry = by_function.setdefault(
            (function, protocol),
            {"function": function, "protocol": protocol, "calls": 0, "decisions": {}},
        )
        entry["calls"] += count
        entry["decisions"][decision] = count
    for key, durations in _function_durations(con, where, params).items():
        by_function[key].update(durations)
    failed: list[dict[str, Any]] = []
    if fail_on:
        failed = search_calls(con, CallFilter(since=since, until=until, decisions=fail_on,
                                              limit=MAX_LIMIT))
        failed.reverse()  # oldest first, as they happened
    total = sum(by_decision.values())
    return {
        "since": iso(since),
        "until": iso(until),
        "total": total,
        "by_decision": by_decision,
        "by_function": list(by_function.values()),
        "fail_on": fail_on,
        "failed": failed,
        "failed_count": sum(by_decision.get(d, 0) for d in fail_on),
        "passed": not any(by_decision.get(d, 0) for d in fail_on),
        "timeline": _timeline(con, where, params, since, until, buckets),
        "labels": _labels(con, where, params),
        "holds": _holds(con, since, until),
    }


def bucket_width_ms(start_us: int, end_us: int, buckets: int) -> int:
    """The narrowest round width (ms) whose buckets, aligned to the epoch, cover start..end
    (both included) in at most `buckets` of them."""
    buckets = max(1, buckets)
    for width in _BUCKET_MS:
        if _bucket_count(start_us, end_us, width) <= buckets:
            return width
    week = _BUCKET_MS[-1]  # longer ranges: whole weeks
    width = week * max(1, (end_us - start_us) // 1000 // week // buckets)
    while _bucket_count(start_us, end_us, width) > buckets:
        width += week
    return width


def _bucket_count(start_us: int, end_us: int, width_ms: int) -> int:
    width = width_ms * 1000
    return end_us // width - start_us // width + 1


def _timeline(
    con: duckdb.DuckDBPyConnection, where: str, params: list[Any],
    since: datetime | None, until: datetime | None, buckets: int,
) -> dict[str, Any]:
    """Calls over time by decision: {"start", "end", "bucket_ms", "buckets": [{"start",
    "decisions": {decision: n}}]}, every bucket of the range, empty ones included. The range
    is --since..--until; without --until it ends now (with --since) or at the last call."""
    first, last = con.execute(
        f"SELECT min(epoch_us(c.started_at)), max(epoch_us(c.started_at)) FROM calls c{where}",
        params,
    ).fetchone()
    if first is None and since is None:
        return {"start": None, "end": None, "bucket_ms": None, "buckets": []}
    start = to_us(since) if since else first
    if until:
        end = to_us(until) - 1  # --until is exclusive
    else:
        end = to_us(datetime.now(timezone.utc)) if since else last
    if last is not None:
        end = max(end, last)
    end = max(end, start)
    width_ms = bucket_width_ms(start, end, buckets)
    width = width_ms * 1000
    origin = start // width * width
    count = _bucket_count(start, end, width_ms)
    rows = con.execute(
        f"""SELECT (epoch_us(c.started_at) - ?::BIGINT) // ?::BIGINT, coalesce(c.decision, '?'),
                   count(*)
            FROM calls c{where} GROUP BY 1, 2 ORDER BY 1, 2""",
        [origin, width, *params],
    ).fetchall()
    cells: list[dict[str, int]] = [{} for _ in range(count)]
    for index, decision, n in rows:
        cells[min(max(int(index), 0), count - 1)][decision] = n
    return {
        "start": iso_us(start),
        "end": iso_us(end),
        "bucket_ms": width_ms,
        "buckets": [{"start": iso_us(origin + i * width), "decisions": cell}
                    for i, cell in enumerate(cells)],
    }


def _function_durations(
    con: duckdb.DuckDBPyConnection, where: str, params: list[Any]
) -> dict[tuple[str, str], dict[str, float | None]]:
    """Each function's call durations (ended - started, ms): p50, p95 and max; None for a
    function none of whose calls ended."""
    rows = con.execute(
        f"""SELECT coalesce(c.function, '?'), coalesce(c.protocol, '?'),
                   quantile_cont(d, 0.5), quantile_cont(d, 0.95), max(d)
            FROM (SELECT *, epoch_us(ended_at) - epoch_us(started_at) AS d FROM calls) c{where}
            GROUP BY 1, 2""",
        params,
    ).fetchall()
    return {(function, protocol): {"p50_ms": _ms(p50), "p95_ms": _ms(p95), "max_ms": _ms(top)}
            for function, protocol, p50, p95, top in rows}


def _labels(
    con: duckdb.DuckDBPyConnection, where: str, params: list[Any]
) -> list[dict[str, Any]]:
    """The labels found in the range's calls, most findings first: [{"label", "level",
    "findings", "calls", "actions": {action: n}}]."""
    rows = con.execute(
        f"""SELECT f.label, f.level, count(*), count(DISTINCT f.call_id), histogram(f.action)
            FROM findings f JOIN calls c ON c.call_id = f.call_id{where}
            GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2""",
        params,
    ).fetchall()
    return [{"label": label, "level": level, "findings": findings, "calls": calls,
             "actions": dict(sorted((str(k), v) for k, v in (actions or {}).items()))}
            for label, level, findings, calls, actions in rows]


def _holds(
    con: duckdb.DuckDBPyConnection, since: datetime | None, until: datetime | None
) -> dict[str, Any]:
    """Held calls requested in the range, and how long each waited for its decision
    (decided_at - requested_at, ms): {"count", "decisions": {"approved", "denied", "expired",
    ...: n}, "p50_ms", "p95_ms", "max_ms", "by_channel": [{"channel", "count", "decisions",
    "p50_ms", "p95_ms", "max_ms"}]}, channels by count."""
    clauses, params = [], []
    at = "coalesce(a.requested_at, a.decided_at)"
    if since:
        clauses.append(f"{at} >= make_timestamptz(?::BIGINT)")
        params.append(to_us(since))
    if until:
        clauses.append(f"{at} < make_timestamptz(?::BIGINT)")
        params.append(to_us(until))
    where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
    rows = con.execute(
        f"""SELECT grouping(channel), channel, count(*), histogram(decision),
                   quantile_cont(w, 0.5), quantile_cont(w, 0.95), max(w)
            FROM (SELECT coalesce(a.channel, '?') AS channel, coalesce(a.decision, '?')
                         AS decision,
                         epoch_us(a.decided_at) - epoch_us(a.requested_at) AS w
                  FROM approvals a{where})
            GROUP BY GROUPING SETS ((channel), ()) ORDER BY 1 DESC, 3 DESC, 2""",
        params,
    ).fetchall()

    def entry(count: int, decisions: Any, p50: Any, p95: Any, top: Any) -> dict[str, Any]:
        counted = {d: 0 for d in _HOLD_DECISIONS}
        counted.update({str(k): v for k, v in (decisions or {}).items()})
        return {"count": count, "decisions": counted, "p50_ms": _ms(p50), "p95_ms": _ms(p95),
                "max_ms": _ms(top)}

    total = entry(0, None, None, None, None)
    channels = []
    for overall, channel, *values in rows:
        if overall:
            total = entry(*values)
        else:
            channels.append({"channel": channel, **entry(*values)})
    return {**total, "by_channel": channels}


def _ms(micros: float | int | None) -> float | None:
    return None if micros is None else round(float(micros) / 1000, 3)


# -- JSON shapes -------------------------------------------------------------------------


def body_json(data: bytes | None) -> tuple[str | None, str | None]:
    """A body as JSON text: UTF-8 when it is, base64 otherwise; with its encoding's name."""
    if data is None:
        return None, None
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(data).decode(), "base64"


def body_bytes(text: str | None, encoding: str | None) -> bytes | None:
    if text is None:
        return None
    return base64.b64decode(text) if encoding == "base64" else text.encode("utf-8")


def _summary(row: tuple) -> dict[str, Any]:
    d = dict(zip(_SUMMARY_NAMES, row))
    started, ended = d["started_at"], d["ended_at"]
    d["duration_ms"] = round((ended - started) / 1000, 3) if started and ended else None
    d["started_at"], d["ended_at"] = iso_us(started), iso_us(ended)
    d["groups"] = list(d["groups"] or [])
    d["rules"] = list(d["rules"] or [])
    d["labels"] = list(d["labels"] or [])
    return d


def _call(row: tuple, full: bool) -> dict[str, Any]:
    d = _summary(row[: len(_SUMMARY_NAMES)])
    if full:
        req_h, req_b, resp_h, resp_b = row[len(_SUMMARY_NAMES):]
        d["request_headers"] = orjson.loads(req_h) if req_h else []
        d["request_body"], d["request_body_encoding"] = body_json(req_b)
        d["response_headers"] = orjson.loads(resp_h) if resp_h else None
        d["response_body"], d["response_body_encoding"] = body_json(resp_b)
    return d


def _by_call(
    con: duckdb.DuckDBPyConnection, table: str, ids: list[str], columns: str, order: str
) -> dict[str, list[dict[str, Any]]]:
    if not ids:
        return {}
    names = [c.strip().split(" AS ")[-1] for c in columns.split(",")]
    con.register("_ids", _ids_table(ids))
    try:
        rows = con.execute(
            f"SELECT call_id, {columns} FROM {table} WHERE call_id IN (SELECT id FROM _ids) "
            f"ORDER BY call_id, {order}"
        ).fetchall()
    finally:
        con.unregister("_ids")
    out: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        item = dict(zip(names, row[1:]))
        for key in ("requested_at", "decided_at"):
            if key in item:
                item[key] = iso_us(item[key])
        out.setdefault(row[0], []).append(item)
    return out


def _ids_table(ids: list[str]) -> pa.Table:
    return pa.table({"id": pa.array(ids, pa.string())})


def tool_events(con: duckdb.DuckDBPyConnection) -> list[PinEvent]:
    """The pinned MCP tool definitions' history, in the order it happened."""
    rows = con.execute(
        "SELECT server, tool, kind, fingerprint, definition, epoch_us(seen_at), call_id, "
        "reviewer, reason FROM tool_events ORDER BY seen_at, rowid").fetchall()
    return [PinEvent(server, tool, kind, fingerprint,
                     None if definition is None else json.loads(definition), at / 1_000_000,
                     call_id, reviewer, reason)
            for server, tool, kind, fingerprint, definition, at, call_id, reviewer, reason in rows]
