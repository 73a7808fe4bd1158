"""The chain's assembly: the order the README describes, and the collector tuned for the large
answers the gateway handles (see GC_THRESHOLDS)."""

from __future__ import annotations

import gc
import inspect

from toolgate.addons.assembly import GC_THRESHOLDS, build_chain


def test_the_chain_is_in_order_and_the_collector_tuned():
    before = gc.get_threshold()
    try:
        chain = build_chain()
        assert [type(a).__name__ for a in chain] == [
            "Gate", "Tracing", "Identity", "Policy", "Checked", "ToolPins", "Approvals", "Admin",
            "Credentials", "Recorder", "Metrics", "Ended", "Seal"]
        assert gc.get_threshold() == GC_THRESHOLDS
        # mitmproxy calls these synchronously when it reloads the script: an async one would
        # stop the reload (and the gate would stay shut until a restart)
        for addon in chain:
            for hook in ("load", "configure", "running", "done"):
                assert not inspect.iscoroutinefunction(getattr(addon, hook, None)), (addon, hook)
        assert gc.isenabled()  # cyclic garbage is still collected
    finally:
        gc.set_threshold(*before)
