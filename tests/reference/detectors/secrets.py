"""Credentials: cloud keys, private keys, JWTs and common API token formats.

Token formats with a fixed prefix are validated by their shape and by entropy (detect-secrets'
approach), so documentation placeholders such as `ghp_xxxxxxxx...` are not reported.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Callable

from reference.detectors.base import Detector, compile_patterns, register, shannon_entropy

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
        counter_examples=("AKIA0000000000000000", "AKIAIOSFODNN7EXAMPL"),
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
        # Spelled in two pieces so that secret scanners do not take the source for a key.
        examples=("-----BEGIN " "PRIVATE KEY-----\n"
                  + base64.b64encode(b"toolgate example: base64 that is no real key").decode()
                  + "\n-----END " "PRIVATE KEY-----",),
        counter_examples=("-----BEGIN RSA " "PRIVATE KEY-----\n...\n-----END RSA " "PRIVATE KEY-----",
                          "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n"
                          "-----END PUBLIC KEY-----"),
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
        examples=("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
                  "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",),
        counter_examples=("eyJ0eXAiOiJKV1QifQ.eyJzdWIiOiJ4In0.abc",  # a header without alg
                          "eyJub3Rqc29u.eyJzdWIiOiJ4In0.abc"),  # a header that is not JSON
    )
)

def prefixed_token(name: str, *patterns: str, validate: Callable[[str], bool],
                   prefix: int | Callable[[str], int], needles: tuple[str, ...], description: str,
                   examples: tuple[str, ...], counter_examples: tuple[str, ...]) -> Detector:
    """Register an API token whose format starts with a known prefix: the partial mask keeps the
    first `prefix` characters (or as many as `prefix(text)` says) and the last four."""
    keep = prefix if callable(prefix) else (lambda text: prefix)
    return register(Detector(
        name=name, patterns=compile_patterns(*patterns), validate=validate,
        partial=lambda text: secret_partial(text[:keep(text)])(text), needles=needles,
        description=description, examples=examples, counter_examples=counter_examples,
    ))


# Examples are spelled in two pieces so that secret scanners do not take them for real tokens.
github_token = prefixed_token(
    "github_token", r"gh[pousr]_(?<![A-Za-z0-9_]....)[A-Za-z0-9]{36,251}(?![A-Za-z0-9_])",
    r"github_pat_(?<![A-Za-z0-9_].{11})[A-Za-z0-9_]{22,244}(?![A-Za-z0-9_])",
    validate=lambda candidate: _random_enough(candidate.split("_", 1)[1]),
    prefix=lambda text: text.index("_") + 1,
    needles=("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
    description="GitHub tokens: ghp_ / gho_ / ghu_ / ghs_ / ghr_ and fine-grained github_pat_",
    examples=("ghp_" "aB3dE5gH7jK9mN1pQ3sT5vX7zA9cE1gI3kM5",),
    counter_examples=("ghp_" + "x" * 36, "ghp_" "aB3dE5gH7j"),
)


def _slack_valid(candidate: str) -> bool:
    parts = candidate.split("-")
    return len(parts) >= 3 and all(parts[1:]) and _random_enough("".join(parts[1:]))


slack_token = prefixed_token(
    "slack_token", r"xox[baprs]-(?<![A-Za-z0-9_-].{5})[A-Za-z0-9-]{10,250}(?![A-Za-z0-9_-])",
    validate=_slack_valid, prefix=5, needles=("xox",),
    description="Slack tokens: xoxb- / xoxa- / xoxp- / xoxr- / xoxs-",
    examples=("xoxb-" "123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",),
    counter_examples=("xoxb-" + "a" * 30,))

stripe_key = prefixed_token(
    "stripe_key", r"[rs]k_(?:live|test)_(?<![A-Za-z0-9_].{8})[A-Za-z0-9]{16,247}(?![A-Za-z0-9_])",
    validate=lambda candidate: _random_enough(candidate[8:]), prefix=8, needles=("k_live_", "k_test_"),
    description="Stripe secret and restricted keys: sk_live_ / rk_live_ / sk_test_ / rk_test_",
    examples=("sk_live_" "4eC39HqLyjWDarjtT1zdp7dc",), counter_examples=("sk_live_" + "x" * 24,))


def _openai_valid(candidate: str) -> bool:
    """Keys carry `T3BlbkFJ` (base64 of "OpenAI"); other long random sk- keys are accepted too."""
    body = candidate.split("-", 1)[1]
    return "T3BlbkFJ" in body or (len(body) >= 40 and _random_enough(body, 4.0))


openai_key = prefixed_token(
    "openai_key",
    r"sk-(?<![A-Za-z0-9_-]...)(?!ant-)(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,250}(?![A-Za-z0-9_-])",
    validate=_openai_valid, prefix=3, needles=("sk-",),
    description="OpenAI API keys: sk-... and sk-proj-...",
    examples=("sk-proj-" "Ab3De5Gh7Jk9Mn1Pq3St5Vx7Za9Ce1Gi3Km5Oq7T3BlbkFJXy2Wv4Ut6Sr8Qp0On2Ml",),
    counter_examples=("sk-" + "a" * 48, "task-" "Ab3De5Gh7Jk9Mn1Pq3StT3BlbkFJXy2Wv4Ut6Sr8Qp0On2Ml"),
)

anthropic_key = prefixed_token(
    "anthropic_key", r"sk-ant-(?<![A-Za-z0-9_-].{7})[a-z]{3,8}[0-9]{2}-[A-Za-z0-9_-]{40,250}(?![A-Za-z0-9_-])",
    validate=lambda candidate: _random_enough(candidate.split("-", 3)[3]), prefix=7,
    needles=("sk-ant-",), description="Anthropic API keys: sk-ant-api03-...",
    examples=("sk-ant-api03-" "Zx8Yw7Vu6Ts5Rq4Po3Nm2Lk1Jh0Gf9Ed8Cb7Aa6Zy5Xw4Vu3Ts2Rq1Po0NmLkJhGfEdCbA-xyzW",),
    counter_examples=("sk-ant-api03-" + "a" * 48,))

google_api_key = prefixed_token(
    "google_api_key", r"AIza(?<![A-Za-z0-9_-]....)[0-9A-Za-z_-]{35}(?![A-Za-z0-9_-])",
    validate=lambda candidate: _random_enough(candidate[4:]), prefix=4, needles=("AIza",),
    description="Google API keys: AIza... (39 characters)",
    examples=("AIza" "SyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY",), counter_examples=("AIza" + "0" * 35,))
