"""Decisions on the bundled packs: every action, with its reasons, rules and fields."""

import dataclasses
import datetime
import json

import pytest

from toolgate.rules import Call, evaluate, load_rules_text
from toolgate.rules.index import RuleIndex

SUPPORT = dict(subject="ana", groups=("support",))
CUSTOMER = {
    "id": 42,
    "name": "Jane Doe",
    "email": "jane.doe@example.com",
    "ssn": "123-45-6789",
    "card": "4242 4242 4242 4242",
    "phone": "(415) 555-2671",
}


def rest(direction="request", method="GET", path="/customers/42", body=None, now=None, **caller):
    return Call(direction=direction, protocol="rest", method=method, path=path, body=body, now=now, **(caller or SUPPORT))


def mcp(tool, arguments, direction="request", body=None, **caller):
    envelope = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": tool, "arguments": arguments}}
    return Call(
        direction=direction,
        protocol="mcp",
        function=tool,
        method="POST",
        path="/mcp",
        body=envelope if body is None else body,
        arguments=arguments if direction == "request" else None,
        **(caller or SUPPORT),
    )


def test_allow(packs, key, now):
    decision = evaluate(packs, dataclasses.replace(rest(), now=now), key)
    assert decision.action == "allow" and decision.would == "allow"
    assert decision.function == "crm.get_customer" and decision.catalogued
    assert decision.rules == ("demo-allow-customer-reads",)
    assert decision.rule is None and not decision.changed


def test_mask_on_response(packs, key, now):
    decision = evaluate(packs, dataclasses.replace(rest("response", body=CUSTOMER), now=now), key)
    assert decision.action == "mask"
    assert decision.body["ssn"] == "***-**-6789"
    assert decision.body["card"] == "**** **** **** 4242"
    assert decision.body["email"].startswith("tok_email_")
    assert decision.body["phone"] == CUSTOMER["phone"]  # the phone rule only monitors
    assert decision.body["name"] == "Jane Doe"
    labels = {f.path: (f.label, f.level, f.action, f.mask) for f in decision.findings}
    assert labels["$.ssn"] == ("ssn", "restricted", "mask", "partial")
    assert labels["$.email"] == ("email", "confidential", "mask", "hash")
    assert labels["$.phone"] == ("phone", "confidential", "mask", "redact")
    raw = json.dumps(decision.as_dict())
    for value in ("123-45-6789", "jane.doe@example.com", "4242 4242 4242 4242"):
        assert value not in raw
    explanation = decision.explain()
    assert "found ssn (restricted) at $.ssn" in explanation
    assert "rule demo-mask-ssn-and-cards: mask (partial), enforced" in explanation


def test_monitor_rules_are_reported_not_enforced(packs, key, now):
    decision = evaluate(packs, dataclasses.replace(rest("response", body={"phone": "(415) 555-2671"}), now=now), key)
    assert decision.action == "allow" and decision.would == "mask"
    [match] = decision.matches
    assert match.rule == "demo-watch-phones" and match.monitor and match.fields == ("$.phone",)
    assert decision.body == {"phone": "(415) 555-2671"} and not decision.changed
    [finding] = decision.findings
    assert finding.monitor and finding.action == "mask"
    assert "monitor only" in decision.explain()


def test_global_monitor_changes_nothing_but_says_what_would_happen(packs, key, now):
    decision = evaluate(packs, dataclasses.replace(rest("response", body=CUSTOMER), now=now), key, monitor=True)
    assert decision.action == "allow" and decision.would == "mask" and decision.mode == "monitor"
    assert decision.body is CUSTOMER
    assert all(match.monitor for match in decision.matches)
    blocked = evaluate(packs, rest(path="/customers/export?limit=500", now=now), key, monitor=True)
    assert blocked.action == "allow" and blocked.would == "block" and blocked.rule == "demo-no-bulk-export"


def test_block_with_message_and_field_from_query_arguments(packs, key, now):
    decision = evaluate(packs, rest(path="/customers/export?limit=500", now=now), key)
    assert decision.action == "block"
    assert decision.function == "crm.export"
    assert decision.rule == "demo-no-bulk-export"
    assert decision.message == "bulk exports over 100 rows are not allowed; ask for 100 or fewer"
    assert decision.field == "$.limit"


def test_block_with_json_body_arguments_and_mcp(packs, key, now):
    body = evaluate(packs, rest(path="/customers/export", body={"limit": 1000}, now=now), key)
    assert body.action == "block" and body.rule == "demo-no-bulk-export"
    tool = evaluate(packs, dataclasses.replace(mcp("export_customers", {"limit": 101}), now=now), key)
    assert tool.action == "block" and tool.function == "export_customers"


def test_review_overdue_needs_approval_by_the_owner(packs, key, now):
    decision = evaluate(packs, rest(path="/customers/export?limit=10", now=now), key)
    assert decision.action == "approve"
    assert decision.rule == "access:crm.export"
    assert decision.message.startswith("access review overdue")
    assert decision.approvers == ("crm-team",)
    assert "overdue since 2025-08-30" in decision.explain()


def test_review_not_yet_overdue(key):
    rules = load_rules_text(
        """
functions:
  - name: f
    match: {method: GET, path: /f}
    owner: team
    access: [{groups: [g], reviewed: 2026-10-01, review_every: 90d}]
"""
    )
    call = Call(method="GET", path="/f", groups=("g",))
    before = evaluate(rules, dataclasses.replace(call, now=datetime.datetime(2026, 12, 29, tzinfo=datetime.timezone.utc)), key)
    after = evaluate(rules, dataclasses.replace(call, now=datetime.datetime(2026, 12, 31, tzinfo=datetime.timezone.utc)), key)
    assert before.action == "allow" and after.action == "approve"


def test_group_not_granted_is_a_block(packs, key, now):
    decision = evaluate(packs, rest(subject="mallory", groups=("marketing",), now=now), key)
    assert decision.action == "block" and decision.rule == "access:crm.get_customer"
    assert decision.message.startswith("group not granted")
    no_groups = evaluate(packs, rest(subject="anonymous", groups=(), now=now), key)
    assert no_groups.action == "block"


def test_approve_with_approvers_rest_and_mcp(packs, key, now):
    rest_deploy = evaluate(packs, rest(method="POST", path="/deploy", body={"service": "api", "version": "1.4.2"}, subject="sam", groups=("sre",), now=now), key)
    assert rest_deploy.action == "approve" and rest_deploy.function == "deploy.start"
    assert rest_deploy.rule == "demo-deploys-need-approval" and rest_deploy.approvers == ("sre-leads",)
    assert rest_deploy.timeout == datetime.timedelta(minutes=5)
    tool = evaluate(packs, dataclasses.replace(mcp("deploy", {"service": "api", "version": "1.4.2"}, subject="sam", groups=("sre",)), now=now), key)
    assert tool.action == "approve" and tool.approvers == ("sre-leads",)


def test_deny_unknown_function_under_deny_default(packs, key, now):
    strict = dataclasses.replace(packs, unknown_function="deny")
    decision = evaluate(strict, rest(path="/health", now=now), key)
    assert decision.action == "deny" and decision.function == "GET /health" and not decision.catalogued
    assert decision.rule == "defaults.unknown_function" and "not in the catalog" in decision.message
    assert evaluate(packs, rest(path="/health", now=now), key).action == "allow"
    assert evaluate(strict, dataclasses.replace(rest(), now=now), key).action == "allow"
    assert evaluate(strict, rest("response", path="/health", body={"ok": True}, now=now), key).action == "allow"


def test_secrets_in_requests_are_blocked_and_redacted_in_responses(packs, key, now):
    aws = "AKIAIOSFODNN7EXAMPLE"
    request = evaluate(packs, dataclasses.replace(mcp("search_customers", {"query": f"key {aws}", "limit": 5}), now=now), key)
    assert request.action == "block" and request.rule == "secrets-block-in-requests"
    assert request.field == "$.params.arguments.query"
    response = evaluate(packs, dataclasses.replace(mcp("search_customers", {}, direction="response", body={"result": {"note": f"use {aws}"}}), now=now), key)
    assert response.action == "mask" and response.body == {"result": {"note": "use [REDACTED:aws_access_key]"}}


def test_mcp_results_with_json_text_are_masked_inside(packs, key, now):
    result = {"jsonrpc": "2.0", "id": 7, "result": {"content": [{"type": "text", "text": json.dumps(CUSTOMER)}]}}
    decision = evaluate(packs, dataclasses.replace(mcp("get_customer", {}, direction="response", body=result), now=now), key)
    inner = json.loads(decision.body["result"]["content"][0]["text"])
    assert inner["ssn"] == "***-**-6789" and inner["email"].startswith("tok_email_")
    assert "$.result.content[0].text<json>.ssn" in {f.path for f in decision.findings}


def test_strongest_action_wins_and_every_matching_rule_is_listed(key):
    rules = load_rules_text(
        """
labels:
  - {name: ssn, level: restricted, detector: us_ssn}
rules:
  - {id: a, match: {function: "svc.*"}, action: allow}
  - {id: m, match: {labels: [ssn]}, action: mask, mask: redact}
  - {id: h, match: {function: svc.run, groups: [ops]}, action: approve, approvers: [leads]}
  - {id: b, match: {function: svc.run, not_groups: [ops]}, action: block, message: only ops}
"""
    )
    ops = evaluate(rules, Call(function="svc.run", protocol="mcp", groups=("ops",), body={"x": "123-45-6789"}), key)
    assert ops.rules == ("a", "m", "h") and ops.action == "approve" and ops.body == {"x": "[REDACTED:ssn]"}
    dev = evaluate(rules, Call(function="svc.run", protocol="mcp", groups=("dev",), body={}), key)
    assert dev.rules == ("a", "b") and dev.action == "block" and dev.message == "only ops"


def test_match_conditions(key):
    rules = load_rules_text(
        """
rules:
  - {id: host, match: {host: "*.internal"}, action: block}
  - {id: method-path, match: {method: DELETE, path: "/items/**"}, action: block}
  - {id: subject, match: {subjects: ["bot-*"]}, action: block}
  - {id: protocol, match: {protocol: openai}, action: block}
  - {id: when-all, match: {when: ["$.a", "$.b"]}, action: block}
"""
    )

    def fired(**call):
        return evaluate(rules, Call(**call), key).rules

    assert fired(host="crm.internal") == ("host",)
    assert fired(host="example.com") == ()
    assert fired(method="DELETE", path="/items/1/x") == ("method-path",)
    assert fired(method="GET", path="/items/1") == ()
    assert fired(subject="bot-7") == ("subject",)
    assert fired(protocol="openai", function="f") == ("protocol",)
    assert fired(body={"a": 1, "b": 2}) == ("when-all",)
    assert fired(body={"a": 1}) == ()


def test_catalog_naming_prefers_the_most_specific_entry(packs, key, now):
    names = {
        path: evaluate(packs, rest(path=path, now=now), key).function
        for path in ("/customers", "/customers/42", "/customers/export", "/customers/42/orders")
    }
    assert names == {
        "/customers": "crm.list_customers",
        "/customers/42": "crm.get_customer",
        "/customers/export": "crm.export",
        "/customers/42/orders": "GET /customers/42/orders",
    }


def test_the_index_only_offers_rules_that_could_match(packs):
    extra = "\n".join(
        f"  - {{id: extra-{i}, match: {{function: 'other{i}.*', labels: [ssn]}}, action: block}}" for i in range(500)
    )
    rules = load_rules_text("labels:\n  - {name: ssn, level: restricted, detector: us_ssn}\nrules:\n" + extra)
    index: RuleIndex = rules.index
    assert index.candidates("request", "crm.get_customer", {"ssn"}, {"restricted"}) == []
    assert [r.id for r in index.candidates("request", "other7.x", set(), set())] == ["extra-7"]
    decision = evaluate(rules, Call(function="crm.get_customer", protocol="mcp", body={"s": "123-45-6789"}), b"k")
    assert decision.rules == ()


SPEC_APPROVAL = """
functions:
  - name: crm.export
    match: {method: GET, path: /customers/export}
    owner: crm-team
    access:
      - {groups: [support], reviewed: 2026-01-01, review_every: 30d}
rules:
  - id: deploys-need-approval
    match: {function: "deploy.*"}
    action: approve
    approvers: [sre-leads]
  - id: answers-need-release
    match: {function: "report.*", direction: response}
    action: approve
    approvers: [auditors]
"""


def test_an_approve_rule_holds_the_call_not_its_answer_unless_it_says_direction_response(key, now):
    ruleset = load_rules_text(SPEC_APPROVAL)
    request = evaluate(ruleset, mcp("deploy.start", {"service": "api"}), key)
    assert request.action == "approve" and request.rule == "deploys-need-approval"
    answer = evaluate(ruleset, mcp("deploy.start", None, "response", body={"ok": True}), key)
    assert answer.action == "allow" and answer.rules == ()
    # the index does not even offer the rule for answers
    assert [r.id for r in ruleset.index.candidates("response", "deploy.start", (), ())] == []
    # `direction: response`: the answer is held, the call is not
    assert evaluate(ruleset, mcp("report.run", {"q": 1}), key).action == "allow"
    released = evaluate(ruleset, mcp("report.run", None, "response", body={"rows": 3}), key)
    assert released.action == "approve" and released.rule == "answers-need-release"
    assert released.approvers == ("auditors",)
    # an overdue access review holds the call only, like the catalog's other checks
    export = rest(path="/customers/export", now=now)
    assert evaluate(ruleset, export, key).action == "approve"
    assert evaluate(ruleset, dataclasses.replace(export, direction="response", body={"rows": []}), key).action == "allow"
