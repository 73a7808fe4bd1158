"""Where a call's time goes in the gateway, measured inside a real mitmdump under load.

    .venv/bin/python scripts/profile_call.py [--body 1k-clean] [--duration 8] [--concurrency 32]
        [--durability async] [--top 25] [--set NAME=VALUE ...] [--otlp-sink]

Runs bare `mitmdump` and the gateway (identity with a dev issuer, the bundled packs) in front of
the bench backend (scripts/bench_bodies.py's bodies), drives each with bench.py's load generator,
and reports per call:

- the CPU of the proxy's main thread (mitmproxy's event loop: everything but the store) and of
  its other threads (the store's writer, DuckDB's own), bare and gateway, from /proc;
- every toolgate hook (`Policy.request`, `Identity.requestheaders`, ...): its CPU time per call
  measured around the hook itself (an async hook's steps only, not the time it is suspended);
  what is left of the main thread's extra time beyond bare mitmdump is mitmproxy's own work for
  the chain (dispatching hooks, the headers and bodies the gateway sets) and the garbage
  collector;
- then, in a second window each, cProfile of both main threads (its overhead inflates small
  Python functions: read it for where inside a hook the time goes and how often things are
  called, not for absolute figures): toolgate's functions by cumulative time, and the
  functions whose own time per call grew most from bare mitmdump to the gateway.

`--set NAME=VALUE` (repeatable) sets a gateway option, to see what one costs and where
(`--otlp-sink --set 'toolgate_otlp_endpoint={otlp}/v1/traces'`: bench.py's trace sink, in a
process of its own; the exporter's thread is among the "other threads").

This file is also the mitmdump script (`-s scripts/profile_call.py`) that does the measuring
inside the proxy: SIGUSR1 starts a window (with cProfile when the file TOOLGATE_PROFILE_OUT with
the suffix `.mode` says `cprofile-wall` or `cprofile-cpu`), SIGUSR2 ends it and writes the
figures to TOOLGATE_PROFILE_OUT (JSON; cProfile's to the same path + `.pstats`). The hook timers
cost about 1 us per hook (a clock read before and after).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import functools
import gc
import inspect
import json
import os
import pstats
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FLOW_HOOKS = ("requestheaders", "request", "responseheaders", "response", "error")
OUT_ENV = "TOOLGATE_PROFILE_OUT"


# -- inside mitmdump: the measuring addon ----------------------------------------------------------

class _Timed:
    """Awaits `coro`, adding the CPU time of each of its steps (not of its suspensions, nor
    the garbage collections inside them) to `totals[key]`."""

    def __init__(self, coro, totals: dict[str, float], key: str, timer: "HookTimer") -> None:
        self.coro, self.totals, self.key, self.timer = coro, totals, key, timer

    def _add(self, started: float, collected: float) -> None:
        self.totals[self.key] += time.thread_time() - started - (self.timer.gc_time - collected)

    def __await__(self):
        coro, value, error = self.coro, None, None
        while True:
            started, collected = time.thread_time(), self.timer.gc_time
            try:
                step = coro.throw(error) if error is not None else coro.send(value)
            except StopIteration as stop:
                self._add(started, collected)
                return stop.value
            except BaseException:
                self._add(started, collected)
                raise
            self._add(started, collected)
            try:
                value, error = (yield step), None
            except BaseException as exc:  # noqa: BLE001 - handed to the coroutine
                value, error = None, exc


class HookTimer:
    """Wraps every flow hook of toolgate's addons (at `running`) with a timer; SIGUSR1 resets
    the figures (and starts cProfile if asked), SIGUSR2 writes them."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)
        self.calls = 0
        self.profiler: cProfile.Profile | None = None
        self.started = (0.0, {})
        self.out = Path(os.environ.get(OUT_ENV, "profile.json"))
        self.writer: dict[str, float] = defaultdict(float)
        self.gc_time, self.gc_count, self._gc_started = 0.0, 0, None
        self.gc_generations: dict[str, float] = defaultdict(float)

    def running(self) -> None:
        from mitmproxy import ctx
        from mitmproxy.addonmanager import traverse

        for addon in traverse(ctx.master.addons.chain):
            if type(addon).__module__.startswith("toolgate.") and addon is not self:
                for name in FLOW_HOOKS:
                    hook = getattr(addon, name, None)
                    if callable(hook):
                        setattr(addon, name, self._wrap(f"{type(addon).__name__}.{name}", hook))
        self._time_writer()
        gc.callbacks.append(self._gc)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR1, self.start)
        loop.add_signal_handler(signal.SIGUSR2, self.stop)

    def _wrap(self, key: str, hook):
        totals, counts = self.totals, self.counts
        if inspect.iscoroutinefunction(hook):
            @functools.wraps(hook)
            async def timed_async(flow):
                counts[key] += 1
                return await _Timed(hook(flow), totals, key, self)
            return timed_async

        @functools.wraps(hook)
        def timed(flow):
            counts[key] += 1
            started, collected = time.thread_time(), self.gc_time
            try:
                return hook(flow)
            finally:  # a collection that ran inside the hook is the collector's, not the hook's
                totals[key] += time.thread_time() - started - (self.gc_time - collected)
        return timed

    def _time_writer(self) -> None:
        """The store's threads: the journal's (audit: each batch of records made, appended and
        fsynced), and DuckDB's (whole commits, the Python work of building each call's row: its
        values, the chain hash, its findings; and the Arrow tables; the rest of a commit is
        DuckDB's statements and the chain head file)."""
        try:
            from toolgate.sessions import writer
        except ImportError:
            return
        for owner, name, key in ((writer.Writer, "_commit", "writer: whole commits"),
                                 (writer.Writer, "_add_call", "writer: a call's row and findings"),
                                 (writer.Writer, "_accept", "writer: journaling (audit), batches"),
                                 (writer._Entry, "encode", "writer: journal records made"),
                                 (writer._Columns, "table", "writer: Arrow tables")):
            original = getattr(owner, name)
            if isinstance(original, staticmethod):
                original = original.__func__
            setattr(owner, name, self._timed_function(key, original))

    def _timed_function(self, key: str, function):
        totals = self.writer

        @functools.wraps(function)
        def timed(*args, **kwargs):
            started = time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                totals[key] += time.thread_time() - started
        return timed

    def _gc(self, phase: str, info: dict) -> None:
        """Garbage collections of the main thread (callbacks run in the collecting thread)."""
        if threading.get_ident() != threading.main_thread().ident:
            return
        if phase == "start":
            self._gc_started = time.thread_time()
        elif self._gc_started is not None:
            spent = time.thread_time() - self._gc_started
            self.gc_time += spent
            self.gc_count += 1
            self.gc_generations[str(info.get("generation"))] += spent
            self._gc_started = None

    def response(self, flow) -> None:
        self.calls += 1

    def start(self) -> None:
        self.totals.clear()
        self.counts.clear()
        self.writer.clear()
        self.gc_generations.clear()
        self.calls, self.gc_time, self.gc_count = 0, 0.0, 0
        mode = self.out.with_suffix(".mode")
        mode = mode.read_text().strip() if mode.exists() else "timers"
        if mode.startswith("cprofile"):
            # cpu: the thread's CPU time, blind to the waits of a busy machine but slow (a
            # system call per event); wall: cProfile's own clock
            self.profiler = cProfile.Profile(time.thread_time) if mode == "cprofile-cpu" \
                else cProfile.Profile()
            self.profiler.enable()
        self.started = (time.perf_counter(), _thread_cpu(os.getpid()))

    def stop(self) -> None:
        if self.profiler is not None:
            self.profiler.disable()
            self.profiler.dump_stats(str(self.out) + ".pstats")
            self.profiler = None
        wall, threads = self.started
        now = _thread_cpu(os.getpid())
        main = os.getpid()
        data = {
            "seconds": time.perf_counter() - wall,
            "calls": self.calls,
            "main_cpu": now.get(main, 0.0) - threads.get(main, 0.0),
            "other_cpu": sum(cpu - threads.get(tid, 0.0) for tid, cpu in now.items() if tid != main),
            "hooks": dict(self.totals),
            "counts": dict(self.counts),
            "writer": dict(self.writer),
            "gc": self.gc_time,
            "gc_count": self.gc_count,
            "gc_generations": dict(self.gc_generations),
        }
        tmp = self.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(self.out)


def _thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of each thread of `pid` (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        found[int(task.name)] = (int(fields[11]) + int(fields[12])) / ticks
    return found


addons = [HookTimer()] if __name__ != "__main__" else []


# -- the driver --------------------------------------------------------------------------------

def window(proxy, token: str | None, path: str, args: argparse.Namespace, out: Path,
           mode: str = "timers") -> dict[str, Any]:
    """One measured window: warm up, SIGUSR1, load for `duration`, SIGUSR2, read the figures."""
    from toolgate.scripts.bench import load, request_for

    out.with_suffix(".mode").write_text(mode)
    out.unlink(missing_ok=True)

    async def run() -> None:
        async def signal_window() -> None:
            await asyncio.sleep(1.0)  # load()'s warm-up
            os.kill(proxy.pid, signal.SIGUSR1)
            await asyncio.sleep(args.duration)
            os.kill(proxy.pid, signal.SIGUSR2)
        await asyncio.gather(signal_window(), load(
            proxy.port, [(request_for(path, token), args.concurrency)], args.duration, proxy.pid))

    asyncio.run(run())
    deadline = time.monotonic() + 30
    while not out.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the proxy wrote no figures:\n{proxy.output[-3000:]}")
        time.sleep(0.05)
    return json.loads(out.read_text())


def main() -> None:
    from toolgate.scripts.bench import AUDIENCE, BODIES, port_of, serve, spawn
    from toolgate.scripts.dev_issuer import DevIssuer
    from toolgate.scripts.harness import GATEWAY_SCRIPT, mitmdump_args, start_mitmdump

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--body", default="1k-clean", choices=sorted(BODIES))
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--durability", default="async", choices=["async", "audit"])
    parser.add_argument("--top", type=int, default=25, help="cProfile rows to print (0: no cProfile)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="cProfile's clock: wall (less overhead; a busy machine's waits land on "
                             "system calls) or the thread's CPU time (slower, blind to waits)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a gateway option (repeatable); {otlp} in VALUE is the sink's URL")
    parser.add_argument("--otlp-sink", action="store_true",
                        help="start bench.py's loopback OTLP/HTTP trace sink for --set values")
    args = parser.parse_args()
    settings = []
    for value in args.set:
        name, sep, setting = value.partition("=")
        if not sep or not name.startswith("toolgate_"):
            raise SystemExit(f"--set {value!r}: expected NAME=VALUE, a toolgate option")
        if "{otlp}" in setting and not args.otlp_sink:
            raise SystemExit(f"--set {value!r} names {{otlp}}: add --otlp-sink")
        settings.append((name, setting))

    work = Path(tempfile.mkdtemp(prefix="toolgate-profile-"))
    port_file = work / "backend.port"
    backend = subprocess.Popen([sys.executable, "-c", "from toolgate.scripts.bench import serve; "
                                f"serve({str(port_file)!r})"], cwd=ROOT)
    sink = spawn("otlp_sink", work / "sink.port") if args.otlp_sink else None
    issuer = DevIssuer(keys_path=work / "issuer.json", audience=AUDIENCE).start()
    token = issuer.keys.mint("bench", ["support"], ttl=3600)
    path = BODIES[args.body].path
    here = Path(__file__).resolve()
    figures: dict[str, dict[str, Any]] = {}
    proxies = []
    profiled: dict[str, dict[str, Any]] = {}
    try:
        while not port_file.exists() or not port_file.read_text():
            time.sleep(0.05)
        upstream = f"http://127.0.0.1:{port_file.read_text()}"
        if sink is not None:
            otlp = f"http://127.0.0.1:{port_of(work / 'sink.port')}"
            settings = [(name, value.replace("{otlp}", otlp)) for name, value in settings]
        common = {"flow_detail": 0, "confdir": work / "conf"}
        bare_out, gw_out = work / "bare.json", work / "gateway.json"
        bare = start_mitmdump(mitmdump_args(upstream, common, script=here),
                              env={OUT_ENV: str(bare_out)})
        proxies.append(bare)
        gateway = start_mitmdump(mitmdump_args(upstream, {
            **common,
            "toolgate_oidc_issuer": issuer.url,
            "toolgate_oidc_audience": AUDIENCE,
            "toolgate_db": work / "profile.duckdb",
            "toolgate_durability": args.durability,
            "toolgate_admin_listen": "127.0.0.1:0",
            **dict(settings),
        }, script=GATEWAY_SCRIPT, extra=["-s", str(here)]), env={OUT_ENV: str(gw_out)})
        proxies.append(gateway)
        figures["bare"] = window(bare, None, path, args, bare_out)
        figures["gateway"] = window(gateway, token, path, args, gw_out)
        if args.top:
            mode = f"cprofile-{args.clock}"
            profiled = {"bare": window(bare, None, path, args, bare_out, mode=mode),
                        "gateway": window(gateway, token, path, args, gw_out, mode=mode)}
    finally:
        for proxy in proxies:
            proxy.stop()
        issuer.stop()
        for process in (backend, sink):
            if process is not None:
                process.terminate()
                process.wait(10)

    report(figures, args)
    if profiled:
        print(f"\ncProfile of the main thread, {profiled['gateway']['calls']} gateway calls "
              f"({per_call_us(profiled['gateway'], 'main_cpu'):.0f} us main-thread CPU per call "
              f"under the profiler, bare: {per_call_us(profiled['bare'], 'main_cpu'):.0f} us)")
        bare_stats = pstats.Stats(str(bare_out) + ".pstats")
        gateway_stats = pstats.Stats(str(gw_out) + ".pstats")
        print_top(gateway_stats, profiled["gateway"]["calls"], "cumtime", args.top)
        print_delta(bare_stats, profiled["bare"]["calls"], gateway_stats,
                    profiled["gateway"]["calls"], args.top)


def per_call_us(data: dict[str, Any], key: str) -> float:
    return data[key] / max(1, data["calls"]) * 1e6


def report(figures: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    bare, gateway = figures["bare"], figures["gateway"]

    def per_call(data: dict[str, Any], value: float) -> float:
        return value / max(1, data["calls"]) * 1e6

    print(f"\n{args.body}, {args.concurrency} connections, {args.duration:g} s, "
          f"toolgate_durability={args.durability}" + "".join(f", {s}" for s in args.set))
    print(f"{'':34}{'bare':>10}{'gateway':>10}{'extra':>10}   (us of CPU per call)")
    print(f"{'calls/s':34}{bare['calls'] / bare['seconds']:10.0f}{gateway['calls'] / gateway['seconds']:10.0f}")
    rows = (("main thread (event loop)", "main_cpu"), ("other threads (store writer, DuckDB)", "other_cpu"))
    for label, key in rows:
        b, g = per_call(bare, bare[key]), per_call(gateway, gateway[key])
        print(f"{label:34}{b:10.0f}{g:10.0f}{g - b:10.0f}")
    for label, data in (("bare", bare), ("gateway", gateway)):
        busy = data["main_cpu"] / data["seconds"]
        print(f"  {label}: main thread on a core {busy:.0%} of the time; garbage collection "
              f"{per_call(data, data['gc']):.0f} us per call ({data['gc_count'] / max(1, data['calls']):.2f} "
              "collections per call; by generation: "
              + ", ".join(f"{g}: {per_call(data, t):.0f} us" for g, t in sorted(data["gc_generations"].items()))
              + ")")
    for key, seconds in sorted(gateway["writer"].items()):
        print(f"  {key:34}{per_call(gateway, seconds):8.1f} us per call (writer thread)")
    hooks = gateway["hooks"]
    total_hooks = per_call(gateway, sum(hooks.values()))
    print(f"\ntoolgate hooks (main thread), per call: {total_hooks:.0f} us")
    for key, seconds in sorted(hooks.items(), key=lambda item: -item[1]):
        count = gateway["counts"].get(key, 0) / max(1, gateway["calls"])
        print(f"  {key:34}{per_call(gateway, seconds):8.1f} us  ({count:.2f} invocations per call)")
    gc_extra = per_call(gateway, gateway["gc"]) - per_call(bare, bare["gc"])
    rest = per_call(gateway, gateway["main_cpu"]) - per_call(bare, bare["main_cpu"]) - total_hooks - gc_extra
    print(f"  {'garbage collection (extra)':34}{gc_extra:8.1f} us  (not in the hooks' figures)")
    print(f"  {'mitmproxy for the chain, ...':34}{rest:8.1f} us  (main-thread extra minus hooks and GC)")


def _per_call(stats: pstats.Stats, calls: int) -> dict[tuple, tuple[float, float, float]]:
    """{(file, line, function): (own us, cumulative us, invocations) per call}."""
    return {key: (tottime / calls * 1e6, cumtime / calls * 1e6, ncalls / calls)
            for key, (_, ncalls, tottime, cumtime, _) in stats.stats.items()}  # type: ignore[attr-defined]


def _where(key: tuple) -> str:
    file, line, name = key
    return f"{name} {Path(file).parent.name}/{Path(file).name}:{line}" if file != "~" else name


def _ours(file: str) -> bool:
    """A file of toolgate's (from this checkout, or wherever `toolgate` is imported from)."""
    parts = Path(file).parts
    return "site-packages" not in parts and any(
        room in parts for room in ("addons", "rules", "sessions")) and "profile_call.py" not in file


def print_top(stats: pstats.Stats, calls: int, order: str, top: int) -> None:
    """The `top` of toolgate's own functions by own or cumulative time, per call."""
    rows = [(key, figures) for key, figures in _per_call(stats, calls).items() if _ours(key[0])]
    rows.sort(key=lambda row: -row[1][0 if order == "tottime" else 1])
    print(f"\n  toolgate's functions by {order}, per call:\n  {'own us':>9}{'cum us':>9}{'n/call':>8}  function")
    for key, (own, cum, count) in rows[:top]:
        print(f"  {own:9.1f}{cum:9.1f}{count:8.2f}  {_where(key)}")


def print_delta(bare: pstats.Stats, bare_calls: int, gateway: pstats.Stats, gateway_calls: int,
                top: int) -> None:
    """The functions whose own time per call grew most from bare mitmdump to the gateway."""
    before, after = _per_call(bare, bare_calls), _per_call(gateway, gateway_calls)
    rows = []
    for key in before.keys() | after.keys():
        own_b, _, count_b = before.get(key, (0.0, 0.0, 0.0))
        own_a, cum_a, count_a = after.get(key, (0.0, 0.0, 0.0))
        rows.append((own_a - own_b, count_a - count_b, cum_a, key))
    rows.sort(key=lambda row: -row[0])
    total = sum(row[0] for row in rows)
    print(f"\n  own time per call, gateway minus bare (total {total:.0f} us under the profiler):"
          f"\n  {'+own us':>9}{'+n/call':>9}{'cum us':>9}  function")
    for own, count, cum, key in rows[:top]:
        print(f"  {own:9.1f}{count:9.2f}{cum:9.1f}  {_where(key)}")


if __name__ == "__main__":
    main()
