"""Fail closed: an exception in a toolgate hook answers 500 `internal`, never forwards.

mitmproxy's addon manager logs an exception raised by a hook and carries on, which would let
the call through unchecked. Every toolgate flow hook is therefore wrapped in `flow_hook`, which

- skips flows that are not live (loaded with `mitmweb -r`, or already answered and closed):
  they are never re-enforced;
- turns any exception into a 500 `internal` answer in place of whatever the flow held, so the
  request is not forwarded and a backend answer that was not checked is not released.
"""

from __future__ import annotations

import functools
import inspect
import logging
from typing import Any, Callable, TypeVar

from mitmproxy import http

from toolgate.addons import flowmeta
from toolgate.addons.answers import Refusal, call_id_of, refuse
from toolgate.rules.core import native

logger = logging.getLogger(__name__)

FLOW_HOOKS = frozenset(
    {"requestheaders", "request", "responseheaders", "response", "error", "http_connect"}
)

Hook = TypeVar("Hook", bound=Callable[..., Any])




def fail_closed(flow: http.HTTPFlow, where: str, exc: BaseException) -> None:
    """Make sure `flow` ends in a 500 `internal` answer instead of whatever it would have
    done: at once, or, if only headers have arrived, once the body is in (`answer_failed`,
    called by the sentinel), so that the answer is complete and shaped for the request."""
    call_id = call_id_of(flow)
    # The traceback goes to the log under the call id; the caller only learns that it failed.
    logger.error("toolgate: %s failed on call %s", where, call_id, exc_info=exc)
    flow.metadata[flowmeta.FAILED] = where
    too_late = flow.error is not None or flow.websocket is not None or (
        flow.response is not None and flow.response.stream
    )
    if too_late:  # headers already left: cut the connection rather than pass anything on
        if flow.killable:
            flow.kill()
    elif flow.response is not None and flow.response.raw_content is None:
        pass  # responseheaders: a response set now would get the backend's body
    elif flow.response is None and flow.request.raw_content is None and not flow.request.stream:
        pass  # requestheaders: wait for the body, to answer a JSON-RPC call in its shape
    else:
        answer_failed(flow)


def answer_failed(flow: http.HTTPFlow) -> bool:
    """Answer 500 `internal` if a toolgate hook failed on `flow`; whether it did."""
    where = flow.metadata.get(flowmeta.FAILED)
    if where is None:
        return False
    if flow.metadata.get(flowmeta.REFUSED) != "internal":
        refuse(flow, Refusal("internal", "the gateway failed while checking this call"))
    return True


# What a hook may raise: any exception, and a panic of the native classification core (PyO3
# raises it as PanicException, which derives from BaseException, not Exception).
FAILURES: tuple[type[BaseException], ...] = (Exception, native.PanicException)


def flow_hook(fn: Hook) -> Hook:
    """Wrap an addon's flow hook (sync or async) so that it fails closed."""
    where = fn.__qualname__

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_wrapper(self: Any, flow: http.HTTPFlow) -> None:
            if not flow.live:
                return
            try:
                await fn(self, flow)
            except FAILURES as exc:
                fail_closed(flow, where, exc)

        async_wrapper.__toolgate_fail_closed__ = True  # type: ignore[attr-defined]
        return async_wrapper  # type: ignore[return-value]

    @functools.wraps(fn)
    def wrapper(self: Any, flow: http.HTTPFlow) -> None:
        if not flow.live:
            return
        try:
            fn(self, flow)
        except FAILURES as exc:
            fail_closed(flow, where, exc)

    wrapper.__toolgate_fail_closed__ = True  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def unguarded_hooks(addon: object) -> list[str]:
    """Names of `addon`'s flow hooks that are not wrapped in `flow_hook` (for tests)."""
    return [
        name
        for name in FLOW_HOOKS
        if callable(getattr(addon, name, None))
        and not getattr(getattr(addon, name), "__toolgate_fail_closed__", False)
    ]

