"""The approvals addon with a control plane (a real PostgreSQL), under mitmproxy's test
context: a hold the fleet cannot take is refused, a decision taken on another node releases
the call held here, and a decision taken here that the fleet cannot record never lets the call
through."""

from __future__ import annotations

import asyncio
import time

from approval_flows import approval_flow, error_of, hold, until
from mitmproxy.test import taddons

from toolgate.addons.approvals.addon import Approvals
from toolgate.addons.approvals.holds import Verdict
from toolgate.sessions.control import ControlPlane

LEAD = {"subject": "carol", "issuer": "i", "groups": ["sre-leads"], "token_id": None,
        "anonymous": False}


def with_fleet(check, control_url: str, node: str = "gw-a") -> None:
    async def scenario():
        approvals = Approvals()
        with taddons.context(approvals) as tctx:
            tctx.configure(approvals, toolgate_control=control_url, toolgate_node=node)
            approvals.running()
            try:
                await check(approvals)
            finally:
                approvals.done()

    asyncio.run(scenario())


def dead(control_url: str) -> str:
    return control_url.rsplit("@", 1)[0] + "@127.0.0.1:1/toolgate"


def test_a_hold_the_control_plane_cannot_take_is_refused(control_url):
    async def check(approvals):
        flow = approval_flow()
        await asyncio.wait_for(approvals.request(flow), 10)
        assert flow.response.status_code == 503 and error_of(flow)["code"] == "unavailable"
        assert "control plane" in error_of(flow)["message"]
        assert not flow.intercepted and approvals.held.pending() == []
        assert list(approvals.memory.records) == []  # nothing was decided: nothing was held

    with_fleet(check, dead(control_url))


def test_a_decision_taken_on_another_node_releases_the_call_held_here(control_url):
    async def check(approvals):
        flow = approval_flow()
        task, held = await hold(approvals, flow)
        other = ControlPlane(control_url, "gw-b")
        listed = await other.pending()
        assert [(r["held_id"], r["node_id"]) for r in listed] == [(held.id, "gw-a")]
        verdict = Verdict("approved", "admin", "carol", "ship it", time.time(),
                          argument_hash=held.argument_hash)
        assert (await other.decide(held.id, "approved", verdict.state()))["won"]
        await asyncio.wait_for(task, 5)
        await other.close()
        assert flow.response is None and not flow.intercepted  # released, on its way
        (record,) = approvals.memory.records
        assert (record.decision, record.reviewer, record.channel, record.reason) == (
            "approved", "carol", "admin", "ship it")
        assert approvals.fleet.remote_decisions == 1

    with_fleet(check, control_url)


def test_a_review_through_this_node_decides_a_call_held_on_another(control_url):
    async def check(approvals):
        holder = ControlPlane(control_url, "gw-b")
        await holder.join(None, time.time())
        flow = approval_flow()
        task, held = await hold(approvals, flow)  # a hold of this node, for a neighbour's
        other_state = {**held.state(), "id": "elsewhere", "call_id": "c-elsewhere"}
        await holder.hold(other_state)
        _, verdict = await approvals.review("deny", "c-elsewhere", LEAD, "not today")
        assert verdict.decision == "denied"
        (row,) = await holder.decided(["elsewhere"])
        assert row["status"] == "denied" and row["verdict"]["reviewer"] == "carol"
        assert not task.done()  # this node's own call still waits
        _, mine = await approvals.review("approve", held.id, LEAD, "fine")
        await asyncio.wait_for(task, 5)
        assert mine.decision == "approved" and flow.response is None
        await holder.close()

    with_fleet(check, control_url)


def test_a_decision_taken_here_that_the_fleet_cannot_record_is_a_denial(control_url):
    async def check(approvals):
        flow = approval_flow()
        task, held = await hold(approvals, flow)
        plane = approvals.fleet.plane
        await plane.close()
        plane.url = dead(control_url)  # the database is gone from now on
        approvals.approve_flows([flow], "looks", "fine")  # Resume, from mitmweb
        await asyncio.wait_for(task, 10)
        assert flow.response.status_code == 403 and error_of(flow)["code"] == "denied"
        assert "could not be recorded in the fleet" in error_of(flow)["message"]
        (record,) = approvals.memory.records
        assert (record.decision, record.channel) == ("denied", "gateway")

    with_fleet(check, control_url)


def test_a_timeout_here_loses_to_the_decision_the_fleet_took_first(control_url):
    async def check(approvals):
        flow = approval_flow()
        task, held = await hold(approvals, flow)
        other = ControlPlane(control_url, "gw-b")
        first = Verdict("denied", "admin", "carol", "first", time.time())
        assert (await other.decide(held.id, "denied", first.state()))["won"]
        late = Verdict("expired", "timeout", None, "nobody decided", time.time())
        assert (await approvals.fleet.claim(held, late)).state() == first.state()
        await asyncio.wait_for(task, 5)  # the notification releases it: denied, by carol
        assert error_of(flow)["code"] == "denied" and "carol" in error_of(flow)["message"]
        await other.close()

    with_fleet(check, control_url)
