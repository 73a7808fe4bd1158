"""Throughput of the gateway against bare mitmdump, in one run.

    .venv/bin/python scripts/bench.py [--duration 8] [--concurrency 32]
        [--bodies 1k-clean,1k-customers,256k-clean,256k-customers,mixed] [--durability both]
        [--compare NAME=VALUE ...] [--otlp-sink]

Starts a fast loopback backend (its own process) that answers the four bodies of
scripts/bench_bodies.py (a clean inventory listing and a customer list, 1 KB and 256 KB), then
bare `mitmdump` and `mitmdump -s addons/gateway.py` (identity with a dev issuer, the bundled
packs, masking) under each durability (`async`, `audit`: one gateway process each, a fresh store
each) in reverse mode in front of it, and drives each with an asyncio load generator on
keep-alive connections, one body at a time, the setups in turn (so that all see the same moment
of the machine). Prints per body requests/s, p50 and p99 latency, the proxy's CPU time per call
(all its threads; less noisy than requests/s when something else runs on the machine), the
ratio gateway/bare (`ratio`: of requests/s; `cpu ratio`: bare's CPU per call over the
gateway's), and for `async` the acceptance targets of issue 14. How busy the load
generator itself was is printed too: it must not be the bottleneck.

`--compare NAME=VALUE` (repeatable) adds a `gateway async` setup with that option set (e.g.
`--compare toolgate_metrics=false`), measured in the same run as the others and printed with
its ratio against the plain `gateway async` setup: what that option costs or saves. On a busy
machine requests/s vary by 10-30% from one measurement to the next: `--rounds N` measures every
setup N times (each round in a shuffled order, each measurement once all proxies are idle),
the tables add the rounds up, and the comparison takes the median of the rounds' paired
ratios; issue 15's figures (audit against async) also get a 95% interval for each median, from
the rounds' order statistics (the sign test's: no assumption on how the noise is distributed):
a target inside the interval is missed or met within the noise of the machine.
`--otlp-sink` starts a loopback OTLP/HTTP trace sink in its own process (200 to every POST)
and puts its URL where a `--compare` value says `{otlp}`
(`--compare toolgate_otlp_endpoint={otlp}/v1/traces`); it prints how much it received.

`mixed`: most connections make 1 KB clean calls while a few (--large) keep 256 KB customer calls
in flight; the p99 of the small calls says whether a large body freezes everyone else.
Throughput counts the calls completed inside the measured window (after a 1 s warm-up).
mitmproxy runs one event loop on one core: the ratio is what toolgate costs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from statistics import median

from toolgate.scripts.bench_bodies import BODY_NAMES, build_bodies
from toolgate.scripts.dev_issuer import DevIssuer
from toolgate.scripts.harness import (
    GATEWAY_SCRIPT, ROOT, FastBackend, Mitmdump, mitmdump_args, start_mitmdump,
)

AUDIENCE = "toolgate-bench"
WARM_UP = 1.0
BODIES = build_bodies()
MIXED = "mixed"
MIXED_SMALL, MIXED_LARGE = "1k-clean", "256k-customers"
DURABILITIES = ("async", "audit")

# Issue 14's acceptance: gateway (async, 32 connections) / bare mitmdump, in the same run.
TARGETS = {"1k-clean": 0.7, "1k-customers": 0.6, "256k-clean": 0.35, "256k-customers": 0.15}
# Issue 15's: audit durability (the journal) against async, in the same run: throughput under
# load (with one caller, throughput is one over the latency: the p50 target holds it), and the
# p50 latency it adds (3 ms at 1 caller, 5 ms at 20: taken as up to 5 ms from 2 callers on).
AUDIT_RATIO = 0.9


def audit_p50_limit(concurrency: int) -> float:
    return 3.0 if concurrency <= 1 else 5.0


def serve(port_file: str) -> None:
    """The backend, in a process of its own (so it never competes with the load generator)."""
    FastBackend({body.path.encode(): body.content for body in BODIES.values()}).serve(Path(port_file))


class _Sink(BaseHTTPRequestHandler):
    """An OTLP/HTTP collector that keeps nothing: 200 and an empty (protobuf) answer to every
    POST; `GET /stats` says how many POSTs and bytes it took."""

    protocol_version = "HTTP/1.1"  # keep-alive, as exporters expect
    posts = received = 0

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        type(self).posts += 1
        type(self).received += length
        self._answer(b"", "application/x-protobuf")

    def do_GET(self) -> None:  # noqa: N802
        stats = {"posts": type(self).posts, "bytes": type(self).received}
        self._answer(json.dumps(stats).encode(), "application/json")

    def _answer(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def otlp_sink(port_file: str) -> None:
    """The trace sink, in a process of its own; its port is written to `port_file`."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    Path(port_file).write_text(str(server.server_address[1]))
    server.serve_forever()


# -- the load generator --------------------------------------------------------------------------

@dataclass
class Result:
    """The calls of one kind completed inside the measured window."""

    seconds: float
    requests: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    cpu: float = 0.0  # share of one core the load generator used in the window
    proxy_cpu: float = float("nan")  # CPU seconds the proxy process used in the window

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_per_call(self) -> float:
        """Proxy CPU milliseconds per completed call."""
        return self.proxy_cpu / max(1, self.requests) * 1000

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000


async def _read_answer(reader: asyncio.StreamReader) -> int:
    """Read one HTTP/1.1 answer; its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
    if length:
        await reader.readexactly(int(length.group(1)))
    else:  # chunked: size lines and their chunks, up to the last (empty) chunk and its trailer
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            await reader.readexactly(size + 2)
        while await reader.readuntil(b"\r\n") != b"\r\n":
            pass
    return status


async def _client(port: int, request: bytes, start: float, stop: float, out: Result) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while (sent := time.perf_counter()) < stop:
            writer.write(request)
            status = await _read_answer(reader)
            done = time.perf_counter()
            if start <= done <= stop:
                out.requests += 1
                out.errors += status != 200
                out.latencies.append(done - sent)
    finally:
        writer.close()


def request_for(path: str, token: str | None) -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return f"GET {path} HTTP/1.1\r\nHost: bench\r\n{auth}\r\n".encode()


async def load(port: int, groups: list[tuple[bytes, int]], seconds: float,
               proxy_pid: int | None = None) -> list[Result]:
    """Drive the proxy with `connections` keep-alive connections per (request, connections)
    group for a warm-up and `seconds`; one Result per group (the proxy CPU and the load
    generator's share of a core are the window's, the same in every Result)."""
    now = time.perf_counter()
    start, stop = now + WARM_UP, now + WARM_UP + seconds
    results = [Result(seconds) for _ in groups]
    clients = asyncio.gather(*(
        _client(port, request, start, stop, result)
        for (request, connections), result in zip(groups, results) for _ in range(connections)
    ))
    await asyncio.sleep(max(0.0, start - time.perf_counter()))
    cpu, proxy_cpu = time.process_time(), process_cpu(proxy_pid)
    await asyncio.sleep(max(0.0, stop - time.perf_counter()))
    cpu, proxy_cpu = time.process_time() - cpu, process_cpu(proxy_pid) - proxy_cpu
    await clients
    for result in results:
        result.cpu, result.proxy_cpu = cpu / seconds, proxy_cpu
    return results


def process_cpu(pid: int | None) -> float:
    """User + system CPU seconds of process `pid` so far (Linux /proc), NaN elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError, TypeError):
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- orchestration -------------------------------------------------------------------------------

def parse_bodies(values: list[str]) -> list[str]:
    names = [name for value in values for name in value.split(",") if name]
    known = (*BODY_NAMES, MIXED)
    for name in names:
        if name not in known:
            raise SystemExit(f"unknown body {name!r}: choose from {', '.join(known)}")
    return [name for name in known if name in names]


def parse_compare(values: list[str], with_async: bool, sink: bool) -> list[tuple[str, str, str]]:
    """`--compare NAME=VALUE` values as (option, value, the setup's name)."""
    pairs = []
    for value in values:
        name, eq, setting = value.partition("=")
        if not eq or not name.strip():
            raise SystemExit(f"--compare {value!r}: expected NAME=VALUE, a mitmproxy option")
        if "{otlp}" in setting and not sink:
            raise SystemExit(f"--compare {value!r} names {{otlp}}: add --otlp-sink")
        pairs.append((name.strip(), setting, f"gateway async {name.strip()}={setting}"))
    if pairs and not with_async:
        raise SystemExit("--compare measures against gateway async: use --durability async or both")
    return pairs


def spawn(function: str, port_file: Path) -> subprocess.Popen:
    """Run `function(port_file)` of this module in a process of its own."""
    code = f"from toolgate.scripts.bench import {function}; {function}({str(port_file)!r})"
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)


def port_of(port_file: Path, timeout: float = 30) -> str:
    """The port a spawned server wrote to `port_file`, once it has."""
    deadline = time.monotonic() + timeout
    while not port_file.exists() or not port_file.read_text():
        if time.monotonic() > deadline:
            raise SystemExit(f"{port_file.name}: the server did not start")
        time.sleep(0.05)
    return port_file.read_text()


@dataclass
class Setup:
    name: str
    proxy: Mitmdump
    token: str | None


def start_setups(upstream: str, work: Path, issuer: DevIssuer, token: str,
                 durabilities: tuple[str, ...],
                 compare: list[tuple[str, str, str]] = ()) -> list[Setup]:
    """Bare mitmdump, a gateway per durability, and after `gateway async` one more `async`
    gateway per (option, value, name) of `compare`."""
    common = {"flow_detail": 0, "confdir": work / "conf"}
    setups = [Setup("bare mitmdump", start_mitmdump(mitmdump_args(upstream, common)), None)]
    gateways = [(durability, None) for durability in durabilities]
    if compare:
        at = durabilities.index("async") + 1
        gateways[at:at] = [("async", option) for option in compare]
    try:
        for n, (durability, option) in enumerate(gateways):
            args = mitmdump_args(upstream, {
                **common,
                "toolgate_oidc_issuer": issuer.url,
                "toolgate_oidc_audience": AUDIENCE,
                "toolgate_db": work / f"bench-{n}-{durability}.duckdb",
                "toolgate_durability": durability,
                "toolgate_admin_listen": "127.0.0.1:0",
                **({option[0]: option[1]} if option else {}),
            }, script=GATEWAY_SCRIPT)
            name = option[2] if option else f"gateway {durability}"
            setups.append(Setup(name, start_mitmdump(args), token))
    except BaseException:
        for setup in setups:
            setup.proxy.stop()
        raise
    return setups


def measure(setups: list[Setup], names: list[str], args: argparse.Namespace) -> dict:
    """Each (setup, body) measured `args.rounds` times: per body, round after round, every
    setup in turn, in an order shuffled for each round (seeded: the same for the same
    arguments), so that none is always first or always after another; each measurement
    starts once every proxy is idle (a gateway may still be storing its last calls)."""
    order = random.Random(f"{args.rounds}/{','.join(names)}")
    results: dict[tuple[str, str], list[list[Result]]] = {}
    for name in names:
        for turn in range(args.rounds):
            for setup in order.sample(setups, len(setups)) if turn else setups:
                if name == MIXED:
                    large = min(args.large, args.concurrency - 1)
                    groups = [(request_for(BODIES[MIXED_SMALL].path, setup.token), args.concurrency - large),
                              (request_for(BODIES[MIXED_LARGE].path, setup.token), large)]
                else:
                    groups = [(request_for(BODIES[name].path, setup.token), args.concurrency)]
                settle([s.proxy.pid for s in setups])
                results.setdefault((setup.name, name), []).append(asyncio.run(
                    load(setup.proxy.port, groups, args.duration, setup.proxy.pid)))
    return results


def settle(pids: list[int], idle: float = 0.1, within: float = 5.0) -> None:
    """Wait (at most `within` seconds) until processes `pids` together use less than `idle`
    of a core over a quarter of a second (idle proxies' timers use a few percent; a gateway
    still storing its last calls, most of a core)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        before = sum(process_cpu(pid) for pid in pids)
        time.sleep(0.25)
        if not sum(process_cpu(pid) for pid in pids) - before >= idle * 0.25:
            return


def merged(rounds: list[list[Result]]) -> list[Result]:
    """One Result per group out of several rounds' (their calls and times added up)."""
    out = []
    for group in zip(*rounds):
        out.append(Result(
            sum(r.seconds for r in group), sum(r.requests for r in group),
            sum(r.errors for r in group), [t for r in group for t in r.latencies],
            sum(r.cpu for r in group) / len(group), sum(r.proxy_cpu for r in group)))
    return out


def paired(rounds: list[list[Result]], base: list[list[Result]]) -> tuple[list[float], list[float]]:
    """Per round, requests/s and proxy-CPU-per-call ratios of a setup to `base`, in order."""
    rps = sorted(r[0].rps / b[0].rps for r, b in zip(rounds, base) if b[0].rps)
    cpu = sorted(b[0].cpu_per_call / r[0].cpu_per_call
                 for r, b in zip(rounds, base) if r[0].requests)
    return rps, cpu


def audit_pairs(audit: list[list[Result]], fast: list[list[Result]]) -> tuple[list[float], list[float]]:
    """Per round, audit's requests/s over async's and the p50 (ms) audit adds, each sorted."""
    ratios = sorted(a[0].rps / f[0].rps for a, f in zip(audit, fast) if f[0].rps)
    adds = sorted(a[0].percentile(50) - f[0].percentile(50) for a, f in zip(audit, fast))
    return ratios, adds


def median_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """A distribution-free confidence interval for the median of `values` (sorted): the order
    statistics (k-th smallest, k-th largest) with the largest k whose coverage, 1 - 2 P(B < k)
    for B ~ Binomial(n, 1/2), is at least `confidence`; None when n is too small for any (five
    rounds or fewer at 95%). Whether a target missed by the median is missed beyond the noise of
    the machine: 12 rounds give the 3rd smallest to the 3rd largest (96.1%)."""
    n = len(values)
    below, k = 0.0, 0  # P(B < k + 1), accumulated
    while True:
        below += math.comb(n, k) / 2 ** n
        if 1 - 2 * below < confidence:
            break
        k += 1
    if k == 0:
        return None
    return values[k - 1], values[n - k]


def report(setups: list[Setup], names: list[str], rounds: dict, args: argparse.Namespace) -> bool:
    """Print the tables (several rounds' calls and times added up); whether every answer was
    a 200."""
    results = {key: merged(value) for key, value in rounds.items()}
    print(f"\n{args.concurrency} keep-alive connections, {args.duration:g} s per measurement after "
          f"{WARM_UP:g} s warm-up" + (f", {args.rounds} rounds" if args.rounds > 1 else ""))
    bare = setups[0].name
    w = max(16, *(len(setup.name) + 1 for setup in setups))
    print(f"{'':{w}}{'body':>16}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>7}"
          f"{'loadgen':>9}{'cpu/call':>12}{'ratio':>8}{'cpu ratio':>10}")
    for name in (n for n in names if n != MIXED):
        for setup in setups:
            result, base = results[setup.name, name][0], results[bare, name][0]
            ratio = result.rps / base.rps if base.rps else float("nan")
            cpu_ratio = base.cpu_per_call / result.cpu_per_call if result.requests else float("nan")
            print(f"{setup.name:{w}}{name:>16}{result.rps:9.0f}{result.percentile(50):9.1f}"
                  f"{result.percentile(99):9.1f}{result.errors:7d}{result.cpu:9.0%}"
                  f"{result.cpu_per_call:9.3f} ms{ratio:7.3f}x{cpu_ratio:9.3f}x")
    if MIXED in names:
        large = min(args.large, args.concurrency - 1)
        print(f"\nmixed: {args.concurrency - large} connections of {MIXED_SMALL} calls while "
              f"{large} keep {MIXED_LARGE} calls in flight")
        print(f"{'':{w}}{'small req/s':>12}{'small p50':>11}{'small p99':>11}{'alone p99':>11}"
              f"{'large req/s':>13}{'large p99':>11}{'errors':>7}")
        for setup in setups:
            small, big = results[setup.name, MIXED]
            alone = results.get((setup.name, MIXED_SMALL))
            alone_p99 = f"{alone[0].percentile(99):8.1f} ms" if alone else f"{'-':>11}"
            print(f"{setup.name:{w}}{small.rps:12.0f}{small.percentile(50):8.1f} ms"
                  f"{small.percentile(99):8.1f} ms{alone_p99}{big.rps:13.1f}"
                  f"{big.percentile(99):8.0f} ms{small.errors + big.errors:7d}")
    if any(setup.name == "gateway async" for setup in setups):
        print("\nacceptance (issue 14: gateway async / bare mitmdump, req/s, same run)")
        for name in (n for n in names if n in TARGETS):
            result, base = results["gateway async", name][0], results[bare, name][0]
            ratio = result.rps / base.rps if base.rps else float("nan")
            verdict = "ok" if ratio >= TARGETS[name] else "MISSED"
            print(f"  {name:16} {ratio:6.3f}x  (target >= {TARGETS[name]}x)  {verdict}")
    if {"gateway async", "gateway audit"} <= {setup.name for setup in setups}:
        print(f"\nacceptance (issue 15: audit / async, same run, {args.concurrency} connections)")
        for name in (n for n in names if n != MIXED):
            audit, fast = results["gateway audit", name][0], results["gateway async", name][0]
            ratio = audit.rps / fast.rps if fast.rps else float("nan")
            added = audit.percentile(50) - fast.percentile(50)
            limit = audit_p50_limit(args.concurrency)
            how = ""
            if args.rounds > 1:  # the rounds' paired figures: the machine's drift cancels out
                ratios, adds = audit_pairs(rounds["gateway audit", name], rounds["gateway async", name])
                ratio, added = median(ratios), median(adds)
                how = (f"  (median of {len(adds)} rounds; ranges {ratios[0]:.3f}-{ratios[-1]:.3f}x, "
                       f"{adds[0]:+.1f} to {adds[-1]:+.1f} ms")
                ratio_ci, added_ci = median_interval(ratios), median_interval(adds)
                if ratio_ci and added_ci:
                    how += (f"; 95% intervals of the medians {ratio_ci[0]:.3f}-{ratio_ci[1]:.3f}x, "
                            f"{added_ci[0]:+.1f} to {added_ci[1]:+.1f} ms")
                how += ")"
            if args.concurrency > 1:
                verdict = f"(target >= {AUDIT_RATIO}x) {'ok' if ratio >= AUDIT_RATIO else 'MISSED'}"
            else:  # one caller waits for every call: its throughput is one over its latency
                verdict = "(one caller: 1/latency, held to the p50 target)"
            print(f"  {name:16} throughput {ratio:6.3f}x {verdict}; p50 {added:+.1f} ms "
                  f"(target <= {limit:g} ms) {'ok' if added <= limit else 'MISSED'}{how}")
    compared = [setup.name for setup in setups if setup.name.startswith("gateway async ")]
    if compared:
        print("\ncompared with gateway async, same run (above 1: faster, or less proxy CPU per "
              "call, than gateway async; the median of the rounds' ratios, and their range)")
        print(f"  {'':{w}}{'body':>16}{'req/s':>9}{'cpu/call':>10}  range req/s, cpu/call")
        for name in (n for n in names if n != MIXED):
            for setup in compared:
                rps, cpu = paired(rounds[setup, name], rounds["gateway async", name])
                if not (rps and cpu):
                    continue  # nothing was answered
                print(f"  {setup:{w}}{name:>16}{median(rps):8.3f}x{median(cpu):9.3f}x  "
                      f"{rps[0]:.3f}-{rps[-1]:.3f}x, {cpu[0]:.3f}-{cpu[-1]:.3f}x")
    saturated = [key for key, group in results.items() if group[0].cpu > 0.9]
    if saturated:
        print(f"the load generator used over 90% of a core in {len(saturated)} measurement(s): "
              "those figures may be its limit, not the proxy's", file=sys.stderr)
    return not any(result.errors for group in results.values() for result in group)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per measurement")
    parser.add_argument("--concurrency", type=int, default=32, help="keep-alive connections")
    parser.add_argument("--bodies", nargs="+", default=[",".join((*BODY_NAMES, MIXED))],
                        help=f"a subset of {', '.join((*BODY_NAMES, MIXED))} (commas or spaces)")
    parser.add_argument("--durability", choices=[*DURABILITIES, "both"], default="both",
                        help="the gateways' toolgate_durability (audit waits for each record's journal fsync)")
    parser.add_argument("--large", type=int, default=4,
                        help="connections with large calls in the mixed measurement")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure every setup this many times, in turn (figures add them up)")
    parser.add_argument("--compare", action="append", default=[], metavar="NAME=VALUE",
                        help="also measure a gateway async setup with this option set "
                             "(repeatable); {otlp} in VALUE is the --otlp-sink's URL")
    parser.add_argument("--otlp-sink", action="store_true",
                        help="start a loopback OTLP/HTTP trace sink for --compare values")
    args = parser.parse_args()
    names = parse_bodies(args.bodies)
    durabilities = DURABILITIES if args.durability == "both" else (args.durability,)
    compare = parse_compare(args.compare, "async" in durabilities, args.otlp_sink)
    if args.rounds < 1:
        raise SystemExit("--rounds must be 1 or more")

    work = Path(tempfile.mkdtemp(prefix="toolgate-bench-"))
    backend = spawn("serve", work / "backend.port")
    sink = spawn("otlp_sink", work / "sink.port") if args.otlp_sink else None
    issuer = DevIssuer(keys_path=work / "issuer.json", audience=AUDIENCE).start()
    token = issuer.keys.mint("bench", ["support"], ttl=3600)
    setups: list[Setup] = []
    try:
        upstream = f"http://127.0.0.1:{port_of(work / 'backend.port')}"
        if sink is not None:
            otlp = f"http://127.0.0.1:{port_of(work / 'sink.port')}"
            compare = [(name, value.replace("{otlp}", otlp), shown)
                       for name, value, shown in compare]
        setups = start_setups(upstream, work, issuer, token, durabilities, compare)
        results = measure(setups, names, args)
        if sink is not None:
            stats = json.loads(urllib.request.urlopen(f"{otlp}/stats", timeout=10).read())
            print(f"\nOTLP sink at {otlp}: {stats['posts']} POSTs, {stats['bytes']} bytes")
    finally:
        for setup in setups:
            setup.proxy.stop()
        issuer.stop()
        for process in (backend, sink):
            if process is not None:
                process.terminate()
                process.wait(10)

    if not report(setups, names, results, args):
        print("errors were answered: the figures are not comparable", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
