"""A demo function service on loopback, full of (fake) PII: the backend of `make run` and of
the end-to-end tests.

- REST: `GET /customers`, `GET /customers/{id}`, `GET /customers/export?limit=N`,
  `POST /deploy` `{"service", "version"}`, `/echo` (answers with what it received),
  `GET /healthz`.
- LLM APIs answering with a tool call whose arguments hold PII: OpenAI-style
  `POST /v1/chat/completions` and Anthropic-style `POST /v1/messages`, as JSON or, with
  `"stream": true`, as event streams (written in small pieces, so events arrive split).
- MCP over streamable HTTP at `POST /mcp`: `initialize`, `tools/list`, `tools/call`
  (`get_customer`, `search_customers`, `deploy`, `export_customers`), batches and
  notifications. The answer is `text/event-stream` when the client's Accept header lists it
  first, JSON otherwise. `DELETE /mcp` ends the session named by `Mcp-Session-Id` (204; 404
  for a session it never started, 400 without the header); `GET /mcp` is 405, as streamable
  HTTP says for a server that offers no event stream of its own.

Every request it receives is kept in `received` (tests check what reached the backend).
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

from toolgate.scripts.harness import Served, StubHandler, StubServer

CUSTOMERS: list[dict[str, Any]] = [
    {"id": 1, "name": "Ada Lovelace", "email": "ada@example.com", "ssn": "536-22-1234",
     "card": "4111 1111 1111 1111", "phone": "+1 415 555 0100", "iban": "DE89370400440532013000",
     "tier": "gold"},
    {"id": 2, "name": "Alan Turing", "email": "alan@example.org", "ssn": "219-09-9999",
     "card": "5555-5555-5555-4444", "phone": "(212) 555-0199", "iban": "GB82WEST12345698765432",
     "tier": "silver"},
    {"id": 3, "name": "Grace Hopper", "email": "grace@example.net", "ssn": "457-55-5462",
     "card": 4242424242424242, "phone": "+44 20 7946 0958", "iban": "FR1420041010050500013M02606",
     "tier": "gold"},
    {"id": 4, "name": "Edsger Dijkstra", "email": "edsger@example.com", "ssn": "321-54-9876",
     "card": "3782 822463 10005", "phone": "+31 20 555 0123", "iban": "NL91ABNA0417164300",
     "tier": "bronze"},
]

TOOLS = [
    {"name": "get_customer", "description": "Read one customer record.",
     "inputSchema": {"type": "object", "properties": {"id": {"type": "integer"}},
                     "required": ["id"]}},
    {"name": "search_customers", "description": "Search customers by name.",
     "inputSchema": {"type": "object", "properties": {"query": {"type": "string"},
                                                      "limit": {"type": "integer"}}}},
    {"name": "deploy", "description": "Start a deployment.",
     "inputSchema": {"type": "object", "properties": {"service": {"type": "string"},
                                                      "version": {"type": "string"}},
                     "required": ["service", "version"]}},
    {"name": "export_customers", "description": "Export customer records.",
     "inputSchema": {"type": "object", "properties": {"limit": {"type": "integer"}}}},
]


# The tool call the fake models make: its arguments carry PII the gateway must mask.
REFUND_ARGS = {"customer": {"email": "ada@example.com", "card": "4111 1111 1111 1111"},
               "ssn": "536-22-1234", "amount": 42}
STREAM_PIECE = 7  # bytes per network write of an event stream
MAX_MCP_SESSIONS = 10_000  # sessions remembered for DELETE; a long demo does not grow forever


def sse(data: Any, event: str | None = None) -> str:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


def fragments(text: str, size: int = 9) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)]


def chat_completion(model: str) -> dict[str, Any]:
    call = {"id": "call_1", "type": "function",
            "function": {"name": "issue_refund", "arguments": json.dumps(REFUND_ARGS)}}
    return {"id": "chatcmpl-demo", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "finish_reason": "tool_calls",
                         "message": {"role": "assistant", "content": None,
                                     "tool_calls": [call]}}]}


def chat_stream(model: str) -> str:
    base = {"id": "chatcmpl-demo", "object": "chat.completion.chunk", "created": 0, "model": model}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        return sse(dict(base, choices=[{"index": 0, "delta": delta, "finish_reason": finish}]))

    out = chunk({"role": "assistant", "content": None})
    out += chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                  "function": {"name": "issue_refund", "arguments": ""}}]})
    for piece in fragments(json.dumps(REFUND_ARGS)):
        out += chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
    return out + chunk({}, "tool_calls") + sse("[DONE]")


def anthropic_message(model: str) -> dict[str, Any]:
    return {"id": "msg_demo", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": "Issuing the refund."},
                        {"type": "tool_use", "id": "toolu_1", "name": "issue_refund",
                         "input": REFUND_ARGS}],
            "stop_reason": "tool_use", "usage": {"input_tokens": 10, "output_tokens": 20}}


def anthropic_stream(model: str) -> str:
    message = dict(anthropic_message(model), content=[], stop_reason=None)
    out = sse({"type": "message_start", "message": message}, "message_start")
    out += sse({"type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""}}, "content_block_start")
    out += sse({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": "Issuing the refund."}},
               "content_block_delta")
    out += sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
    out += sse({"type": "content_block_start", "index": 1,
                "content_block": {"type": "tool_use", "id": "toolu_1", "name": "issue_refund",
                                  "input": {}}}, "content_block_start")
    for piece in fragments(json.dumps(REFUND_ARGS)):
        out += sse({"type": "content_block_delta", "index": 1,
                    "delta": {"type": "input_json_delta", "partial_json": piece}},
                   "content_block_delta")
    out += sse({"type": "content_block_stop", "index": 1}, "content_block_stop")
    # As Anthropic's API sends it: the SDK's stream accumulator reads `usage` here.
    out += sse({"type": "message_delta",
                "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                "usage": {"output_tokens": 20}}, "message_delta")
    return out + sse({"type": "message_stop"}, "message_stop")


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


def customer(cid: Any) -> dict[str, Any] | None:
    return next((c for c in CUSTOMERS if str(c["id"]) == str(cid)), None)


def export(limit: int) -> list[dict[str, Any]]:
    rows = itertools.islice(itertools.cycle(CUSTOMERS), max(0, min(limit, 10_000)))
    return [dict(c, id=i + 1) for i, c in enumerate(rows)]


def call_tool(name: str, args: dict[str, Any]) -> tuple[Any, bool]:
    """A tool's structured result and whether it is an error."""
    if name == "get_customer":
        found = customer(args.get("id"))
        return (found, False) if found else ({"error": "no such customer"}, True)
    if name == "search_customers":
        query = str(args.get("query", "")).lower()
        hits = [c for c in CUSTOMERS if query in c["name"].lower()]
        return {"customers": hits[: int(args.get("limit", 10))]}, False
    if name == "deploy":
        return {"deployment": secrets.token_hex(4), "service": args.get("service"),
                "version": args.get("version"), "status": "started"}, False
    if name == "export_customers":
        return {"customers": export(int(args.get("limit", 10)))}, False
    return {"error": f"unknown tool {name}"}, True


def rpc_answer(message: Any) -> dict[str, Any] | None:
    """The JSON-RPC answer to one message; None for notifications."""
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
        return {"jsonrpc": "2.0", "id": None,
                "error": {"code": -32600, "message": "invalid request"}}
    if "id" not in message:
        return None
    method, params, rid = message.get("method"), message.get("params") or {}, message["id"]
    if method == "initialize":
        result: Any = {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                       "serverInfo": {"name": "toolgate-demo", "version": "1.0"}}
    elif method == "tools/list":
        result = {"tools": TOOLS}
    elif method == "tools/call":
        value, is_error = call_tool(str(params.get("name")), params.get("arguments") or {})
        result = {"content": [{"type": "text", "text": json.dumps(value)}],
                  "structuredContent": value, "isError": is_error}
    elif method == "ping":
        result = {}
    else:
        return {"jsonrpc": "2.0", "id": rid,
                "error": {"code": -32601, "message": f"unknown method {method}"}}
    return {"jsonrpc": "2.0", "id": rid, "result": result}


class _DemoHandler(StubHandler):
    server: "_DemoServer"
    protocol_version = "HTTP/1.1"

    def _receive(self) -> tuple[str, dict[str, list[str]], bytes]:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        with self.server.lock:
            self.server.received.append(
                Received(self.command, self.path, list(self.headers.items()), body)
            )
        url = urllib.parse.urlsplit(self.path)
        return url.path, urllib.parse.parse_qs(url.query), body

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path, query, body = self._receive()
        if path == "/mcp":  # no server-initiated event stream here
            self.send_json({"error": "this server offers no event stream: POST to /mcp"}, 405,
                           {"Allow": "POST, DELETE"})
        elif path == "/healthz":
            self.send_json({"ok": True})
        elif path == "/customers":
            self.send_json({"customers": CUSTOMERS})
        elif path == "/customers/export":
            self.send_json({"customers": export(int((query.get("limit") or ["10"])[0]))})
        elif path.startswith("/customers/") and customer(path.rsplit("/", 1)[1]):
            self.send_json(customer(path.rsplit("/", 1)[1]))
        elif path == "/echo":
            self._echo(body)
        else:
            self.send_json({"error": "not found"}, 404)

    def do_POST(self) -> None:  # noqa: N802
        path, _, body = self._receive()
        self._answer_post(path, body)

    def _answer_post(self, path: str, body: bytes) -> None:
        if path == "/mcp":
            self._mcp(body)
        elif path == "/deploy":
            try:
                args = json.loads(body or b"{}")
            except ValueError:
                return self.send_json({"error": "body is not JSON"}, 400)
            self.send_json(call_tool("deploy", args)[0], 202)
        elif path in ("/v1/chat/completions", "/v1/messages"):
            self._llm(path, body)
        elif path == "/echo":
            self._echo(body)
        else:
            self.send_json({"error": "not found"}, 404)

    do_PUT = do_PATCH = do_POST

    def do_DELETE(self) -> None:  # noqa: N802
        path, _, body = self._receive()
        if path != "/mcp":
            return self._answer_post(path, body)
        session = self.headers.get("Mcp-Session-Id")
        if not session:
            return self.send_json({"error": "DELETE /mcp ends a session: send Mcp-Session-Id"},
                                  400)
        with self.server.lock:
            known = session in self.server.mcp_sessions
            self.server.mcp_sessions.pop(session, None)
        if not known:
            return self.send_json({"error": f"no MCP session {session}"}, 404)
        self.send_response(204)  # no body, so no Content-Length either (RFC 9110)
        self.end_headers()

    def _llm(self, path: str, body: bytes) -> None:
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            return self.send_json({"error": "body is not JSON"}, 400)
        model = str(request.get("model", "demo-model"))
        openai = path.endswith("/chat/completions")
        if request.get("stream"):
            stream = chat_stream(model) if openai else anthropic_stream(model)
            return self._stream(stream.encode())
        self.send_json(chat_completion(model) if openai else anthropic_message(model))

    def _stream(self, body: bytes, headers: dict[str, str] | None = None) -> None:
        """Chunked, in small pieces with a pause between them: events arrive split."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        for start in range(0, len(body), STREAM_PIECE):
            piece = body[start:start + STREAM_PIECE]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.flush()
            time.sleep(0.001)
        self.wfile.write(b"0\r\n\r\n")

    def _echo(self, body: bytes) -> None:
        self.send_json({"method": self.command, "path": self.path,
                        "headers": dict(self.headers.items()),
                        "body": body.decode("utf-8", "replace")})

    def _mcp(self, body: bytes) -> None:
        try:
            message = json.loads(body)
        except ValueError:
            return self.send_json({"jsonrpc": "2.0", "id": None,
                                   "error": {"code": -32700, "message": "parse error"}}, 400)
        if isinstance(message, list):
            answers = [a for a in map(rpc_answer, message) if a is not None]
            answer: Any = answers or None
        else:
            answer = rpc_answer(message)
        headers = {}
        if isinstance(message, dict) and message.get("method") == "initialize":
            headers["Mcp-Session-Id"] = session = secrets.token_hex(8)
            with self.server.lock:
                self.server.mcp_sessions[session] = None
                while len(self.server.mcp_sessions) > MAX_MCP_SESSIONS:  # the oldest go
                    self.server.mcp_sessions.pop(next(iter(self.server.mcp_sessions)))
        if answer is None:  # only notifications
            return self.send(202, b"", "application/json", headers)
        accept = self.headers.get("Accept", "")
        if accept.split(",")[0].strip().startswith("text/event-stream"):
            events = answer if isinstance(answer, list) else [answer]
            stream = "".join(sse(e, "message") for e in events)
            return self._stream(stream.encode(), headers)
        self.send_json(answer, 200, headers)


class _DemoServer(StubServer):
    # socketserver's default backlog (5) resets connections when a proxy in front opens a few
    # dozen at once (load tests, 50 callers): callers would see 502s the service never caused.
    request_queue_size = 128

    def __init__(self, host: str, port: int) -> None:
        super().__init__(_DemoHandler, host, port)
        self.lock = threading.Lock()
        # Bounded, so a long-running demo does not grow without end.
        self.received: collections.deque[Received] = collections.deque(maxlen=10_000)
        self.mcp_sessions: dict[str, None] = {}  # started by `initialize`, oldest first


class DemoService(Served):
    """The service's HTTP server in a background thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.server = _DemoServer(host, port)

    @property
    def received(self) -> list[Received]:
        with self.server.lock:
            return list(self.server.received)

    def reset(self) -> None:
        with self.server.lock:
            self.server.received.clear()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001)
    args = parser.parse_args()
    service = DemoService(args.host, args.port)
    print(f"demo function service at {service.url}", flush=True)
    service.serve_until_interrupted()


if __name__ == "__main__":
    main()
