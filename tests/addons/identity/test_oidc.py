"""The pure token verifier, with real RSA/EC keys (no network but the JWKS tests' loopback)."""

import asyncio
import base64
import time

import jwt
import pytest

from toolgate.addons.identity.oidc import (
    GroupsClaim, IdentityError, KeyCache, KeySet, TokenPolicy, UnknownKeyError, Verifier,
    bearer_token, verify_token,
)
from hostile_tokens import claims, hs256_with_public_key, tampered, unknown_kid, unsigned
from toolgate.scripts.dev_issuer import DevIssuer, DevKeys, new_key, public_jwk

ISSUER = "https://issuer.test"


@pytest.fixture(scope="module")
def keys() -> DevKeys:
    return DevKeys.generate(ISSUER, "gw")


@pytest.fixture
def policy() -> TokenPolicy:
    return TokenPolicy(issuer=ISSUER, audience="gw")


def keyset(keys: DevKeys) -> KeySet:
    return KeySet(keys.jwks())


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_valid_tokens_give_the_identity(keys, policy, alg):
    token = keys.mint("alice", ["sre", "support"], alg=alg, jti="t-1")
    identity, expires = verify_token(token, keyset(keys), policy)
    assert identity.subject == "alice"
    assert identity.groups == ("sre", "support")
    assert identity.token_id == "t-1" and identity.issuer == ISSUER
    assert expires > time.time()


@pytest.mark.parametrize("make, message", [
    (lambda k: k.mint("a", ttl=-100), "expired"),
    (lambda k: k.mint("a", nbf=int(time.time()) + 300), "not valid yet"),
    (lambda k: k.mint("a", iss="https://other"), "not issued by"),
    (lambda k: k.mint("a", audience="other"), "audience"),
    (lambda k: k.mint(""), "sub"),
    (lambda k: k.mint(42), "[Ss]ub"),
    (unsigned, "alg 'none'"),
    (hs256_with_public_key, "HS256 is not accepted"),
    (unknown_kid, "no signing key"),
    (lambda k: tampered(k.mint("a"), sub="root"), "signature"),
])
def test_bad_tokens(keys, policy, make, message):
    with pytest.raises(IdentityError, match=message):
        verify_token(make(keys), keyset(keys), policy)


def test_leeway_accepts_a_token_just_expired(keys, policy):
    token = keys.mint("a", ttl=-5)
    assert verify_token(token, keyset(keys), policy)[0].subject == "a"


def test_algorithm_must_fit_the_key(keys, policy):
    rsa = keys.key_for("RS256")
    ec_signer = jwt.PyJWK(keys.key_for("ES256")).key
    token = jwt.encode(claims(keys), ec_signer, algorithm="ES256", headers={"kid": rsa["kid"]})
    with pytest.raises(IdentityError, match="does not fit"):
        verify_token(token, keyset(keys), policy)


def test_declared_key_algorithm_is_enforced(keys, policy):
    rsa = keys.key_for("RS256")
    token = jwt.encode(claims(keys), jwt.PyJWK(rsa).key, algorithm="PS256",
                       headers={"kid": rsa["kid"]})
    with pytest.raises(IdentityError, match="for RS256"):
        verify_token(token, keyset(keys), policy)


def test_hmac_only_with_an_explicit_secret(keys):
    token = jwt.encode(claims(keys), b"x" * 32, algorithm="HS256")
    without = TokenPolicy(issuer=ISSUER, audience="gw")
    with pytest.raises(IdentityError, match="HS256 is not accepted"):
        verify_token(token, keyset(keys), without)
    with_secret = TokenPolicy(issuer=ISSUER, audience="gw", hmac_secret=b"x" * 32)
    assert verify_token(token, keyset(keys), with_secret)[0].subject == "mallory"
    # ...and never with the issuer's public key, even when a secret is configured.
    with pytest.raises(IdentityError, match="signature"):
        verify_token(hs256_with_public_key(keys), keyset(keys), with_secret)


def test_no_kid_is_fine_with_a_single_key_only(keys, policy):
    rsa = keys.key_for("RS256")
    token = jwt.encode(claims(keys), jwt.PyJWK(rsa).key, algorithm="RS256")
    assert verify_token(token, KeySet({"keys": [public_jwk(rsa)]}), policy)[0]
    with pytest.raises(IdentityError, match="no kid"):
        verify_token(token, keyset(keys), policy)


def test_keyset_skips_encryption_and_broken_keys(keys):
    enc = dict(public_jwk(new_key("RSA")), use="enc")
    broken = {"kty": "RSA", "kid": "broken", "n": "???", "e": "AQAB"}
    symmetric = {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}
    good = public_jwk(keys.key_for("ES256"))
    ks = KeySet({"keys": [enc, broken, symmetric, good, "junk"]})
    assert list(ks.keys) == [good["kid"]]


@pytest.mark.parametrize("spec, token_claims, groups", [
    ("groups", {"groups": ["a", "b", "a"]}, ("a", "b")),
    ("realm_access.roles", {"realm_access": {"roles": ["sre"]}}, ("sre",)),
    ("$.resource_access.*.roles[*]", {"resource_access": {"x": {"roles": ["r1"]},
                                                          "y": {"roles": ["r2"]}}}, ("r1", "r2")),
    ("scope", {"scope": "read write"}, ("read", "write")),
    ("groups", {"groups": "a,b"}, ("a", "b")),
    ("groups", {}, ()),
    ("realm_access.roles", {"realm_access": "not-a-dict"}, ()),
    ("groups", {"groups": [1, None, "ok"]}, ("ok",)),
])
def test_groups_claim(spec, token_claims, groups):
    assert GroupsClaim(spec).groups(token_claims) == groups


@pytest.mark.parametrize("header, message", [
    ("Basic abc", "not a bearer token"), ("", "not a bearer token"), ("Bearer", "empty"),
    ("Bearer " + "x" * 20000, "longer than"),
])
def test_bearer_header_parsing(header, message):
    with pytest.raises(IdentityError, match=message):
        bearer_token(header)


def test_bearer_scheme_is_case_insensitive():
    assert bearer_token("bearer abc.def.ghi") == "abc.def.ghi"


def test_rotated_key_is_fetched_once_and_floods_are_rate_limited(tmp_path):
    issuer = DevIssuer(keys_path=tmp_path / "k.json", audience="gw").start()
    try:
        async def scenario():
            verifier = Verifier(TokenPolicy(issuer=issuer.url, audience="gw"),
                                KeyCache(issuer.url, None, min_refresh_interval=60))
            assert (await verifier.verify(issuer.keys.mint("a"))).subject == "a"
            issuer.rotate("RS256")
            fetches = issuer.jwks_requests
            new = issuer.keys.mint("b")
            # Ten concurrent callers with the new kid share a single refresh.
            results = await asyncio.gather(*(verifier.verify(new) for _ in range(10)))
            assert {r.subject for r in results} == {"b"}
            assert issuer.jwks_requests == fetches + 1
            # Made-up kids after that cannot make it fetch again within the interval.
            for _ in range(5):
                with pytest.raises(UnknownKeyError):
                    await verifier.verify(unknown_kid(issuer.keys))
            assert issuer.jwks_requests == fetches + 1

        asyncio.run(scenario())
    finally:
        issuer.stop()


def test_verified_tokens_are_cached_until_the_keys_change(keys, policy, monkeypatch):
    class StaticKeys(KeyCache):
        async def current(self):
            return self.keys

    cache = StaticKeys(ISSUER, None)
    cache.keys = keyset(keys)
    verifier = Verifier(policy, cache)
    token = keys.mint("alice")
    calls = []
    import toolgate.addons.identity.oidc as oidc
    real = oidc.verify_token
    monkeypatch.setattr(oidc, "verify_token", lambda *a: calls.append(1) or real(*a))

    async def scenario():
        await verifier.verify(token)
        await verifier.verify(token)
        assert len(calls) == 1
        cache.keys = keyset(keys)  # a refresh: a new key set
        await verifier.verify(token)
        assert len(calls) == 2

    asyncio.run(scenario())


# Header values as mitmproxy hands them over: bytes decoded as UTF-8 with surrogateescape.
def as_mitmproxy(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


HOSTILE_HEADERS = {
    "latin-1": b"Bearer \xe9\xe9",
    "latin-1-in-jwt": b"Bearer eyJ\xe9.eyJ.sig",
    "utf-8-non-ascii": "Bearer tökén".encode(),
    "nul": b"Bearer abc\x00def",
    "control-chars": b"Bearer \x7f\x01",
    "vertical-tab": b"Bearer abc\x0bdef",
    "newline-inside": b"Bearer abc\ndef",
    "two-tokens": b"Bearer abc.def.ghi, Bearer jkl.mno.pqr",
    "comma-list": b"Bearer x, abc.def.ghi",
    "scheme-only": b"Bearer",
    "scheme-and-spaces": b"Bearer    ",
    "empty": b"",
    "spaces": b"   ",
    "basic": b"Basic YWxhZGRpbjpvcGVuc2VzYW1l",
    "no-scheme": b"abc.def.ghi",
    "quoted": b'Bearer "abc.def.ghi"',
    "huge": b"Bearer " + b"a" * 20_000,
    "bearer-prefix-only": b"Bearerabc.def.ghi",
}


@pytest.mark.parametrize("raw", list(HOSTILE_HEADERS.values()), ids=list(HOSTILE_HEADERS))
def test_hostile_authorization_values_are_identity_errors(raw):
    with pytest.raises(IdentityError):
        bearer_token(as_mitmproxy(raw))


@pytest.mark.parametrize("value", ["bearer abc.def.ghi", "BEARER abc.def.ghi",
                                   "Bearer\tabc.def.ghi", "  Bearer   abc.def.ghi  "])
def test_bearer_scheme_case_and_blanks(value):
    assert bearer_token(value) == "abc.def.ghi"


@pytest.mark.parametrize("token", [
    as_mitmproxy(b"\xe9\xe9"), as_mitmproxy(b"eyJ\xe9.eyJ.sig"), "t\u00f6k\u00e9n.a.b",
    "a\x00b.c.d", "", "abc", "a.b", "eyJhbGciOiJIUzI1NiJ9.e30.", "e30.e30.e30", "W10.e30.e30",
    "eyJhbGciOiJSUzI1NiJ9.bm90IGpzb24.c2ln", "eyJhbGciOiJSUzI1NiIsImtpZCI6MX0.e30.c2ln",
    base64.urlsafe_b64encode(b"[" * 5000 + b"]" * 5000).decode().rstrip("=") + ".e30.c2ln",
])
def test_verify_token_refuses_garbage_with_an_identity_error(token):
    """Never a UnicodeEncodeError or a parser's ValueError: those became 500 `internal`."""
    with pytest.raises(IdentityError):
        verify_token(token, KeySet(), TokenPolicy(issuer=None, audience=None))
