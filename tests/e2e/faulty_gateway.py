"""The real gateway chain with one fault injected, chosen by TOOLGATE_TEST_FAULT, so that the
fail-closed tests can make a toolgate hook raise inside a real mitmdump."""

import os

from toolgate.addons import flowmeta
from toolgate.addons.failclosed import gate
from toolgate.addons.identity import oidc
from toolgate.addons.assembly import build_chain


def _boom(*args, **kwargs):
    raise RuntimeError("injected fault")


FAULT = os.environ["TOOLGATE_TEST_FAULT"]
if FAULT == "verify":  # raises inside the identity addon's requestheaders hook
    oidc.verify_token = _boom
elif FAULT == "panic":  # the native core panics while the policy classifies the request
    from toolgate.addons.policy import addon as policy
    from toolgate.rules.core import native

    _real_evaluate = policy.evaluate

    def _panicking(*args, **kwargs):
        native._panic_for_tests()
        return _real_evaluate(*args, **kwargs)

    policy.evaluate = _panicking
elif FAULT == "response":  # raises inside the gate's responseheaders hook
    _real_call_id_of = gate.call_id_of

    def _call_id_of(flow):
        if flow.response is not None and not flow.metadata.get(flowmeta.REFUSED):
            _boom()
        return _real_call_id_of(flow)

    gate.call_id_of = _call_id_of
else:
    raise SystemExit(f"unknown fault {FAULT!r}")

addons = build_chain()
