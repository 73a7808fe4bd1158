"""The policy addon under mitmproxy's test context: reloading rules and the mitmweb view."""

import asyncio
import json

from mitmproxy.test import taddons, tflow, tutils

from toolgate.addons.approvals.addon import Approvals
from toolgate.addons.identity.addon import Identity
from toolgate.addons.policy.addon import Policy
from toolgate.sessions.records import finding_dicts

RULES = """
rules:
  - id: no-deletes
    match: {method: DELETE}
    action: block
    message: nothing is deleted through the gateway
"""


def run(test):
    asyncio.run(test())


def with_policy(rules, check) -> None:
    """`check(policy)` with a Policy configured with the rules file `rules`, beside the identity
    and approvals addons, in mitmproxy's test context."""

    async def scenario():
        policy = Policy()
        with taddons.context(policy, Identity(), Approvals()) as tctx:
            tctx.configure(policy, toolgate_rules=str(rules))
            check(policy)

    asyncio.run(scenario())


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


def test_a_mode_set_while_running_applies_to_the_next_call(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)

    async def scenario():
        policy = Policy()
        with taddons.context(policy, Identity(), Approvals()) as tctx:
            tctx.configure(policy, toolgate_rules=str(rules))
            for mode, refused in (("monitor", False), ("enforce", True), ("monitor", False)):
                tctx.configure(policy, toolgate_mode=mode)
                flow = tflow.tflow()
                flow.request.method = "DELETE"
                policy.request(flow)
                assert (flow.response is not None) == refused, mode

    run(scenario)


def test_a_blocked_call_is_marked_and_commented_for_mitmweb(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)

    def check(policy):
        flow = tflow.tflow(req=tutils.treq(method=b"DELETE", content=b""))
        policy.request(flow)
        assert flow.response.status_code == 403
        assert json.loads(flow.response.content)["error"]["rule"] == "no-deletes"
        assert flow.marked == ":no_entry:"
        assert "block" in flow.comment and "no-deletes" in flow.comment

    with_policy(rules, check)


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

    def check(policy):
        flow = tflow.tflow(req=tutils.treq(
            method=b"POST", path=b"/deploy", headers=((b"content-type", b"application/json"),),
            content=b'{"service": "api", "notify": "ada@example.com"}'))
        policy.request(flow)
        assert flow.response is None  # held, not refused: the approvals addon decides
        assert flow.metadata["toolgate.approval"]["rule"] == "deploys-need-approval"
        assert b"ada@example.com" not in flow.request.content
        assert json.loads(flow.request.content)["notify"] == "[REDACTED:email]"

    with_policy(rules, check)


def test_query_parameters_are_read_once_and_repeated_names_become_lists():
    from toolgate.addons.policy.addon import _query_items

    f = tflow.tflow()
    f.request.path = "/customers?email=a%40example.com&tag=x&tag=y&empty=&tag=z"
    assert _query_items(f.request) == {"email": "a@example.com", "tag": ["x", "y", "z"],
                                       "empty": ""}


def test_a_path_without_a_query_has_no_parameters_and_odd_ones_parse_as_mitmproxy_does():
    from toolgate.addons.policy.addon import _query_items

    f = tflow.tflow()
    for path in ("/customers", "/", "/a;b=c", "/a%3Fb", "/x?", "/x?a", "/x?=1", "/x?a=1#f", "*"):
        f.request.path = path
        expected: dict = {}
        for key, value in f.request.query.fields:
            expected.setdefault(key, []).append(value)
        assert _query_items(f.request) == {k: v[0] if len(v) == 1 else v
                                           for k, v in expected.items()}, path


def test_the_host_rules_see_is_mitmproxys_pretty_host_parsed_once_per_header_value():
    from toolgate.addons.policy.addon import _authority_host, _pretty_host

    f = tflow.tflow()
    hosts = ["api.example.com", "api.example.com:8443", "[::1]:8080", "[2001:db8::1]",
             "127.0.0.1:80", "Example.COM", "xn--bcher-kva.example", "bücher.example", "a" * 300,
             "bad host:99999", ""]
    for host in hosts:
        f.request.headers["Host"] = host
        assert _pretty_host(f.request) == f.request.pretty_host, host
    del f.request.headers["Host"]
    assert _pretty_host(f.request) == f.request.pretty_host == f.request.host
    _authority_host.cache_clear()
    f.request.headers["Host"] = "api.example.com"
    for _ in range(3):
        _pretty_host(f.request)
    assert _authority_host.cache_info().misses == 1


# -- header values, and body parts no unit covers ------------------------------------------------

HEADER_RULES = """
labels:
  - {name: email, level: confidential, detector: email}
  - {name: card, level: restricted, detector: credit_card}
  - {name: ssn, level: restricted, detector: us_ssn}
  - {name: jwt, level: restricted, detector: jwt}
rules:
  - id: cards-out-partial
    match: {labels: [card], direction: response}
    action: mask
    mask: partial
  - id: emails-out
    match: {labels: [email], direction: response}
    action: mask
    mask: redact
  - id: no-ssn-in
    match: {labels: [ssn], direction: request}
    action: block
  - id: no-emails-to-mail
    match: {labels: [email], direction: request, path: /mail}
    action: mask
    mask: redact
  - id: no-ssn-out
    match: {labels: [ssn], direction: response}
    action: block
  - id: no-tokens-in
    match: {labels: [jwt], direction: request}
    action: block
  - id: mask-everything-of-reports
    match: {path: /reports, direction: response}
    action: mask
    mask: redact
"""
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLW9mLXRoZS10b2tlbg"


def header_policy(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(HEADER_RULES)
    return rules


def json_flow(path=b"/customers/1", body=b'{"id": 1}', headers=()):
    flow = tflow.tflow(req=tutils.treq(method=b"POST", path=path, content=body, headers=(
        (b"content-type", b"application/json"), *headers)))
    flow.metadata["toolgate.identity"] = {"subject": "alice", "groups": ["support"]}
    return flow


def answer(flow, body=b'{"ok": true}', headers=(), ctype=b"application/json"):
    flow.response = tutils.tresp(content=body, headers=((b"content-type", ctype), *headers))


def test_response_headers_are_classified_and_masked_like_body_values(tmp_path):
    from toolgate.addons.recording.addon import _headers

    def check(policy):
        flow = json_flow()
        policy.request(flow)
        answer(flow, headers=((b"X-Customer-Email", b"jane@example.com"),
                              (b"X-Card", b"4111 1111 1111 1111"), (b"X-Plain", b"nothing")))
        policy.responseheaders(flow)
        policy.response(flow)
        headers = flow.response.headers
        assert headers["x-customer-email"] == "[REDACTED:email]"
        assert headers["x-card"] == "**** **** **** 1111" and headers["x-plain"] == "nothing"
        assert flow.metadata["toolgate.decision"]["action"] == "mask"
        found = {(f["path"], f["label"], f["action"]) for f in finding_dicts(flow.metadata["toolgate.findings"])}
        assert found == {("headers.x-customer-email", "email", "mask"),
                         ("headers.x-card", "card", "mask")}
        stored = _headers(headers, record=flow.metadata.get("toolgate.record_response_headers"))
        assert "4111 1111 1111 1111" not in str(stored) and "jane@example.com" not in str(stored)

    with_policy(header_policy(tmp_path), check)


def test_header_values_no_rule_masks_are_forwarded_and_stored_redacted(tmp_path):
    from toolgate.addons.recording.addon import _headers

    def check(policy):
        flow = json_flow(headers=((b"X-Reply-To", b"jane@example.com"),
                                  (b"X-Reply-To", b"bob@example.com")))
        policy.request(flow)
        assert flow.response is None
        # No rule masks emails in requests: forwarded as sent, the call stays `allow`...
        assert flow.request.headers.get_all("x-reply-to") == ["jane@example.com",
                                                              "bob@example.com"]
        assert flow.metadata["toolgate.decision"]["action"] == "allow"
        assert [f["path"] for f in finding_dicts(flow.metadata["toolgate.findings"])] == [
            "headers.x-reply-to[0]", "headers.x-reply-to[1]"]
        # ... and the store keeps them redacted, both of them.
        stored = _headers(flow.request.headers,
                          record=flow.metadata["toolgate.record_request_headers"])
        assert [v for k, v in stored if k.lower() == "x-reply-to"] == [
            "[REDACTED:email]", "[REDACTED:email]"]

    with_policy(header_policy(tmp_path), check)


def test_a_block_rule_refuses_a_request_for_a_header_value(tmp_path):
    def check(policy):
        flow = json_flow(headers=((b"X-Customer-Ssn", b"536-22-1234"),))
        policy.request(flow)
        assert flow.response.status_code == 403
        error = json.loads(flow.response.content)["error"]
        assert error["rule"] == "no-ssn-in" and error["field"] == "headers.x-customer-ssn"
        assert flow.request.headers["x-customer-ssn"] == "[REDACTED:ssn]"  # nothing raw kept
        assert flow.metadata["toolgate.record_request_headers"] == {
            "x-customer-ssn": {"sent": ["[REDACTED:ssn]"], "stored": ["[REDACTED:ssn]"]}}

    with_policy(header_policy(tmp_path), check)


def test_credential_framing_and_toolgate_headers_are_not_classified(tmp_path):
    """The caller's token (identity off leaves it on the request) would be a JWT finding and
    block every call; framing and toolgate's own headers are not data either."""

    def check(policy):
        flow = json_flow(headers=((b"Authorization", f"Bearer {JWT}".encode()),
                                  (b"X-Api-Key", JWT.encode()), (b"Cookie", f"t={JWT}".encode()),
                                  (b"X-Toolgate-Session", b"jane@example.com"),
                                  (b"Host", b"jane@example.com")))
        policy.request(flow)
        assert flow.response is None
        assert finding_dicts(flow.metadata.get("toolgate.findings", [])) == []
        assert flow.request.headers["authorization"] == f"Bearer {JWT}"
        answer(flow, headers=((b"X-Toolgate-Call-Id", b"jane@example.com"),))
        policy.responseheaders(flow)
        policy.response(flow)
        assert flow.response.headers["x-toolgate-call-id"] == "jane@example.com"
        assert flow.metadata["toolgate.decision"]["action"] == "allow"

    with_policy(header_policy(tmp_path), check)


def test_a_mask_rule_without_labels_does_not_make_headers_a_mask(tmp_path):
    """`mask-everything-of-reports` matches every answer from /reports: one with no body and
    unlabelled headers was not masked, so the call is not `mask` (headers without labelled
    values are not decided at all; rules that match the call alone are the body's)."""

    def check(policy):
        flow = json_flow(path=b"/reports", body=b"")
        flow.request.method = "GET"
        policy.request(flow)
        answer(flow, body=b"", headers=((b"X-Plain", b"nothing"),))
        policy.responseheaders(flow)
        policy.response(flow)
        assert flow.metadata["toolgate.decision"]["action"] == "allow"
        assert flow.response.headers["x-plain"] == "nothing"

    with_policy(header_policy(tmp_path), check)


def test_a_streamed_answers_headers_are_masked_before_they_leave(tmp_path):
    def check(policy):
        flow = json_flow()
        policy.request(flow)
        answer(flow, body=b"", ctype=b"text/event-stream",
               headers=((b"X-Customer-Email", b"jane@example.com"),))
        policy.responseheaders(flow)
        assert flow.response.headers["x-customer-email"] == "[REDACTED:email]"
        # ...and the body streams on, checked event by event like any other answer.
        passed = b"".join(flow.response.stream(b'data: {"note": "jane@example.com"}\n\n')
                          + flow.response.stream(b""))
        assert b"jane@example.com" not in passed and b"[REDACTED:email]" in passed

    with_policy(header_policy(tmp_path), check)


def test_body_parts_no_unit_covers_are_stored_redacted(tmp_path):
    """An MCP call's `params._meta` is no unit (only `params.arguments` is): the SSN in it is
    let through, and stored redacted, with its finding."""

    def check(policy):
        body = {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                "params": {"name": "lookup", "arguments": {"q": "a"},
                           "_meta": {"note": "ssn 536-22-1234"}}}
        flow = json_flow(path=b"/mcp", body=json.dumps(body).encode())
        policy.request(flow)
        assert flow.response is None
        assert json.loads(flow.request.content) == body  # forwarded as sent
        record = json.loads(flow.metadata["toolgate.record_request"])
        assert record["params"]["_meta"]["note"] == "ssn [REDACTED:ssn]"
        assert record["params"]["arguments"] == {"q": "a"}
        assert [(f["path"], f["action"]) for f in finding_dicts(flow.metadata["toolgate.findings"])] == [
            ("$.params._meta.note", "allow")]

    with_policy(header_policy(tmp_path), check)


def test_a_rest_body_is_classified_once(tmp_path, monkeypatch):
    """A REST body is one unit at `$`: the whole of it, so no second pass over it."""

    def second_pass(*args, **kwargs):
        raise AssertionError("a REST body was classified twice")

    monkeypatch.setattr(Policy, "_classify_whole", second_pass)

    def check(policy):
        flow = json_flow(body=b'{"ssn": "536-22-1234"}')
        policy.request(flow)
        assert flow.response.status_code == 403  # decided by the unit itself
        flow = json_flow(body=b'{"note": "jane@example.com"}')
        policy.request(flow)
        assert b"REDACTED:email" in flow.metadata["toolgate.record_request"]

    with_policy(header_policy(tmp_path), check)


def test_a_streamed_answer_whose_headers_are_refused_is_never_passed_on(tmp_path):
    def check(policy):
        flow = json_flow()
        policy.request(flow)
        answer(flow, body=b"data: {}\n\n", ctype=b"text/event-stream",
               headers=((b"X-Customer-Ssn", b"536-22-1234"),))
        policy.responseheaders(flow)
        assert not callable(flow.response.stream)  # buffered: nothing leaves yet
        policy.response(flow)
        assert flow.response.status_code == 403
        error = json.loads(flow.response.content)["error"]
        assert error["rule"] == "no-ssn-out" and error["field"] == "headers.x-customer-ssn"
        assert "536-22-1234" not in str(flow.response.headers)

    with_policy(header_policy(tmp_path), check)


def test_headers_of_a_request_refused_unread_are_stored_redacted(tmp_path):
    from toolgate.addons.answers import Refusal, refuse
    from toolgate.addons.recording.addon import _headers

    def check(policy):
        malformed = json_flow(body=b'{"a": 1, "a": 2}', headers=((b"X-Note", b"jane@example.com"),))
        refused_before = json_flow(headers=((b"X-Note", b"jane@example.com"),))
        refuse(refused_before, Refusal("identity", "no token"))
        for flow in (malformed, refused_before):
            policy.request(flow)
            assert flow.response.status_code in (400, 401)  # never forwarded
            stored = _headers(flow.request.headers,
                              record=flow.metadata["toolgate.record_request_headers"])
            assert ("X-Note", "[REDACTED:email]") in stored

    with_policy(header_policy(tmp_path), check)


def test_a_token_in_the_query_of_a_refused_request_is_stored_and_shown_redacted(tmp_path):
    """`?access_token=` (RFC 6750's query form): refused before the policy reads the call (no
    header: 401), unreadable (400), or by a rule (403), the token is neither in what the store
    keeps nor on the flow that mitmweb and mitmdump's log show."""
    from toolgate.addons.answers import Refusal, refuse
    from toolgate.addons.recording.addon import _recorded_url

    def check(policy):
        path = f"/customers/1?access_token={JWT}&page=2".encode()
        refused_before = json_flow(path=path)
        refuse(refused_before, Refusal("identity", "no token"))
        malformed = json_flow(path=path, body=b'{"a": 1, "a": 2}')
        blocked = json_flow(path=path)
        for flow, status in ((refused_before, 401), (malformed, 400), (blocked, 403)):
            policy.request(flow)
            assert flow.response.status_code == status  # never forwarded
            assert flow.metadata["toolgate.record_query"] == {
                "access_token": "[REDACTED:jwt]", "page": "2"}
            for seen in (_recorded_url(flow), flow.request.url, flow.request.path):
                assert JWT not in seen and "page=2" in seen, seen

    with_policy(header_policy(tmp_path), check)


def test_a_query_without_labelled_values_is_left_as_sent_on_a_refused_request(tmp_path):
    from toolgate.addons.answers import Refusal, refuse

    def check(policy):
        flow = json_flow(path=b"/customers/1?page=2&sort=name")
        refuse(flow, Refusal("identity", "no token"))
        policy.request(flow)
        assert "toolgate.record_query" not in flow.metadata
        assert flow.request.path == "/customers/1?page=2&sort=name"

    with_policy(header_policy(tmp_path), check)


def test_labelled_values_in_a_path_are_stored_redacted_and_forwarded_as_policy_says(tmp_path):
    """A REST call names a customer in its URL as often as in its body: the path's segments are
    classified (percent-decoded), a rule blocks on them, and the store keeps the URL and the
    name of a call outside the catalog with them redacted."""
    from toolgate.addons.answers import Refusal, refuse
    from toolgate.addons.recording.addon import _recorded_function, _recorded_url

    def check(policy):
        allowed = json_flow(path=b"/lookup/jane.doe%40example.com/orders?page=2")
        policy.request(allowed)
        assert allowed.response is None  # no rule stops emails in requests: forwarded as sent
        assert allowed.request.path == "/lookup/jane.doe%40example.com/orders?page=2"
        assert [f["path"] for f in finding_dicts(allowed.metadata["toolgate.findings"])] == [
            "path[1]"]
        stored = "/lookup/%5BREDACTED%3Aemail%5D/orders"
        assert _recorded_url(allowed).endswith(stored + "?page=2")
        assert _recorded_function(allowed, allowed.metadata["toolgate.decision"]["function"]) \
            == "POST " + stored

        blocked = json_flow(path=b"/lookup/536-22-1234")
        policy.request(blocked)
        assert blocked.response.status_code == 403
        error = json.loads(blocked.response.content)["error"]
        assert error["rule"] == "no-ssn-in" and error["field"] == "path[1]"
        unread = json_flow(path=b"/lookup/536-22-1234")
        refuse(unread, Refusal("identity", "no token"))
        policy.request(unread)
        for flow in (blocked, unread):  # never forwarded: nothing raw stays on the flow either
            assert "536-22-1234" not in _recorded_url(flow) + flow.request.url
            assert _recorded_function(flow, None) == "POST /lookup/%5BREDACTED%3Assn%5D"

        plain = json_flow(path=b"/customers/42/orders")
        policy.request(plain)
        assert "toolgate.record_path" not in plain.metadata
        assert _recorded_url(plain) == plain.request.url

    with_policy(header_policy(tmp_path), check)


def test_a_mask_rule_masks_a_path_segment_before_it_reaches_the_backend(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(HEADER_RULES.replace("path: /mail}", "path: /mail/**}"))

    def check(policy):
        flow = json_flow(path=b"/mail/jane%40example.com/inbox")
        policy.request(flow)
        assert flow.response is None
        assert flow.request.path == "/mail/%5BREDACTED%3Aemail%5D/inbox"
        assert flow.metadata["toolgate.decision"]["action"] == "mask"

    with_policy(rules, check)


def test_request_headers_are_masked_before_they_reach_the_backend(tmp_path):
    def check(policy):
        body = b'{"subject":  "hello"}'
        flow = json_flow(path=b"/mail", body=body,
                         headers=((b"X-Reply-To", b"Jane <jane@example.com>"),))
        policy.request(flow)
        assert flow.response is None
        assert flow.request.headers["x-reply-to"] == "Jane <[REDACTED:email]>"
        assert flow.request.raw_content == body  # the body is not re-encoded for it
        assert flow.metadata["toolgate.decision"]["action"] == "mask"
        [finding] = finding_dicts(flow.metadata["toolgate.findings"])
        assert (finding["direction"], finding["path"], finding["action"]) == (
            "request", "headers.x-reply-to", "mask")

    with_policy(header_policy(tmp_path), check)


def test_a_tool_named_after_a_labelled_value_is_recorded_and_refused_by_its_redacted_name(tmp_path):
    """An MCP tool or JSON-RPC method is text the caller chose: one named after a labelled
    value keeps its name for the rules and the backend, but the store, traces, metrics and a
    refusal that names it get it redacted."""
    from toolgate.addons import flowmeta
    from toolgate.addons.recording.addon import _recorded_function

    rules = tmp_path / "rules.yaml"
    rules.write_text("""
labels:
  - {name: email, level: confidential, detector: email}
functions:
  - {name: search_customers, match: {protocol: mcp}}
defaults:
  unknown_function: deny
""")
    email = "jane.doe@example.com"

    def call(name, method="tools/call"):
        params = {"name": name, "arguments": {}} if method == "tools/call" else {}
        return json_flow(path=b"/mcp", body=json.dumps(
            {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode())

    def check(policy):
        refused = call(f"find {email}")
        policy.request(refused)
        error = json.loads(refused.response.content)["error"]
        assert error["message"] == "function find [REDACTED:email] is not in the catalog " \
                                   "(defaults: unknown_function: deny)"
        assert _recorded_function(refused, "find " + email) == "find [REDACTED:email]"
        assert email not in refused.response.text  # as the caller gets it, as the store keeps it
        method = call("x", method=f"{email}/list")
        policy.request(method)
        assert flowmeta.shown_function(method.metadata, f"{email}/list") == "[REDACTED:email]/list"
        plain = call("search_customers")
        policy.request(plain)
        assert plain.response is None and flowmeta.RECORD_FUNCTION not in plain.metadata
        # a REST call outside the catalog is named by its path: refused by that name as stored
        by_path = json_flow(path=f"/lookup/{email}".encode())
        policy.request(by_path)
        assert json.loads(by_path.response.content)["error"]["message"] == (
            "function POST /lookup/%5BREDACTED%3Aemail%5D is not in the catalog "
            "(defaults: unknown_function: deny)")

    with_policy(rules, check)


def test_a_refusal_that_quotes_the_message_quotes_no_labelled_value(tmp_path):
    """A body that cannot be checked is refused saying why, and a duplicate key is named: a key
    holding a value (an AWS key in a request, a customer's email in an answer, which the caller
    must not get) is named redacted, in the answer the caller gets and the store keeps."""
    aws, email = "AKIAIOSFODNN7EXAMPLE", "jane.doe@example.com"

    def check(policy):
        request = json_flow(body=f'{{"{aws}": 1, "{aws}": 2}}'.encode())
        policy.request(request)
        assert request.response.status_code == 400
        error = json.loads(request.response.content)["error"]
        assert error["code"] == "malformed" and aws not in request.response.text
        assert "duplicate key '[REDACTED:aws_access_key]'" in error["message"]

        answered = json_flow()
        policy.request(answered)
        answer(answered, body=f'{{"{email}": 1, "{email}": 2}}'.encode())
        policy.response(answered)
        assert answered.response.status_code == 502 and email not in answered.response.text
        error = json.loads(answered.response.content)["error"]
        assert "duplicate key '[REDACTED:email]'" in error["message"]

        streamed = json_flow()
        policy.request(streamed)
        answer(streamed, body=b"", ctype=b"text/event-stream")
        policy.responseheaders(streamed)
        event = f'data: {{"{email}": 1, "{email}": 2}}\n\n'.encode()
        passed = b"".join(streamed.response.stream(event) + streamed.response.stream(b""))
        assert b"malformed" in passed and email.encode() not in passed, passed

        plain = json_flow(body=b'{"id": 1, "id": 2}')
        policy.request(plain)
        assert "duplicate key 'id'" in json.loads(plain.response.content)["error"]["message"]

    rules = tmp_path / "rules.yaml"
    rules.write_text("""
labels:
  - {name: email, level: confidential, detector: email}
  - {name: aws_access_key, level: restricted, detector: aws_access_key}
""")
    with_policy(rules, check)
