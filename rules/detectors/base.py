"""The detector shape and its registry.

A detector is a small unit in the style of Presidio's recognizers and detect-secrets' plugins: a
pattern proposes candidates and a validator (Luhn, mod-97, SSN area rules, base64 that decodes to
JSON, ...) decides, so a pattern alone never labels a value. Both live in the native core
(`core/src/detectors`, see `toolgate.rules.core`); this side describes each detector to the rest
of the library and to people: its name, what it finds, examples it must find and look-alikes it
must reject (the tests hold the core to both), and what event streams need to know about it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from toolgate.rules.core import native

Span = tuple[int, int]


@dataclass(frozen=True)
class Detector:
    """One kind of sensitive value, found by the core's detector of the same name.

    `needles`: substrings one of which every value holds (empty: no such prefilter); event
    streams use them to tell text that may hold the start of a multi-line value. `numbers`: the
    detector also sees JSON integers (a card number can be one). `spans_lines`: a match can hold
    a line break (a PEM block; the others never do). `examples` are values it must find and
    `counter_examples` look-alikes it must reject, each alone and inside text.
    """

    name: str
    description: str
    examples: tuple[str, ...] = field(repr=False)
    counter_examples: tuple[str, ...] = field(repr=False)
    needles: tuple[str, ...] = ()
    numbers: bool = False
    spans_lines: bool = False

    def find(self, text: str) -> list[Span]:
        """Spans of validated values in `text`, as the classifier finds them (invisible
        characters are read through; positions are those of `text`)."""
        return native.find(self.name, text)

    def matches_whole(self, text: str) -> bool:
        """True when all of `text` is one valid value (used for JSON numbers)."""
        return native.matches_whole(self.name, text)

    def normalize(self, text: str) -> str:
        """The canonical text fingerprints and hash tokens are computed from (`4242 4242 4242
        4242` and `4242424242424242` get the same token). ValueError: not such a value."""
        return native.normalize(self.name, text)

    def partial(self, text: str) -> str:
        """The detector's own partial mask (`***-**-6789`, `j***@example.com`)."""
        return native.partial(self.name, text)

    def could_contain(self, text: str) -> bool:
        """The cheap prefilter: False when `text` cannot hold a value of this kind."""
        return not self.needles or any(needle in text for needle in self.needles)


DETECTORS: dict[str, Detector] = {}


def register(detector: Detector) -> Detector:
    """Add a detector to the registry under its name (names are what rule files refer to)."""
    if detector.name in DETECTORS:
        raise ValueError(f"detector {detector.name!r} registered twice")
    DETECTORS[detector.name] = detector
    return detector
