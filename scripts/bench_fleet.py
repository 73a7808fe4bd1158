"""What a fleet buys on one machine, and what a fleet-wide decision costs, in one run.

    .venv/bin/python scripts/bench_fleet.py [--duration 6] [--concurrency 32] [--decisions 20]

Throughput: a fast loopback backend (its own process) answers a 1 KB clean listing; a real
PostgreSQL is the control plane; 1, then 2, then 3 gateways (`mitmdump -s addons/gateway.py`,
audit durability, each with its own store) sit behind a real HAProxy, and the asyncio load
generator of scripts/bench.py drives the balancer with `--concurrency` keep-alive connections.
Printed: requests/s, p50/p99, and the ratio to one node behind the same balancer. One node
uses one core; this machine has `os.cpu_count()` of them, shared with the balancer, the
backend and the load generator, so the ratio says what more processes give here, not what
more machines would.

Decision latency: a call held for approval, approved through the admin API, timed from the
approval's POST to the caller's answer: a single gateway deciding its own call (no control
plane), and a fleet where the call is held on one node and approved through another's admin
API (PostgreSQL's first-decision UPDATE, NOTIFY, the holding node's release). p50 and p95 over
`--decisions` calls each; the difference is what the fleet adds.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx

from toolgate.scripts.bench import load, request_for, serve
from toolgate.scripts.bench_bodies import build_bodies
from toolgate.scripts.demo_service import DemoService
from toolgate.scripts.dev_issuer import DevIssuer
from toolgate.scripts.fleet import Balancer, Postgres, missing_system_deps
from toolgate.scripts.harness import (
    GATEWAY_SCRIPT, Mitmdump, free_ports, mitmdump_args, start_mitmdump, wait_until,
)

AUDIENCE = "toolgate-bench"
BODY = "1k-clean"


def start_nodes(count: int, upstream: str, work: Path, issuer: DevIssuer,
                control: str | None) -> list[tuple[str, Mitmdump, int, int]]:
    """`count` gateways on fixed ports: (name, process, proxy port, admin port)."""
    nodes = []
    try:
        for i in range(count):
            name = f"gw-{chr(ord('a') + i)}"
            proxy, admin = free_ports(2)
            options = {
                "flow_detail": 0, "confdir": work / "conf", "toolgate_oidc_issuer": issuer.url,
                "toolgate_oidc_audience": AUDIENCE, "toolgate_db": work / f"{name}.duckdb",
                "toolgate_admin_listen": f"127.0.0.1:{admin}",
                **({"toolgate_control": control, "toolgate_node": name} if control else {}),
            }
            args = mitmdump_args(upstream, options, script=GATEWAY_SCRIPT,
                                 extra=("-p", str(proxy)))
            nodes.append((name, start_mitmdump(args), proxy, admin))
    except BaseException:
        stop_nodes(nodes)
        raise
    return nodes


def stop_nodes(nodes: list[tuple[str, Mitmdump, int, int]]) -> None:
    for _, process, _, _ in nodes:
        process.stop()


def throughput(work: Path, issuer: DevIssuer, control: str, token: str,
               args: argparse.Namespace) -> None:
    port_file = work / "backend.port"
    backend = multiprocessing.Process(target=serve, args=(str(port_file),), daemon=True)
    backend.start()
    try:
        wait_until(lambda: port_file.exists() and port_file.read_text().strip(), timeout=10)
        upstream = f"http://127.0.0.1:{port_file.read_text().strip()}"
        request = request_for(build_bodies()[BODY].path, token)
        base = None
        print(f"throughput, {BODY}, {args.concurrency} connections through HAProxy, "
              f"{os.cpu_count()} cores:")
        for count in (1, 2, 3):
            folder = work / f"nodes-{count}"
            folder.mkdir()
            nodes = start_nodes(count, upstream, folder, issuer, control)
            balancer = Balancer(folder / "haproxy", [(n, "127.0.0.1", p, a)
                                                     for n, _, p, a in nodes]).start()
            try:
                wait_until(lambda: all(balancer.servers_up().values()), timeout=10)
                (result,) = asyncio.run(load(balancer.port, [(request, args.concurrency)],
                                             args.duration))
            finally:
                balancer.stop()
                stop_nodes(nodes)
            base = base or result.rps
            print(f"  {count} node(s): {result.rps:8.0f} req/s  p50 {result.percentile(50):6.1f} "
                  f"ms  p99 {result.percentile(99):6.1f} ms  errors {result.errors}  "
                  f"ratio to one node {result.rps / base:.2f}x")
    finally:
        backend.terminate()
        backend.join(5)


def decision_latency(nodes: list[tuple[str, Mitmdump, int, int]], holder: int, reviewer: int,
                     caller: str, lead: str, count: int) -> list[float]:
    """Seconds from each approval's POST (through node `reviewer`) to the answer of the call
    held on node `holder`."""
    held_url = f"http://127.0.0.1:{nodes[holder][2]}"
    admin = f"http://127.0.0.1:{nodes[reviewer][3]}"
    lead_auth = {"Authorization": f"Bearer {lead}"}
    times = []
    for i in range(count):
        answered: dict[str, float] = {}

        def call() -> None:
            answer = httpx.post(held_url + "/deploy", json={"service": "api", "version": str(i)},
                                headers={"Authorization": f"Bearer {caller}"}, timeout=30)
            answered["at"] = time.perf_counter()
            answered["status"] = answer.status_code

        thread = threading.Thread(target=call)
        thread.start()
        held = wait_until(lambda: httpx.get(admin + "/api/approvals", headers=lead_auth,
                                            timeout=5).json()["approvals"], interval=0.01)
        if not held:
            raise RuntimeError("no call was held")
        sent = time.perf_counter()
        approved = httpx.post(admin + f"/api/approvals/{held[0]['id']}/approve",
                              json={"reason": "bench"}, headers=lead_auth, timeout=10)
        thread.join(30)
        if approved.status_code != 200 or answered.get("status") != 202:
            raise RuntimeError(f"approval {approved.status_code}, call {answered.get('status')}")
        times.append(answered["at"] - sent)
    return times


def decisions(work: Path, issuer: DevIssuer, control: str, args: argparse.Namespace) -> None:
    demo = DemoService().start()
    caller, lead = issuer.keys.mint("bob", ["sre"], ttl=3600), issuer.keys.mint(
        "carol", ["sre-leads"], ttl=3600)
    try:
        results = {}
        (work / "alone").mkdir()
        alone = start_nodes(1, demo.url, work / "alone", issuer, None)
        try:
            results["one gateway, its own admin API"] = decision_latency(
                alone, 0, 0, caller, lead, args.decisions)
        finally:
            stop_nodes(alone)
        (work / "fleet").mkdir()
        fleet = start_nodes(2, demo.url, work / "fleet", issuer, control)
        try:
            results["fleet: held on gw-a, approved through gw-b"] = decision_latency(
                fleet, 0, 1, caller, lead, args.decisions)
        finally:
            stop_nodes(fleet)
        print(f"decision latency, approval POST to the caller's answer, {args.decisions} "
              "calls each:")
        medians = []
        for name, times in results.items():
            ms = sorted(t * 1000 for t in times)
            medians.append(statistics.median(ms))
            print(f"  {name:45} p50 {medians[-1]:6.1f} ms  p95 "
                  f"{ms[min(len(ms) - 1, int(0.95 * len(ms)))]:6.1f} ms")
        print(f"  added by the fleet (p50): {medians[1] - medians[0]:+.1f} ms")
    finally:
        demo.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--decisions", type=int, default=20)
    args = parser.parse_args()
    if reason := missing_system_deps():
        raise SystemExit(reason)
    with tempfile.TemporaryDirectory(prefix="toolgate-fleet-bench-") as tmp:
        work = Path(tmp)
        issuer = DevIssuer(keys_path=work / "issuer.json", audience=AUDIENCE).start()
        postgres = Postgres(work / "postgres").start()
        try:
            token = issuer.keys.mint("bench", ["sre"], ttl=3600)
            throughput(work, issuer, postgres.create_database("throughput"), token, args)
            decisions(work, issuer, postgres.create_database("decisions"), args)
        finally:
            postgres.close()
            issuer.stop()


if __name__ == "__main__":
    main()
