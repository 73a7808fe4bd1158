"""Traces end to end: a real mitmdump with `toolgate_otlp_endpoint` pointing at an OTLP/HTTP
receiver in this test, which decodes the exported protobuf spans with opentelemetry-proto: span
names and attributes (GenAI and MCP conventions, decisions, labels, the call id), child spans and
their parents, the caller's trace continued (`traceparent` header, MCP `params._meta`) and handed
to the backend; a collector that is down costs nothing but a counter; unset, nothing is sent."""

from __future__ import annotations

import re
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from harness import wait_until
from otlp_receiver import Receiver
from prometheus_client.parser import text_string_to_metric_families

from toolgate.scripts.demo_service import CUSTOMERS
from toolgate.scripts.harness import free_port

pytestmark = pytest.mark.e2e

TRACE, PARENT = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
META_TRACE, META_PARENT = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
SERVER, CLIENT = 2, 3  # Span.SpanKind
# Every value of the demo's customer records: none may be in a span.
CUSTOMER_VALUES = {str(v) for c in CUSTOMERS for k, v in c.items() if k != "id"
                   and len(str(v)) > 3}


@pytest.fixture
def receiver():
    running = Receiver()
    yield running
    running.stop()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def rpc(name, arguments, rid=1, meta=None):
    params = {"name": name, "arguments": arguments, **({"_meta": meta} if meta else {})}
    return {"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": params}


def received_traceparent(backend, call_id: str) -> str:
    (got,) = [r for r in backend.received if r.header("x-toolgate-call-id") == call_id]
    return got.header("traceparent")


def assert_no_value_in(spans: list[dict[str, Any]]) -> None:
    text = repr([(s["name"], s["attributes"]) for s in spans])
    leaked = sorted(v for v in CUSTOMER_VALUES if v in text)
    assert not leaked, f"body values in spans: {leaked}"


def test_spans_of_mcp_rest_and_held_calls(start_gateway, backend, issuer, receiver):
    gateway = start_gateway(f"toolgate_otlp_endpoint={receiver.url}")
    alice = bearer(issuer.keys.mint("alice", ["support"]))
    with gateway.client() as http:
        # MCP, the caller's context in the traceparent header
        answer = http.post("/mcp", json=rpc("get_customer", {"id": 3}, rid=11), headers={
            **alice, "traceparent": f"00-{TRACE}-{PARENT}-01", "tracestate": "rojo=1",
            "mcp-session-id": "session-1"})
        assert answer.status_code == 200
        call_id = answer.headers["x-toolgate-call-id"]
        span = receiver.call(call_id)
        assert span["name"] == "execute_tool get_customer" and span["kind"] == SERVER
        attributes = span["attributes"]
        assert attributes["gen_ai.operation.name"] == "execute_tool"
        assert attributes["gen_ai.tool.name"] == "get_customer"
        assert attributes["mcp.method.name"] == "tools/call"
        assert attributes["mcp.session.id"] == "session-1"
        assert attributes["jsonrpc.request.id"] == "11"
        assert attributes["toolgate.call_id"] == call_id
        assert attributes["toolgate.decision"] == attributes["toolgate.enforced"] == "mask"
        assert {"ssn", "email"} <= set(attributes["toolgate.labels"])
        assert "demo-mask-ssn-and-cards" in attributes["toolgate.rules"]
        assert attributes["http.request.method"] == "POST"
        assert attributes["http.response.status_code"] == 200
        assert span["trace_id"] == TRACE and span["parent"] == PARENT
        assert span["resource"]["service.name"] == "toolgate" and span["scope"] == "toolgate"
        below = receiver.children(span)
        assert sorted(below) == ["toolgate.policy", "toolgate.upstream"]
        assert sorted(c["attributes"]["toolgate.direction"] for c in below["toolgate.policy"]) == [
            "request", "response"]
        (upstream,) = below["toolgate.upstream"]
        assert upstream["kind"] == CLIENT
        assert upstream["attributes"]["http.response.status_code"] == 200
        assert span["start"] <= upstream["start"] <= upstream["end"] <= span["end"]
        # the backend's spans are the call span's children, in the caller's trace
        assert received_traceparent(backend, call_id) == f"00-{TRACE}-{span['span_id']}-01"

        # MCP, the caller's context in params._meta only
        meta = {"traceparent": f"00-{META_TRACE}-{META_PARENT}-01"}
        answer = http.post("/mcp", json=rpc("search_customers", {"query": "ada"}, rid="q-2",
                                             meta=meta), headers=alice)
        assert answer.status_code == 200
        call_id = answer.headers["x-toolgate-call-id"]
        span = receiver.call(call_id)
        assert span["name"] == "execute_tool search_customers"
        assert span["trace_id"] == META_TRACE and span["parent"] == META_PARENT
        assert span["attributes"]["jsonrpc.request.id"] == "q-2"
        assert received_traceparent(backend, call_id) == f"00-{META_TRACE}-{span['span_id']}-01"

        # REST: a function of the catalog; no context from the caller starts a trace
        answer = http.get("/customers/3", headers=alice)
        assert answer.status_code == 200
        call_id = answer.headers["x-toolgate-call-id"]
        span = receiver.call(call_id)
        assert span["name"] == "execute_tool crm.get_customer" and span["parent"] is None
        assert span["attributes"]["toolgate.protocol"] == "rest"
        assert received_traceparent(backend, call_id) == (
            f"00-{span['trace_id']}-{span['span_id']}-01")

        # a refused call: its error, no upstream, nothing at the backend
        answer = http.get("/customers/export?limit=500", headers=alice)
        assert answer.status_code == 403
        span = receiver.call(answer.headers["x-toolgate-call-id"])
        assert span["attributes"]["error.type"] == "blocked"
        assert span["attributes"]["toolgate.decision"] == "block"
        assert span["status"] == 2  # STATUS_CODE_ERROR
        assert sorted(receiver.children(span)) == ["toolgate.policy"]

    # held, then approved by a reviewer on the admin API
    bob, carol = issuer.keys.mint("bob", ["sre"]), issuer.keys.mint("carol", ["sre-leads"])
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(httpx.post, gateway.url + "/deploy", timeout=30,
                              json={"service": "api", "version": "2"},
                              headers={**bearer(bob), "traceparent": f"00-{TRACE}-{PARENT}-01"})
        held = wait_until(lambda: httpx.get(gateway.admin_url + "/api/approvals", timeout=10,
                                            headers=bearer(carol)).json()["approvals"],
                          timeout=10, interval=0.05)
        assert held, "the deploy was not held"
        time.sleep(0.3)  # held for a while: the hold span shows it
        approved = httpx.post(f"{gateway.admin_url}/api/approvals/{held[0]['id']}/approve",
                              json={"reason": "release 2"}, headers=bearer(carol), timeout=10)
        assert approved.status_code == 200, approved.text
        answer = pending.result(20)
    assert answer.status_code == 202
    span = receiver.call(answer.headers["x-toolgate-call-id"])
    assert span["name"] == "execute_tool deploy.start" and span["trace_id"] == TRACE
    assert span["attributes"]["toolgate.decision"] == "approve"
    below = receiver.children(span)
    assert sorted(below) == ["toolgate.hold", "toolgate.policy", "toolgate.upstream"]
    (hold,) = below["toolgate.hold"]
    assert hold["attributes"]["toolgate.approval.decision"] == "approved"
    assert hold["attributes"]["toolgate.approval.id"] == held[0]["id"]
    assert hold["end"] - hold["start"] >= 250_000_000
    assert hold["end"] <= below["toolgate.upstream"][0]["start"]
    assert_no_value_in(receiver.spans)


def test_a_collector_that_is_down_costs_nothing_but_a_counter(start_gateway, backend, issuer):
    receiver = Receiver(free_port())
    gateway = start_gateway(f"toolgate_otlp_endpoint={receiver.url}")
    alice = bearer(issuer.keys.mint("alice", ["support"]))

    def timed_calls(http, count: int) -> list[float]:
        took = []
        for _ in range(count):
            started = time.perf_counter()
            assert http.get("/customers/3", headers=alice).status_code == 200
            took.append(time.perf_counter() - started)
        return took

    with gateway.client() as http:
        alive = timed_calls(http, 20)
        receiver.call(http.get("/customers/1", headers=alice).headers["x-toolgate-call-id"])
        receiver.stop()  # the collector goes away; its port refuses connections
        down = timed_calls(http, 60)
        gateway.wait_for(re.compile(r"spans cannot be sent to the trace collector"), timeout=10)
        down += timed_calls(http, 60)
    assert statistics.median(down) < max(3 * statistics.median(alive), 0.1), (alive, down)
    # an export that blocked the event loop would stall calls for a second or two
    assert statistics.quantiles(down, n=20)[-1] < 0.5, sorted(down)[-5:]
    assert gateway.output.count("spans cannot be sent to the trace collector") == 1
    scraped = httpx.get(gateway.admin_url + "/metrics", timeout=10,
                        headers=bearer(issuer.keys.mint("carol", ["sre-leads"])))
    assert scraped.status_code == 200, scraped.text
    counted = {s.name: s.value for f in text_string_to_metric_families(scraped.text)
               for s in f.samples}
    assert counted["toolgate_trace_collector_up"] == 0
    assert counted["toolgate_trace_spans_exported_total"] >= 3
    assert counted["toolgate_trace_spans_dropped_total"] >= 100
    assert counted["toolgate_trace_export_failures_total"] >= 1
    gateway.stop()
    summary = re.search(r"traces: (\d+) spans exported, (\d+) dropped \((\d+) exports failed\)",
                        gateway.output)
    assert summary, gateway.output[-2000:]
    exported, dropped, failed = map(int, summary.groups())
    assert exported >= 3 and dropped >= 100 and failed >= 1


def test_with_the_option_unset_nothing_is_exported(start_gateway, backend, issuer, receiver):
    gateway = start_gateway()
    caller = f"00-{TRACE}-{PARENT}-01"
    with gateway.client() as http:
        answer = http.get("/customers/3", headers={
            **bearer(issuer.keys.mint("alice", ["support"])), "traceparent": caller})
    assert answer.status_code == 200
    # the caller's context goes on untouched
    assert received_traceparent(backend, answer.headers["x-toolgate-call-id"]) == caller
    time.sleep(2.5)  # more than the export delay
    assert receiver.posts == 0 and receiver.spans == []
