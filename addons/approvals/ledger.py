"""Where approval decisions are recorded: one small interface, `DecisionLog`.

The approvals addon hands every decision (approved, denied, expired; by whom, when, through
which channel, why, for how long) to its logs as an `ApprovalDecision`. `MemoryDecisionLog` keeps
them in memory; the session store implements the same interface over its `approvals` table
(`StoreDecisionLog` adapts the recorder addon's `submit_approval`).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

from toolgate.sessions.records import ApprovalRecord


@dataclass(frozen=True)
class ApprovalDecision:
    """One decision. The first eight fields are the store's `approvals` columns (times are
    seconds since the epoch); the rest is context for logs and the admin API."""

    call_id: str
    requested_at: float
    decided_at: float
    decision: str  # approved | denied | expired
    reviewer: str | None  # the reviewer's subject; "mitmweb" for the UI; None for timeouts
    channel: str  # admin | cli | mitmweb | timeout | disconnect | grant | gateway
    reason: str
    scope: str  # "call: arguments sha256:...", "grant 30m: bob -> deploy, any arguments", ...
    held_id: str | None = None
    subject: str | None = None  # the caller
    function: str | None = None
    rule: str | None = None
    grant_seconds: int | None = None  # how long a grant lasts, if this approval made one

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@runtime_checkable
class DecisionLog(Protocol):
    """Records decisions. `record` may return an awaitable that completes once the record is
    durable (the addon awaits it, bounded, before a call is released); raising, or an
    awaitable that fails, means the decision was not recorded."""

    def record(self, record: ApprovalDecision) -> Awaitable[Any] | None: ...


class MemoryDecisionLog:
    """The last `limit` decisions, in memory (until the session store records them)."""

    def __init__(self, limit: int = 10_000) -> None:
        self.records: collections.deque[ApprovalDecision] = collections.deque(maxlen=limit)

    def record(self, record: ApprovalDecision) -> None:
        self.records.append(record)

    def for_call(self, call_id: str) -> list[ApprovalDecision]:
        return [r for r in self.records if r.call_id == call_id]


class StoreDecisionLog:
    """The session store's `approvals` table, through the recorder addon's
    `submit_approval(ApprovalRecord) -> concurrent.futures.Future`."""

    def __init__(self, recorder: Any) -> None:
        self.recorder = recorder

    def record(self, record: ApprovalDecision) -> Awaitable[Any]:
        future = self.recorder.submit_approval(ApprovalRecord(
            record.call_id, record.requested_at, record.decided_at, record.decision,
            record.reviewer, record.channel, record.reason, record.scope,
        ))
        return asyncio.wrap_future(future)
