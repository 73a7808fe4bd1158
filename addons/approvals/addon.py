"""Approvals: holds a call that policy marks `approve` until someone decides, and always answers.

Policy leaves `flow.metadata["toolgate.approval"]` on such a call. Unless a live grant covers it,
the call is intercepted (mitmweb shows it marked, with a comment saying why), registered as a
`HeldCall`, announced to `toolgate_webhook`, and its hook waits without blocking the event
loop for the first of:

- a decision through the admin API / `toolgate approvals` (`approve`, `deny`, with a verified
  reviewer), or the `toolgate.approve` / `toolgate.deny` commands (mitmweb's command bar);
- Resume in mitmweb (approves) or Abort (denies). mitmproxy 11's kill only marks the flow and
  never wakes a waiting hook, so the wait looks at the flow every `POLL` seconds: a killed flow
  is revived just enough to carry a 403 `denied` answer instead of a hung connection;
- the caller disconnecting (recorded as expired, channel `disconnect`);
- the timeout (403 `approval_timeout`); `toolgate_approval_timeout=0` denies at once.

An approved call continues down the chain (credentials are injected only then), unless it was
changed while held (edited in mitmweb): an approval covers the call the reviewer saw. Every
decision goes to the `DecisionLog`s; a call is released only once its record is kept. A call is
on the session store's record as held before it is held (under audit durability, a call that
cannot be recorded is refused 503 `unrecorded` instead), so a gateway killed while it waits
still leaves it recorded.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import math
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Sequence
from typing import Any, Optional

from mitmproxy import command, ctx, exceptions, hooks, http
from mitmproxy.connection import ConnectionState
from mitmproxy.flow import Error, Flow

from toolgate.addons import flowmeta, settings
from toolgate.addons.answers import Refusal, call_id_of, refuse
from toolgate.addons.approvals.ledger import (
    ApprovalDecision,
    DecisionLog,
    MemoryDecisionLog,
    StoreDecisionLog,
)
from toolgate.addons.failclosed.hooks import flow_hook
from toolgate.addons.approvals.fleet import FleetLink
from toolgate.addons.approvals.holds import (
    Grant,
    Grants,
    HeldCall,
    HeldCalls,
    ReviewError,
    Verdict,
    argument_hash,
    arguments_view,
    check_reviewer,
    effective_timeout,
    fingerprint,
    iso,
    new_grant,
    new_held_id,
)
from toolgate.rules.protocols import parse_request
from toolgate.sessions.control import ControlUnavailable

logger = logging.getLogger(__name__)

POLL = 0.2  # seconds between looks at a held flow (Resume, Abort, a gone caller)
RECORD_TIMEOUT = 30.0
WEBHOOK_TIMEOUT = 5.0
# Webhook posts get threads of their own: on asyncio's default executor, a webhook that hangs
# would hold up what else runs there (DNS lookups of upstream hosts, the issuer's keys).
WEBHOOK_THREADS = 4
MARK_HELD, MARK_APPROVED, MARK_DENIED = ":hourglass:", ":white_check_mark:", ":no_entry:"


class Approvals:
    def __init__(self) -> None:
        self.held = HeldCalls()
        self.grants = Grants()
        self.memory = MemoryDecisionLog()
        self.logs: list[DecisionLog] = [self.memory]
        self.stats: Counter[tuple[str, str]] = Counter()  # (decision, channel) -> n
        self.webhook_failures = 0
        self.admin_url: str | None = None  # set by the admin addon once it listens
        self.fleet: FleetLink | None = None  # with toolgate_control: the shared control plane
        self._wake: dict[str, asyncio.Event] = {}
        # `hold: return` calls by their binding, pending or decided: a retry attaches to one
        # that is pending, or uses up the decision on one (until `returned_until`).
        self.returned: dict[tuple, HeldCall] = {}
        self._recording: dict[str, asyncio.Task[None]] = {}  # `return` holds, by held id
        self._tasks: set[asyncio.Task[None]] = set()
        self._webhook_pool: ThreadPoolExecutor | None = None

    def load(self, loader) -> None:
        loader.add_option(
            "toolgate_approval_timeout", int, 300,
            "Seconds a held call waits for a decision before it is denied (approval_timeout). "
            "A rule's own timeout can only shorten it. 0 denies at once: CI, where nobody is "
            "there to approve.",
        )
        loader.add_option(
            "toolgate_webhook", Optional[str], None,
            "A URL notified with a JSON POST of every held call (id, caller, function, rule, "
            "masked arguments, how to approve). Failures are logged; they never approve.",
        )
        loader.add_option(
            "toolgate_control", Optional[str], None,
            "A fleet's control plane: postgresql://USER:PASSWORD@HOST:PORT/DB, or env:NAME / "
            "file:PATH holding it (keeps the password out of the process list). Held calls, "
            "decisions and grants are shared by every gateway using it; unset: this gateway "
            "alone.",
        )
        loader.add_option(
            "toolgate_node", str, "",
            "This gateway's node id in a fleet (letters, digits, . _ -); default "
            "<hostname>-<proxy port> when toolgate_control or toolgate_archive is set.",
        )

    def configure(self, updated: set[str]) -> None:
        try:
            if "toolgate_approval_timeout" in updated and ctx.options.toolgate_approval_timeout < 0:
                raise ValueError("toolgate_approval_timeout must be 0 or more seconds")
            if "toolgate_webhook" in updated and ctx.options.toolgate_webhook:
                settings.parse_http_url(ctx.options.toolgate_webhook, "toolgate_webhook")
            if "toolgate_control" in updated and ctx.options.toolgate_control:
                settings.control_url(ctx.options.toolgate_control)
            if updated & {"toolgate_node", "toolgate_control"}:
                settings.node_id(ctx.options)
        except ValueError as exc:
            raise exceptions.OptionsError(str(exc)) from None
        if (updated & {"toolgate_node", "toolgate_control"} and self.fleet is not None
                and (self.fleet.plane.url != settings.control_url(ctx.options.toolgate_control
                                                                  or "")
                     or self.fleet.node_id != settings.node_id(ctx.options))):
            logger.warning("toolgate: toolgate_control and toolgate_node take effect at the "
                           "next start")

    def running(self) -> None:
        # The session store, when the recorder offers it, keeps every decision too.
        recorder = ctx.master.addons.get("recorder")
        if callable(getattr(recorder, "submit_approval", None)) and not any(
            isinstance(log, StoreDecisionLog) for log in self.logs
        ):
            self.logs.append(StoreDecisionLog(recorder))
        if ctx.options.toolgate_control and self.fleet is None:
            self.fleet = FleetLink(self, settings.control_url(ctx.options.toolgate_control),
                                   settings.node_id(ctx.options))
            self.fleet.start()

    def done(self) -> None:
        # A reload or a shutdown must not leave callers hanging: deny what is still held.
        now = time.time()
        for held in self.held.pending():
            self._settle(held, Verdict("denied", "gateway", None,
                                       "the gateway stopped or reloaded while the call was held",
                                       now))
        # (Sync: mitmproxy calls `done` synchronously when it reloads the script.) `return`
        # holds record their denial on their own tasks, which go on; the rest are webhooks.
        for task in self._tasks - set(self._recording.values()):
            task.cancel()
        if self._webhook_pool is not None:
            self._webhook_pool.shutdown(wait=False, cancel_futures=True)
            self._webhook_pool = None
        if self.fleet is not None:
            fleet, self.fleet = self.fleet, None
            fleet.stop()

    # -- commands (mitmweb's command bar, the console) --------------------------------------

    @command.command("toolgate.approve")
    def approve_flows(self, flows: Sequence[Flow], *reason: str) -> None:
        """Approve held calls (each for this one call only), as the mitmweb operator."""
        self._decide_flows(flows, "approved", " ".join(reason) or "approved in mitmweb")

    @command.command("toolgate.deny")
    def deny_flows(self, flows: Sequence[Flow], *reason: str) -> None:
        """Deny held calls, as the mitmweb operator; their callers get 403 denied."""
        self._decide_flows(flows, "denied", " ".join(reason) or "denied in mitmweb")

    def _decide_flows(self, flows: Sequence[Flow], decision: str, reason: str) -> None:
        now = time.time()
        for f in flows:
            call_id = f.metadata.get(flowmeta.CALL_ID)
            held = next((h for h in self.held.pending() if h.call_id == call_id), None)
            if held is None:
                logger.warning("toolgate: flow %s is not a held call", f.id)
                continue
            self._settle(held, Verdict(decision, "mitmweb", "mitmweb", reason, now,
                                       argument_hash=held.argument_hash))

    # -- decisions with a verified reviewer (the admin API) ---------------------------------

    def approve(self, held_id: str, reviewer: dict[str, Any], reason: str,
                window: Any = None, same_args: bool = False, channel: str = "admin") -> Verdict:
        """Approve a held call for `reviewer` (a verified identity): this one call, or with a
        `window` (timedelta) a grant for its caller and function that starts now."""
        held = self._pending(held_id)
        subject = check_reviewer(held, reviewer, "approve", reason)
        now = time.time()
        grant = new_grant(held, subject, reason, window, same_args, now) if window else None
        verdict = Verdict("approved", channel, subject, reason.strip(), now, grant,
                          held.argument_hash)
        self._settle(held, verdict)
        if grant is not None:
            self.grants.add(grant)
            self.release_covered(grant, now)
        return verdict

    def deny(self, held_id: str, reviewer: dict[str, Any], reason: str,
             channel: str = "admin") -> Verdict:
        held = self._pending(held_id)
        subject = check_reviewer(held, reviewer, "deny", reason)
        verdict = Verdict("denied", channel, subject, reason.strip(), time.time())
        self._settle(held, verdict)
        return verdict

    async def review(self, action: str, key: str, reviewer: dict[str, Any], reason: str,
                     window: Any = None, same_args: bool = False,
                     channel: str = "admin") -> tuple[HeldCall, Verdict]:
        """A reviewer's decision (`action` approve or deny) from the admin API: on this
        node's held calls, or in a fleet on any node's, through the control plane."""
        if self.fleet is None:
            held = self._pending(key)
            if action == "approve":
                return held, self.approve(key, reviewer, reason, window, same_args, channel)
            return held, self.deny(key, reviewer, reason, channel)
        held = await self.fleet_held(key)
        if held is None:
            raise ReviewError(404, "not_found", f"no held call {key}: it was decided, "
                              "expired, or its caller left (toolgate approvals list)")
        subject = check_reviewer(held, reviewer, action, reason)
        now = time.time()
        if action == "approve":
            grant = new_grant(held, subject, reason, window, same_args, now) if window else None
            verdict = Verdict("approved", channel, subject, reason.strip(), now, grant,
                              held.argument_hash)
        else:
            grant, verdict = None, Verdict("denied", channel, subject, reason.strip(), now)
        outcome = await self._control(self.fleet.plane.decide(
            held.id, verdict.decision, verdict.state(), grant.state() if grant else None))
        if not outcome["won"]:
            first = (outcome["row"] or {}).get("status", "decided")
            raise ReviewError(409, "conflict", f"held call {held.id} is already decided "
                              f"({first})")
        if local := self.held.get(held.id):
            self.settle_claimed(local, verdict)
        if grant is not None:
            self.grants.add(grant)
            self.release_covered(grant, now)
        return held, verdict

    async def fleet_pending(self) -> list[HeldCall]:
        """Every held call of the fleet waiting for a decision (503 without the fleet)."""
        assert self.fleet is not None
        rows = await self._control(self.fleet.plane.pending())
        return [_from_row(row) for row in rows]

    async def fleet_held(self, key: str) -> HeldCall | None:
        """A held call of the fleet that still waits, by held or call id."""
        assert self.fleet is not None
        row = await self._control(self.fleet.plane.get(key))
        if row is None or row["status"] != "pending" or row["expires_at"] <= time.time():
            return None
        return _from_row(row)

    @staticmethod
    async def _control(work: Any) -> Any:
        try:
            return await work
        except ControlUnavailable as exc:
            raise ReviewError(503, "unavailable", f"{exc}; decisions need it, so none was "
                              "taken") from None

    def store_path(self) -> str | None:
        return getattr(ctx.master.addons.get("recorder"), "db_path", None)

    def _pending(self, held_id: str) -> HeldCall:
        held = self.held.get(held_id)
        if held is None:
            raise ReviewError(404, "not_found", f"no held call {held_id}: it was decided, "
                              "expired, or its caller left (toolgate approvals list)")
        return held

    def _settle(self, held: HeldCall, verdict: Verdict) -> None:
        self.held.decide(held, verdict)
        if event := self._wake.get(held.id):
            event.set()

    def settle_claimed(self, held: HeldCall, verdict: Verdict) -> None:
        """The fleet's first decision on a call held here: it wins over one taken here that
        the control plane has not recorded yet."""
        held.verdict, held.claimed = verdict, True
        if event := self._wake.get(held.id):
            event.set()

    def release_covered(self, grant: Grant, now: float) -> None:
        """A new grant also releases the calls it covers that are already waiting."""
        for other in self.held.pending():
            if grant.covers(other.subject, other.function, other.rule, other.argument_hash, now):
                self._settle(other, Verdict("approved", "grant", grant.reviewer,
                                            f"grant {grant.id}: {grant.reason}", now, grant))

    # -- hooks ------------------------------------------------------------------------------

    @flow_hook
    async def request(self, flow: http.HTTPFlow) -> None:
        await self._hold(flow, "request")

    @flow_hook
    async def response(self, flow: http.HTTPFlow) -> None:
        await self._hold(flow, "response")

    async def _hold(self, flow: http.HTTPFlow, phase: str) -> None:
        approval = flow.metadata.get(flowmeta.APPROVAL)
        if approval is None or "verdict" in approval or flow.metadata.get(flowmeta.REFUSED):
            return
        if phase == "request" and flow.response is not None:
            return
        if approval.get("rule") in flow.metadata.get(flowmeta.APPROVED_RULES, ()):
            # Approved under this rule already (e.g. its request): never held again by it.
            return
        held = self._held_call(flow, approval, phase)
        now = held.requested_at
        if grant := self.grants.match(held.subject, held.function, held.rule,
                                      held.argument_hash, now):
            verdict = Verdict("approved", "grant", grant.reviewer,
                              f"grant {grant.id}: {grant.reason}", now, grant)
            await self._finish(flow, held, approval, verdict)
            return
        if held.hold == "return":
            await self._hold_returning(flow, held, approval)
            return
        if held.expires_at <= now:
            await self._finish(flow, held, approval, _expired_at_once(now))
            return

        if not await _record_held(flow, held):
            refuse(flow, Refusal("unrecorded", "the session store cannot record calls right "
                                 "now, so this call was not held for approval; the gateway's "
                                 "log says why"))
            return
        if not await self._shared(flow, held):
            return

        approval.setdefault("policy_comment", flow.comment)
        self.held.add(held)
        self._wake[held.id] = asyncio.Event()
        before = _fingerprint(flow, phase)
        flow.intercept()
        flow.marked = MARK_HELD
        flow.comment = held.describe()
        try:
            await _show(flow)
            self._notify(held)
            logger.info("toolgate: held %s [%s] for %s: %s (rule %s; approvers: %s)",
                        held.call_id, held.id, held.caller, held.shown, held.rule,
                        ", ".join(held.approvers) or "-")
            verdict = await self._fleet_decision(held, await self._await_verdict(flow, held))
            if flow.error is not None and flow.error.msg == Error.KILLED_MESSAGE:
                # Abort in mitmweb: revive the flow so that the caller gets our answer.
                flow.error, flow.live = None, True
            if verdict.decision == "approved" and _fingerprint(flow, phase) != before:
                if verdict.grant is not None:
                    self.grants.remove(verdict.grant.id)
                verdict = Verdict("denied", "gateway", None,
                                  "the call was changed while it was held: an approval covers "
                                  "only the call the reviewer saw", time.time())
            await self._finish(flow, held, approval, verdict)
        finally:
            self.held.remove(held.id)
            self._wake.pop(held.id, None)
            if flow.intercepted:
                flow.resume()  # mitmproxy itself waits for the flow to be resumed
            await _show(flow)

    # -- `hold: return`: answered at once, decided later, retried ---------------------------

    async def _hold_returning(self, flow: http.HTTPFlow, held: HeldCall,
                              approval: dict[str, Any]) -> None:
        """A `return` hold: a retry of a call held earlier gets that hold's decision (once), or
        is told again that it is pending; a new call is put up for review and answered
        `approval_pending` at once, with the approval id."""
        try:
            earlier, verdict = await self._earlier_return(held)
        except ControlUnavailable as exc:
            logger.error("toolgate: cannot look up the approval of %s: %s", held.call_id, exc)
            refuse(flow, _fleet_unavailable(held))
            return
        if earlier is not None and verdict is None:
            self._answer_pending(flow, earlier, approval, again=True)
            return
        if earlier is not None and verdict is not None:
            retried = Verdict(verdict.decision, verdict.channel, verdict.reviewer,
                              f"{verdict.decision} on held call {earlier.id}: {verdict.reason}",
                              time.time(), argument_hash=held.argument_hash)
            await self._finish(flow, held, approval, retried)
            return
        if held.expires_at <= held.requested_at:
            await self._finish(flow, held, approval, _expired_at_once(held.requested_at))
            return
        if not await self._shared(flow, held):
            return
        self.held.add(held)
        self.returned[held.binding] = held
        self._wake[held.id] = asyncio.Event()
        task = asyncio.get_running_loop().create_task(self._await_return(held))
        self._tasks.add(task)
        self._recording[held.id] = task
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _: self._recording.pop(held.id, None))
        self._notify(held)
        logger.info("toolgate: held %s [%s] for %s, answered at once: %s (rule %s; approvers: "
                    "%s)", held.call_id, held.id, held.caller, held.shown, held.rule,
                    ", ".join(held.approvers))
        self._answer_pending(flow, held, approval)

    async def _shared(self, flow: http.HTTPFlow, held: HeldCall) -> bool:
        """In a fleet, put `held` where every node's reviewers see it; False (and the call
        refused 503) if the control plane cannot take it."""
        if self.fleet is None:
            return True
        try:
            await self.fleet.hold(held)
        except ControlUnavailable as exc:
            logger.error("toolgate: not holding %s: %s", held.call_id, exc)
            refuse(flow, _fleet_unavailable(held))
            return False
        return True

    async def _earlier_return(self, held: HeldCall) -> tuple[HeldCall | None, Verdict | None]:
        """The `return` hold that `held` retries, if any, and its decision (now used up)."""
        now = time.time()
        if self.fleet is not None:
            return await self.fleet.earlier_return(held, now)
        earlier = self.returned.get(held.binding)
        if earlier is None:
            return None, None
        if earlier.verdict is None:
            return earlier, None
        if recording := self._recording.get(earlier.id):
            # Decided a moment ago: its record first (it may turn an approval into a denial).
            await asyncio.wait({recording}, timeout=RECORD_TIMEOUT)
        if self.returned.get(held.binding) is not earlier:
            return None, None  # another retry used it meanwhile
        del self.returned[held.binding]  # one decision, one call
        if now > earlier.retry_until:
            return None, None
        return earlier, earlier.verdict

    async def _await_return(self, held: HeldCall) -> None:
        """Waits for the decision on a `return` hold (nobody's connection does), records it and
        keeps it for the caller's retry."""
        try:
            while not await self._wait_decided(held, math.inf):
                pass
            assert held.verdict is not None
            verdict = await self._fleet_decision(held, held.verdict)
            self.stats[(verdict.decision, verdict.channel)] += 1
            if not await self._record(held, verdict) and verdict.decision == "approved":
                # Not on record: the retry must not go through on it.
                held.verdict = Verdict("denied", "gateway", None, "the approval could not be "
                                       "recorded", time.time())
            logger.info("toolgate: %s %s [%s] via %s by %s: %s (the caller's retry gets it)",
                        verdict.decision, held.call_id, held.id, verdict.channel,
                        verdict.reviewer or "-", verdict.reason)
        finally:
            self.held.remove(held.id)
            self._wake.pop(held.id, None)
            self._prune_returned()

    def _prune_returned(self) -> None:
        now = time.time()
        for key, earlier in list(self.returned.items()):
            if earlier.verdict is not None and now > earlier.retry_until:
                del self.returned[key]

    def _answer_pending(self, flow: http.HTTPFlow, held: HeldCall, approval: dict[str, Any],
                        again: bool = False) -> None:
        approvers = ", ".join(held.approvers)
        admin = self.admin_url or "http://127.0.0.1:8090"
        refuse(flow, Refusal(
            "approval_pending",
            f"{'still ' if again else ''}waiting for an approval by {approvers} (held call "
            f"{held.id}: {held.message}); retry this same call once it is decided",
            held.rule, held.field,
            extra={"approval": {
                "id": held.id, "status": "pending", "approvers": list(held.approvers),
                "requested_at": iso(held.requested_at), "expires_at": iso(held.expires_at),
                "where": f"{admin}/api/approvals/{held.id}",
                "cli": f"toolgate approvals approve {held.id} --reason TEXT --admin {admin}",
            }}))
        flow.marked = MARK_HELD
        flow.comment = held.describe()

    async def _wait_decided(self, held: HeldCall, poll: float) -> bool:
        """Wait up to `poll` seconds for a decision on `held`, expiring it at its timeout;
        whether it is decided."""
        remaining = held.expires_at - time.time()
        if remaining <= 0:
            self._settle(held, Verdict("expired", "timeout", None,
                                       "nobody decided before the approval timeout",
                                       time.time()))
            return True
        try:
            await asyncio.wait_for(self._wake[held.id].wait(), min(poll, remaining))
        except TimeoutError:
            pass
        return held.verdict is not None

    async def _fleet_decision(self, held: HeldCall, verdict: Verdict) -> Verdict:
        """In a fleet, the decision the control plane has first (`FleetLink.claim`)."""
        if self.fleet is not None and not held.claimed:
            verdict = held.verdict = await self.fleet.claim(held, verdict)
            held.claimed = True
        return verdict

    async def _await_verdict(self, flow: http.HTTPFlow, held: HeldCall) -> Verdict:
        while held.verdict is None:
            if await self._wait_decided(held, POLL):
                break
            now = time.time()
            if flow.error is not None and flow.error.msg == Error.KILLED_MESSAGE:
                self._settle(held, Verdict("denied", "mitmweb", "mitmweb", "aborted in mitmweb",
                                           now))
            elif not flow.intercepted:
                self._settle(held, Verdict("approved", "mitmweb", "mitmweb",
                                           "resumed in mitmweb", now,
                                           argument_hash=held.argument_hash))
            elif _caller_gone(flow):
                self._settle(held, Verdict("expired", "disconnect", None,
                                           "the caller disconnected while the call was held",
                                           now))
        assert held.verdict is not None
        return held.verdict

    async def _finish(self, flow: http.HTTPFlow, held: HeldCall, approval: dict[str, Any],
                      verdict: Verdict) -> None:
        """Record the decision, then release the call or answer it."""
        approval["verdict"] = {**verdict.as_json(), "held_id": held.id}
        policy = approval.setdefault("policy_comment", flow.comment)  # policy's own summary
        self.stats[(verdict.decision, verdict.channel)] += 1
        recorded = await self._record(held, verdict)
        logger.info("toolgate: %s %s [%s] via %s by %s: %s", verdict.decision, held.call_id,
                    held.id, verdict.channel, verdict.reviewer or "-", verdict.reason)
        if verdict.decision == "approved":
            if not recorded and _audit():
                refuse(flow, Refusal("unrecorded", "the approval could not be recorded, so "
                                     "this call was not forwarded; the gateway's log says why"))
                return
            approved = flow.metadata.setdefault(flowmeta.APPROVED_RULES, [])
            if held.rule not in approved:
                approved.append(held.rule)
            flow.marked = MARK_APPROVED
            flow.comment = (f"approved [{held.id}] by {verdict.reviewer} via {verdict.channel}: "
                            f"{verdict.reason} · {verdict.scope} · caller {held.caller}\n{policy}")
            return
        flow.marked = MARK_DENIED
        if verdict.decision == "denied":
            who = verdict.reviewer if verdict.reviewer not in (None, "mitmweb") else None
            message = (f"denied{' by ' + who if who else ''} via {verdict.channel}: "
                       f"{verdict.reason} ({held.message})")
            refusal = Refusal("denied", message, held.rule, held.field)
        else:
            approvers = ", ".join(held.approvers) or "a reviewer"
            refusal = Refusal("approval_timeout", f"{verdict.reason} ({held.message}; "
                              f"approvers: {approvers})", held.rule, held.field)
        flow.comment = (f"{verdict.decision} [{held.id}] via {verdict.channel}: {verdict.reason} · "
                        f"caller {held.caller}\n{policy}")
        refuse(flow, refusal)

    async def _record(self, held: HeldCall, verdict: Verdict) -> bool:
        record = ApprovalDecision(
            call_id=held.call_id, requested_at=held.requested_at,
            decided_at=verdict.decided_at, decision=verdict.decision,
            reviewer=verdict.reviewer, channel=verdict.channel, reason=verdict.reason,
            scope=verdict.scope, held_id=held.id, subject=held.subject,
            function=held.function, rule=held.rule,
            grant_seconds=verdict.grant.seconds if verdict.grant else None,
        )
        ok = True
        for log in self.logs:
            try:
                pending = log.record(record)
                if inspect.isawaitable(pending):
                    await asyncio.wait_for(pending, RECORD_TIMEOUT)
            except Exception as exc:  # noqa: BLE001 - any failure means "not recorded"
                ok = False
                logger.error("toolgate: could not record the %s decision on call %s in %s: %s",
                             verdict.decision, held.call_id, type(log).__name__, exc)
        return ok

    def _held_call(self, flow: http.HTTPFlow, approval: dict[str, Any], phase: str) -> HeldCall:
        identity = flow.metadata.get(flowmeta.IDENTITY) or {}
        request = flow.request
        now = time.time()
        timeout = effective_timeout(ctx.options.toolgate_approval_timeout, approval.get("timeout"))
        function = approval.get("function")
        shown = flowmeta.shown_function(flow.metadata, function)
        return HeldCall(
            id=new_held_id(), call_id=call_id_of(flow),
            subject=identity.get("subject"), groups=tuple(identity.get("groups") or ()),
            anonymous=bool(identity.get("anonymous")) or not identity.get("subject"),
            function=function, rule=approval.get("rule"),
            approvers=tuple(approval.get("approvers") or ()),
            message=approval.get("message") or "this call needs an approval",
            field=approval.get("field"),
            request=flowmeta.shown_function(flow.metadata,
                                            f"{request.method} {request.path.split('?')[0]}"),
            arguments=_arguments(flow, approval), result=approval.get("result"),
            argument_hash=argument_hash(request.method, request.path, request.raw_content),
            requested_at=now, expires_at=now + timeout, phase=phase,
            # A retry is known by its caller: an anonymous call is held the waiting way.
            hold="return" if (approval.get("hold") == "return" and phase == "request"
                              and identity.get("subject")
                              and not identity.get("anonymous")) else "wait",
            shown_function=shown if shown != function else None,
        )

    # -- notification -----------------------------------------------------------------------

    def _notify(self, held: HeldCall) -> None:
        url = ctx.options.toolgate_webhook
        if not url:
            return
        task = asyncio.get_running_loop().create_task(self._post_webhook(url, held))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post_webhook(self, url: str, held: HeldCall) -> None:
        payload = webhook_payload(held, self.admin_url)
        if self._webhook_pool is None:
            self._webhook_pool = ThreadPoolExecutor(WEBHOOK_THREADS,
                                                    thread_name_prefix="toolgate-webhook")
        try:
            await asyncio.get_running_loop().run_in_executor(
                self._webhook_pool, _post_json, url, payload, WEBHOOK_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - a webhook never decides anything
            self.webhook_failures += 1
            logger.warning("toolgate: the webhook %s failed for held call %s: %s", url,
                           held.id, exc)


def _expired_at_once(now: float) -> Verdict:
    return Verdict("expired", "timeout", None, "toolgate_approval_timeout is 0: calls that "
                   "need an approval are denied at once", now)


def _fleet_unavailable(held: HeldCall) -> Refusal:
    return Refusal("unavailable", "the fleet's control plane cannot be reached, so this call "
                   "could not be held for approval; try again later", held.rule, held.field)


def _from_row(row: dict[str, Any]) -> HeldCall:
    held = HeldCall.from_state(row["held"])
    held.node = row["node_id"]
    return held


def webhook_payload(held: HeldCall, admin_url: str | None) -> dict[str, Any]:
    """What the webhook receives: the held call, and how to approve or deny it."""
    admin = admin_url or "http://127.0.0.1:8090"
    return {
        "event": "toolgate.approval.held",
        **held.summary(),
        "caller": held.caller, "groups": list(held.groups), "approvers": list(held.approvers),
        "message": held.message, "access_review": held.access_review, "request": held.request,
        "how_to_approve": {
            "cli": f"toolgate approvals approve {held.id} --reason TEXT [--for 30m] "
                   f"--admin {admin}",
            "cli_deny": f"toolgate approvals deny {held.id} --reason TEXT --admin {admin}",
            "api": f"POST {admin}/api/approvals/{held.id}/approve",
            "api_deny": f"POST {admin}/api/approvals/{held.id}/deny",
            "mitmweb": "Resume approves, Abort denies",
        },
    }


def _post_json(url: str, payload: dict[str, Any], timeout: float) -> None:
    """Blocking: runs in a worker thread, never on the event loop."""
    data = json.dumps(payload, default=str).encode()
    request = urllib.request.Request(url, data=data, method="POST",
                                     headers={"Content-Type": "application/json",
                                              "User-Agent": "toolgate"})
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        answer.read(1024)


def _arguments(flow: http.HTTPFlow, approval: dict[str, Any]) -> Any:
    """The held call's arguments as a reviewer sees them (masked): for a REST call its body and
    query; for a tool call the tool's arguments (those policy decided, or on a held answer those
    of the request it answers), never the message around them."""
    request = flow.request
    body = None if "content-encoding" in request.headers else request.raw_content
    if approval.get("protocol", "rest") == "rest":
        return arguments_view(request.path, body)
    if "arguments" in approval:
        return approval["arguments"]
    try:  # an answer is held: find the request's unit it answers
        message = parse_request(request.path.split("?", 1)[0],
                                request.headers.get("content-type"),
                                request.get_content(strict=True) or b"", request.headers)
    except Exception:  # noqa: BLE001 - an unparsable request is shown as it is
        return arguments_view(request.path, body)
    rpc_id = approval.get("rpc_id")
    for unit in message.units:
        if (unit.direction == "request" and unit.function == approval.get("function")
                and (rpc_id is None or unit.rpc_id == rpc_id)):
            return unit.body
    return arguments_view(request.path, body)


def _fingerprint(flow: http.HTTPFlow, phase: str) -> str:
    request = flow.request
    parts = [request.method.encode(), request.url.encode(),
             repr(sorted(request.headers.items(multi=True))).encode(),
             request.raw_content or b""]
    if phase == "response" and flow.response is not None:
        parts += [str(flow.response.status_code).encode(),
                  repr(sorted(flow.response.headers.items(multi=True))).encode(),
                  flow.response.raw_content or b""]
    return fingerprint(parts)


def _caller_gone(flow: http.HTTPFlow) -> bool:
    """The client closed its side: mitmproxy would drop the answer anyway."""
    conn = flow.client_conn
    return conn.timestamp_end is not None or not (conn.state & ConnectionState.CAN_READ)


async def _record_held(flow: http.HTTPFlow, held: HeldCall) -> bool:
    """The session store, when the recorder offers it, records the call as held before anyone
    sees it held: a gateway killed while it waits still leaves it on record."""
    recorder = ctx.master.addons.get("recorder")
    record_held = getattr(recorder, "record_held", None)
    return not callable(record_held) or await record_held(flow, held.requested_at)


def _audit() -> bool:
    return getattr(ctx.options, "toolgate_durability", "audit") == "audit"


async def _show(flow: http.HTTPFlow) -> None:
    """Tell mitmweb (and other addons) that the flow changed."""
    await ctx.master.addons.trigger_event(hooks.UpdateHook([flow]))
