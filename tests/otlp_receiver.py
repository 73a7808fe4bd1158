"""An OTLP/HTTP traces receiver on loopback for the tests: decodes every
`ExportTraceServiceRequest` the gateway's exporter posts, with opentelemetry-proto."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from harness import wait_until
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


def value_of(any_value) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [value_of(v) for v in any_value.array_value.values]
    return getattr(any_value, kind) if kind else None


class Receiver:
    """An OTLP/HTTP traces receiver on loopback: decodes every `ExportTraceServiceRequest`."""

    def __init__(self, port: int | None = None) -> None:
        self.spans: list[dict[str, Any]] = []
        self.posts = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["content-length"]))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver.take(request, self.path, self.headers.get("content-type"))
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port or 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def take(self, request: ExportTraceServiceRequest, path: str, ctype: str | None) -> None:
        assert path == "/v1/traces" and ctype == "application/x-protobuf"
        self.posts += 1
        for resource_spans in request.resource_spans:
            resource = {kv.key: value_of(kv.value) for kv in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append({
                        "name": span.name, "kind": span.kind,
                        "trace_id": span.trace_id.hex(), "span_id": span.span_id.hex(),
                        "parent": span.parent_span_id.hex() or None,
                        "start": span.start_time_unix_nano, "end": span.end_time_unix_nano,
                        "attributes": {kv.key: value_of(kv.value) for kv in span.attributes},
                        "links": [link.trace_id.hex() for link in span.links],
                        "status": span.status.code, "resource": resource,
                        "scope": scope_spans.scope.name,
                    })

    def call(self, call_id: str, timeout: float = 10) -> dict[str, Any]:
        """The span of the call `call_id`, once it and its children have arrived."""
        def found():
            return next((s for s in self.spans
                         if s["attributes"].get("toolgate.call_id") == call_id), None)

        span = wait_until(found, timeout=timeout, interval=0.05)
        assert span, f"no span for call {call_id}: {[s['name'] for s in self.spans]}"
        return span

    def children(self, span: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for child in self.spans:
            if child["parent"] == span["span_id"] and child["trace_id"] == span["trace_id"]:
                out.setdefault(child["name"], []).append(child)
        return out

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
