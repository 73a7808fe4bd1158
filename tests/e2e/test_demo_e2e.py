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

pytestmark = pytest.mark.e2e


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.fixture
def demo(tmp_path):
    proxy, web, service, issuer, admin = free_ports(5)
    env = {**os.environ, "TOOLGATE_DEMO_STATE": str(tmp_path), "PYTHONUNBUFFERED": "1",
           "TOOLGATE_DEMO_PROXY_PORT": str(proxy), "TOOLGATE_DEMO_WEB_PORT": str(web),
           "TOOLGATE_DEMO_SERVICE_PORT": str(service), "TOOLGATE_DEMO_ISSUER_PORT": str(issuer),
           "TOOLGATE_DEMO_ADMIN_PORT": str(admin)}
    proc = subprocess.Popen([sys.executable, "-m", "scripts.demo"], cwd=ROOT, env=env,
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
               "output": "".join(lines), "proc": proc}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


def test_make_run_prints_working_examples(demo):
    output = demo["output"]
    alice = re.search(r"export ALICE=(\S+)", output).group(1)
    bob = re.search(r"export BOB=(\S+)", output).group(1)
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
    token = {name: re.search(rf"export {name}=(\S+)", output).group(1)
             for name in ("ALICE", "BOB", "CAROL")}
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


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_make_run_stops_everything_on_ctrl_c(demo, stop):
    proc = demo["proc"]
    proc.send_signal(stop)
    assert proc.wait(30) is not None
    time.sleep(0.5)
    with pytest.raises(httpx.TransportError):
        httpx.get(demo["web"] + "/flows", timeout=2)
