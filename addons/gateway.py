"""toolgate's mitmproxy entry point: `mitmdump -s addons/gateway.py` (or mitmweb).

Kept tiny on purpose: if the chain fails to import, this script still loads and answers every
call 503 `unavailable` instead of letting mitmproxy run on without a gate.
"""

import json
import logging
import sys
import types
import uuid
from pathlib import Path

from mitmproxy import http

# Installed, the packages are `toolgate.addons`, `toolgate.rules`, ...; a checkout that is not
# pip-installed gets the same names from its own folders (`toolgate` is only a namespace).
try:
    import toolgate.addons  # noqa: F401
except ImportError:
    _namespace = types.ModuleType("toolgate")
    _namespace.__path__ = [str(Path(__file__).resolve().parent.parent)]
    sys.modules["toolgate"] = _namespace


# flowmeta.REFUSED, spelled out: this fallback must load even when nothing else imports
# (tests/addons/test_flowmeta.py checks that the two agree).
REFUSED = "toolgate.refused"


class Unavailable:
    """Stands in for the chain when it cannot be imported."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def _refuse(self, flow: http.HTTPFlow) -> None:
        if flow.live and not flow.metadata.get(REFUSED):
            call_id = uuid.uuid4().hex
            body = {"error": {"code": "unavailable", "message": self.reason, "rule": None,
                              "field": None, "call_id": call_id}}
            flow.response = http.Response.make(
                503,
                json.dumps(body),
                {"Content-Type": "application/json", "X-Toolgate-Call-Id": call_id},
            )
            flow.metadata[REFUSED] = "unavailable"

    requestheaders = request = responseheaders = response = _refuse


class Stopped(Unavailable):
    """Stands in for the chain when the native classification core is missing or stale: there
    is no gateway without it, so mitmproxy is shut down as soon as it runs (mitmdump exits 1 on
    the error logged at start; mitmweb would otherwise stay up answering 503)."""

    def running(self) -> None:
        from mitmproxy import ctx

        ctx.master.shutdown()


try:
    from toolgate.addons.assembly import build_chain

    addons = build_chain()
except Exception as exc:  # noqa: BLE001 - any failure to load must shut the gate
    if type(exc).__name__ == "CoreUnavailable":  # toolgate.rules.core, which may not import
        logging.getLogger("toolgate").error("toolgate: the gateway cannot start: %s", exc)
        addons = [Stopped(f"the gateway cannot start: {exc}")]
    else:
        logging.getLogger("toolgate").exception("toolgate: the gateway failed to load")
        addons = [Unavailable(f"the gateway failed to load ({type(exc).__name__}); see its log")]
