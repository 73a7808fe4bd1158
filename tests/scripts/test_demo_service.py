"""The demo backend speaks the protocols the gateway must handle."""

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from toolgate.scripts.demo_service import DemoService


@pytest.fixture(scope="module")
def service():
    running = DemoService().start()
    yield running
    running.stop()


def rpc(method, rid=1, **params):
    return {"jsonrpc": "2.0", "id": rid, "method": method, "params": params}


def test_rest_records_are_full_of_pii(service):
    record = httpx.get(service.url + "/customers/1").json()
    assert record["ssn"] == "536-22-1234" and "card" in record and "email" in record
    assert len(httpx.get(service.url + "/customers/export?limit=25").json()["customers"]) == 25


def test_mcp_initialize_gives_a_session(service):
    answer = httpx.post(service.url + "/mcp", json=rpc("initialize"))
    assert answer.headers["Mcp-Session-Id"]
    assert answer.json()["result"]["serverInfo"]["name"] == "toolgate-demo"


def test_mcp_tools_list_and_call_as_json(service):
    tools = httpx.post(service.url + "/mcp", json=rpc("tools/list")).json()["result"]["tools"]
    assert {t["name"] for t in tools} >= {"get_customer", "deploy", "export_customers"}
    result = httpx.post(service.url + "/mcp", json=rpc("tools/call", name="get_customer",
                                                       arguments={"id": 2})).json()["result"]
    assert result["structuredContent"]["name"] == "Alan Turing"
    assert json.loads(result["content"][0]["text"]) == result["structuredContent"]


def test_mcp_answers_as_an_event_stream_when_asked_first(service):
    answer = httpx.post(service.url + "/mcp", json=rpc("tools/call", rid=5, name="get_customer",
                                                       arguments={"id": 1}),
                        headers={"Accept": "text/event-stream, application/json"})
    assert answer.headers["Content-Type"] == "text/event-stream"
    data = [line[6:] for line in answer.text.splitlines() if line.startswith("data: ")]
    assert json.loads(data[0])["id"] == 5


def test_mcp_batches_and_notifications(service):
    batch = [rpc("tools/list", rid=1), {"jsonrpc": "2.0", "method": "notifications/initialized"},
             rpc("ping", rid=2)]
    assert [a["id"] for a in httpx.post(service.url + "/mcp", json=batch).json()] == [1, 2]
    only_notification = httpx.post(service.url + "/mcp",
                                   json={"jsonrpc": "2.0", "method": "notifications/initialized"})
    assert only_notification.status_code == 202


def test_received_requests_are_kept(service):
    service.reset()
    httpx.post(service.url + "/echo", content=b"hello", headers={"X-Probe": "1"})
    [received] = service.received
    assert received.body == b"hello" and received.header("x-probe") == "1"


def test_a_burst_of_connections_is_served_not_reset(service):
    """A gateway in front opens many connections at once (the soak: 50 callers)."""
    barrier = threading.Barrier(64)

    def call(_: int) -> int | str:
        barrier.wait(10)
        try:
            return httpx.post(service.url + "/echo", json={"a": 1}, timeout=10).status_code
        except httpx.HTTPError as exc:
            return repr(exc)

    with ThreadPoolExecutor(64) as pool:
        answers = list(pool.map(call, range(64)))
    assert answers == [200] * 64


def test_mcp_delete_ends_the_session_it_started(service):
    """Streamable HTTP: a client ends its session with DELETE (the official SDK does on exit)."""
    session = httpx.post(service.url + "/mcp", json=rpc("initialize")).headers["Mcp-Session-Id"]
    ended = httpx.delete(service.url + "/mcp", headers={"Mcp-Session-Id": session})
    assert ended.status_code == 204 and ended.content == b""
    assert "content-length" not in ended.headers
    again = httpx.delete(service.url + "/mcp", headers={"Mcp-Session-Id": session})
    assert again.status_code == 404  # ended: the session is unknown now
    assert httpx.delete(service.url + "/mcp",
                        headers={"Mcp-Session-Id": "never-started"}).status_code == 404
    assert httpx.delete(service.url + "/mcp").status_code == 400  # which session?


def test_mcp_get_is_405_for_a_server_without_its_own_event_stream(service):
    answer = httpx.get(service.url + "/mcp", headers={"Accept": "text/event-stream"})
    assert answer.status_code == 405
    assert set(answer.headers["Allow"].replace(" ", "").split(",")) == {"POST", "DELETE"}
