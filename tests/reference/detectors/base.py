"""The detector shape and its registry.

A detector is a small unit in the style of Presidio's recognizers and detect-secrets' plugins: a
regular expression proposes candidates and a validator (Luhn, mod-97, SSN area rules, base64 that
decodes to JSON, ...) decides, so a pattern alone never labels a value. The classifier runs every
detector over all the strings of a body joined into one text (see `rules.classify`), so patterns
must never match the NUL separator and should anchor with look-behinds, which keeps scanning linear.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable

Span = tuple[int, int]


_STARS = {code: "*" for code in range(0x30, 0x7B) if chr(code).isalnum()}
_STAR_DIGITS = {code: "*" for code in range(0x30, 0x3A)}


def keep_last(text: str, keep: int = 4, maskable: Callable[[str], bool] = str.isalnum) -> str:
    """Replace maskable characters with `*` except the last `keep` of them; separators stay."""
    cut = len(text)
    while keep > 0 and cut > 0:  # find where the visible tail starts
        cut -= 1
        if maskable(text[cut]):
            keep -= 1
    if keep > 0:
        cut = 0
    head = text[:cut]
    if maskable is str.isdigit:
        head = head.translate(_STAR_DIGITS)
    elif maskable is str.isalnum and head.isascii():
        head = head.translate(_STARS)
    else:
        head = "".join("*" if maskable(char) else char for char in head)
    return head + text[cut:]


def keep_last_digits(text: str) -> str:
    """`4242 4242 4242 4242` → `**** **** **** 4242`; `123-45-6789` → `***-**-6789`."""
    return keep_last(text, 4, str.isdigit)


_NOT_DIGIT = re.compile(r"[^0-9]")


def digits_only(text: str) -> str:
    return _NOT_DIGIT.sub("", text)


def shannon_entropy(text: str) -> float:
    """Bits per character; random tokens score high, placeholders like `xxxx...` score near zero."""
    if not text:
        return 0.0
    length = len(text)
    return -sum(count / length * math.log2(count / length) for count in Counter(text).values())


@dataclass(frozen=True)
class Detector:
    """One kind of sensitive value: its `patterns` propose candidates, `validate` decides.

    `needles` is a cheap prefilter: when set, a text containing none of them cannot hold a match and
    is not scanned. `gates` (one per pattern, optional) are fast regexes that every string holding
    a match of the pattern also matches: the pattern, slower to scan, is only tried where its gate
    matched (when every pattern has a gate, the classifier scans only the strings the gates select).
    `numbers` makes the detector also see JSON integers (a card number can be one).
    `normalize` gives the canonical form that fingerprints and hash tokens are computed from, so
    `4242 4242 4242 4242` and `4242424242424242` get the same token. `partial` is the detector's
    own partial mask. `spans_lines`: a match can hold a line break (the others never do).
    `examples` are values it must find and `counter_examples` look-alikes it must reject (each
    alone and inside text); every detector declares both, and the tests hold it to them.
    """

    name: str
    patterns: tuple[re.Pattern[str], ...]
    validate: Callable[[str], bool]
    normalize: Callable[[str], str] = str.strip
    partial: Callable[[str], str] = keep_last
    needles: tuple[str, ...] = ()
    gates: tuple[re.Pattern[str] | None, ...] = ()
    numbers: bool = False
    # Whether a match can hold a line break (a PEM block); event streams release held text at
    # line breaks only when no such detector's needle is in it (see `rules.protocols.streams`).
    spans_lines: bool = False
    description: str = ""
    examples: tuple[str, ...] = field(default=(), repr=False)
    counter_examples: tuple[str, ...] = field(default=(), repr=False)
    # (pattern, gate or None) pairs, zipped once: `find` runs for every detector on every call
    _gated: tuple[tuple[re.Pattern[str], re.Pattern[str] | None], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        gates = self.gates or (None,) * len(self.patterns)
        object.__setattr__(self, "_gated", tuple(zip(self.patterns, gates)))

    def find(self, text: str) -> Iterable[Span]:
        """Spans of validated values in `text`. A rejected candidate is retried one character on,
        so a greedy look-alike (`1234 4242 4242 4242 4242`) cannot hide a real value inside it."""
        patterns = [pattern for pattern, gate in self._gated if gate is None or gate.search(text)]
        if len(patterns) == 1:
            return self._find(patterns[0], text)
        spans = sorted((span for pattern in patterns for span in self._find(pattern, text)), key=lambda s: (s[0], -s[1]))
        found = []
        end = -1
        for span in spans:  # one value matched by two patterns (IPv4 inside ::ffff:10.0.0.1) counts once
            if span[0] >= end:
                found.append(span)
                end = span[1]
        return found

    def _find(self, pattern: re.Pattern[str], text: str) -> list[Span]:
        validate = self.validate
        found = []
        position = 0
        # Candidates usually validate: take them from `finditer` (cheaper than one `search`
        # call each), which resumes where the last one ended, as the loop below does after a
        # valid value. The first rejected candidate hands over to the loop, which retries there.
        for match in pattern.finditer(text):
            start, end = match.span()
            if end == start or not validate(match.group()):
                position = start
                break
            found.append((start, end))
        else:
            return found
        search = pattern.search
        while (match := search(text, position)) is not None:
            start, end = match.span()
            if validate(match.group()):
                found.append((start, end))
                position = end if end > start else start + 1
            else:
                position = start + 1
        return found

    def matches_whole(self, text: str) -> bool:
        """True when all of `text` is one valid value (used for JSON numbers)."""
        return any(pattern.fullmatch(text) for pattern in self.patterns) and self.validate(text)

    def could_contain(self, text: str) -> bool:
        """The cheap prefilter: False when `text` cannot hold a value of this kind."""
        return not self.needles or any(needle in text for needle in self.needles)


# Every value the digit-based detectors accept (card numbers, SSNs, phone numbers, IPv4
# addresses) holds a run of at least seven digits and separators that starts and ends with a digit.
# One scan for such runs selects the few strings worth the slower patterns: most digits in a body
# belong to ids, dates and amounts, where every digit would otherwise start a full pattern attempt.
NUMBER_RUN = re.compile(r"[0-9][0-9 ().-]{5,}[0-9]", re.ASCII)

DETECTORS: dict[str, Detector] = {}


def register(detector: Detector) -> Detector:
    """Add a detector to the registry under its name (names are what rule files refer to)."""
    if detector.name in DETECTORS:
        raise ValueError(f"detector {detector.name!r} registered twice")
    DETECTORS[detector.name] = detector
    return detector


def compile_patterns(*patterns: str) -> tuple[re.Pattern[str], ...]:
    """All detector patterns are ASCII-only: `[0-9]` must not match other scripts' digits.

    For speed, a pattern starts with a character class and checks what precedes it with a
    two-character look-behind (`[0-9](?<![0-9-].)` rather than `(?<![0-9-])[0-9]`): the regex
    engine then skips every position whose character cannot start a match.
    """
    return tuple(re.compile(pattern, re.ASCII) for pattern in patterns)
