import json

import pytest
from mitmproxy.test import tflow

from toolgate.addons.answers import CALL_ID_HEADER, Refusal, error_body, jsonrpc_ids, refuse


def test_plain_refusal_has_the_error_shape():
    status, body = error_body(Refusal("blocked", "no bulk exports", rule="r1", field="$.limit"),
                              "c1", b'{"limit": 500}')
    assert status == 403
    assert json.loads(body) == {"error": {"code": "blocked", "message": "no bulk exports",
                                          "rule": "r1", "field": "$.limit", "call_id": "c1"}}


def test_jsonrpc_refusal_is_a_tool_error_with_the_request_id():
    request = b'{"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {}}'
    status, body = error_body(Refusal("blocked", "nope", rule="r1"), "c2", request)
    answer = json.loads(body)
    assert status == 200
    assert answer["id"] == 9 and answer["jsonrpc"] == "2.0"
    assert answer["error"]["code"] == -32001
    assert answer["error"]["message"] == "nope"
    assert answer["error"]["data"] == {"code": "blocked", "rule": "r1", "field": None,
                                       "call_id": "c2"}


def test_jsonrpc_batch_gets_one_error_per_request_and_none_for_notifications():
    request = json.dumps([
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call"},
        {"jsonrpc": "2.0", "method": "notifications/progress"},
        {"jsonrpc": "2.0", "id": "b", "method": "tools/call"},
    ]).encode()
    status, body = error_body(Refusal("denied", "denied by alice"), "c3", request)
    assert status == 200
    assert [e["id"] for e in json.loads(body)] == [1, "b"]


@pytest.mark.parametrize("code, status", [("internal", 500), ("unrecorded", 503),
                                          ("upstream", 502)])
def test_gateway_failures_keep_their_http_status_for_jsonrpc(code, status):
    request = b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call"}'
    got, body = error_body(Refusal(code, "x"), "c", request)
    assert got == status and json.loads(body)["id"] == 1


def test_identity_refusals_stay_http_401_even_for_jsonrpc():
    request = b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call"}'
    status, body = error_body(Refusal("identity", "expired"), "c", request)
    assert status == 401 and json.loads(body)["error"]["code"] == "identity"


@pytest.mark.parametrize("body", [b"", b"not json", b'{"id": 1}', b"[]", b'[1, 2]',
                                  b'{"jsonrpc": "1.0", "method": "x"}', b"[" * 5000])
def test_non_jsonrpc_bodies_are_answered_plainly(body):
    assert jsonrpc_ids(body) is None
    status, answer = error_body(Refusal("malformed", "bad"), "c", body)
    assert status == 400 and "error" in json.loads(answer)


def test_status_override_for_oversized_bodies():
    assert error_body(Refusal("uninspectable", "too big", status=413), "c", None)[0] == 413


def test_unknown_codes_are_a_programming_error():
    with pytest.raises(ValueError):
        Refusal("nope", "x")


def test_refuse_sets_the_answer_and_call_id_header():
    flow = tflow.tflow()
    refuse(flow, Refusal("identity", 'bad "token"'))
    assert flow.response.status_code == 401
    assert flow.response.headers[CALL_ID_HEADER] == flow.metadata["toolgate.call_id"]
    assert flow.response.headers["WWW-Authenticate"].startswith('Bearer realm="toolgate", error="invalid_token"')
    assert json.loads(flow.response.content)["error"]["call_id"] == flow.metadata["toolgate.call_id"]


def test_refuse_does_not_decode_compressed_request_bodies():
    flow = tflow.tflow()
    flow.request.headers["Content-Encoding"] = "gzip"
    flow.request.raw_content = b"\x1f\x8b garbage"
    refuse(flow, Refusal("blocked", "x"))  # must not try to inflate: no exception, plain shape
    assert json.loads(flow.response.content)["error"]["code"] == "blocked"
