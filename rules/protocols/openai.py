"""OpenAI-style chat completions: `tool_calls[].function` (arguments as a JSON string) in
requests (earlier turns) and responses, `role: tool` results sent back to the model, and the
text of every other message (system, developer, user, assistant: `content` as a string or as
`text` parts, and an assistant's `refusal`)."""

from __future__ import annotations

from typing import Any

from toolgate.rules.protocols import jsonbody
from toolgate.rules.protocols.base import Message, Unit, content_function
from toolgate.rules.protocols.toolargs import decode_arguments


def is_chat(value: Any, path: str) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("messages"), list)
        and (path.rstrip("/").endswith("/chat/completions") or "tools" in value)
    )


def is_chat_response(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("choices"), list)


def call_unit(call: Any, location: str, direction: str = "request") -> tuple[Unit | None, str | None]:
    """The unit of one `tool_calls[]` entry, and its function name."""
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict):
        return None, None
    name = function.get("name") if isinstance(function.get("name"), str) else "unknown_tool"
    value, encode = decode_arguments(function.get("arguments"))

    def put(masked: Any) -> None:
        function["arguments"] = encode(masked)

    return Unit("openai", direction, name, value, put, f"{location}.function.arguments"), name


def text_units(message: dict[str, Any], location: str, direction: str) -> list[Unit]:
    """The text of one message: `content` (a string, or a list whose `text` and `refusal` parts
    are text; images, audio and files are not) and `refusal`."""
    function = content_function(message.get("role", "assistant" if direction == "response" else None))
    units: list[Unit] = []

    def text(holder: dict[str, Any], key: str, where: str) -> None:
        if isinstance(holder.get(key), str):
            units.append(Unit("openai", direction, function, holder[key], _setter(holder, key),
                              where, content=True))

    content = message.get("content")
    if isinstance(content, list):
        for k, part in enumerate(content):
            if isinstance(part, dict):
                for key in ("text", "refusal"):
                    text(part, key, f"{location}.content[{k}].{key}")
    else:
        text(message, "content", f"{location}.content")
    text(message, "refusal", f"{location}.refusal")
    return units


def request_message(value: dict[str, Any]) -> Message:
    units: list[Unit] = []
    names: dict[Any, str] = {}
    for i, msg in enumerate(value.get("messages") or []):
        if not isinstance(msg, dict):
            continue
        if msg.get("role") not in ("tool", "function"):
            units += text_units(msg, f"$.messages[{i}]", "request")
        for j, call in enumerate(msg.get("tool_calls") or []):
            unit, name = call_unit(call, f"$.messages[{i}].tool_calls[{j}]")
            if unit:
                units.append(unit)
                names[call.get("id")] = name
        if msg.get("role") in ("tool", "function"):
            name = msg.get("name") if msg.get("role") == "function" else None
            name = name or names.get(msg.get("tool_call_id"), "unknown_tool")
            units.append(Unit("openai", "response", name, msg.get("content"),
                              _setter(msg, "content"), f"$.messages[{i}].content"))
    return Message("openai", units, lambda: jsonbody.dumps(value), {"protocol": "openai"})


def response_message(value: dict[str, Any]) -> Message:
    units: list[Unit] = []
    for i, choice in enumerate(value.get("choices") or []):
        if not isinstance(choice, dict):
            continue
        message = choice.get("message")
        if isinstance(message, dict):
            units += text_units(message, f"$.choices[{i}].message", "response")
            for j, call in enumerate(message.get("tool_calls") or []):
                unit, _ = call_unit(call, f"$.choices[{i}].message.tool_calls[{j}]")
                if unit:
                    units.append(unit)
        elif isinstance(choice.get("text"), str):  # a legacy completion
            units.append(Unit("openai", "response", "message.assistant", choice["text"],
                              _setter(choice, "text"), f"$.choices[{i}].text", content=True))
    return Message("openai", units, lambda: jsonbody.dumps(value), {"protocol": "openai"})


def _setter(obj: dict[str, Any], key: str):
    def put(masked: Any) -> None:
        obj[key] = masked

    return put
