"""Load and soak: many calls through the whole chain, checked one by one and against the store.

    .venv/bin/python scripts/soak.py [--calls 10000] [--concurrency 50]     (`make soak`)

Starts the demo function service and a dev OIDC issuer in this process, then bare `mitmdump`
and `mitmdump -s addons/gateway.py` (identity required, the bundled packs, vaulted credentials
for the backend, `toolgate_durability=audit`) in reverse mode in front of the service, and
drives each with the same calls from `--concurrency` callers, each an agent with its own token
and keep-alive connection. The mix: allowed calls (`POST /echo`, whose answer echoes the
injected credential back), masked reads (REST and MCP), blocked bulk exports, calls held for
approval (a reviewer approves or denies each through the admin API while the load runs) and
calls without a token. Then it checks:

- every answer is the one its kind must get (status, error code, masking, no secret in it);
- every call is recorded exactly once: the store's call ids are the X-Toolgate-Call-Id headers
  the callers got, each once; the backend received exactly the calls that were let through,
  each once, with the vaulted credential and without the caller's token; each held call has its
  decision recorded; nothing is left pending; the hash chain verifies;
- the gateway process's memory (VmRSS) over the run: after warm-up vs at the end;
- throughput, as a ratio to bare mitmdump running the same calls in the same run.

Exit status 1 when a check fails. `tests/e2e/test_soak_e2e.py` runs a reduced version.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import random
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from toolgate.scripts.demo_service import CUSTOMERS, DemoService
from toolgate.scripts.dev_issuer import DevIssuer, DevKeys
from toolgate.scripts.harness import (
    ADMIN_LISTENING, GATEWAY_SCRIPT, mitmdump_args, open_store, start_mitmdump,
)

AUDIENCE = "toolgate-soak"
SECRET_ENV = "TOOLGATE_SOAK_BACKEND_KEY"
SECRET = "soak-backend-key-5e1f0a9c7d3b"
CREDENTIALS = f"""\
targets:
  - name: demo-backend
    match: {{host: 127.0.0.1}}
    headers:
      X-Backend-Key: "${{env:{SECRET_ENV}}}"
"""
CALL_ID = "X-Toolgate-Call-Id"
REVIEWER = ("carol", ["sre-leads"])

# kind -> share of the calls
MIX = {
    "allowed": 0.35,      # POST /echo: allowed; the echoed credential is masked on the way back
    "masked": 0.25,       # GET /customers/N: SSN and card partially masked, email hashed
    "masked_mcp": 0.10,   # MCP tools/call get_customer: the same, inside a JSON-RPC result
    "blocked": 0.15,      # GET /customers/export?limit=101: over the 100-row limit
    "held_approved": 0.05,  # POST /deploy: held, approved by the reviewer
    "held_denied": 0.05,    # POST /deploy: held, denied by the reviewer
    "no_token": 0.05,     # no Authorization: 401 identity
}
FORWARDED = {"allowed", "masked", "masked_mcp", "held_approved"}
DECIDED = {"approve": "approved", "deny": "denied"}
RAW_VALUES = [c["ssn"] for c in CUSTOMERS] + [c["email"] for c in CUSTOMERS]


def plan(calls: int, seed: int = 8) -> list[str]:
    """The kind of each call, in a fixed shuffled order."""
    kinds: list[str] = []
    for kind, share in MIX.items():
        kinds += [kind] * round(calls * share)
    kinds = (kinds + ["allowed"] * calls)[:calls]
    random.Random(seed).shuffle(kinds)
    return kinds


# -- the callers -----------------------------------------------------------------------------------

@dataclass
class Outcome:
    index: int
    kind: str
    status: int | None
    call_id: str | None
    seconds: float
    problem: str | None = None  # None: the answer is the one this kind must get


@dataclass
class Run:
    outcomes: list[Outcome]
    seconds: float
    decisions: dict[str, str] = field(default_factory=dict)  # call_id -> approved | denied
    reviewer_problems: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return len(self.outcomes) / self.seconds

    @property
    def problems(self) -> list[str]:
        found = [f"call {o.index} ({o.kind}): {o.problem}" for o in self.outcomes if o.problem]
        return found + self.reviewer_problems


def request_for(kind: str, index: int, token: str) -> tuple[str, str, dict[str, Any]]:
    """(method, path, httpx keyword arguments) of call `index`."""
    headers = {} if kind == "no_token" else {"Authorization": f"Bearer {token}"}
    customer = 1 + index % len(CUSTOMERS)
    if kind == "allowed":
        return "POST", "/echo", {"json": {"call": index, "note": "nothing sensitive"},
                                 "headers": headers}
    if kind in ("masked", "no_token"):
        return "GET", f"/customers/{customer}", {"headers": headers}
    if kind == "masked_mcp":
        rpc = {"jsonrpc": "2.0", "id": index, "method": "tools/call",
               "params": {"name": "get_customer", "arguments": {"id": customer}}}
        return "POST", "/mcp", {"json": rpc, "headers": headers}
    if kind == "blocked":
        return "GET", "/customers/export?limit=101", {"headers": headers}
    if kind in ("held_approved", "held_denied"):
        decide = "approve" if kind == "held_approved" else "deny"
        body = {"service": f"soak-{index}", "version": "1", "decide": decide}
        return "POST", "/deploy", {"json": body, "headers": headers}
    raise ValueError(kind)


def judge(kind: str, index: int, answer: httpx.Response, gateway: bool) -> str | None:
    """What is wrong with `answer` for a call of `kind`; None if it is what it must be."""
    text = answer.text
    if not gateway:  # bare mitmdump: the backend's own answers
        expected = 202 if kind.startswith("held") else 200
        return None if answer.status_code == expected else f"status {answer.status_code}"
    if not answer.headers.get(CALL_ID):
        return "no X-Toolgate-Call-Id"
    if SECRET in text:
        return "the vaulted credential reached the caller"
    try:
        body = answer.json()
    except ValueError:
        return f"status {answer.status_code}, not JSON: {text[:200]!r}"
    code = body.get("error", {}).get("code") if isinstance(body, dict) else None
    expected = {"blocked": (403, "blocked"), "held_denied": (403, "denied"),
                "no_token": (401, "identity")}
    if kind in expected:
        if (answer.status_code, code) != expected[kind]:
            return f"status {answer.status_code} {code}, expected {expected[kind]}: {text[:200]}"
        if body["error"].get("call_id") != answer.headers[CALL_ID]:
            return "error.call_id differs from X-Toolgate-Call-Id"
        return None
    status = 202 if kind == "held_approved" else 200
    if answer.status_code != status or code:
        return f"status {answer.status_code} {code}, expected {status}: {text[:200]}"
    if kind == "allowed":
        if json.loads(body.get("body") or "null") != {"call": index, "note": "nothing sensitive"}:
            return f"echo of another call: {text[:200]}"
        sent = {k.lower(): v for k, v in body.get("headers", {}).items()}
        if "authorization" in sent:
            return "the caller's token was forwarded"
        if "x-backend-key" not in sent:
            return "the backend's credential was not injected"
    elif kind in ("masked", "masked_mcp"):
        if "***-**-" not in text or any(value in text for value in RAW_VALUES):
            return f"not masked: {text[:200]}"
        if kind == "masked_mcp" and body.get("id") != index:
            return f"JSON-RPC id {body.get('id')} for call {index}"
    elif kind == "held_approved" and body.get("service") != f"soak-{index}":
        return f"answer of another deploy: {text[:200]}"
    return None


async def drive(url: str, kinds: list[str], tokens: list[str], *, gateway: bool = True,
                admin_url: str | None = None, reviewer_token: str | None = None,
                progress: Callable[[int], None] | None = None, timeout: float = 120) -> Run:
    """Run the calls `kinds` through `url` from len(tokens) callers (one token and one
    keep-alive connection each); a reviewer decides held calls through `admin_url`."""
    queue: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
    for item in enumerate(kinds):
        queue.put_nowait(item)
    outcomes: list[Outcome] = []
    run = Run(outcomes, 0.0)
    done = asyncio.Event()

    async def caller(token: str) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=timeout) as http:
            while True:
                try:
                    index, kind = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                method, path, kwargs = request_for(kind, index, token)
                started = time.perf_counter()
                try:
                    answer = await http.request(method, path, **kwargs)
                except httpx.HTTPError as exc:
                    outcomes.append(Outcome(index, kind, None, None,
                                            time.perf_counter() - started,
                                            f"{type(exc).__name__}: {exc}"))
                else:
                    outcomes.append(Outcome(
                        index, kind, answer.status_code, answer.headers.get(CALL_ID),
                        time.perf_counter() - started, judge(kind, index, answer, gateway)))
                if progress:
                    progress(len(outcomes))

    async def reviewer() -> None:
        headers = {"Authorization": f"Bearer {reviewer_token}"}
        async with httpx.AsyncClient(base_url=admin_url or "", timeout=30,
                                     headers=headers) as admin:
            while not done.is_set():
                try:
                    listed = await admin.get("/api/approvals")
                    listed.raise_for_status()
                    for held in listed.json()["approvals"]:
                        verb = held["arguments"].get("decide", "deny")
                        answer = await admin.post(f"/api/approvals/{held['id']}/{verb}",
                                                  json={"reason": f"soak: {verb}"})
                        if answer.status_code == 200:
                            run.decisions[held["call_id"]] = DECIDED[verb]
                        else:
                            run.reviewer_problems.append(
                                f"reviewer: {verb} {held['id']}: {answer.status_code} "
                                f"{answer.text[:200]}")
                except httpx.HTTPError as exc:
                    run.reviewer_problems.append(f"reviewer: {type(exc).__name__}: {exc}")
                await asyncio.sleep(0.05)

    started = time.perf_counter()
    decide = (asyncio.create_task(reviewer())
              if gateway and admin_url and any(k.startswith("held") for k in kinds) else None)
    await asyncio.gather(*(caller(token) for token in tokens))
    run.seconds = time.perf_counter() - started
    done.set()
    if decide:
        await decide
    return run


def agent_tokens(keys: DevKeys, count: int) -> list[str]:
    """One token per caller: agents who read customers (support) and deploy (sre)."""
    return [keys.mint(f"agent-{n:02d}", ["support", "sre"], ttl=6 * 3600) for n in range(count)]


# -- the checks ------------------------------------------------------------------------------------

@dataclass
class Store:
    calls: dict[str, list[tuple]]  # call_id -> [(decision, forwarded, status, error), ...]
    approvals: dict[str, list[str]]  # call_id -> [decision, ...]
    pending: int
    verified: bool
    verify_output: str


def read_store(db: Path) -> Store:
    """The store, read once the gateway that wrote it has stopped."""
    from click.testing import CliRunner

    from toolgate.scripts.cli import cli

    calls: dict[str, list[tuple]] = collections.defaultdict(list)
    approvals: dict[str, list[str]] = collections.defaultdict(list)
    with open_store(db) as con:
        for call_id, *rest in con.execute(
                "SELECT call_id, decision, forwarded, status, error FROM calls").fetchall():
            calls[call_id].append(tuple(rest))
        for call_id, decision in con.execute(
                "SELECT call_id, decision FROM approvals").fetchall():
            approvals[call_id].append(decision)
        pending = con.execute("SELECT count(*) FROM pending").fetchone()[0]
    verified = CliRunner().invoke(cli, ["sessions", "verify", "--db", str(db)])
    return Store(dict(calls), dict(approvals), pending, verified.exit_code == 0,
                 verified.output.strip())


def check(run: Run, store: Store, backend: Iterable[Any]) -> list[str]:
    """Every way in which the run, the store and the backend disagree; [] when none."""
    problems = list(run.problems)
    by_id = {o.call_id: o for o in run.outcomes if o.call_id}
    if len(by_id) != len(run.outcomes):
        problems.append(f"{len(run.outcomes) - len(by_id)} answer(s) without a call id or "
                        "with a call id given twice")
    twice = [c for c, rows in store.calls.items() if len(rows) != 1]
    if twice:
        problems.append(f"{len(twice)} call id(s) recorded more than once, e.g. {twice[:3]}")
    missing = set(by_id) - set(store.calls)
    if missing:
        problems.append(f"{len(missing)} answered call(s) not recorded, e.g. {sorted(missing)[:3]}")
    extra = set(store.calls) - set(by_id)
    if extra:
        problems.append(f"{len(extra)} recorded call(s) nobody was answered, e.g. "
                        f"{sorted(extra)[:3]}")
    received = collections.Counter()
    for request in backend:
        call_id = request.header(CALL_ID)
        received[call_id] += 1
        if request.header("Authorization") is not None:
            problems.append(f"the backend got a caller's token on {call_id}")
        if request.header("X-Backend-Key") != SECRET:
            problems.append(f"the backend did not get its credential on {call_id}")
    let_through = {c for c, o in by_id.items() if o.kind in FORWARDED}
    if set(received) != let_through:
        problems.append(
            f"the backend received {len(set(received) - let_through)} call(s) not let through "
            f"and missed {len(let_through - set(received))} that were")
    if any(n != 1 for n in received.values()):
        problems.append("the backend received a call more than once")
    for call_id, outcome in by_id.items():
        rows = store.calls.get(call_id)
        if not rows:
            continue
        _, forwarded, status, _ = rows[0]
        if forwarded != (outcome.kind in FORWARDED) or status != outcome.status:
            problems.append(f"{call_id} ({outcome.kind}) recorded as forwarded={forwarded}, "
                            f"status {status}; the caller got {outcome.status}")
        if outcome.kind.startswith("held"):
            want = "approved" if outcome.kind == "held_approved" else "denied"
            if store.approvals.get(call_id) != [want] or run.decisions.get(call_id) != want:
                problems.append(f"{call_id}: approvals {store.approvals.get(call_id)}, "
                                f"reviewer {run.decisions.get(call_id)}, expected {want}")
    if store.pending:
        problems.append(f"{store.pending} pending row(s) left")
    if not store.verified:
        problems.append(f"the hash chain does not verify: {store.verify_output}")
    return problems


def log_problems(output: str) -> list[str]:
    """Failures the gateway logged (tracebacks, its own errors) during a run that had none."""
    signs = ("Traceback", "failed on call", "the admin API failed", "writer failed")
    return [f"the gateway logged: {line.strip()[:300]}" for line in output.splitlines()
            if any(sign in line for sign in signs)]


# -- memory ----------------------------------------------------------------------------------------

def rss_kb(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    return int(found.group(1)) if found else None


class RssSampler:
    """VmRSS of a process every `interval` seconds, with how many calls were done by then."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        self.pid, self.interval = pid, interval
        self.done = 0
        self.samples: list[tuple[float, int, int]] = []  # (seconds, calls done, kB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._start = time.monotonic()

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            if (kb := rss_kb(self.pid)) is not None:
                self.samples.append((time.monotonic() - self._start, self.done, kb))
            self._stop.wait(self.interval)

    def at(self, done: int) -> int:
        """RSS when `done` calls had finished (the first sample at or after it)."""
        return next((kb for _, d, kb in self.samples if d >= done), self.samples[-1][2])

    def peak(self) -> int:
        return max(kb for _, _, kb in self.samples)


# -- orchestration ---------------------------------------------------------------------------------

def latency_ms(outcomes: list[Outcome], kind: str, p: float) -> float:
    values = sorted(o.seconds for o in outcomes if o.kind == kind)
    return values[min(len(values) - 1, int(p / 100 * len(values)))] * 1000 if values else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--warmup", type=float, default=0.2,
                        help="share of the calls counted as warm-up for the memory figure")
    parser.add_argument("--flat", type=float, default=0.10,
                        help="memory is flat if the end is within this share of post-warm-up")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="toolgate-soak-"))
    (work / "creds.yaml").write_text(CREDENTIALS)
    issuer = DevIssuer(keys_path=work / "issuer.json", audience=AUDIENCE).start()
    backend = DemoService().start()
    backend.server.received = collections.deque()  # keep all of it: every id is compared
    tokens = agent_tokens(issuer.keys, args.concurrency)
    reviewer = issuer.keys.mint(*REVIEWER, ttl=6 * 3600)
    kinds = plan(args.calls)
    common = {"flow_detail": 0, "confdir": work / "conf"}
    db = work / "soak.duckdb"
    gateway_args = mitmdump_args(backend.url, {
        **common,
        "toolgate_oidc_issuer": issuer.url,
        "toolgate_oidc_audience": AUDIENCE,
        "toolgate_db": db,
        "toolgate_durability": "audit",
        "toolgate_credentials": work / "creds.yaml",
        "toolgate_admin_listen": "127.0.0.1:0",
    }, script=GATEWAY_SCRIPT)
    cpu = {}
    try:
        print(f"{args.calls} calls, {args.concurrency} callers: "
              + ", ".join(f"{k} {kinds.count(k)}" for k in MIX), flush=True)
        proxy = start_mitmdump(mitmdump_args(backend.url, common))
        try:
            before = time.process_time()
            bare = asyncio.run(drive(proxy.url, kinds, tokens, gateway=False))
            cpu["bare"] = (time.process_time() - before) / bare.seconds
        finally:
            proxy.stop(30)
        print(f"bare mitmdump: {bare.rate:.0f} calls/s, {len(bare.problems)} errors", flush=True)
        for problem in bare.problems[:5]:  # the backend's or the load's fault, not toolgate's
            print(f"  bare: {problem} (the ratio is not comparable)", flush=True)
        backend.reset()

        gateway = start_mitmdump(gateway_args, env={SECRET_ENV: SECRET})
        try:
            admin = gateway.wait_for(ADMIN_LISTENING, 15).group(1)
            idle_kb = rss_kb(gateway.pid) or 0
            with RssSampler(gateway.pid) as sampler:
                def progress(done: int) -> None:
                    sampler.done = done

                before = time.process_time()
                run = asyncio.run(drive(gateway.url, kinds, tokens,
                                        admin_url=admin, reviewer_token=reviewer,
                                        progress=progress))
                cpu["gateway"] = (time.process_time() - before) / run.seconds
                time.sleep(1.0)  # the idle gateway after the load
        finally:
            gateway.stop(30)
        store = read_store(db)
        problems = check(run, store, backend.received) + log_problems(gateway.output)
    finally:
        backend.stop()
        issuer.stop()

    warm = int(args.calls * args.warmup)
    rss_warm, rss_end = sampler.at(warm), sampler.at(args.calls)
    growth = (rss_end - rss_warm) / rss_warm
    print(f"\ntoolgate (identity, policy, approvals, credentials, audit recording): "
          f"{run.rate:.0f} calls/s in {run.seconds:.1f} s")
    print(f"throughput ratio gateway/bare: {run.rate / bare.rate:.2f}x "
          f"(bare {bare.rate:.0f} calls/s; the same calls; held calls wait for the reviewer, "
          f"who polls every 50 ms)")
    print(f"load generator + backend CPU (this process): bare {cpu['bare']:.0%}, "
          f"gateway {cpu['gateway']:.0%} of one core")
    print("latency p50/p99 ms: " + ", ".join(
        f"{k} {latency_ms(run.outcomes, k, 50):.0f}/{latency_ms(run.outcomes, k, 99):.0f}"
        for k in MIX))
    print(f"\nmitmdump VmRSS (MiB): at start {idle_kb / 1024:.1f}")
    for share in (0.1, 0.2, 0.4, 0.6, 0.8, 1.0):
        done = int(args.calls * share)
        print(f"  after {done:>6} calls: {sampler.at(done) / 1024:7.1f}")
    print(f"  peak {sampler.peak() / 1024:.1f}, idle after the load "
          f"{sampler.samples[-1][2] / 1024:.1f}")
    flat = abs(growth) <= args.flat
    print(f"memory after warm-up ({warm} calls) {rss_warm / 1024:.1f} MiB -> end "
          f"{rss_end / 1024:.1f} MiB: {growth:+.1%} ({'flat' if flat else 'NOT flat'}, "
          f"threshold {args.flat:.0%})")
    recorded = sum(len(rows) for rows in store.calls.values())
    print(f"\nrecorded {recorded} calls for {len(run.outcomes)} answers; backend received "
          f"{len(backend.received)}; approvals {sum(map(len, store.approvals.values()))}; "
          f"{store.verify_output}")
    if problems:
        print(f"\n{len(problems)} problem(s) (the store and logs are kept in {work}):")
        for problem in problems[:50]:
            print("  " + problem)
        return 1
    print("zero unexpected errors; every call recorded exactly once")
    shutil.rmtree(work, ignore_errors=True)
    return 0 if flat else 1


if __name__ == "__main__":
    sys.exit(main())
