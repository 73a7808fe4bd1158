"""The development harness shared by the tests, the benches and the soak: one launcher for
mitmdump processes, one stub HTTP server (the plumbing of the demo service and the dev issuer,
and of every stand-in backend), one fast keep-alive backend for the benches, and one helper that
reads the session store.

- `start_mitmdump` starts `mitmdump` (or mitmweb) on a free loopback port, keeps everything it
  prints (a full pipe would stall it) and stops it by PID; `mitmdump_args` spells the reverse-mode
  command line in front of a backend, with or without the gateway's addon script.
- `StubServer` is a `ThreadingHTTPServer` on loopback served from a background thread (free port,
  `url`, start, stop, `with`); `StubHandler` answers with a body and is quiet; `Served` gives a
  class that owns a `server` (the demo service, the dev issuer) the same start, stop and url;
  `free_port` names a loopback port where nothing listens.
- `FastBackend` answers every request with a fixed body on keep-alive connections, fast enough
  never to be the limit of a benchmark.
- `query` and `open_store` (from `toolgate.sessions.readonly`, where the SQL lives) read a
  session store: read-only by default, with the connection configuration the writer uses.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self, TypeVar

from toolgate.sessions.readonly import open_store, query  # the one SQL helper; sessions owns SQL

if TYPE_CHECKING:
    import httpx

ROOT = Path(__file__).resolve().parent.parent
GATEWAY_SCRIPT = ROOT / "addons" / "gateway.py"
MITMDUMP = Path(sys.executable).parent / "mitmdump"
MITMWEB = Path(sys.executable).parent / "mitmweb"
HOST = "127.0.0.1"
LISTENING = re.compile(r"listening at \S*?:(\d+)")
ADMIN_LISTENING = re.compile(r"admin API serving at (http://\S+)")

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float = 10, interval: float = 0.1) -> T:
    """Poll `predicate` until it returns something truthy; the last value otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def store_files(db: Path) -> list[Path]:
    """Every file the session store `db` keeps that exists: the DuckDB file, its WAL, and the
    write-ahead journal (what a crash leaves holds recent calls only there)."""
    return [p for p in (db, Path(f"{db}.wal"), Path(f"{db}.journal")) if p.exists()]


def store_bytes(db: Path) -> bytes:
    """The bytes of `store_files(db)`, to search for what must never be stored."""
    return b"".join(p.read_bytes() for p in store_files(db))


# -- mitmdump processes ------------------------------------------------------------------------

@dataclass
class Mitmdump:
    """A running mitmdump (or mitmweb); `output` is everything it printed, also written to
    `log` and handed to `echo` line by line when they are given. `port` is the proxy's, once
    it listens."""

    proc: subprocess.Popen[str]
    log: Path | None = None
    echo: Callable[[str], object] | None = None
    port: int | None = None
    lines: list[str] = field(default_factory=list)
    ready: threading.Event = field(default_factory=threading.Event)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def client(self, **kwargs: Any) -> httpx.Client:
        import httpx  # a test dependency: the demo and the CLI do without it

        return httpx.Client(base_url=self.url, timeout=10, **kwargs)

    def wait_for(self, pattern: re.Pattern[str], timeout: float = 10) -> re.Match[str]:
        """The first match of `pattern` in what it printed, waiting for it up to `timeout`."""
        found = wait_until(lambda: pattern.search(self.output), timeout=timeout)
        if not found:
            raise RuntimeError(f"{pattern.pattern!r} not in mitmdump's output:\n{self.output}")
        return found

    @property
    def admin_url(self) -> str:
        """The admin API's address, as the gateway logged it (it may bind port 0)."""
        return self.wait_for(ADMIN_LISTENING).group(1)

    def _pump(self) -> None:
        assert self.proc.stdout
        out = self.log.open("w") if self.log else None
        try:
            for line in self.proc.stdout:
                self.lines.append(line)
                if self.echo:
                    self.echo(line)
                if out:
                    out.write(line)
                    out.flush()
                match = LISTENING.search(line)
                if (match and "Web server" in line) or ADMIN_LISTENING.search(line):
                    continue  # mitmweb's UI or the admin API, not the proxy
                if match and not self.ready.is_set():
                    self.port = int(match.group(1))
                    self.ready.set()
        finally:
            if out:
                out.close()
            self.ready.set()  # the process ended: wake the waiter

    def wait_ready(self, timeout: float = 30) -> None:
        if not self.ready.wait(timeout) or self.port is None:
            self.stop()
            raise RuntimeError(f"mitmdump did not start:\n{self.output}")

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM, and SIGKILL if it has not ended within `timeout` seconds."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def start_mitmdump(
    args: list[str], log: Path | None = None, env: Mapping[str, str] | None = None,
    wait: bool = True, program: Path = MITMDUMP, echo: Callable[[str], object] | None = None,
) -> Mitmdump:
    """Start `program` with `args` from the repository's folder; with `wait`, return once its
    proxy listens (RuntimeError, the process stopped, if it never does)."""
    proc = subprocess.Popen(
        [str(program), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"},
    )
    started = Mitmdump(proc, log, echo)
    threading.Thread(target=started._pump, daemon=True).start()
    if wait:
        started.wait_ready()
    return started


def mitmdump_args(
    upstream: str, options: Mapping[str, object] | None = None, *, script: Path | None = None,
    extra: Iterable[str] = (),
) -> list[str]:
    """mitmdump's arguments for reverse mode in front of `upstream` on a free loopback port:
    with `script` (the gateway: `GATEWAY_SCRIPT`) or bare, then `extra`, then each option as
    `--set name=value`."""
    args = [*(["-s", str(script)] if script else []), "--mode", f"reverse:{upstream}",
            "--listen-host", HOST, "-p", "0", *extra]
    for name, value in (options or {}).items():
        args += ["--set", f"{name}={value}"]
    return args


# -- stub HTTP servers ---------------------------------------------------------------------------

def free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports that nothing listens on (at the time of asking)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind((HOST, 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def free_port() -> int:
    """A loopback port that nothing listens on (at the time of asking)."""
    return free_ports(1)[0]


class StubServer(ThreadingHTTPServer):
    """An HTTP server of this process on loopback (a free port unless told), served from a
    background thread once started; `with` starts and stops it."""

    daemon_threads = True

    def __init__(self, handler: type[BaseHTTPRequestHandler], host: str = HOST,
                 port: int = 0) -> None:
        super().__init__((host, port), handler)
        self.host = host
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.server_port}"

    def start(self) -> Self:
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (once started) and close the socket."""
        if self._thread:
            self.shutdown()
            self._thread.join(10)
            self._thread = None
        self.server_close()

    def __enter__(self) -> Self:
        return self if self._thread else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class StubHandler(BaseHTTPRequestHandler):
    """A request handler that answers with `send` or `send_json` and logs nothing."""

    def send(self, status: int, body: bytes, content_type: str = "application/json",
             headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def send_json(self, value: Any, status: int = 200,
                  headers: Mapping[str, str] | None = None) -> None:
        self.send(status, json.dumps(value).encode(), "application/json", headers)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Served:
    """What serves its `server` (a StubServer) from a background thread: the demo service and
    the dev issuer, for tests and `make run`."""

    server: StubServer

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> Self:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def serve_until_interrupted(self) -> None:
        """Serve in the foreground (a process of its own) until Ctrl-C."""
        try:
            self.server.serve_forever()
        except KeyboardInterrupt:
            pass


# -- a fast backend for the benches --------------------------------------------------------------

class FastBackend:
    """A minimal keep-alive HTTP/1.1 server answering every request 200 with a JSON body: the
    one for its path in `bodies`, `default` otherwise. Fast enough never to be the limit; run
    in a thread of its own event loop (`start`, `stop`), or in the foreground (`serve`)."""

    def __init__(self, bodies: Mapping[bytes, bytes] | None = None, default: bytes = b"{}") -> None:
        self.answers = {path: self._answer(body) for path, body in (bodies or {}).items()}
        self.default = self._answer(default)
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    @staticmethod
    def _answer(body: bytes) -> bytes:
        return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body))

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length:\s*(\d+)", head)
                if length:
                    await reader.readexactly(int(length.group(1)))
                writer.write(self.answers.get(head.split(b" ", 2)[1], self.default))
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _serve(self, port_file: Path | None = None) -> None:
        server = await asyncio.start_server(self._connection, HOST, 0)
        self.port = server.sockets[0].getsockname()[1]
        if port_file:
            port_file.write_text(str(self.port))
        self._loop, self._task = asyncio.get_running_loop(), asyncio.current_task()
        self._ready.set()
        async with server:
            await server.serve_forever()

    def serve(self, port_file: Path | None = None) -> None:
        """Serve in the foreground, forever; the port is written to `port_file` once bound."""
        asyncio.run(self._serve(port_file))

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the backend did not start")
        return self

    def _run(self) -> None:
        with asyncio.Runner() as runner:  # closing it ends the open connections' tasks too
            try:
                runner.run(self._serve())
            except asyncio.CancelledError:
                pass

    def stop(self) -> None:
        if self._loop and self._task and self._thread:
            self._loop.call_soon_threadsafe(self._task.cancel)
            self._thread.join(10)
