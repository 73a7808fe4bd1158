"""Plain REST: one unit per message, named by the function catalog (method + path)."""

from __future__ import annotations

from typing import Any, Mapping

from toolgate.rules.bodies import encode_form, parse_form
from toolgate.rules.protocols import jsonbody
from toolgate.rules.protocols.base import Message, Unit


class _Holder:
    """The body as a mutable slot, so masking can replace it whole."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def put(self, value: Any) -> None:
        self.value = value


def json_message(value: Any, direction: str, arguments: Any = None) -> Message:
    slot = _Holder(value)
    unit = Unit("rest", direction, None, value, slot.put, "$", arguments)
    return Message("rest", [unit], lambda: jsonbody.dumps(slot.value))


def form_message(text: str, direction: str) -> Message:
    slot = _Holder(parse_form(text))
    unit = Unit("rest", direction, None, slot.value, slot.put, "$")
    return Message("rest", [unit], lambda: encode_form(slot.value).encode())


def text_message(text: str, direction: str) -> Message:
    slot = _Holder(text)
    unit = Unit("rest", direction, None, text, slot.put, "$")
    return Message("rest", [unit], lambda: str(slot.value).encode())


def empty_message(direction: str, query: Mapping[str, Any] | None = None) -> Message:
    """No body: a request's query parameters are still evaluated (as its arguments)."""
    unit = Unit("rest", direction, None, None, lambda value: None, "$")
    return Message("rest", [unit] if direction == "request" or query else [], lambda: b"")
