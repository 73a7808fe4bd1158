"""Fault injection through a real mitmdump: the OIDC issuer's JWKS endpoint down, the session
store's disk full, the approvals webhook down, and the gateway SIGKILLed with calls held for
approval. Each case checks the caller's answer, what reached the backend, and that the next
call works. (A store that cannot be opened at all is `test_recorder_e2e`'s unwritable-store
test; the backend's own failures are `test_upstream_e2e`'s.)"""

from __future__ import annotations

import resource
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import jwt
import pytest
from click.testing import CliRunner

from harness import AUDIENCE, wait_until
from toolgate.scripts.cli import cli
from toolgate.scripts.dev_issuer import DevIssuer, DevKeys
from toolgate.scripts.harness import StubHandler, StubServer, free_port, query
from toolgate.sessions.journal import journal_path

pytestmark = pytest.mark.e2e

DEPLOY = {"service": "api", "version": "7"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def error(answer: httpx.Response) -> dict:
    return answer.json()["error"]


def received_ids(backend, path: str | None = None) -> list[str | None]:
    return [r.header("X-Toolgate-Call-Id") for r in backend.received
            if path is None or r.path == path]


def verify(db: Path) -> None:
    result = CliRunner().invoke(cli, ["sessions", "verify", "--db", str(db)])
    assert result.exit_code == 0, result.output


@pytest.fixture
def pool():
    executor = ThreadPoolExecutor(max_workers=8)
    yield executor
    executor.shutdown(wait=False, cancel_futures=True)


def held_list(gateway, token: str) -> list[dict]:
    answer = httpx.get(gateway.admin_url + "/api/approvals", headers=bearer(token), timeout=10)
    answer.raise_for_status()
    return answer.json()["approvals"]


def wait_held(gateway, token: str, count: int) -> list[dict]:
    def enough() -> list[dict] | None:
        held = held_list(gateway, token)
        return held if len(held) >= count else None

    found = wait_until(enough, timeout=15, interval=0.05)
    assert found and len(found) == count, f"expected {count} held call(s), got {found}"
    return found


def deploy(gateway, token: str, body=DEPLOY, timeout: float = 30) -> httpx.Response:
    with httpx.Client(base_url=gateway.url, timeout=timeout) as http:
        return http.post("/deploy", json=body, headers=bearer(token))


# -- the issuer's JWKS endpoint down --------------------------------------------------------------

def stranger_token(issuer_url: str, kid: str | None = None) -> str:
    """Claims the issuer would mint, signed by a key the issuer never published; with `kid`,
    pretending to be one of its keys (a bad signature rather than an unknown key)."""
    stranger = DevKeys.generate(issuer_url, AUDIENCE)
    if kid is None:
        return stranger.mint("mallory", ["sre-leads"])
    key = stranger.key_for("RS256")
    claims = jwt.decode(stranger.mint("mallory", ["sre-leads"]),
                        options={"verify_signature": False})
    return jwt.encode(claims, jwt.PyJWK(key).key, algorithm="RS256", headers={"kid": kid})


def test_cached_keys_keep_working_while_the_issuer_is_down(start_gateway, backend, tmp_path):
    issuer = DevIssuer(keys_path=tmp_path / "issuer.json", audience=AUDIENCE).start()
    try:
        gateway = start_gateway(issuer_url=issuer.url)
        with gateway.client() as http:
            first = http.get("/customers/1", headers=bearer(issuer.keys.mint("alice", ["support"])))
            assert first.status_code == 200, first.text
            issuer.stop()  # the discovery document and the JWKS are gone

            # A token the gateway has never seen (not in its token cache) verifies with the
            # cached keys, the EC key too.
            fresh = issuer.keys.mint("bob", ["support"], alg="ES256")
            cached = http.get("/customers/2", headers=bearer(fresh))
            assert cached.status_code == 200, cached.text

            unknown = http.get("/customers/1", headers=bearer(stranger_token(issuer.url)))
            forged = http.get("/customers/1", headers=bearer(stranger_token(
                issuer.url, kid=issuer.keys.key_for("RS256")["kid"])))
            for answer in (unknown, forged):
                assert answer.status_code == 401, answer.text
                assert error(answer)["code"] == "identity"
                assert error(answer)["call_id"] == answer.headers["X-Toolgate-Call-Id"]

            after = http.get("/customers/3", headers=bearer(issuer.keys.mint("carol", ["sre"])))
            assert after.status_code == 200, after.text
        assert received_ids(backend) == [a.headers["X-Toolgate-Call-Id"]
                                         for a in (first, cached, after)]
    finally:
        issuer.stop()


def test_an_issuer_down_at_start_refuses_until_it_is_back(start_gateway, backend, tmp_path):
    keys = tmp_path / "issuer.json"
    down = DevIssuer(keys_path=keys, audience=AUDIENCE)  # saves its keys, binds a port...
    port, url = down.server.server_address[1], down.url
    down.server.server_close()  # ...and never serves: nothing answers on that port
    token = DevKeys.load(keys).mint("alice", ["support"])

    gateway = start_gateway(issuer_url=url)
    back: DevIssuer | None = None
    try:
        with gateway.client() as http:
            refused = [http.get("/customers/1", headers=bearer(token)) for _ in range(3)]
            for answer in refused:
                assert answer.status_code == 401, answer.text
                assert error(answer)["code"] == "identity"
                assert "signing keys are unavailable" in error(answer)["message"]
            assert backend.received == []

            back = DevIssuer(port=port, keys_path=keys, audience=AUDIENCE).start()
            assert back.url == url
            answers: list[httpx.Response] = []

            def accepted() -> bool:
                answers.append(http.get("/customers/1", headers=bearer(token)))
                return answers[-1].status_code == 200

            # Retries are rate-limited (one fetch per 10 s): give it a few of those.
            assert wait_until(accepted, timeout=40, interval=0.5), answers[-1].text
            for answer in answers[:-1]:  # until then: refused, never let through
                assert answer.status_code == 401 and error(answer)["code"] == "identity"
            assert http.get("/customers/2", headers=bearer(token)).status_code == 200
        assert len(backend.received) == 2
        assert received_ids(backend)[0] == answers[-1].headers["X-Toolgate-Call-Id"]
    finally:
        if back is not None:
            back.stop()


# -- the session store's disk full ----------------------------------------------------------------

def set_file_size_limit(pid: int, limit: int) -> None:
    """RLIMIT_FSIZE of a running process: its writes past `limit` bytes fail with EFBIG, as on
    a full disk (Python ignores SIGXFSZ, so the write fails rather than killing the process).
    Nothing else on the machine is affected."""
    _, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, hard))


@pytest.mark.parametrize("fills", ["mid-write", "at-once"])
def test_a_full_disk_refuses_calls_until_the_store_can_record_again(
    start_gateway, backend, issuer, tmp_path, fills
):
    db = tmp_path / "toolgate.duckdb"
    token = bearer(issuer.keys.mint("alice", ["support"]))
    gateway = start_gateway("flow_detail=1")
    with gateway.client() as http:
        before = http.get("/customers/1", headers=token)
        assert before.status_code == 200, before.text
        backend.reset()

        # mid-write: the journal has 100 bytes left, so an append is cut off part way (and
        # cut back); at-once: no file may grow at all.
        journal = journal_path(db)
        limit = journal.stat().st_size + 100 if fills == "mid-write" else 0
        set_file_size_limit(gateway.proc.pid, limit)
        try:
            full = [http.get("/customers/1", headers=token),
                    http.post("/echo", json={"n": 1}, headers=token),
                    http.post("/mcp", json={"jsonrpc": "2.0", "id": 5, "method": "tools/call",
                                            "params": {"name": "get_customer",
                                                       "arguments": {"id": 1}}},
                              headers=token)]
            for answer in full[:2]:
                assert answer.status_code == 503, answer.text
                assert error(answer)["code"] == "unrecorded"
                assert error(answer)["call_id"] == answer.headers["X-Toolgate-Call-Id"]
            rpc = full[2].json()  # a JSON-RPC caller gets a tool error with its own id
            assert rpc["id"] == 5 and rpc["error"]["data"]["code"] == "unrecorded"
            # A call that needs an approval is not held when its hold cannot be recorded.
            held = http.post("/deploy", json=DEPLOY, headers=bearer(
                issuer.keys.mint("bob", ["sre"])))
            assert held.status_code == 503 and error(held)["code"] == "unrecorded"
            assert backend.received == [], "a call the store could not record was forwarded"
            store = httpx.get(gateway.admin_url + "/healthz", timeout=10).json()["store"]
            assert store["recording"] is False and "File too large" in store["error"]
            assert str(journal) in store["error"], "the journal's append did not fail"
        finally:
            set_file_size_limit(gateway.proc.pid, resource.RLIM_INFINITY)

        later = wait_until(
            lambda: (a := http.get("/customers/2", headers=token)).status_code == 200 and a,
            timeout=20)
        assert later, "recording did not recover once the disk had room"
        assert http.post("/echo", json={"n": 2}, headers=token).status_code == 200
    # Killed, so that the next start replays the log the full disk cut off.
    gateway.proc.kill()
    gateway.proc.wait(10)
    again = start_gateway()
    with again.client() as http:
        assert http.get("/customers/3", headers=token).status_code == 200
    again.stop()

    recorded = dict(query(db, "SELECT call_id, status FROM calls"))
    assert recorded[before.headers["X-Toolgate-Call-Id"]] == 200
    assert recorded[later.headers["X-Toolgate-Call-Id"]] == 200
    # Whatever the full disk did not let it record was not forwarded either.
    assert set(received_ids(backend)) <= set(recorded)
    assert later.headers["X-Toolgate-Call-Id"] in received_ids(backend)
    assert len(received_ids(backend)) >= 3
    assert query(db, "SELECT count(*) FROM pending") == [(0,)]
    verify(db)  # the episode left the hash chain whole


# -- the approvals webhook down -------------------------------------------------------------------

class Failing(StubHandler):
    def do_POST(self):
        self.send(500, b"")


@pytest.fixture(params=["refused", "error", "hangs"])
def dead_webhook(request):
    """A webhook URL that refuses connections, answers 500, or accepts and never answers."""
    if request.param == "refused":
        yield f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    elif request.param == "error":
        with StubServer(Failing) as server:
            yield f"{server.url}/hook"
    else:
        with socket.socket() as s:  # listens, never accepts: connects, then times out
            s.bind(("127.0.0.1", 0))
            s.listen(8)
            yield f"http://127.0.0.1:{s.getsockname()[1]}/hook"


def metric(gateway, token: str, name: str) -> float | None:
    text = httpx.get(gateway.admin_url + "/metrics", headers=bearer(token), timeout=10).text
    for line in text.splitlines():
        if line.startswith((name + " ", name + "{")):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_a_dead_webhook_never_decides_and_the_calls_are_decided_normally(
    start_gateway, backend, issuer, pool, dead_webhook
):
    bob, carol = issuer.keys.mint("bob", ["sre"]), issuer.keys.mint("carol", ["sre-leads"])
    gateway = start_gateway(f"toolgate_webhook={dead_webhook}")
    first = pool.submit(deploy, gateway, bob, {"service": "one", "version": "1"})
    second = pool.submit(deploy, gateway, bob, {"service": "two", "version": "1"})
    held = {h["arguments"]["service"]: h for h in wait_held(gateway, carol, 2)}
    assert wait_until(
        lambda: metric(gateway, carol, "toolgate_approvals_webhook_failures_total") == 2,
        timeout=20), "the webhook's failures were not counted"
    for entry in held.values():  # and logged
        logged = f"failed for held call {entry['id']}"
        assert wait_until(lambda logged=logged: logged in gateway.output)
    # Still held: the failures approved nothing, denied nothing, forwarded nothing.
    assert sorted(h["id"] for h in held_list(gateway, carol)) == sorted(
        h["id"] for h in held.values())
    assert not first.done() and not second.done()
    assert received_ids(backend, "/deploy") == []

    for service, verb in (("one", "approve"), ("two", "deny")):
        decided = httpx.post(f"{gateway.admin_url}/api/approvals/{held[service]['id']}/{verb}",
                             json={"reason": "release 7"}, headers=bearer(carol), timeout=10)
        assert decided.status_code == 200, decided.text
    approved, denied = first.result(15), second.result(15)
    assert approved.status_code == 202 and approved.json()["service"] == "one"
    assert denied.status_code == 403 and error(denied)["code"] == "denied"
    assert received_ids(backend, "/deploy") == [approved.headers["X-Toolgate-Call-Id"]]
    with gateway.client() as http:
        assert http.get("/customers/1", headers=bearer(bob)).status_code == 200
    decisions = 'toolgate_approvals_decisions_total{channel="admin",decision="%s"}'
    assert metric(gateway, carol, decisions % "approved") == 1
    assert metric(gateway, carol, decisions % "denied") == 1


def test_a_hanging_webhook_does_not_hold_up_other_calls(start_gateway, backend, issuer):
    """Webhook posts that hang must not take the threads the gateway needs for other work,
    such as resolving the backend's host name for a new connection."""
    bob, carol = issuer.keys.mint("bob", ["sre"]), issuer.keys.mint("carol", ["sre-leads"])
    held_count = 40  # more than asyncio's default executor ever has threads (32)
    with socket.socket() as hook, ThreadPoolExecutor(held_count) as callers:
        hook.bind(("127.0.0.1", 0))
        hook.listen(held_count)  # accepts, never answers: each post waits for its timeout
        gateway = start_gateway(f"toolgate_webhook=http://127.0.0.1:{hook.getsockname()[1]}/",
                                upstream=backend.url.replace("127.0.0.1", "localhost"))
        try:
            for i in range(held_count):
                callers.submit(deploy, gateway, bob, {"service": f"s{i}", "version": "1"})
            wait_held(gateway, carol, held_count)
            with gateway.client() as http:  # a new connection to the backend: a DNS lookup
                answer = http.get("/customers/1", headers=bearer(bob))
            assert answer.status_code == 200, answer.text
            # Answered before any webhook post gave up: it did not wait behind them.
            assert metric(gateway, carol, "toolgate_approvals_webhook_failures_total") == 0
            assert received_ids(backend) == [answer.headers["X-Toolgate-Call-Id"]]
        finally:
            hook.close()  # the posts fail at once rather than hold up the gateway's exit
            gateway.stop()  # denies what is still held, so the callers return


# -- the gateway killed with calls held -----------------------------------------------------------

def test_calls_held_when_the_gateway_is_killed_are_recorded_and_never_forwarded(
    start_gateway, backend, issuer, pool, tmp_path
):
    db = tmp_path / "toolgate.duckdb"
    bob, carol = issuer.keys.mint("bob", ["sre"]), issuer.keys.mint("carol", ["sre-leads"])
    gateway = start_gateway()
    rpc = {"jsonrpc": "2.0", "id": "k-1", "method": "tools/call",
           "params": {"name": "deploy", "arguments": {"service": "mcp", "version": "1"}}}

    def mcp_deploy() -> httpx.Response:
        with httpx.Client(base_url=gateway.url, timeout=30) as http:
            return http.post("/mcp", json=rpc, headers=bearer(bob))

    callers = [pool.submit(deploy, gateway, bob, {"service": f"s{i}", "version": "1"})
               for i in range(3)] + [pool.submit(mcp_deploy)]
    held = wait_held(gateway, carol, 4)
    with gateway.client() as http:  # the gateway is not wedged by them
        allowed = http.get("/customers/1", headers=bearer(bob))
        assert allowed.status_code == 200

    gateway.proc.kill()  # SIGKILL: no chance to deny them on the way out
    gateway.proc.wait(10)
    for caller in callers:  # the callers lose their connection; none gets an answer
        with pytest.raises(httpx.TransportError):
            caller.result(15)

    again = start_gateway()  # the same store: it finds the calls that were held
    with again.client() as http:
        after = http.get("/customers/2", headers=bearer(bob))
        assert after.status_code == 200, after.text
    assert held_list(again, carol) == []  # nothing is held again after a restart
    again.stop()

    held_ids = {h["call_id"] for h in held}
    assert not held_ids & set(received_ids(backend)), "a held call reached the backend"
    assert received_ids(backend, "/deploy") == []
    assert [r.path for r in backend.received] == ["/customers/1", "/customers/2"]
    calls = {r[0]: r[1:] for r in query(
        db, "SELECT call_id, decision, forwarded, status, error, function FROM calls "
            "WHERE call_id IN (SELECT unnest(?))", [sorted(held_ids)])}
    assert set(calls) == held_ids, "a call held when the gateway was killed is not recorded"
    for decision, forwarded, status, err, function in calls.values():
        assert (decision, forwarded, status) == ("interrupted", False, None)
        assert "held" in err and function in ("deploy.start", "deploy")
    approvals = query(db, "SELECT call_id, decision, channel FROM approvals")
    assert sorted(approvals) == sorted((c, "expired", "gateway") for c in held_ids)
    assert query(db, "SELECT count(*) FROM calls") == [(6,)]  # each call once: 4 + 2 reads
    assert query(db, "SELECT count(*) FROM pending") == [(0,)]
    verify(db)
