"""The caller's token never leaves the gateway, whatever header it was sent in (spec "Vaulted
credentials"), nor is it or a labelled value in the URL, the session's name or an object's key
stored raw:
through a real mitmdump in front of a backend that keeps the exact bytes it received, then
searching those bytes, the gateway's log and the store's file."""

from __future__ import annotations

import json
import re
import socket
import socketserver
import threading
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from toolgate.scripts.cli import cli
from toolgate.scripts.harness import open_store, store_bytes

pytestmark = pytest.mark.e2e

INJECTED = "vaulted-backend-key-9c2e71"
UPSTREAM_KEY = "sk-upstream-not-a-jwt-4711"
CREDS = """\
targets:
  - name: pass
    match: {path: /pass/**}
    pass_caller_token: true
  - name: vaulted
    match: {path: /vaulted/**}
    headers:
      X-Backend-Key: "${env:BACKEND_KEY}"
"""


class RawBackend(socketserver.ThreadingTCPServer):
    """Answers every request 200 with `answer` (JSON, `{}` unless set) and keeps each request's
    bytes as they arrived."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _RawHandler)
        self.answer = b"{}"
        self.received: list[bytes] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def all_bytes(self) -> bytes:
        with self.lock:
            return b"".join(self.received)


class _RawHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        buffer = b""
        while True:
            while b"\r\n\r\n" not in buffer:
                chunk = sock.recv(65536)
                if not chunk:
                    return
                buffer += chunk
            head, _, rest = buffer.partition(b"\r\n\r\n")
            length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            while len(rest) < length:
                chunk = sock.recv(65536)
                if not chunk:
                    return
                rest += chunk
            with self.server.lock:  # type: ignore[attr-defined]
                self.server.received.append(head + b"\r\n\r\n" + rest[:length])  # type: ignore[attr-defined]
            buffer = rest[length:]
            answer = self.server.answer  # type: ignore[attr-defined]
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(answer), answer))


@pytest.fixture
def raw_backend():
    server = RawBackend()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def stored(db: Path) -> tuple[bytes, list[str], str]:
    """The store's files as bytes, the subjects of its calls, and every row of every table as
    text (DuckDB compresses strings: the bytes alone could hide a value)."""
    data = store_bytes(db)
    with open_store(db) as con:
        subjects = [row[0] for row in con.execute("SELECT subject FROM calls ORDER BY started_at").fetchall()]
        tables = [row[0] for row in con.execute("SELECT table_name FROM information_schema.tables").fetchall()]
        rows = [repr(con.execute(f'SELECT * FROM "{table}"').fetchall()) for table in tables]
    return data, subjects, "\n".join(rows)


def header(request: bytes, name: str) -> str | None:
    for line in request.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name.lower().encode():
            return value.strip().decode("latin-1")
    return None


def sends(token: str) -> dict[str, dict[str, str]]:
    """The ways a caller may send its token, by test id."""
    return {
        "x-api-key": {"x-api-key": token},  # the Anthropic SDK
        "api-key": {"api-key": token},  # the Azure OpenAI SDK
        "x-api-key-bearer": {"x-api-key": f"Bearer {token}"},
        "authorization-and-x-api-key": {"Authorization": f"Bearer {token}", "x-api-key": token},
        "authorization-and-api-key": {"Authorization": f"Bearer {token}", "api-key": token},
        "custom-header": {"Authorization": f"Bearer {token}", "X-Caller-Token": token},
        "custom-bearer": {"Authorization": f"Bearer {token}", "X-Forward-Auth": f"Bearer {token}"},
        "in-a-list": {"Authorization": f"Bearer {token}", "X-Tokens": f"Bearer x, {token}"},
        "cookie": {"Authorization": f"Bearer {token}", "Cookie": f"sid=keep-me; tok={token}"},
    }


@pytest.mark.parametrize("path", ["/plain", "/vaulted/call"], ids=["no-target", "vaulted"])
def test_the_token_reaches_no_backend_log_or_store_in_any_header(start_gateway, issuer,
                                                                 raw_backend, tmp_path, path):
    creds = tmp_path / "creds.yaml"
    creds.write_text(CREDS)
    gateway = start_gateway(f"toolgate_credentials={creds}", upstream=raw_backend.url,
                            env={"BACKEND_KEY": INJECTED})
    token = issuer.keys.mint("alice", ["support"])
    ways = sends(token)
    with gateway.client() as http:
        for name, headers in ways.items():
            answer = http.post(path, json={"way": name}, headers=headers)
            assert answer.status_code == 200, (name, answer.text)
    assert len(raw_backend.received) == len(ways)
    for request in raw_backend.received:
        assert token.encode() not in request, request[:600]
        if path.startswith("/vaulted"):
            assert header(request, "X-Backend-Key") == INJECTED
    cookie = next(r for r in raw_backend.received if b'"cookie"' in r)
    assert header(cookie, "Cookie") == "sid=keep-me"  # the other cookies stay

    gateway.stop()
    data, subjects, rows = stored(tmp_path / "toolgate.duckdb")
    assert subjects == ["alice"] * len(ways)  # every call was verified as alice, recorded ...
    assert token.encode() not in data and token not in rows  # ... and the token is nowhere
    assert INJECTED.encode() not in data and INJECTED not in rows
    assert "keep-me" not in rows  # a Cookie is stored redacted, as before
    assert token not in gateway.output and INJECTED not in gateway.output


def test_pass_caller_token_forwards_it_in_authorization_only(start_gateway, issuer, raw_backend,
                                                             tmp_path):
    creds = tmp_path / "creds.yaml"
    creds.write_text(CREDS)
    gateway = start_gateway(f"toolgate_credentials={creds}", upstream=raw_backend.url,
                            env={"BACKEND_KEY": INJECTED})
    token = issuer.keys.mint("alice", ["support"])
    with gateway.client() as http:
        assert http.get("/pass/a", headers={"x-api-key": token}).status_code == 200
        assert http.get("/pass/b", headers={"Authorization": f"Bearer {token}",
                                            "X-Caller-Token": token}).status_code == 200
    for request in raw_backend.received:
        assert header(request, "Authorization") == f"Bearer {token}"
        assert request.count(token.encode()) == 1, request[:600]
        assert header(request, "x-api-key") is None and header(request, "X-Caller-Token") is None
    gateway.stop()
    data, subjects, rows = stored(tmp_path / "toolgate.duckdb")
    assert subjects == ["alice", "alice"]
    assert token.encode() not in data and token not in rows


def test_an_upstream_api_key_beside_the_token_is_forwarded(start_gateway, issuer, raw_backend):
    """x-api-key that is not the caller's token (not a JWT) is the caller's business."""
    gateway = start_gateway(upstream=raw_backend.url)
    token = issuer.keys.mint("alice", ["support"])
    with gateway.client() as http:
        answer = http.get("/plain", headers={"Authorization": f"Bearer {token}",
                                             "x-api-key": UPSTREAM_KEY})
        assert answer.status_code == 200
        # Not a JWT, and no Authorization: no token was sent at all.
        refused = http.get("/plain", headers={"x-api-key": UPSTREAM_KEY})
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "identity"
    [request] = raw_backend.received
    assert header(request, "x-api-key") == UPSTREAM_KEY
    assert token.encode() not in request


@pytest.mark.parametrize("way", ["x-api-key", "api-key", "custom-header"])
def test_a_refused_token_is_not_stored_either(start_gateway, issuer, raw_backend, tmp_path, way):
    """An expired token in an API-key header is refused 401 and its copies are not recorded."""
    gateway = start_gateway(upstream=raw_backend.url)
    token = issuer.keys.mint("alice", ["support"], ttl=-600)
    with gateway.client() as http:
        answer = http.get("/plain", headers=sends(token)[way])
    assert answer.status_code == 401 and answer.json()["error"]["code"] == "identity"
    assert raw_backend.received == []
    gateway.stop()
    data, subjects, rows = stored(tmp_path / "toolgate.duckdb")
    assert subjects == [None] and "identity" in rows  # the refusal was recorded ...
    assert token.encode() not in data and token not in rows  # ... without the token


def test_a_token_in_the_query_reaches_no_backend_log_or_store(start_gateway, issuer, raw_backend,
                                                              tmp_path):
    """`?access_token=` (RFC 6750's query form) is not how the gateway takes a token: alone it
    gets 401; beside a valid header, the bundled secrets pack blocks the JWT in the request.
    Either way nothing is forwarded, and the URL is stored and logged with the token redacted."""
    gateway = start_gateway(upstream=raw_backend.url)
    token = issuer.keys.mint("alice", ["support"])
    with gateway.client() as http:
        alone = http.get(f"/plain?access_token={token}&page=2")
        beside = http.get(f"/plain?access_token={token}&page=2",
                          headers={"Authorization": f"Bearer {token}"})
        after = http.get("/plain?page=3", headers={"Authorization": f"Bearer {token}"})
    assert alone.status_code == 401 and alone.json()["error"]["code"] == "identity"
    assert beside.status_code == 403 and beside.json()["error"]["code"] == "blocked"
    assert after.status_code == 200
    [request] = raw_backend.received  # only the call without a token in its URL
    assert request.startswith(b"GET /plain?page=3 ")
    gateway.stop()
    data, subjects, rows = stored(tmp_path / "toolgate.duckdb")
    assert subjects == [None, "alice", "alice"]
    assert token.encode() not in data and token not in rows
    assert rows.count("access_token=%5BREDACTED%3Ajwt%5D&page=2") == 2  # both refused calls' URLs
    assert token not in gateway.output and "access_token=%5BREDACTED%3Ajwt%5D" in gateway.output


def test_values_in_a_path_reach_the_store_redacted(start_gateway, issuer, raw_backend, tmp_path):
    """A path is data like a body (bundled packs): personal values in it are let through to the
    backend and stored redacted, in the URL and in the name of a call outside the catalog; a
    token in it is blocked, never forwarded, and neither stored nor logged."""
    gateway = start_gateway(upstream=raw_backend.url)
    token = issuer.keys.mint("alice", ["support"])
    ssn, email = "536-22-1234", "jane.doe@example.com"
    bearer = {"Authorization": f"Bearer {token}"}
    with gateway.client() as http:
        allowed = http.get(f"/lookup/{email}/{ssn}", headers=bearer)
        blocked = http.get(f"/sessions/{token}", headers=bearer)
        unread = http.get(f"/lookup/{ssn}")
    assert allowed.status_code == 200
    assert blocked.status_code == 403 and blocked.json()["error"]["field"] == "path[1]"
    assert unread.status_code == 401
    [request] = raw_backend.received  # the personal values go where the policy lets them
    assert request.startswith(f"GET /lookup/{email}/{ssn} ".encode())
    gateway.stop()
    data, _, rows = stored(tmp_path / "toolgate.duckdb")
    for value in (ssn, email, token):
        assert value.encode() not in data and value not in rows, value
    assert rows.count("GET /lookup/%5BREDACTED%3Aemail%5D/%5BREDACTED%3Assn%5D") == 1  # function
    assert "/sessions/%5BREDACTED%3Ajwt%5D" in rows and "/lookup/%5BREDACTED%3Assn%5D" in rows
    assert token not in gateway.output


def test_values_in_object_keys_reach_the_store_renamed(start_gateway, issuer, raw_backend, tmp_path):
    """Maps keyed by a personal value (bundled packs): a request's key goes to the backend as
    sent and is stored as its hash token; an answer's key reaches the caller as that token (the
    packs hash emails in answers); a secret as a key is refused, never forwarded, not stored."""
    gateway = start_gateway(upstream=raw_backend.url)
    token = issuer.keys.mint("alice", ["support"])
    email, ssn, aws = "jane.doe@example.com", "536-22-1234", "AKIAIOSFODNN7EXAMPLE"
    raw_backend.answer = json.dumps({"by_email": {email: {"ssn": ssn, "plan": "pro"}}}).encode()
    bearer = {"Authorization": f"Bearer {token}"}
    with gateway.client() as http:
        allowed = http.post("/customers/notes", headers=bearer, json={"by_email": {email: "call back"}})
        blocked = http.post("/customers/notes", headers=bearer, json={"filters": {aws: "x"}})
    assert allowed.status_code == 200
    [(renamed, customer)] = allowed.json()["by_email"].items()
    assert re.fullmatch(r"tok_email_[0-9a-f]{12}", renamed) and customer == {"ssn": "***-**-1234", "plan": "pro"}
    assert blocked.status_code == 403
    assert re.fullmatch(r"\$\.filters\.tok_aws_access_key_[0-9a-f]{12}<key>", blocked.json()["error"]["field"])
    [request] = raw_backend.received  # the allowed request, as the caller sent it
    assert json.loads(request.split(b"\r\n\r\n", 1)[1]) == {"by_email": {email: "call back"}}
    gateway.stop()
    data, _, rows = stored(tmp_path / "toolgate.duckdb")
    for value in (email, ssn, aws):
        assert value.encode() not in data and value not in rows, value
    assert rows.count(renamed) >= 3  # the request's key, the answer's key, their findings' paths
    assert aws not in gateway.output and email not in gateway.output


def test_a_tool_named_after_a_labelled_value_is_stored_and_counted_redacted(start_gateway, issuer, tmp_path):
    """An MCP tool's name is text the caller (its model) chose: `lookup customer jane@...` goes
    to the backend as sent (the bundled packs let emails through in requests), and neither
    the store nor /metrics gets the email."""
    gateway = start_gateway()
    token = issuer.keys.mint("alice", ["support"])
    email = "jane.doe@example.com"
    bearer = {"Authorization": f"Bearer {token}"}
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": f"lookup customer {email}", "arguments": {}}}
    with gateway.client() as http:
        answer = http.post("/mcp", headers=bearer, json=call)
    assert answer.status_code == 200 and "unknown tool" in answer.text  # the backend got the call
    metrics = httpx.get(gateway.admin_url + "/metrics", headers=bearer, timeout=10).text
    assert "toolgate_calls_total" in metrics and email not in metrics
    gateway.stop()
    data, _, rows = stored(tmp_path / "toolgate.duckdb")
    assert email.encode() not in data and email not in rows
    with open_store(tmp_path / "toolgate.duckdb") as con:
        [(function,)] = con.execute("SELECT function FROM calls").fetchall()
    assert function == "lookup customer [REDACTED:email]"


def test_a_session_named_after_a_labelled_value_is_stored_under_its_fingerprint(
        start_gateway, issuer, raw_backend, tmp_path):
    """`X-Toolgate-Session: jane.doe@example.com` (a session per end user): its calls still make
    one session, stored as `s-<keyed fingerprint>`, in `session_id` and in the stored header;
    a name without labelled values is kept as it is."""
    gateway = start_gateway(upstream=raw_backend.url)
    token = issuer.keys.mint("alice", ["support"])
    email = "jane.doe@example.com"
    with gateway.client() as http:
        for session in (email, email, "nightly-run"):
            answer = http.get("/plain", headers={"Authorization": f"Bearer {token}",
                                                  "X-Toolgate-Session": session})
            assert answer.status_code == 200
        assert http.get("/plain", headers={"X-Toolgate-Session": email}).status_code == 401
    gateway.stop()
    data, _, rows = stored(tmp_path / "toolgate.duckdb")
    assert email.encode() not in data and email not in rows
    with open_store(tmp_path / "toolgate.duckdb") as con:
        sessions = [session for session, in con.execute(
            "SELECT session_id FROM calls ORDER BY seq").fetchall()]
    hashed = sessions[0]
    assert re.fullmatch(r"s-[0-9a-f]{16}", hashed)
    assert sessions == [hashed, hashed, "nightly-run", hashed]
    # the store's reader finds the session from the value (the gateway's key beside the store)
    found = CliRunner().invoke(cli, ["sessions", "find-value", email, "--json",
                                     "--db", str(tmp_path / "toolgate.duckdb")])
    assert found.exit_code == 0, found.output
    assert json.loads(found.output)["sessions"] == [{"session_id": hashed, "calls": 3}]
