"""Credentials: cloud keys, private keys, JWTs and common API token formats.

Token formats with a fixed prefix are validated by their shape and by entropy (detect-secrets'
approach), so documentation placeholders such as `ghp_xxxxxxxx...` are not reported.
"""

from __future__ import annotations

import base64
import binascii
import json
import re

from toolgate.rules.detectors.base import Detector, compile_patterns, register, shannon_entropy

_BASE32 = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")


def secret_partial(prefix: str):
    """Keep the well-known prefix and the last four characters: `ghp_****...****wxyz`."""

    def partial(text: str) -> str:
        keep = len(prefix) if text.startswith(prefix) else 0
        head, body = text[:keep], text[keep:]
        visible = 4 if len(body) >= 16 else 0
        return head + "".join("*" if char.isalnum() else char for char in body[: len(body) - visible]) + body[len(body) - visible :]

    return partial


def _random_enough(token: str, minimum: float = 3.0) -> bool:
    return shannon_entropy(token) >= minimum


aws_access_key = register(
    Detector(
        name="aws_access_key",
        patterns=compile_patterns(r"(?:AKIA|ASIA)(?<![A-Za-z0-9]....)[A-Z0-9]{16}(?![A-Za-z0-9])"),
        validate=lambda candidate: set(candidate[4:]) <= _BASE32,
        partial=secret_partial("AKIA"),
        needles=("AKIA", "ASIA"),
        description="AWS access key ids (AKIA... long-term, ASIA... temporary), base32-checked",
        examples=("AKIAIOSFODNN7EXAMPLE",),
    )
)

_PEM = re.compile(
    r"-----BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY((?: BLOCK)?)-----(?P<body>[^\x00]*?)-----END \1PRIVATE KEY\2-----",
    re.ASCII,
)


def _pem_body(block: str) -> bytes | None:
    """The base64 payload of a PEM block (headers such as `Proc-Type:` and PGP checksums dropped)."""
    match = _PEM.fullmatch(block)
    if match is None:
        return None
    lines = match.group("body").replace("\\n", "\n").split("\n")
    payload = "".join(line.strip() for line in lines if ":" not in line and not line.strip().startswith("="))
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return None


def _pem_valid(candidate: str) -> bool:
    body = _pem_body(candidate)
    return body is not None and len(body) >= 32


def _pem_partial(text: str) -> str:
    match = _PEM.fullmatch(text)
    if match is None:
        return "*" * len(text)
    return text[: match.start("body")] + "\n***\n" + text[match.end("body") :]


private_key = register(
    Detector(
        name="private_key",
        patterns=(_PEM,),
        validate=_pem_valid,
        normalize=lambda text: (_pem_body(text) or text.encode()).hex(),
        partial=_pem_partial,
        needles=("-----BEGIN",),
        spans_lines=True,
        description="PEM private key blocks (RSA, EC, PKCS#8, OpenSSH, PGP) whose body is base64",
        examples=(),
    )
)


def _b64url_json(part: str) -> object:
    try:
        return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None


def _jwt_valid(candidate: str) -> bool:
    header = _b64url_json(candidate.split(".", 1)[0])
    return isinstance(header, dict) and isinstance(header.get("alg"), str)


jwt = register(
    Detector(
        name="jwt",
        patterns=compile_patterns(r"eyJ(?<![A-Za-z0-9_-]...)[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*(?![A-Za-z0-9_-])"),
        validate=_jwt_valid,
        partial=secret_partial("eyJ"),
        needles=("eyJ",),
        description="JSON Web Tokens: three base64url parts whose header is JSON with an alg",
        examples=(),
    )
)

github_token = register(
    Detector(
        name="github_token",
        patterns=compile_patterns(
            r"gh[pousr]_(?<![A-Za-z0-9_]....)[A-Za-z0-9]{36,251}(?![A-Za-z0-9_])",
            r"github_pat_(?<![A-Za-z0-9_].{11})[A-Za-z0-9_]{22,244}(?![A-Za-z0-9_])",
        ),
        validate=lambda candidate: _random_enough(candidate.split("_", 1)[1]),
        partial=lambda text: secret_partial(text[: text.index("_") + 1])(text),
        needles=("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
        description="GitHub tokens: ghp_ / gho_ / ghu_ / ghs_ / ghr_ and fine-grained github_pat_",
    )
)


def _slack_valid(candidate: str) -> bool:
    parts = candidate.split("-")
    return len(parts) >= 3 and all(parts[1:]) and _random_enough("".join(parts[1:]))


slack_token = register(
    Detector(
        name="slack_token",
        patterns=compile_patterns(r"xox[baprs]-(?<![A-Za-z0-9_-].{5})[A-Za-z0-9-]{10,250}(?![A-Za-z0-9_-])"),
        validate=_slack_valid,
        partial=lambda text: secret_partial(text[:5])(text),
        needles=("xox",),
        description="Slack tokens: xoxb- / xoxa- / xoxp- / xoxr- / xoxs-",
    )
)

stripe_key = register(
    Detector(
        name="stripe_key",
        patterns=compile_patterns(r"[rs]k_(?:live|test)_(?<![A-Za-z0-9_].{8})[A-Za-z0-9]{16,247}(?![A-Za-z0-9_])"),
        validate=lambda candidate: _random_enough(candidate[8:]),
        partial=lambda text: secret_partial(text[:8])(text),
        needles=("k_live_", "k_test_"),
        description="Stripe secret and restricted keys: sk_live_ / rk_live_ / sk_test_ / rk_test_",
    )
)


def _openai_valid(candidate: str) -> bool:
    """Keys carry `T3BlbkFJ` (base64 of "OpenAI"); other long random sk- keys are accepted too."""
    body = candidate.split("-", 1)[1]
    return "T3BlbkFJ" in body or (len(body) >= 40 and _random_enough(body, 4.0))


openai_key = register(
    Detector(
        name="openai_key",
        patterns=compile_patterns(r"sk-(?<![A-Za-z0-9_-]...)(?!ant-)(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,250}(?![A-Za-z0-9_-])"),
        validate=_openai_valid,
        partial=secret_partial("sk-"),
        needles=("sk-",),
        description="OpenAI API keys: sk-... and sk-proj-...",
    )
)

anthropic_key = register(
    Detector(
        name="anthropic_key",
        patterns=compile_patterns(r"sk-ant-(?<![A-Za-z0-9_-].{7})[a-z]{3,8}[0-9]{2}-[A-Za-z0-9_-]{40,250}(?![A-Za-z0-9_-])"),
        validate=lambda candidate: _random_enough(candidate.split("-", 3)[3]),
        partial=secret_partial("sk-ant-"),
        needles=("sk-ant-",),
        description="Anthropic API keys: sk-ant-api03-...",
    )
)

google_api_key = register(
    Detector(
        name="google_api_key",
        patterns=compile_patterns(r"AIza(?<![A-Za-z0-9_-]....)[0-9A-Za-z_-]{35}(?![A-Za-z0-9_-])"),
        validate=lambda candidate: _random_enough(candidate[4:]),
        partial=secret_partial("AIza"),
        needles=("AIza",),
        description="Google API keys: AIza... (39 characters)",
    )
)
