"""Each native detector (core/src/detectors) against its pure-Python reference, value for value:
the same spans in the same strings, the same canonical forms and partial masks, on the
detectors' own examples and on thousands of generated look-alikes (digits and separators,
prefixes, invisible characters, other scripts, values cut and glued together).

`TOOLGATE_CORE_CASES` sets how many generated strings each detector gets (default 3000)."""

from __future__ import annotations

import os
import random

import pytest
from reference.detectors import DETECTORS as REFERENCE
from reference.invisible import INVISIBLE

from toolgate.rules import _core

CASES = int(os.environ.get("TOOLGATE_CORE_CASES", "3000"))
NAMES = _core.detector_names()

# Characters the patterns care about, and some they must not: invisible ones, other scripts,
# line breaks, the escaped line break of JSON text.
ALPHABET = (
    "0123456789" * 3 + " -.()+:@_/=%" * 2 + "ABCDEFXYZabcdefxyz" + "\n\t" + "\u200b\x00\u00ad"
    + "é中٣" + "\\n"
)
PIECES = ("-----BEGIN ", "-----END ", "PRIVATE KEY", " BLOCK", "-----", "RSA ", "eyJ", "sk-", "ant-",
          "proj-", "ghp_", "github_pat_", "xoxb-", "sk_live_", "rk_test_", "AKIA", "ASIA", "AIza",
          "T3BlbkFJ", "::", "::ffff:", "10.0.0.1", "192.168.", "fe80::", "@example.com", ".com",
          "+1 ", "(415) ", "555-", "1-800-", "DE89", "GB82 WEST", "123-45-", " 45 ")

# More seeds per detector, for the shapes its pattern and validator care about.
EXTRA_SEEDS: dict[str, tuple[str, ...]] = {
    "ip_address": ("::", "::1", "::ffff:1.2.3.4", "::ffff:10.0.0.1", "::0.0.0.0", "1::", "fe80::1", "fe80::1%eth0",
                   "1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7::", "::2:3:4:5:6:7:8", "1:2:3:4:5:6:1.2.3.4",
                   "2001:0db8:0000:0000:0000:ff00:0042:8329", "1:0:0:2:0:0:0:3", "FFFF:ffff::", "a:b:c:d:e:f:0:1",
                   "12345::1", "1::2::3", ":::", "0:0:0:0:0:0:0:0", "255.255.255.255", "256.1.1.1", "0.0.0.0",
                   "1.2.3.04", "01.02.03.04", "1.2.3.4.5", "10:30:00", "12:34:56:78", "aa:bb:cc:dd:ee:ff"),
    # Token-shaped values are spelled in pieces so that secret scanners do not take them for real.
    "aws_access_key": ("AKIA" "IOSFODNN7EXAMPLE", "ASIA" "J2345672345672XY", "AKIA" "ABCDEFGHIJKLMNOP",
                       "AKIA" "1234567890ABCDEF", "xAKIA" "IOSFODNN7EXAMPLE", "AKIA" "IOSFODNN7EXAMPLE7",
                       "AKIA" "IOSFODNN7EXAMP", "ASIA" "IOSFODNN7EXAMPLE_", "AKIA" "QRSTUVWXYZ234567 ASIA" "ABCD"),
    # PEM blocks: (words, BLOCK, body, words of the END line); payloads of 30 to 48 bytes
    "private_key": tuple(
        f"-----BEGIN {words}PRIVATE" f" KEY{block}-----{body}-----END {end}PRIVATE" f" KEY{block}-----"
        for words, block, body, end in (
            ("RSA ", "", "\nBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAhIiMkJSY=\n", "RSA "),
            ("EC ", "", "\\nBwgJCgsMDQ4PEBESExQVFhcYGRob\\nHB0eHyAhIiMkJSYn\\n", "EC "),
            ("OPENSSH ", "", "\nBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAhIiMkJQ==\n", "OPENSSH "),
            ("PGP ", " BLOCK", "\nVersion: 1\n\nBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAhIiMkJSYnKA==\n=ab12\n", "PGP "),
            ("", "", "\n\u3000BwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAhIiMk\u2028\n", ""),
            ("ENCRYPTED ", "", "\nProc-Type: 4\nBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAhIiMkJSYn\n", "ENCRYPTED "),
            ("RSA ", "", "\nBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAhIiMkJSYn\n", "EC "),
            ("", " BLOCK", "\nBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAhIiMkJSYn\n", ""),
            ("", " BLOCK", "\nBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAhIiMkJSYn\n-----END PRIVATE" " KEY-----\n", ""),
            ("PRIVATE KEY ", "", "BwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAhIiMkJSYn", "PRIVATE KEY "),
            ("A B 7 ", "", "BwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAhIiMkJSYn====", "A B 7 "),
            ("", "", "\nBwgJCgsMDQ4PEBESExQVFhcY\n-----END PRIVATE" " KEY-----GRobHB0eHyAhIiMkJSYn", ""),
            ("", "", "\nBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAhIiMkJSYnKCkqKywt=LzA\n", ""),
            ("", "", "\nBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAhIiMkJSYnKCkqKywtL\n", ""),
            ("", "", "\n\n", ""),
            ("rsa ", "", "\nBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAhIiMkJSYn\n", "rsa "),
        )
    ),
    # headers: {"alg":"HS256"}, null, 1, a duplicate alg, \u00e9, NaN, trailing data, invalid UTF-8, short
    # strings, a list, a nested alg; a first part one character past a quad; empty and extra parts
    "jwt": ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.sig", "eyJhbGciOm51bGx9.eyJzdWIiOiJ4In0.", "eyJhbGciOjF9.abcd.efgh",
            "eyJhbGciOiJhIiwiYWxnIjoyfQ.eyJ4IjoxfQ.x", "eyJhbGciOiJcdTAwZTkifQ.eyJ4IjoxfQ.x-_y",
            "eyJhbGciOiJ4IiwibiI6TmFOfQ.eyJ4IjoxfQ.", "eyJhbGciOiJ4In14.eyJ4IjoxfQ.x", "eyJhbGciOiL_In0.eyJ4IjoxfQ.x",
            "eyJhbGciOiJhYiJ9.abcd.", "eyJhbGciOiJhYmMifQ.abcd.", "eyJhbGciOiJhYmNkIn0.abcd.",
            "eyJhbGciOlsieCJdfQ.abcd.", "eyJhIjp7ImFsZyI6IngifX0.abcd.", "eyJhbGciOiJhYmNkIn0x.abcd.",
            "eyJhbGciOiJIUzI1NiJ9.abc.def", "eyJhbGciOiJIUzI1NiJ9..", "eyJhbGciOiJIUzI1NiJ9.abcd.ef.gh"),
    # bodies at the length limits, entropy exactly 3.0 (8 characters, uniform) and below
    "github_token": ("ghp_" + "abcdefgh" * 5, "gho_" + "aB3dE5gH7j" * 25 + "k", "ghu_" + "aB3dE5gH7j" * 25 + "kM",
                     "ghs_" "aB3dE5gH7jK9mN1pQ3sT5vX7zA9cE1gI3kM", "ghr_" + "ab" * 20,
                     "github_pat_" "11ABCDEFGH0123456789_xy", "github_pat_" + "aB3dE5gH7j_" * 22 + "ab",
                     "github_pat_" + "aB3dE5gH7j_" * 22 + "abc", "github_pat_" + "a" * 30,
                     "ghp_" "aB3dE5gH7jK9mN1pQ3sT5vX7zA9cE1gI3kM5_x"),
    "slack_token": ("xoxp-" "1234-5678-abcdefgh", "xoxb-" "-abcdefgh-ijkl", "xoxb-" "abcdefghijkl",
                    "xoxa-" "1a2b3c4d5e-f6", "xoxs-" + "a1b2c3d4e5-" * 22 + "abcdefgh",
                    "xoxr-" + "a1b2c3d4e5-" * 22 + "abcdefghi", "xoxb-" "12345678-", "xoxb-" "1234-5678-abcdefgh_"),
    "stripe_key": ("sk_live_" "4eC39HqLyjWDarjt", "rk_test_" "4eC39HqLyjWDarj",
                   "sk_test_" + "4eC39HqLyj" * 24 + "abcdefg", "rk_live_" + "4eC39HqLyj" * 24 + "abcdefgh",
                   "sk_live_" + "ab" * 12, "sk_live_" "4eC39HqLyjWDarjtT1zd_x"),
    "openai_key": ("sk-" "abcdefghijklmnoT3BlbkFJ", "sk-proj-" "abcdefghijklmnopqrst",
                   "sk-svcacct-" "T3BlbkFJ1234567890ab", "sk-admin-" "Ab3De5Gh7Jk9Mn1Pq3St5Vx7Za9Ce1Gi3Km5Oq7Y",
                   "sk-" "Ab3De5Gh7Jk9Mn1Pq3St5Vx7Za9Ce1Gi3Km5Oq7Y", "sk-" + "aB3-_" * 50,
                   "sk-proj-" + "T3BlbkFJ" * 31 + "ab", "sk-proj-" + "T3BlbkFJ" * 31 + "abc",
                   "sk-ant-" "T3BlbkFJ1234567890abcd", "sk-an-" "T3BlbkFJ1234567890abcd",
                   "sk-" "antT3BlbkFJ1234567890abcd"),
    "anthropic_key": ("sk-ant-api03-" "Zx8Yw7Vu6Ts5Rq4Po3Nm2Lk1Jh0Gf9Ed8Cb7Aa6Z",
                      "sk-ant-adminxyz01-" + "Zx8Yw7Vu6T" * 4,
                      "sk-ant-abcdefghi01-" + "Zx8Yw7Vu6T" * 4, "sk-ant-ab01-" + "Zx8Yw7Vu6T" * 4,
                      "sk-ant-api03-" + "Zx8Yw7Vu6_" * 25, "sk-ant-api03-" + "Zx8Yw7Vu6_" * 25 + "x",
                      "sk-ant-api03-" + "ab-" * 20),
    "google_api_key": ("AIza" "SyD-9tSrke72PouQMnMX-a7eZSW0jkFMBW", "AIza" "SyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWYZ",
                       "AIza" "abcdefghabcdefghabcdefghabcdefghabc", "AIza" + "ab" * 17 + "c",
                       "AIza" "b3De5Gh7Jk9Mn1Pq3St5Vx7Za9Ce1Gi3Km5", "xAIza" "SyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY"),
}


def _mutate(rng: random.Random, text: str) -> str:
    chars = list(text)
    for _ in range(rng.randint(0, 3)):
        if not chars:
            break
        i = rng.randrange(len(chars))
        op = rng.random()
        if op < 0.4:
            chars[i] = rng.choice(ALPHABET)
        elif op < 0.7:
            chars.insert(i, rng.choice(ALPHABET))
        else:
            del chars[i]
    return "".join(chars)


def generated(name: str, count: int, seed: int = 14) -> list[str]:
    """Strings around detector `name`'s values: its examples and look-alikes, mutated, cut,
    repeated, glued to each other and to random text."""
    rng = random.Random(f"{seed}-{name}")
    detector = REFERENCE[name]
    seeds = [*detector.examples, *detector.counter_examples, *EXTRA_SEEDS.get(name, ())]
    for other in REFERENCE.values():  # neighbours' values: they overlap in shape
        seeds.extend(other.examples[:1])
    out = []
    for _ in range(count):
        parts = []
        for _ in range(rng.randint(1, 4)):
            kind = rng.random()
            if kind < 0.45:
                parts.append(_mutate(rng, rng.choice(seeds)))
            elif kind < 0.6:
                value = rng.choice(seeds)
                a, b = sorted(rng.randrange(len(value) + 1) for _ in range(2))
                parts.append(value[a:b])
            elif kind < 0.75:
                parts.append(rng.choice(PIECES))
            else:
                parts.append("".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 30))))
        out.append(rng.choice(["", " ", ", ", "\n", "x", "9", "-"]).join(parts))
    return out


def reference_find(name: str, text: str) -> list[tuple[int, int]]:
    """What the reference classifier reports for a string: spans in the string, invisible
    characters taken out for matching (positions mapped back), overlapping ones resolved."""
    from reference.classify import _without_overlaps

    keep = [i for i, char in enumerate(text) if not INVISIBLE.match(char)]
    visible = "".join(text[i] for i in keep)
    detector = REFERENCE[name]
    spans = [(keep[s], keep[e - 1] + 1, detector) for s, e in detector.find(visible)]
    return [(s, e) for s, e, _ in _without_overlaps(spans)]


def test_the_core_has_every_detector_of_the_reference():
    assert NAMES == list(REFERENCE)


@pytest.mark.parametrize("name", NAMES)
def test_examples_and_counter_examples(name):
    detector = REFERENCE[name]
    for example in detector.examples:
        assert _core.find(name, example) == [(0, len(example))], example
        assert _core.find(name, f"see {example} here") == [(4, 4 + len(example))], example
    for counter in detector.counter_examples:
        assert _core.find(name, counter) == reference_find(name, counter) == [], counter


@pytest.mark.parametrize("name", NAMES)
def test_generated_strings_give_the_reference_spans(name):
    detector = REFERENCE[name]
    differences = []
    found = 0
    for text in generated(name, CASES):
        expected = reference_find(name, text)
        actual = _core.find(name, text)
        if actual != expected:
            differences.append((text, expected, actual))
            continue
        for start, end in expected:
            found += 1
            value = text[start:end]
            assert _core.partial(name, value) == detector.partial(value), value
            # fingerprints are taken of the value as the detector read it (invisible characters out)
            visible = INVISIBLE.sub("", value)
            assert _core.visible(value) == visible
            assert _core.normalize(name, visible) == detector.normalize(visible), value
    assert differences[:5] == []
    assert found > CASES // 50  # the generator does reach real values


def test_whole_numbers_as_the_reference_sees_them():
    rng = random.Random(14)
    numbers = ["4242424242424242", "378282246310005", "4111111111111111", "1234567812345670"]
    numbers += [str(rng.randrange(10**12, 10**20)) for _ in range(3000)]
    for text in numbers:
        for name in NAMES:
            assert _core.matches_whole(name, text) == REFERENCE[name].matches_whole(text), (name, text)


def test_fingerprints_are_hmac_sha256():
    import hashlib
    import hmac

    for key in (b"k", b"x" * 100, b""):
        for text in ("", "4242424242424242", "j\u00e9@example.com"):
            assert _core.fingerprint(text, key) == hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def test_invisible_characters_are_the_reference_set():
    # every code point but the surrogates (which UTF-8 cannot carry; the core reads them as U+FFFD)
    everything = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF)
    assert _core.visible(everything) == INVISIBLE.sub("", everything)


def test_the_core_prefilters_with_the_needles_the_library_lists():
    from toolgate.rules.detectors import DETECTORS

    for name in NAMES:
        assert tuple(_core.needles(name)) == DETECTORS[name].needles == REFERENCE[name].needles, name
