"""A large body is scanned at once: it must find exactly what scanning each string on its own
finds (no value spans two strings, none hides another)."""

from toolgate.rules import Classifier, load_rules_text
from toolgate.rules.detectors import DETECTORS
from toolgate.rules.walk import Document

from test_rules_detectors import NEGATIVE, POSITIVE

LABELS = "labels:\n" + "".join(f"  - {{name: {name}, level: restricted, detector: {name}}}\n" for name in DETECTORS)


def _found(classifier: Classifier, body) -> list[tuple[str, str, str]]:
    hits = classifier.classify(Document(body))
    return sorted((hit.path, hit.label.name, hit.text or "") for hit in hits)


def test_selective_scan_finds_what_each_string_alone_finds():
    classifier = Classifier(load_rules_text(LABELS).labels)
    values = [case[1] for case in POSITIVE + NEGATIVE]
    texts = [f"{prefix}{value}{suffix}" for value in values for prefix, suffix in (("", ""), ("id 7: ", " (2024-01-02)"))]
    body = {f"f{i}": text for i, text in enumerate(texts)}
    assert sum(map(len, texts)) > 4096  # a body, not a field
    alone = sorted(hit for key, text in body.items() for hit in _found(classifier, {key: text}))
    assert _found(classifier, body) == alone
    assert any(label == "phone" for _, label, _ in alone) and any(label == "ip_address" for _, label, _ in alone)


def test_a_deeply_nested_value_is_found_and_located():
    """The core walks and renders paths without recursion: 3,000 levels of lists (deeper than
    Python's recursion limit, which the engine before the core hit here)."""
    body: list = ["123-45-6789"]
    for _ in range(3000):
        body = [body]
    classifier = Classifier(load_rules_text(LABELS).labels)
    hits = classifier.classify(Document(body))
    assert [hit.label.name for hit in hits] == ["us_ssn"]
    assert hits[0].path == "$" + "[0]" * 3001
