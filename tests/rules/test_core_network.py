"""The native `ip_address` detector (core/src/detectors/network.rs) against the reference on
arbitrary strings, not only on matched values: `normalize` is CPython 3.11's
`str(ipaddress.ip_address(text.strip()))` ported (the same ValueError, the same text), and
`find`, `partial` and `matches_whole` are the reference's.

`TOOLGATE_CORE_CASES` scales the generated strings (default 3000)."""

from __future__ import annotations

import itertools
import random
import sys

from reference.detectors import DETECTORS as REFERENCE
from reference.detectors.network import _ip_normalize, _ip_partial
from test_core_detectors import CASES, generated, reference_find

from toolgate.rules import _core

NAME = "ip_address"
DETECTOR = REFERENCE[NAME]


def outcome(normalize, text: str) -> tuple[str, str]:
    try:
        return ("value", normalize(text))
    except ValueError:
        return ("ValueError", "")


def core_normalize(text: str) -> str:
    return _core.normalize(NAME, text)


# Pieces of addresses and of what breaks them: groups of every length and case, leading
# zeros, octets over 255, '::' and ':::', embedded IPv4, scope ids (with anything in them,
# another '%' too), '/', whitespace Python strips (and some it does not), other scripts' digits.
# Half of the strings use only well-formed pieces, so real addresses are common too.
GROUPS = ("0", "00", "000", "0000", "1", "01", "001", "12", "123", "1234", "a", "F", "ffff", "FFFF", "fFfF", "db8")
BAD_GROUPS = ("00000", "12345", "g", "x", "", "٣", "¹", "1_0", "+1", " 1", "0x1")
OCTETS = ("0", "1", "9", "10", "99", "100", "199", "255")
BAD_OCTETS = ("00", "01", "256", "300", "999", "0000", "1000", "", "a", "٣", "1 ", "+1")
SCOPES = ("eth0", "1", "", "%", "a%b", "é", " ", "lo 0", "/", "\x00", "::1", "1.2.3.4", "\u200b")
SPACES = ("", "", "", " ", "\t", "\n", "\r\n", "\x0b", "\x0c", "\x1c", "\x1f", "\x85", "\xa0", "\u2028",
          "\u3000", "\u200b", "\ufeff", "\x00")


def _pick(rng: random.Random, good: tuple[str, ...], bad: tuple[str, ...], clean: bool) -> str:
    return rng.choice(good if clean or rng.random() < 0.7 else bad)


def _ipv4(rng: random.Random, clean: bool) -> str:
    count = 4 if clean or rng.random() < 0.6 else rng.choice((2, 3, 5))
    return ".".join(_pick(rng, OCTETS, BAD_OCTETS, clean) for _ in range(count))


def _ipv6(rng: random.Random, clean: bool) -> str:
    count = rng.choice((8, 8, 8, 7, 6, 5, 3, 2) if clean else (1, 2, 3, 5, 6, 7, 8, 8, 9, 10))
    groups = [_pick(rng, GROUPS, BAD_GROUPS, clean) if rng.random() < 0.6 else "%x" % rng.randrange(0x10000)
              for _ in range(count)]
    if rng.random() < 0.4:  # zeros, for the '::' compression
        for i in range(len(groups)):
            if rng.random() < 0.5:
                groups[i] = "0"
    if rng.random() < 0.25:  # an embedded IPv4 address instead of the last two groups
        groups[-2:] = [_ipv4(rng, clean)]
    if count < 8 or rng.random() < 0.3:  # one '::' somewhere (or a broken one)
        cut = rng.randrange(len(groups) + 1)
        groups[cut:cut] = [""] if clean or rng.random() < 0.7 else rng.choice(([""], ["", ""], []))
        if cut == 0 or cut == len(groups) - 1:
            groups.insert(cut, "")
    text = ":".join(groups)
    if rng.random() < 0.15:
        text += "%" + (rng.choice(SCOPES[:2]) if clean else rng.choice(SCOPES))
    if not clean and rng.random() < 0.05:
        text += "/" + rng.choice(("64", "", "a"))
    return text


def arbitrary(count: int, seed: int = 14) -> list[str]:
    rng = random.Random(f"{seed}-network")
    out = []
    for _ in range(count):
        kind = rng.random()
        clean = rng.random() < 0.5
        if kind < 0.35:
            text = _ipv4(rng, clean)
        elif kind < 0.85:
            text = _ipv6(rng, clean)
        else:
            text = "".join(rng.choice("0123456789abcdefABCDEFxg:.%/ \u00e9٣") for _ in range(rng.randint(0, 24)))
        if rng.random() < 0.3:
            text = rng.choice(SPACES) + text + rng.choice(SPACES)
        out.append(text)
    return out


def small_strings() -> list[str]:
    """Every string of up to six characters over the characters the parser cares about."""
    return ["".join(chars) for n in range(7) for chars in itertools.product(":0a.1%", repeat=n)]


def test_normalize_and_partial_on_every_small_string():
    differences = []
    for text in small_strings():
        if outcome(core_normalize, text) != outcome(_ip_normalize, text):
            differences.append((text, outcome(core_normalize, text), outcome(_ip_normalize, text)))
        elif _core.partial(NAME, text) != _ip_partial(text):
            differences.append((text, _core.partial(NAME, text), _ip_partial(text)))
    assert differences[:5] == []


def test_normalize_partial_and_whole_values_on_arbitrary_strings():
    differences = []
    accepted = 0
    for text in arbitrary(max(CASES, 3000) * 3):
        expected = outcome(_ip_normalize, text)
        accepted += expected[0] == "value"
        checks = (
            (outcome(core_normalize, text), expected),
            (_core.partial(NAME, text), _ip_partial(text)),
            (_core.matches_whole(NAME, text), DETECTOR.matches_whole(text)),
        )
        differences.extend((text, actual, wanted) for actual, wanted in checks if actual != wanted)
    assert differences[:5] == []
    assert accepted > CASES // 3  # the generator does reach real addresses, and their corner cases


def test_find_on_arbitrary_strings():
    differences = []
    found = 0
    for text in arbitrary(max(CASES, 3000)):
        line = f"ip {text}, then {text[::-1]}"
        expected = reference_find(NAME, line)
        found += len(expected)
        if _core.find(NAME, line) != expected:
            differences.append((line, expected, _core.find(NAME, line)))
    assert differences[:5] == []
    assert found > CASES // 10


def test_generated_strings_give_the_reference_values():
    """test_core_detectors' generated strings, every value's canonical form compared as an
    outcome: a value holding an invisible character (`1.2.3\\u200b.4`) is found but is no
    address, and both sides raise ValueError for it."""
    differences = []
    for text in generated(NAME, CASES):
        expected = reference_find(NAME, text)
        actual = _core.find(NAME, text)
        if actual != expected:
            differences.append((text, expected, actual))
            continue
        for start, end in expected:
            value = text[start:end]
            wanted = outcome(DETECTOR.normalize, value)
            if (outcome(core_normalize, value), _core.partial(NAME, value)) != (wanted, DETECTOR.partial(value)):
                differences.append((value, outcome(core_normalize, value), wanted))
    assert differences[:5] == []


def test_strip_is_python_strip():
    spaces = [chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()]
    others = [chr(c) for c in range(0x3100) if not chr(c).isspace() and not 0xD800 <= c <= 0xDFFF]
    for char in spaces + others:
        for text in (f"{char}10.0.0.1{char}", f"{char}::1", f"fe80::1%a{char}"):
            assert outcome(core_normalize, text) == outcome(_ip_normalize, text), repr(text)


def test_ipv6_forms_as_python_311_prints_them():
    cases = {
        "::ffff:1.2.3.4": "::ffff:102:304",
        "0:0:0:0:0:0:0:0": "::",
        "1:0:0:2:0:0:0:3": "1:0:0:2::3",
        "1:0:0:2:3:0:0:4": "1::2:3:0:0:4",
        "1:2:3:4:5:6:7::": "1:2:3:4:5:6:7:0",
        "2001:DB8::0001": "2001:db8::1",
        "fe80::1%eth0": "fe80::1%eth0",
    }
    for text, printed in cases.items():
        assert _core.normalize(NAME, text) == _ip_normalize(text) == printed


def test_partial_masks_what_python_calls_a_digit():
    # every code point but the surrogates (which UTF-8 cannot carry)
    everything = "".join(chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF)
    for text in (f"1.{everything}", f"a:{everything}", everything.replace(":", "").replace(".", "")):
        assert _core.partial(NAME, text) == _ip_partial(text)
