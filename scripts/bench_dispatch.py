"""What mitmproxy's dispatch of a call's events costs, with toolgate's addons and without.

    .venv/bin/python scripts/bench_dispatch.py [--calls 5000] [--repeat 15]

mitmproxy hands every event to every addon by walking the addon chain (and each addon's
sub-addons) through nested generators, looking the hook up by name on each, and rebuilding
the event's arguments for each addon that has it. A call through the gateway is four events
(request and response, headers and body) and an `update` after each. This measures that walk
alone, in one process: mitmdump's own addons (its DumpMaster's) plus a script's, for

- `bare`: a script with no addons;
- `toolgate`: a script whose `addons` are toolgate's (`build_chain()`), as `addons/gateway.py`
  hands them to mitmproxy.

The flows are not live, so every toolgate hook returns at its first line: what is left is the
dispatch. Prints the best and the median CPU microseconds per call over `--repeat` runs of
`--calls` calls each, the setups in turn.

What it showed (issue 14, "where a 1 KB call's time goes"): bare mitmdump's own dispatch is
460-490 us of the 1.1-1.8 ms of CPU a 1 KB call costs it (`scripts/bench.py`); toolgate's
thirteen addons add 35-50 us.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
import types

from mitmproxy import hooks, options
from mitmproxy.proxy.layers.http import (
    HttpRequestHeadersHook, HttpRequestHook, HttpResponseHeadersHook, HttpResponseHook,
)
from mitmproxy.test import tflow
from mitmproxy.tools.dump import DumpMaster

from toolgate.addons.assembly import build_chain


def script_of(addons: list[object]) -> object:
    """What mitmproxy's script loader holds for `-s script.py` whose `addons` is `addons`."""
    module = types.SimpleNamespace(addons=addons)
    return types.SimpleNamespace(addons=[types.SimpleNamespace(addons=[module])])


async def per_call(master: DumpMaster, script: object, calls: int) -> float:
    """CPU microseconds per call of dispatching a call's events through `master`'s addons and
    `script` (appended to the chain for the measurement, then taken out)."""
    flow = tflow.tflow(resp=True)
    flow.live = False
    update = hooks.UpdateHook([flow])
    events = [HttpRequestHeadersHook(flow), HttpRequestHook(flow), HttpResponseHeadersHook(flow),
              HttpResponseHook(flow)]
    manager = master.addons
    manager.chain.append(script)
    try:
        started = time.process_time()
        for _ in range(calls):
            for event in events:
                await manager.trigger_event(event)
                await manager.trigger_event(update)
        return (time.process_time() - started) / calls * 1e6
    finally:
        manager.chain.remove(script)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    master = DumpMaster(options.Options(), with_termlog=False, with_dumper=False)
    thresholds = gc.get_threshold()
    setups = {"bare": script_of([]), "toolgate": script_of(build_chain())}
    gc.set_threshold(*thresholds)  # build_chain tunes the collector for the gateway
    figures: dict[str, list[float]] = {name: [] for name in setups}
    gc.disable()  # collections would land in whichever setup runs then
    try:
        for _ in range(args.repeat):  # in turn, so that all see the same moment of the machine
            for name, script in setups.items():
                figures[name].append(await per_call(master, script, args.calls))
    finally:
        gc.enable()
    print(f"mitmproxy's dispatch of a call's 8 events ({len(master.addons.chain)} addons of "
          f"mitmdump's own, then a script's), CPU us per call, best and median of {args.repeat}")
    best = {name: min(values) for name, values in figures.items()}
    for name, values in figures.items():
        added = "" if name == "bare" else f"   adds {best[name] - best['bare']:6.1f} us to bare"
        print(f"  {name:11} {best[name]:7.1f}  {statistics.median(values):7.1f}{added}")


if __name__ == "__main__":
    asyncio.run(main())
