"""MCP authorization through a real gateway: the official `mcp` SDK's OAuth client, given
nothing but the gateway's URL, is refused 401, follows `WWW-Authenticate` to the gateway's
protected resource metadata (RFC 9728), discovers the dev issuer (RFC 8414), registers
(RFC 7591), logs in with PKCE, gets a token for the gateway's resource (RFC 8707), calls a tool
through the gateway, and refreshes its token when it expires. The metadata is the gateway's
own: never forwarded to the backend."""

from __future__ import annotations

import asyncio
import time
import urllib.parse

import httpx
import pytest
from harness import AUDIENCE

from toolgate.scripts.dev_issuer import DevIssuer
from toolgate.scripts.harness import free_port, store_bytes

pytestmark = pytest.mark.e2e

WELL_KNOWN = "/.well-known/oauth-protected-resource"
REDIRECT_URI = "http://127.0.0.1:9/callback"  # nothing listens: the browser stand-in reads it
MASKED_SSN = "***-**-1234"


def dev_issuer(tmp_path, access_ttl: int = 3600):
    """A dev issuer of the test's own, logging in dev-user (support) without asking."""
    return DevIssuer(keys_path=tmp_path / "oauth-issuer.json", audience=AUDIENCE,
                     user="dev-user", groups=["support"], access_ttl=access_ttl).start()


@pytest.fixture
def oauth_issuer(tmp_path):
    dev = dev_issuer(tmp_path)
    yield dev
    dev.stop()


@pytest.fixture
def short_lived_issuer(tmp_path):
    """Its access tokens expire soon enough for the SDK to refresh one within a test."""
    dev = dev_issuer(tmp_path, access_ttl=2)
    yield dev
    dev.stop()


def resource_gateway(start_gateway, issuer: DevIssuer, *sets: str, path: str = "/mcp"):
    """A gateway whose resource is its own URL + `path` (so its port is chosen first), and
    that resource. Without toolgate_oidc_audience unless `sets` give one: the resource is
    then the only audience."""
    port = free_port()
    resource = f"http://127.0.0.1:{port}{path}"
    gateway = start_gateway(f"toolgate_resource={resource}", "toolgate_oidc_audience=", *sets,
                            issuer_url=issuer.url, extra_args=("-p", str(port)))
    assert gateway.port == port
    return gateway, resource


class Storage:
    """The SDK's TokenStorage, in memory."""

    def __init__(self) -> None:
        self.tokens = self.client_info = None

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens) -> None:
        self.tokens = tokens

    async def get_client_info(self):
        return self.client_info

    async def set_client_info(self, client_info) -> None:
        self.client_info = client_info


class Browser:
    """A browser whose user is logged in at the issuer: it opens the authorization URL, the
    dev issuer approves and redirects to the client's redirect URI, whose code and state the
    client's callback then reads."""

    def __init__(self) -> None:
        self.opened: list[str] = []
        self.landed: dict[str, str] = {}

    async def open(self, url: str) -> None:
        self.opened.append(url)
        async with httpx.AsyncClient() as http:
            answer = await http.get(url)
        assert answer.status_code == 302, answer.text
        location = answer.headers["Location"]
        assert location.startswith(REDIRECT_URI + "?")
        self.landed = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))

    async def callback(self) -> tuple[str, str | None]:
        return self.landed["code"], self.landed.get("state")


def oauth_client(server_url: str):
    from mcp.client.auth import OAuthClientProvider
    from mcp.shared.auth import OAuthClientMetadata

    storage, browser = Storage(), Browser()
    provider = OAuthClientProvider(
        server_url=server_url,
        client_metadata=OAuthClientMetadata(client_name="toolgate e2e",
                                            redirect_uris=[REDIRECT_URI]),
        storage=storage,
        redirect_handler=browser.open,
        callback_handler=browser.callback,
    )
    return provider, storage, browser


async def in_session(url: str, provider, work, sent: list[str]):
    """`work(session)` in an MCP session on `url` whose HTTP client logs in with `provider`;
    every request it makes (the OAuth flow's too) is noted in `sent`."""
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async def note(request: httpx.Request) -> None:
        sent.append(f"{request.method} {request.url.copy_with(query=None)}")

    http = httpx.AsyncClient(auth=provider, timeout=httpx.Timeout(30, read=300),
                             event_hooks={"request": [note]})
    async with http, streamable_http_client(url, http_client=http) as (read, write, _):
        async with ClientSession(read, write) as session:
            await session.initialize()
            return await work(session)


async def get_customer(session):
    return await session.call_tool("get_customer", {"id": 1})


def test_the_mcp_sdk_logs_in_from_the_gateway_url_alone_and_calls_a_tool(
    start_gateway, backend, oauth_issuer
):
    gateway, resource = resource_gateway(start_gateway, oauth_issuer)
    url = f"{gateway.url}/mcp"
    provider, storage, browser = oauth_client(url)
    sent: list[str] = []

    result = asyncio.run(in_session(url, provider, get_customer, sent))

    assert result.isError is False
    assert result.structuredContent["ssn"] == MASKED_SSN  # the gateway's policy still applies
    issuer = oauth_issuer.url
    # What the SDK did, from the 401 on: the gateway's metadata (the header's URL), the
    # issuer's metadata, registration, the token; then the call again, with the token.
    assert sent[:6] == [
        f"POST {url}",
        f"GET {gateway.url}{WELL_KNOWN}/mcp",
        f"GET {issuer}/.well-known/oauth-authorization-server",
        f"POST {issuer}/register",
        f"POST {issuer}/token",
        f"POST {url}",
    ]
    [opened] = browser.opened
    login = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(opened).query))
    assert opened.startswith(f"{issuer}/authorize?")
    assert login["resource"] == resource and login["code_challenge_method"] == "S256"
    assert login["client_id"] == storage.client_info.client_id
    [claims] = oauth_issuer.oauth.issued
    assert claims["aud"] == resource and claims["sub"] == "dev-user"
    assert claims["groups"] == ["support"]
    # Discovery never reached the backend; the token did not either.
    assert {r.path for r in backend.received} == {"/mcp"}
    assert storage.tokens.access_token not in repr(backend.received)


def test_the_sdk_refreshes_an_expired_token_without_logging_in_again(
    start_gateway, backend, short_lived_issuer
):
    oauth_issuer = short_lived_issuer
    gateway, resource = resource_gateway(start_gateway, oauth_issuer)
    url = f"{gateway.url}/mcp"
    provider, storage, browser = oauth_client(url)
    sent: list[str] = []
    asyncio.run(in_session(url, provider, get_customer, sent))
    first = storage.tokens
    time.sleep(2.5)  # past the access token's expires_in: the SDK refreshes before calling

    result = asyncio.run(in_session(url, provider, get_customer, sent))

    assert result.isError is False and result.structuredContent["ssn"] == MASKED_SSN
    assert len(browser.opened) == 1, "logged in again instead of refreshing"
    assert storage.tokens.refresh_token != first.refresh_token  # rotated
    assert storage.tokens.access_token != first.access_token
    assert all(c["aud"] == resource for c in oauth_issuer.oauth.issued)
    assert len(oauth_issuer.oauth.issued) >= 2
    # The spent refresh token is refused, and using it revokes the login.
    answer = httpx.post(f"{oauth_issuer.url}/token", data={
        "grant_type": "refresh_token", "refresh_token": first.refresh_token,
        "client_id": storage.client_info.client_id})
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_grant"


def assert_refused_with_metadata(answer: httpx.Response, metadata_url: str,
                                 token_sent: bool = True) -> None:
    assert answer.status_code == 401, answer.text
    assert answer.json()["error"]["code"] == "identity"
    challenge = answer.headers["WWW-Authenticate"]
    if not token_sent:  # RFC 6750 section 3.1: no error for a request that sent nothing
        assert challenge == f'Bearer realm="toolgate", resource_metadata="{metadata_url}"'
        return
    assert challenge.startswith(
        f'Bearer realm="toolgate", resource_metadata="{metadata_url}", error="invalid_token"')


def test_tokens_must_be_issued_for_the_resource(start_gateway, backend, oauth_issuer):
    gateway, resource = resource_gateway(start_gateway, oauth_issuer)
    metadata_url = f"{gateway.url}{WELL_KNOWN}/mcp"
    keys = oauth_issuer.keys
    with gateway.client() as http:
        assert_refused_with_metadata(http.get("/customers/1"), metadata_url, token_sent=False)
        for audience in ("another-app", AUDIENCE, f"{gateway.url}/other"):
            answer = http.get("/customers/1", headers={
                "Authorization": f"Bearer {keys.mint('alice', ['support'], audience=audience)}"})
            assert_refused_with_metadata(answer, metadata_url)
            assert "audience" in answer.json()["error"]["message"]
        assert backend.received == []
        ok = http.get("/customers/1", headers={
            "Authorization": f"Bearer {keys.mint('alice', ['support'], audience=resource)}"})
    assert ok.status_code == 200, ok.text


def test_with_an_audience_too_a_token_for_either_is_accepted(start_gateway, backend, oauth_issuer):
    gateway, resource = resource_gateway(start_gateway, oauth_issuer,
                                         f"toolgate_oidc_audience={AUDIENCE}", path="")
    keys = oauth_issuer.keys
    with gateway.client() as http:
        # A root resource: clients send it with its slash (the SDK does), or without.
        for audience in (AUDIENCE, resource, resource + "/"):
            answer = http.get("/customers/1", headers={
                "Authorization": f"Bearer {keys.mint('alice', ['support'], audience=audience)}"})
            assert answer.status_code == 200, (audience, answer.text)
        refused = http.get("/customers/1", headers={
            "Authorization": f"Bearer {keys.mint('alice', audience='another-app')}"})
    assert_refused_with_metadata(refused, f"{gateway.url}{WELL_KNOWN}")


def test_the_metadata_is_the_gateways_own_and_never_forwarded(
    start_gateway, backend, oauth_issuer, tmp_path
):
    gateway, resource = resource_gateway(start_gateway, oauth_issuer)
    token = oauth_issuer.keys.mint("alice", ["support"], audience=resource)
    expected = {"resource": resource, "authorization_servers": [oauth_issuer.url],
                "bearer_methods_supported": ["header"], "resource_name": "toolgate"}
    with gateway.client() as http:
        for path in (WELL_KNOWN, f"{WELL_KNOWN}/mcp", f"{WELL_KNOWN}/mcp/x?y=1"):
            answer = http.get(path)
            assert answer.status_code == 200, (path, answer.text)
            assert answer.json() == expected
            assert answer.headers["Content-Type"] == "application/json"
            assert answer.headers["X-Toolgate-Call-Id"]
        # With a token, too (it is not stored), whatever the rules would make of it.
        sent_token = http.get(f"{WELL_KNOWN}/mcp", headers={"Authorization": f"Bearer {token}"})
        assert sent_token.json() == expected
        other = http.get(f"{WELL_KNOWN}/v1")
        assert other.status_code == 404 and f"{WELL_KNOWN}/mcp" in other.json()["error_description"]
        assert http.post(f"{WELL_KNOWN}/mcp", json={}).status_code == 405
        assert http.options(f"{WELL_KNOWN}/mcp").headers["Access-Control-Allow-Origin"] == "*"
    assert backend.received == [], "a metadata request reached the backend"
    assert token.encode() not in store_bytes(tmp_path / "toolgate.duckdb")


def test_without_a_resource_nothing_changes(start_gateway, backend, issuer):
    gateway = start_gateway()
    with gateway.client() as http:
        answer = http.get(f"{WELL_KNOWN}/mcp")
        token = issuer.keys.mint("alice", ["support"])
        forwarded = http.get(f"{WELL_KNOWN}/mcp", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 401
    assert "resource_metadata" not in answer.headers["WWW-Authenticate"]
    assert forwarded.status_code == 404  # the backend's own answer
    assert [r.path for r in backend.received] == [f"{WELL_KNOWN}/mcp"]


def test_the_dev_issuer_metadata_is_what_the_sdk_validates(oauth_issuer):
    from mcp.shared.auth import OAuthMetadata

    for path in ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"):
        document = httpx.get(oauth_issuer.url + path).json()
        metadata = OAuthMetadata.model_validate(document)
        assert str(metadata.registration_endpoint) == oauth_issuer.url + "/register"
        assert metadata.code_challenge_methods_supported == ["S256"]


def test_a_closed_catalog_does_not_close_discovery(start_gateway, backend, oauth_issuer,
                                                    tmp_path):
    """Under `unknown_function: deny`, the metadata (no function of any catalog) is still
    served: the catalog governs calls that would reach a backend."""
    rules = tmp_path / "closed.yaml"
    rules.write_text("defaults:\n  unknown_function: deny\n")
    gateway, resource = resource_gateway(start_gateway, oauth_issuer, f"toolgate_rules={rules}")
    with gateway.client() as http:
        answer = http.get(f"{WELL_KNOWN}/mcp")
        denied = http.get("/customers/1", headers={
            "Authorization": f"Bearer {oauth_issuer.keys.mint('alice', audience=resource)}"})
    assert answer.status_code == 200 and answer.json()["resource"] == resource
    assert denied.status_code == 403
    assert backend.received == []
