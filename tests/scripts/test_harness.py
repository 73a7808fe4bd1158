"""The shared development harness (toolgate.scripts.harness): the stub server, the fast
backend, the store reader and the mitmdump command line the tests, benches and soak rely on.
(Its mitmdump launcher runs in every e2e test.)"""

from __future__ import annotations

import socket

import duckdb
import httpx
import pytest

from toolgate.scripts.harness import (
    GATEWAY_SCRIPT, FastBackend, StubHandler, StubServer, free_ports, mitmdump_args, query,
)
from toolgate.sessions.migrations import migrate


class Teapot(StubHandler):
    def do_GET(self):  # noqa: N802
        self.server.hits.append(self.path)
        self.send(418, b"short and stout", "text/plain", {"X-Kind": "teapot"})


def test_a_stub_server_serves_on_loopback_until_it_is_stopped():
    server = StubServer(Teapot)
    server.hits = []
    with server:
        assert server.url == f"http://127.0.0.1:{server.server_port}"
        answer = httpx.get(server.url + "/brew", timeout=10)
    assert (answer.status_code, answer.text) == (418, "short and stout")
    assert answer.headers["content-type"] == "text/plain"
    assert answer.headers["content-length"] == "15" and answer.headers["x-kind"] == "teapot"
    assert server.hits == ["/brew"]
    with pytest.raises(httpx.ConnectError):  # stopped and closed: nothing listens any more
        httpx.get(server.url + "/brew", timeout=10)


def test_a_stub_server_that_never_started_stops_at_once():
    server = StubServer(Teapot)
    server.stop()  # would block forever on shutdown() if it waited for a loop never started
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.server_port), timeout=2).close()


def test_the_fast_backend_answers_by_path_on_one_keep_alive_connection():
    backend = FastBackend({b"/big": b'{"big": true}'}, default=b'{"small": true}').start()
    try:
        with httpx.Client(base_url=backend.url, timeout=10) as http:
            answers = [http.get("/big"), http.post("/other", content=b"x" * 100),
                       http.get("/big")]
            assert [a.json() for a in answers] == [{"big": True}, {"small": True}, {"big": True}]
            assert all(a.status_code == 200 for a in answers)
    finally:
        backend.stop()
    with pytest.raises(httpx.ConnectError):  # stopped: nothing listens any more
        httpx.get(backend.url + "/big", timeout=10)


def test_query_reads_the_store_read_only(tmp_path):
    db = tmp_path / "store.duckdb"
    con = duckdb.connect(str(db))
    migrate(con)
    con.close()
    assert query(db, "SELECT count(*) FROM calls WHERE call_id = ?", ["x"]) == [(0,)]
    with pytest.raises(duckdb.Error, match="(?i)read-only"):
        query(db, "DELETE FROM calls")


def test_mitmdump_args_spell_reverse_mode_on_a_free_loopback_port():
    assert mitmdump_args("http://127.0.0.1:9", {"flow_detail": 0}) == [
        "--mode", "reverse:http://127.0.0.1:9", "--listen-host", "127.0.0.1", "-p", "0",
        "--set", "flow_detail=0"]
    assert mitmdump_args("http://b", {"a": 1}, script=GATEWAY_SCRIPT, extra=["-q"]) == [
        "-s", str(GATEWAY_SCRIPT), "--mode", "reverse:http://b", "--listen-host", "127.0.0.1",
        "-p", "0", "-q", "--set", "a=1"]


def test_free_ports_are_distinct_and_unused():
    ports = free_ports(5)
    assert len(set(ports)) == 5
    for port in ports:
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
