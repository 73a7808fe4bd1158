"""The approvals addon's link to the fleet's control plane (`toolgate_control`).

With a control plane, a held call is put in PostgreSQL before its caller is told to wait, so
that any node's reviewers see it, and every decision, whoever takes it, is the control plane's
first one (`ControlPlane.decide`). The node whose caller waits learns of a decision taken
elsewhere from a notification, or at the latest from its next poll (`POLL`), and releases the
call as if it had been decided here. Grants are read from the control plane into the addon's
own `Grants`, so a call covered by one is let through without a round trip.

Without the control plane (it is down, or not reached yet), what needs it fails closed: a call
that should be held is refused 503 `unavailable`, a reviewer's decision is refused 503, and a
decision taken here (mitmweb, a timeout) that cannot be recorded there is a denial. Calls that
need no approval go on as before, recorded in the node's own store.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from toolgate.addons.approvals.holds import Grant, HeldCall, Verdict
from toolgate.sessions import hashchain
from toolgate.sessions.control import ControlPlane, ControlUnavailable, redact_url

if TYPE_CHECKING:
    from toolgate.addons.approvals.addon import Approvals

logger = logging.getLogger(__name__)

POLL = 1.0  # seconds between heartbeats, grant refreshes and looks for missed decisions


class FleetLink:
    def __init__(self, approvals: "Approvals", url: str, node_id: str) -> None:
        self.approvals, self.node_id = approvals, node_id
        self.plane = ControlPlane(url, node_id)
        self.started_at = time.time()
        self.joined = False
        self.remote_decisions = 0  # decisions taken on other nodes that released calls here
        # Set by the tool pins addon: catches up with the fleet's pin events when told of some.
        self.on_tools: Callable[[], Coroutine[Any, Any, Any]] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def available(self) -> bool:
        return self.joined and self.plane.connected

    def health(self) -> dict[str, Any]:
        return {"node": self.node_id, "url": redact_url(self.plane.url),
                "connected": self.available, "error": self.plane.last_error}

    def start(self) -> None:
        self._spawn(self.plane.listen(self._notice, self._catch_up))
        self._spawn(self._poll())

    def stop(self) -> None:
        """Stop listening and polling; the connection closes on the loop (or with the
        process, at exit)."""
        for task in list(self._tasks):
            task.cancel()
        asyncio.get_running_loop().create_task(self.plane.close())

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- what the approvals addon asks -------------------------------------------------------

    async def hold(self, held: HeldCall) -> None:
        """Raises ControlUnavailable: then the call must not be held."""
        if not self.joined:
            await self._join()
        held.node = self.node_id
        await self.plane.hold(held.state())

    async def claim(self, held: HeldCall, verdict: Verdict) -> Verdict:
        """Make a decision taken on this node (mitmweb, a timeout, a grant, a gone caller) the
        fleet's, unless someone decided first: then theirs. An approval the control plane
        cannot record becomes a denial."""
        try:
            outcome = await self.plane.decide(held.id, verdict.decision, verdict.state())
        except ControlUnavailable as exc:
            if verdict.decision != "approved":
                return verdict
            return Verdict("denied", "gateway", None, f"approved via {verdict.channel}, but "
                           f"the approval could not be recorded in the fleet: {exc}",
                           time.time())
        row = outcome["row"]
        if outcome["won"]:
            return verdict
        if row is None or not row.get("verdict"):
            return Verdict("denied", "gateway", None, "the held call is no longer in the "
                           "fleet's control plane", time.time())
        return Verdict.from_state(row["verdict"])

    async def earlier_return(self, held: HeldCall,
                             now: float) -> tuple[HeldCall | None, Verdict | None]:
        """The `return` hold of the fleet that `held` retries (held on any node), and its
        decision, used up by this call; (hold, None) while it is pending."""
        row = await self.plane.find_return(held.binding)
        if row is None:
            return None, None
        earlier = HeldCall.from_state(row["held"])
        earlier.node = row["node_id"]
        if row["status"] != "pending":
            earlier.verdict = Verdict.from_state(row["verdict"])
        elif row["expires_at"] > now:
            return earlier, None
        else:  # its node is gone, or has not expired it yet
            earlier.verdict = Verdict("expired", "timeout", None, "nobody decided before the "
                                      "approval timeout", row["expires_at"])
        if now > earlier.retry_until or not await self.plane.consume(earlier.id):
            return None, None  # too late, or another retry used the decision: a new hold
        return earlier, earlier.verdict

    # -- keeping up ----------------------------------------------------------------------------

    async def _join(self) -> None:
        expired = await self.plane.join(self.approvals.admin_url, self.started_at)
        self.joined = True
        if expired:
            logger.warning("toolgate: %d call(s) this node held before it last stopped were "
                           "expired in the fleet's control plane", expired)
        logger.info("toolgate: node %s joined the fleet's control plane", self.node_id)

    async def _poll(self) -> None:
        lost = False  # said once per outage, not every second of it
        while True:
            try:
                if not self.joined:
                    await self._join()
                # a file read: off the loop
                heads = await asyncio.to_thread(_heads, self.approvals.store_path())
                await self.plane.heartbeat(self.approvals.admin_url, heads)
                await self._catch_up()
                if lost:
                    logger.warning("toolgate: node %s reaches the fleet's control plane again",
                                   self.node_id)
                lost = False
            except ControlUnavailable as exc:
                if not lost:
                    logger.error("toolgate: %s; calls that need an approval are refused until "
                                 "it is back", exc)
                lost = True
            await asyncio.sleep(POLL)

    async def _catch_up(self) -> None:
        """What notifications may have missed: decisions on this node's calls, new grants,
        pin events."""
        await self._refresh_grants()
        waiting = [h.id for h in self.approvals.held.pending()]
        for row in await self.plane.decided(waiting):
            self._apply(row)
        if self.on_tools is not None:
            await self.on_tools()

    def _notice(self, payload: dict[str, Any]) -> None:
        if payload.get("by") == self.node_id:
            return  # this node's own decisions and pin events are applied where it takes them
        if payload.get("kind") == "tools" and self.on_tools is not None:
            self._spawn(self._quietly(self.on_tools()))
        if payload.get("kind") != "decided":
            return
        if payload.get("node") == self.node_id:
            self._spawn(self._fetch([str(payload["held_id"])]))
        if payload.get("grant"):
            self._spawn(self._quietly(self._refresh_grants()))

    async def _fetch(self, held_ids: list[str]) -> None:
        try:
            rows = await self.plane.decided(held_ids)
        except ControlUnavailable:
            return  # the next poll tries again
        for row in rows:
            self._apply(row)

    def _apply(self, row: dict[str, Any]) -> None:
        held = self.approvals.held.get(row["held_id"])
        if held is None or held.claimed or not row.get("verdict"):
            return
        self.remote_decisions += 1
        self.approvals.settle_claimed(held, Verdict.from_state(row["verdict"]))

    async def _refresh_grants(self) -> None:
        now = time.time()
        grants = self.approvals.grants
        known = {g.id for g in grants.active(now)}
        for state in await self.plane.grants():
            grant = Grant.from_state(state)
            if grant.id not in known:
                grants.add(grant)
                self.approvals.release_covered(grant, now)

    @staticmethod
    async def _quietly(work: Coroutine[Any, Any, Any]) -> None:
        try:
            await work
        except ControlUnavailable:
            pass  # the next poll tries again


def _heads(store: str | None) -> dict[str, Any] | None:
    """A node's chain heads, from the head file its session store keeps."""
    if not store:
        return None
    try:
        heads = hashchain.read_head(hashchain.head_path(store))
    except ValueError:
        return None
    return {t: h.committed.as_dict() for t, h in (heads or {}).items()} or None
