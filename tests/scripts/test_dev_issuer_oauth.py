"""The dev issuer's OAuth, over real HTTP on loopback: metadata, dynamic client registration,
the authorization code flow with PKCE S256 (auto-approving the dev user), refresh with
rotation, and tokens for the resource a client names."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import secrets
import urllib.parse

import httpx
import pytest

from toolgate.addons.identity.oidc import KeySet, TokenPolicy, verify_token
from toolgate.scripts.dev_issuer import DevIssuer

REDIRECT = "http://127.0.0.1:9/callback"
RESOURCE = "http://127.0.0.1:8080/mcp"


@pytest.fixture(scope="module")
def issuer(tmp_path_factory):
    dev = DevIssuer(keys_path=tmp_path_factory.mktemp("oauth") / "k.json", audience="dev-aud",
                    user="dev-user", groups=["support", "sre"]).start()
    yield dev
    dev.stop()


@pytest.fixture
def http(issuer):
    with httpx.Client(base_url=issuer.url, timeout=10) as client:
        yield client


def register(http, **metadata) -> dict:
    answer = http.post("/register", json={"redirect_uris": [REDIRECT], **metadata})
    assert answer.status_code == 201, answer.text
    return answer.json()


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge.decode().rstrip("=")


def authorize(http, client_id: str, challenge: str | None, **extra) -> httpx.Response:
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT,
              "state": "st-1", **({"code_challenge": challenge, "code_challenge_method": "S256"}
                                  if challenge else {}), **extra}
    return http.get("/authorize", params={k: v for k, v in params.items() if v is not None})


def landed(answer: httpx.Response) -> dict[str, str]:
    """The query the issuer redirected the browser back with."""
    assert answer.status_code == 302, answer.text
    location = answer.headers["Location"]
    assert location.startswith(REDIRECT + "?")
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))


def token(http, **form) -> httpx.Response:
    return http.post("/token", data=form)


def login(http, resource: str | None = RESOURCE) -> tuple[dict, dict]:
    """A client registered and logged in: its registration and the token answer."""
    client = register(http)
    verifier, challenge = pkce()
    code = landed(authorize(http, client["client_id"], challenge, resource=resource))["code"]
    answer = token(http, grant_type="authorization_code", code=code, redirect_uri=REDIRECT,
                   client_id=client["client_id"], code_verifier=verifier,
                   **({"resource": resource} if resource else {}))
    assert answer.status_code == 200, answer.text
    return client, answer.json()


def claims_of(issuer, access_token: str, audience: str) -> dict:
    caller, _ = verify_token(access_token, KeySet(issuer.keys.jwks()),
                             TokenPolicy(issuer=issuer.url, audience=audience))
    return caller.as_dict()


# -- metadata and registration -------------------------------------------------------------

def test_the_metadata_is_served_at_both_discovery_urls(http, issuer):
    oauth = http.get("/.well-known/oauth-authorization-server").json()
    assert http.get("/.well-known/openid-configuration").json() == oauth
    assert oauth["issuer"] == issuer.url
    assert oauth["authorization_endpoint"] == issuer.url + "/authorize"
    assert oauth["token_endpoint"] == issuer.url + "/token"
    assert oauth["registration_endpoint"] == issuer.url + "/register"
    assert oauth["jwks_uri"] == issuer.url + "/jwks.json"
    assert oauth["code_challenge_methods_supported"] == ["S256"]
    assert oauth["token_endpoint_auth_methods_supported"] == ["none"]


def test_a_public_client_registers(http):
    client = register(http, client_name="cli", redirect_uris=[REDIRECT, "https://app.example/cb"],
                      client_secret="chosen-by-the-client")
    assert client["client_id"].startswith("dev-client-")
    assert client["token_endpoint_auth_method"] == "none"
    assert client["redirect_uris"] == [REDIRECT, "https://app.example/cb"]
    assert client["client_name"] == "cli" and "client_secret" not in client


@pytest.mark.parametrize("body, error", [
    ({"redirect_uris": ["http://app.example/cb"]}, "invalid_redirect_uri"),  # http, not loopback
    ({"redirect_uris": ["http://127.0.0.1/cb#x"]}, "invalid_redirect_uri"),
    ({"redirect_uris": ["myapp:/cb"]}, "invalid_redirect_uri"),
    ({"redirect_uris": []}, "invalid_redirect_uri"),
    ({}, "invalid_redirect_uri"),
    ({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "client_secret_basic"},
     "invalid_client_metadata"),
    ({"redirect_uris": [REDIRECT], "grant_types": ["client_credentials"]},
     "invalid_client_metadata"),
    ([REDIRECT], "invalid_client_metadata"),
])
def test_registration_refuses_what_a_dev_public_client_cannot_be(http, body, error):
    answer = http.post("/register", json=body)
    assert answer.status_code == 400 and answer.json()["error"] == error


def test_registration_needs_json(http):
    answer = http.post("/register", content=b"redirect_uris=x")
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_client_metadata"


# -- authorization -------------------------------------------------------------------------

def test_the_dev_user_is_logged_in_and_redirected_back_with_code_and_state(http, issuer):
    client = register(http)
    back = landed(authorize(http, client["client_id"], pkce()[1], resource=RESOURCE))
    assert back["state"] == "st-1" and back["iss"] == issuer.url and len(back["code"]) >= 32


@pytest.mark.parametrize("client_id, redirect_uri", [
    ("dev-client-unknown", REDIRECT),
    (None, "http://127.0.0.1:9/elsewhere"),
])
def test_an_unknown_client_or_redirect_uri_gets_an_error_page_not_a_redirect(
    http, client_id, redirect_uri
):
    client = register(http)
    answer = authorize(http, client_id or client["client_id"], pkce()[1], redirect_uri=redirect_uri)
    assert answer.status_code == 400 and "Location" not in answer.headers
    assert answer.json()["error"] == "invalid_request"


@pytest.mark.parametrize("extra, error", [
    ({"code_challenge": None, "code_challenge_method": None}, "invalid_request"),  # no PKCE
    ({"code_challenge_method": "plain"}, "invalid_request"),
    ({"code_challenge_method": None}, "invalid_request"),  # plain, by default
    ({"code_challenge": "too-short"}, "invalid_request"),
    ({"response_type": "token"}, "unsupported_response_type"),
    ({"resource": "not-a-uri"}, "invalid_target"),
    ({"resource": RESOURCE + "#frag"}, "invalid_target"),
])
def test_a_bad_authorization_request_is_sent_back_with_its_error(http, extra, error):
    client = register(http)
    back = landed(authorize(http, client["client_id"], pkce()[1], **extra))
    assert back["error"] == error and back["state"] == "st-1" and "code" not in back


# -- the token endpoint --------------------------------------------------------------------

def test_the_token_is_for_the_resource_and_the_dev_user(http, issuer):
    client, answer = login(http)
    assert answer["token_type"] == "Bearer" and answer["expires_in"] == 3600
    assert answer["refresh_token"]
    caller = claims_of(issuer, answer["access_token"], RESOURCE)
    assert caller["subject"] == "dev-user" and caller["groups"] == ["support", "sre"]
    assert issuer.oauth.issued[-1]["client_id"] == client["client_id"]
    assert issuer.oauth.issued[-1]["aud"] == RESOURCE


def test_without_a_resource_the_token_is_for_the_default_audience(http, issuer):
    _, answer = login(http, resource=None)
    assert claims_of(issuer, answer["access_token"], "dev-aud")["subject"] == "dev-user"


def code_for(http, resource: str | None = RESOURCE):
    client = register(http)
    verifier, challenge = pkce()
    code = landed(authorize(http, client["client_id"], challenge, resource=resource))["code"]
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
            "client_id": client["client_id"], "code_verifier": verifier}
    return client, form


@pytest.mark.parametrize("change, error", [
    ({"code_verifier": "x" * 43}, "invalid_grant"),
    ({"code_verifier": None}, "invalid_request"),
    ({"redirect_uri": "http://127.0.0.1:9/other"}, "invalid_grant"),
    ({"code": "made-up"}, "invalid_grant"),
    ({"resource": "http://127.0.0.1:8080/other"}, "invalid_target"),
    ({"grant_type": "password"}, "unsupported_grant_type"),
])
def test_a_code_is_only_redeemed_as_it_was_issued(http, change, error):
    _, form = code_for(http)
    answer = token(http, **{k: v for k, v in {**form, **change}.items() if v is not None})
    assert answer.status_code == 400 and answer.json()["error"] == error
    assert answer.headers["Cache-Control"] == "no-store"


def test_a_code_is_spent_by_a_wrong_verifier(http):
    _, form = code_for(http)
    assert token(http, **{**form, "code_verifier": "y" * 43}).status_code == 400
    assert token(http, **form).json()["error"] == "invalid_grant"


def test_another_clients_code_is_refused(http):
    _, form = code_for(http)
    other = register(http)
    answer = token(http, **{**form, "client_id": other["client_id"]})
    assert answer.json()["error"] == "invalid_grant"
    unknown = token(http, **{**code_for(http)[1], "client_id": "dev-client-nobody"})
    assert unknown.status_code == 401 and unknown.json()["error"] == "invalid_client"


def test_a_code_is_used_once_and_a_replay_revokes_what_it_gave(http):
    client, form = code_for(http)
    first = token(http, **form).json()
    replay = token(http, **form)
    assert replay.status_code == 400 and "already used" in replay.json()["error_description"]
    refreshed = token(http, grant_type="refresh_token", refresh_token=first["refresh_token"],
                      client_id=client["client_id"])
    assert refreshed.json()["error"] == "invalid_grant"


def test_an_expired_code_is_refused(http, issuer):
    _, form = code_for(http)
    with issuer.oauth.lock:
        pending = issuer.oauth.codes[form["code"]]
        issuer.oauth.codes[form["code"]] = dataclasses.replace(pending, expires=0)
    answer = token(http, **form)
    assert answer.json()["error"] == "invalid_grant" and "expired" in answer.text


def test_refresh_rotates_and_a_spent_refresh_token_revokes_the_login(http, issuer):
    client, first = login(http)
    refresh = {"grant_type": "refresh_token", "client_id": client["client_id"],
               "resource": RESOURCE}
    second = token(http, refresh_token=first["refresh_token"], **refresh)
    assert second.status_code == 200, second.text
    second = second.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert claims_of(issuer, second["access_token"], RESOURCE)["subject"] == "dev-user"
    # The first one again: refused, and the login it belongs to is revoked.
    reused = token(http, refresh_token=first["refresh_token"], **refresh)
    assert reused.status_code == 400 and "revoked" in reused.json()["error_description"]
    assert token(http, refresh_token=second["refresh_token"], **refresh).status_code == 400


def test_refresh_keeps_the_resource_of_the_login(http):
    client, first = login(http)
    answer = token(http, grant_type="refresh_token", refresh_token=first["refresh_token"],
                   client_id=client["client_id"], resource="http://127.0.0.1:8080/other")
    assert answer.json()["error"] == "invalid_target"


def test_the_token_endpoint_takes_forms_only(http):
    _, form = code_for(http)
    assert token(http, **form).status_code == 200
    as_json = http.post("/token", json=form)
    assert as_json.status_code == 400 and "x-www-form-urlencoded" in as_json.text
    duplicated = http.post("/token", content=urllib.parse.urlencode(
        [("grant_type", "refresh_token"), ("grant_type", "authorization_code")]),
        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert duplicated.json()["error"] == "invalid_request"


def test_the_dev_issuer_listens_on_loopback_only():
    with pytest.raises(ValueError, match="loopback only"):
        DevIssuer("0.0.0.0")


@pytest.mark.parametrize("body", [
    {"redirect_uris": ["http://[::1/cb"]},
    {"redirect_uris": ["http://127.0.0.1:99999/cb"]},
    {"redirect_uris": [REDIRECT], "grant_types": [{"a": 1}]},
    {"redirect_uris": [{"uri": REDIRECT}]},
])
def test_garbage_gets_an_oauth_error_and_the_next_request_works(http, body):
    answer = http.post("/register", json=body)
    assert answer.status_code == 400 and answer.json()["error"].startswith("invalid_")
    client = register(http)
    bad = landed(authorize(http, client["client_id"], pkce()[1], resource="http://[::1/x"))
    assert bad["error"] == "invalid_target"
