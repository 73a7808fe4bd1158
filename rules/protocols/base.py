"""The shape every protocol adapter produces: a parsed message and the function calls in it.

A *unit* is one function call or one function result inside a message (a REST body, one
JSON-RPC `tools/call` of a batch, one OpenAI `tool_calls[]` entry, one Anthropic `tool_result`
block...). The policy evaluates each unit with the rule engine and, when it masks, hands the
masked value back through `unit.put`; `message.encode()` then gives the bytes to forward.

Directions are those of the *function call*, not of HTTP: arguments are `request`, results
are `response`. An OpenAI request that carries `role: tool` messages therefore holds units of
direction `response` (function results on their way to the model).

The text of prompts and completions to and from LLM APIs is a unit too (`content=True`): a
system, user or assistant message, a text block, a streamed content delta. Prompts (what is sent
to the model, earlier assistant turns included) are direction `request`, completions (what the
model answers) are direction `response`; they are named `message.<role>` (`message.system`,
`message.developer`, `message.user`, `message.assistant`, `message.other`), names no tool can
have (OpenAI and Anthropic tool names have no dots). They are not function calls: the catalog
(`unknown_function: deny`, access grants) does not apply to them, and they do not name the call.
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
    """One function call or result, or the text of a prompt or completion: what the rule
    engine evaluates."""

    protocol: str  # rest | mcp | openai | anthropic
    direction: str  # request (arguments) | response (results)
    function: str | None  # the tool's name; None for REST (the catalog names it)
    body: Any  # the decoded value to classify and mask
    put: Callable[[Any], None]  # writes the masked value back into the message
    location: str = "$"  # where the unit sits in the message, for error answers
    arguments: Any = None  # what `when` conditions see (None: the engine derives it)
    rpc_id: Any = None  # the JSON-RPC id, to answer a refused unit in its shape
    is_rpc: bool = False
    content: bool = False  # the text of a prompt or a completion, not a function call


ROLES = ("system", "developer", "user", "assistant")


def content_function(role: Any) -> str:
    """The function name of a message's text: `message.<role>` (unknown roles: `message.other`)."""
    return f"message.{role}" if role in ROLES else "message.other"


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
