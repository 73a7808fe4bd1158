"""The pure core of approvals: argument hashes, the held-call registry, grants, reviewer rules."""

import datetime
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from toolgate.addons.approvals.ledger import ApprovalDecision, DecisionLog, MemoryDecisionLog
from toolgate.addons.approvals.holds import (
    MAX_GRANT,
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
    new_grant,
    parse_grant_window,
)

NOW = 1_800_000_000.0


def held(**overrides) -> HeldCall:
    values = dict(
        id="h1", call_id="c1", subject="bob", groups=("sre",), anonymous=False,
        function="deploy.start", rule="deploys-need-approval", approvers=("sre-leads",),
        message="deploys need an approval from sre-leads", field="$", request="POST /deploy",
        arguments={"service": "api"}, argument_hash=argument_hash("POST", "/deploy", b"{}"),
        requested_at=NOW, expires_at=NOW + 300,
    )
    values.update(overrides)
    return HeldCall(**values)


def reviewer(subject="carol", groups=("sre-leads",), anonymous=False) -> dict:
    return {"subject": subject, "issuer": "https://issuer", "groups": list(groups),
            "token_id": "t", "anonymous": anonymous}


# -- argument hashes ---------------------------------------------------------------------------

def test_the_hash_ignores_key_order_whitespace_and_query_order():
    a = argument_hash("POST", "/deploy?x=1&y=2", b'{"service": "api", "version": "2"}')
    b = argument_hash("post", "/deploy?y=2&x=1", b'{"version":"2","service":"api"}')
    assert a == b


@pytest.mark.parametrize("other", [
    ("POST", "/deploy", b'{"service": "web", "version": "2"}'),  # another argument
    ("PUT", "/deploy", b'{"service": "api", "version": "2"}'),  # another method
    ("POST", "/deploy/x", b'{"service": "api", "version": "2"}'),  # another path
    ("POST", "/deploy?dry=1", b'{"service": "api", "version": "2"}'),  # a query parameter
    ("POST", "/deploy", b'{"service": "api", "version": 2}'),  # a number, not a string
])
def test_any_difference_in_the_arguments_changes_the_hash(other):
    assert argument_hash("POST", "/deploy", b'{"service": "api", "version": "2"}') != \
        argument_hash(*other)


def test_a_jsonrpc_id_is_not_an_argument():
    call = {"jsonrpc": "2.0", "method": "tools/call",
            "params": {"name": "deploy", "arguments": {"service": "api"}}}
    first = argument_hash("POST", "/mcp", json.dumps({**call, "id": 1}).encode())
    second = argument_hash("POST", "/mcp", json.dumps({**call, "id": "x-2"}).encode())
    assert first == second
    call["params"]["arguments"]["service"] = "web"
    assert argument_hash("POST", "/mcp", json.dumps({**call, "id": 1}).encode()) != first


def test_bodies_that_are_not_json_are_hashed_byte_for_byte():
    assert argument_hash("POST", "/f", b"a=1") != argument_hash("POST", "/f", b"a=2")
    assert argument_hash("POST", "/f", b"{not json") == argument_hash("POST", "/f", b"{not json")


@given(st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=6))
def test_the_hash_is_the_same_for_any_serialization_of_the_same_document(doc):
    forward = json.dumps(doc).encode()
    backward = json.dumps(dict(reversed(list(doc.items()))), indent=2).encode()
    assert argument_hash("POST", "/f", forward) == argument_hash("POST", "/f", backward)


def test_reviewers_see_the_json_body_and_the_query():
    assert arguments_view("/deploy", b'{"service": "api"}') == {"service": "api"}
    assert arguments_view("/customers/export?limit=10", b"") == {"limit": "10"}
    assert arguments_view("/f?a=1&a=2", b"text") == {"query": {"a": ["1", "2"]}, "body": "text"}
    assert arguments_view("/f", None) is None


# -- the registry ------------------------------------------------------------------------------

def test_the_registry_lists_oldest_first_and_finds_by_id_or_call_id():
    calls = HeldCalls()
    calls.add(held(id="b", call_id="cb", requested_at=NOW + 2))
    calls.add(held(id="a", call_id="ca", requested_at=NOW + 1))
    assert [h.id for h in calls] == ["a", "b"]
    assert calls.get("cb").id == "b" and calls.get("a").id == "a" and calls.get("zz") is None
    with pytest.raises(ValueError):
        calls.add(held(id="a"))
    calls.remove("a")
    assert [h.id for h in calls.pending()] == ["b"]


def test_a_held_call_is_decided_once():
    calls, h = HeldCalls(), held()
    calls.add(h)
    calls.decide(h, Verdict("denied", "admin", "carol", "no", NOW))
    with pytest.raises(ReviewError) as err:
        calls.decide(h, Verdict("approved", "admin", "dave", "yes", NOW))
    assert err.value.status == 409 and h.verdict.decision == "denied"
    assert calls.pending() == []


def test_the_listing_entry_has_the_fields_of_the_spec():
    assert set(held().summary()) == {"id", "call_id", "subject", "function", "rule", "arguments",
                                     "requested_at", "expires_at", "hold"}
    detail = held(rule="access:crm.export").detail(NOW + 30)
    assert detail["access_review"] is True and detail["age_seconds"] == 30
    assert detail["requested_at"].endswith("Z")


def test_the_mitmweb_comment_says_why_who_what_and_with_which_arguments():
    comment = held().describe()
    for part in ("deploys-need-approval", "bob", "deploy.start", '"service":"api"', "sre-leads",
                 "Resume approves"):
        assert part in comment
    assert "access review overdue" in held(rule="access:crm.export").describe()


# -- reviewer rules ----------------------------------------------------------------------------

@pytest.mark.parametrize("who, action, reason, status", [
    (reviewer(), "approve", "ok", None),
    (reviewer(), "deny", "no", None),
    (reviewer(), "approve", "", 400),
    (reviewer(), "approve", "   ", 400),
    (reviewer(groups=("sre",)), "approve", "ok", 403),  # not an approver
    (reviewer(groups=("sre",)), "deny", "no", 403),
    (reviewer(subject="bob", groups=("sre-leads",)), "approve", "ok", 403),  # their own call
    (reviewer(subject="bob", groups=("sre-leads",)), "deny", "withdrawn", None),
    (reviewer(subject=None), "approve", "ok", 401),
    (reviewer(anonymous=True), "approve", "ok", 401),
])
def test_who_may_decide(who, action, reason, status):
    if status is None:
        assert check_reviewer(held(), who, action, reason) == who["subject"]
    else:
        with pytest.raises(ReviewError) as err:
            check_reviewer(held(), who, action, reason)
        assert err.value.status == status


def test_a_rule_without_approvers_cannot_be_decided_through_the_api():
    with pytest.raises(ReviewError) as err:
        check_reviewer(held(approvers=()), reviewer(), "approve", "ok")
    assert err.value.status == 403 and "mitmweb" in err.value.message


# -- grants ------------------------------------------------------------------------------------

def test_a_grant_covers_its_caller_function_and_rule_for_its_window_only():
    h = held()
    grant = new_grant(h, "carol", "release day", datetime.timedelta(minutes=10), False, NOW)
    assert grant.covers("bob", "deploy.start", h.rule, "any-hash", NOW + 1)
    assert not grant.covers("alice", "deploy.start", h.rule, "any-hash", NOW + 1)
    assert not grant.covers("bob", "deploy.other", h.rule, "any-hash", NOW + 1)
    assert not grant.covers("bob", "deploy.start", "another-rule", "any-hash", NOW + 1)
    assert not grant.covers("bob", "deploy.start", h.rule, "any-hash", NOW + 600)
    assert not grant.covers("bob", "deploy.start", h.rule, "any-hash", NOW - 1)
    assert grant.scope == "grant 10m: bob -> deploy.start, any arguments"


def test_a_same_arguments_grant_covers_only_those_arguments():
    h = held()
    grant = new_grant(h, "carol", "ok", datetime.timedelta(minutes=10), True, NOW)
    assert grant.covers("bob", "deploy.start", h.rule, h.argument_hash, NOW)
    assert not grant.covers("bob", "deploy.start", h.rule, "other", NOW)
    assert grant.as_json()["arguments"] == "same"


def test_grants_end_on_their_own():
    grants = Grants()
    grants.add(new_grant(held(), "carol", "ok", datetime.timedelta(seconds=30), False, NOW))
    assert grants.match("bob", "deploy.start", "deploys-need-approval", "h", NOW + 29)
    assert grants.match("bob", "deploy.start", "deploys-need-approval", "h", NOW + 30) is None
    assert grants.active(NOW + 30) == []


def test_an_anonymous_caller_gets_no_grant():
    with pytest.raises(ReviewError) as err:
        new_grant(held(subject=None, anonymous=True), "carol", "ok",
                  datetime.timedelta(minutes=5), False, NOW)
    assert err.value.status == 400


@pytest.mark.parametrize("text, expected", [
    (None, None), ("", None), ("30m", datetime.timedelta(minutes=30)), ("24h", MAX_GRANT),
])
def test_grant_windows(text, expected):
    assert parse_grant_window(text) == expected


@pytest.mark.parametrize("text", ["25h", "2d", "soon", "0m", "-5m"])
def test_bad_or_too_long_grant_windows_are_refused(text):
    with pytest.raises(ValueError):
        parse_grant_window(text)


@pytest.mark.parametrize("option, rule, expected", [
    (300, None, 300), (300, 60, 60), (2, 300, 2), (0, 300, 0), (0, None, 0),
])
def test_the_timeout_is_the_rules_capped_by_the_option(option, rule, expected):
    assert effective_timeout(option, rule) == expected


def test_verdict_scopes_say_what_was_approved():
    h = held()
    one = Verdict("approved", "cli", "carol", "ok", NOW, argument_hash=h.argument_hash)
    assert one.scope == f"call: arguments sha256:{h.argument_hash}"
    grant = Grant("g", "bob", "f", "r", None, NOW, NOW + 1800, "carol", "ok", "h1")
    assert Verdict("approved", "cli", "carol", "ok", NOW, grant).scope.startswith("grant 30m")
    assert Verdict("denied", "admin", "carol", "no", NOW).scope == "call"
    with pytest.raises(ValueError):
        Verdict("maybe", "admin", "carol", "?", NOW)


def test_the_memory_log_is_a_decision_log():
    log = MemoryDecisionLog(limit=2)
    assert isinstance(log, DecisionLog)
    for i in range(3):
        log.record(ApprovalDecision(f"c{i}", NOW, NOW + 1, "approved", "carol", "cli", "ok", "call"))
    assert [r.call_id for r in log.records] == ["c1", "c2"]
    assert log.for_call("c2")[0].as_json()["reviewer"] == "carol"
