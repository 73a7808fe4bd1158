"""The shape every protocol adapter produces: a parsed message and the function calls in it.

A *unit* is one function call or one function result inside a message (a REST body, one
JSON-RPC `tools/call` of a batch, one OpenAI `tool_calls[]` entry, one Anthropic `tool_result`
block...). The policy evaluates each unit with the rule engine and, when it masks, hands the
masked value back through `unit.put`; `message.encode()` then gives the bytes to forward.

Directions are those of the *function call*, not of HTTP: arguments are `request`, results
are `response`. An OpenAI request that carries `role: tool` messages therefore holds units of
direction `response` (function results on their way to the model).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


class ProtocolError(Exception):
    """A body the gateway cannot check; `code` is the error code callers get."""

    code = "malformed"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class Malformed(ProtocolError):
    """Invalid where rules apply: bad JSON, duplicate keys, invalid UTF-8, too deep."""

    code = "malformed"


class Uninspectable(ProtocolError):
    """Cannot be inspected at all: unknown encoding, a stream that cannot be buffered..."""

    code = "uninspectable"


@dataclass
class Unit:
    """One function call or result: what the rule engine evaluates."""

    protocol: str  # rest | mcp | openai | anthropic
    direction: str  # request (arguments) | response (results)
    function: str | None  # the tool's name; None for REST (the catalog names it)
    body: Any  # the decoded value to classify and mask
    put: Callable[[Any], None]  # writes the masked value back into the message
    location: str = "$"  # where the unit sits in the message, for error answers
    arguments: Any = None  # what `when` conditions see (None: the engine derives it)
    rpc_id: Any = None  # the JSON-RPC id, to answer a refused unit in its shape
    is_rpc: bool = False


@dataclass
class Message:
    """A parsed body: its units and how to turn it back into bytes."""

    protocol: str
    units: list[Unit]
    encode: Callable[[], bytes]
    # Facts a response needs from its request (e.g. MCP's tool name per JSON-RPC id); must be
    # JSON-serializable (it is kept with the flow).
    context: dict[str, Any] = field(default_factory=dict)
    jsonrpc: bool = False  # refusals are answered as JSON-RPC errors


@dataclass(frozen=True)
class Refused:
    """Why the policy refused a unit, for an answer or an error event."""

    code: str
    message: str
    rule: str | None = None
    field: str | None = None
