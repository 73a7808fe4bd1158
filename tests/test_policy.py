"""The policy addon under mitmproxy's test context: reloading rules and the mitmweb view."""

import asyncio
import json

from mitmproxy.test import taddons, tflow, tutils

from addons.approvals import Approvals
from addons.identity import Identity
from addons.policy import Policy

RULES = """
rules:
  - id: no-deletes
    match: {method: DELETE}
    action: block
    message: nothing is deleted through the gateway
"""


def run(test):
    asyncio.run(test())


def test_reload_command_takes_new_rules_and_keeps_the_last_good_ones(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)

    async def scenario():
        policy = Policy()
        with taddons.context(policy, Identity(), Approvals()) as tctx:
            tctx.configure(policy, toolgate_rules=str(rules))
            assert [r.id for r in policy.rules.current.rules] == ["no-deletes"]
            rules.write_text(RULES.replace("DELETE", "PUT"))
            tctx.command(policy.reload)
            assert policy.rules.current.rules[0].match.method == ("PUT",)
            rules.write_text("rules: [broken: yes\n")
            tctx.command(policy.reload)
            assert policy.rules.current.rules[0].match.method == ("PUT",)  # the last good rules

    run(scenario)


def test_a_blocked_call_is_marked_and_commented_for_mitmweb(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)

    async def scenario():
        policy = Policy()
        with taddons.context(policy, Identity(), Approvals()) as tctx:
            tctx.configure(policy, toolgate_rules=str(rules))
            flow = tflow.tflow(req=tutils.treq(method=b"DELETE", content=b""))
            policy.request(flow)
            assert flow.response.status_code == 403
            assert json.loads(flow.response.content)["error"]["rule"] == "no-deletes"
            assert flow.marked == ":no_entry:"
            assert "block" in flow.comment and "no-deletes" in flow.comment

    run(scenario)


HELD_RULES = """
labels:
  - {name: email, level: confidential, detector: email}
rules:
  - id: deploys-need-approval
    match: {method: POST, path: /deploy}
    action: approve
    approvers: [sre-leads]
  - id: no-emails-out
    match: {labels: [email], direction: request}
    action: mask
    mask: redact
"""


def test_a_call_held_for_approval_is_masked_before_it_is_held(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(HELD_RULES)

    async def scenario():
        policy = Policy()
        with taddons.context(policy, Identity(), Approvals()) as tctx:
            tctx.configure(policy, toolgate_rules=str(rules))
            flow = tflow.tflow(req=tutils.treq(
                method=b"POST", path=b"/deploy", headers=((b"content-type", b"application/json"),),
                content=b'{"service": "api", "notify": "ada@example.com"}'))
            policy.request(flow)
            assert flow.response is None  # held, not refused: the approvals addon decides
            assert flow.metadata["toolgate.approval"]["rule"] == "deploys-need-approval"
            assert b"ada@example.com" not in flow.request.content
            assert json.loads(flow.request.content)["notify"] == "[REDACTED:email]"

    run(scenario)


def test_query_parameters_are_read_once_and_repeated_names_become_lists():
    from addons.policy import _query_items

    f = tflow.tflow()
    f.request.path = "/customers?email=a%40example.com&tag=x&tag=y&empty=&tag=z"
    assert _query_items(f.request) == {"email": "a@example.com", "tag": ["x", "y", "z"],
                                       "empty": ""}
