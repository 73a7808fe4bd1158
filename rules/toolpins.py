"""Pinned MCP tool definitions: what a server said its tools are, and what changed since.

Tool poisoning and rug pulls work through a tool's definition: a description that instructs the
model, a schema that asks for more than the tool needs, a definition that changes after the
client trusted it. The first `tools/list` answer seen from a server pins each tool's definition
(name, description, input schema) by its SHA-256; a later answer with a changed or new tool, or
a call to a tool never listed, is a change a reviewer must accept (`toolgate tools approve`).
Until then the rules' `defaults: tool_changes` says what happens: `block` (the tool is left out
of the listing its client gets, and calls to it are refused), `approve` (calls to it are held
for `tool_approvers`), or `monitor` (only recorded).

Plain values only: the addon feeds answers in and asks about calls, the store keeps the events
(`PinEvent`) from which `Pins` is rebuilt at start.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from toolgate.rules.protocols import mcp

TOOL_CHANGES = ("monitor", "block", "approve")
DEFINITION_KEYS = ("name", "description", "inputSchema")
# A pin event's kind: the first definitions of a server, a change seen, a reviewer's acceptance,
# a pin removed (the next listing pins afresh).
EVENTS = ("pinned", "changed", "new", "approved", "forgotten")


def definition_of(tool: dict[str, Any]) -> dict[str, Any]:
    """What is pinned of a tool: its name, description and input schema."""
    return {key: tool.get(key) for key in DEFINITION_KEYS}


def fingerprint(definition: dict[str, Any]) -> str:
    data = json.dumps(definition_of(definition), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False)
    return hashlib.sha256(data.encode()).hexdigest()


@dataclass(frozen=True)
class PinEvent:
    """One line of a server's tool history, as the store keeps it."""

    server: str
    tool: str
    kind: str  # one of EVENTS
    fingerprint: str | None
    definition: dict[str, Any] | None
    at: float
    call_id: str | None = None  # the call that showed it (a tools/list answer, a tools/call)
    reviewer: str | None = None
    reason: str | None = None


@dataclass
class ToolState:
    """A tool of a server: the definition pinned, and a changed one waiting for a reviewer."""

    server: str
    tool: str
    pinned: PinEvent | None = None
    pending: PinEvent | None = None

    @property
    def status(self) -> str:
        if self.pending is not None:
            return self.pending.kind  # changed, or new (never pinned before)
        return "pinned"

    def summary(self) -> dict[str, Any]:
        return {
            "server": self.server, "tool": self.tool, "status": self.status,
            "pinned": self.pinned.fingerprint if self.pinned else None,
            "pending": self.pending.fingerprint if self.pending else None,
            "pinned_at": self.pinned.at if self.pinned else None,
            "changed_at": self.pending.at if self.pending else None,
        }


@dataclass
class Pins:
    """Every server's tools, rebuilt from events and kept up to date by `observe`."""

    servers: dict[str, dict[str, ToolState]] = field(default_factory=dict)

    @classmethod
    def replay(cls, events: Iterable[PinEvent]) -> "Pins":
        pins = cls()
        for event in events:
            pins.apply(event)
        return pins

    def apply(self, event: PinEvent) -> None:
        tools = self.servers.setdefault(event.server, {})
        if event.kind == "forgotten":
            if event.tool == "*":
                self.servers.pop(event.server, None)
            else:
                tools.pop(event.tool, None)
                if not tools:
                    self.servers.pop(event.server, None)
            return
        state = tools.setdefault(event.tool, ToolState(event.server, event.tool))
        if event.kind in ("pinned", "approved"):
            state.pinned, state.pending = event, None
        else:
            state.pending = event

    def observe(self, server: str, tools: list[dict[str, Any]], now: float,
                call_id: str | None) -> list[PinEvent]:
        """A `tools/list` answer of `server`: the events it makes (applied already). The first
        answer of a server pins every tool in it; later ones report new and changed tools
        (each once, until its definition changes again)."""
        known = self.servers.get(server)
        events = []
        for tool in tools:
            name, digest = str(tool.get("name")), fingerprint(tool)
            state = (known or {}).get(name)
            if not known:
                kind = "pinned"
            elif state is None:
                kind = "new"
            elif state.pinned is not None and state.pinned.fingerprint == digest:
                if state.pending is not None:  # changed back to what was pinned
                    events.append(PinEvent(server, name, "approved", digest, definition_of(tool),
                                           now, call_id, None, "the server lists the pinned "
                                           "definition again"))
                continue
            elif state.pending is not None and state.pending.fingerprint == digest:
                continue
            else:
                kind = "changed" if state.pinned is not None else "new"
            events.append(PinEvent(server, name, kind, digest, definition_of(tool), now,
                                   call_id))
        for event in events:
            self.apply(event)
        return events

    def unlisted(self, server: str, tool: str, now: float, call_id: str | None) -> PinEvent:
        """A call to a tool `server` never listed: recorded as new, with no definition."""
        event = PinEvent(server, tool, "new", None, None, now, call_id)
        self.apply(event)
        return event

    def status(self, server: str, tool: str) -> str:
        """`pinned`, `changed`, `new`, or `unlisted` (never seen at all)."""
        state = self.servers.get(server, {}).get(tool)
        return state.status if state is not None else "unlisted"

    def get(self, server: str, tool: str) -> ToolState | None:
        return self.servers.get(server, {}).get(tool)

    def tools(self) -> list[ToolState]:
        return [state for server in sorted(self.servers)
                for _, state in sorted(self.servers[server].items())]

    def waiting(self, server: str) -> set[str]:
        """The tools of `server` with a change nobody accepted yet."""
        return {name for name, state in self.servers.get(server, {}).items()
                if state.pending is not None}


# -- reading and rewriting tools/list answers ------------------------------------------------------

def tools_list_ids(request: Any) -> set[str]:
    """The JSON-RPC ids of the `tools/list` requests in a decoded request body (single or
    batch), as JSON text (`mcp.id_key`)."""
    return set(mcp.request_context(request)["listings"])


def listed_tools(messages: Iterable[Any], ids: set[str]) -> list[dict[str, Any]]:
    """The tools in the results of those messages that answer `ids`."""
    found = []
    for message in messages:
        for m in message if isinstance(message, list) else [message]:
            if not isinstance(m, dict) or mcp.id_key(m.get("id")) not in ids:
                continue
            tools = (m.get("result") or {}).get("tools") if isinstance(m.get("result"),
                                                                        dict) else None
            if isinstance(tools, list):
                found += [t for t in tools if isinstance(t, dict) and isinstance(t.get("name"),
                                                                                  str)]
    return found


def without_tools(message: Any, ids: set[str], names: set[str]) -> Any:
    """`message` with the tools `names` left out of its answers to `ids`."""
    if isinstance(message, list):
        return [without_tools(m, ids, names) for m in message]
    if (isinstance(message, dict) and mcp.id_key(message.get("id")) in ids
            and isinstance(message.get("result"), dict)
            and isinstance(message["result"].get("tools"), list)):
        result = dict(message["result"])
        result["tools"] = [t for t in result["tools"]
                           if not (isinstance(t, dict) and t.get("name") in names)]
        return {**message, "result": result}
    return message
