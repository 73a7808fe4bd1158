"""A development OIDC issuer on loopback: a discovery document, a JWKS with an RSA and an EC
key, and token minting (`toolgate dev token`). For demos and tests, never for production.

The private keys live in a JSON key file (default `.toolgate/dev-issuer.json`) so that the
CLI can mint tokens that a running issuer's JWKS verifies.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from toolgate.scripts.harness import Served, StubHandler, StubServer

DEFAULT_KEYS = Path(".toolgate/dev-issuer.json")
DEFAULT_AUDIENCE = "toolgate"


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


class _IssuerHandler(StubHandler):
    server: "_IssuerServer"
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        keys = self.server.dev_keys
        if self.path == "/.well-known/openid-configuration":
            self.send_json(
                {
                    "issuer": keys.issuer,
                    "jwks_uri": keys.issuer + "/jwks.json",
                    "id_token_signing_alg_values_supported": ["RS256", "ES256"],
                    "subject_types_supported": ["public"],
                    "response_types_supported": ["token"],
                }
            )
        elif self.path == "/jwks.json":
            self.server.jwks_requests += 1
            self.send_json(keys.jwks())
        else:
            self.send_json({"error": "not found"}, 404)


class _IssuerServer(StubServer):
    dev_keys: DevKeys
    jwks_requests = 0


class DevIssuer(Served):
    """The issuer's HTTP server, run in a background thread (tests, `make run`)."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, *, keys_path: Path | None = None,
        audience: str = DEFAULT_AUDIENCE,
    ) -> None:
        self.server = _IssuerServer(_IssuerHandler, host, port)
        self.keys_path = keys_path
        if keys_path and keys_path.exists():
            keys = DevKeys.load(keys_path)
            keys.issuer, keys.audience = self.url, audience
        else:
            keys = DevKeys.generate(self.url, audience)
        self.server.dev_keys = keys
        self._save()

    @property
    def keys(self) -> DevKeys:
        return self.server.dev_keys

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
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9002)
    parser.add_argument("--keys", type=Path, default=DEFAULT_KEYS)
    parser.add_argument("--audience", default=DEFAULT_AUDIENCE)
    args = parser.parse_args()
    issuer = DevIssuer(args.host, args.port, keys_path=args.keys, audience=args.audience)
    print(f"dev OIDC issuer at {issuer.url} (keys in {args.keys})", flush=True)
    issuer.serve_until_interrupted()


if __name__ == "__main__":
    main()
