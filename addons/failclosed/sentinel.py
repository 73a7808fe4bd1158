"""The sentinel keeps the gate shut while the gateway's own code is not in force.

mitmproxy runs the proxy on without a script whose reload failed (a syntax error, a broken
import): calls would pass unchecked. The sentinel is therefore registered on mitmproxy's master
directly, outside the script, and survives reloads. The chain tells it when it is in force
(`Seal`, after every addon configured) and when it is not (`Gate`, while configuring and once
unloaded); while it is not, every call is answered 503 `unavailable`.
"""

from __future__ import annotations

import logging

from mitmproxy import ctx, http

from toolgate.addons import flowmeta
from toolgate.addons.answers import Refusal, refuse
from toolgate.addons.failclosed.hooks import answer_failed, flow_hook

logger = logging.getLogger(__name__)

NAME = "toolgate-sentinel"


class Sentinel:
    name = NAME

    def __init__(self) -> None:
        self.chain: object | None = None
        self.reason = "the gateway has not loaded yet"

    def open(self, chain: object) -> None:
        if self.chain is not chain:
            logger.info("toolgate: the gateway is in force")
        self.chain = chain

    def close(self, chain: object, reason: str) -> None:
        if self.chain is chain or self.chain is None:
            self.chain, self.reason = None, reason

    @property
    def is_open(self) -> bool:
        return self.chain is not None

    def _check(self, flow: http.HTTPFlow) -> None:
        if answer_failed(flow) or flow.metadata.get(flowmeta.REFUSED):
            return
        if not self.is_open:
            refuse(flow, Refusal("unavailable", f"the gateway is not in force: {self.reason}"))

    @flow_hook
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if not self.is_open:
            self._check(flow)

    @flow_hook
    def request(self, flow: http.HTTPFlow) -> None:
        self._check(flow)
        if flow.response is None and flowmeta.CALL_ID not in flow.metadata:
            # The chain's hooks did not see this call: never forward what nobody checked.
            refuse(flow, Refusal("internal", "the call was not checked by the gateway"))

    @flow_hook
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if not self.is_open and flow.response is not None:
            flow.response.stream = False  # refused in `response`, once the body is in

    @flow_hook
    def response(self, flow: http.HTTPFlow) -> None:
        self._check(flow)


def ensure_sentinel() -> Sentinel:
    """The master's sentinel, registered on first use."""
    sentinel = ctx.master.addons.get(NAME)
    if sentinel is None:
        sentinel = Sentinel()
        ctx.master.addons.add(sentinel)
    return sentinel
