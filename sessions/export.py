"""`toolgate sessions export`: a session as a `.mitm` file that `mitmweb -r` opens.

The one module of `sessions` that imports mitmproxy: it writes with mitmproxy's own FlowWriter,
so the file is whatever the installed mitmproxy reads. Each call becomes an HTTP flow with the
recorded (masked, redacted) request and answer; toolgate's decision, rules and findings are in
the flow's comment and metadata. Flows loaded from the file are not live: the gateway never
re-enforces or re-records them.
"""

from __future__ import annotations

import urllib.parse
import uuid
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from mitmproxy import connection, flow, http, io

from toolgate.addons import flowmeta
from toolgate.sessions.query import body_bytes


def _ts(text: str | None) -> float | None:
    return datetime.fromisoformat(text).timestamp() if text else None


def _address(text: str | None) -> tuple[str, int]:
    if not text:
        return ("0.0.0.0", 0)
    host, _, port = text.rpartition(":")
    return (host.strip("[]") or text, int(port) if port.isdigit() else 0)


def _flow_id(call_id: str) -> str:
    try:
        return str(uuid.UUID(call_id))
    except ValueError:
        return str(uuid.uuid4())


def call_flow(call: dict[str, Any]) -> http.HTTPFlow:
    """One recorded call (a `session_timeline(..., full=True)` entry) as an HTTP flow."""
    started = _ts(call["started_at"]) or 0.0
    ended = _ts(call["ended_at"]) or started
    url = urllib.parse.urlsplit(call["url"] or "http://unknown/")
    port = url.port or (443 if url.scheme == "https" else 80)
    client = connection.Client(
        peername=_address(call["client_addr"]), sockname=("0.0.0.0", 0), timestamp_start=started
    )
    server = connection.Server(address=(url.hostname or "unknown", port))
    f = http.HTTPFlow(client, server)
    f.id = _flow_id(call["call_id"])
    f.request = http.Request.make(
        call["method"] or "GET",
        call["url"] or "http://unknown/",
        b"",
        [(k.encode("latin-1", "replace"), v.encode("latin-1", "replace"))
         for k, v in call.get("request_headers") or []],
    )
    # The body as recorded, byte for byte (any Content-Encoding kept as it was on the wire).
    f.request.raw_content = body_bytes(call.get("request_body"),
                                       call.get("request_body_encoding")) or b""
    f.request.timestamp_start = started
    f.request.timestamp_end = started
    if call.get("status") is not None and call.get("response_headers") is not None:
        f.response = http.Response.make(
            call["status"], b"",
            [(k.encode("latin-1", "replace"), v.encode("latin-1", "replace"))
             for k, v in call["response_headers"]],
        )
        f.response.raw_content = body_bytes(call.get("response_body"),
                                            call.get("response_body_encoding")) or b""
        f.response.timestamp_start = ended
        f.response.timestamp_end = ended
    if call.get("error") and f.response is None:
        f.error = flow.Error(str(call["error"]), timestamp=ended)
    f.comment = comment(call)
    if call["decision"] not in (None, "allow"):
        f.marked = ":warning:"
    f.metadata[flowmeta.CALL_ID] = call["call_id"]
    f.metadata[flowmeta.SESSION_ID] = call["session_id"]
    f.metadata[flowmeta.DECISION] = {"action": call["decision"], "rules": call["rules"],
                                     "mode": call["mode"], "protocol": call["protocol"],
                                     "function": call["function"]}
    f.metadata[flowmeta.FINDINGS] = call.get("findings", [])
    f.metadata[flowmeta.IDENTITY] = {"subject": call["subject"], "groups": call["groups"]}
    return f


def comment(call: dict[str, Any]) -> str:
    parts = [f"toolgate: {call['decision']}", f"function {call['function']}",
             f"caller {call['subject'] or call['client_addr']}"]
    if call["rules"]:
        parts.append("rules " + ", ".join(call["rules"]))
    labels = sorted({f["label"] for f in call.get("findings", [])})
    if labels:
        parts.append("findings " + ", ".join(labels))
    for a in call.get("approvals", []):
        parts.append(f"{a['decision']} by {a['reviewer']} via {a['channel']}: {a['reason']}")
    if call.get("error"):
        parts.append(f"error {call['error']}")
    parts.append(f"call {call['call_id']} (seq {call['seq']})")
    return "; ".join(parts)


def write_flows(calls: Iterable[dict[str, Any]], out: BinaryIO) -> int:
    writer = io.FlowWriter(out)
    count = 0
    for call in calls:
        writer.add(call_flow(call))
        count += 1
    return count


def export_session(timeline: dict[str, Any], path: Path) -> int:
    """Write a session (from `session_timeline(..., full=True)`) to `path`; the flow count."""
    with open(path, "wb") as out:
        return write_flows(timeline["calls"], out)
