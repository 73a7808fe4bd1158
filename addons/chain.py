"""The ordered addon chain that `addons/gateway.py` hands to mitmproxy."""

from __future__ import annotations

from addons.admin import Admin
from addons.approvals import Approvals
from addons.credentials import Credentials
from addons.gate import Gate
from addons.identity import Identity
from addons.policy import Policy
from addons.recorder import Recorder
from addons.seal import Seal


def build_chain() -> list[object]:
    """Gate first (call ids), identity before anything reads the body, credentials as the
    last change before a call leaves, the recorder last; Seal closes the chain. The admin API
    (no flow hooks) verifies reviewers with the identity addon's verifier and decides through
    the approvals addon."""
    gate, identity, approvals = Gate(), Identity(), Approvals()
    return [gate, identity, Policy(), approvals, Admin(identity, approvals), Credentials(),
            Recorder(), Seal(gate)]
