"""A development OIDC issuer on loopback: a discovery document, a JWKS with an RSA and an EC
key, and token minting (`toolgate dev token`). For demos and tests, never for production.

The private keys live in a JSON key file (default `.toolgate/dev-issuer.json`) so that the
CLI can mint tokens that a running issuer's JWKS verifies.

It also speaks just enough OAuth for an MCP client to log in through the gateway (`make run`,
the tests): authorization server metadata (RFC 8414, and the OIDC discovery document),
dynamic client registration of public clients (RFC 7591), the authorization code flow with
PKCE S256 (RFC 7636) that approves one configured dev user without asking anything, and
refresh tokens that rotate. Access tokens are RS256 JWTs for the `resource` a client names
(RFC 8707), else for the issuer's default audience. Everything is in memory, and it listens
on loopback only: whoever can reach it gets the dev user's tokens.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from toolgate.addons.identity.resource import is_loopback
from toolgate.scripts.harness import Served, StubHandler, StubServer

DEFAULT_KEYS = Path(".toolgate/dev-issuer.json")
DEFAULT_AUDIENCE = "toolgate"
DEV_USER = "dev-user"  # who the authorization endpoint logs in, without asking
DEV_GROUPS = ("support",)
ACCESS_TTL = 3600  # seconds an access token from the token endpoint lives
REFRESH_TTL = 8 * 3600
CODE_TTL = 60  # an authorization code is used at once, or never
MAX_BODY = 64 * 1024
MAX_ENTRIES = 10_000  # registered clients, codes, refresh tokens: a dev tool, bounded anyway


def new_key(kty: str) -> dict[str, Any]:
    """A fresh private JWK with a unique kid: RSA (RS256) or EC P-256 (ES256)."""
    if kty == "RSA":
        jwk = RSAAlgorithm.to_jwk(rsa.generate_private_key(65537, 2048), as_dict=True)
        jwk["alg"] = "RS256"
    else:
        jwk = ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()), as_dict=True)
        jwk["alg"] = "ES256"
    jwk["kid"] = f"{kty.lower()}-{secrets.token_hex(4)}"
    jwk["use"] = "sig"
    return jwk


PRIVATE_FIELDS = ("d", "p", "q", "dp", "dq", "qi")


def public_jwk(jwk: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in jwk.items() if k not in PRIVATE_FIELDS}


class DevKeys:
    """The issuer's identity and private keys."""

    def __init__(self, issuer: str, audience: str, keys: list[dict[str, Any]]) -> None:
        self.issuer = issuer
        self.audience = audience
        self.keys = keys

    @classmethod
    def generate(cls, issuer: str, audience: str = DEFAULT_AUDIENCE) -> "DevKeys":
        return cls(issuer, audience, [new_key("RSA"), new_key("EC")])

    @classmethod
    def load(cls, path: Path) -> "DevKeys":
        data = json.loads(path.read_text())
        return cls(data["issuer"], data["audience"], data["keys"])

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump({"issuer": self.issuer, "audience": self.audience, "keys": self.keys}, out)
        os.replace(tmp, path)

    def jwks(self) -> dict[str, Any]:
        return {"keys": [public_jwk(k) for k in self.keys]}

    def key_for(self, alg: str) -> dict[str, Any]:
        for key in self.keys:
            if key["alg"] == alg:
                return key
        raise ValueError(f"the dev issuer has no {alg} key (it has RS256 and ES256)")

    def rotate(self, alg: str = "RS256") -> dict[str, Any]:
        """Replace the key for `alg` with a new one (a new kid); returns the new key."""
        old = self.key_for(alg)
        fresh = new_key(old["kty"])
        self.keys = [fresh if k is old else k for k in self.keys]
        return fresh

    def mint(
        self,
        sub: str,
        groups: list[str] | tuple[str, ...] = (),
        *,
        alg: str = "RS256",
        ttl: int = 3600,
        audience: str | None = None,
        **claims: Any,
    ) -> str:
        """A signed token for `sub`; `claims` override or add any claim."""
        key = self.key_for(alg)
        now = int(time.time())
        payload: dict[str, Any] = {
            "iss": self.issuer,
            "aud": audience or self.audience,
            "sub": sub,
            "groups": list(groups),
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            "jti": secrets.token_hex(8),
        }
        payload.update(claims)
        signing_key = jwt.PyJWK(key).key
        return jwt.encode(payload, signing_key, algorithm=alg, headers={"kid": key["kid"]})


# -- OAuth: just enough for an MCP client to log in ----------------------------------------------

PKCE_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")  # RFC 7636 section 4.1
PKCE_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")  # base64url of a SHA-256, unpadded
GRANT_TYPES = ("authorization_code", "refresh_token")
# What the server, not the client, says in a registration answer: never echoed from the request.
ISSUED_FIELDS = frozenset({"client_id", "client_id_issued_at", "client_secret",
                           "client_secret_expires_at", "registration_access_token",
                           "registration_client_uri", "issuer"})


class OAuthError(Exception):
    """An OAuth error answer (RFC 6749 section 5.2): `error`, `error_description`, status."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error, self.description, self.status = error, description, status

    def document(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")


def _split(url: str, error: str) -> urllib.parse.SplitResult:
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
        return parts
    except ValueError as exc:
        raise OAuthError(error, f"{url!r} is not a URL: {exc}") from None


def check_redirect_uri(uri: Any) -> str:
    """A redirect URI a dev client may register: https, or http on a loopback host (RFC 8252
    section 7.3), absolute and without fragment."""
    if not isinstance(uri, str):
        raise OAuthError("invalid_redirect_uri", "redirect_uris must be strings")
    parts = _split(uri, "invalid_redirect_uri")
    if parts.fragment or "#" in uri:
        raise OAuthError("invalid_redirect_uri", f"{uri!r}: a redirect URI has no fragment")
    if parts.scheme == "https" and parts.hostname:
        return uri
    if parts.scheme == "http" and parts.hostname and is_loopback(parts.hostname):
        return uri
    raise OAuthError("invalid_redirect_uri",
                     f"{uri!r}: use https, or http on a loopback address (127.0.0.1, [::1], "
                     "localhost)")


def check_resource(resource: str) -> str:
    """An RFC 8707 resource indicator: an absolute URI without fragment."""
    parts = _split(resource, "invalid_target")
    if not parts.scheme or not parts.netloc or parts.fragment or "#" in resource:
        raise OAuthError("invalid_target", f"resource {resource!r} is not an absolute URI "
                         "without fragment (RFC 8707)")
    return resource


def single_params(query: str) -> dict[str, str]:
    """Form or query parameters, each at most once (RFC 6749 section 3.1)."""
    params: dict[str, str] = {}
    for name, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        if name in params:
            raise OAuthError("invalid_request" if name != "resource" else "invalid_target",
                             f"{name} is given more than once"
                             + (" (the dev issuer issues tokens for one resource at a time)"
                                if name == "resource" else ""))
        params[name] = value
    return params


def _require(params: dict[str, str], *names: str) -> None:
    missing = [name for name in names if not params.get(name)]
    if missing:
        raise OAuthError("invalid_request", f"missing {', '.join(missing)}")


@dataclass(frozen=True)
class RegisteredClient:
    client_id: str
    redirect_uris: tuple[str, ...]
    registered: dict[str, Any]  # the metadata as registered, echoed back


@dataclass(frozen=True)
class Login:
    """What the dev user granted a client: kept under an authorization code, then under each
    refresh token of its family (one family per login)."""

    client_id: str
    subject: str
    groups: tuple[str, ...]
    resource: str | None
    scope: str | None
    family: str


@dataclass(frozen=True)
class PendingCode:
    grant: Login
    redirect_uri: str | None  # as the authorization request gave it (the token request repeats it)
    challenge: str
    expires: float


def _bounded_put(table: "OrderedDict[str, Any]", key: str, value: Any) -> None:
    table[key] = value
    while len(table) > MAX_ENTRIES:
        table.popitem(last=False)


class DevAuthorization:
    """The issuer's OAuth endpoints, in memory. Thread-safe (the server is threaded)."""

    def __init__(self, keys: DevKeys, user: str = DEV_USER, groups: Sequence[str] = DEV_GROUPS,
                 access_ttl: int = ACCESS_TTL) -> None:
        self.keys, self.user, self.groups, self.access_ttl = keys, user, tuple(groups), access_ttl
        self.lock = threading.Lock()
        self.clients: OrderedDict[str, RegisteredClient] = OrderedDict()
        self.codes: OrderedDict[str, PendingCode] = OrderedDict()
        self.used_codes: OrderedDict[str, str] = OrderedDict()  # code -> family
        self.refresh_tokens: OrderedDict[str, tuple[Login, float]] = OrderedDict()
        self.rotated: OrderedDict[str, str] = OrderedDict()  # spent refresh token -> family
        self.issued: list[dict[str, Any]] = []  # (for tests) the claims of every access token

    def metadata(self) -> dict[str, Any]:
        """Authorization server metadata (RFC 8414), also the OIDC discovery document."""
        issuer = self.keys.issuer
        return {
            "issuer": issuer,
            "authorization_endpoint": issuer + "/authorize",
            "token_endpoint": issuer + "/token",
            "registration_endpoint": issuer + "/register",
            "jwks_uri": issuer + "/jwks.json",
            "response_types_supported": ["code"],
            "grant_types_supported": list(GRANT_TYPES),
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none"],
            "id_token_signing_alg_values_supported": ["RS256", "ES256"],
            "subject_types_supported": ["public"],
        }

    # -- RFC 7591 --------------------------------------------------------------------------

    def register(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise OAuthError("invalid_client_metadata", "the body is not a JSON object")
        uris = body.get("redirect_uris")
        if not isinstance(uris, list) or not uris:
            raise OAuthError("invalid_redirect_uri", "redirect_uris: a non-empty list is needed")
        redirect_uris = tuple(check_redirect_uri(uri) for uri in uris)
        method = body.get("token_endpoint_auth_method", "none")
        if method != "none":
            raise OAuthError("invalid_client_metadata",
                             f"token_endpoint_auth_method {method!r}: the dev issuer registers "
                             "public clients only (none), which use PKCE")
        grant_types = body.get("grant_types", ["authorization_code"])
        if not isinstance(grant_types, list) or not all(g in GRANT_TYPES for g in grant_types):
            raise OAuthError("invalid_client_metadata",
                             f"grant_types: only {', '.join(GRANT_TYPES)} are supported")
        response_types = body.get("response_types", ["code"])
        if response_types != ["code"]:
            raise OAuthError("invalid_client_metadata", "response_types: only code is supported")
        client_id = "dev-client-" + secrets.token_urlsafe(12)
        kept = {k: v for k, v in body.items() if k not in ISSUED_FIELDS}
        registered = {**kept, "client_id": client_id, "client_id_issued_at": int(time.time()),
                      "token_endpoint_auth_method": "none", "grant_types": grant_types,
                      "response_types": response_types}
        with self.lock:
            _bounded_put(self.clients, client_id,
                         RegisteredClient(client_id, redirect_uris, registered))
        return registered

    # -- RFC 6749 section 4.1 with RFC 7636 --------------------------------------------------

    def authorize(self, query: str) -> str:
        """Where to send the browser: the client's redirect URI with `code` and `state`, or
        with an `error` it can read. OAuthError when the client cannot be told (unknown
        client, a redirect URI it did not register): RFC 6749 section 4.1.2.1."""
        params = single_params(query)
        with self.lock:
            client = self.clients.get(params.get("client_id", ""))
        if client is None:
            raise OAuthError("invalid_request", "unknown client_id: register the client first")
        redirect_uri = params.get("redirect_uri")
        if redirect_uri is None and len(client.redirect_uris) != 1:
            raise OAuthError("invalid_request", "redirect_uri is required (several are registered)")
        if redirect_uri is not None and redirect_uri not in client.redirect_uris:
            raise OAuthError("invalid_request", "redirect_uri is not one the client registered")
        target = redirect_uri or client.redirect_uris[0]

        def back(**answer: str) -> str:
            answer = {**answer, "iss": self.keys.issuer}  # RFC 9207: who answers
            if "state" in params:
                answer["state"] = params["state"]
            return target + ("&" if "?" in target else "?") + urllib.parse.urlencode(answer)

        try:
            if params.get("response_type") != "code":
                raise OAuthError("unsupported_response_type", "only response_type=code")
            challenge = params.get("code_challenge", "")
            if not challenge:
                raise OAuthError("invalid_request", "PKCE is required: send code_challenge and "
                                 "code_challenge_method=S256")
            if params.get("code_challenge_method") != "S256":
                raise OAuthError("invalid_request", "code_challenge_method must be S256")
            if not PKCE_CHALLENGE.fullmatch(challenge):
                raise OAuthError("invalid_request", "code_challenge is not a base64url SHA-256")
            resource = params.get("resource")
            if resource is not None:
                check_resource(resource)
        except OAuthError as exc:
            return back(error=exc.error, error_description=exc.description)
        code = secrets.token_urlsafe(32)
        grant = Login(client.client_id, self.user, self.groups, resource, params.get("scope"),
                      family=secrets.token_hex(8))
        with self.lock:
            _bounded_put(self.codes, code,
                         PendingCode(grant, redirect_uri, challenge, time.time() + CODE_TTL))
        return back(code=code)

    # -- the token endpoint ----------------------------------------------------------------

    def token(self, form: str) -> dict[str, Any]:
        params = single_params(form)
        grant_type = params.get("grant_type")
        if grant_type == "authorization_code":
            grant = self._redeem_code(params)
        elif grant_type == "refresh_token":
            grant = self._redeem_refresh(params)
        else:
            raise OAuthError("unsupported_grant_type",
                             f"grant_type must be one of {', '.join(GRANT_TYPES)}")
        resource = params.get("resource")
        if resource is not None:
            check_resource(resource)
            if grant.resource is not None and resource != grant.resource:
                raise OAuthError("invalid_target", f"resource {resource!r} is not the one "
                                 f"authorized ({grant.resource!r})")
        return self._issue(grant, resource or grant.resource)

    def _client(self, params: dict[str, str], grant: Login) -> None:
        with self.lock:
            known = params.get("client_id") in self.clients
        if not known:
            raise OAuthError("invalid_client", "unknown client_id", 401)
        if params["client_id"] != grant.client_id:
            raise OAuthError("invalid_grant", "the grant was issued to another client")

    def _redeem_code(self, params: dict[str, str]) -> Login:
        _require(params, "code", "client_id", "code_verifier")
        code = params["code"]
        with self.lock:
            pending = self.codes.pop(code, None)  # one use, whatever comes of it
            if pending is None:
                family = self.used_codes.get(code)
                if family is not None:  # replayed: what the first use got is revoked too
                    self._revoke(family)
                    raise OAuthError("invalid_grant", "the code was already used: the tokens "
                                     "issued for it are revoked")
                raise OAuthError("invalid_grant", "unknown code")
            _bounded_put(self.used_codes, code, pending.grant.family)
        if time.time() > pending.expires:
            raise OAuthError("invalid_grant", f"the code expired ({CODE_TTL} s)")
        self._client(params, pending.grant)
        if pending.redirect_uri is not None and params.get("redirect_uri") != pending.redirect_uri:
            raise OAuthError("invalid_grant", "redirect_uri differs from the authorization "
                             "request's")
        verifier = params["code_verifier"]
        if not PKCE_VERIFIER.fullmatch(verifier) or not hmac.compare_digest(
            s256(verifier), pending.challenge
        ):
            raise OAuthError("invalid_grant", "code_verifier does not match the code_challenge")
        return pending.grant

    def _redeem_refresh(self, params: dict[str, str]) -> Login:
        _require(params, "refresh_token", "client_id")
        token = params["refresh_token"]
        with self.lock:
            entry = self.refresh_tokens.pop(token, None)  # rotated: each is used once
            if entry is None:
                family = self.rotated.get(token)
                if family is not None:  # a spent token again: stolen, or a confused client
                    self._revoke(family)
                    raise OAuthError("invalid_grant", "the refresh token was already used: the "
                                     "whole login is revoked, log in again")
                raise OAuthError("invalid_grant", "unknown refresh token")
            grant, expires = entry
            _bounded_put(self.rotated, token, grant.family)
        if time.time() > expires:
            raise OAuthError("invalid_grant", "the refresh token expired: log in again")
        self._client(params, grant)
        return grant

    def _revoke(self, family: str) -> None:
        """Forget every refresh token of a login (the lock is held)."""
        for token in [t for t, (g, _) in self.refresh_tokens.items() if g.family == family]:
            del self.refresh_tokens[token]

    def _issue(self, grant: Login, resource: str | None) -> dict[str, Any]:
        extra: dict[str, Any] = {"client_id": grant.client_id}
        if grant.scope:
            extra["scope"] = grant.scope
        access = self.keys.mint(grant.subject, grant.groups, ttl=self.access_ttl,
                                audience=resource, **extra)
        refresh = secrets.token_urlsafe(32)
        with self.lock:
            _bounded_put(self.refresh_tokens, refresh, (grant, time.time() + REFRESH_TTL))
            self.issued.append(jwt.decode(access, options={"verify_signature": False}))
        answer = {"access_token": access, "token_type": "Bearer", "expires_in": self.access_ttl,
                  "refresh_token": refresh}
        if grant.scope:
            answer["scope"] = grant.scope
        return answer


# -- the HTTP server -----------------------------------------------------------------------------

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class _IssuerHandler(StubHandler):
    server: "_IssuerServer"
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        keys, oauth = self.server.dev_keys, self.server.oauth
        url = urllib.parse.urlsplit(self.path)
        if url.path in ("/.well-known/openid-configuration",
                        "/.well-known/oauth-authorization-server"):
            self.send_json(oauth.metadata())
        elif url.path == "/jwks.json":
            self.server.jwks_requests += 1
            self.send_json(keys.jwks())
        elif url.path == "/authorize":
            try:
                location = oauth.authorize(url.query)
            except OAuthError as exc:
                self.send_json(exc.document(), exc.status, NO_STORE)
            else:
                self.send(302, b"", "text/plain", {"Location": location, **NO_STORE})
        else:
            self.send_json({"error": "not found"}, 404)

    def do_POST(self) -> None:  # noqa: N802
        path = urllib.parse.urlsplit(self.path).path
        try:
            body = self._body()
            if path == "/register":
                try:
                    document = json.loads(body)
                except ValueError:
                    raise OAuthError("invalid_client_metadata", "the body is not JSON") from None
                self.send_json(self.server.oauth.register(document), 201, NO_STORE)
            elif path == "/token":
                media = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
                if media != "application/x-www-form-urlencoded":
                    raise OAuthError("invalid_request", "send the token request as "
                                     "application/x-www-form-urlencoded")
                try:
                    form = body.decode()
                except UnicodeDecodeError:
                    raise OAuthError("invalid_request", "the form is not UTF-8") from None
                self.send_json(self.server.oauth.token(form), 200, NO_STORE)
            else:
                self.send_json({"error": "not found"}, 404)
        except OAuthError as exc:
            self.send_json(exc.document(), exc.status, NO_STORE)

    def _body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self.close_connection = True  # whatever the body is, it is not read
            raise OAuthError("invalid_request", "send a Content-Length", 411)
        if int(length) > MAX_BODY:
            self.close_connection = True
            raise OAuthError("invalid_request", f"the body is over {MAX_BODY} bytes", 413)
        return self.rfile.read(int(length))


class _IssuerServer(StubServer):
    dev_keys: DevKeys
    oauth: DevAuthorization
    jwks_requests = 0


class DevIssuer(Served):
    """The issuer's HTTP server, run in a background thread (tests, `make run`). Its
    authorization endpoint logs in `user` (with `groups`) without asking: loopback only."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, *, keys_path: Path | None = None,
        audience: str = DEFAULT_AUDIENCE, user: str = DEV_USER,
        groups: Sequence[str] = DEV_GROUPS, access_ttl: int = ACCESS_TTL,
    ) -> None:
        if not is_loopback(host):
            raise ValueError(f"the dev issuer listens on loopback only, not {host!r}: it "
                             "hands the dev user's tokens to whoever asks")
        self.server = _IssuerServer(_IssuerHandler, host, port)
        self.keys_path = keys_path
        if keys_path and keys_path.exists():
            keys = DevKeys.load(keys_path)
            keys.issuer, keys.audience = self.url, audience
        else:
            keys = DevKeys.generate(self.url, audience)
        self.server.dev_keys = keys
        self.server.oauth = DevAuthorization(keys, user, groups, access_ttl)
        self._save()

    @property
    def keys(self) -> DevKeys:
        return self.server.dev_keys

    @property
    def oauth(self) -> DevAuthorization:
        return self.server.oauth

    @property
    def jwks_requests(self) -> int:
        return self.server.jwks_requests

    def rotate(self, alg: str = "RS256") -> None:
        self.keys.rotate(alg)
        self._save()

    def _save(self) -> None:
        if self.keys_path:
            self.keys.save(self.keys_path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="a loopback address")
    parser.add_argument("--port", type=int, default=9002)
    parser.add_argument("--keys", type=Path, default=DEFAULT_KEYS)
    parser.add_argument("--audience", default=DEFAULT_AUDIENCE)
    parser.add_argument("--user", default=DEV_USER,
                        help="the subject every login through /authorize gets")
    parser.add_argument("--groups", default=",".join(DEV_GROUPS),
                        help="the dev user's groups, comma-separated")
    parser.add_argument("--access-ttl", type=int, default=ACCESS_TTL,
                        help="seconds an access token from /token lives")
    args = parser.parse_args()
    groups = [g.strip() for g in args.groups.split(",") if g.strip()]
    try:
        issuer = DevIssuer(args.host, args.port, keys_path=args.keys, audience=args.audience,
                           user=args.user, groups=groups, access_ttl=args.access_ttl)
    except ValueError as exc:
        parser.error(str(exc))
    print(f"dev OIDC issuer at {issuer.url} (keys in {args.keys}; logins approved as "
          f"{args.user}: {', '.join(groups) or 'no groups'})", flush=True)
    issuer.serve_until_interrupted()


if __name__ == "__main__":
    main()
