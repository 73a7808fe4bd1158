"""The identity addon under mitmproxy's test context (real tokens, keys from a JWKS file)."""

import asyncio
import json

import pytest
from mitmproxy import exceptions
from mitmproxy.test import taddons, tflow

from toolgate.addons import flowmeta
from toolgate.addons.identity.addon import Identity
from toolgate.addons.policy.addon import Policy
from toolgate.scripts.dev_issuer import DevKeys

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
    assert flow.metadata[flowmeta.IDENTITY] == {"subject": "alice", "issuer": ISSUER,
                                                "groups": ["sre"], "token_id": "j1",
                                                "anonymous": False}


def test_groups_from_a_nested_claim(jwks_file, keys):
    flow = tflow.tflow()
    token = keys.mint("bob", realm_access={"roles": ["support", "sre"]})
    flow.request.headers["Authorization"] = f"Bearer {token}"
    run(options(jwks_file, toolgate_groups_claim="realm_access.roles"), flow)
    assert flow.metadata[flowmeta.IDENTITY]["groups"] == ["support", "sre"]


def test_proxy_authorization_wins_and_both_are_removed(jwks_file, keys):
    flow = tflow.tflow()
    flow.request.headers["Proxy-Authorization"] = f"Bearer {keys.mint('carol')}"
    flow.request.headers["Authorization"] = "Bearer backend-api-key"
    run(options(jwks_file), flow)
    assert flow.metadata[flowmeta.IDENTITY]["subject"] == "carol"
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
    assert flow.response is None and flowmeta.IDENTITY not in flow.metadata


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
    assert flow.metadata[flowmeta.IDENTITY]["anonymous"] is True


def test_a_mode_set_while_running_applies_to_the_next_call_and_a_bad_one_is_rolled_back(jwks_file):
    async def scenario():
        identity, policy = Identity(), Policy()
        with taddons.context(identity, policy) as tctx:
            tctx.configure(identity, **options(jwks_file))
            refused = tflow.tflow()
            await identity.requestheaders(refused)
            assert refused.response.status_code == 401  # required: no token
            tctx.configure(identity, toolgate_identity="optional")
            anonymous = tflow.tflow()
            await identity.requestheaders(anonymous)
            assert anonymous.response is None
            with pytest.raises(exceptions.OptionsError):
                tctx.configure(identity, toolgate_identity="sometimes")
            still = tflow.tflow()
            await identity.requestheaders(still)
            assert still.response is None and still.metadata[flowmeta.IDENTITY]["anonymous"]
            tctx.configure(identity, toolgate_identity="off")
            untouched = tflow.tflow()
            await identity.requestheaders(untouched)
            assert untouched.response is None and flowmeta.IDENTITY not in untouched.metadata

    asyncio.run(scenario())


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
            assert inner.metadata[flowmeta.IDENTITY]["subject"] == "dave"
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
def test_bad_option_changes_are_refused_and_the_last_good_verifier_stays(jwks_file, keys, bad, message):
    async def scenario():
        identity, policy = Identity(), Policy()
        with taddons.context(identity, policy) as tctx:
            tctx.configure(identity, **options(jwks_file))
            good = identity.verifier
            with pytest.raises(exceptions.OptionsError, match=message):
                tctx.configure(identity, **bad)
            # The gateway keeps verifying with the last good settings, all of them: a good token
            # is accepted with its groups, one for another audience and no token are refused.
            assert identity.verifier.policy.issuer == good.policy.issuer == ISSUER
            accepted = tflow.tflow()
            accepted.request.headers["Authorization"] = f"Bearer {keys.mint('alice', ['sre'])}"
            await identity.requestheaders(accepted)
            assert accepted.response is None
            assert accepted.metadata[flowmeta.IDENTITY]["subject"] == "alice"
            assert accepted.metadata[flowmeta.IDENTITY]["groups"] == ["sre"]
            other = tflow.tflow()
            other.request.headers["Authorization"] = f"Bearer {keys.mint('eve', audience='other')}"
            anonymous = tflow.tflow()
            for refused in (other, anonymous):
                await identity.requestheaders(refused)
                assert refused.response.status_code == 401

    asyncio.run(scenario())


# -- hostile header bytes: always 401 `identity`, and the next call still works -------------

HOSTILE = {
    "latin-1": [(b"Authorization", b"Bearer \xe9\xe9")],
    "latin-1-jwt": [(b"Authorization", b"Bearer eyJ\xe9.eyJ.sig")],
    "non-ascii-utf8": [(b"Authorization", "Bearer tökén".encode())],
    "nul": [(b"Authorization", b"Bearer a\x00b")],
    "control": [(b"Authorization", b"Bearer \x7f\x01")],
    "empty": [(b"Authorization", b"")],
    "lower-case-basic": [(b"authorization", b"basic Zm9vOmJhcg==")],
    "two-authorization": [(b"Authorization", b"Bearer a.b.c"), (b"Authorization", b"Bearer d.e.f")],
    "huge": [(b"Authorization", b"Bearer " + b"a" * 100_000)],
    "proxy-latin-1": [(b"Proxy-Authorization", b"Bearer \xff\xfe")],
    "x-api-key-latin-1-jwt": [(b"x-api-key", b"eyJ\xe9.eyJ.sig")],
    "x-api-key-garbage-jwt": [(b"x-api-key", b"eyJhbGciOiJSUzI1NiIsImtpZCI6MX0.e30.c2ln")],
    "api-key-expired-shape": [(b"api-key", b"Bearer eyJhbGciOiJub25lIn0.e30.")],
    # Claims that end up in the reason, hence in WWW-Authenticate: CR/LF, non-ASCII, surrogates.
    "alg-with-crlf": [(b"Authorization", b"Bearer eyJhbGciOiAiXHUwMGU5XHUyMDI4XHJcblg6IHkifQ.e30.c2ln")],
    "kid-with-surrogate": [(b"Authorization", b"Bearer eyJhbGciOiAiUlMyNTYiLCAia2lkIjogIlx1ZGM4MFxyXG5cdTAwZTkifQ.e30.c2ln")],
}


@pytest.mark.parametrize("fields", list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_credentials_get_401_identity_and_the_next_call_works(jwks_file, keys, fields):
    async def scenario():
        identity, policy = Identity(), Policy()
        with taddons.context(identity, policy) as tctx:
            tctx.configure(identity, **options(jwks_file))
            flow = tflow.tflow()
            flow.request.headers.fields = tuple(fields)
            await identity.requestheaders(flow)
            assert flow.response is not None and flow.response.status_code == 401
            assert json.loads(flow.response.content)["error"]["code"] == "identity"
            assert all(b"\r" not in v and b"\n" not in v for _, v in flow.response.headers.fields)
            good = tflow.tflow()
            good.request.headers["Authorization"] = f"Bearer {keys.mint('alice')}"
            await identity.requestheaders(good)
            assert good.response is None and good.metadata[flowmeta.IDENTITY]["subject"] == "alice"

    asyncio.run(scenario())


# -- the token from API-key headers, and removed from every header ------------------------

@pytest.mark.parametrize("name, value", [
    ("x-api-key", "{t}"), ("api-key", "{t}"), ("X-Api-Key", "Bearer {t}"), ("api-key", " {t} "),
])
def test_a_jwt_in_an_api_key_header_is_the_callers_token(jwks_file, keys, name, value):
    token = keys.mint("anna", ["sre"])
    flow = tflow.tflow()
    flow.request.headers[name] = value.format(t=token)
    run(options(jwks_file), flow)
    assert flow.response is None and flow.metadata[flowmeta.IDENTITY]["subject"] == "anna"
    assert name not in flow.request.headers


def test_authorization_wins_over_an_api_key_header_which_stays_if_it_is_not_the_token(jwks_file, keys):
    flow = tflow.tflow()
    flow.request.headers["Authorization"] = f"Bearer {keys.mint('anna')}"
    flow.request.headers["x-api-key"] = keys.mint("mallory")  # another token: not verified
    run(options(jwks_file), flow)
    assert flow.metadata[flowmeta.IDENTITY]["subject"] == "anna"
    assert "x-api-key" in flow.request.headers


def test_an_api_key_that_is_not_a_jwt_is_no_token(jwks_file):
    flow = tflow.tflow()
    flow.request.headers["x-api-key"] = "sk-ant-upstream-key-0123456789"
    run(options(jwks_file, toolgate_identity="optional"), flow)
    assert flow.response is None and flow.metadata[flowmeta.IDENTITY]["anonymous"] is True
    assert flow.request.headers["x-api-key"] == "sk-ant-upstream-key-0123456789"


@pytest.mark.parametrize("expired", [False, True], ids=["verified", "refused"])
def test_every_copy_of_the_token_is_removed(jwks_file, keys, expired):
    token = keys.mint("anna", ttl=-600 if expired else 600)
    flow = tflow.tflow()
    flow.request.headers.fields = (
        (b"Authorization", f"Bearer {token}".encode()),
        (b"x-api-key", token.encode()),
        (b"X-Custom", token.encode()),
        (b"X-Forward", f"Bearer {token}".encode()),
        (b"X-List", f"Bearer x, {token}".encode()),
        (b"Cookie", f"sid=1; tok={token}; b=2".encode()),
        (b"Cookie", f"only={token}".encode()),
        (b"X-Other", b"keep"),
    )
    run(options(jwks_file), flow)
    assert (flow.response is not None) is expired
    assert token.encode() not in b"".join(k + v for k, v in flow.request.headers.fields)
    assert flow.request.headers.fields == ((b"Cookie", b"sid=1; b=2"), (b"X-Other", b"keep"))
