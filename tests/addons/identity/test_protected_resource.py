"""The gateway as an OAuth protected resource (`toolgate_resource`): the metadata document and
where it is served (RFC 9728), the 401 challenge that points to it, and the audience rule
(RFC 8707). The pure parts on their own, then the identity addon under mitmproxy's test
context."""

import asyncio
import json

import pytest
from mitmproxy import exceptions
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import taddons, tflow

from toolgate.addons import flowmeta
from toolgate.addons.answers import www_authenticate
from toolgate.addons.identity.addon import Identity, build_verifier
from toolgate.addons.identity.oidc import IdentityError, KeySet, verify_token
from toolgate.addons.identity.resource import WELL_KNOWN, ProtectedResource
from toolgate.addons.policy.addon import Policy
from toolgate.scripts.dev_issuer import DevKeys

ISSUER = "https://issuer.test"
RESOURCE = "https://gw.example/mcp"
METADATA = f"https://gw.example{WELL_KNOWN}/mcp"


# -- the resource, its metadata URL and document ---------------------------------------------

@pytest.mark.parametrize("resource, metadata_url", [
    ("https://gw.example/mcp", f"https://gw.example{WELL_KNOWN}/mcp"),
    ("https://gw.example/mcp/", f"https://gw.example{WELL_KNOWN}/mcp/"),
    ("https://gw.example", f"https://gw.example{WELL_KNOWN}"),
    ("https://gw.example/", f"https://gw.example{WELL_KNOWN}"),
    ("http://127.0.0.1:8080/a/b", f"http://127.0.0.1:8080{WELL_KNOWN}/a/b"),
    ("https://[::1]:8443/mcp", f"https://[::1]:8443{WELL_KNOWN}/mcp"),
])
def test_the_metadata_url_puts_the_well_known_prefix_before_the_path(resource, metadata_url):
    assert ProtectedResource.parse(resource, ISSUER).metadata_url == metadata_url


@pytest.mark.parametrize("resource, message", [
    ("gw.example/mcp", "not an http"),
    ("ftp://gw.example/mcp", "not an http"),
    ("https:///mcp", "not an http"),
    ("https://gw.example/mcp?x=1", "no query or fragment"),
    ("https://gw.example/mcp#top", "no query or fragment"),
    ("https://user:pw@gw.example/mcp", "no user or password"),
    ('https://gw.example/m"cp', "printable ASCII"),
    ("https://gw.example/mcp\u00e9", "printable ASCII"),
    ("https://gw.example:99999/mcp", "toolgate_resource"),
])
def test_a_resource_that_is_not_a_plain_url_is_refused(resource, message):
    with pytest.raises(ValueError, match=message):
        ProtectedResource.parse(resource, ISSUER)


def test_a_resource_needs_the_issuer_it_names():
    with pytest.raises(ValueError, match="needs toolgate_oidc_issuer"):
        ProtectedResource.parse(RESOURCE, "")


def test_the_document_names_the_issuer_and_header_tokens_only():
    assert ProtectedResource.parse(RESOURCE, ISSUER).document() == {
        "resource": RESOURCE, "authorization_servers": [ISSUER],
        "bearer_methods_supported": ["header"], "resource_name": "toolgate"}


@pytest.mark.parametrize("resource, audiences", [
    ("https://gw.example/mcp", ("https://gw.example/mcp",)),
    ("HTTPS://GW.example:443/mcp", ("HTTPS://GW.example:443/mcp", "https://gw.example/mcp")),
    # A root resource: the MCP SDK sends it with its slash, others without.
    ("https://gw.example", ("https://gw.example", "https://gw.example/")),
    ("http://127.0.0.1:8080/", ("http://127.0.0.1:8080/", "http://127.0.0.1:8080")),
    # A trailing slash of a path is part of the path: not the same resource.
    ("https://gw.example/mcp/", ("https://gw.example/mcp/",)),
])
def test_the_audiences_are_the_resource_in_its_equivalent_spellings(resource, audiences):
    assert ProtectedResource.parse(resource, ISSUER).audiences == audiences


@pytest.mark.parametrize("resource, path, serves", [
    (RESOURCE, WELL_KNOWN, True),
    (RESOURCE, WELL_KNOWN + "/", True),
    (RESOURCE, WELL_KNOWN + "/mcp", True),
    (RESOURCE, WELL_KNOWN + "/mcp/", True),
    (RESOURCE, WELL_KNOWN + "/mcp/tools", True),  # an endpoint below the resource
    (RESOURCE, WELL_KNOWN + "/mcpx", False),
    (RESOURCE, WELL_KNOWN + "/v1", False),
    (RESOURCE, WELL_KNOWN + "x", None),
    (RESOURCE, "/.well-known/oauth-authorization-server", None),
    (RESOURCE, "/mcp", None),
    ("https://gw.example", WELL_KNOWN + "/anything/below", True),
])
def test_where_the_document_is_served(resource, path, serves):
    assert ProtectedResource.parse(resource, ISSUER).serves(path) is serves


# -- the challenge -------------------------------------------------------------------------

def test_the_challenge_names_the_metadata_before_the_description():
    hostile = 'no signing key with kid \'x", resource_metadata="https://evil'  # the kid is the caller's
    challenge = www_authenticate(hostile, METADATA)
    assert challenge.startswith(
        f'Bearer realm="toolgate", resource_metadata="{METADATA}", error="invalid_token", ')
    # The description cannot close its quoted string: the first resource_metadata is ours.
    assert challenge.count('"') == 8


def test_a_request_that_sent_no_token_gets_no_error_in_the_challenge():
    # RFC 6750 section 3.1; the body still says what to send.
    assert www_authenticate("no bearer token", METADATA, token_sent=False) == (
        f'Bearer realm="toolgate", resource_metadata="{METADATA}"')
    assert www_authenticate("no bearer token", token_sent=False) == 'Bearer realm="toolgate"'


def test_without_a_resource_the_challenge_is_as_before():
    assert www_authenticate("expired") == (
        'Bearer realm="toolgate", error="invalid_token", error_description="expired"')


# -- the audience rule ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def keys() -> DevKeys:
    return DevKeys.generate(ISSUER, "gw")


@pytest.mark.parametrize("audience, accepted, refused", [
    ("", [RESOURCE], ["gw", "other", None]),
    ("gw", [RESOURCE, "gw", ["other", "gw"]], ["other", None]),
])
def test_the_resource_is_the_audience_or_one_of_them(keys, audience, accepted, refused):
    resource = ProtectedResource.parse(RESOURCE, ISSUER)
    verifier = build_verifier("required", ISSUER, audience, "", "groups", "", resource)
    for aud in accepted:
        token = keys.mint("alice", audience="x", aud=aud)
        assert verify_token(token, KeySet(keys.jwks()), verifier.policy)[0].subject == "alice"
    for aud in refused:
        token = keys.mint("alice", audience="x", aud=aud)
        with pytest.raises(IdentityError, match="aud"):
            verify_token(token, KeySet(keys.jwks()), verifier.policy)


def test_the_audience_refusal_names_every_accepted_audience(keys):
    resource = ProtectedResource.parse(RESOURCE, ISSUER)
    verifier = build_verifier("required", ISSUER, "gw", "", "groups", "", resource)
    with pytest.raises(IdentityError) as refused:
        verify_token(keys.mint("alice", audience="other"), KeySet(keys.jwks()), verifier.policy)
    assert str(refused.value) == (f"the token's audience is not 'gw' or '{RESOURCE}': request "
                                  "a token for this gateway")


# -- the addon -----------------------------------------------------------------------------

@pytest.fixture
def jwks_file(tmp_path, keys):
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(keys.jwks()))
    return path


def options(jwks_file, **extra):
    return {"toolgate_oidc_issuer": ISSUER, "toolgate_oidc_jwks": str(jwks_file),
            "toolgate_resource": RESOURCE, **extra}


def reverse_flow(path: str = "/mcp", method: str = "GET"):
    flow = tflow.tflow()
    flow.client_conn.proxy_mode = ProxyMode.parse("reverse:https://backend.internal")
    flow.request.method, flow.request.path = method, path
    return flow


def run(addon_options: dict, *flows):
    async def scenario():
        identity, policy = Identity(), Policy()
        with taddons.context(identity, policy) as tctx:
            tctx.configure(identity, **addon_options)
            for flow in flows:
                await identity.requestheaders(flow)

    asyncio.run(scenario())


@pytest.mark.parametrize("path", [WELL_KNOWN, WELL_KNOWN + "/mcp", WELL_KNOWN + "/mcp?x=1"])
def test_the_metadata_is_answered_by_the_gateway_without_a_token(jwks_file, path):
    flow = reverse_flow(path)
    run(options(jwks_file), flow)
    assert flow.response.status_code == 200
    assert json.loads(flow.response.content) == ProtectedResource.parse(RESOURCE, ISSUER).document()
    assert flow.response.headers["Content-Type"] == "application/json"
    assert flow.response.headers["X-Toolgate-Call-Id"] == flow.metadata[flowmeta.CALL_ID]
    assert flow.metadata[flowmeta.IDENTITY]["anonymous"] is True
    assert flowmeta.REFUSED not in flow.metadata  # an answer, not a refusal


def test_a_token_sent_for_the_metadata_is_removed_all_the_same(jwks_file, keys):
    flow = reverse_flow(WELL_KNOWN + "/mcp")
    token = keys.mint("alice", audience=RESOURCE)
    flow.request.headers["Authorization"] = f"Bearer {token}"
    flow.request.headers["X-Copy"] = token
    run(options(jwks_file), flow)
    assert flow.response.status_code == 200
    assert token not in repr(flow.request.headers.fields)


@pytest.mark.parametrize("path, method, status", [
    (WELL_KNOWN + "/v1", "GET", 404),
    (WELL_KNOWN + "/mcp", "POST", 405),
    (WELL_KNOWN + "/mcp", "OPTIONS", 204),
])
def test_other_metadata_requests_are_answered_too(jwks_file, path, method, status):
    flow = reverse_flow(path, method)
    run(options(jwks_file), flow)
    assert flow.response.status_code == status
    assert flow.response.headers["Access-Control-Allow-Origin"] == "*"


def test_a_401_in_reverse_mode_points_to_the_metadata(jwks_file, keys):
    missing, other = reverse_flow(), reverse_flow()
    other.request.headers["Authorization"] = f"Bearer {keys.mint('eve', audience='other')}"
    run(options(jwks_file), missing, other)
    for flow in (missing, other):
        assert flow.response.status_code == 401
        assert f'resource_metadata="{METADATA}"' in flow.response.headers["WWW-Authenticate"]


def test_through_an_explicit_proxy_the_metadata_of_other_hosts_is_not_ours(jwks_file, keys):
    """In regular (explicit proxy) mode the request is for another host: its metadata is not
    the gateway's to answer, and a 401 there does not send the client to the gateway."""
    discovery, refused = tflow.tflow(), tflow.tflow()
    discovery.request.path = WELL_KNOWN
    discovery.request.headers["Authorization"] = f"Bearer {keys.mint('alice', audience=RESOURCE)}"
    run(options(jwks_file), discovery, refused)
    assert discovery.response is None  # verified and forwarded like any call
    assert "resource_metadata" not in refused.response.headers["WWW-Authenticate"]


def test_without_a_resource_the_well_known_path_is_a_call_like_any_other(jwks_file):
    flow = reverse_flow(WELL_KNOWN)
    run(options(jwks_file, toolgate_resource="", toolgate_oidc_audience="gw"), flow)
    assert flow.response.status_code == 401
    assert "resource_metadata" not in flow.response.headers["WWW-Authenticate"]


def test_identity_off_ignores_the_resource(jwks_file):
    flow = reverse_flow(WELL_KNOWN)
    run(options(jwks_file, toolgate_identity="off"), flow)
    assert flow.response is None


@pytest.mark.parametrize("bad, message", [
    ({"toolgate_resource": "gw.example/mcp"}, "not an http"),
    ({"toolgate_oidc_issuer": ""}, "needs toolgate_oidc_issuer"),
])
def test_a_bad_resource_is_refused_and_the_last_good_one_stays(jwks_file, bad, message):
    async def scenario():
        identity, policy = Identity(), Policy()
        with taddons.context(identity, policy) as tctx:
            tctx.configure(identity, **options(jwks_file))
            with pytest.raises(exceptions.OptionsError, match=message):
                tctx.configure(identity, **bad)
            assert identity.resource.resource == RESOURCE
            flow = reverse_flow(WELL_KNOWN)
            await identity.requestheaders(flow)
            assert flow.response.status_code == 200

    asyncio.run(scenario())
