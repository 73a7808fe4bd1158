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

from addons.answers import Refusal, call_id_of, refuse

logger = logging.getLogger(__name__)

FLOW_HOOKS = frozenset(
    {"requestheaders", "request", "responseheaders", "response", "error", "http_connect"}
)

Hook = TypeVar("Hook", bound=Callable[..., Any])


def fail_closed(flow: http.HTTPFlow, where: str, exc: BaseException) -> None:
    """Replace whatever `flow` would have done with a 500 `internal` answer."""
    call_id = call_id_of(flow)
    # The traceback goes to the log under the call id; the caller only learns that it failed.
    logger.error("toolgate: %s failed on call %s", where, call_id, exc_info=exc)
    too_late = flow.error is not None or flow.websocket is not None or (
        flow.response is not None and flow.response.stream
    )
    if too_late:  # headers already left: cut the connection rather than pass anything on
        if flow.killable:
            flow.kill()
        return
    refuse(flow, Refusal("internal", f"the gateway failed while checking this call ({where})"))


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
            except Exception as exc:
                fail_closed(flow, where, exc)

        async_wrapper.__toolgate_fail_closed__ = True  # type: ignore[attr-defined]
        return async_wrapper  # type: ignore[return-value]

    @functools.wraps(fn)
    def wrapper(self: Any, flow: http.HTTPFlow) -> None:
        if not flow.live:
            return
        try:
            fn(self, flow)
        except Exception as exc:
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

