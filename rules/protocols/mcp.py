"""MCP: JSON-RPC 2.0 messages, single or batched, in JSON bodies or `text/event-stream` events.

`tools/call` requests are units named by the tool, their `params.arguments` the body; a result
is matched to its call by JSON-RPC id (the request's `context["tools"]`). Other methods are
units named by the method (`tools/list`, `initialize`...), so their params and results are
classified too.
"""

from __future__ import annotations

import json
from typing import Any

from toolgate.rules.protocols import jsonbody
from toolgate.rules.protocols.base import Message, Unit


def is_jsonrpc(value: Any) -> bool:
    messages = value if isinstance(value, list) else [value]
    return bool(messages) and all(
        isinstance(m, dict) and m.get("jsonrpc") == "2.0" for m in messages
    )


def id_key(rid: Any) -> str:
    return json.dumps(rid, sort_keys=True)


def _setter(obj: dict[str, Any], key: str):
    def put(value: Any) -> None:
        obj[key] = value

    return put


def units_of(message: dict[str, Any], location: str, tools: dict[str, str]) -> list[Unit]:
    rid = message.get("id")
    method = message.get("method")
    if isinstance(method, str):
        params = message.get("params")
        if method == "tools/call" and isinstance(params, dict):
            name = params.get("name")
            name = name if isinstance(name, str) else "tools/call"
            if "id" in message:
                tools[id_key(rid)] = name
            return [Unit("mcp", "request", name, params.get("arguments"),
                         _setter(params, "arguments"), f"{location}.params.arguments",
                         rpc_id=rid, is_rpc=True)]
        if "id" in message:
            tools[id_key(rid)] = method
        if params is None:
            return [Unit("mcp", "request", method, None, lambda v: None, location,
                         rpc_id=rid, is_rpc=True)]
        return [Unit("mcp", "request", method, params, _setter(message, "params"),
                     f"{location}.params", rpc_id=rid, is_rpc=True)]
    # A result or an error, answering a request of the other side.
    name = tools.get(id_key(rid), "jsonrpc.result")
    key = "result" if "result" in message else "error" if "error" in message else None
    if key is None:
        return []
    return [Unit("mcp", "response", name, message[key], _setter(message, key),
                 f"{location}.{key}", rpc_id=rid, is_rpc=True)]


def request_context(value: Any) -> dict[str, Any]:
    """A request's context for its answer (`message` adds the ids' names), with what the tool
    pins read of it: the tools it calls (`called`, in order) and the JSON-RPC ids of its
    `tools/list` requests (`listings`, as `id_key` writes them)."""
    messages = [m for m in (value if isinstance(value, list) else [value])
                if isinstance(m, dict) and isinstance(m.get("method"), str)]
    called = [m["params"]["name"] for m in messages if m["method"] == "tools/call"
              and isinstance(m.get("params"), dict) and isinstance(m["params"].get("name"), str)]
    listings = [id_key(m.get("id")) for m in messages if m["method"] == "tools/list" and "id" in m]
    return {"protocol": "mcp", "called": called, "listings": listings}


def message(value: Any, context: dict[str, Any]) -> Message:
    """Units of a JSON-RPC body (already parsed). Requests record their tool names in
    `context["tools"]` for the matching results."""
    tools: dict[str, str] = context.setdefault("tools", {})
    batch = isinstance(value, list)
    units: list[Unit] = []
    for index, item in enumerate(value if batch else [value]):
        units += units_of(item, f"$[{index}]" if batch else "$", tools)
    return Message("mcp", units, lambda: jsonbody.dumps(value), context, jsonrpc=True)
