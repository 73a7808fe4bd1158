"""The ordered addon chain that `addons/gateway.py` hands to mitmproxy."""

from __future__ import annotations

from toolgate.addons.approvals.admin import Admin
from toolgate.addons.approvals.addon import Approvals
from toolgate.addons.credentials.addon import Credentials
from toolgate.addons.failclosed.gate import Gate
from toolgate.addons.identity.addon import Identity
from toolgate.addons.policy.addon import Policy
from toolgate.addons.recording.addon import Recorder
from toolgate.addons.failclosed.seal import Seal


def build_chain() -> list[object]:
    """Gate first (call ids), identity before anything reads the body, credentials as the
    last change before a call leaves, the recorder last; Seal closes the chain. The admin API
    (no flow hooks) verifies reviewers with the identity addon's verifier and decides through
    the approvals addon."""
    gate, identity, approvals = Gate(), Identity(), Approvals()
    return [gate, identity, Policy(), approvals, Admin(identity, approvals), Credentials(),
            Recorder(), Seal(gate)]
