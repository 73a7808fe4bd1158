"""Vaulted credentials through a real mitmdump and a real mitmweb in front of the demo backend:
the backend gets the credential and never the caller's token, the caller never gets the
credential back (even from `/echo`), and once calls complete neither secret is in mitmweb's
flows, an exported .mitm file, the gateway's log, or the store's files."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from harness import MITMWEB, wait_until

from toolgate.scripts.cli import cli
from toolgate.scripts.harness import free_port, open_store, store_files

pytestmark = pytest.mark.e2e

SECRET = "crm-secret-7f3a9c1e2b"
KEY = "crm-query-key-5d6e7f80"
ROTATED = "crm-secret-rotated-4242"
SESSION = "vaulted"

CREDS = """\
targets:
  - name: pass-through
    match: {path: /echo, method: PUT}
    pass_caller_token: true
  - name: crm
    match: {path: /echo}
    headers:
      Authorization: "Bearer ${env:CRM_TOKEN}"
    query:
      api_key: "${file:crm.key}"
"""


@pytest.fixture
def creds(tmp_path: Path) -> Path:
    (tmp_path / "crm.key").write_text(KEY + "\n")
    path = tmp_path / "creds.yaml"
    path.write_text(CREDS)
    return path


def calls(gateway, issuer) -> tuple[str, httpx.Response, httpx.Response]:
    """An echoed call with the vaulted credential, and one passed through; the caller's token."""
    token = issuer.keys.mint("alice", ["support"])
    # A copy in another header (as some SDKs send it) goes the same way as Authorization.
    headers = {"Authorization": f"Bearer {token}", "X-Caller-Token": token,
               "X-Toolgate-Session": SESSION}
    with gateway.client() as http:
        vaulted = http.post("/echo?q=1", json={"note": "hello"}, headers=headers)
        passed = http.put("/echo", json={"note": "mine"}, headers=headers)
    return token, vaulted, passed


def as_bytes(answer: httpx.Response) -> bytes:
    head = "".join(f"{k}: {v}\n" for k, v in answer.headers.multi_items()).encode()
    return head + answer.content


def secrets_in(data: bytes, *values: str) -> list[str]:
    return [value for value in values if value.encode() in data]


def test_the_backend_gets_the_credential_and_nobody_else_does(start_gateway, backend, issuer,
                                                              creds, tmp_path):
    gateway = start_gateway(f"toolgate_credentials={creds}", env={"CRM_TOKEN": SECRET})
    token, vaulted, passed = calls(gateway, issuer)

    # The backend: the credential, never the caller's token; a pass-through gets the token.
    echo, put = backend.received[-2], backend.received[-1]
    assert echo.header("Authorization") == f"Bearer {SECRET}"
    assert f"api_key={KEY}" in echo.path and "q=1" in echo.path
    assert not secrets_in(json.dumps(echo.headers).encode(), token)
    assert put.header("Authorization") == f"Bearer {token}"
    assert put.header("Proxy-Authorization") is None

    # The caller: the echo comes back with the credential masked, and never the token either.
    assert vaulted.status_code == 200 and passed.status_code == 200
    echoed = vaulted.json()
    assert echoed["headers"]["Authorization"] == "Bearer [REDACTED:injected_secret]"
    assert "[REDACTED:injected_secret]" in echoed["path"]
    assert not secrets_in(as_bytes(vaulted) + as_bytes(passed), SECRET, KEY, token)

    db = tmp_path / "toolgate.duckdb"
    running = [path.read_bytes() for path in store_files(db)]  # the WAL and journal, while they are
    assert not any(secrets_in(data, SECRET, KEY, token) for data in running)
    gateway.stop()
    with open_store(db) as con:
        found = con.execute("SELECT f.direction, f.path, f.label, f.level, f.action, f.fingerprint "
                            "FROM findings f JOIN calls c USING (call_id) WHERE c.method = 'POST' "
                            "AND f.label = 'injected_secret'").fetchall()
        headers = json.loads(con.execute("SELECT request_headers FROM calls WHERE method = 'POST'").fetchone()[0])
    assert {row[:5] for row in found} == {("response", "$", "injected_secret", "restricted", "mask")}
    assert ["Authorization", "[REDACTED]"] in headers

    # Nothing after the fact: the log, the store's files, an exported session.
    out = tmp_path / "session.mitm"
    result = CliRunner().invoke(cli, ["sessions", "export", SESSION, "-o", str(out), "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 0
    stored = [*store_files(db), out]
    for path in stored:
        data = path.read_bytes() if path.exists() else b""
        assert not secrets_in(data, SECRET, KEY, token), path
    assert not secrets_in(gateway.output.encode(), SECRET, KEY, token)
    assert "[REDACTED]" in gateway.output  # flow_detail=2 printed the headers, redacted

    # `find-value` knows the credential was echoed, from its fingerprint alone.
    result = CliRunner().invoke(cli, ["sessions", "find-value", SECRET, "--db", str(db), "--json"])
    assert result.exit_code == 0 and "injected_secret" in result.output, result.output


def test_mitmweb_never_shows_a_secret_once_calls_complete(start_gateway, backend, issuer, creds):
    port = free_port()
    gateway = start_gateway(f"toolgate_credentials={creds}", env={"CRM_TOKEN": SECRET},
                            program=MITMWEB, extra_args=("--web-host", "127.0.0.1", "--web-port",
                                                         str(port), "--no-web-open-browser"))
    token, vaulted, passed = calls(gateway, issuer)
    assert vaulted.status_code == passed.status_code == 200
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as web:
        web.get("/")
        flows = wait_until(lambda: [f for f in web.get("/flows").json() if f.get("response")], timeout=10)
        assert len(flows) == 2
        seen = [web.get("/flows").content, web.get("/flows/dump").content]
        for flow in flows:
            for part in ("request", "response"):
                seen.append(web.get(f"/flows/{flow['id']}/{part}/content.data").content)
        shown = {h[0]: h[1] for f in flows for h in f["request"]["headers"]}
    assert shown["Authorization"] == "[REDACTED]"
    for data in seen:
        assert not secrets_in(data, SECRET, KEY, token)


def test_a_missing_variable_stops_the_gateway_naming_the_target(start_gateway, creds):
    gateway = start_gateway(f"toolgate_credentials={creds}", wait=False)  # CRM_TOKEN unset
    assert gateway.proc.wait(30) != 0
    assert "target 'crm': header Authorization: ${env:CRM_TOKEN}" in gateway.output
    assert "CRM_TOKEN is not set" in gateway.output


def test_a_failed_reload_keeps_the_previous_credentials(start_gateway, backend, issuer, creds):
    gateway = start_gateway(f"toolgate_credentials={creds}", env={"CRM_TOKEN": SECRET,
                                                                  "CRM_ROTATED": ROTATED})
    headers = {"Authorization": f"Bearer {issuer.keys.mint('alice', ['support'])}"}

    def sent() -> str | None:
        with gateway.client() as http:
            assert http.get("/echo", headers=headers).status_code == 200
        return backend.received[-1].header("Authorization")

    assert sent() == f"Bearer {SECRET}"
    creds.write_text(CREDS.replace("CRM_TOKEN", "TOOLGATE_TEST_NO_SUCH_VAR"))
    assert wait_until(lambda: "previous credentials stay in force" in gateway.output, timeout=10)
    assert "target 'crm': header Authorization: ${env:TOOLGATE_TEST_NO_SUCH_VAR}" in gateway.output
    assert sent() == f"Bearer {SECRET}"
    creds.write_text(CREDS.replace("CRM_TOKEN", "CRM_ROTATED"))  # a good edit takes effect
    assert wait_until(lambda: sent() == f"Bearer {ROTATED}", timeout=10)
    assert not secrets_in(gateway.output.encode(), SECRET, ROTATED, KEY)
