"""Classification: which labelled values a body holds, in one pass over its decoded values.

All distinct strings of a body (nested JSON decoded, see `rules.walk`) are joined with NUL
separators and each detector in use scans that one text, after a substring prefilter
(`Detector.needles`, all of them looked for in one search); a detector whose patterns all have
gates (`Detector.gates`) only scans the strings its gates select, joined the same way. A match
is mapped back to its string with a binary search. Large integers are offered to the detectors
that accept numbers. Labels defined by paths select whole values.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass
from functools import partial
from itertools import accumulate, compress, count
from typing import Any, Iterable

from reference.detectors import DETECTORS, Detector, Span
from reference.masking import is_mask_token
from toolgate.rules.model import Label
from reference.walk import HOLDER, Document

SEPARATOR = "\x00"  # no detector pattern matches it, so no match spans two strings

from reference.invisible import INVISIBLE  # noqa: E402

SELECT_ABOVE = 4096  # characters; in a smaller text, scanning everything costs less than selecting


@dataclass(slots=True)
class Hit:
    """A labelled value found in a document: a span inside a string, or a whole value."""

    document: Document
    node: int
    key: Any
    label: Label
    detector: Detector | None = None
    span: Span | None = None  # None: the whole value at (node, key)
    text: str | None = None  # the detected text (for spans and numbers)
    in_key: bool = False  # the span is in the key at (node, key), not in its value
    _path: str | None = None

    @property
    def path(self) -> str:
        if self._path is None:
            self._path = self.document.path(self.node, self.key) + ("<key>" if self.in_key else "")
        return self._path

    @property
    def raw(self) -> Any:
        return self.text if self.text is not None else self.document.value_at(self.node, self.key)


class Classifier:
    """Built once per rule set from its labels; `classify(document)` lists the labelled values."""

    def __init__(self, labels: Iterable[Label]) -> None:
        self.labels = tuple(labels)
        self.by_detector: dict[str, list[Label]] = {}
        for label in self.labels:
            if label.detector:
                self.by_detector.setdefault(label.detector, []).append(label)
        detectors = [DETECTORS[name] for name in self.by_detector]
        self.string_detectors = tuple(detectors)
        # (detector, needles, the set of its gates when every pattern has one), unpacked once:
        # read on every call. Detectors whose gates are the same share one selected text.
        self._scanners = tuple(
            (d, frozenset(d.needles), frozenset(d.gates) if d.gates and None not in d.gates else frozenset())
            for d in detectors
        )
        self._needles = _Needles(needle for d in detectors for needle in d.needles)
        self.number_detectors = tuple(d for d in detectors if d.numbers)
        self.path_labels = tuple(label for label in self.labels if label.paths and not label.detector)

    def classify(self, document: Document) -> list[Hit]:
        hits = self._scan_strings(document)
        hits.extend(self._scan_numbers(document))
        hits.extend(self._scan_keys(document))
        if any(hit.label.paths for hit in hits):
            hits = self._within_paths(document, hits)
        for label in self.path_labels:
            for node, key in self._locations(document, label):
                value = document.value_at(node, key)
                if value is None or value == "" or (isinstance(value, str) and is_mask_token(value)):
                    continue
                hits.append(Hit(document, node, key, label))
        return hits

    def _within_paths(self, document: Document, hits: list[Hit]) -> list[Hit]:
        """A label with a detector and paths only counts inside the values its paths select."""
        scopes: dict[str, set[tuple[int, Any]]] = {}
        kept = []
        for hit in hits:
            label = hit.label
            if label.paths:
                if label.name not in scopes:
                    scopes[label.name] = set(self._locations(document, label))
                if not any(slot in scopes[label.name] for slot in document.ancestors(hit.node, hit.key)):
                    continue
            kept.append(hit)
        return kept

    def _scan_strings(self, document: Document) -> list[Hit]:
        """Scan each distinct string once (bodies repeat statuses, dates, notes...), in one text."""
        strings = document.strings
        if not strings or not self.string_detectors:
            return []
        spans_of = self._spans(list(dict.fromkeys(strings)))
        if not spans_of:
            return []
        hits = []
        slots = document.string_slots
        # positions of every occurrence of a value with findings, iterated in C
        for string_index in compress(count(), map(spans_of.__contains__, strings)):
            value = strings[string_index]
            node, key = slots[string_index]
            for start, end, detector in spans_of[value]:
                for label in self.by_detector[detector.name]:
                    hits.append(Hit(document, node, key, label, detector, (start, end), value[start:end]))
        return hits

    def _scan_keys(self, document: Document) -> list[Hit]:
        """The values in object keys: each distinct key scanned once, as a string of its own; a
        hit for every member it names (nodes in order, then members)."""
        if not document.key_strings or not self.string_detectors:
            return []
        spans_of = self._spans(document.key_strings)
        hits = []
        for node, key in document.key_slots(set(spans_of)) if spans_of else ():
            for start, end, detector in spans_of[key]:
                for label in self.by_detector[detector.name]:
                    hits.append(Hit(document, node, key, label, detector, (start, end), key[start:end], in_key=True))
        return hits

    def _spans(self, distinct: list[str]) -> dict[str, list[tuple[int, int, Detector]]]:
        """{string: its values' (start, end, detector)} for the distinct strings holding any."""
        positions: dict[int, list[int]] = {}  # strings with invisible characters: visible -> original
        everything = _Joined(distinct)
        if everything.text.count(SEPARATOR) >= len(distinct) or _invisible_besides_separators(everything.text):
            visible = list(distinct)
            for index, value in enumerate(distinct):
                if INVISIBLE.search(value):
                    keep = [i for i, char in enumerate(value) if not INVISIBLE.match(char)]
                    positions[index] = keep
                    visible[index] = "".join(value[i] for i in keep)
            everything = _Joined(visible)
        selections: dict[Any, _Joined] = {}  # detectors with the same gates share the selected text
        chosen_by: dict[Any, set[int]] = {}
        found: dict[int, list[tuple[int, int, Detector]]] = {}
        text = everything.text
        selective = len(text) > SELECT_ABOVE
        present = self._needles.present_in(text)
        for detector, needles, gates in self._scanners:
            if needles and needles.isdisjoint(present):
                continue
            joined = everything
            if selective and gates:
                joined = selections.get(gates) or selections.setdefault(gates, everything.select(gates, chosen_by))
            spans = detector.find(joined.text)
            if not spans:
                continue
            starts, indices = joined.starts, joined.indices  # `joined.locate`, inlined
            for start, end in spans:
                i = bisect_right(starts, start) - 1
                offset = starts[i]
                index = indices[i] if indices is not None else i
                spot = (start - offset, end - offset, detector)
                if index in found:
                    found[index].append(spot)
                else:
                    found[index] = [spot]
        if not found:
            return {}
        for index, keep in positions.items():  # back to positions in the original strings
            if index in found:
                found[index] = [(keep[start], keep[end - 1] + 1, detector) for start, end, detector in found[index]]
        return {distinct[index]: spans if len(spans) == 1 else _without_overlaps(spans) for index, spans in found.items()}

    def _scan_numbers(self, document: Document) -> list[Hit]:
        hits = []
        for detector in self.number_detectors:
            for index, number in enumerate(document.numbers):
                text = str(number)
                if detector.matches_whole(text):
                    node, key = document.number_slots[index]
                    for label in self.by_detector[detector.name]:
                        hits.append(Hit(document, node, key, label, detector, None, text))
        return hits

    @staticmethod
    def _locations(document: Document, label: Label) -> Iterable[tuple[int, Any]]:
        """Slots selected by a label's paths, in the top-level body (not inside embedded JSON)."""
        for path in label.paths:
            if path.descendant_keys is not None:
                for node in document.top_level_dicts():
                    container = document.containers[node]
                    for name in path.descendant_keys:
                        if name in container:
                            yield node, name
                continue
            for container, key in path.locations(document.holder):
                node = HOLDER if container is document.holder else document.node_of(container)
                if node is not None:
                    yield node, key


class _Joined:
    """Strings joined with NUL separators into one text that a regex scans in a single call, and
    the way back from a position in that text to the string it falls in."""

    __slots__ = ("strings", "indices", "text", "_starts")

    def __init__(self, strings: list[str], indices: list[int] | None = None) -> None:
        self.strings = strings
        self.indices = indices  # each string's index among all distinct strings (None: the same)
        self.text = SEPARATOR.join(strings)
        self._starts: list[int] | None = None

    @property
    def starts(self) -> list[int]:
        """Where each string begins in the text, and one past the end (computed when needed)."""
        if self._starts is None:
            self._starts = list(accumulate(map(_ONE_MORE, map(len, self.strings)), initial=0))
        return self._starts

    def locate(self, position: int) -> tuple[int, int]:
        """(index among all distinct strings, start in this text) of the string at `position`."""
        starts = self.starts
        i = bisect_right(starts, position) - 1
        return (self.indices[i] if self.indices is not None else i), starts[i]

    def select(self, gates: Iterable[re.Pattern[str]], chosen_by: dict[Any, set[int]]) -> _Joined:
        """The strings that some gate matches, joined. `chosen_by` remembers, per gate, which
        strings it matched (detectors share gates: one scan serves them all)."""
        chosen: set[int] = set()
        for gate in gates:
            if gate not in chosen_by:
                chosen_by[gate] = self._matched_by(gate)
            chosen |= chosen_by[gate]
        indices = sorted(chosen)
        strings = list(map(self.strings.__getitem__, indices))
        if self.indices is not None:
            indices = list(map(self.indices.__getitem__, indices))
        return _Joined(strings, indices)

    def _matched_by(self, gate: re.Pattern[str]) -> set[int]:
        """The strings holding a match (no gate matches across a separator), found in C: every
        match's start, mapped to its string by a binary search."""
        after = set(map(partial(bisect_right, self.starts), map(_MATCH_START, gate.finditer(self.text))))
        return {i - 1 for i in after}


_ONE_MORE = (1).__add__  # a string's length plus its separator
_MATCH_START = re.Match.start

# INVISIBLE restricted to ASCII, as a bytes.translate table: invisible bytes become 1, the rest
# (the NUL separator too) 0. Most bodies are ASCII, and translating runs in C about 15 times
# faster than a search with INVISIBLE's large character class.
_ASCII_INVISIBLE = bytes(INVISIBLE.match(chr(code)) is not None and code != 0 for code in range(256))


def _invisible_besides_separators(text: str) -> bool:
    """`INVISIBLE.search(text.replace(SEPARATOR, ""))`, fast for ASCII text."""
    if text.isascii():
        return 1 in text.encode("ascii").translate(_ASCII_INVISIBLE)
    return INVISIBLE.search(text.replace(SEPARATOR, "")) is not None


class _Needles:
    """The prefilter of every detector (`Detector.needles`) in one regex search of the text,
    instead of a substring search per needle: most texts hold none of them. Single characters
    (`@`), frequent in some bodies, are looked for on their own."""

    __slots__ = ("characters", "_search", "_prefixes")

    def __init__(self, needles: Iterable[str]) -> None:
        unique = set(needles)
        self.characters = tuple(sorted(needle for needle in unique if len(needle) == 1))
        longer = sorted(unique.difference(self.characters), key=lambda needle: (-len(needle), needle))
        # longest first: at a position, the longest needle found there hides its prefixes
        self._search = re.compile("|".join(map(re.escape, longer))).search if longer else None
        self._prefixes = {needle: frozenset(n for n in longer if needle.startswith(n)) for needle in longer}

    def present_in(self, text: str) -> set[str]:
        """The needles that occur in `text`."""
        present = {character for character in self.characters if character in text}
        if self._search is not None:
            position = 0
            while (match := self._search(text, position)) is not None:
                present |= self._prefixes[match.group()]
                position = match.start() + 1  # needles may overlap
        return present


def _without_overlaps(spans: list[tuple[int, int, Detector]]) -> list[tuple[int, int, Detector]]:
    """Different detectors may claim overlapping text; the earliest, then longest, span wins."""
    if len(spans) == 1:
        return spans
    spans.sort(key=lambda span: (span[0], span[0] - span[1]))
    kept: list[tuple[int, int, Detector]] = []
    for span in spans:
        if not kept or span[0] >= kept[-1][1]:
            kept.append(span)
    return kept
