"""The real parts of a gateway fleet, on loopback only, for the fleet tests, the fleet benchmark
and the README's example: a throwaway PostgreSQL server (the control plane every gateway of the
fleet shares) and an HAProxy load balancer in front of the gateways. Both come from Debian's
packages (`scripts/system_deps.sh` installs them); `missing_system_deps` says what is missing.

- `Postgres` runs a cluster of its own: created at the first `start` with SCRAM password
  authentication for the user `toolgate` over 127.0.0.1 only, a fresh database per test from
  `create_database`, `stop` in any of PostgreSQL's shutdown modes (`immediate` is a crash) and
  `start` again on the same data and port.
- `Balancer` runs HAProxy round-robin over gateway nodes, checking each node's `GET /healthz`
  on its admin port; `servers_up` says which nodes it sends calls to.

Every process is a child of this one and is stopped by its PID (`stop`, `close`).
"""

from __future__ import annotations

import csv
import http.client
import io
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple, Self

import psycopg
from psycopg import sql

from toolgate.scripts.harness import HOST, free_port, free_ports

USER = DATABASE = "toolgate"
ADMIN = "postgres"  # the cluster's superuser: only over its Unix socket, without a password
SERVICE_USER = "postgres"  # the system user of Debian's package: runs the server when we are root
INSTALL = ("run `sudo scripts/system_deps.sh` "
           "(or `sudo apt-get install --no-install-recommends postgresql haproxy`)")

StopMode = Literal["smart", "fast", "immediate"]
# What `pg_ctl stop -m <mode>` sends to the postmaster; we send it to the PID we started.
STOP_SIGNALS: dict[StopMode, signal.Signals] = {
    "smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}


def postgres_bindir() -> Path | None:
    """The folder of the newest PostgreSQL server binaries (initdb, postgres): Debian's
    /usr/lib/postgresql/<version>/bin, else `pg_config --bindir` when initdb is there."""
    def version(initdb: Path) -> list[int]:
        return [int(n) for n in initdb.parent.parent.name.split(".") if n.isdigit()]

    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=version)
    if debian:
        return debian[-1].parent
    if pg_config := shutil.which("pg_config"):
        found = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        bindir = Path(found.stdout.strip())
        if found.returncode == 0 and (bindir / "initdb").exists():
            return bindir
    return None


def haproxy_path() -> str | None:
    """HAProxy's program: on PATH, or in /usr/sbin (not on a Debian user's PATH)."""
    return shutil.which("haproxy", path=f"{os.environ.get('PATH', '')}{os.pathsep}/usr/sbin")


def missing_system_deps() -> str | None:
    """Why the fleet's parts cannot run here, saying what to install; None when they can."""
    missing = [name for name, found in (("postgresql", postgres_bindir()),
                                        ("haproxy", haproxy_path())) if not found]
    if missing:
        return f"the fleet tests need {' and '.join(missing)}, not installed: {INSTALL}"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVICE_USER)
        except KeyError:
            return (f"PostgreSQL refuses to run as root and there is no `{SERVICE_USER}` system "
                    f"user to run it as: {INSTALL}")
    return None


def listens(port: int) -> bool:
    """Whether something accepts TCP connections on the loopback `port`."""
    try:
        socket.create_connection((HOST, port), timeout=1).close()
        return True
    except OSError:
        return False


def wait_started(what: str, proc: subprocess.Popen[bytes], ready: Callable[[], bool], log: Path,
                 timeout: float) -> None:
    """Wait until `ready()`; RuntimeError with the end of `log` if `proc` (`what`) ends or
    `timeout` seconds pass first."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = "".join(log.read_text(errors="replace").splitlines(True)[-30:])
            raise RuntimeError(f"{what} did not start (exit status {proc.poll()}); "
                               f"the end of {log}:\n{tail}")
        time.sleep(0.05)


def stop_process(proc: subprocess.Popen[bytes] | None, sig: signal.Signals,
                 timeout: float = 30) -> None:
    """Send `sig` to `proc` if it runs and wait for it to end, with SIGKILL after `timeout`."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


class Postgres:
    """A throwaway PostgreSQL server on 127.0.0.1, on a free port kept across restarts.

    Its cluster lives in a folder of its own under the system's temporary folder, deleted by
    `close`: as root (PostgreSQL refuses to run as root) the server runs as the `postgres` system
    user, which must reach that folder, and pytest's tmp_path is private to root. The server's
    log is `base_dir/postgres.log`."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.log = base_dir / "postgres.log"
        self.password = secrets.token_urlsafe(24)
        self.port = free_port()
        self.folder: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        # As root, the server's processes run as the service user, without root's groups.
        self._as: dict[str, Any] = {}
        if os.geteuid() == 0:
            user = pwd.getpwnam(SERVICE_USER)
            self._as = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}

    @property
    def url(self) -> str:
        """The `toolgate` database, as the user `toolgate` with its password."""
        return self.database_url(DATABASE)

    def database_url(self, database: str) -> str:
        return (f"postgresql://{USER}:{self.password}@{HOST}:{self.port}/"
                f"{urllib.parse.quote(database, safe='')}")

    @property
    def pid(self) -> int | None:
        """The postmaster's PID while it runs."""
        return self._proc.pid if self._proc and self._proc.poll() is None else None

    def start(self) -> Self:
        """Start the server (creating the cluster, the user and its database the first time)
        and return once it accepts connections; RuntimeError with its log's tail otherwise."""
        if self.pid:
            return self
        fresh = self.folder is None
        try:
            if fresh:
                self._create_cluster()
            self.base_dir.mkdir(parents=True, exist_ok=True)
            with self.log.open("ab") as log:  # the server writes through its own copy of it
                self._proc = self._run("postgres", "-D", str(self._data), "-p", str(self.port),
                                       *(f"-c{name}={value}" for name, value in self._settings()),
                                       stdout=log, stderr=subprocess.STDOUT)
            wait_started("PostgreSQL", self._proc, self._accepts, self.log, timeout=30)
            if fresh:
                with self._admin() as admin:
                    admin.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                        sql.Identifier(USER), sql.Literal(self.password)))
                self.create_database(DATABASE)
        except BaseException:
            if fresh:  # nothing left behind, not even the cluster
                self.close()
            else:
                self.stop("immediate")
            raise
        return self

    def stop(self, mode: StopMode = "fast") -> None:
        """Stop the server as `pg_ctl stop -m <mode>` does: `smart` waits for the clients to
        leave, `fast` disconnects them, `immediate` ends it at once (as a crash would: the next
        start recovers from the WAL)."""
        stop_process(self._proc, STOP_SIGNALS[mode])

    def create_database(self, name: str) -> str:
        """A new database `name` owned by `toolgate`; its URL."""
        with self._admin() as admin:
            admin.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(name), sql.Identifier(USER)))
        return self.database_url(name)

    def close(self) -> None:
        """Stop the server and delete its cluster."""
        self.stop()
        if self.folder:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the cluster -----------------------------------------------------------------------------

    @property
    def _data(self) -> Path:
        assert self.folder
        return self.folder / "pgdata"

    @property
    def _sockets(self) -> Path:
        assert self.folder
        return self.folder / "sockets"

    def _settings(self) -> list[tuple[str, str]]:
        return [
            ("listen_addresses", HOST),
            ("unix_socket_directories", str(self._sockets)),
            ("unix_socket_permissions", "0700"),  # the socket (the admin's way in): owner only
            ("max_connections", "200"),  # a fleet of gateways, each with its pool
            ("shared_buffers", "32MB"),
            # Throwaway data, never flushed to disk: a crash of the server still loses no commit
            # (the OS keeps what it wrote; synchronous_commit stays on, as in production).
            ("fsync", "off"), ("full_page_writes", "off"),
        ]

    def _run(self, program: str, *args: str, **kwargs: Any) -> subprocess.Popen[bytes]:
        bindir = postgres_bindir()
        if bindir is None:
            raise RuntimeError(missing_system_deps())
        return subprocess.Popen([str(bindir / program), *args], cwd=self.folder,
                                stdin=subprocess.DEVNULL, **self._as, **kwargs)

    def _create_cluster(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="toolgate-pg-"))
        self._sockets.mkdir()
        if self._as:
            for path in (self.folder, self._sockets):
                os.chown(path, self._as["user"], self._as["group"])
        initdb = self._run("initdb", "-D", str(self._data), "-U", ADMIN, "-E", "UTF8",
                           "--locale=C", "--no-sync", "--auth=trust",
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        output, _ = initdb.communicate(timeout=120)
        if initdb.returncode:
            raise RuntimeError(f"initdb failed:\n{output.decode(errors='replace')}")
        # Only two ways in: the admin over the Unix socket (which only the server's system user
        # and root can open), and `toolgate` with its password over 127.0.0.1.
        (self._data / "pg_hba.conf").write_text(
            f"local all {ADMIN} trust\n"
            f"host all {USER} 127.0.0.1/32 scram-sha-256\n")

    def _admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(host=str(self._sockets), port=self.port, user=ADMIN,
                               dbname="postgres", autocommit=True, connect_timeout=2)

    def _accepts(self) -> bool:
        try:
            self._admin().close()
        except psycopg.OperationalError:
            return False
        return listens(self.port)


class Backend(NamedTuple):
    """A gateway node behind the balancer: where its proxy listens, and its admin API's port
    (for the health check)."""

    name: str
    host: str
    port: int
    admin_port: int


class Balancer:
    """HAProxy on 127.0.0.1 (a free port) round-robin over `backends`, with its statistics page
    on another loopback port. Its configuration and its log (a line per call, with the node
    that took it) are in `base_dir`."""

    BACKEND = "gateways"

    def __init__(self, base_dir: Path, backends: Sequence[tuple[str, str, int, int]]) -> None:
        self.base_dir = base_dir
        self.backends = [Backend(*b) for b in backends]
        self.log = base_dir / "haproxy.log"
        self.port, self.stats_port = free_ports(2)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc and self._proc.poll() is None else None

    def config(self) -> str:
        servers = "".join(
            f"    server {b.name} {b.host}:{b.port} check port {b.admin_port} "
            f"inter 500ms fall 2 rise 1\n" for b in self.backends)
        # Retries only when the connection to a node failed, when nothing of the call reached
        # it (`retry-on conn-failure`), each time on another node (`option redispatch 1`: every
        # retry, not only the last). Never after the call was sent (no `empty-response`,
        # `response-timeout`, `junk-response` or status codes): the node may have forwarded the
        # tool call or hold it for approval, and sending it again could run it twice; the
        # caller gets the 502 or 504 and decides.
        return f"""\
global
    log stderr format raw local0 info

defaults
    mode http
    log global
    option httplog
    option dontlognull
    timeout connect 2s
    # A call may be held for approval for up to five minutes: the answer comes that late.
    timeout client 330s
    timeout server 330s
    retries 2
    retry-on conn-failure
    option redispatch 1

frontend fleet
    bind {HOST}:{self.port}
    default_backend {self.BACKEND}

backend {self.BACKEND}
    balance roundrobin
    option httpchk
    http-check send meth GET uri /healthz ver HTTP/1.1 hdr Host {HOST}
    http-check expect status 200
{servers}
listen stats
    bind {HOST}:{self.stats_port}
    stats enable
    stats uri /stats
"""

    def start(self) -> Self:
        """Start HAProxy and return once its frontend accepts connections; RuntimeError with
        its log's tail otherwise."""
        program = haproxy_path()
        if program is None:
            raise RuntimeError(missing_system_deps())
        self.base_dir.mkdir(parents=True, exist_ok=True)
        config = self.base_dir / "haproxy.cfg"
        config.write_text(self.config())
        with self.log.open("ab") as log:
            self._proc = subprocess.Popen([program, "-f", str(config), "-db"], stdout=log,
                                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            wait_started("HAProxy", self._proc, lambda: listens(self.port), self.log, timeout=10)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        stop_process(self._proc, signal.SIGTERM)

    def servers_up(self) -> dict[str, bool]:
        """Whether HAProxy sends calls to each node now (its health check's verdict), by name."""
        stats = http.client.HTTPConnection(HOST, self.stats_port, timeout=5)
        try:
            stats.request("GET", "/stats;csv")
            text = stats.getresponse().read().decode()
        finally:
            stats.close()
        rows = csv.DictReader(io.StringIO(text.removeprefix("# ")))
        return {row["svname"]: row["status"].startswith("UP") for row in rows
                if row["pxname"] == self.BACKEND and row["svname"] not in ("FRONTEND", "BACKEND")}

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
