"""Throughput of the gateway against bare mitmdump, in one run.

    .venv/bin/python scripts/bench.py [--duration 10] [--concurrency 16]

Starts a fast loopback backend (its own process) that answers 1 KB and 256 KB JSON bodies full
of PII, then, in turn, bare `mitmdump` and `mitmdump -s addons/gateway.py` (identity with a dev
issuer, the bundled packs, masking) in reverse mode in front of it, and drives each with an
asyncio load generator on keep-alive connections. Prints requests/s, p50 and p99 latency and
the ratio gateway/bare, plus how busy the load generator itself was (it must not be the
bottleneck), and the proxy's CPU time per request (all its threads; less noisy than requests/s
when something else runs on the machine). mitmproxy runs one event loop on one core: the ratio
is what toolgate costs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from toolgate.scripts.demo_service import CUSTOMERS
from toolgate.scripts.dev_issuer import DevIssuer
from toolgate.scripts.harness import (
    GATEWAY_SCRIPT, ROOT, FastBackend, mitmdump_args, start_mitmdump,
)

AUDIENCE = "toolgate-bench"


def make_body(target: int, sensitive_every: int = 1) -> bytes:
    """A JSON body of about `target` bytes: customer records (4 masked values each) padded
    with notes, so a 256 KB body holds about a thousand sensitive values."""
    rows, size = [], 2
    note = "regular customer, prefers email contact; no open tickets " * 2
    while size < target:
        record = dict(CUSTOMERS[len(rows) % len(CUSTOMERS)], id=len(rows) + 1, note=note)
        if len(rows) % sensitive_every:
            record = {k: v for k, v in record.items() if k in ("id", "name", "tier", "note")}
        rows.append(record)
        size += len(json.dumps(record)) + 2
    return json.dumps({"customers": rows}).encode()


# About a thousand sensitive values in the large body (one record in five carries PII).
BODIES = {b"/bench/1k": make_body(1024, sensitive_every=5), b"/bench/256k": make_body(256 * 1024, sensitive_every=5)}


def serve(port_file: str) -> None:
    """The backend, in a process of its own (so it never competes with the load generator)."""
    FastBackend(BODIES).serve(Path(port_file))


# -- the load generator --------------------------------------------------------------------------

@dataclass
class Result:
    requests: int
    errors: int
    seconds: float
    latencies: list[float]
    cpu: float  # share of one core the generator used
    proxy_cpu: float = float("nan")  # CPU seconds the proxy process used while measured

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000


async def _client(port: int, request: bytes, stop: float, warm: float, out: Result) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while (start := time.perf_counter()) < stop:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = re.search(rb"(?i)content-length:\s*(\d+)", head)
            if length:
                await reader.readexactly(int(length.group(1)))
            else:  # chunked: read to the terminating chunk
                while not (await reader.readuntil(b"\r\n")).startswith(b"0\r\n"):
                    pass
            if start >= warm:
                out.requests += 1
                out.errors += status != 200
                out.latencies.append(time.perf_counter() - start)
    finally:
        writer.close()


async def load(port: int, path: str, token: str | None, seconds: float, concurrency: int,
               proxy_pid: int | None = None) -> Result:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    request = (f"GET {path} HTTP/1.1\r\nHost: bench\r\n{auth}\r\n").encode()
    now = time.perf_counter()
    warm, stop = now + 1.0, now + 1.0 + seconds
    result = Result(0, 0, seconds, [], 0.0)
    cpu = time.process_time()
    measured = asyncio.gather(*(_client(port, request, stop, warm, result) for _ in range(concurrency)))
    await asyncio.sleep(max(0.0, warm - time.perf_counter()))
    proxy_cpu = process_cpu(proxy_pid)
    await measured
    result.proxy_cpu = process_cpu(proxy_pid) - proxy_cpu
    result.cpu = (time.process_time() - cpu) / (time.perf_counter() - now)
    return result


def process_cpu(pid: int | None) -> float:
    """User + system CPU seconds of process `pid` so far (Linux /proc), NaN elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError, TypeError):
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- orchestration -------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--durability", choices=["audit", "async"], default="audit",
                        help="the gateway's toolgate_durability (audit waits for each commit)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="toolgate-bench-"))
    port_file = work / "backend.port"
    backend = subprocess.Popen([sys.executable, "-c", "from toolgate.scripts.bench import serve; "
                                f"serve({str(port_file)!r})"], cwd=ROOT)
    issuer = DevIssuer(keys_path=work / "issuer.json", audience=AUDIENCE).start()
    token = issuer.keys.mint("bench", ["support"], ttl=3600)
    try:
        while not port_file.exists() or not port_file.read_text():
            time.sleep(0.05)
        upstream = f"http://127.0.0.1:{port_file.read_text()}"
        common = {"flow_detail": 0, "confdir": work / "conf"}
        setups = {
            "bare mitmdump": (mitmdump_args(upstream, common), None),
            "toolgate": (mitmdump_args(upstream, {
                **common,
                "toolgate_oidc_issuer": issuer.url,
                "toolgate_oidc_audience": AUDIENCE,
                "toolgate_db": work / "bench.duckdb",
                "toolgate_durability": args.durability,
                "toolgate_admin_listen": "127.0.0.1:0",
            }, script=GATEWAY_SCRIPT), token),
        }
        results: dict[tuple[str, str], Result] = {}
        for name, (mitm_args, bearer) in setups.items():
            proxy = start_mitmdump(mitm_args)
            try:
                for path in ("/bench/1k", "/bench/256k"):
                    results[name, path] = asyncio.run(
                        load(proxy.port, path, bearer, args.duration, args.concurrency, proxy.pid))
            finally:
                proxy.stop()
    finally:
        issuer.stop()
        backend.terminate()
        backend.wait(10)

    print(f"\n{args.concurrency} connections, {args.duration:.0f} s per measurement after 1 s warm-up, "
          f"toolgate_durability={args.durability}")
    print(f"{'':14}{'body':>6}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'loadgen cpu':>13}"
          f"{'proxy cpu/req':>15}")
    for (name, path), result in results.items():
        size = f"{len(BODIES[path.encode()]) // 1024} KB"
        per_request = result.proxy_cpu / max(1, result.requests) * 1000
        print(f"{name:14}{size:>6}{result.rps:9.0f}{result.percentile(50):9.1f}"
              f"{result.percentile(99):9.1f}{result.errors:8d}{result.cpu:12.0%}{per_request:12.2f} ms")
    for path, target in (("/bench/1k", 0.8), ("/bench/256k", 0.6)):
        ratio = results["toolgate", path].rps / results["bare mitmdump", path].rps
        verdict = "ok" if ratio >= target else "MISSED"
        print(f"gateway/bare {path.rsplit('/', 1)[1]:>5}: {ratio:.2f}x (target {target}x) {verdict}")
    if any(r.errors for r in results.values()):
        print("errors were answered: the figures are not comparable", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
