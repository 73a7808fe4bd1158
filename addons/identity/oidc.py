"""OIDC bearer-token verification, without mitmproxy: shared by the identity addon and the
admin API, and testable on its own.

Keys come from the issuer's discovery document, a JWKS URL or a JWKS file. They are fetched
off the event loop, cached, refreshed periodically, and refreshed at most once per
`min_refresh_interval` when a token names an unknown `kid` (a rotated key is accepted without
a restart; a flood of made-up kids cannot hammer the issuer).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import urllib.parse
import urllib.request
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from jsonpath_ng.ext import parse as parse_jsonpath

logger = logging.getLogger(__name__)

# Asymmetric algorithms by key type. HMAC is only ever used with an explicitly configured
# shared secret, never with a key from the JWKS (the classic "public key as HMAC secret").
ALGORITHMS_BY_KTY: dict[str, frozenset[str]] = {
    "RSA": frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}),
    "EC": frozenset({"ES256", "ES384", "ES512"}),
    "OKP": frozenset({"EdDSA"}),
}
CURVE_OF = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
ASYMMETRIC_ALGORITHMS = frozenset().union(*ALGORITHMS_BY_KTY.values())

LEEWAY_SECONDS = 30
MAX_TOKEN_BYTES = 16 * 1024
FETCH_TIMEOUT_SECONDS = 5.0
MAX_JWKS_BYTES = 1024 * 1024
# RFC 6750's b64token: the characters a bearer token is made of (ASCII only).
B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


class IdentityError(Exception):
    """A token was refused; the message says why, in terms a developer can act on."""


class UnknownKeyError(IdentityError):
    """The token names a key the cached JWKS does not have (it may have been rotated in)."""


class KeysUnavailableError(IdentityError):
    """The signing keys could not be fetched: calls are refused, never let through."""


@dataclass(frozen=True)
class Caller:
    """Who is calling, as later addons and the session store see it (never the token)."""

    subject: str | None
    issuer: str | None = None
    groups: tuple[str, ...] = ()
    token_id: str | None = None
    anonymous: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "issuer": self.issuer,
            "groups": list(self.groups),
            "token_id": self.token_id,
            "anonymous": self.anonymous,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Caller":
        return cls(
            subject=data.get("subject"),
            issuer=data.get("issuer"),
            groups=tuple(data.get("groups") or ()),
            token_id=data.get("token_id"),
            anonymous=bool(data.get("anonymous")),
        )


ANONYMOUS = Caller(subject=None, anonymous=True)


def bearer_token(header_value: str, header: str = "Authorization") -> str:
    """The token of an `Authorization: Bearer <token>` header value.

    Header values come from mitmproxy as text decoded with surrogateescape: bytes that are not
    UTF-8 (latin-1, say) are lone surrogates, which no encoder takes. A token is checked to be
    made of RFC 6750's token characters before anything encodes it."""
    scheme, _, token = header_value.strip(" \t").replace("\t", " ").partition(" ")
    if scheme.lower() != "bearer":
        raise IdentityError(
            f"the {header} header is not a bearer token: send 'Authorization: Bearer <token>'"
        )
    return checked_token(token, header)


def checked_token(token: str, header: str = "Authorization") -> str:
    """`token` if it can be a bearer token (RFC 6750 b64token, within MAX_TOKEN_BYTES)."""
    token = token.strip(" \t")
    if not token:
        raise IdentityError(f"the {header} header has an empty bearer token")
    if len(token) > MAX_TOKEN_BYTES:
        raise IdentityError(f"the bearer token is longer than {MAX_TOKEN_BYTES} bytes")
    if not B64TOKEN.fullmatch(token):
        raise IdentityError(
            f"the {header} header holds characters a bearer token cannot have (a JWT is "
            "ASCII letters, digits, '-', '_' and dots)"
        )
    return token


class GroupsClaim:
    """Where the groups are in the claims: a dotted path (`realm_access.roles`) or a JSONPath
    (`$.resource_access.toolgate.roles`). Compiled once."""

    def __init__(self, spec: str) -> None:
        spec = spec.strip()
        if not spec:
            raise ValueError("the groups claim is empty")
        self.spec = spec
        self._jsonpath = parse_jsonpath(spec) if spec.startswith("$") else None
        self._path = None if self._jsonpath else spec.split(".")

    def groups(self, claims: dict[str, Any]) -> tuple[str, ...]:
        if self._jsonpath is not None:
            values = [m.value for m in self._jsonpath.find(claims)]
        else:
            value: Any = claims
            for part in self._path or ():
                value = value.get(part) if isinstance(value, dict) else None
            values = [value]
        found: list[str] = []
        for value in values:
            if isinstance(value, str):  # some issuers send "a b" or "a,b"
                found.extend(v for v in value.replace(",", " ").split() if v)
            elif isinstance(value, list):
                found.extend(v for v in value if isinstance(v, str))
        return tuple(dict.fromkeys(found))


class KeySet:
    """The usable signing keys of a JWKS document, by `kid`."""

    def __init__(self, jwks: dict[str, Any] | None = None) -> None:
        self.keys: dict[str | None, jwt.PyJWK] = {}
        for raw in (jwks or {}).get("keys", []):
            if not isinstance(raw, dict) or raw.get("use", "sig") != "sig":
                continue
            if raw.get("kty") not in ALGORITHMS_BY_KTY:
                continue
            try:
                self.keys[raw.get("kid")] = jwt.PyJWK(raw)
            except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError) as exc:
                logger.warning("toolgate: skipping an unusable JWKS key %r: %s", raw.get("kid"), exc)

    def __len__(self) -> int:
        return len(self.keys)

    def find(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is None and len(self.keys) == 1:
            return next(iter(self.keys.values()))
        return self.keys.get(kid)


@dataclass
class TokenPolicy:
    """What a token must satisfy."""

    issuer: str | None
    audience: str | tuple[str, ...] | None  # several: a token for any of them is accepted
    groups_claim: GroupsClaim = field(default_factory=lambda: GroupsClaim("groups"))
    hmac_secret: bytes | None = None
    leeway: int = LEEWAY_SECONDS


def verify_token(token: str, keys: KeySet, policy: TokenPolicy) -> tuple[Caller, float]:
    """Verify `token` and return the caller's identity and the token's expiry (epoch)."""
    if not isinstance(token, str) or not B64TOKEN.fullmatch(token):
        raise IdentityError("the bearer token is not a well-formed JWT: characters a token "
                            "cannot have")
    try:
        header = jwt.get_unverified_header(token)
    except (jwt.InvalidTokenError, ValueError, TypeError) as exc:
        raise IdentityError(f"the bearer token is not a well-formed JWT: {exc}") from None
    alg = header.get("alg")
    kid = header.get("kid")
    if not isinstance(alg, str) or alg.lower() == "none":
        raise IdentityError("unsigned tokens (alg 'none') are not accepted")
    if kid is not None and not isinstance(kid, str):
        raise IdentityError("the token's kid is not a string")

    if alg in HMAC_ALGORITHMS:
        if policy.hmac_secret is None:
            raise IdentityError(
                f"algorithm {alg} is not accepted: only asymmetric signatures are "
                "(HMAC needs an explicitly configured shared secret)"
            )
        key: Any = policy.hmac_secret
    elif alg in ASYMMETRIC_ALGORITHMS:
        jwk = keys.find(kid)
        if jwk is None:
            if kid is None:
                raise IdentityError("the token has no kid and the issuer has several keys")
            raise UnknownKeyError(f"no signing key with kid {kid!r} at the issuer")
        _check_key_fits(alg, jwk)
        key = jwk.key
    else:
        raise IdentityError(f"algorithm {alg!r} is not accepted")

    try:
        claims = jwt.decode(
            token,
            key=key,
            algorithms=[alg],
            audience=list(policy.audience) if isinstance(policy.audience, tuple)
            else policy.audience,
            issuer=policy.issuer,
            leeway=policy.leeway,
            options={
                "require": ["exp", "sub"] + (["iss"] if policy.issuer else []),
                "verify_aud": policy.audience is not None,
            },
        )
    except jwt.ExpiredSignatureError:
        raise IdentityError("the token has expired: get a new one from the issuer") from None
    except jwt.ImmatureSignatureError:
        raise IdentityError("the token is not valid yet (nbf/iat in the future)") from None
    except jwt.InvalidAudienceError:
        raise IdentityError(
            f"the token's audience is not {_one_of(policy.audience)}: request a token for this "
            "gateway"
        ) from None
    except jwt.InvalidIssuerError:
        raise IdentityError(f"the token was not issued by {policy.issuer!r}") from None
    except jwt.MissingRequiredClaimError as exc:
        raise IdentityError(f"the token has no {exc.claim!r} claim") from None
    except jwt.InvalidSignatureError:
        raise IdentityError("the token's signature does not verify") from None
    except jwt.InvalidTokenError as exc:
        raise IdentityError(f"the token is invalid: {exc}") from None
    except (ValueError, TypeError, KeyError) as exc:  # what a hostile token makes a parser raise
        raise IdentityError(f"the token is invalid ({type(exc).__name__})") from None

    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise IdentityError("the token's sub claim is not a non-empty string")
    jti = claims.get("jti")
    identity = Caller(
        subject=subject,
        issuer=claims.get("iss") if isinstance(claims.get("iss"), str) else None,
        groups=policy.groups_claim.groups(claims),
        token_id=jti if isinstance(jti, str) else None,
    )
    return identity, float(claims["exp"])


def _one_of(audience: str | tuple[str, ...] | None) -> str:
    if isinstance(audience, tuple):
        return " or ".join(repr(a) for a in audience)
    return repr(audience)


def _check_key_fits(alg: str, jwk: jwt.PyJWK) -> None:
    kty = jwk._jwk_data.get("kty")
    declared = jwk._jwk_data.get("alg")
    if alg not in ALGORITHMS_BY_KTY.get(kty, ()):
        raise IdentityError(f"algorithm {alg} does not fit the issuer's {kty} key")
    if declared and declared != alg:
        raise IdentityError(f"the issuer's key is for {declared}, the token claims {alg}")
    curve = CURVE_OF.get(alg)
    if curve and jwk._jwk_data.get("crv") != curve:
        raise IdentityError(f"algorithm {alg} needs a {curve} key")


def fetch_json(location: str, timeout: float = FETCH_TIMEOUT_SECONDS) -> Any:
    """Blocking: read a JSON document from an http(s) URL or a file. Run it off the loop."""
    parsed = urllib.parse.urlsplit(location)
    if parsed.scheme in ("http", "https"):
        request = urllib.request.Request(location, headers={"Accept": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310
            data = answer.read(MAX_JWKS_BYTES + 1)
    else:
        path = Path(parsed.path if parsed.scheme == "file" else location)
        data = path.read_bytes()[: MAX_JWKS_BYTES + 1]
    if len(data) > MAX_JWKS_BYTES:
        raise ValueError(f"{location} is larger than {MAX_JWKS_BYTES} bytes")
    return json.loads(data)


def discover_jwks_uri(issuer: str) -> str:
    """Blocking: the `jwks_uri` of an issuer's discovery document."""
    document = fetch_json(issuer.rstrip("/") + "/.well-known/openid-configuration")
    uri = document.get("jwks_uri") if isinstance(document, dict) else None
    if not isinstance(uri, str):
        raise ValueError(f"the discovery document of {issuer} has no jwks_uri")
    return uri


class KeyCache:
    """The issuer's keys, fetched in a worker thread and shared by every call."""

    def __init__(
        self,
        issuer: str | None,
        jwks: str | None,
        *,
        refresh_every: float = 3600.0,
        min_refresh_interval: float = 10.0,
    ) -> None:
        if not issuer and not jwks:
            raise ValueError("an issuer or a JWKS location is needed")
        self.issuer = issuer
        self.jwks = jwks
        self.refresh_every = refresh_every
        self.min_refresh_interval = min_refresh_interval
        self.keys = KeySet()
        self.fetched_at = 0.0
        self.last_limited = float("-inf")
        self.last_error: str | None = None
        self._task: asyncio.Task[KeySet] | None = None

    def _fetch(self) -> KeySet:
        location = self.jwks or discover_jwks_uri(self.issuer or "")
        keys = KeySet(fetch_json(location))
        if not keys:
            raise ValueError(f"{location} holds no usable signing keys")
        return keys

    def start_refresh(self, *, limited: bool = False) -> asyncio.Task[KeySet] | None:
        """Start fetching the keys unless a fetch is running (concurrent callers share it).
        A `limited` refresh, asked for by a caller's unknown kid or while no keys could be
        had, happens at most once per `min_refresh_interval`; None if refused."""
        if self._task is None:
            if limited:
                if time.monotonic() - self.last_limited < self.min_refresh_interval:
                    return None
                self.last_limited = time.monotonic()
            self._task = asyncio.create_task(self._refresh())
        return self._task

    async def refresh(self, *, limited: bool = True) -> KeySet:
        """The keys after a refresh (the current ones if a refresh is not allowed yet).
        On failure the keys we had stay in force."""
        task = self.start_refresh(limited=limited)
        return await asyncio.shield(task) if task else self.keys

    async def _refresh(self) -> KeySet:
        try:
            keys = await asyncio.to_thread(self._fetch)
        except Exception as exc:  # network, JSON, key parsing
            self.last_error = f"{type(exc).__name__}: {exc}"
            self.last_limited = time.monotonic()  # an issuer that fails is not hammered
            logger.warning("toolgate: could not fetch the signing keys: %s", self.last_error)
            return self.keys
        else:
            self.keys, self.fetched_at, self.last_error = keys, time.monotonic(), None
            return keys
        finally:
            self._task = None

    async def current(self) -> KeySet:
        """The cached keys; fetched first if there are none, refreshed in the background
        when stale."""
        if not self.keys:
            # The first fetch is not limited; once one failed, retries are.
            await self.refresh(limited=self.last_error is not None)
        elif time.monotonic() - self.fetched_at > self.refresh_every:
            self.start_refresh()  # in the background: the current keys serve meanwhile
        if not self.keys:
            raise KeysUnavailableError(
                "the issuer's signing keys are unavailable"
                + (f" ({self.last_error})" if self.last_error else "")
            )
        return self.keys


class TokenCache:
    """Verified tokens until they expire, so a caller's next call skips the signature check.
    Cleared whenever the keys change."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._entries: OrderedDict[str, tuple[Caller, float, KeySet]] = OrderedDict()

    def get(self, token: str, keys: KeySet, leeway: int) -> Caller | None:
        entry = self._entries.get(token)
        if entry is None:
            return None
        identity, expires, verified_with = entry
        if verified_with is not keys or time.time() > expires + leeway:
            del self._entries[token]
            return None
        self._entries.move_to_end(token)
        return identity

    def put(self, token: str, identity: Caller, expires: float, keys: KeySet) -> None:
        self._entries[token] = (identity, expires, keys)
        if len(self._entries) > self.size:
            self._entries.popitem(last=False)


class Verifier:
    """Verifies bearer tokens against the cached keys, refreshing them for unknown kids."""

    def __init__(self, policy: TokenPolicy, keys: KeyCache | None) -> None:
        self.policy = policy
        self.key_cache = keys
        self.tokens = TokenCache()

    async def verify(self, token: str) -> Caller:
        keys = await self.key_cache.current() if self.key_cache else KeySet()
        cached = self.tokens.get(token, keys, self.policy.leeway)
        if cached is not None:
            return cached
        try:
            identity, expires = verify_token(token, keys, self.policy)
        except UnknownKeyError:
            if self.key_cache is None:
                raise
            fresh = await self.key_cache.refresh()
            if fresh is keys:
                raise
            keys = fresh
            identity, expires = verify_token(token, keys, self.policy)
        self.tokens.put(token, identity, expires, keys)
        return identity
