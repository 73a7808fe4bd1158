"""Mask styles and keyed fingerprints (the masking itself is the core's: `rules.classify`).

- `redact`: `[REDACTED:ssn]`
- `partial`: the detector's own partial form (`***-**-6789`, `************4242`, `j***@example.com`)
- `hash`: `tok_ssn_3f9a1c2b5d7e`, the first 12 hex digits of the keyed fingerprint, so the same
  value under the same key always gives the same token and an agent can still join records
- `remove`: the field is deleted from its object or array

Masked output is never masked again: tokens are not detected (no detector matches `*`, `[` or a
12-digit hex run), values that already are tokens are skipped, and partial forms are fixed points.
"""

from __future__ import annotations

import json
import re
from typing import Any

from toolgate.rules.core import native
from toolgate.rules.detectors import Detector

_fingerprint = native.fingerprint
TOKEN_HEX = 12
_TOKEN = re.compile(r"\[REDACTED:[A-Za-z0-9_.-]+\]|tok_[A-Za-z0-9_.-]+_[0-9a-f]{%d}" % TOKEN_HEX)
_TOKEN_STARTS = ("[REDACTED:", "tok_")
_NUMBER_LIKE = re.compile(r"\+?[0-9][0-9 ().-]*")


def is_mask_token(text: str) -> bool:
    """True for `[REDACTED:x]` and `tok_x_<hex>`: values that masking already produced."""
    return text.startswith(_TOKEN_STARTS) and _TOKEN.fullmatch(text) is not None  # most text starts otherwise


def fingerprint(normalized: str, key: bytes) -> str:
    """Keyed HMAC-SHA256 (hex) of a normalized value: what is stored instead of the value."""
    return _fingerprint(normalized, bytes(key))


def hash_token(label: str, normalized: str, key: bytes) -> str:
    return f"tok_{label}_{fingerprint(normalized, key)[:TOKEN_HEX]}"


def redact_token(label: str) -> str:
    return f"[REDACTED:{label}]"


def normalize(value: Any, detector: Detector | None = None) -> str:
    """The canonical text a value is fingerprinted and hashed from.

    A detector knows its own form (digits only for cards and SSNs, lower case for emails), of the
    value as it read it (`4111\u200b1111...` is the card `41111111...`). A value
    labelled by path gets the generic form: trimmed, digits only when it is written like a number,
    lower case when it holds an `@`; containers become canonical JSON.
    """
    if detector is not None:  # as the detector read it: invisible characters taken out
        return detector.normalize(native.visible(_number_text(value)))
    if isinstance(value, str):
        text = value.strip()
        if _NUMBER_LIKE.fullmatch(text):
            return "".join(char for char in text if char.isdigit())
        return text.lower() if "@" in text else text
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def candidate_fingerprints(value: str, key: bytes) -> set[str]:
    """Every fingerprint `value` could have been recorded under (for `sessions find-value`)."""
    from toolgate.rules.detectors import DETECTORS

    forms = {normalize(value)}
    for detector in DETECTORS.values():
        try:
            forms.add(detector.normalize(value))
        except ValueError:
            pass
    return {fingerprint(form, key) for form in forms}


def email_partial(text: str) -> str:
    """`jane.doe@example.com` → `j***@example.com` (idempotent: `j***@…` stays `j***@…`)."""
    local, at, domain = text.rpartition("@")
    return (local[:1] or "*") + "***" + at + domain


def keep_last(text: str, keep: int = 4) -> str:
    """Replace letters and digits with `*` except the last `keep` of them; separators stay."""
    cut = len(text)
    while keep > 0 and cut > 0:  # find where the visible tail starts
        cut -= 1
        if text[cut].isalnum():
            keep -= 1
    if keep > 0:
        cut = 0
    return "".join("*" if char.isalnum() else char for char in text[:cut]) + text[cut:]


def _number_text(value: Any) -> str:
    """A value as a detector reads it: `4.111111111111111e15` is the card `4111111111111111`
    (see `rules.walk`), not `4111111111111111.0`."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def generic_partial(value: Any) -> str:
    """Partial form of a value labelled by path: emails keep their first letter and domain;
    other text keeps its last four letters or digits when it has at least eight."""
    text = value if isinstance(value, str) else str(value)
    if "@" in text:
        return email_partial(text)
    maskable = sum(1 for char in text if char.isalnum() or char == "*")
    return keep_last(text, 4 if maskable >= 8 else 0)
