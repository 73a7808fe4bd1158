"""`toolgate sessions replay`: re-issues a session's recorded requests against a target and
reports what changed: the status, and the shape of JSON answers (keys and value types, not
values, which legitimately differ from run to run).

Only calls the gateway let through are replayed: a call it refused never reached a backend and
is not sent now either. Requests are sent as recorded, which means after masking and without
the credentials the store never holds: headers recorded as `[REDACTED]` are not sent (pass the
target's own credentials with `headers`).
"""

from __future__ import annotations

import http.client
import json
import urllib.parse
from collections.abc import Mapping
from typing import Any

from toolgate.sessions.query import body_bytes
from toolgate.sessions.records import REDACTED

# Hop-by-hop and per-connection headers, and the gateway's own: the target gets fresh ones.
_SKIP = frozenset({"host", "content-length", "connection", "keep-alive", "transfer-encoding",
                   "te", "trailer", "upgrade", "proxy-connection", "x-toolgate-call-id",
                   "accept-encoding"})  # answers come back uncompressed, to compare them


def shape(value: Any) -> Any:
    """The JSON shape of a value: objects keep their keys, arrays the union of their items'
    shapes, scalars become their type name."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        shapes: list[Any] = []
        for item in value:
            s = shape(item)
            if s not in shapes:
                shapes.append(s)
        return shapes
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "null"


def shape_differences(before: Any, after: Any, path: str = "$") -> list[str]:
    """Where two JSON shapes differ, as readable lines."""
    if isinstance(before, dict) and isinstance(after, dict):
        out = []
        for key in before.keys() - after.keys():
            out.append(f"{path}.{key}: missing now")
        for key in after.keys() - before.keys():
            out.append(f"{path}.{key}: new")
        for key in before.keys() & after.keys():
            out.extend(shape_differences(before[key], after[key], f"{path}.{key}"))
        return sorted(out)
    if isinstance(before, list) and isinstance(after, list):
        if before == after:
            return []
        if len(before) == 1 and len(after) == 1:
            return shape_differences(before[0], after[0], f"{path}[*]")
        if not before or not after:
            return [] if (not before) == (not after) else [f"{path}: array items differ"]
        return [f"{path}[*]: {describe(before)} -> {describe(after)}"]
    if before != after:
        return [f"{path}: {describe(before)} -> {describe(after)}"]
    return []


def describe(s: Any) -> str:
    if isinstance(s, dict):
        return "object"
    if isinstance(s, list):
        return "array"
    return str(s)


def json_shape(body: bytes | None) -> Any:
    """The body's JSON shape, or None if it is not JSON."""
    if not body:
        return None
    try:
        return shape(json.loads(body))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


def replay_call(
    call: dict[str, Any], target: str, headers: Mapping[str, str] | None = None,
    timeout: float = 30,
) -> dict[str, Any]:
    """Send one recorded request to `target` (scheme://host:port, optionally a path prefix)
    and compare its answer with the recorded one."""
    base = urllib.parse.urlsplit(target)
    recorded = urllib.parse.urlsplit(call["url"])
    path = (base.path.rstrip("/") + recorded.path) or "/"
    if recorded.query:
        path += "?" + recorded.query
    send = [(k, v) for k, v in call.get("request_headers") or []
            if k.lower() not in _SKIP and v != REDACTED]
    dropped = sorted({k for k, v in call.get("request_headers") or [] if v == REDACTED})
    send += list((headers or {}).items())
    body = body_bytes(call.get("request_body"), call.get("request_body_encoding"))
    result: dict[str, Any] = {
        "call_id": call["call_id"], "method": call["method"], "path": path,
        "recorded_status": call["status"], "status": None, "status_changed": None,
        "shape_differences": [], "dropped_headers": dropped, "error": None,
    }
    https = base.scheme == "https"
    conn_class = http.client.HTTPSConnection if https else http.client.HTTPConnection
    conn = conn_class(base.hostname or "localhost", base.port, timeout=timeout)
    try:
        conn.putrequest(call["method"], path, skip_host=False, skip_accept_encoding=True)
        for name, value in send:
            conn.putheader(name, value)
        conn.putheader("Content-Length", str(len(body or b"")))
        conn.endheaders(body or None)
        answer = conn.getresponse()
        data = answer.read()
    except (OSError, http.client.HTTPException) as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        return result
    finally:
        conn.close()
    result["status"] = answer.status
    result["status_changed"] = answer.status != call["status"]
    before = json_shape(body_bytes(call.get("response_body"), call.get("response_body_encoding")))
    after = json_shape(data)
    if before is not None or after is not None:
        if before is None or after is None:
            result["shape_differences"] = ["$: the answer is " + ("now" if after is not None
                                           else "no longer") + " JSON"]
        else:
            result["shape_differences"] = shape_differences(before, after)
    return result


def replay_session(
    timeline: dict[str, Any], target: str, headers: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Replay every call of a session (from `session_timeline(..., full=True)`) the gateway
    let through, in order."""
    results, skipped = [], []
    for call in timeline["calls"]:
        if not call.get("forwarded"):
            skipped.append({"call_id": call["call_id"], "decision": call["decision"],
                            "reason": "the gateway did not let it through"})
            continue
        results.append(replay_call(call, target, headers))
    changed = [r for r in results
               if r["error"] or r["status_changed"] or r["shape_differences"]]
    return {"session_id": timeline["session_id"], "target": target, "replayed": len(results),
            "changed": len(changed), "results": results, "skipped": skipped}
