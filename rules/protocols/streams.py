"""`text/event-stream` answers, checked event by event as they arrive.

- MCP: every event carries complete JSON-RPC messages: each is checked and masked on its own.
- OpenAI: tool-call arguments arrive in fragments across chunks. The fragments are held back
  (sent as empty strings) and the whole arguments, checked and masked, are sent in one delta
  before the chunk that finishes the choice. Clients concatenate fragments, so this is the
  same tool call to them.
- Anthropic: likewise for `input_json_delta` fragments of a `tool_use` block, released before
  its `content_block_stop`.
- The text of a completion (OpenAI `delta.content`, `delta.refusal` and legacy `text`;
  Anthropic `text_delta` and `thinking_delta`) is held back too, per choice or block, so that a
  value split across chunks (`536-22-` then `1234`) is seen whole. Held text is released,
  checked and masked, in the delta that completes a line (up to its last line break), and the
  rest when the choice or block ends. A line break is a safe place to cut: no detector's match
  holds one, except those marked `spans_lines` (PEM private keys): once one of their needles
  (`-----BEGIN`) is in the held text, it is held to the end of the block. A text that starts
  like JSON (`{`, `[`) is held to the end too, so it is read as a whole, as it would be in an
  answer that is not streamed.
- A stream whose request was not recognized (protocol `rest`) but whose first event is an
  OpenAI chunk (`object: chat.completion.chunk` or `text_completion`) or Anthropic's
  `message_start` is checked as that protocol (an OpenAI-compatible server on another path).
- Anything else: each event's data is checked as a REST answer: as JSON if it is JSON (read
  strictly: duplicate keys are malformed), else as text (`data: [DONE]`, plain lines).

Locations are JSONPaths in the protocol's documents: OpenAI's chunks
(`$.choices[0].delta.tool_calls[1].function.arguments`, `$.choices[0].delta.content`: `delta`
where an answer that is not streamed has `message`) and Anthropic's message
(`$.content[2].input`, `$.content[0].text`, as in an answer that is not streamed).

When a unit is refused, an error event in the protocol's shape takes its place and nothing
more of the stream is passed on. A stream that cannot be parsed ends the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from toolgate.rules.core import native
from toolgate.rules.detectors import DETECTORS
from toolgate.rules.protocols import jsonbody, mcp
from toolgate.rules.protocols.base import Malformed, ProtocolError, Refused, Unit
from toolgate.rules.protocols.sse import Event, SseParser
from toolgate.rules.protocols.toolargs import decode_arguments

# check(units) masks them in place (through unit.put) or says why one is refused.
Check = Callable[[list[Unit]], Refused | None]
# render(refused, rpc_id, jsonrpc) -> the error document, built where all error answers are.
Render = Callable[[Refused, Any, bool], dict[str, Any]]

# The needles of detectors whose matches can hold a line break (None: one has no needle, so
# held text is never cut before the end of its block).
_MULTILINE = [d for d in DETECTORS.values() if d.spans_lines]
LINE_CROSSING: tuple[str, ...] | None = (
    None if any(not d.needles for d in _MULTILINE) else tuple(n for d in _MULTILINE for n in d.needles)
)
COMPLETION = "message.assistant"  # the function name of a completion's text


@dataclass
class _Text:
    """The held text of one choice's field or one block."""

    location: str
    name: str  # its field: content, refusal, text, thinking
    parts: list[str] = field(default_factory=list)
    opening: str | None = None  # its first character that is not blank
    whole: bool = False  # held to the end of its block (it may be JSON, or holds a PEM start)


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
        self.texts: dict[Any, _Text] = {}  # held text of completions
        self.last_chunk: dict[str, Any] = {}
        self.recognized = protocol != "rest"  # a `rest` stream is recognized by its first event
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
            if flush and not self.closed:
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
        if self.protocol == "mcp":
            return self._whole(event, data, jsonbody.loads(data))
        value = _json_or_text(data)
        if not self.recognized:
            self.recognized = True
            self.protocol = _shape(value) or self.protocol
        if isinstance(value, dict) and self.protocol == "openai":
            return self._openai(event, value)
        if isinstance(value, dict) and self.protocol == "anthropic":
            return self._anthropic(event, value)
        if self.protocol == "openai" and isinstance(value, str) and value.strip() == "[DONE]":
            return self._flush(None) + (b"" if self.closed else event.encode())
        return self._whole(event, data, value)

    def _whole(self, event: Event, data: str, value: Any) -> bytes:
        """MCP, or any event complete on its own: JSON (`value`), or text."""
        if self.protocol == "mcp" and mcp.is_jsonrpc(value):
            message = mcp.message(value, self.context)
            refused = self.check(message.units)
            if refused:
                rpc_id = next((u.rpc_id for u in message.units if u.is_rpc), None)
                return self._refuse(refused, rpc_id, jsonrpc=True)
            return event.with_data(message.encode().decode()).encode()
        refused, masked = self._check_value(value, None, "response", "$")
        if refused:
            return self._refuse(refused, None, jsonrpc=False)
        if masked is value and isinstance(value, str):
            return event.encode()
        text = masked if isinstance(masked, str) else jsonbody.dumps(masked).decode()
        return event.with_data(text).encode()

    def _check_value(
        self, value: Any, function: str | None, direction: str, location: str, content: bool = False
    ) -> tuple[Refused | None, Any]:
        """Check one value; why it is refused, or its masked form."""
        slot = [value]
        unit = Unit(self.protocol, direction, function, value,
                    lambda masked: slot.__setitem__(0, masked), location, content=content)
        return self.check([unit]), slot[0]

    def _openai(self, event: Event, chunk: dict[str, Any]) -> bytes:
        self.last_chunk = {k: chunk[k] for k in ("id", "object", "created", "model") if k in chunk}
        out = b""
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict):
                continue
            number = _index(choice.get("index", 0))
            delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
            for call in delta.get("tool_calls") or []:
                if not isinstance(call, dict):
                    continue
                key = (number, _index(call.get("index", 0)))
                state = self.pending.setdefault(key, {"name": None, "parts": []})
                function = call.get("function") if isinstance(call.get("function"), dict) else {}
                if isinstance(function.get("name"), str):
                    state["name"] = function["name"]
                if isinstance(function.get("arguments"), str) and function["arguments"]:
                    state["parts"].append(function["arguments"])
                    function["arguments"] = ""
            ends = choice.get("finish_reason") is not None
            for holder, name, where in ((delta, "content", "delta.content"),
                                        (delta, "refusal", "delta.refusal"),
                                        (choice, "text", "text")):
                if isinstance(holder.get(name), str):
                    key = (number, name)
                    self._hold(key, f"$.choices[{number}].{where}", holder[name])
                    released, refusal = self._take(key, final=ends)
                    if refusal:
                        return out + refusal
                    holder[name] = released
            if ends:
                out += self._flush(number)
                if self.closed:
                    return out
        return out + event.with_data(jsonbody.dumps(chunk).decode()).encode()

    def _anthropic(self, event: Event, payload: dict[str, Any]) -> bytes:
        kind, index = payload.get("type"), payload.get("index")
        if kind in ("content_block_start", "content_block_delta", "content_block_stop"):
            index = _index(index)
        if kind == "content_block_start":
            block = payload.get("content_block") or {}
            if isinstance(block, dict) and block.get("type") == "tool_use":
                self.pending[index] = {"name": block.get("name"), "parts": [],
                                       "start": block.get("input")}
            elif isinstance(block, dict) and block.get("type") in ("text", "thinking"):
                name = block["type"]
                text = block.get(name) if isinstance(block.get(name), str) else ""
                self._hold(index, f"$.content[{index}].{name}", text)
                if text:  # held like the deltas that follow
                    block[name] = ""
                    return event.with_data(jsonbody.dumps(payload).decode()).encode()
        elif kind == "content_block_delta" and index in self.pending:
            delta = payload.get("delta") or {}
            if isinstance(delta, dict) and delta.get("type") == "input_json_delta":
                self.pending[index]["parts"].append(delta.get("partial_json") or "")
                delta["partial_json"] = ""
                return event.with_data(jsonbody.dumps(payload).decode()).encode()
        elif kind == "content_block_delta":
            delta = payload.get("delta")
            name = {"text_delta": "text", "thinking_delta": "thinking"}.get(
                delta.get("type") if isinstance(delta, dict) else None)
            if name and isinstance(delta.get(name), str):
                self._hold(index, f"$.content[{index}].{name}", delta[name])
                released, refusal = self._take(index, final=False)
                if refusal:
                    return refusal
                delta[name] = released
                return event.with_data(jsonbody.dumps(payload).decode()).encode()
        elif kind == "content_block_stop" and (index in self.pending or index in self.texts):
            return self._flush(index) + (b"" if self.closed else event.encode())
        elif kind == "message_stop":
            return self._flush(None) + (b"" if self.closed else event.encode())
        return event.encode()

    # -- held text ---------------------------------------------------------------------------

    def _hold(self, key: Any, location: str, text: str) -> None:
        state = self.texts.get(key)
        if state is None:
            state = self.texts[key] = _Text(location, location.rsplit(".", 1)[1])
        if text:
            state.parts.append(text)
            if state.opening is None and text.strip():
                state.opening = text.lstrip()[0]
                state.whole = state.opening in ("{", "[")  # text that may be JSON is read whole

    def _take(self, key: Any, final: bool) -> tuple[str, bytes | None]:
        """The held text of `key` that can be released now, checked and masked (all of it when
        `final`), or the refusal that ends the stream."""
        state = self.texts[key]
        if not final and (state.whole or not state.parts or "\n" not in state.parts[-1]):
            return "", None  # no new line break: nothing more can be released
        text = "".join(state.parts)
        if final:
            cut = len(text)
        else:
            cut, state.whole = _safe_cut(text)
        piece, rest = text[:cut], text[cut:]
        state.parts = [rest] if rest else []
        if final:
            del self.texts[key]
        if not piece:
            return "", None
        refused, masked = self._check_value(piece, COMPLETION, "response", state.location, content=True)
        if refused:
            return "", self._refuse(refused, None)
        return masked if isinstance(masked, str) else str(masked), None

    # -- releasing what is held at the end of a choice or block -------------------------------

    def _flush(self, which: Any) -> bytes:
        """Check and release the held arguments and text of one choice/block (None: all)."""
        out = b""
        for key in [k for k in self.pending if which is None or _belongs(k, which)]:
            state = self.pending.pop(key)
            text = "".join(state["parts"])
            if not text and self.protocol == "anthropic":
                text = jsonbody.dumps(state.get("start") or {}).decode()
            value, encode = decode_arguments(text)
            refused, masked = self._check_value(
                value, state["name"] or "unknown_tool", "request", self._call_location(key)
            )
            if refused:
                return out + self._refuse(refused, None)
            arguments = encode(masked)
            out += self._release(key, arguments if isinstance(arguments, str) else str(arguments))
        for key in [k for k in self.texts if which is None or _belongs(k, which)]:
            name = self.texts[key].name
            text, refusal = self._take(key, final=True)
            if refusal:
                return out + refusal
            if text:
                out += self._release_text(key, name, text)
        return out

    def _call_location(self, key: Any) -> str:
        if self.protocol == "anthropic":
            return f"$.content[{key}].input"
        choice, index = key
        return f"$.choices[{choice}].delta.tool_calls[{index}].function.arguments"

    def _release(self, key: Any, arguments: str) -> bytes:
        if self.protocol == "anthropic":
            payload = {"type": "content_block_delta", "index": key,
                       "delta": {"type": "input_json_delta", "partial_json": arguments}}
            return Event([("event", "content_block_delta"),
                          ("data", jsonbody.dumps(payload).decode())]).encode()
        choice, index = key
        return self._chunk({"index": choice, "finish_reason": None, "delta": {
            "tool_calls": [{"index": index, "function": {"arguments": arguments}}]}})

    def _release_text(self, key: Any, name: str, text: str) -> bytes:
        if self.protocol == "anthropic":
            payload = {"type": "content_block_delta", "index": key,
                       "delta": {"type": f"{name}_delta", name: text}}
            return Event([("event", "content_block_delta"),
                          ("data", jsonbody.dumps(payload).decode())]).encode()
        choice = key[0]
        if name == "text":
            return self._chunk({"index": choice, "finish_reason": None, "text": text})
        return self._chunk({"index": choice, "finish_reason": None, "delta": {name: text}})

    def _chunk(self, choice: dict[str, Any]) -> bytes:
        chunk = dict(self.last_chunk)
        chunk["choices"] = [choice]
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
    """OpenAI keys are (choice, tool index or field): a choice's flush releases all of its own."""
    return key == which or (isinstance(key, tuple) and key[0] == which)


def _index(value: Any) -> int:
    """A choice's, tool call's or block's index: an integer (it keys what is held; none is 0)."""
    if value is None:
        return 0
    if type(value) is not int:
        raise Malformed(f"an index is {type(value).__name__}, not an integer")
    return value


def _json_or_text(data: str) -> Any:
    """An event's data: JSON if it is JSON at all (read strictly: a duplicate key is malformed),
    else the text itself (`[DONE]`, plain lines)."""
    if not jsonbody.looks_like_json(data.encode()):
        return data
    try:
        return jsonbody.loads(data)
    except Malformed:
        if jsonbody.is_json(data):
            raise
        return data


def _shape(value: Any) -> str | None:
    """The protocol an unrecognized stream's first event shows, if any."""
    if isinstance(value, dict):
        if value.get("object") in ("chat.completion.chunk", "text_completion"):
            return "openai"
        if value.get("type") == "message_start" and isinstance(value.get("message"), dict):
            return "anthropic"
    return None


def _safe_cut(text: str) -> tuple[int, bool]:
    """How much of held text can be checked on its own: up to its last line break, and not
    from the line on where a match that can hold line breaks may start (0: nothing yet); and
    whether the rest must be held to the end of its block (such a match may start in it)."""
    if LINE_CROSSING is None:
        return 0, True
    cut = text.rfind("\n") + 1
    found = min((i for i in (text.find(needle) for needle in LINE_CROSSING) if i >= 0), default=-1)
    if found >= 0:
        cut = min(cut, text.rfind("\n", 0, found) + 1)
    elif any(needle in native.visible(text) for needle in LINE_CROSSING):
        return 0, True  # a needle written with invisible characters in it
    return cut, found >= 0
