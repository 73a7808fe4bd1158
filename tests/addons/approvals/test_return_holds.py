"""`hold: return` under mitmproxy's test context: the caller is answered `approval_pending` at
once, retries attach to the same approval, the decision is used by one identical retry, and a
denial or a timeout refuses it with the decision."""

import asyncio
import json
import time

from approval_flows import approval_flow, error_of, until
from test_approvals_addon import LEAD, with_approvals

from toolgate.addons.approvals.holds import Verdict


def returning(subject="bob", body=b'{"service": "api"}', timeout=None, mcp=False):
    flow = approval_flow(subject=subject, body=body, timeout=timeout, mcp=mcp)
    flow.metadata["toolgate.approval"]["hold"] = "return"
    return flow


async def ask(approvals, flow):
    await asyncio.wait_for(approvals.request(flow), 5)
    return flow


def pending_of(flow):
    """The pending approval a caller was told of: 409 JSON, or (MCP) a JSON-RPC error."""
    answer = json.loads(flow.response.content)
    if "jsonrpc" in answer:
        assert flow.response.status_code == 200
        error = answer["error"]["data"]
    else:
        assert flow.response.status_code == 409
        error = answer["error"]
    assert error["code"] == "approval_pending"
    return error["approval"]


def test_the_caller_is_answered_at_once_and_the_approval_waits_for_a_reviewer():
    async def check(approvals):
        flow = await ask(approvals, returning())
        approval = pending_of(flow)
        assert approval["status"] == "pending" and approval["approvers"] == ["sre-leads"]
        assert approval["id"] in approval["cli"] and approval["where"].endswith(approval["id"])
        assert not flow.intercepted and flow.marked  # answered, shown as held in mitmweb
        (held,) = approvals.held.pending()
        assert held.id == approval["id"] and held.hold == "return"
        assert held.summary()["hold"] == "return"

    with_approvals(check)


def test_retries_attach_to_the_pending_approval_and_an_approval_lets_one_retry_through():
    async def check(approvals):
        first = pending_of(await ask(approvals, returning()))
        again = pending_of(await ask(approvals, returning()))
        assert again["id"] == first["id"] and len(approvals.held.pending()) == 1
        assert "still waiting" in error_of(await ask(approvals, returning()))["message"]

        verdict = approvals.approve(first["id"], LEAD, "ship it")
        assert verdict.decision == "approved"
        await until(lambda: not approvals.held.pending())  # decided and recorded
        retry = await ask(approvals, returning())
        assert retry.response is None  # let through, on its way to the backend
        decisions = [(r.call_id, r.decision, r.reviewer) for r in approvals.memory.records]
        assert decisions[-1] == (retry.metadata["toolgate.call_id"], "approved", "carol")
        assert "on held call " + first["id"] in approvals.memory.records[-1].reason
        # used up: the next identical call needs an approval of its own
        third = pending_of(await ask(approvals, returning()))
        assert third["id"] != first["id"]

    with_approvals(check)


def test_an_approval_binds_the_exact_arguments_and_the_caller():
    async def check(approvals):
        first = pending_of(await ask(approvals, returning()))
        approvals.approve(first["id"], LEAD, "this one")
        await until(lambda: not approvals.held.pending())
        other_args = await ask(approvals, returning(body=b'{"service": "db"}'))
        assert pending_of(other_args)["id"] != first["id"]
        other_caller = await ask(approvals, returning(subject="mallory"))
        assert pending_of(other_caller)["id"] != first["id"]
        assert (await ask(approvals, returning())).response is None  # bob's, still there

    with_approvals(check)


def test_a_denied_or_expired_approval_refuses_the_retry_with_the_decision():
    async def check(approvals):
        first = pending_of(await ask(approvals, returning(mcp=True)))
        approvals.deny(first["id"], LEAD, "not during the freeze")
        await until(lambda: not approvals.held.pending())
        retry = await ask(approvals, returning(mcp=True))
        answer = json.loads(retry.response.content)
        assert retry.response.status_code == 200 and answer["id"] == 7  # JSON-RPC, own id
        assert answer["error"]["data"]["code"] == "denied"
        assert "not during the freeze" in answer["error"]["message"]

        timed = pending_of(await ask(approvals, returning(body=b'{"n": 1}', timeout=0.2)))
        await until(lambda: not approvals.held.pending(), timeout=3)
        late = await ask(approvals, returning(body=b'{"n": 1}', timeout=0.2))
        assert error_of(late)["code"] == "approval_timeout"
        expired = [r for r in approvals.memory.records if r.decision == "expired"]
        assert expired[0].channel == "timeout" and timed["id"] in {r.held_id for r in expired}

    with_approvals(check)


def test_a_pending_json_rpc_call_gets_a_json_rpc_error_with_the_approval():
    async def check(approvals):
        flow = await ask(approvals, returning(mcp=True))
        answer = json.loads(flow.response.content)
        assert flow.response.status_code == 200 and answer["id"] == 7
        data = answer["error"]["data"]
        assert data["code"] == "approval_pending" and data["approval"]["status"] == "pending"

    with_approvals(check)


def test_an_anonymous_caller_waits_instead():
    async def check(approvals):
        flow = returning(subject=None)
        task = asyncio.create_task(approvals.request(flow))
        (held,) = await until(approvals.held.pending)
        assert held.hold == "wait" and flow.intercepted and not task.done()
        approvals._settle(held, Verdict("denied", "mitmweb", "mitmweb", "no", time.time()))
        await asyncio.wait_for(task, 2)

    with_approvals(check)


def test_mitmweb_decides_a_returned_call_by_its_flow():
    async def check(approvals):
        flow = await ask(approvals, returning())
        approval = pending_of(flow)
        approvals.approve_flows([flow], "fine")
        await until(lambda: approvals.memory.records)  # decided, then recorded
        (record,) = approvals.memory.records
        assert (record.held_id, record.channel) == (approval["id"], "mitmweb")

    with_approvals(check)


def test_stopping_the_gateway_records_the_pending_returns_as_denied():
    async def check(approvals):
        pending_of(await ask(approvals, returning()))
        approvals.done()
        await until(lambda: approvals.memory.records)  # recorded on the hold's own task
        (record,) = approvals.memory.records
        assert (record.decision, record.channel) == ("denied", "gateway")

    with_approvals(check)
