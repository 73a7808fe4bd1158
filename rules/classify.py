"""Classification: which labelled values a body holds, in one pass over its decoded values.

All strings of a body (nested JSON decoded, see `rules.walk`) are joined with NUL separators and
each detector in use scans that one text, after a substring prefilter (`Detector.needles`); a
match is mapped back to its string with a binary search. Large integers are offered to the
detectors that accept numbers. Labels defined by paths select whole values.
"""

from __future__ import annotations

import operator
from bisect import bisect_right
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, Iterable

from rules.detectors import DETECTORS, Detector, Span
from rules.masking import is_mask_token
from rules.model import Label
from rules.walk import HOLDER, Document

SEPARATOR = "\x00"  # no detector pattern matches it, so no match spans two strings


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
    _path: str | None = None

    @property
    def path(self) -> str:
        if self._path is None:
            self._path = self.document.path(self.node, self.key)
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
        self.number_detectors = tuple(d for d in detectors if d.numbers)
        self.path_labels = tuple(label for label in self.labels if label.paths and not label.detector)

    def classify(self, document: Document) -> list[Hit]:
        hits = self._scan_strings(document)
        hits.extend(self._scan_numbers(document))
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
        distinct = list(dict.fromkeys(strings))
        text = SEPARATOR.join(distinct)
        found: dict[int, list[tuple[int, int, Detector]]] = {}
        starts: list[int] | None = None
        for detector in self.string_detectors:
            if not detector.could_contain(text):
                continue
            for start, end in detector.find(text):
                if starts is None:  # start of string i+1 in the joined text, at index i
                    starts = list(map(operator.add, accumulate(map(len, distinct)), range(1, len(distinct) + 1)))
                index = bisect_right(starts, start)
                offset = starts[index - 1] if index else 0
                found.setdefault(index, []).append((start - offset, end - offset, detector))
        if not found:
            return []
        spans_of = {distinct[index]: _without_overlaps(spans) for index, spans in found.items()}
        hits = []
        slots = document.string_slots
        for string_index in [i for i, value in enumerate(strings) if value in spans_of]:
            value = strings[string_index]
            node, key = slots[string_index]
            for start, end, detector in spans_of[value]:
                for label in self.by_detector[detector.name]:
                    hits.append(Hit(document, node, key, label, detector, (start, end), value[start:end]))
        return hits

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
