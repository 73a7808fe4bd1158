"""`text/event-stream` answers, checked event by event as they arrive.

- MCP: every event carries complete JSON-RPC messages: each is checked and masked on its own.
- OpenAI: tool-call arguments arrive in fragments across chunks. The fragments are held back
  (sent as empty strings) and the whole arguments, checked and masked, are sent in one delta
  before the chunk that finishes the choice. Clients concatenate fragments, so this is the
  same tool call to them.
- Anthropic: likewise for `input_json_delta` fragments of a `tool_use` block, released before
  its `content_block_stop`.
- Anything else: each event's data is checked as a REST answer (JSON, or text).

When a unit is refused, an error event in the protocol's shape takes its place and nothing
more of the stream is passed on. A stream that cannot be parsed ends the same way.
"""

from __future__ import annotations

from typing import Any, Callable

from rules.protocols import jsonbody, mcp
from rules.protocols.base import ProtocolError, Refused, Unit
from rules.protocols.sse import Event, SseParser
from rules.protocols.toolargs import decode_arguments

# check(units) masks them in place (through unit.put) or says why one is refused.
Check = Callable[[list[Unit]], Refused | None]
# render(refused, rpc_id, jsonrpc) -> the error document, built where all error answers are.
Render = Callable[[Refused, Any, bool], dict[str, Any]]


class StreamChecker:
    def __init__(self, protocol: str, context: dict[str, Any], check: Check, render: Render,
                 keep: int = 0):
        self.protocol = protocol
        self.context = context
        self.check = check
        self.render = render
        self.parser = SseParser()
        self.closed = False
        self.pending: dict[Any, dict[str, Any]] = {}  # fragments of tool-call arguments
        self.last_chunk: dict[str, Any] = {}
        # What was passed on (up to `keep` bytes), for the record and mitmweb.
        self.keep = keep
        self.transcript = bytearray()

    # mitmproxy's `flow.response.stream` calls this with every chunk, and b"" at the end. It
    # returns a list of chunks: an empty bytes would go out as the zero-length chunk that ends
    # an HTTP/1.1 chunked body, while an event is still incomplete.
    def __call__(self, chunk: bytes) -> list[bytes]:
        out = self.feed(chunk) if chunk else self.finish()
        if len(self.transcript) < self.keep:
            self.transcript += out[: self.keep - len(self.transcript)]
        return [out] if out else []

    def feed(self, chunk: bytes) -> bytes:
        if self.closed:
            return b""
        return self._run(lambda: self.parser.feed(chunk), flush=False)

    def finish(self) -> bytes:
        if self.closed:
            return b""
        return self._run(self.parser.finish, flush=True)

    def _run(self, events, flush: bool) -> bytes:
        """Check the events completed so far; what was checked before a malformed event is
        still passed on, then the stream ends with an error."""
        out: list[bytes] = []
        try:
            for event in events():
                out.append(self._event(event))
            if flush:
                out.append(self._flush(None))
        except (ProtocolError, ValueError) as exc:
            out.append(self._refuse(Refused("malformed", f"the event stream is malformed: {exc}"), None))
        return b"".join(out)

    # -- one event -------------------------------------------------------------------------

    def _event(self, event: Event) -> bytes:
        if self.closed:
            return b""
        data = event.data
        if data is None or not data.strip():
            return event.encode()
        if self.protocol == "openai":
            return self._openai(event, data)
        if self.protocol == "anthropic":
            return self._anthropic(event, data)
        return self._whole(event, data)

    def _whole(self, event: Event, data: str) -> bytes:
        """MCP, or any stream whose events are complete on their own."""
        if self.protocol == "mcp" or jsonbody.looks_like_json(data.encode()):
            value: Any = jsonbody.loads(data)
            if self.protocol == "mcp" and mcp.is_jsonrpc(value):
                message = mcp.message(value, self.context)
                refused = self.check(message.units)
                if refused:
                    rpc_id = next((u.rpc_id for u in message.units if u.is_rpc), None)
                    return self._refuse(refused, rpc_id, jsonrpc=True)
                return event.with_data(message.encode().decode()).encode()
        else:
            value = data
        refused, masked = self._check_value(value, None, "response", "$")
        if refused:
            return self._refuse(refused, None, jsonrpc=False)
        text = masked if isinstance(masked, str) else jsonbody.dumps(masked).decode()
        return event.with_data(text).encode()

    def _check_value(
        self, value: Any, function: str | None, direction: str, location: str
    ) -> tuple[Refused | None, Any]:
        """Check one value; why it is refused, or its masked form."""
        slot = [value]
        unit = Unit(self.protocol, direction, function, value,
                    lambda masked: slot.__setitem__(0, masked), location)
        return self.check([unit]), slot[0]

    def _openai(self, event: Event, data: str) -> bytes:
        if data.strip() == "[DONE]":
            return self._flush(None) + event.encode()
        chunk = jsonbody.loads(data)
        if not isinstance(chunk, dict):
            return event.encode()
        self.last_chunk = {k: chunk[k] for k in ("id", "object", "created", "model") if k in chunk}
        out = b""
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
            for call in delta.get("tool_calls") or []:
                if not isinstance(call, dict):
                    continue
                key = (choice.get("index", 0), call.get("index", 0))
                state = self.pending.setdefault(key, {"name": None, "parts": []})
                function = call.get("function") if isinstance(call.get("function"), dict) else {}
                if isinstance(function.get("name"), str):
                    state["name"] = function["name"]
                if isinstance(function.get("arguments"), str) and function["arguments"]:
                    state["parts"].append(function["arguments"])
                    function["arguments"] = ""
            if choice.get("finish_reason") is not None:
                out += self._flush(choice.get("index", 0))
                if self.closed:
                    return out
        return out + event.with_data(jsonbody.dumps(chunk).decode()).encode()

    def _anthropic(self, event: Event, data: str) -> bytes:
        payload = jsonbody.loads(data)
        if not isinstance(payload, dict):
            return event.encode()
        kind, index = payload.get("type"), payload.get("index")
        if kind == "content_block_start":
            block = payload.get("content_block") or {}
            if isinstance(block, dict) and block.get("type") == "tool_use":
                self.pending[index] = {"name": block.get("name"), "parts": [],
                                       "start": block.get("input")}
        elif kind == "content_block_delta" and index in self.pending:
            delta = payload.get("delta") or {}
            if isinstance(delta, dict) and delta.get("type") == "input_json_delta":
                self.pending[index]["parts"].append(delta.get("partial_json") or "")
                delta["partial_json"] = ""
                return event.with_data(jsonbody.dumps(payload).decode()).encode()
        elif kind == "content_block_stop" and index in self.pending:
            return self._flush(index) + (b"" if self.closed else event.encode())
        return event.encode()

    # -- releasing held tool-call arguments ------------------------------------------------

    def _flush(self, which: Any) -> bytes:
        """Check and release the held arguments of one choice/block (None: all of them)."""
        out = b""
        for key in [k for k in self.pending if which is None or _belongs(k, which)]:
            state = self.pending.pop(key)
            text = "".join(state["parts"])
            if not text and self.protocol == "anthropic":
                text = jsonbody.dumps(state.get("start") or {}).decode()
            value, encode = decode_arguments(text)
            refused, masked = self._check_value(
                value, state["name"] or "unknown_tool", "request", f"$.tool_calls[{key}].arguments"
            )
            if refused:
                return out + self._refuse(refused, None)
            arguments = encode(masked)
            out += self._release(key, arguments if isinstance(arguments, str) else str(arguments))
        return out

    def _release(self, key: Any, arguments: str) -> bytes:
        if self.protocol == "anthropic":
            payload = {"type": "content_block_delta", "index": key,
                       "delta": {"type": "input_json_delta", "partial_json": arguments}}
            return Event([("event", "content_block_delta"),
                          ("data", jsonbody.dumps(payload).decode())]).encode()
        choice, index = key
        chunk = dict(self.last_chunk)
        chunk["choices"] = [{"index": choice, "finish_reason": None, "delta": {
            "tool_calls": [{"index": index, "function": {"arguments": arguments}}]}}]
        return Event([("data", jsonbody.dumps(chunk).decode())]).encode()

    # -- refusing --------------------------------------------------------------------------

    def _refuse(self, refused: Refused, rpc_id: Any, jsonrpc: bool | None = None) -> bytes:
        """The error event that ends the stream."""
        self.closed = True
        is_rpc = self.protocol == "mcp" if jsonrpc is None else jsonrpc
        document = self.render(refused, rpc_id, is_rpc)
        data = jsonbody.dumps(document).decode()
        if self.protocol == "anthropic":
            error = {"type": "error", "error": {"type": f"toolgate_{refused.code}",
                                                "message": refused.message,
                                                "toolgate": document.get("error", document)}}
            return Event([("event", "error"), ("data", jsonbody.dumps(error).decode())]).encode()
        if self.protocol == "openai":
            return Event([("data", data)]).encode() + Event([("data", "[DONE]")]).encode()
        return Event([("event", "message"), ("data", data)]).encode()


def _belongs(key: Any, which: Any) -> bool:
    """OpenAI keys are (choice, tool index): a choice's flush releases all of its calls."""
    return key == which or (isinstance(key, tuple) and key[0] == which)
