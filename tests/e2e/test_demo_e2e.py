"""`make run`'s entry point, as a new user meets it: start it, paste its curl commands."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from harness import ROOT
from toolgate.scripts.harness import free_ports

pytestmark = pytest.mark.e2e


@pytest.fixture
def demo(tmp_path):
    proxy, web, service, issuer, admin = free_ports(5)
    env = {**os.environ, "TOOLGATE_DEMO_STATE": str(tmp_path), "PYTHONUNBUFFERED": "1",
           "TOOLGATE_DEMO_PROXY_PORT": str(proxy), "TOOLGATE_DEMO_WEB_PORT": str(web),
           "TOOLGATE_DEMO_SERVICE_PORT": str(service), "TOOLGATE_DEMO_ISSUER_PORT": str(issuer),
           "TOOLGATE_DEMO_ADMIN_PORT": str(admin)}
    proc = subprocess.Popen([sys.executable, "-m", "toolgate.scripts.demo"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    lines: list[str] = []
    ready = threading.Event()

    def pump():
        for line in proc.stdout:
            lines.append(line)
            if "Ctrl-C stops the demo" in line:
                ready.set()
        ready.set()

    threading.Thread(target=pump, daemon=True).start()
    try:
        assert ready.wait(60) and proc.poll() is None, "".join(lines)
        yield {"proxy": f"http://127.0.0.1:{proxy}", "web": f"http://127.0.0.1:{web}",
               "output": "".join(lines), "proc": proc, "state": tmp_path,
               "ports": [proxy, web, service, issuer, admin]}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


def sourced_tokens(demo) -> dict[str, str]:
    """The dev tokens as the user gets them: `source` the file the banner names, in a shell."""
    line = re.search(r"^\s*source (\S+)$", demo["output"], re.MULTILINE)
    assert line, demo["output"]
    shell = subprocess.run(["bash", "-c", f'{line.group(0).strip()} && '
                            'printf "%s\\n" "$ALICE" "$BOB" "$CAROL"'],
                           cwd=ROOT, capture_output=True, text=True)
    assert shell.returncode == 0, shell.stderr
    return dict(zip(("ALICE", "BOB", "CAROL"), shell.stdout.split()))


def test_make_run_writes_the_tokens_to_a_file_to_source(demo):
    tokens_file = demo["state"] / "tokens.env"
    assert tokens_file.stat().st_mode & 0o777 == 0o600  # bearer tokens: the user's eyes only
    assert f"source {tokens_file}" in demo["output"]
    token = sourced_tokens(demo)
    assert set(token) == {"ALICE", "BOB", "CAROL"} and all(t.count(".") == 2
                                                           for t in token.values())
    # Nothing 800 characters long to copy from the terminal: the banner names the file.
    for value in token.values():
        assert value not in demo["output"]
    assert "export ALICE=" not in demo["output"]


def test_make_run_prints_working_examples(demo):
    output = demo["output"]
    token = sourced_tokens(demo)
    alice, bob = token["ALICE"], token["BOB"]
    assert f"curl -s {demo['proxy']}/customers/1" in output
    with httpx.Client(base_url=demo["proxy"], timeout=10) as http:
        allowed = http.get("/customers/1", headers={"Authorization": f"Bearer {alice}"})
        assert allowed.status_code == 200 and allowed.json()["id"] == 1
        refused = http.get("/customers/1")
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "identity"
        mcp = http.post("/mcp", headers={"Authorization": f"Bearer {bob}"},
                        json={"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                              "params": {"name": "get_customer", "arguments": {"id": 1}}})
        assert mcp.status_code == 200 and mcp.json()["id"] == 1
    flows = httpx.get(demo["web"] + "/flows", timeout=10).json()
    assert len(flows) >= 3
    # Each flow shows its decision at a glance: a marker, and a comment naming rules and labels.
    read = next(f for f in flows if f["request"]["path"] == "/customers/1"
                and f["response"]["status_code"] == 200)
    assert read["marked"] == "🙈"  # mitmproxy shows the :see_no_evil: marker as its emoji
    assert "crm.get_customer" in read["comment"] and "ssn" in read["comment"]
    # mitmweb shows the calls, never the callers' tokens.
    shown = httpx.get(demo["web"] + "/flows/dump", timeout=10).content
    for token in (alice, bob):
        assert token.split(".")[2].encode() not in shown


def test_make_run_story_masked_blocked_held_and_approved(demo):
    output = demo["output"]
    token = sourced_tokens(demo)
    toolgate = [str(Path(sys.executable).parent / "toolgate")]
    admin = re.search(r"admin API\s+(\S+)", output).group(1)
    with httpx.Client(base_url=demo["proxy"], timeout=20) as http:
        alice = {"Authorization": f"Bearer {token['ALICE']}"}
        masked = http.get("/customers/1", headers=alice).json()
        assert masked["ssn"] == "***-**-1234" and masked["email"].startswith("tok_email_")
        blocked = http.get("/customers/export?limit=500", headers=alice)
        assert blocked.status_code == 403 and blocked.json()["error"]["code"] == "blocked"

        held: dict = {}
        deploy = threading.Thread(target=lambda: held.update(answer=http.post(
            "/deploy", json={"service": "api", "version": "2.1"},
            headers={"Authorization": f"Bearer {token['BOB']}"})))
        deploy.start()

        def listed():
            result = subprocess.run([*toolgate, "approvals", "list", "--json", "--admin", admin,
                                     "--token", token["CAROL"]], capture_output=True, text=True)
            return json.loads(result.stdout) if result.returncode == 0 else None

        deadline = time.monotonic() + 10
        while not (waiting := listed()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert waiting and waiting[0]["subject"] == "bob"
        approve = subprocess.run([*toolgate, "approvals", "approve", waiting[0]["id"], "--reason",
                                  "release 2.1", "--admin", admin, "--token", token["CAROL"]],
                                 capture_output=True, text=True)
        assert approve.returncode == 0, approve.stdout + approve.stderr
        deploy.join(15)
        assert held["answer"].status_code == 202 and held["answer"].json()["status"] == "started"
    # The banner's own command for the recorded calls, pasted after `source`: no --db needed
    # while the demo holds its store.
    [listing] = [line.strip() for line in output.splitlines()
                 if line.strip().startswith(".venv/bin/toolgate sessions list --token")]
    if not (ROOT / ".venv" / "bin" / "toolgate").exists():  # tests run from another venv
        listing = listing.replace(".venv/bin/toolgate", toolgate[0], 1)
    pasted = subprocess.run(["bash", "-c", f"source {demo['state'] / 'tokens.env'} && "
                             f"{listing} --json"], cwd=ROOT, capture_output=True, text=True)
    assert pasted.returncode == 0, pasted.stdout + pasted.stderr
    functions = {c["function"] for c in json.loads(pasted.stdout)["calls"]}
    assert {"crm.get_customer", "crm.export", "deploy.start"} <= functions


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_make_run_stops_everything_on_ctrl_c(demo, stop):
    proc = demo["proc"]
    proc.send_signal(stop)
    assert proc.wait(30) == 0  # a clean stop, not a crash or a kill
    # Nothing it started is left listening: proxy, mitmweb, demo service, issuer, admin API.
    for port in demo["ports"]:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
