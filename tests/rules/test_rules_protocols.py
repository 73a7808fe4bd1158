"""The protocol layer: which function calls a body holds, and masks written back in place."""

import json

import pytest

from toolgate.rules.protocols import Malformed, Uninspectable, parse_request, parse_response


def mask_all(message, value="MASKED"):
    for unit in message.units:
        unit.put(value)
    return json.loads(message.encode())


def test_rest_json_is_one_unit_named_by_the_catalog():
    message = parse_request("/customers/1", "application/json", b'{"a": 1}')
    [unit] = message.units
    assert (unit.protocol, unit.direction, unit.function, unit.body) == ("rest", "request", None, {"a": 1})
    assert mask_all(message) == "MASKED"


def test_json_under_a_text_type_is_still_read_as_json():
    [unit] = parse_request("/x", "text/plain", b'{"ssn": "536-22-1234"}').units
    assert unit.body == {"ssn": "536-22-1234"}


def test_text_that_merely_starts_with_a_bracket_is_text():
    [unit] = parse_request("/x", "text/plain", b"[draft] call me at +1 415 555 0100").units
    assert unit.body.startswith("[draft]")


@pytest.mark.parametrize("body, ctype, error, words", [
    (b'{"limit": 5, "limit": 500}', "application/json", Malformed, "duplicate key 'limit'"),
    (b'{"limit": 5, "limit": 500}', "text/plain", Malformed, "duplicate key"),
    (b'{"a": "\xff"}', "application/json", Malformed, "not valid UTF-8"),
    (b'{"a": NaN}', "application/json", Malformed, "NaN"),
    (b'{"a": ', "application/json", Malformed, "invalid JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "application/json", Malformed, "nested too deeply"),
    (b"\xef\xbb\xbf{}", "application/json", Malformed, "byte order mark"),
    (b"\x89PNG\r\n\x1a\n\x00\xff", "image/png", Uninspectable, "binary"),
    (b"--x\r\n", "multipart/form-data; boundary=x", Uninspectable, "multipart"),
])
def test_bodies_that_cannot_be_checked_are_refused(body, ctype, error, words):
    with pytest.raises(error, match=words):
        parse_request("/x", ctype, body)


def test_form_fields_are_a_unit_and_written_back_as_a_form():
    message = parse_request("/x", "application/x-www-form-urlencoded", b"ssn=536-22-1234&n=1")
    [unit] = message.units
    assert unit.body == {"ssn": "536-22-1234", "n": "1"}
    unit.put({"ssn": "***-**-1234", "n": "1"})
    assert message.encode() == b"ssn=%2A%2A%2A-%2A%2A-1234&n=1"


def test_mcp_batch_units_are_named_by_tool_and_results_tied_by_id():
    batch = [
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
         "params": {"name": "get_customer", "arguments": {"id": 1}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": "b", "method": "tools/list"},
    ]
    request = parse_request("/mcp", "application/json", json.dumps(batch).encode())
    assert request.jsonrpc
    assert [(u.function, u.rpc_id, u.location) for u in request.units] == [
        ("get_customer", 1, "$[0].params.arguments"),
        ("notifications/initialized", None, "$[1]"),
        ("tools/list", "b", "$[2]"),
    ]
    answer = [{"jsonrpc": "2.0", "id": "b", "result": {"tools": []}},
              {"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": "x"}]}}]
    response = parse_response(request.context, "application/json", json.dumps(answer).encode())
    assert [(u.function, u.direction) for u in response.units] == [
        ("tools/list", "response"), ("get_customer", "response")]
    masked = mask_all(response, {"content": []})
    assert masked[1]["result"] == {"content": []}


def test_openai_tool_arguments_are_decoded_and_re_encoded_as_a_string():
    body = {"model": "m", "messages": [
        {"role": "user", "content": "refund"},
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {
            "name": "issue_refund", "arguments": '{"card": "4111 1111 1111 1111"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": '{"ssn": "536-22-1234"}'},
    ]}
    message = parse_request("/v1/chat/completions", "application/json", json.dumps(body).encode())
    prompt, call, result = message.units
    assert (prompt.function, prompt.direction, prompt.content) == ("message.user", "request", True)
    assert (call.function, call.direction, call.body) == ("issue_refund", "request",
                                                          {"card": "4111 1111 1111 1111"})
    assert (result.function, result.direction) == ("issue_refund", "response")
    call.put({"card": "****"})
    sent = json.loads(message.encode())
    assert sent["messages"][1]["tool_calls"][0]["function"]["arguments"] == '{"card":"****"}'


def test_openai_arguments_with_duplicate_keys_are_refused_and_non_json_is_text():
    def body(arguments):
        return json.dumps({"choices": [{"index": 0, "message": {"tool_calls": [
            {"id": "c", "type": "function",
             "function": {"name": "f", "arguments": arguments}}]}}]}).encode()

    with pytest.raises(Malformed, match="duplicate"):
        parse_response({"protocol": "openai"}, "application/json", body('{"a": 1, "a": 2}'))
    [unit] = parse_response({"protocol": "openai"}, "application/json", body("not json")).units
    assert unit.body == "not json"


def test_anthropic_tool_use_and_tool_result_blocks():
    body = {"model": "m", "max_tokens": 5, "messages": [
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "t1", "name": "lookup", "input": {"email": "a@b.co"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": "SSN 536-22-1234"}]},
    ]}
    message = parse_request("/v1/messages", "application/json", json.dumps(body).encode())
    assert [(u.function, u.direction, u.location) for u in message.units] == [
        ("lookup", "request", "$.messages[0].content[0].input"),
        ("lookup", "response", "$.messages[1].content[0].content"),
    ]
    response = {"type": "message", "content": [
        {"type": "tool_use", "id": "t2", "name": "refund", "input": {"card": "4111111111111111"}}]}
    [unit] = parse_response({"protocol": "anthropic"}, "application/json",
                            json.dumps(response).encode()).units
    assert (unit.function, unit.body) == ("refund", {"card": "4111111111111111"})


def test_openai_prompts_and_completions_are_units_named_by_role():
    body = {"model": "m", "messages": [
        {"role": "system", "content": "You help ana@example.com"},
        {"role": "developer", "content": [{"type": "text", "text": "be brief"},
                                          {"type": "image_url", "image_url": {"url": "data:,x"}}]},
        {"role": "user", "content": "my SSN is 536-22-1234"},
        {"role": "assistant", "content": None, "refusal": "I cannot"},
        {"role": "tool", "tool_call_id": "c1", "content": "result"},
    ]}
    message = parse_request("/v1/chat/completions", "application/json", json.dumps(body).encode())
    assert [(u.function, u.direction, u.location, u.content) for u in message.units] == [
        ("message.system", "request", "$.messages[0].content", True),
        ("message.developer", "request", "$.messages[1].content[0].text", True),
        ("message.user", "request", "$.messages[2].content", True),
        ("message.assistant", "request", "$.messages[3].refusal", True),
        ("unknown_tool", "response", "$.messages[4].content", False),
    ]
    message.units[2].put("my SSN is ***-**-1234")
    message.units[1].put("[REDACTED]")
    sent = json.loads(message.encode())
    assert sent["messages"][2]["content"] == "my SSN is ***-**-1234"
    assert sent["messages"][1]["content"][0] == {"type": "text", "text": "[REDACTED]"}
    answer = {"object": "chat.completion", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "card 4111 1111 1111 1111"}},
        {"index": 1, "message": {"role": "assistant", "content": None, "refusal": "no"}}]}
    [first, second] = parse_response({"protocol": "openai"}, "application/json",
                                     json.dumps(answer).encode()).units
    assert (first.function, first.direction, first.location, first.body) == (
        "message.assistant", "response", "$.choices[0].message.content", "card 4111 1111 1111 1111")
    assert second.location == "$.choices[1].message.refusal"


def test_anthropic_system_messages_and_text_blocks_are_units():
    body = {"model": "m", "max_tokens": 5,
            "system": [{"type": "text", "text": "You help ana@example.com"}],
            "messages": [
                {"role": "user", "content": "my SSN is 536-22-1234"},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Looking up"},
                    {"type": "tool_use", "id": "t1", "name": "lookup", "input": {}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": "found"},
                    {"type": "text", "text": "thanks"}]},
            ]}
    message = parse_request("/v1/messages", "application/json", json.dumps(body).encode())
    assert [(u.function, u.direction, u.location, u.content) for u in message.units] == [
        ("message.system", "request", "$.system[0].text", True),
        ("message.user", "request", "$.messages[0].content", True),
        ("message.assistant", "request", "$.messages[1].content[0].text", True),
        ("lookup", "request", "$.messages[1].content[1].input", False),
        ("lookup", "response", "$.messages[2].content[0].content", False),
        ("message.user", "request", "$.messages[2].content[1].text", True),
    ]
    message.units[1].put("masked")
    assert json.loads(message.encode())["messages"][0]["content"] == "masked"
    plain = parse_request("/v1/messages", "application/json",
                          json.dumps(dict(body, system="be brief")).encode())
    plain.units[0].put("short")
    assert json.loads(plain.encode())["system"] == "short"
    answer = {"type": "message", "role": "assistant",
              "content": [{"type": "text", "text": "card 4111 1111 1111 1111"}]}
    [unit] = parse_response({"protocol": "anthropic"}, "application/json",
                            json.dumps(answer).encode()).units
    assert (unit.function, unit.direction, unit.location) == (
        "message.assistant", "response", "$.content[0].text")


def test_the_issues_rule_masks_ssns_in_prompts_and_the_catalog_leaves_prompts_alone():
    from toolgate.rules import Call, evaluate, load_rules_text

    ruleset = load_rules_text("""
labels:
  - {name: us_ssn, level: restricted, detector: us_ssn}
functions:
  - name: message.user
    owner: crm-team
    access: [{groups: [support], reviewed: 2026-01-01, review_every: 3650d}]
rules:
  - id: no-ssn-to-models
    match: {protocol: openai, direction: request, labels: [us_ssn]}
    action: mask
    mask: redact
defaults:
  unknown_function: deny
""")
    body = {"model": "m", "messages": [{"role": "user", "content": "my SSN is 536-22-1234"}]}
    message = parse_request("/v1/chat/completions", "application/json", json.dumps(body).encode())
    [unit] = message.units
    decision = evaluate(ruleset, Call(direction=unit.direction, protocol=unit.protocol,
                                      function=unit.function, body=unit.body,
                                      content=unit.content), b"k" * 32)
    assert (decision.action, decision.catalogued) == ("mask", False)
    assert decision.rules == ("no-ssn-to-models",)  # neither denied as unknown nor access-checked
    unit.put(decision.body)
    assert json.loads(message.encode())["messages"][0]["content"] == "my SSN is [REDACTED:us_ssn]"
    # Function calls are still checked: an unknown tool is denied, a granted one access-checked.
    for name, action in (("lookup", "deny"), ("message.user", "block")):
        tool = Call(direction="request", protocol="openai", function=name, body="x")
        assert evaluate(ruleset, tool, b"k" * 32).action == action
