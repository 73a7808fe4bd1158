"""The native credential detectors (core/src/detectors/secrets.rs) against the reference on what
the span test does not reach: canonical forms and partial masks of arbitrary strings (not only of
found values), PEM bodies under every base64 padding shape, and JWT headers Python's `json`
reads in its own way."""

from __future__ import annotations

import base64
import itertools
import random

import pytest
from reference.detectors import DETECTORS as REFERENCE

from toolgate.rules import _core

TOKENS = ("aws_access_key", "jwt", "github_token", "slack_token", "stripe_key", "openai_key", "anthropic_key",
          "google_api_key")
BEGIN, END = "-----BEGIN ", "-----END "
PIECES = (BEGIN, END, "PRIVATE KEY", " BLOCK", "-----", "RSA ", "EC ", "OPENSSH ", "PRIVATE ", "\n", "\\n", "\\",
          "Proc-Type: 4", ":", "=", "==", " ", "\t", "\u3000", "\u2028", "\u00a0", "\x1c", "\x00", "é", "\u200b",
          "BwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAhIiMkJSYn", "AAAA", "QQ", "QUI", "+/", "-_", "x")


PAYLOAD = "BwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAhIiMkJSYn"  # 33 bytes


def _pem(words: str, block: str, body: str) -> str:
    return f"{BEGIN}{words}PRIVATE KEY{block}-----{body}{END}{words}PRIVATE KEY{block}-----"


def _arbitrary(rng: random.Random) -> str:
    shape = rng.random()
    if shape < 0.5:  # a block whose body is pieces glued together
        body = "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 8)))
        if rng.random() < 0.5:  # a payload that decodes, around what the reference drops
            body = rng.choice(("\n", "\\n", "", "\nProc-Type: 4\n")) + PAYLOAD
            body += rng.choice(("\n", "\\n", "", "\n=ab\n"))
        words, block = rng.choice([("", ""), ("RSA ", ""), ("PGP ", " BLOCK"), ("PRIVATE KEY ", ""), ("A 1 ", "")])
        text = _pem(words, block, body)
        if rng.random() < 0.3:  # cut, or something glued around it
            a, b = sorted(rng.randrange(len(text) + 1) for _ in range(2))
            text = rng.choice([text[a:b], text + rng.choice(PIECES), rng.choice(PIECES) + text])
        return text
    return "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 12)))


def test_private_key_normalize_and_partial_of_arbitrary_strings():
    rng = random.Random(14)
    detector = REFERENCE["private_key"]
    for _ in range(20000):
        text = _arbitrary(rng)
        assert _core.normalize("private_key", text) == detector.normalize(text), repr(text)
        assert _core.partial("private_key", text) == detector.partial(text), repr(text)


def test_private_key_blocks_found_as_the_reference_finds_them():
    """Several blocks, cut and glued: the lazy body, the back-references and the retry after a
    rejected block (spans compared where nothing invisible is taken out first)."""
    from reference.classify import INVISIBLE

    rng = random.Random(15)
    detector = REFERENCE["private_key"]
    reached = 0
    for _ in range(20000):
        text = "".join(_arbitrary(rng) for _ in range(rng.randint(1, 3)))
        if INVISIBLE.search(text):
            continue
        expected = list(detector.find(text))
        reached += len(expected)
        assert _core.find("private_key", text) == expected, repr(text)
    assert reached > 5000


def test_pem_bodies_decode_as_cpython_base64_does():
    """Every payload of up to six characters of base64's letters, pads and neighbours: the
    strict decoding (leading, excess and discontinuous padding, quads one character over)."""
    detector = REFERENCE["private_key"]
    for length in range(7):
        for letters in itertools.product("AQ/+= ", repeat=length):
            payload = "".join(letters)
            for text in (_pem("", "", payload), _pem("", "", "BwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAhIiMk" + payload)):
                assert _core.normalize("private_key", text) == detector.normalize(text), payload
                assert _core.find("private_key", text) == list(detector.find(text)), payload


def test_prefixed_tokens_partial_and_normalize_of_arbitrary_strings():
    rng = random.Random(14)
    alphabet = "abcXYZ0129_-.\u200b\u00ad é \t\n"
    prefixes = ("", "AKIA", "ASIA", "eyJ", "ghp_", "github_pat_", "xoxb-", "sk_live_", "sk-", "sk-ant-", "AIza", "_")
    for _ in range(5000):
        text = rng.choice(prefixes) + "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        for name in TOKENS:
            detector = REFERENCE[name]
            assert _core.normalize(name, text) == detector.normalize(text), (name, text)
            try:
                expected = detector.partial(text)
            except ValueError:  # github_token's prefix is up to the first "_": found values hold one
                assert "_" not in text
                continue
            assert _core.partial(name, text) == expected, (name, text)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


HEADERS = (b'{"alg":"HS256"}', b'{"alg":null}', b'{"alg":1}', b'{"alg":"a","alg":2}', b'{"alg":2,"alg":"a"}',
           b'{"alg":"\\u00e9"}', b'{"alg":"\\ud800"}', b'{"alg":"x","n":NaN}', b'{"alg":"x","n":-Infinity}',
           b'{"alg":"x"} ', b'{"alg":"x"}x', b'{"alg":"\xff"}', b'{"alg":"\xc3\xa9"}', b'{"alg":["x"]}',
           b'{"a":{"alg":"x"}}', b'{"alg":"x"', b'{"alg":"x\n"}', b'{"alg":"x"}\n', b'{"alg" :"x"}', b'{"ALG":"x"}',
           b'{"alg":"x","b":1e999}', b'{"alg":"x","b":[[[[[]]]]]}', b'{"\x00":1}', b'{"alg":"x"}\x00\x00')


@pytest.mark.parametrize("header", HEADERS)
def test_jwt_headers_are_read_by_python_json(header):
    detector = REFERENCE["jwt"]
    first = _b64url(header)
    for cut in range(max(7, len(first) - 3), len(first) + 1):  # padding shapes, one character over a quad too
        token = f"{first[:cut]}.eyJzdWIiOiJ4In0.c2ln"
        if not token.startswith("eyJ"):
            continue
        expected = [(0, len(token))] if detector.find(token) else []
        assert _core.find("jwt", token) == expected, token


def test_jwt_headers_generated():
    rng = random.Random(14)
    detector = REFERENCE["jwt"]
    values = (b'"x"', b'"HS256"', b"1", b"null", b"true", b'"\\u00e9"', b'"\xff"', b'"\xc3\xa9"', b"[]", b'"a\\"b"',
              b'"\\x"')
    rests = (b"}", b"} ", b"}\n", b"}x", b"", b",}", b',"alg":1}', b',"alg":"y"}', b',"b":[1,{}]}', b"}}", b"\x00}")
    pieces = (b'"alg"', b'"x"', b":", b",", b"{", b"}", b"[", b"]", b"1", b"null", b" ", b'"', b"\\", b"\xff", b"\xc3")
    reached = 0
    for _ in range(5000):
        header = b'{"alg":' + rng.choice(values) + rng.choice(rests)
        if rng.random() < 0.3:
            header = b'{"alg":' + b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 6)))
        token = f"{_b64url(header)}.abcd.{rng.choice(['', 'sig'])}"
        expected = [(0, len(token))] if detector.find(token) else []
        reached += bool(expected)
        assert _core.find("jwt", token) == expected, (header, token)
    assert reached > 100


def test_a_header_too_deep_for_json_fails_the_scan_as_in_the_reference():
    """`json.loads` of a header nested deeper than the recursion limit raises RecursionError,
    which the reference lets through (the whole classification fails, and the gateway refuses
    the call); the core raises it once its scan returns, and the next scan works."""
    header = b'{"a":' + b"[" * 100000
    token = _b64url(header) + ".abcd.sig"
    with pytest.raises(RecursionError):
        list(REFERENCE["jwt"].find(token))
    with pytest.raises(RecursionError):
        _core.find("jwt", token)
    example = REFERENCE["jwt"].examples[0]
    assert _core.find("jwt", example) == [(0, len(example))]
