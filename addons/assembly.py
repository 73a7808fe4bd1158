"""The ordered addon chain that `addons/gateway.py` hands to mitmproxy."""

from __future__ import annotations

import gc

from toolgate.addons.approvals.admin import Admin
from toolgate.addons.approvals.addon import Approvals
from toolgate.addons.credentials.addon import Credentials
from toolgate.addons.failclosed.gate import Gate
from toolgate.addons.identity.addon import Identity
from toolgate.addons.policy.addon import Policy
from toolgate.addons.recording.addon import Recorder
from toolgate.addons.telemetry.metrics import Metrics
from toolgate.addons.telemetry.tracing import Tracing
from toolgate.addons.tools.addon import ToolPins
from toolgate.addons.failclosed.seal import Seal


# CPython collects the youngest objects after every 700 container allocations, and every tenth
# of those collections looks at older ones: a large answer's values, findings and record (tens
# of thousands of short-lived, acyclic containers) set off 20 collections per call, several of
# them over every object of the process (12 ms of a 256 KB call's 43, measured with
# scripts/profile_call.py). Cyclic garbage is still collected, in larger, fewer passes.
GC_THRESHOLDS = (50_000, 20, 20)


def build_chain() -> list[object]:
    """Gate first (call ids), then tracing (the caller's trace context, before the policy
    may mask it; its two checkpoints time the policy, right after it, and the call's end, last
    before the seal), identity before anything reads the body, the tool pins after
    the policy (what it decided, on MCP tool calls and listings) and before approvals (which
    hold what they mark), credentials as the last change before a call leaves, the recorder
    last but for the metrics (which count a call as it was recorded, and time it to when its
    answer leaves, the record's commit included); Seal closes the chain. The admin API
    (no flow hooks) verifies reviewers with the identity addon's verifier and decides through
    the approvals addon."""
    gc.set_threshold(*GC_THRESHOLDS)
    gate, identity, approvals, tracing = Gate(), Identity(), Approvals(), Tracing()
    return [gate, tracing, identity, Policy(), tracing.checked, ToolPins(), approvals,
            Admin(identity, approvals), Credentials(), Recorder(), Metrics(), tracing.ended,
            Seal(gate)]
