"""Fingerprints: what the store keeps instead of a sensitive value.

A fingerprint is HMAC-SHA256 (hex) of the value, with surrounding whitespace removed, under the
gateway's mask key (`toolgate_mask_key`). The same value gives the same fingerprint, so a
responder who holds a value can ask whether it was ever seen (`toolgate sessions find-value`),
while the store alone reveals nothing: without the key, a fingerprint cannot be checked against
guesses. The rule engine fingerprints its findings with this function.
"""

from __future__ import annotations

import hashlib
import hmac


def normalize(value: str) -> str:
    return value.strip()


def fingerprint(key: bytes, value: str) -> str:
    """HMAC-SHA256 hex of the normalized `value` under `key`."""
    if not key:
        raise ValueError("a fingerprint needs a non-empty key")
    return hmac.new(key, normalize(value).encode("utf-8"), hashlib.sha256).hexdigest()
