"""Fail closed, through a real mitmdump: a toolgate hook that raises, a reload that breaks the
gateway's code, a chain that cannot be imported: the call is answered, never forwarded."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from harness import GATEWAY_SCRIPT, wait_until

pytestmark = pytest.mark.e2e

FAULTY = Path(__file__).with_name("faulty_gateway.py")


def bearer(issuer, sub="alice"):
    return {"Authorization": f"Bearer {issuer.keys.mint(sub, ['support'])}"}


def test_exception_in_a_request_hook_answers_500_and_forwards_nothing(
    start_gateway, backend, issuer
):
    gateway = start_gateway(script=FAULTY, env={"TOOLGATE_TEST_FAULT": "verify"})
    with gateway.client() as http:
        answer = http.get("/customers/1", headers=bearer(issuer))
    assert answer.status_code == 500
    error = answer.json()["error"]
    assert error["code"] == "internal"
    assert error["call_id"] == answer.headers["X-Toolgate-Call-Id"]
    assert "injected fault" not in answer.text  # internals stay in the log
    assert backend.received == []
    assert "injected fault" in wait_until(lambda: "injected fault" in gateway.output and gateway.output)


def test_a_panic_in_the_native_core_answers_500_and_forwards_nothing(start_gateway, backend, issuer):
    """PyO3 raises a Rust panic as PanicException, a BaseException: the hooks catch it too."""
    gateway = start_gateway(script=FAULTY, env={"TOOLGATE_TEST_FAULT": "panic"})
    with gateway.client() as http:
        answer = http.post("/deploy", json={"service": "api"}, headers=bearer(issuer))
        again = http.post("/deploy", json={"service": "api"}, headers=bearer(issuer))
    assert answer.status_code == again.status_code == 500
    assert answer.json()["error"]["code"] == "internal"
    assert "panic" not in answer.text
    assert backend.received == []
    assert "a panic in the core" in wait_until(lambda: "a panic in the core" in gateway.output and gateway.output)


def test_exception_in_a_response_hook_withholds_the_backend_answer(
    start_gateway, backend, issuer
):
    gateway = start_gateway(script=FAULTY, env={"TOOLGATE_TEST_FAULT": "response"})
    with gateway.client() as http:
        answer = http.get("/customers/1", headers=bearer(issuer))
    assert answer.status_code == 500
    assert answer.json()["error"]["code"] == "internal"
    assert "536-22-1234" not in answer.text  # the unchecked answer never reaches the caller
    assert len(backend.received) == 1


def test_a_jsonrpc_call_gets_a_jsonrpc_error_with_its_id(start_gateway, backend, issuer):
    gateway = start_gateway(script=FAULTY, env={"TOOLGATE_TEST_FAULT": "verify"})
    body = {"jsonrpc": "2.0", "id": "call-42", "method": "tools/call",
            "params": {"name": "get_customer", "arguments": {"id": 1}}}
    with gateway.client() as http:
        answer = http.post("/mcp", json=body, headers=bearer(issuer))
    assert backend.received == []
    assert answer.status_code == 500
    rpc = answer.json()
    assert rpc["jsonrpc"] == "2.0" and rpc["id"] == "call-42"
    assert rpc["error"]["code"] == -32001
    assert rpc["error"]["data"]["code"] == "internal"
    assert rpc["error"]["data"]["call_id"] == answer.headers["X-Toolgate-Call-Id"]


def _poll_status(gateway, issuer, want: int) -> int:
    def status():
        with gateway.client() as http:
            code = http.get("/healthz", headers=bearer(issuer)).status_code
        return code if code == want else None

    return wait_until(status, timeout=15, interval=0.3)


def test_a_broken_reload_shuts_the_gate_until_the_code_loads(
    start_gateway, backend, issuer, tmp_path
):
    script = tmp_path / "gateway.py"
    shutil.copy(GATEWAY_SCRIPT, script)
    gateway = start_gateway(script=script)
    assert _poll_status(gateway, issuer, 200) == 200

    good = script.read_text()
    script.write_text(good + "\nthis is not python(\n")
    os.utime(script, (time.time() + 5, time.time() + 5))  # mitmproxy polls the mtime
    assert _poll_status(gateway, issuer, 503) == 503
    backend.reset()
    with gateway.client() as http:
        answer = http.get("/customers/1", headers=bearer(issuer))
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "unavailable"
    assert backend.received == []

    script.write_text(good)
    os.utime(script, (time.time() + 10, time.time() + 10))
    assert _poll_status(gateway, issuer, 200) == 200


def test_a_chain_that_cannot_be_imported_on_reload_answers_503(
    start_gateway, backend, issuer, tmp_path
):
    script = tmp_path / "gateway.py"
    shutil.copy(GATEWAY_SCRIPT, script)
    gateway = start_gateway(script=script)
    assert _poll_status(gateway, issuer, 200) == 200

    broken = GATEWAY_SCRIPT.read_text().replace("from toolgate.addons.assembly import",
                                                "from toolgate.addons.gone import")
    assert broken != GATEWAY_SCRIPT.read_text()
    script.write_text(broken)
    os.utime(script, (time.time() + 5, time.time() + 5))
    assert _poll_status(gateway, issuer, 503) == 503
    backend.reset()
    with gateway.client() as http:
        answer = http.post("/deploy", json={"service": "api"}, headers=bearer(issuer))
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "unavailable"
    assert "X-Toolgate-Call-Id" in answer.headers
    assert backend.received == []


def test_a_gateway_that_cannot_load_at_start_does_not_start(start_gateway, tmp_path):
    script = tmp_path / "gateway.py"
    broken = GATEWAY_SCRIPT.read_text().replace("from toolgate.addons.assembly import",
                                                "from toolgate.addons.gone import")
    assert broken != GATEWAY_SCRIPT.read_text()
    script.write_text(broken)
    gateway = start_gateway(script=script, wait=False)
    assert gateway.proc.wait(30) != 0
    assert "failed to load" in gateway.output


# Loaded by Python at start (PYTHONPATH): the extension module of the core cannot be imported,
# or it is a build of other sources.
NO_CORE = """
import importlib.abc, sys
class _NoCore(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "toolgate.rules._core":
            raise ImportError("libtoolgate_core.so: cannot open shared object file")
sys.meta_path.insert(0, _NoCore())
"""
STALE_CORE = """
import importlib, importlib.abc, sys
class _Stale(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "toolgate.rules.core":
            sys.meta_path.remove(self)
            core = importlib.import_module("toolgate.rules._core")
            core.INTERFACE = -1
        return None
sys.meta_path.insert(0, _Stale())
"""


@pytest.mark.parametrize("hook, message", [(NO_CORE, "cannot be loaded"), (STALE_CORE, "is stale")])
def test_a_missing_or_stale_core_stops_the_gateway_at_start(start_gateway, backend, tmp_path, hook, message):
    (tmp_path / "sitecustomize.py").write_text(hook)
    gateway = start_gateway(wait=False, env={"PYTHONPATH": str(tmp_path)})
    assert gateway.proc.wait(30) != 0
    assert "classification core" in gateway.output and message in gateway.output
    assert "make core" in gateway.output  # what to do about it
    assert backend.received == []


def test_the_cli_says_the_core_is_missing(tmp_path):
    import subprocess
    import sys

    (tmp_path / "sitecustomize.py").write_text(NO_CORE)
    done = subprocess.run([sys.executable, "-m", "toolgate.scripts.cli", "rules", "check"],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert done.returncode != 0
    assert "classification core" in done.stderr and "make core" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "setting, message",
    [
        ("toolgate_identity=sometimes", "toolgate_identity"),
        ("toolgate_oidc_issuer=ftp://issuer", "not an http(s) URL"),
        ("toolgate_max_body=lots", "not a size"),
        ("toolgate_mask_key=env:TOOLGATE_TEST_NO_SUCH_VAR", "TOOLGATE_TEST_NO_SUCH_VAR is not set"),
        ("toolgate_admin_listen=nowhere", "HOST:PORT"),
        ("toolgate_approval_timeout=-1", "0 or more"),
        ("toolgate_webhook=not-a-url", "not an http(s) URL"),
        ("toolgate_durability=eventually", "toolgate_durability"),
        ("toolgate_mode=yolo", "toolgate_mode"),
        ("toolgate_rules=/no/such/rules", "does not exist"),
        ("toolgate_credentials=/no/such/file.yaml", "is not a file"),
    ],
)
def test_bad_options_stop_the_gateway_at_start(start_gateway, setting, message):
    gateway = start_gateway(setting, wait=False)
    assert gateway.proc.wait(30) != 0
    assert message in gateway.output
