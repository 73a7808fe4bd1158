"""Classification: which labelled values a call's bodies hold, in one pass over their values.

The native core walks each document (the body, the query; see `rules.walk`) and runs every
detector in use over its distinct strings at once (invisible characters read through, values of
different detectors that overlap resolved: the earliest, then the longest, wins); large integers
go to the detectors that accept numbers. What it finds stays in the core as rows of a
`Classified` (no Python object per value): the engine asks it for labels, counts and paths, and
has it mask the bodies and list the findings. Labels defined by paths (JSONPath, jsonpath-ng)
select whole values here and join the rows; a label with a detector and paths only counts inside
the values its paths select.
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
    """A labelled value found in a document: a span inside a string, or a whole value. (For
    tools and tests: the engine works on the core's rows, `Classifier.classify_call`.)"""

    document: Document
    node: int
    key: Any
    label: Label
    detector: Detector | None = None
    span: Span | None = None  # None: the whole value at (node, key)
    text: str | None = None  # the detected text (for spans and numbers)
    in_key: bool = False  # the span is in the key at (node, key), not in its value

    @property
    def path(self) -> str:
        return self.document.path(self.node, self.key) + ("<key>" if self.in_key else "")

    @property
    def raw(self) -> Any:
        return self.text if self.text is not None else self.document.value_at(self.node, self.key)


class Classifier:
    """Built once per rule set from its labels; `classify_call(body, query)` finds the labelled
    values of a call's documents."""

    def __init__(self, labels: Iterable[Label]) -> None:
        self.labels = tuple(labels)
        self.index = {label.name: i for i, label in enumerate(self.labels)}
        self.by_detector: dict[str, list[Label]] = {}
        for label in self.labels:
            if label.detector:
                self.by_detector.setdefault(label.detector, []).append(label)
        detectors = [DETECTORS[name] for name in self.by_detector]
        self.detectors = tuple(detectors)
        self.names = [label.name for label in self.labels]  # what the core's calls take, once
        self.detector_names = [detector.name for detector in detectors]
        self._scanner = native.Scanner([d.name for d in detectors])
        # per detector of the scanner, the labels (indices) its values get, in file order
        self._labels_of = [[self.index[label.name] for label in self.by_detector[d.name]] for d in detectors]
        self._scoped = frozenset(self.index[label.name] for label in self.labels if label.paths and label.detector)
        self.path_labels = tuple(label for label in self.labels if label.paths and not label.detector)

    def classify_call(self, *documents: Document | None) -> Any:
        """The labelled values of `documents` (None ones skipped), as the core's rows."""
        found = native.Classified(self._scanner, self._labels_of)
        for document in documents:
            if document is None:
                continue
            doc = found.scan(self._scanner, document)
            if self._scoped:
                for label in self._scoped.intersection(found.labels_in(doc)):
                    found.keep_within(doc, label, list(self._locations(document, self.labels[label])))
            for label in self.path_labels:
                slots = []
                for node, key in self._locations(document, label):
                    value = document.value_at(node, key)
                    if value is None or value == "" or (isinstance(value, str) and is_mask_token(value)):
                        continue
                    slots.append((node, key))
                if slots:
                    found.add_wholes(doc, self.index[label.name], slots)
        return found

    def classify(self, document: Document) -> list[Hit]:
        """The labelled values of one document as `Hit`s, in order."""
        found = self.classify_call(document)
        return [
            Hit(document, node, key, self.labels[label], self.detectors[d] if d is not None else None,
                span, text, in_key)
            for node, key, span, d, label, text, in_key in found.rows()
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
