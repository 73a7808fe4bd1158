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
    "ip_address": (),
    "aws_access_key": (),
    "private_key": (),
    "jwt": (),
    "github_token": (),
    "slack_token": (),
    "stripe_key": (),
    "openai_key": (),
    "anthropic_key": (),
    "google_api_key": (),
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
    from reference.classify import INVISIBLE, _without_overlaps

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
            assert _core.normalize(name, value) == detector.normalize(value), value
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
