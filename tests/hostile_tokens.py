"""Hand-made hostile tokens: the attacks a verifier must refuse."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization

from toolgate.scripts.dev_issuer import DevKeys, new_key


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(keys: DevKeys, **override: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"iss": keys.issuer, "aud": keys.audience, "sub": "mallory", "groups": ["admins"],
            "iat": now, "nbf": now, "exp": now + 600}
    base.update(override)
    return base


def unsigned(keys: DevKeys) -> str:
    """`alg: none` with an empty signature."""
    header = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{b64(json.dumps(claims(keys)).encode())}."


def hs256_with_public_key(keys: DevKeys) -> str:
    """HS256 keyed with the issuer's RSA public key (PEM): the key-confusion attack."""
    rsa = keys.key_for("RS256")
    public_pem = jwt.PyJWK(rsa).key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": rsa["kid"]}).encode())
    payload = b64(json.dumps(claims(keys)).encode())
    signature = hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(signature)}"


def unknown_kid(keys: DevKeys) -> str:
    """Well-formed, signed by a key the issuer never published."""
    stranger = new_key("RSA")
    return jwt.encode(claims(keys), jwt.PyJWK(stranger).key, algorithm="RS256",
                      headers={"kid": stranger["kid"]})


def tampered(token: str, **changes: Any) -> str:
    """The same signature over a payload with `changes` made to it."""
    header, payload, signature = token.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body.update(changes)
    return f"{header}.{b64(json.dumps(body).encode())}.{signature}"
