"""The fleet's real parts (toolgate.scripts.fleet): the PostgreSQL server the gateways share
and the HAProxy balancer in front of them, tried against stand-in nodes on loopback."""

from __future__ import annotations

import collections
import socket
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg
import pytest

from toolgate.scripts.fleet import Backend, Balancer, Postgres
from toolgate.scripts.harness import HOST, StubHandler, StubServer, free_port, wait_until

MakeBalancer = Callable[[Sequence[tuple[str, str, int, int]]], Balancer]

# -- PostgreSQL ----------------------------------------------------------------------------------


def test_postgres_lets_toolgate_in_with_its_password_over_loopback_only(
    postgres_server: Postgres, control_url: str
):
    with psycopg.connect(control_url) as conn:
        user, address, listen, superuser = conn.execute(
            "SELECT current_user, inet_server_addr()::text, current_setting('listen_addresses'),"
            " rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
    assert (user, address, listen, superuser) == ("toolgate", "127.0.0.1/32", "127.0.0.1", False)

    wrong = control_url.replace(postgres_server.password, "not-the-password")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(wrong, connect_timeout=5)
    # The superuser has no way in over TCP: only over the Unix socket.
    with pytest.raises(psycopg.OperationalError, match="no pg_hba.conf entry"):
        psycopg.connect(host=HOST, port=postgres_server.port, user="postgres",
                        dbname="postgres", password="", connect_timeout=5)
    for address in ("127.0.0.2", "::1"):  # still this machine, but not the address it binds
        with pytest.raises(OSError):
            socket.create_connection((address, postgres_server.port), timeout=2).close()


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_postgres_stopped_mid_load_starts_again_on_the_same_data_and_port(
    postgres_server: Postgres, control_url: str, mode: str
):
    port, pid = postgres_server.port, postgres_server.pid
    conn = psycopg.connect(control_url, autocommit=True)
    try:
        conn.execute("CREATE TABLE calls (id int PRIMARY KEY)")
        conn.execute("INSERT INTO calls SELECT generate_series(1, 100)")
        postgres_server.stop(mode)  # with the client still connected
        assert postgres_server.pid is None
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(control_url, connect_timeout=2)
    finally:
        conn.close()
        postgres_server.start()  # the server is the whole run's: back up, pass or fail
    assert postgres_server.port == port and postgres_server.pid not in (None, pid)
    with psycopg.connect(control_url) as again:
        assert again.execute("SELECT count(*) FROM calls").fetchone() == (100,)


def test_each_database_from_create_database_is_separate(postgres_server: Postgres):
    first, second = (postgres_server.create_database(f"separate_{uuid.uuid4().hex[:8]}_{n}")
                     for n in (1, 2))
    with psycopg.connect(first) as conn:
        conn.execute("CREATE TABLE holds (id int)")
    with psycopg.connect(second) as conn:
        owner, = conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database "
                              "WHERE datname = current_database()").fetchone()
        assert owner == "toolgate"
        assert conn.execute("SELECT to_regclass('holds')").fetchone() == (None,)


# -- HAProxy -------------------------------------------------------------------------------------

class Node:
    """A stand-in gateway node: its proxy port records each call (its X-Call header) and answers
    with the node's name, or hangs up without answering; its admin port's /healthz answers 200
    while `healthy`, 503 otherwise. Without `listening`, nothing listens on the proxy port."""

    def __init__(self, name: str, *, hang_up: bool = False, listening: bool = True) -> None:
        self.name, self.hang_up, self.healthy = name, hang_up, True
        self.received: list[str] = []
        self.admin = StubServer(Health)
        self.proxy = StubServer(Call) if listening else None
        for server in (self.admin, self.proxy):
            if server:
                server.node = self  # type: ignore[attr-defined]
                server.start()
        port = self.proxy.server_port if self.proxy else free_port()
        self.backend = Backend(name, HOST, port, self.admin.server_port)

    def stop(self) -> None:
        with ThreadPoolExecutor() as pool:  # each waits for its server's next poll (0.5 s)
            list(pool.map(StubServer.stop, filter(None, (self.admin, self.proxy))))


class Health(StubHandler):
    def do_GET(self) -> None:  # noqa: N802
        node: Node = self.server.node  # type: ignore[attr-defined]
        # No body: HAProxy resets the connection once it has read the status line.
        self.send_response(200 if node.healthy and self.path == "/healthz" else 503)
        self.send_header("Content-Length", "0")
        self.end_headers()


class Call(StubHandler):
    def do_POST(self) -> None:  # noqa: N802
        node: Node = self.server.node  # type: ignore[attr-defined]
        self.rfile.read(int(self.headers["Content-Length"]))
        node.received.append(self.headers["X-Call"])
        if not node.hang_up:  # hanging up: the connection closes without an answer
            self.send_json({"node": node.name})


@pytest.fixture
def nodes() -> Iterator[Callable[..., Node]]:
    started: list[Node] = []

    def make(name: str, **kwargs: bool) -> Node:
        started.append(Node(name, **kwargs))
        return started[-1]

    yield make
    with ThreadPoolExecutor() as pool:
        list(pool.map(Node.stop, started))


def call(url: str) -> tuple[str, httpx.Response]:
    """One tool call through the balancer, with an id of its own."""
    call_id = uuid.uuid4().hex
    return call_id, httpx.post(url + "/v1/call", headers={"X-Call": call_id},
                               json={"tool": "deploy"}, timeout=10)


def test_haproxy_takes_turns_and_skips_a_node_that_fails_its_health_check(
    balancer: MakeBalancer, nodes: Callable[..., Node]
):
    a, b = nodes("a"), nodes("b")
    lb = balancer([a.backend, b.backend])
    assert lb.servers_up() == {"a": True, "b": True}
    served = [call(lb.url)[1].json()["node"] for _ in range(6)]
    assert served[0] != served[1] and served == served[:2] * 3
    assert (len(a.received), len(b.received)) == (3, 3)

    b.healthy = False
    assert wait_until(lambda: lb.servers_up() == {"a": True, "b": False}, timeout=5)
    assert {call(lb.url)[1].json()["node"] for _ in range(4)} == {"a"}
    assert len(b.received) == 3
    b.healthy = True
    assert wait_until(lambda: lb.servers_up() == {"a": True, "b": True}, timeout=5)


def test_haproxy_never_sends_a_call_twice_when_a_node_hangs_up_on_it(
    balancer: MakeBalancer, nodes: Callable[..., Node]
):
    dropping, good = nodes("dropping", hang_up=True), nodes("good")
    lb = balancer([dropping.backend, good.backend])
    answers = dict(call(lb.url) for _ in range(4))
    # The dropped calls reached a node: the caller gets a 502, never a retry elsewhere.
    assert collections.Counter(a.status_code for a in answers.values()) == {502: 2, 200: 2}
    assert sorted(dropping.received + good.received) == sorted(answers)
    assert all(answers[c].status_code == 200 for c in good.received)


def test_haproxy_sends_a_call_a_node_refused_to_connect_to_another(
    balancer: MakeBalancer, nodes: Callable[..., Node]
):
    refusing, good = nodes("refusing", listening=False), nodes("good")
    lb = balancer([refusing.backend, good.backend])
    assert lb.servers_up() == {"refusing": True, "good": True}  # its health check still passes
    answers = dict(call(lb.url) for _ in range(4))
    assert {c: a.json()["node"] for c, a in answers.items()} == dict.fromkeys(answers, "good")
    assert good.received == list(answers)
