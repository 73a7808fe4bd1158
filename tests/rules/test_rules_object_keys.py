"""Values in object keys: APIs key maps by email, phone or account (`{"by_email": {"jane@...":
{...}}}`), and an agent can put a secret where a field name goes. A key is classified like a
value; a key holding one is renamed to its hash token in the record, in every path through it,
and in the forwarded body when a mask rule covers it; a block rule refuses it."""

import dataclasses
import json

from toolgate.rules import Call, evaluate, load_rules_text

SUPPORT = dict(subject="ana", groups=("support",))
EMAIL = "jane.doe@example.com"
SSN = "123-45-6789"
AWS = "AKIAIOSFODNN7EXAMPLE"


def rest(direction, body, now, method="GET", path="/customers/42", query=None):
    return Call(direction=direction, protocol="rest", method=method, path=path, body=body, query=query, now=now, **SUPPORT)


def reported(decision):
    """What a decision says of the call besides the body it forwards (the caller's own here)."""
    said = decision.as_dict()
    del said["body"], said["query"]
    return [said, decision.message, decision.explain()]


def email_token(packs, key, now):
    """The hash token the bundled packs give this email as a value in an answer."""
    decision = evaluate(packs, rest("response", {"email": EMAIL}, now), key)
    assert decision.body["email"].startswith("tok_email_")
    return decision.body["email"]


def test_a_key_holding_a_value_is_found_and_renamed_where_its_values_are_masked(packs, key, now):
    body = {"customers": {EMAIL: {"ssn": SSN, "name": "Jane Doe"}}}
    decision = evaluate(packs, rest("response", body, now), key)
    token = email_token(packs, key, now)

    assert decision.action == "mask"
    assert decision.body == {"customers": {token: {"ssn": "***-**-6789", "name": "Jane Doe"}}}
    assert decision.record_body == decision.body
    paths = {finding.path: (finding.label, finding.action) for finding in decision.findings}
    assert paths == {f"$.customers.{token}<key>": ("email", "mask"), f"$.customers.{token}.ssn": ("ssn", "mask")}
    everything = json.dumps([decision.as_dict(), decision.body, decision.record_body, decision.explain()])
    assert EMAIL not in everything and SSN not in everything
    assert body == {"customers": {EMAIL: {"ssn": SSN, "name": "Jane Doe"}}}  # the caller's body is not changed


def test_a_key_the_policy_lets_through_is_forwarded_as_sent_and_recorded_renamed(packs, key, now):
    body = {"by_email": {EMAIL: {"note": "call back"}}}
    decision = evaluate(packs, rest("request", body, now), key)

    assert decision.action == "allow" and decision.body is body and not decision.changed
    (renamed,) = decision.record_body["by_email"]
    assert renamed == email_token(packs, key, now)
    assert decision.record_body["by_email"][renamed] == {"note": "call back"}
    assert [finding.path for finding in decision.findings] == [f"$.by_email.{renamed}<key>"]
    assert EMAIL not in json.dumps([reported(decision), decision.record_body])


def test_a_secret_in_a_key_blocks_the_request_and_is_not_shown(packs, key, now):
    arguments = {"filters": {AWS: "x"}, "limit": 5}
    envelope = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "search_customers", "arguments": arguments}}
    call = Call(direction="request", protocol="mcp", function="search_customers", method="POST", path="/mcp",
                body=envelope, arguments=arguments, now=now, **SUPPORT)
    decision = evaluate(packs, call, key)

    assert decision.action == "block" and decision.rule == "secrets-block-in-requests"
    assert decision.field.startswith("$.params.arguments.filters.tok_aws_access_key_") and decision.field.endswith("<key>")
    assert AWS not in json.dumps([reported(decision), decision.record_body])


def test_a_remove_mask_removes_the_member_whose_key_holds_the_value(key, now):
    rules = load_rules_text("""
labels:
  - {name: email, level: confidential, detector: email}
rules:
  - {id: drop-emails, match: {labels: [email]}, action: mask, mask: remove}
""")
    decision = evaluate(rules, rest("response", {"count": 1, EMAIL: {"orders": 3}, "note": "ok"}, now), key)
    assert decision.body == {"count": 1, "note": "ok"}
    assert decision.record_body == decision.body


def test_renamed_keys_stay_distinct_in_their_object(packs, key, now):
    token = email_token(packs, key, now)
    # one email in two cases (the same token), and a key that already is that token
    body = {EMAIL: 1, EMAIL.upper(): 2, token: 3, "id": 4}
    decision = evaluate(packs, rest("request", body, now), key)

    assert list(decision.record_body.items()) == [(f"{token}~2", 1), (f"{token}~3", 2), (token, 3), ("id", 4)]
    assert [finding.path for finding in decision.findings] == [f"$['{token}~2']<key>", f"$['{token}~3']<key>"]
    assert decision.body is body


def test_keys_in_query_parameters_and_in_json_inside_strings(packs, key, now):
    token = email_token(packs, key, now)
    request = evaluate(packs, rest("request", None, now, query={EMAIL: "1", "page": "2"}), key)
    assert request.record_query == {token: "1", "page": "2"}
    assert [finding.path for finding in request.findings] == [f"?{token}<key>"]

    text = json.dumps({"by_email": {EMAIL: {"plan": "pro"}}})
    result = {"jsonrpc": "2.0", "id": 7, "result": {"content": [{"type": "text", "text": text}]}}
    call = dataclasses.replace(rest("response", result, now), protocol="mcp", function="get_customer", path="/mcp")
    response = evaluate(packs, call, key)
    inner = json.loads(response.body["result"]["content"][0]["text"])
    assert inner == {"by_email": {token: {"plan": "pro"}}}
    assert [finding.path for finding in response.findings] == [f"$.result.content[0].text<json>.by_email.{token}<key>"]


def test_keys_without_values_are_left_alone(packs, key, now):
    body = {"id": 42, "a": {"xy": 1}, "email": EMAIL, "555": "x", "customer_since": "2019-04-01"}
    decision = evaluate(packs, rest("response", body, now), key)
    assert list(decision.body) == list(body) and list(decision.body["a"]) == ["xy"]
    assert [finding.path for finding in decision.findings] == ["$.email"]


def test_thousands_of_keys_with_one_name_are_numbered_in_order(packs, key, now):
    """Case variants of one email share a token: each key gets the next free number, and a key
    that already is such a name keeps it (the search goes on where the last one stopped, so
    a body of such keys costs no more than any other)."""
    token = email_token(packs, key, now)
    letters = [i for i, c in enumerate(EMAIL) if c.isalpha()]
    variants = [
        "".join(c.upper() if i in letters and bits >> letters.index(i) & 1 else c for i, c in enumerate(EMAIL))
        for bits in range(3000)
    ]
    assert len(set(variants)) == 3000
    body = {f"{token}~3": "kept", **{variant: n for n, variant in enumerate(variants)}}
    decision = evaluate(packs, rest("request", body, now), key)

    names = list(decision.record_body)
    assert names[0] == f"{token}~3" and decision.record_body[names[0]] == "kept"
    assert names[1:] == [token, f"{token}~2", *(f"{token}~{n}" for n in range(4, 3001 + 1))]
    assert list(decision.record_body.values())[1:] == list(range(3000))
