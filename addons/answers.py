"""The one place that builds toolgate's own answers to callers.

Every refusal has the same JSON shape, `{"error": {"code", "message", "rule", "field",
"call_id"}}`, and every answer carries `X-Toolgate-Call-Id`. A JSON-RPC request (MCP) gets a
JSON-RPC error object with its own `id` instead, so an agent sees a tool error rather than a
transport failure; identity failures stay HTTP 401, as MCP's authorization flow expects.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from mitmproxy import http

from toolgate.addons import flowmeta

CALL_ID_HEADER = "X-Toolgate-Call-Id"

# error.code -> HTTP status of a plain (non JSON-RPC) answer.
STATUS: dict[str, int] = {
    "identity": 401,
    "blocked": 403,
    "denied": 403,
    "approval_timeout": 403,
    "approval_pending": 409,  # a `hold: return` call: decided later, retried by the caller
    "tool_changed": 403,  # an MCP tool whose definition is not the pinned one
    "uninspectable": 400,
    "malformed": 400,
    "upstream": 502,
    "unrecorded": 503,
    "unavailable": 503,
    "internal": 500,
}

# Refusals that are a policy outcome: a JSON-RPC caller gets them as HTTP 200 with an error
# object. Failures of the gateway or its dependencies keep their HTTP status.
POLICY_CODES = frozenset({"blocked", "denied", "approval_timeout", "approval_pending",
                          "tool_changed", "uninspectable", "malformed"})

JSONRPC_POLICY_ERROR = -32001


@dataclass(frozen=True)
class Refusal:
    """Why a call was not let through, in the terms a caller can act on."""

    code: str
    message: str
    rule: str | None = None
    field: str | None = None
    status: int | None = None  # overrides STATUS, e.g. 413 for an oversized body
    extra: dict[str, Any] | None = None  # more for the caller, e.g. the pending `approval`

    def __post_init__(self) -> None:
        if self.code not in STATUS:
            raise ValueError(f"unknown error code {self.code!r}")

    @property
    def http_status(self) -> int:
        return self.status or STATUS[self.code]

    def detail(self, call_id: str) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "rule": self.rule,
            "field": self.field,
            "call_id": call_id,
            **(self.extra or {}),
        }


def new_call_id() -> str:
    return uuid.uuid4().hex


def call_id_of(flow: http.HTTPFlow) -> str:
    """The flow's call id, assigned on first use so that even the earliest answer has one."""
    call_id = flow.metadata.get(flowmeta.CALL_ID)
    if not call_id:
        call_id = flow.metadata[flowmeta.CALL_ID] = new_call_id()
    return call_id


def jsonrpc_ids(body: bytes | None) -> tuple[bool, list[Any]] | None:
    """If `body` is a JSON-RPC 2.0 request (or batch), whether it was a batch and the ids
    of its requests; notifications (no `id`) expect no answer. None if it is not JSON-RPC."""
    if not body or body.lstrip()[:1] not in (b"{", b"["):
        return None
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return None
    messages = doc if isinstance(doc, list) else [doc]
    if not messages or not all(
        isinstance(m, dict) and m.get("jsonrpc") == "2.0" and "method" in m for m in messages
    ):
        return None
    return isinstance(doc, list), [m["id"] for m in messages if "id" in m]


def error_document(
    refusal: Refusal, call_id: str, *, jsonrpc: bool = False, rpc_id: Any = None
) -> dict[str, Any]:
    """The error as a JSON document: `{"error": {...}}`, or a JSON-RPC error object."""
    if not jsonrpc or refusal.code == "identity":
        return {"error": refusal.detail(call_id)}
    data = refusal.detail(call_id)
    del data["message"]
    return {
        "jsonrpc": "2.0",
        "id": rpc_id,
        "error": {"code": JSONRPC_POLICY_ERROR, "message": refusal.message, "data": data},
    }


def error_body(refusal: Refusal, call_id: str, request_body: bytes | None) -> tuple[int, bytes]:
    """Status and JSON body of the answer to a refused call."""
    rpc = jsonrpc_ids(request_body) if refusal.code != "identity" else None
    if rpc is None:
        return refusal.http_status, _dumps(error_document(refusal, call_id))
    is_batch, ids = rpc
    # A call we cannot tie to an id still gets one answer.
    errors = [error_document(refusal, call_id, jsonrpc=True, rpc_id=rid) for rid in ids or [None]]
    status = 200 if refusal.code in POLICY_CODES else refusal.http_status
    return status, _dumps(errors if is_batch else errors[0])


def refuse(
    flow: http.HTTPFlow, refusal: Refusal, *, resource_metadata: str | None = None,
    token_sent: bool = True,
) -> None:
    """Answer `flow` with `refusal` instead of forwarding it (or instead of the backend's
    answer, when called on a response). An identity refusal names `resource_metadata`, the
    gateway's OAuth metadata URL, in its challenge when there is one; `token_sent=False` (no
    credential at all) leaves the error out of the challenge, as RFC 6750 section 3.1 says."""
    call_id = call_id_of(flow)
    # Only an unencoded body is looked at: decoding a compressed one here could be a bomb.
    request_body = None if "content-encoding" in flow.request.headers else flow.request.raw_content
    status, content = error_body(refusal, call_id, request_body)
    headers = {"Content-Type": "application/json", CALL_ID_HEADER: call_id}
    if refusal.code == "identity":
        headers["WWW-Authenticate"] = www_authenticate(refusal.message, resource_metadata,
                                                       token_sent)
    flow.response = http.Response.make(status, content, headers)
    flow.metadata[flowmeta.REFUSED] = refusal.code


def www_authenticate(reason: str, resource_metadata: str | None = None,
                     token_sent: bool = True) -> str:
    """RFC 6750 challenge; the description is the same actionable reason as the body's. With
    `resource_metadata` (RFC 9728 section 5.1), where a client learns how to get a token; it
    comes before the description, which may quote what the caller sent: clients take the
    first `resource_metadata=` they find. A request without any credential gets no error
    code or description (RFC 6750 section 3.1: it did not try; the body says what to send)."""
    challenge = 'Bearer realm="toolgate"'
    if resource_metadata:
        challenge += f', resource_metadata="{resource_metadata}"'
    if not token_sent:
        return challenge
    description = reason.replace("\\", "\\\\").replace('"', "'")
    return f'{challenge}, error="invalid_token", error_description="{description}"'


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), default=str).encode()
