"""Anthropic-style messages: `tool_use` blocks (`input`), `tool_result` blocks, and the text of
the prompt and the answer: `system` (a string or text blocks), a message's `content` string, and
`text` (and `thinking`) blocks."""

from __future__ import annotations

from typing import Any

from toolgate.rules.protocols import jsonbody
from toolgate.rules.protocols.base import Message, Unit, content_function

TEXT_BLOCKS = {"text": "text", "thinking": "thinking"}  # block type: the key of its text


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


def content_units(holder: dict[str, Any], key: str, location: str, names: dict[Any, str],
                  direction: str, role: Any) -> list[Unit]:
    """The units of `holder[key]`, a content string or list of blocks: tool uses, tool results,
    and text, the text of direction `direction` named by the message's `role`."""
    function = content_function(role)
    blocks = holder.get(key)
    if isinstance(blocks, str):
        return [Unit("anthropic", direction, function, blocks, _setter(holder, key), location,
                     content=True)]
    units: list[Unit] = []
    if not isinstance(blocks, list):
        return units
    for k, block in enumerate(blocks):
        if not isinstance(block, dict):
            continue
        where = f"{location}[{k}]"
        kind = block.get("type")
        if kind == "tool_use":
            name = block.get("name") if isinstance(block.get("name"), str) else "unknown_tool"
            names[block.get("id")] = name
            units.append(Unit("anthropic", "request", name, block.get("input"),
                              _setter(block, "input"), f"{where}.input"))
        elif kind == "tool_result":
            name = names.get(block.get("tool_use_id"), "unknown_tool")
            units.append(Unit("anthropic", "response", name, block.get("content"),
                              _setter(block, "content"), f"{where}.content"))
        elif kind in TEXT_BLOCKS and isinstance(block.get(TEXT_BLOCKS[kind]), str):
            text = TEXT_BLOCKS[kind]
            units.append(Unit("anthropic", direction, function, block[text], _setter(block, text),
                              f"{where}.{text}", content=True))
    return units


def request_message(value: dict[str, Any]) -> Message:
    names: dict[Any, str] = {}
    units = content_units(value, "system", "$.system", names, "request", "system")
    for i, msg in enumerate(value.get("messages") or []):
        if isinstance(msg, dict):
            units += content_units(msg, "content", f"$.messages[{i}].content", names, "request",
                                   msg.get("role"))
    return Message("anthropic", units, lambda: jsonbody.dumps(value), {"protocol": "anthropic"})


def response_message(value: dict[str, Any]) -> Message:
    units = content_units(value, "content", "$.content", {}, "response",
                          value.get("role", "assistant"))
    return Message("anthropic", units, lambda: jsonbody.dumps(value), {"protocol": "anthropic"})
