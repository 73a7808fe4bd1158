"""First in the chain: gives every call its id and keeps the sentinel shut while the chain is
being (re)configured or has been unloaded."""

from __future__ import annotations

import time

from mitmproxy import ctx, http

from toolgate.addons import flowmeta
from toolgate.addons.answers import CALL_ID_HEADER, call_id_of
from toolgate.addons.failclosed.hooks import flow_hook
from toolgate.addons.failclosed.sentinel import Sentinel, ensure_sentinel


class Gate:
    def __init__(self) -> None:
        self.sentinel: Sentinel | None = None

    def load(self, loader) -> None:
        # A refused call must never touch the backend: open upstream connections only for
        # calls that are let through.
        ctx.options.connection_strategy = "lazy"
        self.sentinel = ensure_sentinel()
        self.sentinel.close(self, "the gateway is loading")

    def configure(self, updated: set[str]) -> None:
        # Seal, last in the chain, reopens once every addon took the new options. If one of
        # them refuses them, the sentinel stays shut until mitmproxy has rolled them back.
        if self.sentinel:
            self.sentinel.close(self, "the gateway's configuration did not load")

    def done(self) -> None:
        if self.sentinel:
            self.sentinel.close(self, "the gateway was unloaded (is a reload failing?)")

    @flow_hook
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        call_id = call_id_of(flow)
        flow.metadata.setdefault(flowmeta.STARTED, time.time())
        # The backend can log the id too; a caller cannot choose it.
        flow.request.headers[CALL_ID_HEADER] = call_id

    @flow_hook
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            flow.response.headers[CALL_ID_HEADER] = call_id_of(flow)

    @flow_hook
    def response(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            flow.response.headers[CALL_ID_HEADER] = call_id_of(flow)
