"""The end-to-end harness: real `mitmdump -s addons/gateway.py` processes on free loopback ports,
stopped by PID even when a test fails."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from toolgate.scripts.demo_service import DemoService
from toolgate.scripts.dev_issuer import DevIssuer

ROOT = Path(__file__).resolve().parent.parent
GATEWAY_SCRIPT = ROOT / "addons" / "gateway.py"
MITMDUMP = Path(sys.executable).parent / "mitmdump"
MITMWEB = Path(sys.executable).parent / "mitmweb"
AUDIENCE = "toolgate-tests"
LISTENING = re.compile(r"listening at \S*?:(\d+)")
ADMIN_LISTENING = re.compile(r"admin API serving at (http://\S+)")


@dataclass
class Gateway:
    """A running mitmdump with the gateway; `output` is everything it printed."""

    proc: subprocess.Popen[str]
    log: Path
    port: int | None = None
    lines: list[str] = field(default_factory=list)
    ready: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10, **kwargs)

    @property
    def admin_url(self) -> str:
        """The admin API's address, as the gateway logged it (it may bind port 0)."""
        found = wait_until(lambda: ADMIN_LISTENING.search(self.output), timeout=10)
        if not found:
            raise RuntimeError(f"the admin API did not start:\n{self.output}")
        return found.group(1)

    def _pump(self) -> None:
        assert self.proc.stdout
        with self.log.open("w") as out:
            for line in self.proc.stdout:
                self.lines.append(line)
                out.write(line)
                out.flush()
                match = LISTENING.search(line)
                if (match and "Web server" in line) or ADMIN_LISTENING.search(line):
                    continue  # mitmweb's UI or the admin API, not the proxy
                if match and not self.ready.is_set():
                    self.port = int(match.group(1))
                    self.ready.set()
        self.ready.set()  # the process ended: wake the waiter

    def wait_ready(self, timeout: float = 30) -> None:
        if not self.ready.wait(timeout) or self.port is None:
            self.stop()
            raise RuntimeError(f"mitmdump did not start:\n{self.output}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def start_mitmdump(
    args: list[str], log: Path, env: dict[str, str] | None = None, wait: bool = True,
    program: Path = MITMDUMP,
) -> Gateway:
    proc = subprocess.Popen(
        [str(program), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"},
    )
    gateway = Gateway(proc, log)
    threading.Thread(target=gateway._pump, daemon=True).start()
    if wait:
        gateway.wait_ready()
    return gateway


class Launcher:
    """Starts mitmdump with the gateway in reverse mode in front of the demo backend, and
    stops every process it started."""

    def __init__(self, workdir: Path, confdir: Path, issuer: DevIssuer, backend: DemoService):
        self.workdir, self.confdir, self.issuer, self.backend = workdir, confdir, issuer, backend
        self.started: list[Gateway] = []

    def __call__(
        self,
        *sets: str,
        script: Path = GATEWAY_SCRIPT,
        issuer_url: str | None = None,
        upstream: str | None = None,
        wait: bool = True,
        env: dict[str, str] | None = None,
        program: Path = MITMDUMP,
        extra_args: tuple[str, ...] = (),
    ) -> Gateway:
        options = {
            "confdir": str(self.confdir),
            "flow_detail": "2",
            "toolgate_oidc_issuer": issuer_url or self.issuer.url,
            "toolgate_oidc_audience": AUDIENCE,
            "toolgate_db": str(self.workdir / "toolgate.duckdb"),
            "toolgate_admin_listen": "127.0.0.1:0",
        }
        # A test's own settings replace these defaults: mitmproxy refuses a key given twice.
        options.update(item.split("=", 1) for item in sets)
        args = [
            "-s", str(script),
            "--mode", f"reverse:{upstream or self.backend.url}",
            "--listen-host", "127.0.0.1", "-p", "0",
            *extra_args,
        ]
        for name, value in options.items():
            args += ["--set", f"{name}={value}"]
        log = self.workdir / f"mitmdump-{len(self.started)}.log"
        gateway = start_mitmdump(args, log, env, wait, program)
        self.started.append(gateway)
        return gateway

    def stop_all(self) -> None:
        for gateway in self.started:
            gateway.stop()


def wait_until(predicate, timeout: float = 10, interval: float = 0.1):
    """Poll `predicate` until it returns something truthy; the last value otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)
