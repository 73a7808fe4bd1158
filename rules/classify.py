"""Classification: which labelled values a body holds, in one pass over its decoded values.

All distinct strings of a body (nested JSON decoded, see `rules.walk`) go to the native core,
which runs every detector in use over them at once (invisible characters read through, values
of different detectors that overlap resolved: the earliest, then the longest, wins). Large
integers are offered to the detectors that accept numbers. Labels defined by paths select whole
values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from toolgate.rules.core import native
from toolgate.rules.detectors import DETECTORS, Detector, Span
from toolgate.rules.masking import is_mask_token
from toolgate.rules.model import Label
from toolgate.rules.walk import HOLDER, Document


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
        self._scanner = native.Scanner([d.name for d in detectors])
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
        """The core scans each distinct string once (bodies repeat statuses, dates, notes...)."""
        if not self.string_detectors:
            return []
        detectors, by_detector = self.string_detectors, self.by_detector
        return [
            Hit(document, node, key, label, detectors[d], (start, end), text)
            for node, key, start, end, d, text in self._scanner.scan_document(document)
            for label in by_detector[detectors[d].name]
        ]

    def _scan_numbers(self, document: Document) -> list[Hit]:
        if not self.number_detectors:
            return []
        detectors, by_detector = self.string_detectors, self.by_detector
        return [
            Hit(document, node, key, label, detectors[d], None, text)
            for node, key, d, text in self._scanner.scan_numbers(document)
            for label in by_detector[detectors[d].name]
        ]

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
