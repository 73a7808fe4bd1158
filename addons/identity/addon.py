"""Who is calling: verifies the caller's OIDC bearer token before anything else happens.

The token is read from `Proxy-Authorization` (also on the CONNECT of an explicit proxy) or
`Authorization`, else from `x-api-key` / `api-key` when one holds a JWT (the Anthropic and Azure
OpenAI SDKs send nothing else). It is removed from the request, and so is every other header
it appears in (a copy in a custom header, a cookie), so that neither the backend, the store,
mitmweb nor the log receives it; it is never logged.
The verified identity (subject, issuer, groups, token id) is attached to the flow as
`flow.metadata["toolgate.identity"]` for the addons after this one. The verified token itself
is kept in memory only (`take_caller_token`), for a credentials target that passes it through.

With `toolgate_resource`, the gateway is an OAuth protected resource as MCP's authorization
spec has it: it answers its metadata document itself (RFC 9728; never forwarded, no token
needed), its 401 answers point to it (`WWW-Authenticate: Bearer resource_metadata="..."`), and
tokens issued for the resource (`aud`, RFC 8707) are accepted.
"""

from __future__ import annotations

import json
import logging
import re
import urllib.parse
import weakref
from pathlib import Path
from typing import Optional

from mitmproxy import ctx, exceptions, http
from mitmproxy.proxy.mode_specs import ReverseMode

from toolgate.addons import flowmeta, settings
from toolgate.addons.answers import CALL_ID_HEADER, Refusal, call_id_of, refuse
from toolgate.addons.failclosed.hooks import flow_hook
from toolgate.addons.headers import pop_header
from toolgate.addons.identity.oidc import (
    ANONYMOUS,
    GroupsClaim,
    IdentityError,
    KeyCache,
    TokenPolicy,
    Verifier,
    bearer_token,
    checked_token,
)
from toolgate.addons.identity.resource import ProtectedResource, is_loopback

logger = logging.getLogger(__name__)

# Where a token is read from when neither Proxy-Authorization nor Authorization is sent: the
# API-key headers of SDKs that send nothing else. Only a value shaped like a JWT counts (an
# upstream API key there is not the caller's token).
API_KEY_HEADERS = ("x-api-key", "api-key")
BEARER = re.compile(r"(?i:bearer)[ \t]")
JWT_SHAPE = re.compile(r"(?:(?i:bearer)[ \t]+)?[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
# A presented credential shorter than this is removed where it is a header's whole value only:
# as a substring it could match unrelated headers.
MIN_SCRUB = 16
MODES = ("required", "optional", "off")
OPTIONS = frozenset(
    {
        "toolgate_identity",
        "toolgate_oidc_issuer",
        "toolgate_oidc_audience",
        "toolgate_oidc_jwks",
        "toolgate_groups_claim",
        "toolgate_oidc_hmac_secret",
        "toolgate_resource",
    }
)

# Verified caller tokens by flow, for `pass_caller_token` targets. Never on `flow.metadata`:
# mitmweb, `export` and the session store serialize it. Weak keys: a flow that never reaches
# the credentials addon (refused, killed) takes its token with it.
_CALLER_TOKENS: weakref.WeakKeyDictionary[http.HTTPFlow, str] = weakref.WeakKeyDictionary()


def take_caller_token(flow: http.HTTPFlow) -> str | None:
    """The bearer token verified for `flow`, forgotten as it is handed out."""
    return _CALLER_TOKENS.pop(flow, None)


def build_verifier(
    mode: str, issuer: str, audience: str, jwks: str, groups_claim: str, hmac_secret: str,
    resource: ProtectedResource | None = None,
) -> Verifier | None:
    """The verifier for these option values; ValueError says what to fix. With a `resource`,
    tokens issued for it are accepted: alone, it is the audience; beside
    toolgate_oidc_audience, a token for either is."""
    settings.check_choice("toolgate_identity", mode, MODES)
    if mode == "off":
        return None
    if issuer:
        settings.parse_http_url(issuer, "toolgate_oidc_issuer")
    if jwks and "://" in jwks:
        settings.parse_http_url(jwks, "toolgate_oidc_jwks")
    elif jwks:
        if not Path(jwks).expanduser().is_file():
            raise ValueError(f"toolgate_oidc_jwks: {jwks} is not a file or an http(s) URL")
    secret = settings.resolve_secret(hmac_secret, "toolgate_oidc_hmac_secret") if hmac_secret else None
    if not (issuer or jwks or secret):
        raise ValueError(
            f"toolgate_identity={mode} needs toolgate_oidc_issuer or toolgate_oidc_jwks "
            "to verify tokens (or toolgate_identity=off to run without identity)"
        )
    try:
        claim = GroupsClaim(groups_claim)
    except Exception as exc:
        raise ValueError(f"toolgate_groups_claim {groups_claim!r}: {exc}") from None
    audiences = ((audience,) if audience else ()) + (resource.audiences if resource else ())
    policy = TokenPolicy(
        issuer=issuer or None,
        audience=None if not audiences else audiences[0] if len(audiences) == 1 else audiences,
        groups_claim=claim,
        hmac_secret=secret,
    )
    keys = KeyCache(issuer or None, jwks or None) if (issuer or jwks) else None
    return Verifier(policy, keys)


class Identity:
    def __init__(self) -> None:
        self.verifier: Verifier | None = None
        self.mode = "required"  # toolgate_identity
        self.resource: ProtectedResource | None = None  # toolgate_resource
        # Tokens presented on an explicit proxy's CONNECT, by client connection.
        self.connect_tokens: dict[str, str] = {}

    def load(self, loader) -> None:
        loader.add_option(
            "toolgate_identity", str, "required",
            "Whether callers must present a valid OIDC bearer token: required, optional "
            "(anonymous calls are let through, marked anonymous), or off.",
            choices=MODES,
        )
        loader.add_option(
            "toolgate_oidc_issuer", str, "",
            "The expected token issuer (iss). Its discovery document gives the JWKS unless "
            "toolgate_oidc_jwks is set.",
        )
        loader.add_option(
            "toolgate_oidc_audience", str, "",
            "The expected token audience (aud). Leave empty only if the issuer mints tokens "
            "for this gateway alone.",
        )
        loader.add_option(
            "toolgate_oidc_jwks", str, "", "The issuer's signing keys: a JWKS URL or file."
        )
        loader.add_option(
            "toolgate_groups_claim", str, "groups",
            "Where the caller's groups are in the token's claims: a dotted path such as "
            "realm_access.roles, or a JSONPath.",
        )
        loader.add_option(
            "toolgate_oidc_hmac_secret", Optional[str], None,
            "A shared secret (env:NAME or file:PATH) that allows HS256/384/512 tokens. "
            "Unset, only asymmetric signatures are accepted.",
        )
        loader.add_option(
            "toolgate_resource", str, "",
            "This gateway's URL as an OAuth protected resource, e.g. https://gw.example/mcp "
            "(MCP authorization). Set, the gateway serves its metadata at "
            "/.well-known/oauth-protected-resource naming toolgate_oidc_issuer as the "
            "authorization server, its 401 answers point there, and tokens issued for this "
            "resource (aud) are accepted (besides toolgate_oidc_audience, if set).",
        )

    def configure(self, updated: set[str]) -> None:
        if "toolgate_identity" in updated:  # read on every call: kept here (mitmproxy copies)
            self.mode = ctx.options.toolgate_identity
        if not updated & OPTIONS:
            return
        o = ctx.options
        try:
            resource = None
            if o.toolgate_resource and o.toolgate_identity != "off":
                resource = ProtectedResource.parse(o.toolgate_resource, o.toolgate_oidc_issuer)
            verifier = build_verifier(
                o.toolgate_identity,
                o.toolgate_oidc_issuer,
                o.toolgate_oidc_audience,
                o.toolgate_oidc_jwks,
                o.toolgate_groups_claim,
                o.toolgate_oidc_hmac_secret or "",
                resource,
            )
        except ValueError as exc:
            raise exceptions.OptionsError(str(exc)) from None
        if verifier and not (o.toolgate_oidc_audience or resource):
            logger.warning(
                "toolgate: toolgate_oidc_audience is not set: tokens the issuer minted for "
                "any audience are accepted"
            )
        if o.toolgate_resource and o.toolgate_identity == "off":
            logger.warning("toolgate: toolgate_resource is ignored with toolgate_identity=off")
        if resource and resource.resource.startswith("http:") and not is_loopback(
            urllib.parse.urlsplit(resource.resource).hostname or ""
        ):
            logger.warning("toolgate: toolgate_resource %s is not https: clients send their "
                           "tokens in the clear", resource.resource)
        self.verifier, self.resource = verifier, resource

    def running(self) -> None:
        if self.verifier and self.verifier.key_cache:
            self.verifier.key_cache.start_refresh()  # fetch the keys before the first call

    def client_disconnected(self, client) -> None:
        self.connect_tokens.pop(client.id, None)

    @flow_hook
    def http_connect(self, flow: http.HTTPFlow) -> None:
        value = flow.request.headers.pop("Proxy-Authorization", None)
        if value is not None and ctx.options.toolgate_identity != "off":
            self.connect_tokens[flow.client_conn.id] = value

    @flow_hook
    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or self.mode == "off":
            return
        if self._answer_metadata(flow):
            return
        taken = self._take_credential(flow)
        try:
            if taken is None:
                if self.mode == "optional":
                    flow.metadata[flowmeta.IDENTITY] = ANONYMOUS.as_dict()
                    return
                raise IdentityError("no bearer token: send 'Authorization: Bearer <token>'")
            header, credential = taken
            # Every copy goes, whether the token verifies or not: a refused call is recorded.
            remove_credential(flow.request.headers, credential)
            if self.verifier is None:  # configure() refused the options: nothing can pass
                raise IdentityError("the gateway has no token verifier configured")
            if header in API_KEY_HEADERS and not BEARER.match(credential.strip(" \t")):
                token = checked_token(credential, header)  # these SDKs send the bare key
            else:
                token = bearer_token(credential, header)
            identity = await self.verifier.verify(token)
        except IdentityError as exc:
            reason = str(exc)
            logger.info("toolgate: identity refused for %s: %s", flow.client_conn.peername, reason)
            if ctx.options.toolgate_mode == "monitor":
                flow.metadata.setdefault(flowmeta.MONITORED, []).append("identity")
                flow.metadata[flowmeta.IDENTITY] = ANONYMOUS.as_dict()
                return
            refuse(flow, Refusal("identity", reason), resource_metadata=self._metadata_url(flow),
                   token_sent=taken is not None)
            return
        flow.metadata[flowmeta.IDENTITY] = identity.as_dict()
        _CALLER_TOKENS[flow] = token

    def _metadata_url(self, flow: http.HTTPFlow) -> str | None:
        """The metadata URL a 401 points to, when this call was made to the gateway as the
        resource (reverse mode), not through it to another host (an explicit proxy)."""
        if self.resource and isinstance(flow.client_conn.proxy_mode, ReverseMode):
            return self.resource.metadata_url
        return None

    def _answer_metadata(self, flow: http.HTTPFlow) -> bool:
        """Answer a request for the protected resource metadata, if this is one: the gateway's
        own document, never forwarded, whoever asks (discovery comes before any token)."""
        if self._metadata_url(flow) is None or self.resource is None:
            return False
        serves = self.resource.serves(flow.request.path.split("?", 1)[0])
        if serves is None:
            return False
        taken = self._take_credential(flow)  # a token sent anyway is not stored either
        if taken is not None:
            remove_credential(flow.request.headers, taken[1])
        flow.metadata[flowmeta.IDENTITY] = ANONYMOUS.as_dict()
        method = flow.request.method.upper()
        headers = {"Content-Type": "application/json", CALL_ID_HEADER: call_id_of(flow),
                   "Access-Control-Allow-Origin": "*"}  # public; browser-based clients read it
        if method == "OPTIONS":  # a browser's preflight (clients send MCP-Protocol-Version)
            status, body = 204, None
            headers.update({"Access-Control-Allow-Methods": "GET, OPTIONS",
                            "Access-Control-Allow-Headers": "MCP-Protocol-Version",
                            "Access-Control-Max-Age": "3600"})
            del headers["Content-Type"]
        elif method != "GET":
            status, headers["Allow"] = 405, "GET, OPTIONS"
            body = {"error": "invalid_request",
                    "error_description": f"{method} is not allowed here: GET the metadata"}
        elif serves:
            status, body = 200, self.resource.document()
            headers["Cache-Control"] = "max-age=300"
        else:
            status, body = 404, {
                "error": "invalid_request",
                "error_description": "no protected resource here: this gateway's metadata is "
                                     f"at {self.resource.metadata_url}",
            }
        content = b"" if body is None else json.dumps(body, indent=2).encode()
        flow.response = http.Response.make(status, content, headers)
        return True

    def _take_credential(self, flow: http.HTTPFlow) -> tuple[str, str] | None:
        """The caller's credential and the header it came in, removed from the request so it
        is never forwarded: the Proxy-Authorization meant for us wins over an Authorization
        header, which wins over an API-key header holding a JWT."""
        headers = flow.request.headers
        for name in ("Proxy-Authorization", "Authorization"):
            value = pop_header(headers, name)
            if value is not None:
                return name, value
        for name in API_KEY_HEADERS:
            value = headers.get(name)
            if value is not None and JWT_SHAPE.fullmatch(value.strip(" \t")):
                del headers[name]
                return name, value
        connect = self.connect_tokens.get(flow.client_conn.id)
        return ("Proxy-Authorization", connect) if connect is not None else None


def remove_credential(headers: http.Headers, credential: str) -> bool:
    """Remove every header that carries `credential` (the raw value, or the token of a
    `Bearer <token>` value), whatever its name; from a Cookie only the cookies that carry it.
    Whether anything was removed."""
    raw = credential.strip(" \t")
    scheme, _, rest = raw.replace("\t", " ").partition(" ")
    forms = {raw}
    if scheme.lower() == "bearer" and rest.strip():
        forms.add(rest.strip())
    needles = [form.encode("utf-8", "surrogateescape") for form in forms if form]
    if not needles:
        return False

    def carries(value: bytes) -> bool:
        value = value.strip(b" \t")
        return any(value == needle or (len(needle) >= MIN_SCRUB and needle in value)
                   for needle in needles)

    fields, changed = [], False
    for name, value in headers.fields:
        if not carries(value):
            fields.append((name, value))
            continue
        changed = True
        if name.lower() == b"cookie":
            kept = [c for c in value.split(b";") if c.strip() and not carries(c.partition(b"=")[2])
                    and not carries(c)]
            if kept:
                fields.append((name, b";".join(kept).strip()))
    if changed:
        headers.fields = tuple(fields)
    return changed
