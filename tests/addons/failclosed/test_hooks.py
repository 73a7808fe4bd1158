"""Fail closed, unit level: every toolgate flow hook is wrapped, and a failure ends the call
in a complete 500 answer at the right moment."""

import asyncio
import json

import pytest
from mitmproxy.test import taddons, tflow, tutils

from toolgate.addons.assembly import build_chain
from toolgate.addons.failclosed.hooks import flow_hook, unguarded_hooks
from toolgate.addons.failclosed.sentinel import Sentinel


@pytest.mark.parametrize("addon", build_chain() + [Sentinel()], ids=lambda a: type(a).__name__)
def test_every_flow_hook_is_fail_closed(addon):
    assert unguarded_hooks(addon) == []


class Faulty:
    calls = 0

    @flow_hook
    def request(self, flow):
        Faulty.calls += 1
        raise RuntimeError("boom")

    @flow_hook
    def requestheaders(self, flow):
        raise RuntimeError("boom")

    @flow_hook
    def responseheaders(self, flow):
        raise RuntimeError("boom")

    @flow_hook
    async def response(self, flow):
        raise RuntimeError("boom")


def test_a_failing_request_hook_answers_500_at_once():
    flow = tflow.tflow()
    Faulty().request(flow)
    assert flow.response.status_code == 500
    assert json.loads(flow.response.content)["error"]["code"] == "internal"


def test_a_failure_before_the_body_is_answered_once_it_is_in_and_shaped_for_jsonrpc():
    flow = tflow.tflow()
    flow.request.data.content = None  # only the headers have arrived
    Faulty().requestheaders(flow)
    assert flow.response is None and flow.metadata["toolgate.failed"]
    flow.request.content = b'{"jsonrpc": "2.0", "id": 3, "method": "tools/call"}'
    Sentinel().request(flow)
    answer = json.loads(flow.response.content)
    assert answer["id"] == 3 and answer["error"]["data"]["code"] == "internal"


def test_a_failure_on_response_headers_never_lets_the_body_through():
    flow = tflow.tflow(resp=True)
    flow.response.data.content = None  # headers only
    Faulty().responseheaders(flow)
    flow.response.content = b'{"ssn": "536-22-1234"}'  # the body arrives
    Sentinel().response(flow)
    assert flow.response.status_code == 500
    assert b"536-22-1234" not in flow.response.content


def test_a_failing_async_hook_replaces_the_backend_answer():
    flow = tflow.tflow(resp=True)
    asyncio.run(Faulty().response(flow))
    assert flow.response.status_code == 500


def test_a_streamed_answer_is_cut_rather_than_passed_on():
    flow = tflow.tflow(resp=True)
    flow.response.stream = True
    asyncio.run(Faulty().response(flow))
    assert flow.error and flow.error.msg == "Connection killed."


def test_flows_loaded_from_files_are_not_touched():
    flow = tflow.tflow()
    flow.live = False
    before = Faulty.calls
    Faulty().request(flow)
    assert Faulty.calls == before and flow.response is None


def test_the_sentinel_answers_503_while_no_chain_is_in_force():
    async def scenario():
        sentinel = Sentinel()
        with taddons.context(sentinel):
            flow = tflow.tflow()
            sentinel.requestheaders(flow)
            assert flow.response.status_code == 503
            chain = object()
            sentinel.open(chain)
            ok = tflow.tflow()
            ok.metadata["toolgate.call_id"] = "c"
            sentinel.request(ok)
            assert ok.response is None
            unchecked = tflow.tflow()  # the chain never saw it: not forwarded
            sentinel.request(unchecked)
            assert unchecked.response.status_code == 500
            sentinel.close(object(), "someone else's chain")  # not ours: stays open
            assert sentinel.is_open
            sentinel.close(chain, "unloaded")
            answered = tflow.tflow(resp=tutils.tresp())
            sentinel.response(answered)
            assert answered.response.status_code == 503

    asyncio.run(scenario())
