"""The admin API's session routes, as one function from (path, query parameters) to (HTTP
status, JSON body), run on a connection to the store.

The admin server (built on `toolgate_admin_listen`) authenticates the request, then calls
`Recorder.query(path, params)`, which runs `handle` on the gateway's own store connection, off
the event loop; `toolgate sessions ...` calls `handle` on the file itself when the gateway is
stopped, or these routes over HTTP while it runs: the same answers either way.

Routes (all GET; parameters are query-string values; times are ISO 8601 or relative, `1h`):

- `/api/calls` — search. Parameters: `subject`, `since`, `until`, `function` (glob), `label`,
  `level` (this level or above: public < internal < confidential < restricted), `decision`
  (comma-separated), `session_id`, `call_id`, `before` (seq, to page back), `limit` (1..10000,
  default 100). Answer: `{"calls": [CALL...], "count": n, "next_before": seq|null}`, newest
  first, where CALL is `{"seq", "call_id", "session_id", "started_at", "ended_at",
  "duration_ms", "client_addr", "subject", "groups", "protocol", "function", "method", "url",
  "status", "decision", "enforced", "rules", "mode", "error", "forwarded", "findings" (a count),
  "labels", "node" (the fleet node that recorded it, or null)}`; `next_before` is set when
  there may be more.
- `/api/calls/full` — the same parameters as `/api/calls`; the calls oldest first, each with
  its headers, bodies (as in a full timeline) and findings: what `toolgate rules test`
  re-evaluates. `bodies=identity`: headers and bodies of identity refusals only (null for
  the other calls: what `sessions export --format ocsf` reads). Answer:
  `{"calls": [...], "count": n}`.
- `/api/sessions/{session_id}` — a timeline. Parameter `full=1` adds headers and bodies. Answer:
  `{"session_id", "started_at", "ended_at", "subjects", "count", "calls": [CALL + {"findings":
  [{"direction", "path", "label", "level", "action", "fingerprint"}], "approvals":
  [{"requested_at", "decided_at", "decision", "reviewer", "channel", "reason", "scope"}]} and,
  with full, {"request_headers": [[name, value]], "request_body", "request_body_encoding"
  ("utf-8" | "base64" | null), "response_headers", "response_body",
  "response_body_encoding"}]}`; 404 if there is no such session.
- `/api/report` — parameters `since`, `until`, `fail_on` (comma-separated decisions),
  `buckets` (the most time buckets of `timeline`, 1..200, default 40). Answer:
  `{"since", "until", "total", "by_decision": {decision: n}, "by_function": [{"function",
  "protocol", "calls", "decisions": {decision: n}, "p50_ms", "p95_ms", "max_ms"}], "fail_on",
  "failed": [CALL], "failed_count", "passed", "timeline": {"start", "end", "bucket_ms",
  "buckets": [{"start", "decisions": {decision: n}}]}, "labels": [{"label", "level",
  "findings", "calls", "actions": {action: n}}], "holds": {"count", "decisions": {"approved",
  "denied", "expired": n}, "p50_ms", "p95_ms", "max_ms", "by_channel": [{"channel", "count",
  "decisions", "p50_ms", "p95_ms", "max_ms"}]}}`: durations are ended - started, a hold's
  wait decided - requested; every bucket of the range is listed, empty ones too.
- `/api/findings` — parameter `fingerprint` (hex; the CLI computes it, the raw value never
  travels). Answer: `{"fingerprint", "seen", "count", "findings": [{"call_id", "session_id",
  "started_at", "subject", "function", "direction", "path", "label", "level", "action",
  "node"}]}`.
- `/api/verify` — answer: `{"ok", "rows": {"calls": n, "approvals": n}, "problems":
  [{"table", "seq", "call_id", "problem"}], "head_file"}`.

Errors: 400 or 404 with `{"error": {"code": "bad_request" | "not_found", "message"}}`.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import duckdb

from toolgate.sessions import query, verify
from toolgate.sessions.timeparse import parse_time

_HEX = re.compile(r"^[0-9a-fA-F]{16,128}$")


class BadRequest(ValueError):
    """A parameter the caller can fix."""


def handle(
    con: duckdb.DuckDBPyConnection,
    path: str,
    params: Mapping[str, str],
    head_file: Path | None = None,
) -> tuple[int, dict[str, Any]]:
    """(status, JSON body) of one GET on a session route."""
    try:
        if path == "/api/calls":
            return 200, calls_endpoint(con, params)
        if path == "/api/calls/full":
            bodies = params.get("bodies") or "all"
            if bodies not in ("all", "identity"):
                raise BadRequest("bodies must be all or identity")
            calls = query.calls_with_bodies(con, call_filter(params),
                                            identity_only=bodies == "identity")
            return 200, {"calls": calls, "count": len(calls)}
        if path.startswith("/api/sessions/"):
            session_id = urllib.parse.unquote(path[len("/api/sessions/"):])
            found = query.session_timeline(con, session_id, full=_flag(params.get("full")))
            if found is None:
                return 404, _error("not_found", f"no session {session_id!r} in the store")
            return 200, found
        if path == "/api/report":
            return 200, query.report(
                con, _time(params, "since"), _time(params, "until"),
                _list(params.get("fail_on")),
                _int(params, "buckets", query.REPORT_BUCKETS, 1, query.MAX_REPORT_BUCKETS),
            )
        if path == "/api/findings":
            fingerprint = params.get("fingerprint", "")
            if not _HEX.match(fingerprint):
                raise BadRequest("fingerprint must be the hex HMAC of a value")
            return 200, query.find_fingerprint(con, fingerprint)
        if path == "/api/verify":
            return 200, verify.verify_store(con, head_file)
        return 404, _error("not_found", f"no route {path}")
    except BadRequest as exc:
        return 400, _error("bad_request", str(exc))


def calls_endpoint(con: duckdb.DuckDBPyConnection, params: Mapping[str, str]) -> dict[str, Any]:
    """`GET /api/calls`: see the module's docstring. Raises BadRequest."""
    flt = call_filter(params)
    calls = query.search_calls(con, flt)
    more = len(calls) == flt.limit
    return {"calls": calls, "count": len(calls), "next_before": calls[-1]["seq"] if more else None}


def call_filter(params: Mapping[str, str]) -> query.CallFilter:
    level = params.get("level") or None
    if level and level not in query.LEVELS:
        raise BadRequest(f"level must be one of {', '.join(query.LEVELS)}")
    return query.CallFilter(
        subject=params.get("subject") or None,
        since=_time(params, "since"),
        until=_time(params, "until"),
        function=params.get("function") or None,
        label=params.get("label") or None,
        level=level,
        decisions=_list(params.get("decision")),
        session_id=params.get("session_id") or None,
        call_id=params.get("call_id") or None,
        before=_int(params, "before", None),
        limit=_int(params, "limit", 100, 1, query.MAX_LIMIT),
    )


def _time(params: Mapping[str, str], name: str):
    value = params.get(name)
    if not value:
        return None
    try:
        return parse_time(value)
    except ValueError as exc:
        raise BadRequest(f"{name}: {exc}") from None


def _int(params: Mapping[str, str], name: str, default, low: int = 0, high: int = 2**62):
    value = params.get(name)
    if value in (None, ""):
        return default
    try:
        number = int(value)
    except ValueError:
        raise BadRequest(f"{name} must be a whole number") from None
    if not low <= number <= high:
        raise BadRequest(f"{name} must be between {low} and {high}")
    return number


def _list(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def _flag(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes")


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}
