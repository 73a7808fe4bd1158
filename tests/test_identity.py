"""The identity addon under mitmproxy's test context (real tokens, keys from a JWKS file)."""

import asyncio
import json

import pytest
from mitmproxy import exceptions
from mitmproxy.test import taddons, tflow

from addons.identity import IDENTITY_KEY, Identity
from addons.policy import Policy
from scripts.dev_issuer import DevKeys

ISSUER = "https://issuer.test"


@pytest.fixture(scope="module")
def keys() -> DevKeys:
    return DevKeys.generate(ISSUER, "gw")


@pytest.fixture
def jwks_file(tmp_path, keys):
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(keys.jwks()))
    return path


def run(addon_options: dict, flow, hook: str = "requestheaders"):
    """Configure a fresh Identity addon and run one hook on `flow`."""

    async def scenario():
        identity, policy = Identity(), Policy()
        with taddons.context(identity, policy) as tctx:
            tctx.configure(identity, **addon_options)
            await getattr(identity, hook)(flow)
        return flow

    return asyncio.run(scenario())


def options(jwks_file, **extra):
    return {"toolgate_oidc_issuer": ISSUER, "toolgate_oidc_audience": "gw",
            "toolgate_oidc_jwks": str(jwks_file), **extra}


def test_identity_is_attached_and_the_token_removed(jwks_file, keys):
    flow = tflow.tflow()
    flow.request.headers["Authorization"] = f"Bearer {keys.mint('alice', ['sre'], jti='j1')}"
    run(options(jwks_file), flow)
    assert flow.response is None
    assert "Authorization" not in flow.request.headers
    assert flow.metadata[IDENTITY_KEY] == {"subject": "alice", "issuer": ISSUER,
                                           "groups": ["sre"], "token_id": "j1",
                                           "anonymous": False}


def test_groups_from_a_nested_claim(jwks_file, keys):
    flow = tflow.tflow()
    token = keys.mint("bob", realm_access={"roles": ["support", "sre"]})
    flow.request.headers["Authorization"] = f"Bearer {token}"
    run(options(jwks_file, toolgate_groups_claim="realm_access.roles"), flow)
    assert flow.metadata[IDENTITY_KEY]["groups"] == ["support", "sre"]


def test_proxy_authorization_wins_and_both_are_removed(jwks_file, keys):
    flow = tflow.tflow()
    flow.request.headers["Proxy-Authorization"] = f"Bearer {keys.mint('carol')}"
    flow.request.headers["Authorization"] = "Bearer backend-api-key"
    run(options(jwks_file), flow)
    assert flow.metadata[IDENTITY_KEY]["subject"] == "carol"
    assert "Proxy-Authorization" not in flow.request.headers
    # An Authorization meant for the backend is left to the credentials addon.
    assert flow.request.headers["Authorization"] == "Bearer backend-api-key"


def test_refusal_removes_the_token_too(jwks_file, keys):
    flow = tflow.tflow()
    flow.request.headers["Authorization"] = f"Bearer {keys.mint('eve', ttl=-600)}"
    run(options(jwks_file), flow)
    assert flow.response.status_code == 401
    assert "Authorization" not in flow.request.headers


def test_flows_loaded_from_a_file_are_not_re_enforced(jwks_file):
    flow = tflow.tflow()
    flow.live = False
    run(options(jwks_file), flow)
    assert flow.response is None and IDENTITY_KEY not in flow.metadata


def test_off_leaves_the_request_alone(jwks_file):
    flow = tflow.tflow()
    flow.request.headers["Authorization"] = "Bearer whatever"
    run({"toolgate_identity": "off"}, flow)
    assert flow.response is None
    assert flow.request.headers["Authorization"] == "Bearer whatever"


def test_optional_marks_anonymous_calls(jwks_file):
    flow = tflow.tflow()
    run(options(jwks_file, toolgate_identity="optional"), flow)
    assert flow.response is None
    assert flow.metadata[IDENTITY_KEY]["anonymous"] is True


def test_monitor_mode_lets_a_bad_token_through_and_notes_it(jwks_file):
    flow = tflow.tflow()
    flow.request.headers["Authorization"] = "Bearer junk"
    run(options(jwks_file, toolgate_mode="monitor"), flow)
    assert flow.response is None
    assert flow.metadata["toolgate.monitored"] == ["identity"]
    assert "Authorization" not in flow.request.headers


def test_connect_token_serves_the_tunnelled_requests(jwks_file, keys):
    async def scenario():
        identity, policy = Identity(), Policy()
        with taddons.context(identity, policy) as tctx:
            tctx.configure(identity, **options(jwks_file))
            connect = tflow.tflow()
            connect.request.method = "CONNECT"
            connect.request.headers["Proxy-Authorization"] = f"Bearer {keys.mint('dave')}"
            identity.http_connect(connect)
            assert "Proxy-Authorization" not in connect.request.headers
            inner = tflow.tflow(client_conn=connect.client_conn)
            await identity.requestheaders(inner)
            assert inner.metadata[IDENTITY_KEY]["subject"] == "dave"
            identity.client_disconnected(connect.client_conn)
            after = tflow.tflow(client_conn=connect.client_conn)
            await identity.requestheaders(after)
            assert after.response.status_code == 401

    asyncio.run(scenario())


@pytest.mark.parametrize("bad, message", [
    ({"toolgate_oidc_issuer": "", "toolgate_oidc_jwks": ""}, "needs toolgate_oidc_issuer"),
    ({"toolgate_oidc_issuer": "ftp://issuer"}, "not an http"),
    ({"toolgate_oidc_jwks": "/no/such/jwks.json"}, "not a file"),
    ({"toolgate_identity": "maybe"}, "one of required, optional, off"),
    ({"toolgate_groups_claim": "$[[["}, "toolgate_groups_claim"),
    ({"toolgate_oidc_hmac_secret": "env:TG_NO_SUCH_SECRET"}, "not set"),
])
def test_bad_option_changes_are_refused_and_the_last_good_verifier_stays(jwks_file, bad, message):
    async def scenario():
        identity, policy = Identity(), Policy()
        with taddons.context(identity, policy) as tctx:
            tctx.configure(identity, **options(jwks_file))
            good = identity.verifier
            with pytest.raises(exceptions.OptionsError, match=message):
                tctx.configure(identity, **bad)
            assert identity.verifier is not None
            assert identity.verifier.policy.issuer == good.policy.issuer == ISSUER

    asyncio.run(scenario())
