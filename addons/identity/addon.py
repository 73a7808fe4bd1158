"""Who is calling: verifies the caller's OIDC bearer token before anything else happens.

The token is read from `Proxy-Authorization` (also on the CONNECT of an explicit proxy) or
`Authorization`, else from `x-api-key` / `api-key` when one holds a JWT (the Anthropic and Azure
OpenAI SDKs send nothing else). It is removed from the request, and so is every other header
it appears in (a copy in a custom header, a cookie), so that neither the backend, the store,
mitmweb nor the log receives it; it is never logged.
The verified identity (subject, issuer, groups, token id) is attached to the flow as
`flow.metadata["toolgate.identity"]` for the addons after this one. The verified token itself
is kept in memory only (`take_caller_token`), for a credentials target that passes it through.
"""

from __future__ import annotations

import logging
import re
import weakref
from pathlib import Path
from typing import Optional

from mitmproxy import ctx, exceptions, http

from toolgate.addons import flowmeta, settings
from toolgate.addons.answers import Refusal, refuse
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
    mode: str, issuer: str, audience: str, jwks: str, groups_claim: str, hmac_secret: str
) -> Verifier | None:
    """The verifier for these option values; ValueError says what to fix."""
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
    policy = TokenPolicy(
        issuer=issuer or None, audience=audience or None, groups_claim=claim, hmac_secret=secret
    )
    keys = KeyCache(issuer or None, jwks or None) if (issuer or jwks) else None
    return Verifier(policy, keys)


class Identity:
    def __init__(self) -> None:
        self.verifier: Verifier | None = None
        self.mode = "required"  # toolgate_identity
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

    def configure(self, updated: set[str]) -> None:
        if "toolgate_identity" in updated:  # read on every call: kept here (mitmproxy copies)
            self.mode = ctx.options.toolgate_identity
        if not updated & OPTIONS:
            return
        o = ctx.options
        try:
            verifier = build_verifier(
                o.toolgate_identity,
                o.toolgate_oidc_issuer,
                o.toolgate_oidc_audience,
                o.toolgate_oidc_jwks,
                o.toolgate_groups_claim,
                o.toolgate_oidc_hmac_secret or "",
            )
        except ValueError as exc:
            raise exceptions.OptionsError(str(exc)) from None
        if verifier and not o.toolgate_oidc_audience:
            logger.warning(
                "toolgate: toolgate_oidc_audience is not set: tokens the issuer minted for "
                "any audience are accepted"
            )
        self.verifier = verifier

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
            refuse(flow, Refusal("identity", reason))
            return
        flow.metadata[flowmeta.IDENTITY] = identity.as_dict()
        _CALLER_TOKENS[flow] = token

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
