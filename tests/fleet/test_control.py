"""The control plane's SQL against a real PostgreSQL: one first decision per held call, however
many nodes race for it; grants in force; a restarted node's leftovers; what is listed; what a
lost database looks like to the caller of every operation."""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest

from toolgate.addons.approvals.holds import Grant, HeldCall, Verdict
from toolgate.sessions.control import ControlPlane, ControlUnavailable, check_url, redact_url


def held_state(held_id: str, timeout: float = 300) -> dict:
    now = time.time()
    return HeldCall(
        id=held_id, call_id=f"call-{held_id}", subject="bob", groups=("sre",), anonymous=False,
        function="deploy.start", rule="demo-deploys-need-approval", approvers=("sre-leads",),
        message="deploys need a lead", field=None, request="POST /deploy",
        arguments={"service": "api"}, argument_hash="ab" * 32, requested_at=now,
        expires_at=now + timeout,
    ).state()


def run(work):
    return asyncio.run(work)


def test_the_first_decision_wins_whoever_races_for_it(control_url):
    async def check():
        nodes = [ControlPlane(control_url, name) for name in ("gw-a", "gw-b", "gw-c")]
        for node in nodes:
            await node.join("http://127.0.0.1:1", time.time())
        await nodes[1].hold(held_state("h1"))
        verdicts = [Verdict("approved" if i % 2 else "denied", "admin", f"r{i}", "why",
                            time.time()) for i in range(3)]
        outcomes = await asyncio.gather(*(
            node.decide("h1", v.decision, v.state()) for node, v in zip(nodes, verdicts)))
        winners = [o for o in outcomes if o["won"]]
        assert len(winners) == 1
        first = winners[0]["row"]["verdict"]
        for outcome in outcomes:
            if not outcome["won"]:  # the losers are told what came first
                assert outcome["row"]["verdict"] == first
        (row,) = await nodes[0].decided(["h1", "unknown"])
        assert row["node_id"] == "gw-b" and Verdict.from_state(row["verdict"]).state() == first
        assert await nodes[2].pending() == []
        for node in nodes:
            await node.close()
    run(check())


def test_pending_lists_the_fleets_waiting_calls_oldest_first(control_url):
    async def check():
        a, b = ControlPlane(control_url, "gw-a"), ControlPlane(control_url, "gw-b")
        await a.join(None, time.time())
        await b.join(None, time.time())
        await b.hold(held_state("old"))
        await a.hold(held_state("new"))
        await a.hold(held_state("gone", timeout=-1))  # past its timeout: not listed
        listed = await a.pending()
        assert [(r["held_id"], r["node_id"]) for r in listed] == [("old", "gw-b"),
                                                                   ("new", "gw-a")]
        again = HeldCall.from_state(listed[0]["held"])
        assert again.approvers == ("sre-leads",) and again.arguments == {"service": "api"}
        assert (await b.get("call-new"))["held_id"] == "new"  # by the caller's call id too
        assert await b.get("nothing") is None
        await a.close()
        await b.close()
    run(check())


def test_a_restarted_node_expires_what_its_last_run_held(control_url):
    async def check():
        node = ControlPlane(control_url, "gw-a")
        await node.join(None, time.time())
        await node.hold(held_state("left"))
        await node.close()
        again = ControlPlane(control_url, "gw-a")
        assert await again.join(None, time.time() + 1) == 1
        (row,) = await again.decided(["left"])
        assert row["status"] == "expired" and row["verdict"]["channel"] == "gateway"
        await again.close()
    run(check())


def test_grants_are_stored_with_the_decision_that_made_them_and_end_on_their_own(control_url):
    async def check():
        node = ControlPlane(control_url, "gw-a")
        await node.join(None, time.time())
        await node.hold(held_state("h"))
        now = time.time()
        grant = Grant("g-1", "bob", "deploy.start", "demo-deploys-need-approval", None, now,
                      now + 600, "carol", "window", "h")
        short = Grant("g-2", "bob", "x", "r", None, now - 10, now - 1, "carol", "old", "h")
        verdict = Verdict("approved", "admin", "carol", "window", now, grant)
        assert (await node.decide("h", "approved", verdict.state(), grant.state()))["won"]
        assert [Grant.from_state(g) for g in await node.grants()] == [grant]
        # a losing decision never stores its grant
        lost = await node.decide("h", "approved", verdict.state(), short.state())
        assert not lost["won"] and len(await node.grants()) == 1
        await node.close()
    run(check())


def test_decisions_are_announced_to_listeners(control_url):
    async def check():
        listener, reviewer = ControlPlane(control_url, "gw-b"), ControlPlane(control_url, "gw-a")
        await listener.join(None, time.time())
        await listener.hold(held_state("h"))
        notices: list[dict] = []
        connected = asyncio.Event()

        async def on_connect():
            connected.set()
        task = asyncio.create_task(listener.listen(notices.append, on_connect))
        await asyncio.wait_for(connected.wait(), 10)
        verdict = Verdict("denied", "admin", "carol", "no", time.time())
        await reviewer.decide("h", "denied", verdict.state())
        for _ in range(100):
            if notices:
                break
            await asyncio.sleep(0.02)
        assert notices == [{"kind": "decided", "held_id": "h", "node": "gw-b", "by": "gw-a",
                            "grant": None}]
        task.cancel()
        await listener.close()
        await reviewer.close()
    run(check())


def test_an_unreachable_database_is_one_clear_error(control_url):
    dead = control_url.rsplit("@", 1)[0] + "@127.0.0.1:1/toolgate"

    async def check():
        node = ControlPlane(dead, "gw-a")
        with pytest.raises(ControlUnavailable) as caught:
            await node.hold(held_state("h"))
        assert "cannot be reached" in str(caught.value)
        assert not node.connected and node.last_error
        password = psycopg.conninfo.conninfo_to_dict(control_url).get("password")
        assert password and password not in str(caught.value)
    run(check())


def test_urls_are_checked_and_shown_without_their_password():
    assert redact_url("postgresql://tg:s3cret@127.0.0.1:5432/db") == \
        "postgresql://tg:***@127.0.0.1:5432/db"
    with pytest.raises(ValueError) as caught:
        check_url("mysql://tg:s3cret@host/db")
    assert "s3cret" not in str(caught.value)
