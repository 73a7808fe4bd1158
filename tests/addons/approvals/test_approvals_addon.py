"""The approvals addon under mitmproxy's test context: holding, every way a held call ends, grants,
the mitmweb commands, the webhook, and the admin API's routing and reviewer checks."""

import asyncio
import datetime
import json
import uuid

import pytest
from mitmproxy.connection import ConnectionState
from mitmproxy.test import taddons, tflow, tutils

from approval_flows import approval_flow, error_of, hold, until

from toolgate.addons.approvals.admin import Admin, AdminRequest, metrics_text
from toolgate.addons.approvals.addon import Approvals, webhook_payload
from toolgate.addons.failclosed.hooks import unguarded_hooks
from toolgate.addons.identity.oidc import Caller, IdentityError

LEAD = {"subject": "carol", "issuer": "i", "groups": ["sre-leads"], "token_id": None,
        "anonymous": False}


def run(test):
    asyncio.run(test())


def with_approvals(check, **options) -> None:
    """`await check(approvals)` with an Approvals addon (given `options`) in mitmproxy's test
    context."""

    async def scenario():
        approvals = Approvals()
        with taddons.context(approvals) as tctx:
            if options:
                tctx.configure(approvals, **options)
            await check(approvals)

    asyncio.run(scenario())


def test_every_flow_hook_is_fail_closed():
    assert unguarded_hooks(Approvals()) == [] and unguarded_hooks(Admin()) == []


def test_a_held_call_waits_intercepted_and_is_released_once_approved():
    async def check(approvals):
        flow = approval_flow()
        task, held = await hold(approvals, flow)
        assert flow.intercepted and flow.marked == ":hourglass:"
        assert "deploys-need-approval" in flow.comment and "bob" in flow.comment
        assert not task.done()
        verdict = approvals.approve(held.id, LEAD, "looks right")
        await asyncio.wait_for(task, 2)
        assert flow.response is None and not flow.intercepted
        assert verdict.scope == f"call: arguments sha256:{held.argument_hash}"
        assert approvals.held.pending() == []
        record = approvals.memory.records[-1]
        assert (record.decision, record.reviewer, record.channel) == ("approved", "carol",
                                                                      "admin")
        assert flow.metadata["toolgate.approval"]["verdict"]["decision"] == "approved"

    with_approvals(check)


@pytest.mark.parametrize("mcp", [False, True])
def test_a_denied_call_gets_403_denied_in_its_protocols_shape(mcp):
    async def check(approvals):
        flow = approval_flow(mcp=mcp)
        task, held = await hold(approvals, flow)
        approvals.deny(held.id, LEAD, "not today", channel="cli")
        await asyncio.wait_for(task, 2)
        answer = json.loads(flow.response.content)
        if mcp:
            assert answer["id"] == 7 and answer["error"]["data"]["code"] == "denied"
            assert "not today" in answer["error"]["message"]
        else:
            assert flow.response.status_code == 403
            assert answer["error"]["code"] == "denied"
            assert answer["error"]["rule"] == "deploys-need-approval"
        assert approvals.memory.records[-1].channel == "cli"

    with_approvals(check)


def test_timeout_zero_denies_at_once_without_holding():
    async def check(approvals):
        flow = approval_flow(timeout=300)
        await asyncio.wait_for(approvals.request(flow), 1)
        assert flow.response.status_code == 403
        assert error_of(flow)["code"] == "approval_timeout"
        assert not flow.intercepted and len(approvals.held) == 0
        assert approvals.memory.records[-1].decision == "expired"

    with_approvals(check, toolgate_approval_timeout=0)


def test_an_undecided_call_times_out_with_the_rules_shorter_timeout():
    async def check(approvals):
        flow = approval_flow(timeout=0.3)  # the option is 300: the rule's is shorter
        await asyncio.wait_for(approvals.request(flow), 2)
        assert error_of(flow)["code"] == "approval_timeout"
        record = approvals.memory.records[-1]
        assert (record.decision, record.channel) == ("expired", "timeout")

    with_approvals(check)


def test_abort_in_mitmweb_answers_403_denied_instead_of_hanging():
    async def check(approvals):
        flow = approval_flow()
        task, _ = await hold(approvals, flow)
        flow.kill()  # what mitmweb's Abort does; it wakes nothing
        await asyncio.wait_for(task, 2)
        assert flow.live and flow.error is None  # revived to carry the answer
        assert flow.response.status_code == 403 and error_of(flow)["code"] == "denied"
        record = approvals.memory.records[-1]
        assert (record.decision, record.channel, record.reviewer) == ("denied", "mitmweb",
                                                                      "mitmweb")

    with_approvals(check)


def test_resume_in_mitmweb_approves():
    async def check(approvals):
        flow = approval_flow()
        task, _ = await hold(approvals, flow)
        flow.resume()
        await asyncio.wait_for(task, 2)
        assert flow.response is None
        record = approvals.memory.records[-1]
        assert (record.decision, record.channel) == ("approved", "mitmweb")

    with_approvals(check)


def test_a_caller_that_disconnects_is_recorded_and_its_entry_removed():
    async def check(approvals):
        flow = approval_flow()
        task, _ = await hold(approvals, flow)
        flow.client_conn.state = ConnectionState.CAN_WRITE  # the client closed its side
        await asyncio.wait_for(task, 2)
        assert len(approvals.held) == 0
        record = approvals.memory.records[-1]
        assert (record.decision, record.channel) == ("expired", "disconnect")

    with_approvals(check)


def test_a_call_changed_while_held_is_not_released_by_the_approval():
    async def check(approvals):
        flow = approval_flow()
        task, held = await hold(approvals, flow)
        flow.request.content = b'{"service": "everything"}'  # edited in mitmweb
        approvals.approve(held.id, LEAD, "ok")
        await asyncio.wait_for(task, 2)
        assert error_of(flow)["code"] == "denied" and "changed" in error_of(flow)["message"]

    with_approvals(check)


def test_the_commands_decide_from_mitmwebs_command_bar():
    async def scenario():
        approvals = Approvals()
        with taddons.context(approvals) as tctx:
            yes, no = approval_flow(), approval_flow()
            yes_task, _ = await hold(approvals, yes)
            no_task, _ = await hold(approvals, no)
            commands = tctx.master.commands.commands
            assert {"toolgate.approve", "toolgate.deny"} <= set(commands)
            commands["toolgate.approve"].func([yes], "ticket", "42")
            commands["toolgate.deny"].func([no])
            await asyncio.wait_for(asyncio.gather(yes_task, no_task), 2)
            assert yes.response is None and error_of(no)["code"] == "denied"
            reasons = {(r.decision, r.channel, r.reason) for r in approvals.memory.records}
            assert reasons == {("approved", "mitmweb", "ticket 42"),
                               ("denied", "mitmweb", "denied in mitmweb")}

    run(scenario)


def test_a_grant_lets_the_same_caller_through_and_no_one_else():
    async def check(approvals):
        first = approval_flow()
        task, held = await hold(approvals, first)
        approvals.approve(held.id, LEAD, "release", datetime.timedelta(minutes=10))
        await asyncio.wait_for(task, 2)
        again = approval_flow(body=b'{"service": "web"}')  # any arguments
        await asyncio.wait_for(approvals.request(again), 1)
        assert again.response is None and not again.intercepted
        assert approvals.memory.records[-1].channel == "grant"
        other = approval_flow(subject="alice")
        other_task, other_held = await hold(approvals, other)
        approvals.deny(other_held.id, LEAD, "no grant for alice")
        await asyncio.wait_for(other_task, 2)
        assert error_of(other)["code"] == "denied"

    with_approvals(check)


def test_a_same_args_grant_and_a_one_call_approval_do_not_cover_other_arguments():
    async def check(approvals):
        first = approval_flow()
        task, held = await hold(approvals, first)
        approvals.approve(held.id, LEAD, "only this", datetime.timedelta(minutes=10),
                          same_args=True)
        await task
        same = approval_flow()
        await asyncio.wait_for(approvals.request(same), 1)
        assert same.response is None
        different = approval_flow(body=b'{"service": "web"}')
        different_task, different_held = await hold(approvals, different)
        approvals.approve(different_held.id, LEAD, "just this one")  # one call
        await different_task
        different_again = approval_flow(body=b'{"service": "web"}')
        still_task, still = await hold(approvals, different_again)  # held again
        approvals.deny(still.id, LEAD, "enough")
        await still_task

    with_approvals(check)


def test_a_new_grant_releases_the_calls_it_covers_that_are_already_waiting():
    async def check(approvals):
        a, b = approval_flow(), approval_flow(body=b'{"service": "web"}')
        a_task, a_held = await hold(approvals, a)
        b_task, _ = await hold(approvals, b)
        approvals.approve(a_held.id, LEAD, "release", datetime.timedelta(minutes=5))
        await asyncio.wait_for(asyncio.gather(a_task, b_task), 2)
        assert a.response is None and b.response is None

    with_approvals(check)


def test_stopping_the_gateway_denies_what_is_held():
    async def check(approvals):
        flow = approval_flow()
        task, _ = await hold(approvals, flow)
        approvals.done()
        await asyncio.wait_for(task, 2)
        assert error_of(flow)["code"] == "denied"

    with_approvals(check)


def test_an_unrecorded_approval_does_not_release_the_call():
    class Broken:
        def record(self, record):
            raise RuntimeError("disk full")

    async def scenario():
        approvals = Approvals()
        approvals.logs.append(Broken())
        with taddons.context(approvals):
            flow = approval_flow()
            task, held = await hold(approvals, flow)
            approvals.approve(held.id, LEAD, "ok")
            await task
            assert flow.response.status_code == 503 and error_of(flow)["code"] == "unrecorded"

    run(scenario)


def test_a_failing_webhook_is_counted_and_never_approves():
    async def check(approvals):
        flow = approval_flow(timeout=0.5)
        await asyncio.wait_for(approvals.request(flow), 3)
        assert error_of(flow)["code"] == "approval_timeout"
        await until(lambda: approvals.webhook_failures == 1)

    with_approvals(check, toolgate_webhook="http://127.0.0.1:9/hook")


def test_the_webhook_says_how_to_approve():
    from toolgate.addons.approvals.holds import HeldCall

    held = HeldCall("h1", "c1", "bob", ("sre",), False, "deploy.start", "r", ("sre-leads",),
                    "m", "$", "POST /deploy", {"service": "api"}, "abc", 0.0, 300.0)
    payload = webhook_payload(held, "http://127.0.0.1:8090")
    assert payload["caller"] == "bob" and payload["arguments"] == {"service": "api"}
    assert payload["how_to_approve"]["cli"].startswith("toolgate approvals approve h1 --reason")
    assert payload["how_to_approve"]["api"] == "POST http://127.0.0.1:8090/api/approvals/h1/approve"


# -- the admin API, without the network ------------------------------------------------------------

class FakeVerifier:
    async def verify(self, token):
        people = {"lead": Caller("carol", "i", ("sre-leads",)),
                  "bob": Caller("bob", "i", ("sre", "sre-leads")),
                  "dev": Caller("dave", "i", ("sre",))}
        if token not in people:
            raise IdentityError("bad token")
        return people[token]


class FakeIdentity:
    verifier = FakeVerifier()


def request(method, path, token="lead", body=None, **headers):
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return AdminRequest(method, path, {}, headers, json.dumps(body).encode() if body else b"")


@pytest.mark.parametrize("req, status, code", [
    (request("GET", "/api/approvals", token=None), 401, "identity"),
    (request("GET", "/api/approvals", token="forged"), 401, "identity"),
    (request("GET", "/nowhere"), 404, "not_found"),
    (request("DELETE", "/api/approvals"), 405, "bad_request"),
    (request("GET", "/api/approvals/nope"), 404, "not_found"),
    (request("GET", "/api/calls"), 503, "unavailable"),
    (request("GET", "/api/sessions/s-1"), 503, "unavailable"),
])
def test_admin_api_refusals(req, status, code):
    async def scenario():
        admin = Admin(FakeIdentity(), Approvals())
        with taddons.context(admin):
            answer_status, body = await admin.dispatch(req)
            assert (answer_status, body["error"]["code"]) == (status, code)

    run(scenario)


def test_admin_api_decisions_with_reviewer_checks():
    async def scenario():
        approvals = Approvals()
        admin = Admin(FakeIdentity(), approvals)
        with taddons.context(approvals, admin):
            flow = approval_flow()
            task, held = await hold(approvals, flow)
            listed = (await admin.dispatch(request("GET", "/api/approvals")))[1]
            assert [a["id"] for a in listed["approvals"]] == [held.id]
            shown = (await admin.dispatch(request("GET", f"/api/approvals/{held.call_id}")))[1]
            assert shown["approvers"] == ["sre-leads"] and shown["arguments"] == {"service": "api"}
            path = f"/api/approvals/{held.id}/approve"
            for token, body, status in [
                ("dev", {"reason": "ok"}, 403),  # not an approver
                ("bob", {"reason": "ok"}, 403),  # the caller themself
                ("lead", {}, 400),  # no reason
                ("lead", {"reason": "ok", "for": "3d"}, 400),  # longer than a grant may be
                ("lead", {"reason": "ok", "scope": "same-args"}, 400),  # scope without for
                ("lead", {"reason": "ok", "for": "30m", "scope": "call"}, 400),
            ]:
                assert (await admin.dispatch(request("POST", path, token, body)))[0] == status
            assert approvals.held.pending() and not task.done()  # still held
            status, body = await admin.dispatch(request(
                "POST", path, "lead", {"reason": "ok", "for": "30m", "scope": "same-args"},
                **{"X-Toolgate-Channel": "cli"}))
            assert status == 200 and body["channel"] == "cli"
            assert body["grant"]["arguments"] == "same" and body["grant"]["seconds"] == 1800
            again = await admin.dispatch(request("POST", f"/api/approvals/{held.id}/deny", "lead",
                                                 {"reason": "too late"}))
            assert again[0] in (404, 409)
            await task
            grants = (await admin.dispatch(request("GET", "/api/grants")))[1]["grants"]
            assert grants[0]["subject"] == "bob"
            metrics = (await admin.dispatch(request("GET", "/metrics")))[1]
            assert 'toolgate_approvals_decisions_total{channel="cli",decision="approved"} 1' \
                in metrics
            assert "toolgate_approvals_grants_active 1" in metrics

    run(scenario)


def test_healthz_needs_no_token_and_the_store_can_register_its_routes():
    async def scenario():
        admin = Admin(FakeIdentity(), Approvals())
        with taddons.context(admin):
            status, body = await admin.dispatch(request("GET", "/healthz", token=None))
            assert status == 200 and body["ok"] is True

            async def calls(req):
                return 200, {"calls": [], "asked": req.query, "by": req.identity["subject"]}

            admin.register_route("GET", "/api/calls", calls)
            req = request("GET", "/api/calls")
            req.query = {"subject": "bob"}
            status, body = await admin.dispatch(req)
            assert status == 200 and body == {"calls": [], "asked": {"subject": "bob"},
                                              "by": "carol"}
            assert (await admin.dispatch(request("GET", "/api/calls", token=None)))[0] == 401

    run(scenario)


def test_metrics_text_is_prometheus_exposition():
    text = metrics_text(Approvals(), {200: 3}, 0.0)
    assert "# TYPE toolgate_approvals_held gauge\ntoolgate_approvals_held 0.0\n" in text
    assert 'toolgate_admin_requests_total{code="200"} 3' in text


def test_a_response_side_approval_holds_the_answer_and_a_denial_replaces_it():
    async def check(approvals):
        flow = approval_flow()
        flow.metadata["toolgate.approval"]["verdict"] = {"decision": "approved"}  # request
        await approvals.request(flow)  # already decided: not held again
        assert not flow.intercepted
        flow.response = tutils.tresp(content=b'{"secret": "export"}')
        flow.metadata["toolgate.approval"] = {  # policy, on the response
            "rule": "answers-need-approval", "function": "deploy.start",
            "approvers": ["sre-leads"], "timeout": None, "message": "m", "field": "$"}
        task = asyncio.create_task(approvals.response(flow))
        held = await until(lambda: approvals.held.pending())
        assert held[0].phase == "response" and flow.intercepted
        approvals.deny(held[0].id, LEAD, "not this answer")
        await task
        assert flow.response.status_code == 403 and b"export" not in flow.response.content

    with_approvals(check)


def test_the_admin_api_never_shares_the_proxy_port():
    from mitmproxy import exceptions

    admin = Admin()
    with taddons.context(admin) as tctx:
        with pytest.raises(exceptions.OptionsError, match="proxy's own port"):
            tctx.configure(admin, listen_port=8080, toolgate_admin_listen="127.0.0.1:8080")
        with pytest.raises(exceptions.OptionsError, match="HOST:PORT"):
            tctx.configure(admin, toolgate_admin_listen="nowhere")


@pytest.mark.parametrize("args, message", [
    (["approvals", "list", "--admin", "http://127.0.0.1:9"], "no token"),
    (["approvals", "approve", "abc", "--reason", "x", "--for", "soon", "--token", "t"],
     "bad duration"),
    (["approvals", "approve", "abc", "--reason", "x", "--same-args", "--token", "t"],
     "--same-args needs --for"),
    (["approvals", "deny", "abc", "--token", "t"], "Missing option '--reason'"),
    (["approvals", "list", "--token", "t", "--admin", "http://127.0.0.1:9"], "did not answer"),
])
def test_cli_usage_errors_exit_2(args, message, monkeypatch):
    from click.testing import CliRunner

    from toolgate.scripts.cli import cli

    monkeypatch.delenv("TOOLGATE_TOKEN", raising=False)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and message in result.output


# -- with the policy addon deciding: what is held, and what the reviewer sees -----------------

SPEC_RULES = """
labels:
  - {name: email, level: confidential, detector: email}
rules:
  - id: deploys-need-approval
    match: {function: "deploy.*"}
    action: approve
    approvers: [sre-leads]
  - id: answers-need-release
    match: {function: report.run, direction: response}
    action: approve
    approvers: [sre-leads]
  - id: no-emails
    match: {labels: [email]}
    action: mask
    mask: redact
"""


def mcp_flow(tool, arguments, rpc_id=7):
    body = json.dumps({"jsonrpc": "2.0", "id": rpc_id, "method": "tools/call",
                       "params": {"name": tool, "arguments": arguments}}).encode()
    flow = tflow.tflow(req=tutils.treq(method=b"POST", path=b"/mcp", content=body, headers=(
        (b"content-type", b"application/json"),)))
    flow.client_conn.timestamp_end = None
    flow.metadata["toolgate.call_id"] = uuid.uuid4().hex
    flow.metadata["toolgate.identity"] = {"subject": "bob", "issuer": "i", "groups": ["sre"],
                                          "token_id": None, "anonymous": False}
    return flow


def mcp_answer(result, rpc_id=7):
    return tutils.tresp(content=json.dumps({"jsonrpc": "2.0", "id": rpc_id,
                                            "result": result}).encode(),
                        headers=((b"content-type", b"application/json"),))


def policy_context(tmp_path):
    from toolgate.addons.identity.addon import Identity as IdentityAddon
    from toolgate.addons.policy.addon import Policy

    rules = tmp_path / "rules.yaml"
    rules.write_text(SPEC_RULES)
    policy, approvals = Policy(), Approvals()
    return policy, approvals, rules, (policy, IdentityAddon(), approvals)


def test_a_call_approved_under_the_specs_rule_is_not_held_again_on_its_way_back(tmp_path):
    async def scenario():
        policy, approvals, rules, addons = policy_context(tmp_path)
        with taddons.context(*addons) as tctx:
            tctx.configure(policy, toolgate_rules=str(rules))
            flow = mcp_flow("deploy.start", {"service": "api"})
            policy.request(flow)
            task, held = await hold(approvals, flow)
            approvals.approve(held.id, LEAD, "release 2")
            await asyncio.wait_for(task, 2)
            assert flow.response is None  # forwarded
            flow.response = mcp_answer({"content": [{"type": "text", "text": "deployed"}]})
            policy.response(flow)
            await asyncio.wait_for(approvals.response(flow), 2)
            assert not flow.intercepted and b"deployed" in flow.response.content
            assert [r.decision for r in approvals.memory.records] == ["approved"]

    run(scenario)


def test_a_rule_that_approved_a_flow_never_holds_it_again():
    async def check(approvals):
        flow = approval_flow()
        task, held = await hold(approvals, flow)
        approvals.approve(held.id, LEAD, "ok")
        await asyncio.wait_for(task, 2)
        flow.response = tutils.tresp(content=b'{"status": "deployed"}')
        flow.metadata["toolgate.approval"] = {  # the same rule, again on the answer
            "rule": "deploys-need-approval", "function": "deploy.start",
            "approvers": ["sre-leads"], "timeout": None, "message": "m", "field": "$"}
        await asyncio.wait_for(approvals.response(flow), 2)
        assert not flow.intercepted and flow.response.status_code == 200
        assert len(approvals.memory.records) == 1 and approvals.held.pending() == []

    with_approvals(check)


def test_a_held_mcp_call_shows_the_tools_masked_arguments_not_the_envelope(tmp_path):
    async def scenario():
        policy, approvals, rules, addons = policy_context(tmp_path)
        with taddons.context(*addons) as tctx:
            tctx.configure(policy, toolgate_rules=str(rules))
            flow = mcp_flow("deploy.start", {"service": "api", "notify": "ada@example.com"})
            policy.request(flow)
            task, held = await hold(approvals, flow)
            shown = {"service": "api", "notify": "[REDACTED:email]"}
            assert held.arguments == shown and held.summary()["arguments"] == shown
            assert held.detail(0)["arguments"] == shown and "result" not in held.detail(0)
            assert '"notify":"[REDACTED:email]"' in flow.comment
            assert "jsonrpc" not in flow.comment and "ada@example.com" not in flow.comment
            approvals.deny(held.id, LEAD, "no")
            await asyncio.wait_for(task, 2)

    run(scenario)


def test_a_held_answer_shows_its_calls_arguments_and_the_masked_answer(tmp_path):
    async def scenario():
        policy, approvals, rules, addons = policy_context(tmp_path)
        with taddons.context(*addons) as tctx:
            tctx.configure(policy, toolgate_rules=str(rules))
            flow = mcp_flow("report.run", {"quarter": "Q3"}, rpc_id="r-1")
            policy.request(flow)
            await asyncio.wait_for(approvals.request(flow), 2)
            assert flow.response is None and not flow.intercepted  # the call is not held
            flow.response = mcp_answer({"owner": "ada@example.com", "rows": 3}, rpc_id="r-1")
            policy.response(flow)
            task = asyncio.create_task(approvals.response(flow))
            (held,) = await until(lambda: approvals.held.pending())
            assert held.phase == "response" and held.rule == "answers-need-release"
            assert held.arguments == {"quarter": "Q3"}
            assert held.detail(0)["result"] == {"owner": "[REDACTED:email]", "rows": 3}
            assert "answer held for release" in flow.comment and "jsonrpc" not in flow.comment
            approvals.approve(held.id, LEAD, "fine")
            await asyncio.wait_for(task, 2)
            assert json.loads(flow.response.content)["result"]["rows"] == 3

    run(scenario)


def test_a_call_named_after_a_labelled_value_is_held_and_granted_under_its_shown_name():
    """The policy leaves the stored name of a function that holds a labelled value
    (`toolgate.record_function`: a path, a tool): reviewers, the webhook, mitmweb's comment and
    the grant's scope in the store see that name; the grant still matches the real one."""
    email = "jane.doe@example.com"
    sent, shown = f"DELETE /users/{email}", "DELETE /users/%5BREDACTED%3Aemail%5D"

    async def check(approvals):
        flow = approval_flow(path=f"/users/{email}")
        flow.request.method = "DELETE"
        flow.metadata["toolgate.approval"]["function"] = sent
        flow.metadata["toolgate.record_function"] = {sent: shown}
        task, held = await hold(approvals, flow)
        said = [held.summary(), held.detail(0), webhook_payload(held, None), flow.comment]
        assert email not in json.dumps(said) and shown in json.dumps(said)
        verdict = approvals.approve(held.id, LEAD, "ok", window=datetime.timedelta(minutes=30))
        await asyncio.wait_for(task, 2)
        assert verdict.scope == f"grant 30m: bob -> {shown}, any arguments"
        assert approvals.memory.records[-1].scope == verdict.scope
        assert verdict.grant.covers("bob", sent, "deploys-need-approval", "x", verdict.decided_at)

    with_approvals(check)
