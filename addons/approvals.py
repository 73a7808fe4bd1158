"""Approvals: decides calls that policy marks `approve` (`flow.metadata["toolgate.approval"]`).

Holding a call until a reviewer decides is not built yet: until it is, such a call is denied,
never let through. This addon also owns the approval options (the admin API's address, the
timeout, the webhook).
"""

from __future__ import annotations

from typing import Optional

from mitmproxy import ctx, exceptions, http

from addons import settings
from addons.answers import Refusal, refuse
from addons.failclosed import flow_hook

DEFAULT_ADMIN_LISTEN = "127.0.0.1:8090"
APPROVAL_KEY = "toolgate.approval"


class Approvals:
    def __init__(self) -> None:
        self.admin_address = settings.parse_listen(DEFAULT_ADMIN_LISTEN)

    def load(self, loader) -> None:
        loader.add_option(
            "toolgate_admin_listen", str, DEFAULT_ADMIN_LISTEN,
            "HOST:PORT of the admin API (approvals, live session queries, health, metrics). "
            "Keep it on loopback or behind TLS.",
        )
        loader.add_option(
            "toolgate_approval_timeout", int, 300,
            "Seconds a held call waits for a decision before it is denied; 0 denies at once.",
        )
        loader.add_option(
            "toolgate_webhook", Optional[str], None,
            "A URL notified with a JSON POST of every held call.",
        )

    def configure(self, updated: set[str]) -> None:
        try:
            if "toolgate_admin_listen" in updated:
                self.admin_address = settings.parse_listen(ctx.options.toolgate_admin_listen)
                if self.admin_address[1] != 0 and self.admin_address[1] == ctx.options.listen_port:
                    raise ValueError("toolgate_admin_listen must not be the proxy's own port")
            if "toolgate_approval_timeout" in updated and ctx.options.toolgate_approval_timeout < 0:
                raise ValueError("toolgate_approval_timeout must be 0 or more seconds")
            if "toolgate_webhook" in updated and ctx.options.toolgate_webhook:
                settings.parse_http_url(ctx.options.toolgate_webhook, "toolgate_webhook")
        except ValueError as exc:
            raise exceptions.OptionsError(str(exc)) from None

    @flow_hook
    def request(self, flow: http.HTTPFlow) -> None:
        self._decide(flow)

    @flow_hook
    def response(self, flow: http.HTTPFlow) -> None:
        self._decide(flow)

    def _decide(self, flow: http.HTTPFlow) -> None:
        approval = flow.metadata.get(APPROVAL_KEY)
        if approval is None or flow.metadata.get("toolgate.refused"):
            return
        approvers = ", ".join(approval.get("approvers") or []) or "a reviewer"
        refuse(flow, Refusal(
            "denied",
            f"{approval['message']} (approvers: {approvers}); this gateway cannot hold calls "
            "for approval yet, so it is denied",
            approval.get("rule"),
            approval.get("field"),
        ))
