"""Recorded calls as OCSF events, for a SIEM: pure functions from a call (as the admin API's
`/api/calls/full` gives it, or as `ocsf_stream` builds it from a `CallRecord`) to JSON-able
dicts. Nothing here reads the store or imports mitmproxy.

Schema: OCSF 1.3.0 (`metadata.version`). Each call gives, in this order:

- one **API Activity** (class 6003, category 6 Application Activity): the caller
  (`actor.user`, `src_endpoint`), the function (`api.operation`), the backend
  (`api.service.name`, `dst_endpoint`), the request's method and URL without its query
  (`http_request`), the status the caller got (`http_response.code`), the outcome as
  `status_id` (Success below 400, else Failure) and, through the `security_control` profile,
  what the gateway did as `action_id` / `disposition_id`;
- one **Authentication** (class 3002, category 3 Identity & Access Management, activity
  Logon, status Failure) when the call was refused 401 `identity`, with the refusal's reason
  in `status_detail` (never the token);
- one **Data Security Finding** (class 2006, category 2 Findings) per finding: the label as
  what was detected (`finding_info.types`, `data_security.detection_pattern`), its level as
  `severity_id` and `data_security.confidentiality_id`, the rule's action, where it was
  (`resources[0].data`: direction and JSONPath) and its keyed fingerprint (`unmapped`).

Every event of a call carries the call id in `metadata.correlation_uid` (the join key);
`metadata.uid` is the event's own id: the call id for its API Activity, `<call id>/auth` for
its Authentication, `<call id>/finding/<n>` for its n-th finding. toolgate's own fields are
in `unmapped` (`decision`, `enforced`, `mode`, `rules`, `labels`, `node`, `session_id`,
`protocol`, `forwarded`, `error`).

Never exported: bodies, header values, tokens, query strings, and the rules' refusal messages
(a rule may quote what it refused); findings keep their fingerprint, never a value.
"""

from __future__ import annotations

import ipaddress
import json
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from datetime import datetime
from functools import lru_cache
from typing import Any

from toolgate.sessions.query import body_bytes
from toolgate.sessions.timeparse import to_us

OCSF_VERSION = "1.3.0"
PRODUCT = "toolgate"
LOG_NAME = "toolgate calls"

API_ACTIVITY, AUTHENTICATION, DATA_SECURITY_FINDING = 6003, 3002, 2006
CLASSES = {
    API_ACTIVITY: ("API Activity", 6, "Application Activity"),
    AUTHENTICATION: ("Authentication", 3, "Identity & Access Management"),
    DATA_SECURITY_FINDING: ("Data Security Finding", 2, "Findings"),
}

# API Activity's activity_id: CRUD by HTTP method for REST calls. JSON-RPC and LLM APIs put
# every call in a POST, so their calls are `Other`, named by their protocol.
API_ACTIVITIES = {"POST": (1, "Create"), "GET": (2, "Read"), "HEAD": (2, "Read"),
                  "PUT": (3, "Update"), "PATCH": (3, "Update"), "DELETE": (4, "Delete")}
CRUD_PROTOCOLS = ("rest", "http", None)
OTHER = 99

SEVERITIES = {0: "Unknown", 1: "Informational", 2: "Low", 3: "Medium", 4: "High",
              5: "Critical"}
# A finding's level as severity, and as the data's confidentiality (data_security).
LEVEL_SEVERITY = {"public": 1, "internal": 2, "confidential": 3, "restricted": 4}
LEVEL_CONFIDENTIALITY = {"public": (1, "Not Confidential"), "internal": (OTHER, "Internal"),
                         "confidential": (2, "Confidential"), "restricted": (6, "Restricted")}
# A call's severity follows what was decided (monitor mode included): a refusal is Medium.
DECISION_SEVERITY = {"allow": 1, "mask": 2, "approve": 2, "block": 3, "deny": 3}

ACTIONS = {0: "Unknown", 1: "Allowed", 2: "Denied"}
# toolgate's decision (or a finding's action) -> OCSF (action_id, disposition_id, disposition).
# Masking has no disposition of its own in OCSF 1.3: Other, named "Masked".
DISPOSITIONS: dict[str, tuple[int, int, str]] = {
    "allow": (1, 1, "Allowed"),
    "mask": (1, OTHER, "Masked"),
    "approve": (1, 8, "Approved"),
    "block": (2, 2, "Blocked"),
    "deny": (2, 2, "Blocked"),
    "approval_pending": (0, 14, "Delayed"),
    "interrupted": (0, OTHER, "Interrupted"),
}
DETECTED = (1, 15, "Detected")  # monitor mode: a refusal decided, the call let through

STATUSES = {0: "Unknown", 1: "Success", 2: "Failure"}
AUTH_PROTOCOL = (6, "OAUTH 2.0")  # callers send OAuth 2.0 bearer tokens (OIDC JWTs)
ANONYMOUS = {"name": "anonymous", "type_id": 0, "type": "Unknown"}

# Defence in depth for the one message exported (an identity refusal's reason): anything that
# looks like a JWT or a long opaque token is cut out, should a reason ever quote one.
_TOKENISH = re.compile(r"[A-Za-z0-9_\-+/=]{8,}\.[A-Za-z0-9_\-+/=]{8,}(?:\.[A-Za-z0-9_\-+/=]*)?"
                       r"|[A-Za-z0-9_\-+/=]{32,}")
MAX_DETAIL = 300


def call_events(call: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The OCSF events of one call: its API Activity, its Authentication if it was refused
    for its identity, and one Data Security Finding per finding."""
    context = _Context(call)
    events = [api_activity(context)]
    if call.get("error") == "identity":
        events.append(authentication(context))
    for index, finding in enumerate(sorted_findings(call.get("findings") or ())):
        events.append(data_security_finding(context, index, finding))
    return events


def dumps(event: Mapping[str, Any]) -> str:
    """One event as one line of JSON (ASCII: no byte of it can split a character)."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=True)


def lines(calls: Iterable[Mapping[str, Any]]) -> Iterable[str]:
    """The JSON lines of the calls' events, each ending in a newline."""
    for call in calls:
        for event in call_events(call):
            yield dumps(event) + "\n"


def sorted_findings(findings: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Findings in one order whatever their source, so each keeps its index (its event uid)."""
    return sorted(findings, key=lambda f: tuple(str(f.get(k) or "") for k in (
        "direction", "path", "label", "level", "action", "fingerprint")))


# -- the classes -----------------------------------------------------------------------------


def api_activity(c: "_Context") -> dict[str, Any]:
    call = c.call
    method = (call.get("method") or "").upper()
    if call.get("protocol") in CRUD_PROTOCOLS and method in API_ACTIVITIES:
        activity_id, activity = API_ACTIVITIES[method]
    else:
        activity_id, activity = OTHER, str(call.get("protocol") or method or "Other")
    status = call.get("status")
    status_id = 1 if isinstance(status, int) and status < 400 else 2
    response: dict[str, Any] = {}
    if status is not None:
        response["code"] = status
    if call.get("error"):
        response["error"] = str(call["error"])
    event = c.base(API_ACTIVITY, activity_id, activity, c.call_id,
                   DECISION_SEVERITY.get(call.get("decision") or "", 2))
    event.update(
        message=f"{c.who} called {c.function}: {call.get('decision') or 'unknown'}",
        actor={"user": c.user},
        api={"operation": c.function, "service": {"name": c.service},
             "request": {"uid": c.call_id}, **({"response": response} if response else {})},
        src_endpoint=c.src_endpoint,
        http_request=c.http_request,
        status_id=status_id,
        status=STATUSES[status_id],
        **_outcome(call.get("enforced") or call.get("decision"), call.get("decision")),
        unmapped=c.unmapped,
    )
    if c.dst_endpoint:
        event["dst_endpoint"] = c.dst_endpoint
    if status is not None:
        event["http_response"] = {"code": status}
        event["status_code"] = str(status)
    if call.get("error"):
        event["status_detail"] = str(call["error"])
    ended = _ms(call.get("ended_at"))
    if ended is not None:
        event.update(start_time=c.time, end_time=ended, duration=max(0, ended - c.time))
    return event


def authentication(c: "_Context") -> dict[str, Any]:
    call = c.call
    event = c.base(AUTHENTICATION, 1, "Logon", f"{c.call_id}/auth", 3)
    event.update(
        message=f"{c.who} was refused: {c.reason}",
        user=c.user,
        actor={"user": c.user},
        auth_protocol_id=AUTH_PROTOCOL[0],
        auth_protocol=AUTH_PROTOCOL[1],
        is_remote=True,
        service={"name": PRODUCT},
        src_endpoint=c.src_endpoint,
        http_request=c.http_request,
        status_id=2,
        status=STATUSES[2],
        status_code=str(call.get("error")),
        status_detail=c.reason,
        **_outcome("deny", "deny"),
        unmapped=c.unmapped,
    )
    if c.dst_endpoint:
        event["dst_endpoint"] = c.dst_endpoint
    return event


def data_security_finding(c: "_Context", index: int, finding: Mapping[str, Any]) -> dict[str, Any]:
    label = str(finding.get("label") or "unknown")
    level = finding.get("level")
    action = finding.get("action")
    direction, path = str(finding.get("direction") or ""), str(finding.get("path") or "")
    uid = f"{c.call_id}/finding/{index}"
    event = c.base(DATA_SECURITY_FINDING, 1, "Create", uid, LEVEL_SEVERITY.get(level or "", 0))
    confidentiality_id, confidentiality = LEVEL_CONFIDENTIALITY.get(level or "", (0, "Unknown"))
    outcome = _outcome(action, action)
    event.update(
        message=f"{label} ({level or 'no level'}) in the {direction} of {c.function}: "
                f"{action or 'no action'}",
        finding_info={"uid": uid, "title": f"{label} in the {direction} at {path}",
                      "types": [label]},
        data_security={
            "data_lifecycle_state_id": 2, "data_lifecycle_state": "Data in-Transit",
            "detection_system_id": 2, "detection_system": "DLP Gateway",
            "detection_pattern": label,
            "confidentiality_id": confidentiality_id, "confidentiality": confidentiality,
        },
        resources=[{"uid": c.call_id, "name": c.function, "type": "API call",
                    "data": {"direction": direction, "path": path}}],
        actor={"user": c.user},
        src_endpoint=c.src_endpoint,
        status_id=1,
        status="New",
        **outcome,
        unmapped={**c.unmapped, "direction": direction, "path": path, "label": label,
                  "level": level, "action": action, "fingerprint": finding.get("fingerprint")},
    )
    if c.dst_endpoint:
        event["dst_endpoint"] = c.dst_endpoint
    return event


# -- what every event of a call shares --------------------------------------------------------


class _Context:
    """What the events of one call are built from, worked out once."""

    def __init__(self, call: Mapping[str, Any]) -> None:
        self.call = call
        self.call_id = str(call.get("call_id") or "")
        self.time = _ms(call.get("started_at")) or 0
        self.function = str(call.get("function") or f"{call.get('method')} ?")
        subject = call.get("subject")
        groups = [{"name": str(g)} for g in call.get("groups") or ()]
        if subject:
            self.user: dict[str, Any] = {"uid": str(subject), "name": str(subject),
                                         "type_id": 1, "type": "User"}
            if groups:
                self.user["groups"] = groups
        else:
            self.user = dict(ANONYMOUS)
        self.who = str(subject) if subject else f"an anonymous caller ({call.get('client_addr')})"
        self.src_endpoint = _endpoint(call.get("client_addr"))
        url = _url(call.get("url"))
        self.http_request = {"http_method": str(call.get("method") or ""), **(
            {"url": url} if url else {})}
        host = url.get("hostname")
        self.dst_endpoint: dict[str, Any] = {}
        if host:
            self.dst_endpoint = {"ip": host} if _is_ip(host) else {"hostname": host}
            if "port" in url:
                self.dst_endpoint["port"] = url["port"]
        # The backend called: its host (and port, when the URL names one).
        self.service = url["url_string"].split("/")[2] if host else "unknown"
        labels = sorted({str(f.get("label")) for f in call.get("findings") or ()
                         if f.get("label")})
        self.unmapped = {
            "session_id": call.get("session_id"),
            "decision": call.get("decision"),
            "enforced": call.get("enforced"),
            "mode": call.get("mode"),
            "rules": list(call.get("rules") or ()),
            "labels": labels,
            "node": call.get("node"),
            "protocol": call.get("protocol"),
            "forwarded": call.get("forwarded"),
            "error": call.get("error"),
        }

    @property
    def reason(self) -> str:
        """An identity refusal's reason: the message of the gateway's own 401 answer, with
        anything token-like cut out; its code alone when the answer is not ours."""
        call = self.call
        code = str(call.get("error") or "identity")
        try:
            body = body_bytes(call.get("response_body"), call.get("response_body_encoding"))
            message = json.loads(body or b"")["error"]["message"]
        except (ValueError, TypeError, KeyError):
            return code
        if not isinstance(message, str):
            return code
        message = _TOKENISH.sub("[REDACTED]", message)
        return f"{code}: {message[:MAX_DETAIL]}"

    def base(self, class_uid: int, activity_id: int, activity: str, uid: str,
             severity_id: int) -> dict[str, Any]:
        class_name, category_uid, category_name = CLASSES[class_uid]
        return {
            "class_uid": class_uid,
            "class_name": class_name,
            "category_uid": category_uid,
            "category_name": category_name,
            "activity_id": activity_id,
            "activity_name": activity,
            "type_uid": class_uid * 100 + activity_id,
            "type_name": f"{class_name}: {activity}",
            "severity_id": severity_id,
            "severity": SEVERITIES[severity_id],
            "time": self.time,
            "metadata": {
                "version": OCSF_VERSION,
                "product": {"name": PRODUCT, "vendor_name": PRODUCT, "version": _version()},
                "uid": uid,
                "correlation_uid": self.call_id,
                "log_name": LOG_NAME,
                "profiles": ["security_control"],
            },
        }


def _outcome(done: str | None, decided: str | None) -> dict[str, Any]:
    """action_id / disposition_id of what was done; a refusal that was decided but not
    enforced (monitor mode) is Detected."""
    if done and decided and done != decided and DISPOSITIONS.get(done, (0,))[0] == 1 \
            and DISPOSITIONS.get(decided, (0,))[0] == 2:
        action_id, disposition_id, disposition = DETECTED
    elif done in DISPOSITIONS:
        action_id, disposition_id, disposition = DISPOSITIONS[done]
    else:  # a gateway's refusal without a policy decision (uninspectable, unrecorded...)
        action_id, disposition_id, disposition = (0, OTHER, str(done or "Unknown"))
    return {"action_id": action_id, "action": ACTIONS[action_id],
            "disposition_id": disposition_id, "disposition": disposition}


def _ms(text: str | None) -> int | None:
    """An ISO time as the store gives it (microseconds) in milliseconds since the epoch."""
    if not text:
        return None
    return to_us(datetime.fromisoformat(str(text).replace("Z", "+00:00"))) // 1000


def _endpoint(address: str | None) -> dict[str, Any]:
    """`host:port` or `[v6]:port` as an OCSF network endpoint."""
    if not address:
        return {"name": "unknown"}
    host, _, port = str(address).rpartition(":")
    if not host:
        host, port = str(address), ""
    host = host.strip("[]")
    endpoint: dict[str, Any] = {"ip": host} if _is_ip(host) else {"hostname": host}
    if port.isdigit():
        endpoint["port"] = int(port)
    return endpoint


def _url(text: str | None) -> dict[str, Any]:
    """An OCSF url object without the query, the fragment or any user info: nothing a caller
    put in parameters leaves the store this way."""
    if not text:
        return {}
    try:
        parts = urllib.parse.urlsplit(str(text))
        port = parts.port
    except ValueError:
        return {}
    hostname = parts.hostname or ""
    host = f"[{hostname}]" if ":" in hostname else hostname
    netloc = f"{host}:{port}" if port is not None else host
    url: dict[str, Any] = {
        "url_string": urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", "")),
        "scheme": parts.scheme,
        "hostname": hostname,
        "path": parts.path or "/",
    }
    if port is not None:
        url["port"] = port
    return url


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@lru_cache(maxsize=1)
def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("toolgate")
    except PackageNotFoundError:
        return "unknown"
