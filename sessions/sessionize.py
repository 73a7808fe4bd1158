"""Which session a call belongs to.

An agent's session is named by the agent when it can be: MCP's `Mcp-Session-Id` (given by the
server in its answer to `initialize` and sent on every later request), or an
`X-Toolgate-Session` header that any caller may send. Otherwise a session is the calls of one
caller (the token's subject, or the client's address for anonymous calls) with no gap longer
than `idle` seconds between them.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable

from toolgate.rules.masking import fingerprint

MCP_SESSION_HEADER = "Mcp-Session-Id"
SESSION_HEADER = "X-Toolgate-Session"
IDLE_SECONDS = 30 * 60
MAX_ID_LENGTH = 200


def explicit_session(mcp_session: str | None, toolgate_session: str | None) -> str | None:
    """The session a caller named, if any (MCP's header wins)."""
    for value in (mcp_session, toolgate_session):
        if value and value.strip():
            return value.strip()[:MAX_ID_LENGTH]
    return None


def hashed_session(name: str, mask_key: bytes) -> str:
    """The session id stored for a name that holds a labelled value (an end user's email):
    `s-<16 hex>`, a keyed fingerprint of the name as `explicit_session` reads it."""
    return "s-" + fingerprint(name, mask_key)[:16]


class Sessionizer:
    """Assigns session ids to a caller's calls by idle gap. Thread-safe and bounded: callers
    idle for longer than the gap are forgotten."""

    def __init__(
        self, idle: float = IDLE_SECONDS, new_id: Callable[[], str] | None = None
    ) -> None:
        self.idle = idle
        self.new_id = new_id or (lambda: "s-" + uuid.uuid4().hex[:16])
        self._last: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()
        self._next_prune = 0.0

    def assign(
        self,
        caller: str,
        now: float,
        mcp_session: str | None = None,
        toolgate_session: str | None = None,
    ) -> str:
        named = explicit_session(mcp_session, toolgate_session)
        if named:
            return named
        with self._lock:
            self._prune(now)
            current = self._last.get(caller)
            if current is not None and now - current[1] <= self.idle:
                session_id = current[0]
            else:
                session_id = self.new_id()
            same = current is not None and current[0] == session_id
            self._last[caller] = (session_id, max(now, current[1]) if same else now)
            return session_id

    def _prune(self, now: float) -> None:
        if now < self._next_prune:
            return
        self._next_prune = now + self.idle
        self._last = {k: v for k, v in self._last.items() if now - v[1] <= self.idle}
