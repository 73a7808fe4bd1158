"""Recording benchmark: is the session store ever the gateway's bottleneck?

1. Bare mitmdump (reverse mode, no scripts) in front of a fast loopback backend, driven by a
   concurrent keep-alive load generator: its requests/s.
2. The recorder's writer alone, audit-style: many concurrent producers each record calls the
   way the recorder does under `toolgate_durability=audit` (a `pending` row, awaited; then the
   `calls` row with a finding, awaited): calls/s and rows/s.
3. (unless --no-gateway) The real gateway (identity off, bundled rules) under `audit` and
   `async`: the p50/p95 latency audit adds, one caller and 20 callers.

    .venv/bin/python scripts/bench_recorder.py [--seconds 5] [--producers 512]

The target is a recorder sustaining at least 5x bare mitmdump's rate.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import tempfile
import time
from pathlib import Path

from toolgate.scripts.harness import GATEWAY_SCRIPT, FastBackend, mitmdump_args, start_mitmdump
from toolgate.sessions.records import CallRecord, FindingRow
from toolgate.sessions.writer import Writer

BODY = b'{"id": 1, "name": "Ada Lovelace", "email": "tok_email_3f9a1c2b", "ssn": "***-**-1234"}'


# -- a keep-alive load generator (the backend: the harness's FastBackend) -------------------


async def _client(port: int, deadline: float, latencies: list[float], path: str) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
               "Accept: application/json\r\n\r\n").encode()
    done = 0
    try:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
            await reader.readexactly(length)
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"unexpected answer: {head[:80]!r}")
            latencies.append(time.perf_counter() - started)
            done += 1
    finally:
        writer.close()
    return done


def load(
    port: int, seconds: float, connections: int, path: str = "/bench"
) -> tuple[float, list[float]]:
    """Requests/s over `seconds` with `connections` keep-alive clients; and the latencies."""
    latencies: list[float] = []

    async def main() -> int:
        deadline = time.perf_counter() + seconds
        counts = await asyncio.gather(*(_client(port, deadline, latencies, path)
                                        for _ in range(connections)))
        return sum(counts)

    started = time.perf_counter()
    total = asyncio.run(main())
    return total / (time.perf_counter() - started), latencies


# -- the recorder alone -----------------------------------------------------------------------


def record(n: int) -> tuple[CallRecord, CallRecord]:
    now = time.time()
    common = dict(
        call_id=f"{os.getpid():x}{n:024x}", started_at=now, method="GET",
        url=f"http://crm.internal/customers/{n}",
        request_headers=[("Host", "crm.internal"), ("Accept", "application/json"),
                         ("User-Agent", "agent/1.0"), ("Authorization", "Bearer x")],
        request_body=b"", session_id="s-bench", client_addr="127.0.0.1:50000",
        subject="alice", issuer="https://issuer", groups=["support"], protocol="rest",
        function="crm.get_customer", decision="mask", enforced="mask", rules=["mask-pii"],
        mode="enforce", forwarded=True,
    )
    request = CallRecord(**common)
    final = CallRecord(**common, ended_at=now + 0.002, status=200,
                       response_headers=[("Content-Type", "application/json")],
                       response_body=BODY * 4,
                       findings=[FindingRow("response", "$.ssn", "ssn", "restricted", "mask",
                                         "ab" * 32)])
    return request, final


def bench_writer(seconds: float, producers: int) -> dict[str, float]:
    """Calls/s the writer sustains when `producers` callers each wait on every commit."""
    folder = Path(tempfile.mkdtemp(prefix="toolgate-bench-"))
    writer = Writer(folder / "bench.duckdb").start()
    counter = iter(range(10**12))
    latencies: list[float] = []

    async def producer(deadline: float) -> int:
        done = 0
        while time.perf_counter() < deadline:
            request, final = record(next(counter))
            started = time.perf_counter()
            await asyncio.wrap_future(writer.submit_request(request))
            await asyncio.wrap_future(writer.submit_call(final))
            latencies.append(time.perf_counter() - started)
            done += 1
        return done

    async def main() -> int:
        await asyncio.wrap_future(writer.run_query(lambda con: None))  # open
        deadline = time.perf_counter() + seconds
        return sum(await asyncio.gather(*(producer(deadline) for _ in range(producers))))

    started = time.perf_counter()
    calls = asyncio.run(main())
    elapsed = time.perf_counter() - started
    stats = dict(writer.stats)
    writer.stop()
    writer.join(60)
    size = sum(p.stat().st_size for p in folder.iterdir())
    return {"calls_per_s": calls / elapsed, "rows_per_s": (calls * 3) / elapsed,
            "commits_per_s": stats["commits"] / elapsed,
            "rows_per_commit": (stats["calls"] + stats["requests"]) / max(1, stats["commits"]),
            "p50_ms": statistics.median(latencies) * 1000, "bytes": size, "calls": calls}


# -- through the gateway ---------------------------------------------------------------------


def gateway_latency(backend: FastBackend, durability: str, seconds: float, connections: int,
                    folder: Path) -> tuple[float, float, float]:
    proxy = start_mitmdump(mitmdump_args(backend.url, {
        "flow_detail": 0, "toolgate_identity": "off", "toolgate_durability": durability,
        "toolgate_db": folder / (durability + str(connections) + ".duckdb"),
        "toolgate_admin_listen": "127.0.0.1:0",
    }, script=GATEWAY_SCRIPT))
    try:
        load(proxy.port, 0.5, connections, "/healthz")  # warm up
        rate, latencies = load(proxy.port, seconds, connections, "/healthz")
    finally:
        proxy.stop(15)
    latencies.sort()
    return rate, latencies[len(latencies) // 2] * 1000, latencies[int(len(latencies) * .95)] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--connections", type=int, default=32,
                        help="load generator connections against bare mitmdump")
    parser.add_argument("--producers", type=int, default=512,
                        help="concurrent audit-style callers of the writer")
    parser.add_argument("--no-gateway", action="store_true", help="skip the latency part")
    args = parser.parse_args()

    backend = FastBackend(default=BODY).start()
    direct, _ = load(backend.port, 1, args.connections)
    print(f"backend alone:           {direct:9.0f} req/s  ({args.connections} connections)")
    proxy = start_mitmdump(mitmdump_args(backend.url, {"flow_detail": 0}))
    try:
        load(proxy.port, 0.5, args.connections)
        bare, _ = load(proxy.port, args.seconds, args.connections)
    finally:
        proxy.stop(15)
    print(f"bare mitmdump:           {bare:9.0f} req/s  ({args.connections} connections, "
          f"{args.seconds:g}s)")

    w = bench_writer(args.seconds, args.producers)
    print(f"recorder (audit-style):  {w['calls_per_s']:9.0f} calls/s = {w['rows_per_s']:.0f} "
          f"rows/s ({args.producers} producers; pending + calls + findings rows; "
          f"{w['commits_per_s']:.0f} commits/s, {w['rows_per_commit']:.0f} rows/commit, "
          f"p50 {w['p50_ms']:.1f} ms for both commits)")
    print(f"recorder / bare mitmdump: {w['calls_per_s'] / bare:.1f}x  (target: >= 5x)")

    if not args.no_gateway:
        folder = Path(tempfile.mkdtemp(prefix="toolgate-bench-gw-"))
        for connections in (1, 20):
            results = {d: gateway_latency(backend, d, args.seconds, connections, folder)
                       for d in ("async", "audit")}
            (ar, a50, a95), (ur, u50, u95) = results["async"], results["audit"]
            print(f"gateway, {connections:2d} caller(s): async {ar:6.0f} req/s p50 {a50:6.2f} ms "
                  f"p95 {a95:6.2f} ms | audit {ur:6.0f} req/s p50 {u50:6.2f} ms p95 {u95:6.2f} ms"
                  f" | audit adds p50 {u50 - a50:+.2f} ms")


if __name__ == "__main__":
    main()
