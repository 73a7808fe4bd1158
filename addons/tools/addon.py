"""Pinned MCP tool definitions (tool poisoning, rug pulls): `rules.toolpins` over the wire.

After the policy, for MCP calls only:

- a `tools/list` answer (JSON or event stream) is fingerprinted tool by tool: a server's first
  answer pins its tools; a changed or new tool is a change waiting for a reviewer. Under
  `defaults: tool_changes: block` such tools are left out of a JSON answer before the client
  sees it (an event stream has already passed: its tools' calls are refused all the same);
- a `tools/call` of a tool whose definition is not the pinned one, or was never listed, is
  refused 403 `tool_changed` (`block`), held for `tool_approvers` (`approve`), or only
  recorded (`monitor`, the default);
- `toolgate tools list | show | approve | forget` (the admin API's `/api/tools` routes) let a
  reviewer in `tool_approvers` see the change and accept it; an acceptance is recorded in the
  `approvals` table like a decision on a held call, and every pin event in `tool_events`.

The pins are rebuilt from the store at start. Until they are, a tool is not trusted: listings
are not pinned and calls are handled as changed tools. In a fleet (`toolgate_control`), every
pin event also goes to the control plane, and the pins are rebuilt from, and kept up to date
with, the fleet's events: a listing one node saw pins the tools for all, an acceptance on one
node holds on all.
"""

from __future__ import annotations

import asyncio
import difflib
import json
import logging
import time
from collections import Counter
from dataclasses import asdict
from typing import Any

from mitmproxy import ctx, http

from toolgate.addons import flowmeta
from toolgate.addons.answers import Refusal, call_id_of, refuse
from toolgate.addons.approvals.admin import AdminRequest, Answer
from toolgate.addons.approvals.holds import ReviewError
from toolgate.addons.failclosed.hooks import flow_hook
from toolgate.addons.headers import header_value
from toolgate.rules.protocols import EVENT_STREAM, ProtocolError, jsonbody, mcp, media_type
from toolgate.rules.protocols.sse import parse_all
from toolgate.rules.toolpins import PinEvent, Pins, listed_tools, without_tools
from toolgate.sessions.control import ControlUnavailable
from toolgate.sessions.records import ApprovalRecord

logger = logging.getLogger(__name__)

RECORD_TIMEOUT = 30.0
LOAD_RETRY = 2.0  # seconds between attempts to read the pins from the store


class ToolPins:
    def __init__(self) -> None:
        self.pins = Pins()
        self.loaded = False
        self.stats: Counter[str] = Counter()  # refused, held, stripped, changes
        self._loader: asyncio.Task[None] | None = None
        self._fleet_seen = 0  # the last of the fleet's pin events applied here
        self._unpublished: list[PinEvent] = []  # kept here, not yet in the fleet's

    def running(self) -> None:
        admin = ctx.master.addons.get("admin")
        if admin is not None:
            admin.register_route("GET", "/api/tools", self._list)
            admin.register_route("GET", "/api/tools/show", self._show)
            admin.register_route("POST", "/api/tools/approve", self._approve)
            admin.register_route("POST", "/api/tools/forget", self._forget)
        if self._loader is None:
            self._loader = asyncio.get_running_loop().create_task(self._load())

    def done(self) -> None:
        if self._loader is not None:
            self._loader.cancel()

    async def _load(self) -> None:
        recorder = ctx.master.addons.get("recorder")
        load = getattr(recorder, "tool_events", None)
        in_fleet = bool(getattr(ctx.options, "toolgate_control", None))
        fleet = None
        while not self.loaded:
            fleet = _fleet()
            if in_fleet and fleet is None:  # the approvals addon links to it as it starts
                await asyncio.sleep(0.05)
                continue
            try:
                if fleet is not None:  # the fleet's events are the pins of every node
                    rows = await fleet.plane.tool_events()
                    events = [PinEvent(**state) for _, state in rows]
                    self._fleet_seen = rows[-1][0] if rows else 0
                else:
                    events = await asyncio.wrap_future(load()) if callable(load) else []
            except Exception as exc:  # noqa: BLE001 - try again; tools stay untrusted meanwhile
                logger.warning("toolgate: cannot read the pinned tool definitions yet: %s", exc)
                await asyncio.sleep(LOAD_RETRY)
                continue
            self.pins = Pins.replay(events)
            self.loaded = True
        if fleet is not None:
            fleet.on_tools = self._sync_fleet

    async def _sync_fleet(self) -> None:
        """Publish what this node kept and the fleet lacks; apply what other nodes saw."""
        fleet = _fleet()
        if fleet is None or not self.loaded:
            return
        if self._unpublished:
            waiting, self._unpublished = self._unpublished, []
            try:
                await fleet.plane.publish_tool_events([asdict(e) for e in waiting])
            except Exception:
                self._unpublished = waiting + self._unpublished
                raise
        for event_id, state in await fleet.plane.tool_events(self._fleet_seen):
            self.pins.apply(PinEvent(**state))  # its own come back too: applying is idempotent
            self._fleet_seen = event_id

    # -- hooks ------------------------------------------------------------------------------

    @flow_hook
    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or flow.metadata.get(flowmeta.REFUSED):
            return
        policy = _policy()
        calls = _tool_calls(flow)
        if not calls or policy is None:
            return
        server = server_of(flow)
        changed = []
        for tool in calls:
            status = self.pins.status(server, tool) if self.loaded else "unknown"
            if status == "unlisted" and _fleet() is not None:
                # another node may have just seen the listing: the fleet's word first
                try:
                    await self._sync_fleet()
                except ControlUnavailable:
                    pass
                status = self.pins.status(server, tool)
            if status == "pinned":
                continue
            if status == "unlisted" and not await self._keep(
                    self.pins.unlisted(server, tool, time.time(), call_id_of(flow))):
                refuse(flow, _unrecorded("called"))
                return
            changed.append((tool, status))
        if not changed or policy.tool_changes == "monitor":
            return
        tool, status = changed[0]
        why = _why(server, tool, status)
        if policy.tool_changes == "block":
            self.stats["refused"] += 1
            record = flow.metadata.get(flowmeta.RECORD_REQUEST)
            if record is not None:
                flow.request.content = record  # never forwarded: keep nothing raw on the flow
            refuse(flow, Refusal("tool_changed", f"{why}; a reviewer must accept it first "
                                 f"(toolgate tools approve {server} {tool})",
                                 f"tool-pin:{tool}"))
            return
        self.stats["held"] += 1
        approval = flow.metadata.get(flowmeta.APPROVAL)
        if approval is not None:  # the policy holds it already: the reviewer is told
            approval["message"] = f"{approval.get('message')}; note: {why}"
            return
        flow.metadata[flowmeta.APPROVAL] = {
            "rule": f"tool-pin:{tool}", "function": tool,
            "approvers": list(policy.tool_approvers), "timeout": None, "hold": "wait",
            "message": f"{why}: approving lets this call through (accepting the definition "
                       f"is `toolgate tools approve {server} {tool}`)",
            "field": "$.params.name", "protocol": "mcp",
        }

    @flow_hook
    async def response(self, flow: http.HTTPFlow) -> None:
        response = flow.response
        if response is None or flow.metadata.get(flowmeta.REFUSED) or not self.loaded \
                or not _is_mcp(flow):  # a listing is MCP's: no other call's body is read
            return
        ids = set(_request_reading(flow)["listings"])
        if not ids:
            return
        stream = media_type(header_value(response.headers, "content-type")) == EVENT_STREAM
        body = response.get_content(strict=False) or b""
        messages = ([_json((e.data or '').encode()) for e in parse_all(body)] if stream
                    else [_json(body)])
        tools = listed_tools(messages, ids)
        if not tools:
            return
        server = server_of(flow)
        events = self.pins.observe(server, tools, time.time(), call_id_of(flow))
        for event in events:
            if event.kind in ("changed", "new"):
                self.stats["changes"] += 1
                logger.warning("toolgate: %s", _why(server, event.tool, event.kind))
            if not await self._keep(event):
                refuse(flow, _unrecorded("released"))
                return
        waiting = self.pins.waiting(server)
        policy = _policy()
        if stream or not waiting or policy is None or policy.tool_changes != "block":
            return
        self.stats["stripped"] += 1
        response.content = _dumps(without_tools(messages[0], ids, waiting))
        if (record := flow.metadata.get(flowmeta.RECORD_RESPONSE)) is not None:
            flow.metadata[flowmeta.RECORD_RESPONSE] = _dumps(
                without_tools(_json(record), ids, waiting))

    async def _keep(self, event: PinEvent) -> bool:
        """Hand a pin event to the session store; under audit durability, False if it was not
        kept (then what showed it must not go on)."""
        recorder = ctx.master.addons.get("recorder")
        submit = getattr(recorder, "submit_tool_event", None)
        if not callable(submit):
            return True
        try:
            future = submit(event)
            if getattr(recorder, "durability", "audit") == "audit":
                await asyncio.wait_for(asyncio.wrap_future(future), RECORD_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - any failure means "not kept"
            logger.error("toolgate: could not record the %s tool event of %s %s: %s",
                         event.kind, event.server, event.tool, exc)
            return False
        if _fleet() is not None:  # then the fleet's, now or at the next poll
            self._unpublished.append(event)
            try:
                await self._sync_fleet()
            except ControlUnavailable as exc:
                logger.warning("toolgate: the fleet has not got the %s tool event of %s %s "
                               "yet: %s", event.kind, event.server, event.tool, exc)
        return True

    # -- the admin API ----------------------------------------------------------------------

    async def _list(self, request: AdminRequest) -> Answer:
        self._check_loaded()
        return 200, {"tools": [state.summary() for state in self.pins.tools()],
                     "policy": getattr(_policy(), "tool_changes", None)}

    async def _show(self, request: AdminRequest) -> Answer:
        state = self._state(request.query.get("server", ""), request.query.get("tool", ""))
        pinned = state.pinned.definition if state.pinned else None
        pending = state.pending.definition if state.pending else None
        diff = "".join(difflib.unified_diff(
            _pretty(pinned).splitlines(True), _pretty(pending).splitlines(True),
            "pinned", "listed now")) if state.pending is not None else ""
        return 200, {**state.summary(), "pinned_definition": pinned,
                     "pending_definition": pending, "diff": diff}

    async def _approve(self, request: AdminRequest) -> Answer:
        body, reviewer = _reviewed(request)
        state = self._state(body.get("server", ""), body.get("tool", ""))
        pending = state.pending
        if pending is None:
            raise ReviewError(409, "conflict", f"{state.tool} of {state.server} has no change "
                              "waiting: its pinned definition is in force")
        if body.get("fingerprint") and body["fingerprint"] != pending.fingerprint:
            raise ReviewError(409, "conflict", "the definition changed again since you looked: "
                              "show it again")
        if pending.definition is None:
            raise ReviewError(409, "conflict", f"{state.tool} was called but never listed by "
                              f"{state.server}: nothing to accept until a listing shows it")
        now = time.time()
        event = PinEvent(state.server, state.tool, "approved", pending.fingerprint,
                         pending.definition, now, pending.call_id, reviewer, body["reason"])
        channel = _channel(request)
        await self._record_acceptance(event, pending, channel)
        if not await self._keep(event):
            raise ReviewError(503, "unrecorded", "the acceptance could not be recorded")
        self.pins.apply(event)
        return 200, {**state.summary(), "reviewer": reviewer, "channel": channel}

    async def _forget(self, request: AdminRequest) -> Answer:
        body, reviewer = _reviewed(request)
        self._check_loaded()
        server, tool = body.get("server", ""), body.get("tool") or "*"
        if server not in self.pins.servers or (tool != "*" and self.pins.get(server, tool)
                                               is None):
            raise ReviewError(404, "not_found", f"no pinned tool {tool} of {server}")
        event = PinEvent(server, tool, "forgotten", None, None, time.time(), None, reviewer,
                         body["reason"])
        if not await self._keep(event):
            raise ReviewError(503, "unrecorded", "forgetting could not be recorded")
        self.pins.apply(event)
        return 200, {"server": server, "tool": tool, "forgotten": True}

    async def _record_acceptance(self, event: PinEvent, pending: PinEvent, channel: str) -> None:
        recorder = ctx.master.addons.get("recorder")
        submit = getattr(recorder, "submit_approval", None)
        if not callable(submit):
            return
        record = ApprovalRecord(
            pending.call_id or "", pending.at, event.at, "approved", event.reviewer, channel,
            event.reason or "", f"tool definition: {event.server} {event.tool} "
                                f"sha256:{event.fingerprint}")
        try:
            await asyncio.wait_for(asyncio.wrap_future(submit(record)), RECORD_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - not on record: not accepted
            raise ReviewError(503, "unrecorded", f"the acceptance could not be recorded: {exc}")

    def _check_loaded(self) -> None:
        if not self.loaded:
            raise ReviewError(503, "unavailable", "the pinned tool definitions are still being "
                              "read from the session store; try again in a moment")

    def _state(self, server: str, tool: str):
        self._check_loaded()
        state = self.pins.get(server, tool)
        if state is None:
            raise ReviewError(404, "not_found", f"no tool {tool!r} of server {server!r} "
                              "(toolgate tools list)")
        return state


def _unrecorded(what: str) -> Refusal:
    return Refusal("unrecorded", f"the session store cannot record the tool definitions this "
                   f"call showed, so it was not {what}; the gateway's log says why")


def server_of(flow: http.HTTPFlow) -> str:
    """The MCP server a call goes to: its URL without the query."""
    request = flow.request
    return f"{request.scheme}://{request.host}:{request.port}{request.path.split('?', 1)[0]}"


def _is_mcp(flow: http.HTTPFlow) -> bool:
    """Whether the policy read the call as MCP (`flowmeta.PROTOCOL`)."""
    return (flow.metadata.get(flowmeta.PROTOCOL) or {}).get("protocol") == "mcp"


def _request_reading(flow: http.HTTPFlow) -> dict[str, Any]:
    """What an MCP request calls and lists (`called`, `listings`): the policy's reading of it
    (`mcp.request_context`, kept in `flowmeta.PROTOCOL`), or the body read the same way here
    when the policy did not say."""
    context = flow.metadata.get(flowmeta.PROTOCOL) or {}
    if isinstance(context.get("called"), list) and isinstance(context.get("listings"), list):
        return context
    return mcp.request_context(_json(flow.request.get_content(strict=False)))


def _tool_calls(flow: http.HTTPFlow) -> list[str]:
    """The tools an MCP request calls, a name holding a labelled value (the caller's text) with
    the value redacted, as the store keeps it (`flowmeta.shown_function`): pinned, logged and
    refused under that name."""
    if not _is_mcp(flow):
        return []
    return [flowmeta.shown_function(flow.metadata, name)
            for name in _request_reading(flow)["called"] if isinstance(name, str)]


def _why(server: str, tool: str, status: str) -> str:
    return {
        "changed": f"tool {tool} of {server} changed since its definition was pinned",
        "new": f"tool {tool} of {server} is new since the server's tools were pinned",
        "unlisted": f"tool {tool} was never listed by {server}",
        "unknown": f"the pinned definitions of {server}'s tools are not loaded yet",
    }.get(status, f"tool {tool} of {server} was never listed")


def _fleet() -> Any:
    """The approvals addon's link to the fleet's control plane, if any."""
    return getattr(ctx.master.addons.get("approvals"), "fleet", None)


def _policy() -> Any:
    policy = ctx.master.addons.get("policy")
    rules = getattr(policy, "rules", None)
    return getattr(rules, "current", None)


def _reviewed(request: AdminRequest) -> tuple[dict[str, Any], str]:
    """The request's body, and the reviewer's subject once they may decide tool changes."""
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise ReviewError(400, "bad_request", "the body must be a JSON object")
    if not isinstance(body.get("reason"), str) or not body["reason"].strip():
        raise ReviewError(400, "bad_request", "a reason is required: say why (--reason TEXT)")
    identity = request.identity or {}
    subject = identity.get("subject")
    if not subject or identity.get("anonymous"):
        raise ReviewError(401, "identity", "the reviewer must present a valid OIDC token")
    approvers = tuple(getattr(_policy(), "tool_approvers", ()) or ())
    if not set(identity.get("groups") or ()) & set(approvers):
        raise ReviewError(403, "forbidden", f"{subject} is not in tool_approvers "
                          f"({', '.join(approvers) or 'none set in the rules'})")
    return body, subject


def _channel(request: AdminRequest) -> str:
    return "cli" if request.headers.get("X-Toolgate-Channel", "").lower() == "cli" else "admin"


def _json(data: bytes | None) -> Any:
    """A body read as the policy reads it (its strict reader: what it let through, this reads
    the same way), for its names and ids; None if it is not JSON."""
    try:
        return jsonbody.loads(data or b"")
    except ProtocolError:
        return None


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _pretty(definition: Any) -> str:
    return json.dumps(definition, indent=2, sort_keys=True, ensure_ascii=False) + "\n" if (
        definition is not None) else ""
