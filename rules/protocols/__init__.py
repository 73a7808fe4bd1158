"""The one place that knows each protocol's shape: REST (JSON, forms, text), MCP (JSON-RPC,
batches, event streams), OpenAI-style chat completions, Anthropic-style messages.

`parse_request` / `parse_response` turn a decoded body into a `Message` of units for the rule
engine; `StreamChecker` does the same for a `text/event-stream` answer, event by event.
"""

from __future__ import annotations

from typing import Any, Mapping

from toolgate.rules.protocols import anthropic, jsonbody, mcp, openai, rest
from toolgate.rules.protocols.base import Malformed, Message, ProtocolError, Refused, Uninspectable, Unit
from toolgate.rules.protocols.streams import StreamChecker

JSON_TYPES = ("application/json", "application/jsonrequest")
FORM_TYPE = "application/x-www-form-urlencoded"
EVENT_STREAM = "text/event-stream"


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _claims_json(ctype: str) -> bool:
    return ctype in JSON_TYPES or ctype.endswith("+json")


def _text(body: bytes, what: str) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise Uninspectable(f"the {what} is binary or not UTF-8 and cannot be inspected") from None


def _json_or_none(body: bytes, ctype: str) -> Any:
    """The parsed JSON if the body is JSON, whatever its type claims; else `_NOT_JSON`.
    Valid JSON under another type is still read strictly (a backend may parse it anyway)."""
    if _claims_json(ctype) or (jsonbody.looks_like_json(body) and jsonbody.is_json(body)):
        return jsonbody.loads(body)
    return _NOT_JSON


_NOT_JSON = object()


def parse_request(
    path: str, content_type: str | None, body: bytes, headers: Mapping[str, str] | None = None
) -> Message:
    """The units of a request body (`body` already content-decoded)."""
    ctype = media_type(content_type)
    if not body:
        return rest.empty_message("request")
    if ctype == FORM_TYPE:
        return rest.form_message(_text(body, "form body"), "request")
    if ctype.startswith("multipart/"):
        raise Uninspectable("multipart bodies are not inspected")
    value = _json_or_none(body, ctype)
    if value is _NOT_JSON:
        return rest.text_message(_text(body, "request body"), "request")
    if mcp.is_jsonrpc(value):
        return mcp.message(value, mcp.request_context(value))
    is_anthropic = bool(headers and "anthropic-version" in headers)
    if anthropic.is_messages(value, path, is_anthropic):
        return anthropic.request_message(value)
    if openai.is_chat(value, path):
        return openai.request_message(value)
    return rest.json_message(value, "request")


def parse_response(context: Mapping[str, Any], content_type: str | None, body: bytes) -> Message:
    """The units of a response body, read in the light of its request's `context`."""
    ctype = media_type(content_type)
    protocol = context.get("protocol", "rest")
    if not body:
        return rest.empty_message("response")
    if ctype == FORM_TYPE:
        return rest.form_message(_text(body, "form body"), "response")
    value = _json_or_none(body, ctype)
    if value is _NOT_JSON:
        return rest.text_message(_text(body, "response body"), "response")
    if protocol == "mcp" and mcp.is_jsonrpc(value):
        return mcp.message(value, dict(context))
    if protocol == "openai" and openai.is_chat_response(value):
        return openai.response_message(value)
    if protocol == "anthropic" and anthropic.is_messages_response(value):
        return anthropic.response_message(value)
    return rest.json_message(value, "response")


__all__ = [
    "EVENT_STREAM", "Malformed", "Message", "ProtocolError", "Refused", "StreamChecker",
    "Uninspectable", "Unit", "media_type", "parse_request", "parse_response",
]  # fmt: skip
