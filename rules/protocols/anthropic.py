"""Anthropic-style messages: `tool_use` blocks (`input`) and `tool_result` blocks."""

from __future__ import annotations

from typing import Any

from rules.protocols import jsonbody
from rules.protocols.base import Message, Unit


def is_messages(value: Any, path: str, headers_say_anthropic: bool) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("messages"), list)
        and (headers_say_anthropic or path.rstrip("/").endswith("/messages"))
    )


def is_messages_response(value: Any) -> bool:
    return isinstance(value, dict) and value.get("type") == "message"


def _setter(obj: dict[str, Any], key: str):
    def put(masked: Any) -> None:
        obj[key] = masked

    return put


def block_units(blocks: Any, location: str, names: dict[Any, str]) -> list[Unit]:
    units: list[Unit] = []
    if not isinstance(blocks, list):
        return units
    for k, block in enumerate(blocks):
        if not isinstance(block, dict):
            continue
        where = f"{location}[{k}]"
        if block.get("type") == "tool_use":
            name = block.get("name") if isinstance(block.get("name"), str) else "unknown_tool"
            names[block.get("id")] = name
            units.append(Unit("anthropic", "request", name, block.get("input"),
                              _setter(block, "input"), f"{where}.input"))
        elif block.get("type") == "tool_result":
            name = names.get(block.get("tool_use_id"), "unknown_tool")
            units.append(Unit("anthropic", "response", name, block.get("content"),
                              _setter(block, "content"), f"{where}.content"))
    return units


def request_message(value: dict[str, Any]) -> Message:
    names: dict[Any, str] = {}
    units: list[Unit] = []
    for i, msg in enumerate(value.get("messages") or []):
        if isinstance(msg, dict):
            units += block_units(msg.get("content"), f"$.messages[{i}].content", names)
    return Message("anthropic", units, lambda: jsonbody.dumps(value), {"protocol": "anthropic"})


def response_message(value: dict[str, Any]) -> Message:
    units = block_units(value.get("content"), "$.content", {})
    return Message("anthropic", units, lambda: jsonbody.dumps(value), {"protocol": "anthropic"})
