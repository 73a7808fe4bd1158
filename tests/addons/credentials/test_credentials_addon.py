"""The credentials addon under mitmproxy's test context: injection, the caller's token, the
flow redacted once the request has left, echo protection, reloads."""

import asyncio
import gzip
import json
import logging

import pytest
from mitmproxy import exceptions
from mitmproxy.test import taddons, tflow, tutils

from toolgate.addons.identity import addon as identity
from toolgate.addons.credentials.addon import Credentials
from toolgate.addons.credentials.echoes import REPLACEMENT
from toolgate.addons.policy.addon import Policy
from toolgate.rules import candidate_fingerprints
from toolgate.sessions.records import finding_dicts

SECRET = "crm-secret-7f3a9c1e2b"
OTHER = "crm-secret-rotated-99"
CALLER = "caller.jwt.token-value"

CREDS = """\
targets:
  - match: {path: /pass/**}
    pass_caller_token: true
  - match: {host: crm.internal}
    headers:
      Authorization: "Bearer ${env:CRM_TOKEN}"
      X-Tenant: acme
    query: {api_key: "${env:CRM_TOKEN}"}
"""


@pytest.fixture
def creds(tmp_path, monkeypatch):
    monkeypatch.setenv("CRM_TOKEN", SECRET)
    monkeypatch.delenv("TOOLGATE_TEST_MISSING", raising=False)
    path = tmp_path / "creds.yaml"
    path.write_text(CREDS)
    return path


def flow_to(host="crm.internal", path="/customers/1"):
    flow = tflow.tflow()
    flow.request.host, flow.request.path = host, path
    flow.request.headers["Authorization"] = "Bearer something-the-caller-sent"
    flow.request.headers["Proxy-Authorization"] = "Bearer for-the-proxy"
    return flow


def scenario(creds, *steps):
    """Configure Credentials (and the policy, for its mask key) and run `steps(addon, tctx)`."""

    async def run():
        credentials, policy = Credentials(), Policy()
        with taddons.context(credentials, policy) as tctx:
            tctx.configure(credentials, toolgate_credentials=str(creds))
            for step in steps:
                result = step(credentials, tctx)
                if asyncio.iscoroutine(result):
                    await result
        return credentials, policy

    return asyncio.run(run())


def test_a_missing_file_or_secret_stops_the_configuration(creds, tmp_path):
    with taddons.context(Credentials()) as tctx:
        with pytest.raises(exceptions.OptionsError, match="is not a file"):
            tctx.configure(tctx.master.addons.get("credentials"), toolgate_credentials=str(tmp_path / "no.yaml"))
        creds.write_text('targets:\n  - match: {host: crm.internal}\n    headers: {X-Key: "${env:TOOLGATE_TEST_MISSING}"}\n')
        with pytest.raises(exceptions.OptionsError) as caught:
            tctx.configure(tctx.master.addons.get("credentials"), toolgate_credentials=str(creds))
        assert f"{creds}:3: target #1 (host crm.internal): header X-Key" in str(caught.value)
        assert "TOOLGATE_TEST_MISSING is not set" in str(caught.value)


def test_the_credential_replaces_the_callers_token(creds):
    flow = flow_to()
    flow.request.query["api_key"] = "callers-own"
    scenario(creds, lambda c, t: c.request(flow))
    headers = flow.request.headers
    assert headers.get_all("Authorization") == [f"Bearer {SECRET}"]
    assert "Proxy-Authorization" not in headers and headers["X-Tenant"] == "acme"
    assert flow.request.query.get_all("api_key") == [SECRET]
    assert flow.metadata["toolgate.injected_headers"] == ["Authorization"]
    assert flow.metadata["toolgate.record_query"] == {"api_key": "[REDACTED]"}
    assert SECRET not in json.dumps(flow.metadata, default=str)


def test_no_target_no_credential_and_no_caller_token(creds):
    flow = flow_to(host="elsewhere.internal")
    scenario(creds, lambda c, t: c.request(flow))
    assert "Authorization" not in flow.request.headers
    assert "Proxy-Authorization" not in flow.request.headers
    assert "toolgate.injected_headers" not in flow.metadata


def test_a_pass_through_target_gets_the_verified_caller_token(creds):
    flow = flow_to(path="/pass/x")
    identity._CALLER_TOKENS[flow] = CALLER  # what the identity addon stashes once verified
    scenario(creds, lambda c, t: c.request(flow))
    assert flow.request.headers.get_all("Authorization") == [f"Bearer {CALLER}"]
    assert "Proxy-Authorization" not in flow.request.headers
    assert identity.take_caller_token(flow) is None  # handed out once, not kept
    assert CALLER not in json.dumps(flow.get_state(), default=str).replace(f"Bearer {CALLER}", "")


def test_the_caller_token_is_dropped_even_when_the_call_was_refused(creds):
    flow = flow_to(path="/pass/x")
    flow.response = tutils.tresp()
    identity._CALLER_TOKENS[flow] = CALLER
    scenario(creds, lambda c, t: c.request(flow))
    assert identity.take_caller_token(flow) is None


def test_the_flow_shows_the_credential_redacted_once_the_request_left(creds):
    flow = flow_to()
    flow.response = None

    def answer(c, t):
        flow.response = tutils.tresp(content=b"{}")
        c.responseheaders(flow)

    scenario(creds, lambda c, t: c.request(flow), answer, lambda c, t: c.response(flow))
    assert flow.request.headers["Authorization"] == "[REDACTED]"
    assert flow.request.query["api_key"] == "[REDACTED]"
    assert flow.request.headers["X-Tenant"] == "acme"  # not a secret
    assert SECRET not in json.dumps(flow.get_state(), default=repr)


def test_a_failed_call_is_redacted_too(creds):
    flow = flow_to()
    flow.response = None

    def fail(c, t):
        flow.error = tflow.terr()
        return c.error(flow)

    scenario(creds, lambda c, t: c.request(flow), fail)
    assert flow.request.headers["Authorization"] == "[REDACTED]"
    assert SECRET not in json.dumps(flow.get_state(), default=repr)


@pytest.mark.parametrize("encoding", [None, "gzip"])
def test_an_echoed_credential_is_masked_and_recorded(creds, encoding):
    flow = flow_to()
    flow.response = None
    echo = json.dumps({"headers": {"Authorization": f"Bearer {SECRET}"}}).encode()

    def answer(c, t):
        flow.response = tutils.tresp(content=b"")
        flow.response.headers["X-Echo"] = f"seen {SECRET}"
        if encoding:
            flow.response.headers["content-encoding"] = encoding
            flow.response.raw_content = gzip.compress(echo)
        else:
            flow.response.raw_content = echo
        flow.metadata["toolgate.record_response"] = echo
        c.responseheaders(flow)
        return c.response(flow)

    _, policy = scenario(creds, lambda c, t: c.request(flow), answer)
    response = flow.response
    assert response.headers["X-Echo"] == "seen [REDACTED:injected_secret]"
    assert json.loads(response.content)["headers"]["Authorization"] == "Bearer [REDACTED:injected_secret]"
    assert response.headers.get("content-encoding") == encoding
    assert REPLACEMENT in flow.metadata["toolgate.record_response"]
    findings = finding_dicts(flow.metadata["toolgate.findings"])
    assert {(f["path"], f["label"], f["level"], f["action"], f["direction"]) for f in findings} == {
        ("header:X-Echo", "injected_secret", "restricted", "mask", "response"),
        ("$", "injected_secret", "restricted", "mask", "response")}
    # The fingerprint is the one `toolgate sessions find-value <credential>` looks for.
    assert all(f["fingerprint"] in candidate_fingerprints(SECRET, policy.mask_key) for f in findings)
    assert SECRET not in json.dumps(flow.get_state(), default=repr)


def test_answers_without_a_credential_are_left_alone(creds):
    flow = flow_to(host="elsewhere.internal")
    flow.response = None

    def answer(c, t):
        flow.response = tutils.tresp(content=b'{"ok": true}')
        return c.response(flow)

    scenario(creds, lambda c, t: c.request(flow), answer)
    assert flow.response.content == b'{"ok": true}' and "toolgate.findings" not in flow.metadata


def test_reload_keeps_the_last_good_credentials(creds, caplog, monkeypatch):
    def broken(c, t):
        creds.write_text(CREDS.replace("CRM_TOKEN", "TOOLGATE_TEST_MISSING"))
        with caplog.at_level(logging.ERROR):
            assert c.reload() is False

    def rotated(c, t):
        monkeypatch.setenv("CRM_TOKEN", OTHER)
        creds.write_text(CREDS)
        assert c.reload() is True

    def call(expected):
        def step(c, t):
            flow = flow_to()
            c.request(flow)
            assert flow.request.headers["Authorization"] == f"Bearer {expected}"
        return step

    scenario(creds, broken, call(SECRET), rotated, call(OTHER))
    assert "target #2 (host crm.internal): header Authorization: ${env:TOOLGATE_TEST_MISSING}" in caplog.text
    assert "previous credentials stay in force" in caplog.text
    assert SECRET not in caplog.text and OTHER not in caplog.text


def test_the_watcher_picks_up_an_edit(creds, monkeypatch):
    monkeypatch.setattr("toolgate.addons.credentials.addon.POLL_SECONDS", 0.05)

    async def edit(c, t):
        c.running()
        monkeypatch.setenv("ROTATED", OTHER)
        creds.write_text(CREDS.replace("CRM_TOKEN", "ROTATED") + "\n")
        for _ in range(100):
            await asyncio.sleep(0.05)
            if OTHER in c.vault.secrets:
                break
        c.done()
        assert c.vault.secrets == (OTHER,)

    scenario(creds, edit)


def test_an_event_stream_is_masked_as_it_passes(creds):
    flow = flow_to(path="/customers/1")
    flow.response = None
    events = f'data: {{"echo": "Bearer {SECRET}"}}\n\ndata: {{"n": 2}}\n\n'.encode()
    passed = []

    def stream(c, t):
        policy = t.master.addons.get("policy")
        flow.response = tutils.tresp(content=None)
        flow.response.headers["content-type"] = "text/event-stream"
        policy.responseheaders(flow)
        c.responseheaders(flow)
        for i in range(0, len(events), 5):  # a secret split across chunks
            passed.extend(flow.response.stream(events[i:i + 5]))
        passed.extend(flow.response.stream(b""))
        policy.response(flow)  # still recognizes its checked stream
        c.response(flow)

    scenario(creds, lambda c, t: c.request(flow), stream)
    out = b"".join(passed)
    assert SECRET.encode() not in out and out.count(REPLACEMENT) == 1
    assert flow.response.content == out  # what mitmweb and the store see: what the caller got
    assert [f["label"] for f in finding_dicts(flow.metadata["toolgate.findings"])] == ["injected_secret"]
    assert SECRET not in json.dumps(flow.get_state(), default=repr)
