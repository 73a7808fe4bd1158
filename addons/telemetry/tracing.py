"""Traces: one OpenTelemetry span per call, exported over OTLP/HTTP; off unless
`toolgate_otlp_endpoint` is set (then nothing but a None check per hook).

A call's span follows the GenAI and MCP semantic conventions: `execute_tool {tool}` for a tool
call (an MCP `tools/call`, a tool call in an LLM API's messages, a REST function of the catalog),
else the MCP method, `chat` for an LLM API call without one, or the HTTP method. It holds what
was decided (decision, rules, label names, never a value) and the call id, and has child spans
for the policy's time (`toolgate.policy`, one per direction), a hold for approval
(`toolgate.hold`) and the backend's time (`toolgate.upstream`).

Trace context: the caller's W3C `traceparent` / `tracestate` headers are continued; an MCP
request's `params._meta.traceparent` wins over them (the MCP conventions: the message's context
is the parent, the transport's is linked). The backend gets a `traceparent` (and the
`tracestate`) naming the call's span; `params._meta` goes on as the caller sent it (a body is
changed by policy only). Sampling is the SDK's: parent-based, `OTEL_TRACES_SAMPLER` honoured.

Three entries of the chain see a call: `Tracing` right after the gate (the caller's context,
read before the policy may mask a header; the policy's start), `tracing.checked` right after the
policy (its end; the call's span context, passed on before credentials and the recorder see the
request), and `tracing.ended` last before the seal (when the call leaves for the backend; the
end of the call, once every other hook has run).

Cost. The SDK's own spans (`start_span`/`end`) and its protobuf encoder each cost ~50 µs per
span here: four spans were ~400 µs of CPU per call, a fifth of a gateway call. So a call's
spans are made after the fact, with ids and sampling from the SDK's provider, and encoded at
once by `encode_span` below into one `CallSpans` (bytes: one object per call in the queue,
where a dozen per span, alive until exported, made the garbage collector walk them over and
over); the SDK's `BatchSpanProcessor` queues those (bounded) and hands them to the OTLP
exporter's HTTP client on its own thread (headers, TLS, compression and retries from the
standard `OTEL_EXPORTER_OTLP_*` variables). The encoder writes the bytes the SDK's encoder
writes (a test compares them). A collector that cannot be reached costs a counter: the
exporter says so once, spans are then dropped as their calls end, and every `RETRY_SECONDS`
one call's spans try the collector again.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import orjson
from mitmproxy import ctx, exceptions, http
from opentelemetry import trace as trace_api
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider, sampling
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from toolgate.addons import flowmeta, settings
from toolgate.addons.answers import call_id_of
from toolgate.addons.failclosed.hooks import flow_hook
from toolgate.addons.headers import header_value
from toolgate.rules.catalog import is_rest_name
from toolgate.sessions.records import final_decision

logger = logging.getLogger(__name__)

OPTION = "toolgate_otlp_endpoint"
TRACES_PATH = "/v1/traces"
SCOPE = InstrumentationScope("toolgate")
EXPORT_TIMEOUT = 2.0  # seconds one export may take, its retries included
RETRY_SECONDS = 5.0  # while the collector cannot be reached, how often a call's spans try again
QUEUE_SIZE = 4096  # calls whose spans wait for export (seconds of a busy gateway's)
# Calls' spans per export request (about 2,000 spans, 200 KB): each request costs the
# exporter's HTTP client a millisecond or two of CPU, under the interpreter lock.
BATCH_SIZE = 512
EXPORT_DELAY_MS = 1000  # at most this long between a span's end and its export
SHUTDOWN_WAIT = 1.0  # seconds `done` (sync: a reload too) waits for the last spans to leave

SERVER, CLIENT, INTERNAL = SpanKind.SERVER, SpanKind.CLIENT, SpanKind.INTERNAL
UNSET = Status(StatusCode.UNSET)
SAMPLED, NOT_SAMPLED = TraceFlags(TraceFlags.SAMPLED), TraceFlags(TraceFlags.DEFAULT)
MCP_SESSION_HEADER = "mcp-session-id"
MCP_VERSION_HEADER = "mcp-protocol-version"
# The request headers the tracing hooks read, once, before the policy may mask one.
READ_HEADERS = {name.encode(): name for name in (
    "traceparent", "tracestate", "content-encoding", MCP_SESSION_HEADER, MCP_VERSION_HEADER)}
PASSED_ON = frozenset({b"traceparent", b"tracestate"})
QUIET_LOGGERS = ("opentelemetry.trace.propagation.tracecontext", "opentelemetry.trace.span")
# toolgate's own span attributes. A few read like flowmeta's keys (`toolgate.call_id`), which
# name something else and are spelled in flowmeta alone: these are built from their names.
OWN = "toolgate"
ATTR_CALL_ID, ATTR_DECISION, ATTR_ENFORCED, ATTR_RULES, ATTR_LABELS, ATTR_MODE, ATTR_PROTOCOL, \
    ATTR_DIRECTION = (f"{OWN}.{name}" for name in (
        "call_id", "decision", "enforced", "rules", "labels", "mode", "protocol", "direction"))
LLM_PROTOCOLS = ("openai", "anthropic")
# HTTP semantic conventions: any other method is `_OTHER` (a span named `HTTP`).
KNOWN_METHODS = frozenset({"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT",
                           "TRACE", "QUERY"})
# Names and ids a caller chose (a tool's, a session's) are cut to this many characters.
MAX_TEXT = 256


class CallTrace:
    """What the tracing hooks learn of one call on its way, until its spans are made."""

    __slots__ = ("headers", "body", "mark", "decided", "policy", "span", "parent", "links",
                 "mcp", "forwarded", "upstream", "holds", "approval")

    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers  # the caller's, of READ_HEADERS
        self.body: bytes | None = None  # the request body as the caller sent it, until read
        self.mark = 0  # when the policy began on the message at hand (ns)
        self.decided = 0  # when the policy last handed the call on (ns): a hold starts there
        self.policy: list[tuple[str, int, int]] = []  # (direction, start, end)
        self.span: SpanContext | None = None  # the call's span
        self.parent: SpanContext | None = None
        self.links: tuple[Link, ...] = ()
        self.mcp: dict[str, Any] | None = None  # {"method", "id", "tool"}
        self.forwarded = 0  # when the request left for the backend (ns)
        self.upstream: tuple[int, int] | None = None  # (end, the backend's status)
        # (direction, start, end, the verdict)
        self.holds: list[tuple[str, int, int, dict[str, Any]]] = []
        self.approval: Any = None  # the approval whose hold is already traced


class Tracing:
    """First after the gate: reads the caller's trace context and times the policy."""

    def __init__(self) -> None:
        self.pipeline: TracePipeline | None = None
        self.endpoint: str | None = None
        self.calls: weakref.WeakKeyDictionary[http.HTTPFlow, CallTrace] = \
            weakref.WeakKeyDictionary()
        self.propagator = TraceContextTextMapPropagator()
        self.checked = Checked(self)
        self.ended = Ended(self)
        self.finish_errors = 0
        # What ended pipelines counted (a reload of the option starts a new one).
        self._counted = {"exported": 0, "failures": 0, "dropped": 0}

    # -- what operators see (`/healthz`, metrics) -------------------------------------------

    @property
    def export_failures(self) -> int:
        """Exports that did not reach the collector (tried or skipped while it was down)."""
        return self._counted["failures"] + (self.pipeline.exporter.failures if self.pipeline else 0)

    @property
    def spans_exported(self) -> int:
        return self._counted["exported"] + (self.pipeline.exporter.exported if self.pipeline else 0)

    @property
    def spans_dropped(self) -> int:
        return self._counted["dropped"] + (self.pipeline.dropped() if self.pipeline else 0)

    @property
    def collector_down(self) -> bool:
        return bool(self.pipeline and self.pipeline.exporter.outage)

    # -- lifecycle ---------------------------------------------------------------------------

    def load(self, loader) -> None:
        loader.add_option(
            OPTION, Optional[str], None,
            "An OTLP/HTTP traces endpoint, e.g. http://127.0.0.1:4318/v1/traces (a URL without "
            "a path gets /v1/traces): one span per call, with child spans for the policy, a "
            "hold and the backend, continuing the caller's traceparent. Unset: no tracing. "
            "Headers, TLS and compression come from the OTEL_EXPORTER_OTLP_TRACES_* variables.",
        )

    def configure(self, updated: set[str]) -> None:
        if OPTION not in updated:
            return
        try:
            endpoint = parse_endpoint(ctx.options.toolgate_otlp_endpoint)
        except ValueError as exc:
            raise exceptions.OptionsError(str(exc)) from None
        if endpoint == self.endpoint:
            return
        self._stop(wait=False)
        self.endpoint = endpoint
        if endpoint is not None:
            try:
                self.pipeline = TracePipeline(endpoint)
            except RuntimeError as exc:
                self.endpoint = None
                raise exceptions.OptionsError(str(exc)) from None
            logger.info("toolgate: traces go to %s", endpoint)

    def done(self) -> None:
        # Sync (a script reload calls it so): the last spans get SHUTDOWN_WAIT to leave.
        if self._stop(wait=True):
            logger.info("toolgate: traces: %d spans exported, %d dropped (%d exports failed)",
                        self.spans_exported, self.spans_dropped, self.export_failures)
        self.endpoint = None

    def _stop(self, wait: bool) -> bool:
        pipeline, self.pipeline = self.pipeline, None
        if pipeline is None:
            return False
        pipeline.shutdown(SHUTDOWN_WAIT if wait else 0.0)
        for key, value in (("exported", pipeline.exporter.exported),
                           ("failures", pipeline.exporter.failures),
                           ("dropped", pipeline.dropped())):
            self._counted[key] += value
        return True

    # -- hooks -------------------------------------------------------------------------------

    @flow_hook
    def request(self, flow: http.HTTPFlow) -> None:
        if self.pipeline is None:
            return
        request = flow.request
        # Read before the policy, which may mask a header value or a body field.
        call = self.calls[flow] = CallTrace(read_headers(request.headers.fields))
        if "content-encoding" not in call.headers:
            call.body = request.raw_content  # a reference: read only if the call is MCP
        if flow.response is None:
            call.mark = time.time_ns()

    @flow_hook
    def response(self, flow: http.HTTPFlow) -> None:
        call = self.calls.get(flow) if self.pipeline is not None else None
        if call is None or flow.response is None or flowmeta.REFUSED in flow.metadata:
            return
        now = time.time_ns()
        if call.forwarded:  # the backend's answer, before anything changes it
            ended = flow.response.timestamp_end
            call.upstream = (int(ended * 1e9) if ended else now, flow.response.status_code)
        call.mark = now  # the policy checks it next

    # -- the call's span ---------------------------------------------------------------------

    def begin(self, flow: http.HTTPFlow, call: CallTrace) -> None:
        """The call's span context, from the caller's if it sent one: MCP `params._meta`
        first (the header's context then linked), else the headers."""
        assert self.pipeline is not None
        meta = None
        context = flow.metadata.get(flowmeta.PROTOCOL)
        if call.body is not None and context and context.get("protocol") == "mcp":
            call.mcp, meta = mcp_call(call.body)
        call.body = None
        header = self._extract(call.headers if "traceparent" in call.headers else None)
        parent = self._extract(meta)
        if parent is None:
            parent = header
        elif header is not None and header[1] != parent[1]:
            call.links = (Link(header[1]),)
        provider = self.pipeline.provider
        ids = provider.id_generator
        if parent is None and provider.sampler is sampling.DEFAULT_ON:
            # what that sampler says of a new trace, without asking it (the usual case)
            trace_id, flags, state = ids.generate_trace_id(), SAMPLED, None
        else:
            context, span = parent if parent else (None, None)
            trace_id = span.trace_id if span else ids.generate_trace_id()
            sampled = provider.sampler.should_sample(context, trace_id, "toolgate.call", SERVER,
                                                     None, call.links)
            flags = SAMPLED if sampled.decision.is_sampled() else NOT_SAMPLED
            state = sampled.trace_state
            call.parent = span
        call.span = SpanContext(trace_id, ids.generate_span_id(), False, flags, state)

    @staticmethod
    def pass_on(flow: http.HTTPFlow, call: CallTrace) -> None:
        """The backend's trace context: the call's span (its spans become children), in place
        of the caller's `traceparent` and `tracestate`. Written as the SDK's propagator
        writes them, in one pass over the header fields (a fifth of the time the propagator
        and mitmproxy's header methods take)."""
        span = call.span
        assert span is not None
        fields = [f for f in flow.request.headers.fields if f[0].lower() not in PASSED_ON]
        fields.append((b"traceparent", b"00-%032x-%016x-%02x" % (
            span.trace_id, span.span_id, span.trace_flags)))
        if span.trace_state:
            fields.append((b"tracestate", span.trace_state.to_header().encode()))
        flow.request.headers.fields = tuple(fields)

    def _extract(self, carrier: Mapping[str, str] | None) -> tuple[Any, SpanContext] | None:
        """The context the sampler wants and the valid remote span context in `carrier`; None
        for none or a malformed one (a new trace starts: never an error)."""
        if not carrier:
            return None
        context = self.propagator.extract(carrier)
        span = trace_api.get_current_span(context).get_span_context()
        return (context, span) if span.is_valid else None

    def finish(self, flow: http.HTTPFlow, call: CallTrace, now: int) -> None:
        """Make the call's spans, now that it has ended, and hand them to the exporter."""
        pipeline = self.pipeline
        if pipeline is None:
            return
        if call.span is None:
            self.begin(flow, call)
        span = call.span
        assert span is not None
        if not span.trace_flags.sampled:
            return
        new_id = pipeline.provider.id_generator.generate_span_id
        name, attributes = call_attributes(flow, call)
        error = attributes.get("error.type")
        start = int(flow.request.timestamp_start * 1e9)
        spans = [encode_span(span, call.parent, name, SERVER, start, now, attributes,
                             Status(StatusCode.ERROR, str(error)) if error else UNSET,
                             links=call.links)]

        def child(name: str, kind: SpanKind, begin: int, end: int, attributes: dict[str, Any],
                  status: Status = UNSET) -> None:
            context = SpanContext(span.trace_id, new_id(), False, span.trace_flags,
                                  span.trace_state)
            spans.append(encode_span(context, span, name, kind, begin, max(begin, end),
                                     attributes, status))

        for direction, begin, end in call.policy:
            child("toolgate.policy", INTERNAL, begin, end, {ATTR_DIRECTION: direction})
        for direction, begin, end, verdict in call.holds:
            child("toolgate.hold", INTERNAL, begin, end, hold_attributes(direction, verdict))
        if call.forwarded:
            request = flow.request
            upstream: dict[str, Any] = {"http.request.method": method_of(request),
                                        "server.address": request.host,
                                        "server.port": request.port}
            if call.upstream is not None:
                end, status = call.upstream
                upstream["http.response.status_code"] = status
                failed = str(status) if status >= 500 else None
            else:  # the backend could not be reached, or the call was cut off
                end, failed = now, "upstream"
            if failed:
                upstream["error.type"] = failed
            child("toolgate.upstream", CLIENT, call.forwarded, end, upstream,
                  Status(StatusCode.ERROR, failed) if failed else UNSET)
        pipeline.processor.on_end(CallSpans(spans, pipeline.provider.resource))


class Checked:
    """Right after the policy: its time, and the call's span context passed on."""

    name = "tracing.checked"

    def __init__(self, tracing: Tracing) -> None:
        self.tracing = tracing

    @flow_hook
    def request(self, flow: http.HTTPFlow) -> None:
        tracing = self.tracing
        call = tracing.calls.get(flow) if tracing.pipeline is not None else None
        if call is None:
            return
        now = time.time_ns()
        if call.mark:
            call.policy.append(("request", call.mark, now))
            call.mark = 0
        if flow.response is None:  # on its way: the context goes with it
            tracing.begin(flow, call)
            tracing.pass_on(flow, call)
            call.decided = now

    @flow_hook
    def response(self, flow: http.HTTPFlow) -> None:
        call = self.tracing.calls.get(flow) if self.tracing.pipeline is not None else None
        if call is None or not call.mark:
            return
        now = time.time_ns()
        call.policy.append(("response", call.mark, now))
        call.mark, call.decided = 0, now


class Ended:
    """Last before the seal: when the call leaves for the backend, and the end of the call."""

    name = "tracing.ended"

    def __init__(self, tracing: Tracing) -> None:
        self.tracing = tracing

    @flow_hook
    def request(self, flow: http.HTTPFlow) -> None:
        call = self.tracing.calls.get(flow) if self.tracing.pipeline is not None else None
        if call is None:
            return
        now = time.time_ns()
        self._hold(flow, call, "request", now)
        if flow.response is None and flow.error is None:
            call.forwarded = now

    @flow_hook
    def response(self, flow: http.HTTPFlow) -> None:
        self._end(flow)

    @flow_hook
    def error(self, flow: http.HTTPFlow) -> None:
        self._end(flow)

    def _end(self, flow: http.HTTPFlow) -> None:
        tracing = self.tracing
        call = tracing.calls.pop(flow, None)
        if call is None:
            return
        now = time.time_ns()
        if call.forwarded and call.upstream is None and flow.error is None:
            call.forwarded = 0  # refused after this addon saw it leave (the sentinel): it never did
        # The call has been answered and recorded: a failure here must not change its answer.
        try:
            self._hold(flow, call, "response", now)
            tracing.finish(flow, call, now)
        except Exception:  # noqa: BLE001 - telemetry after the fact
            tracing.finish_errors += 1
            if tracing.finish_errors == 1:
                logger.exception("toolgate: could not trace call %s (logged once)",
                                 flow.metadata.get(flowmeta.CALL_ID))

    @staticmethod
    def _hold(flow: http.HTTPFlow, call: CallTrace, direction: str, now: int) -> None:
        approval = flow.metadata.get(flowmeta.APPROVAL)
        if not isinstance(approval, dict) or approval is call.approval:
            return
        verdict = approval.get("verdict")
        if isinstance(verdict, dict):
            call.approval = approval
            call.holds.append((direction, call.decided or now, now, verdict))


# -- what a span holds --------------------------------------------------------------------------

def call_attributes(flow: http.HTTPFlow, call: CallTrace) -> tuple[str, dict[str, Any]]:
    """The call span's name and attributes: names, decisions and ids, never a body value."""
    meta = flow.metadata
    request = flow.request
    policy = meta.get(flowmeta.DECISION) or {}
    refused = meta.get(flowmeta.REFUSED)
    decision, enforced, rules, mode = final_decision(policy, refused, bool(call.forwarded))
    attributes: dict[str, Any] = {
        ATTR_CALL_ID: call_id_of(flow),
        ATTR_DECISION: decision,
        ATTR_ENFORCED: enforced,
        ATTR_RULES: rules,
        ATTR_LABELS: [str(label) for label in policy.get("labels") or ()],
        "http.request.method": method_of(request),
    }
    if mode:
        attributes[ATTR_MODE] = mode
    protocol = policy.get("protocol") or (meta.get(flowmeta.PROTOCOL) or {}).get("protocol")
    if protocol:
        attributes[ATTR_PROTOCOL] = protocol
    # a name holding a labelled value (`lookup_jane@example.com`) as the store keeps it
    function = flowmeta.shown_function(meta, policy.get("function"))
    tool = name = None
    if call.mcp is not None:
        method = flowmeta.shown_function(meta, call.mcp["method"]) or ""
        attributes["mcp.method.name"] = name = method[:MAX_TEXT]
        if call.mcp["id"] is not None:
            attributes["jsonrpc.request.id"] = call.mcp["id"][:MAX_TEXT]
        if call.mcp["method"] == "tools/call":
            tool = flowmeta.shown_function(meta, call.mcp["tool"]) or function
    elif protocol in LLM_PROTOCOLS:
        if function and not function.startswith("message."):
            tool = function
        else:
            name = "chat"
            attributes["gen_ai.operation.name"] = "chat"
    elif protocol == "rest" and not is_rest_name(function, request.method):
        # a catalogued function: an unnamed one is its method and path (values, maybe), and
        # the path on the flow may no longer be the one it was named by (masked, or stored)
        tool = function
    if tool:
        tool = tool[:MAX_TEXT]
        name = f"execute_tool {tool}"
        attributes["gen_ai.operation.name"] = "execute_tool"
        attributes["gen_ai.tool.name"] = tool
    session = call.headers.get(MCP_SESSION_HEADER)
    if session is None and flow.response is not None and call.mcp is not None:
        session = header_value(flow.response.headers, MCP_SESSION_HEADER)  # `initialize`
    if session is not None:
        attributes["mcp.session.id"] = session[:MAX_TEXT]
    if call.mcp is not None and (version := call.headers.get(MCP_VERSION_HEADER)):
        attributes["mcp.protocol.version"] = version[:MAX_TEXT]
    status = flow.response.status_code if flow.response is not None else None
    if status is not None:
        attributes["http.response.status_code"] = status
    if refused:
        attributes["error.type"] = refused
    elif flow.error is not None:
        attributes["error.type"] = "upstream" if call.forwarded else "aborted"
    elif status is not None and status >= 500:
        attributes["error.type"] = str(status)
    if name is None:
        name = attributes["http.request.method"]
    return (name if name != "_OTHER" else "HTTP"), attributes


def method_of(request: http.Request) -> str:
    method = request.method
    return method if method in KNOWN_METHODS else "_OTHER"


def read_headers(fields: Sequence[tuple[bytes, bytes]]) -> dict[str, str]:
    """The values of READ_HEADERS, in one pass over a message's header fields; a repeated
    header's values joined with ", " (as `Headers.get` does: a repeated `traceparent` is
    then malformed, and a new trace starts)."""
    found: dict[str, str] = {}
    for raw, value in fields:
        name = READ_HEADERS.get(raw.lower())
        if name is not None:
            text = value.decode("utf-8", "surrogateescape")
            found[name] = f"{found[name]}, {text}" if name in found else text
    return found


def hold_attributes(direction: str, verdict: Mapping[str, Any]) -> dict[str, Any]:
    attributes: dict[str, Any] = {ATTR_DIRECTION: direction}
    for key, attribute in (("decision", "toolgate.approval.decision"),
                           ("channel", "toolgate.approval.channel"),
                           ("held_id", "toolgate.approval.id")):
        if isinstance(verdict.get(key), str):
            attributes[attribute] = verdict[key][:MAX_TEXT]
    return attributes


def mcp_call(body: bytes) -> tuple[dict[str, Any] | None, dict[str, str] | None]:
    """An MCP request's method, JSON-RPC id and tool (of its first request, in a batch), and
    the trace context in its `params._meta`."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, None
    messages = value if isinstance(value, list) else [value]
    message = next((m for m in messages if isinstance(m, dict)
                    and isinstance(m.get("method"), str)), None)
    if message is None:
        return None, None
    rid = message.get("id")
    params = message.get("params") if isinstance(message.get("params"), dict) else {}
    tool = params.get("name") if message["method"] == "tools/call" else None
    call = {"method": message["method"],
            "id": str(rid) if isinstance(rid, (str, int)) and not isinstance(rid, bool) else None,
            "tool": tool if isinstance(tool, str) else None}
    meta = params.get("_meta")
    if not isinstance(meta, dict) or not isinstance(meta.get("traceparent"), str):
        return call, None
    carrier = {"traceparent": meta["traceparent"]}
    if isinstance(meta.get("tracestate"), str):
        carrier["tracestate"] = meta["tracestate"]
    return call, carrier


def parse_endpoint(value: str | None) -> str | None:
    """`toolgate_otlp_endpoint`: an http(s) URL; one without a path gets /v1/traces."""
    if value is None or not value.strip():
        return None
    url = settings.parse_http_url(value, OPTION)
    scheme, _, rest = url.partition("://")
    if "/" not in rest.rstrip("/"):
        url = f"{scheme}://{rest.rstrip('/')}{TRACES_PATH}"
    return url


# -- the export pipeline ------------------------------------------------------------------------

class TracePipeline:
    """Our own TracerProvider (never the global one), its batch processor and exporter."""

    def __init__(self, endpoint: str) -> None:
        self.exporter = TraceExporter(endpoint)
        resource = Resource.create()
        if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
            resource = resource.merge(Resource({"service.name": "toolgate"}))
        self.provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        self.processor = TraceProcessor(
            self.exporter, max_queue_size=QUEUE_SIZE, schedule_delay_millis=EXPORT_DELAY_MS,
            max_export_batch_size=BATCH_SIZE, meter_provider=NoOpMeterProvider())
        self.provider.add_span_processor(self.processor)
        # A caller's malformed trace context starts a new trace; the SDK would also log a
        # warning for each such call, which any caller could fill the log with.
        for name in QUIET_LOGGERS:
            logging.getLogger(name).addFilter(_quiet)

    def dropped(self) -> int:
        return self.exporter.dropped + self.processor.dropped

    def shutdown(self, wait: float) -> None:
        """Export what is queued and stop, on a thread of its own: `wait` seconds at most."""
        worker = threading.Thread(target=self.provider.shutdown, name="toolgate-trace-shutdown",
                                  daemon=True)
        worker.start()
        if wait:
            worker.join(wait)


class TraceProcessor(BatchSpanProcessor):
    """The SDK's batch processor; while the collector is down, a span that ends is dropped at
    once (counted) but for one every RETRY_SECONDS, which tries the collector again."""

    def __init__(self, exporter: TraceExporter, **kwargs: Any) -> None:
        super().__init__(exporter, **kwargs)
        self.exporter = exporter
        self.dropped = 0  # by this thread (the event loop's); the exporter counts its own
        # The SDK's queue (of the pinned release): a full one would drop its oldest entry and
        # log a warning for every span; here the new call's spans are dropped and counted.
        self._queue = getattr(getattr(self, "_batch_processor", None), "_queue", None)
        self._full_told = False

    def on_end(self, span: CallSpans | ReadableSpan) -> None:  # type: ignore[override]
        queue = self._queue
        if queue is not None and queue.maxlen is not None and len(queue) >= queue.maxlen:
            self.dropped += span_count(span)
            if not self._full_told:
                self._full_told = True
                logger.warning("toolgate: the trace export queue is full (the collector is "
                               "slower than the calls): spans are dropped, and counted")
            return
        exporter = self.exporter
        if exporter.outage:
            now = time.monotonic()
            if now < exporter.retry_at:
                self.dropped += span_count(span)
                return
            exporter.retry_at = now + RETRY_SECONDS  # this call's spans are the next try
        super().on_end(span)  # type: ignore[arg-type]


class TraceExporter(OTLPSpanExporter):
    """The OTLP/HTTP exporter's HTTP client with toolgate's encoder, and outage bookkeeping:
    a failure is logged once per outage (not per batch), and counted (in spans)."""

    def __init__(self, endpoint: str) -> None:
        super().__init__(endpoint=endpoint, timeout=EXPORT_TIMEOUT,
                         meter_provider=NoOpMeterProvider())
        # The client that posts encoded bytes (headers, TLS, compression, retries): the SDK's
        # own, of the release pyproject.toml pins. Another release may not have it: say so
        # at start, rather than trace nothing.
        if not callable(getattr(getattr(self, "_client", None), "export", None)):
            raise RuntimeError("this opentelemetry-exporter-otlp-proto-http release has no "
                               "HTTP client toolgate can hand encoded spans to: install the "
                               "release pyproject.toml names")
        self.exported = self.failures = self.dropped = 0
        self.outage = False
        self.retry_at = 0.0  # time.monotonic() before which spans are dropped as they end
        # Its own logger would tell every failed batch; we tell the outage, once.
        logging.getLogger(OTLPSpanExporter.__module__).addFilter(_quiet)

    def export(  # type: ignore[override]
            self, spans: Sequence[CallSpans | ReadableSpan]) -> SpanExportResult:
        # In an outage the processor lets one call's spans through now and then, to try
        # again: a larger batch was queued before the outage was known, and is not tried.
        count = sum(span_count(span) for span in spans)
        if self.outage and time.monotonic() < self.retry_at and len(spans) > 1:
            self.failures += 1
            self.dropped += count
            return SpanExportResult.FAILURE
        why = None
        try:
            result = self._client.export(encode_request(spans))
            ok = result.success
            why = result.status_code or result.reason or result.error
        except Exception as exc:  # noqa: BLE001 - the collector's troubles are never ours
            ok, why = False, exc
        if ok:
            self.exported += count
            if self.outage:
                self.outage = False
                logger.info("toolgate: the trace collector %s is reached again",
                            self._endpoint)
            return SpanExportResult.SUCCESS
        self.failures += 1
        self.dropped += count
        self.retry_at = time.monotonic() + RETRY_SECONDS
        if not self.outage:
            self.outage = True
            logger.warning("toolgate: spans cannot be sent to the trace collector %s (%s); "
                           "they are dropped, and counted, until it can be reached",
                           self._endpoint, why or "no answer")
        return SpanExportResult.FAILURE


def _quiet(record: logging.LogRecord) -> bool:
    return False


# -- OTLP protobuf, written directly ------------------------------------------------------------
# opentelemetry/proto/collector/trace/v1/trace_service.proto and the messages it names. The
# tests check the bytes against the SDK's own encoder, decoded with opentelemetry-proto.

_BYTE = [bytes([i]) for i in range(128)]
_MASK64 = (1 << 64) - 1
_KIND = {SpanKind.INTERNAL: 1, SpanKind.SERVER: 2, SpanKind.CLIENT: 3, SpanKind.PRODUCER: 4,
         SpanKind.CONSUMER: 5}
_HAS_IS_REMOTE, _IS_REMOTE = 0x100, 0x200  # SpanFlags
_fixed32, _fixed64, _double = struct.Struct("<I").pack, struct.Struct("<Q").pack, \
    struct.Struct("<d").pack


def _varint(value: int) -> bytes:
    if value < 0x80:
        return _BYTE[value]
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field."""
    size = len(payload)
    return tag + (_BYTE[size] if size < 0x80 else _varint(size)) + payload


def _text(value: str) -> bytes:
    return value.encode("utf-8", "replace")


def _any_value(value: Any) -> bytes:
    if isinstance(value, str):
        return _field(b"\x0a", _text(value))
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        return b"\x18" + _varint(value & _MASK64)
    if isinstance(value, float):
        return b"\x21" + _double(value)
    if isinstance(value, bytes):
        return _field(b"\x3a", value)
    if isinstance(value, Sequence):
        return _field(b"\x2a", b"".join(_field(b"\x0a", _any_value(v)) for v in value))
    if isinstance(value, Mapping):
        return _field(b"\x32", b"".join(_field(b"\x0a", _key_value(str(k), v))
                                        for k, v in value.items()))
    return b""  # None: an empty AnyValue


# Encoded attributes (a field holding a KeyValue) by key and value: most repeat from call to
# call (a decision, a method, a status). Values that never repeat are not kept.
_ENCODED: dict[tuple[bytes, str, Any, type], bytes] = {}
_ENCODED_MAX = 4096
_NAMES: dict[str, bytes] = {}  # encoded span names
_UNIQUE = frozenset({ATTR_CALL_ID, "jsonrpc.request.id", "mcp.session.id"})


def _key_value(key: str, value: Any) -> bytes:
    return _field(b"\x0a", _text(key)) + _field(b"\x12", _any_value(value))


def _attributes(tag: bytes, attributes: Mapping[str, Any] | None) -> list[bytes]:
    if not attributes:
        return []
    out = []
    for key, value in attributes.items():
        cacheable = key not in _UNIQUE and isinstance(value, (str, int, float))
        if (not cacheable and isinstance(value, (list, tuple)) and len(value) < 8
                and all(isinstance(item, str) for item in value)):
            value, cacheable = tuple(value), True  # rules and labels
        if cacheable:
            # (the type too: True == 1, and must not be encoded as it)
            index = (tag, key, value, type(value))
            encoded = _ENCODED.get(index)  # type: ignore[arg-type]
            if encoded is None:
                encoded = _field(tag, _key_value(key, value))
                if len(_ENCODED) < _ENCODED_MAX:
                    _ENCODED[index] = encoded  # type: ignore[index]
        else:
            encoded = _field(tag, _key_value(key, value))
        out.append(encoded)
    return out


def _trace_state(state: Any) -> str:
    return ",".join(f"{k}={v}" for k, v in state.items()) if state else ""


_LOCAL, _REMOTE = _fixed32(_HAS_IS_REMOTE), _fixed32(_HAS_IS_REMOTE | _IS_REMOTE)


def _flags(parent: SpanContext | None) -> bytes:
    return _REMOTE if parent is not None and parent.is_remote else _LOCAL


class CallSpans:
    """A call's spans, encoded as they ended: what the batch processor queues for the call.
    `payload` holds each span as a field of an OTLP `ScopeSpans` (of SCOPE); `count` says how
    many (the counters are in spans)."""

    __slots__ = ("payload", "count", "resource")
    instrumentation_scope = SCOPE
    # What the batch processor reads of a span: only sampled calls' spans are made.
    context = SpanContext(0, 0, False, SAMPLED)

    def __init__(self, spans: Sequence[bytes], resource: Resource) -> None:
        self.payload = b"".join(_field(b"\x12", span) for span in spans)
        self.count = len(spans)
        self.resource = resource


def span_count(span: CallSpans | ReadableSpan) -> int:
    return span.count if type(span) is CallSpans else 1


def encode_span(
    context: SpanContext, parent: SpanContext | None, name: str, kind: SpanKind, start: int,
    end: int, attributes: Mapping[str, Any] | None, status: Status, events: Sequence[Any] = (),
    links: Sequence[Link] = (), dropped: int = 0,
) -> bytes:
    """One OTLP `Span` message."""
    parts = [b"\x0a\x10", context.trace_id.to_bytes(16, "big"),
             b"\x12\x08", context.span_id.to_bytes(8, "big")]
    if context.trace_state and (state := _trace_state(context.trace_state)):
        parts.append(_field(b"\x1a", _text(state)))
    if parent is not None:
        parts += (b"\x22\x08", parent.span_id.to_bytes(8, "big"))
    encoded = _NAMES.get(name)
    if encoded is None:
        encoded = _field(b"\x2a", _text(name))
        if len(_NAMES) < _ENCODED_MAX:
            _NAMES[name] = encoded
    parts += (encoded, b"\x30", _BYTE[_KIND[kind]])
    if start:
        parts += (b"\x39", _fixed64(start))
    if end:
        parts += (b"\x41", _fixed64(end))
    parts += _attributes(b"\x4a", attributes)
    if dropped:
        parts += (b"\x50", _varint(dropped))
    for event in events:
        fields = [b"\x09", _fixed64(event.timestamp), _field(b"\x12", _text(event.name)),
                  *_attributes(b"\x1a", event.attributes)]
        parts.append(_field(b"\x5a", b"".join(fields)))
    for link in links:
        linked = link.context
        fields = [b"\x0a\x10", linked.trace_id.to_bytes(16, "big"),
                  b"\x12\x08", linked.span_id.to_bytes(8, "big")]
        if state := _trace_state(linked.trace_state):
            fields.append(_field(b"\x1a", _text(state)))
        fields += _attributes(b"\x22", link.attributes)
        fields += (b"\x35", _flags(linked))
        parts.append(_field(b"\x6a", b"".join(fields)))
    if status is not UNSET and (status.description or status.status_code.value):
        fields = []
        if status.description:
            fields.append(_field(b"\x12", _text(status.description)))
        if status.status_code.value:
            fields += (b"\x18", _BYTE[status.status_code.value])
        parts.append(_field(b"\x7a", b"".join(fields)))
    else:
        parts.append(b"\x7a\x00")  # unset: present and empty, as the SDK writes it
    parts += (b"\x85\x01", _flags(parent))
    return b"".join(parts)


def _span(span: ReadableSpan) -> bytes:
    assert span.context is not None
    return encode_span(span.context, span.parent, span.name, span.kind, span.start_time or 0,
                       span.end_time or 0, span.attributes, span.status, span.events,
                       span.links, span.dropped_attributes)


def _scope(scope: InstrumentationScope | None) -> bytes:
    if scope is None:
        return b""
    fields = [_field(b"\x0a", _text(scope.name))]
    if scope.version:
        fields.append(_field(b"\x12", _text(scope.version)))
    fields += _attributes(b"\x1a", scope.attributes)
    return b"".join(fields)


def encode_request(spans: Sequence[CallSpans | ReadableSpan]) -> bytes:
    """An `ExportTraceServiceRequest` of `spans` (calls' encoded spans, or the SDK's spans),
    grouped by resource and scope as the SDK's encoder groups them."""
    # By identity: a Resource hashes by dumping its attributes as JSON, every time.
    groups: dict[int, tuple[Resource, dict[int, tuple[Any, list[bytes]]]]] = {}
    for span in spans:
        resource, scope = span.resource, span.instrumentation_scope
        scopes = groups.setdefault(id(resource), (resource, {}))[1]
        scopes.setdefault(id(scope), (scope, []))[1].append(
            span.payload if type(span) is CallSpans else _field(b"\x12", _span(span)))
    out = []
    for resource, scopes in groups.values():
        fields = [_field(b"\x0a", b"".join(_attributes(b"\x0a", resource.attributes)))]
        for scope, encoded in scopes.values():
            scope_fields = [_field(b"\x0a", _scope(scope)), *encoded]
            if scope is not None and scope.schema_url:
                scope_fields.append(_field(b"\x1a", _text(scope.schema_url)))
            fields.append(_field(b"\x12", b"".join(scope_fields)))
        if resource.schema_url:
            fields.append(_field(b"\x1a", _text(resource.schema_url)))
        out.append(_field(b"\x0a", b"".join(fields)))
    return b"".join(out)
