"""Credentials: cloud keys, private keys, JWTs and common API token formats.

Token formats with a fixed prefix are validated by their shape and by entropy (detect-secrets'
approach), so documentation placeholders such as `ghp_xxxxxxxx...` are not reported. Their
partial form keeps the well-known prefix and the last four characters: `ghp_****...****wxyz`.
"""

from __future__ import annotations

import base64

from toolgate.rules.detectors.base import Detector, register

aws_access_key = register(Detector(
    name="aws_access_key",
    description="AWS access key ids (AKIA... long-term, ASIA... temporary), base32-checked",
    examples=("AKIAIOSFODNN7EXAMPLE",),
    counter_examples=("AKIA0000000000000000", "AKIAIOSFODNN7EXAMPL"),
    needles=("AKIA", "ASIA"),
))

private_key = register(Detector(
    name="private_key",
    description="PEM private key blocks (RSA, EC, PKCS#8, OpenSSH, PGP) whose body is base64",
    # Spelled in two pieces so that secret scanners do not take the source for a key.
    examples=("-----BEGIN " "PRIVATE KEY-----\n"
              + base64.b64encode(b"toolgate example: base64 that is no real key").decode()
              + "\n-----END " "PRIVATE KEY-----",),
    counter_examples=("-----BEGIN RSA " "PRIVATE KEY-----\n...\n-----END RSA " "PRIVATE KEY-----",
                      "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n"
                      "-----END PUBLIC KEY-----"),
    needles=("-----BEGIN",),
    spans_lines=True,
))

jwt = register(Detector(
    name="jwt",
    description="JSON Web Tokens: three base64url parts whose header is JSON with an alg",
    examples=("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
              "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",),
    counter_examples=("eyJ0eXAiOiJKV1QifQ.eyJzdWIiOiJ4In0.abc",  # a header without alg
                      "eyJub3Rqc29u.eyJzdWIiOiJ4In0.abc"),  # a header that is not JSON
    needles=("eyJ",),
))

# Examples are spelled in two pieces so that secret scanners do not take them for real tokens.
github_token = register(Detector(
    name="github_token",
    description="GitHub tokens: ghp_ / gho_ / ghu_ / ghs_ / ghr_ and fine-grained github_pat_",
    examples=("ghp_" "aB3dE5gH7jK9mN1pQ3sT5vX7zA9cE1gI3kM5",),
    counter_examples=("ghp_" + "x" * 36, "ghp_" "aB3dE5gH7j"),
    needles=("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
))

slack_token = register(Detector(
    name="slack_token",
    description="Slack tokens: xoxb- / xoxa- / xoxp- / xoxr- / xoxs-",
    examples=("xoxb-" "123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",),
    counter_examples=("xoxb-" + "a" * 30,),
    needles=("xox",),
))

stripe_key = register(Detector(
    name="stripe_key",
    description="Stripe secret and restricted keys: sk_live_ / rk_live_ / sk_test_ / rk_test_",
    examples=("sk_live_" "4eC39HqLyjWDarjtT1zdp7dc",),
    counter_examples=("sk_live_" + "x" * 24,),
    needles=("k_live_", "k_test_"),
))

# Keys carry `T3BlbkFJ` (base64 of "OpenAI"); other long random sk- keys are accepted too.
openai_key = register(Detector(
    name="openai_key",
    description="OpenAI API keys: sk-... and sk-proj-...",
    examples=("sk-proj-" "Ab3De5Gh7Jk9Mn1Pq3St5Vx7Za9Ce1Gi3Km5Oq7T3BlbkFJXy2Wv4Ut6Sr8Qp0On2Ml",),
    counter_examples=("sk-" + "a" * 48, "task-" "Ab3De5Gh7Jk9Mn1Pq3StT3BlbkFJXy2Wv4Ut6Sr8Qp0On2Ml"),
    needles=("sk-",),
))

anthropic_key = register(Detector(
    name="anthropic_key",
    description="Anthropic API keys: sk-ant-api03-...",
    examples=("sk-ant-api03-" "Zx8Yw7Vu6Ts5Rq4Po3Nm2Lk1Jh0Gf9Ed8Cb7Aa6Zy5Xw4Vu3Ts2Rq1Po0NmLkJhGfEdCbA-xyzW",),
    counter_examples=("sk-ant-api03-" + "a" * 48,),
    needles=("sk-ant-",),
))

google_api_key = register(Detector(
    name="google_api_key",
    description="Google API keys: AIza... (39 characters)",
    examples=("AIza" "SyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY",),
    counter_examples=("AIza" + "0" * 35,),
    needles=("AIza",),
))
