"""Traces under mitmproxy's test context: the caller's trace context continued (header, MCP
`params._meta`), a malformed one starting a new trace, the backend's `traceparent`, what a span
holds (never a body value), the encoder against the SDK's, and a collector that is down."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from mitmproxy import exceptions
from mitmproxy.test import taddons, tflow, tutils
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ScopeSpans, Span as ProtoSpan
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceState
from otlp_receiver import Receiver

from toolgate.addons import flowmeta
from toolgate.addons.approvals.addon import Approvals
from toolgate.addons.identity.addon import Identity
from toolgate.addons.policy.addon import Policy
from toolgate.addons.telemetry import tracing as tracing_module
from toolgate.addons.telemetry.tracing import (
    SAMPLED, SCOPE, CallSpans, TraceExporter, Tracing, encode_request, mcp_call, parse_endpoint,
)
from toolgate.scripts.harness import free_port

RULES = """
labels:
  - {name: ssn, level: restricted, detector: us_ssn}
  - {name: email, level: confidential, detector: email}
functions:
  - name: crm.get_customer
    match: {method: GET, path: "/customers/*"}
  - name: deploy.start
    match: {method: POST, path: /deploy}
rules:
  - id: mask-ssn
    match: {labels: [ssn]}
    action: mask
    mask: redact
  - id: no-deletes
    match: {method: DELETE}
    action: block
  - id: deploys-need-approval
    match: {function: deploy.start}
    action: approve
    approvers: [sre-leads]
"""

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
META_TRACE = "0af7651916cd43dd8448eb211c80319c"
META_PARENT = "b7ad6b7169203331"
SSN, EMAIL = "123-45-6789", "ada@example.com"


KINDS = {1: SpanKind.INTERNAL, 2: SpanKind.SERVER, 3: SpanKind.CLIENT, 4: SpanKind.PRODUCER,
         5: SpanKind.CONSUMER}


def value_of(value: AnyValue):
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [value_of(item) for item in value.array_value.values]
    return None if kind is None else getattr(value, kind)


def readable(span: ProtoSpan, resource: Resource) -> ReadableSpan:
    """An exported span, decoded from its protobuf, as the SDK's span."""
    def context(trace_id: bytes, span_id: bytes, remote: bool, state: str = "") -> SpanContext:
        return SpanContext(int.from_bytes(trace_id, "big"), int.from_bytes(span_id, "big"),
                           remote, SAMPLED, TraceState.from_header([state]) if state else None)

    def attributes(items) -> dict:
        return {item.key: value_of(item.value) for item in items}

    parent = (context(span.trace_id, span.parent_span_id, bool(span.flags & 0x200))
              if span.parent_span_id else None)
    links = tuple(Link(context(link.trace_id, link.span_id, bool(link.flags & 0x200),
                               link.trace_state), attributes(link.attributes))
                  for link in span.links)
    return ReadableSpan(
        span.name, context(span.trace_id, span.span_id, False, span.trace_state), parent,
        resource, attributes(span.attributes), (), links, KINDS[span.kind], None,
        Status(StatusCode(span.status.code), span.status.message or None),
        span.start_time_unix_nano, span.end_time_unix_nano, SCOPE)


class Captured:
    """Stands in for the batch processor: keeps what the addon hands it, each call's spans
    (encoded as it ended), and those spans decoded."""

    dropped = 0

    def __init__(self) -> None:
        self.calls: list[CallSpans] = []
        self.spans: list[ReadableSpan] = []

    def on_end(self, call: CallSpans) -> None:
        assert isinstance(call, CallSpans)
        self.calls.append(call)
        decoded = ScopeSpans.FromString(call.payload).spans
        assert len(decoded) == call.count
        self.spans += (readable(span, call.resource) for span in decoded)

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans if s.name == name]


class Chain:
    """The policy between the tracing addon and its checkpoints, as `build_chain` orders them;
    the backend's answer given by the test."""

    def __init__(self, tctx, tracing: Tracing, policy: Policy) -> None:
        self.tctx, self.tracing, self.policy = tctx, tracing, policy

    def call(self, flow, answer=None):
        tracing, policy = self.tracing, self.policy
        tracing.request(flow)
        policy.request(flow)
        tracing.checked.request(flow)
        if isinstance(approval := flow.metadata.get(flowmeta.APPROVAL), dict):
            approval["verdict"] = {"decision": "approved", "channel": "cli", "held_id": "h1",
                                   "reviewer": "carol", "reason": "ok"}
        tracing.ended.request(flow)
        forwarded = dict(flow.request.headers)
        if flow.response is None:
            flow.response = answer or tutils.tresp(
                headers=((b"content-type", b"application/json"),), content=b'{"ok": true}')
            tracing.response(flow)
            policy.response(flow)
            tracing.checked.response(flow)
        tracing.ended.response(flow)
        return forwarded


@pytest.fixture
def chain(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    captured = Captured()

    async def make():
        tracing, policy = Tracing(), Policy()
        with taddons.context(tracing, Identity(), policy, Approvals()) as tctx:
            tctx.configure(policy, toolgate_rules=str(rules))
            tctx.configure(tracing, toolgate_otlp_endpoint="http://127.0.0.1:9/v1/traces")
            tracing.pipeline.processor = captured
            yield Chain(tctx, tracing, policy), captured
            tracing.done()

    agen = make()
    loop = asyncio.new_event_loop()
    try:
        yield loop.run_until_complete(agen.__anext__())
    finally:
        loop.run_until_complete(agen.aclose())
        loop.close()


def rest(method=b"POST", path=b"/echo", body=None, headers=()):
    content = json.dumps(body).encode() if body is not None else b""
    return tflow.tflow(req=tutils.treq(method=method, path=path, content=content, headers=(
        (b"content-type", b"application/json"), *headers)))


def mcp(message, headers=()):
    return rest(path=b"/mcp", body=message, headers=headers)


def by_id(span_id: int) -> str:
    return f"{span_id:016x}"


def children(captured: Captured, parent: ReadableSpan) -> dict[str, list[ReadableSpan]]:
    out: dict[str, list[ReadableSpan]] = {}
    for span in captured.spans:
        if span.parent is not None and span.parent.span_id == parent.context.span_id:
            out.setdefault(span.name, []).append(span)
    return out


def test_the_callers_traceparent_is_continued_and_the_backend_gets_the_calls_span(chain):
    calls, captured = chain
    flow = rest(body={"hello": "world"}, headers=(
        (b"traceparent", f"00-{TRACE}-{PARENT}-01".encode()), (b"tracestate", b"rojo=1")))
    forwarded = calls.call(flow)
    (span,) = [s for s in captured.spans if s.kind is SpanKind.SERVER]
    assert f"{span.context.trace_id:032x}" == TRACE
    assert by_id(span.parent.span_id) == PARENT and span.parent.is_remote
    assert forwarded["traceparent"] == f"00-{TRACE}-{by_id(span.context.span_id)}-01"
    assert forwarded["tracestate"] == "rojo=1"
    below = children(captured, span)
    assert sorted(below) == ["toolgate.policy", "toolgate.upstream"]
    assert [s.attributes["toolgate.direction"] for s in below["toolgate.policy"]] == [
        "request", "response"]
    (upstream,) = below["toolgate.upstream"]
    assert upstream.kind is SpanKind.CLIENT
    assert upstream.attributes["http.response.status_code"] == 200
    assert span.start_time <= below["toolgate.policy"][0].start_time
    assert upstream.end_time <= span.end_time
    assert all(s.context.trace_id == span.context.trace_id for s in captured.spans)
    assert span.attributes["toolgate.call_id"] == flow.metadata[flowmeta.CALL_ID]
    assert span.attributes["toolgate.decision"] == "allow"
    assert span.attributes["http.request.method"] == "POST"
    assert span.name == "POST"  # an uncatalogued REST call: its path may hold values


def test_an_mcp_request_continues_params_meta_and_links_the_header(chain):
    calls, captured = chain
    message = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
        "name": "get_customer", "arguments": {"id": 42},
        "_meta": {"traceparent": f"00-{META_TRACE}-{META_PARENT}-01", "tracestate": "congo=t6"}}}
    flow = mcp(message, headers=((b"traceparent", f"00-{TRACE}-{PARENT}-01".encode()),
                                 (b"mcp-session-id", b"s-1")))
    forwarded = calls.call(flow, answer=tutils.tresp(
        headers=((b"content-type", b"application/json"),),
        content=json.dumps({"jsonrpc": "2.0", "id": 7, "result": {"content": []}}).encode()))
    (span,) = captured.named("execute_tool get_customer")
    assert f"{span.context.trace_id:032x}" == META_TRACE
    assert by_id(span.parent.span_id) == META_PARENT
    assert [f"{link.context.trace_id:032x}" for link in span.links] == [TRACE]
    assert forwarded["traceparent"] == f"00-{META_TRACE}-{by_id(span.context.span_id)}-01"
    assert forwarded["tracestate"] == "congo=t6"
    attributes = span.attributes
    assert attributes["gen_ai.operation.name"] == "execute_tool"
    assert attributes["gen_ai.tool.name"] == "get_customer"
    assert attributes["mcp.method.name"] == "tools/call"
    assert attributes["jsonrpc.request.id"] == "7"
    assert attributes["mcp.session.id"] == "s-1"
    assert attributes["toolgate.protocol"] == "mcp"


def test_an_mcp_method_that_is_no_tool_call_is_named_by_its_method(chain):
    calls, captured = chain
    calls.call(mcp({"jsonrpc": "2.0", "id": "a", "method": "tools/list"}))
    (span,) = captured.named("tools/list")
    assert span.attributes["mcp.method.name"] == "tools/list"
    assert span.attributes["jsonrpc.request.id"] == "a"
    assert "gen_ai.tool.name" not in span.attributes


def test_names_a_caller_chose_are_cut_and_odd_methods_are_other(chain):
    calls, captured = chain
    calls.call(mcp({"jsonrpc": "2.0", "id": "i" * 5000, "method": "tools/call",
                    "params": {"name": "t" * 5000, "arguments": {}}},
                   headers=((b"mcp-session-id", b"s" * 5000),)))
    (span,) = [s for s in captured.spans if s.kind is SpanKind.SERVER]
    assert span.name == "execute_tool " + "t" * 256
    assert all(len(v) <= 256 for v in span.attributes.values() if isinstance(v, str))
    captured.spans.clear()
    calls.call(rest(method=b"BREW", body={}))
    (span,) = [s for s in captured.spans if s.kind is SpanKind.SERVER]
    assert span.name == "HTTP" and span.attributes["http.request.method"] == "_OTHER"


@pytest.mark.parametrize("traceparent", [
    "garbage",
    f"00-{'0' * 32}-{PARENT}-01",  # an all-zero trace id
    f"00-{TRACE}-{'0' * 16}-01",  # an all-zero parent id
    f"ff-{TRACE}-{PARENT}-01",  # a version that cannot be
    f"00-{TRACE[:-1]}-{PARENT}-01",
    f"00-{TRACE.upper()}-{PARENT}-01",
    "00-" + "é" * 32 + f"-{PARENT}-01",
])
def test_a_malformed_traceparent_starts_a_new_trace(chain, traceparent):
    calls, captured = chain
    flow = rest(body={"n": 1}, headers=((b"traceparent", traceparent.encode()),
                                        (b"tracestate", b"rojo=1")))
    forwarded = calls.call(flow)
    assert flow.response.status_code == 200  # never an error
    (span,) = [s for s in captured.spans if s.kind is SpanKind.SERVER]
    assert span.parent is None and f"{span.context.trace_id:032x}" != TRACE
    assert forwarded["traceparent"] == (
        f"00-{span.context.trace_id:032x}-{by_id(span.context.span_id)}-01")
    assert "tracestate" not in forwarded  # it went with the context we did not continue


@pytest.mark.parametrize("tracestate", ["a=" + "b" * 60_000, "=,=,==", ",".join(
    f"k{i}=v" for i in range(100))])
def test_a_bad_tracestate_is_dropped_quietly(chain, caplog, tracestate):
    calls, captured = chain
    with caplog.at_level(logging.DEBUG):
        forwarded = calls.call(rest(body={}, headers=(
            (b"traceparent", f"00-{TRACE}-{PARENT}-01".encode()),
            (b"tracestate", tracestate.encode()))))
    (span,) = [s for s in captured.spans if s.kind is SpanKind.SERVER]
    assert f"{span.context.trace_id:032x}" == TRACE  # the traceparent is still continued
    assert "tracestate" not in forwarded
    assert not [r for r in caplog.records if r.name.startswith("opentelemetry")]


def test_a_repeated_traceparent_header_starts_a_new_trace(chain):
    calls, captured = chain
    flow = rest(body={"n": 1}, headers=((b"traceparent", f"00-{TRACE}-{PARENT}-01".encode()),
                                        (b"traceparent", f"00-{TRACE}-{PARENT}-01".encode())))
    calls.call(flow)
    (span,) = [s for s in captured.spans if s.kind is SpanKind.SERVER]
    assert span.parent is None


def test_a_caller_that_does_not_sample_gets_no_span_but_its_context_goes_on(chain):
    calls, captured = chain
    forwarded = calls.call(rest(body={}, headers=(
        (b"traceparent", f"00-{TRACE}-{PARENT}-00".encode()),)))
    assert captured.spans == []
    assert forwarded["traceparent"].startswith(f"00-{TRACE}-") and forwarded[
        "traceparent"].endswith("-00")


def test_the_sdks_sampler_variable_is_honoured(chain, monkeypatch):
    calls, captured = chain
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    calls.tctx.configure(calls.tracing, toolgate_otlp_endpoint="http://127.0.0.1:9/other")
    calls.tracing.pipeline.processor = captured
    forwarded = calls.call(rest(body={}))
    assert captured.spans == [] and forwarded["traceparent"].endswith("-00")


def test_span_attributes_never_hold_a_body_value(chain):
    calls, captured = chain
    values = [SSN, EMAIL, "4242424242424242", "s3cr3t-argument"]
    flow = rest(method=b"GET", path=b"/customers/7", headers=((b"x-note", EMAIL.encode()),))
    flow.request.content = json.dumps({"ssn": SSN, "email": EMAIL, "note": values[3]}).encode()
    calls.call(flow, answer=tutils.tresp(headers=((b"content-type", b"application/json"),),
                                         content=json.dumps({"card": values[2], "ssn": SSN,
                                                             "mail": EMAIL}).encode()))
    (span,) = captured.named("execute_tool crm.get_customer")
    assert span.attributes["toolgate.decision"] == "mask"
    assert set(span.attributes["toolgate.labels"]) == {"ssn", "email"}
    assert span.attributes["toolgate.rules"] == ["mask-ssn"]
    assert "gen_ai.tool.name" in span.attributes
    wire = encode_request(captured.calls)
    for value in values:
        assert value.encode() not in wire
        for s in captured.spans:
            assert not any(value in str(v) for v in s.attributes.values()), (s.name, value)


def test_a_call_named_by_its_path_gives_no_value_in_it_to_a_span(chain):
    """A call outside the catalog is named by its method and path, which may hold values: the
    policy masks them (mask-ssn) or, on a refused call, puts the stored path on the flow; the
    span has neither the path nor the name."""
    calls, captured = chain
    calls.call(rest(method=b"GET", path=f"/lookup/{SSN}".encode()))
    calls.call(rest(method=b"DELETE", path=f"/lookup/{EMAIL}".encode()))
    assert [s.name for s in captured.spans if s.kind is SpanKind.SERVER] == ["GET", "DELETE"]
    wire = encode_request(captured.calls)
    for value in (SSN, EMAIL, "lookup"):
        assert value.encode() not in wire, value


def test_a_tool_or_method_named_after_a_value_gives_it_to_no_span(chain):
    """Tool and method names are text the caller (or a model) chose: one that holds a labelled
    value names the span with the value redacted, as the store keeps it."""
    calls, captured = chain
    calls.call(mcp({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                    "params": {"name": f"lookup_{EMAIL}", "arguments": {}}}))
    calls.call(mcp({"jsonrpc": "2.0", "id": 2, "method": f"{EMAIL}/list"}))
    names = [s.name for s in captured.spans if s.kind is SpanKind.SERVER]
    # (`lookup_ada@example.com` is an email as a whole)
    assert names == ["execute_tool [REDACTED:email]", "[REDACTED:email]/list"]
    assert EMAIL.encode() not in encode_request(captured.calls)


def test_a_refused_call_has_its_error_and_no_upstream(chain):
    calls, captured = chain
    flow = rest(method=b"DELETE", path=b"/customers/7")
    calls.call(flow)
    (span,) = [s for s in captured.spans if s.kind is SpanKind.SERVER]
    assert span.attributes["error.type"] == "blocked"
    assert span.attributes["toolgate.decision"] == "block"
    assert span.attributes["http.response.status_code"] == 403
    assert span.status.status_code is StatusCode.ERROR
    assert sorted(children(captured, span)) == ["toolgate.policy"]


def test_a_held_then_approved_call_has_a_hold_span(chain):
    calls, captured = chain
    calls.call(rest(path=b"/deploy", body={"service": "api"}))
    (span,) = captured.named("execute_tool deploy.start")
    below = children(captured, span)
    assert sorted(below) == ["toolgate.hold", "toolgate.policy", "toolgate.upstream"]
    (hold,) = below["toolgate.hold"]
    assert hold.attributes["toolgate.approval.decision"] == "approved"
    assert hold.attributes["toolgate.approval.id"] == "h1"
    assert "carol" not in str(hold.attributes)  # who decided is the store's to keep
    assert hold.end_time <= below["toolgate.upstream"][0].start_time


def test_with_the_option_unset_nothing_is_traced_or_changed(tmp_path):
    async def scenario():
        tracing = Tracing()
        with taddons.context(tracing):
            flow = rest(body={}, headers=((b"traceparent", f"00-{TRACE}-{PARENT}-01".encode()),))
            for hook in (tracing.request, tracing.checked.request, tracing.ended.request):
                hook(flow)
            flow.response = tutils.tresp()
            for hook in (tracing.response, tracing.checked.response, tracing.ended.response):
                hook(flow)
            assert tracing.pipeline is None and len(tracing.calls) == 0
            assert flow.request.headers["traceparent"] == f"00-{TRACE}-{PARENT}-01"

    asyncio.run(scenario())


def test_the_endpoint_option_is_checked_and_a_bare_url_gets_the_traces_path(tmp_path):
    assert parse_endpoint(None) is None and parse_endpoint(" ") is None
    assert parse_endpoint("http://c:4318") == "http://c:4318/v1/traces"
    assert parse_endpoint("https://c:4318/") == "https://c:4318/v1/traces"
    assert parse_endpoint("http://c/otlp/v1/traces") == "http://c/otlp/v1/traces"

    async def scenario():
        tracing = Tracing()
        with taddons.context(tracing) as tctx:
            with pytest.raises(exceptions.OptionsError, match="toolgate_otlp_endpoint"):
                tctx.configure(tracing, toolgate_otlp_endpoint="collector:4318")
            tctx.configure(tracing, toolgate_otlp_endpoint="http://127.0.0.1:9")
            assert tracing.pipeline is not None
            tctx.configure(tracing, toolgate_otlp_endpoint=None)
            assert tracing.pipeline is None

    asyncio.run(scenario())


def test_mcp_calls_are_read_in_batches_and_odd_shapes_are_ignored():
    assert mcp_call(b'[{"jsonrpc": "2.0", "id": true, "method": "tools/call", '
                    b'"params": {"name": 3, "_meta": {"traceparent": 1}}}]') == (
        {"method": "tools/call", "id": None, "tool": None}, None)
    assert mcp_call(b"not json") == (None, None)
    assert mcp_call(b'{"jsonrpc": "2.0", "id": 1, "result": {}}') == (None, None)


# -- the encoder ----------------------------------------------------------------------------------

def test_the_encoder_writes_what_the_sdks_encoder_writes():
    resource = Resource.create({"service.name": "toolgate"})
    context = SpanContext(int(TRACE, 16), int(PARENT, 16), False, SAMPLED,
                          TraceState([("rojo", "00f067aa0ba902b7")]))
    parent = SpanContext(int(TRACE, 16), 0x1111, True, SAMPLED)
    spans = [
        ReadableSpan("execute_tool x", context, parent, resource, {
            "s": "b", "n": 3, "neg": -5, "f": 1.5, "t": True, "false": False, "l": ["x", "y"],
            "empty": [], "u": "é", "big": "x" * 300}, (Event("e", {"k": "v"}, 123),),
            (Link(parent, {"q": 1}),), SpanKind.SERVER, None, Status(StatusCode.ERROR, "blocked"),
            10**18, 10**18 + 5, SCOPE),
        ReadableSpan("toolgate.policy", SpanContext(context.trace_id, 77, False, SAMPLED),
                     context, resource, {"t": 1}, (), (), SpanKind.INTERNAL, None,
                     Status(StatusCode.UNSET), 5, 6, SCOPE),
    ]
    ours, theirs = ExportTraceServiceRequest(), ExportTraceServiceRequest()
    for _ in range(2):  # the second time from the attribute cache
        ours.ParseFromString(encode_request(spans))
        theirs.ParseFromString(encode_spans(spans).SerializeToString())
        assert ours == theirs


def test_a_calls_encoded_spans_are_sent_as_the_sdks_encoder_sends_them(chain):
    calls, captured = chain
    for flow in (rest(body={"hello": "world"}), mcp({"jsonrpc": "2.0", "id": 1,
                                                      "method": "tools/list"})):
        calls.call(flow)
    assert [call.count for call in captured.calls] == [4, 4]
    ours, theirs = ExportTraceServiceRequest(), ExportTraceServiceRequest()
    ours.ParseFromString(encode_request(captured.calls))
    theirs.ParseFromString(encode_spans(captured.spans).SerializeToString())
    assert ours == theirs and len(ours.resource_spans[0].scope_spans[0].spans) == 8


def test_an_exporter_release_without_the_pinned_client_stops_the_option(chain, monkeypatch):
    calls, _ = chain
    monkeypatch.setattr(tracing_module.OTLPSpanExporter, "__init__", lambda self, **kw: None)
    with pytest.raises(exceptions.OptionsError, match="release pyproject.toml names"):
        calls.tctx.configure(calls.tracing, toolgate_otlp_endpoint="http://127.0.0.1:9/x")
    assert calls.tracing.pipeline is None


def test_a_full_export_queue_drops_the_new_calls_spans_and_counts_them(monkeypatch, caplog):
    for name, value in (("QUEUE_SIZE", 3), ("BATCH_SIZE", 3), ("EXPORT_DELAY_MS", 60_000)):
        monkeypatch.setattr(tracing_module, name, value)
    pipeline = tracing_module.TracePipeline("http://127.0.0.1:9/v1/traces")
    processor, resource = pipeline.processor, Resource.create({})
    batches = processor._batch_processor
    awaken = batches._worker_awaken

    class Asleep:  # the exporter's thread is not woken: the queue stays as filled
        def is_set(self):
            return True

    batches._worker_awaken = Asleep()
    try:
        calls = [CallSpans([b"a", b"b"], resource) for _ in range(5)]
        with caplog.at_level(logging.WARNING):
            for call in calls:
                processor.on_end(call)
        assert list(processor._queue)[::-1] == calls[:3]  # the first three, kept
        assert processor.dropped == 4 and pipeline.dropped() == 4  # two calls' two spans
        told = [r for r in caplog.records if "queue is full" in r.getMessage()]
        assert len(told) == 1
        assert not [r for r in caplog.records if "Queue full" in r.getMessage()]
    finally:
        batches._worker_awaken = awaken
        processor._queue.clear()  # nothing to send to port 9 (its retries would outlive the test)
        pipeline.shutdown(5.0)


# -- a collector that is down ---------------------------------------------------------------------

def span_of(n: int) -> ReadableSpan:
    context = SpanContext(int(TRACE, 16), n + 1, False, SAMPLED)
    return ReadableSpan("s", context, None, Resource.create({}), {}, (), (), SpanKind.INTERNAL,
                        None, Status(StatusCode.UNSET), 1, 2, SCOPE)


def test_a_collector_that_is_down_costs_a_counter_and_one_log_line(monkeypatch, caplog):
    monkeypatch.setattr(tracing_module, "EXPORT_TIMEOUT", 0.2)
    port = free_port()
    exporter = TraceExporter(f"http://127.0.0.1:{port}/v1/traces")
    pipeline = tracing_module.TracePipeline.__new__(tracing_module.TracePipeline)
    processor = tracing_module.TraceProcessor.__new__(tracing_module.TraceProcessor)
    processor.exporter, processor.dropped, processor._queue = exporter, 0, None
    pipeline.exporter, pipeline.processor = exporter, processor
    with caplog.at_level(logging.INFO, logger=tracing_module.__name__):
        for _ in range(3):
            assert exporter.export([span_of(1), span_of(2)]).name == "FAILURE"
        assert exporter.outage and exporter.failures == 3 and exporter.dropped == 6
        for n in range(100):  # spans that end in the outage never reach the queue
            processor.on_end(span_of(n))
        assert processor.dropped == 100 and pipeline.dropped() == 106
        processor.on_end(CallSpans([b"", b"", b""], Resource.create({})))  # counted in spans
        assert processor.dropped == 103
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "cannot be sent" in warnings[0].getMessage()

        collector = Receiver(port)
        try:
            exporter.retry_at = 0  # the next try is due
            assert exporter.export([span_of(1)]).name == "SUCCESS"
        finally:
            collector.stop()
    assert not exporter.outage and exporter.exported == 1
    assert any("reached again" in r.getMessage() for r in caplog.records)
    assert [span["name"] for span in collector.spans] == ["s"]
    exporter.shutdown()
