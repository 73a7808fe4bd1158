"""Mask styles, keyed fingerprints, and rebuilding a body with its masked values.

- `redact`: `[REDACTED:ssn]`
- `partial`: the detector's own partial form (`***-**-6789`, `************4242`, `j***@example.com`)
- `hash`: `tok_ssn_3f9a1c2b5d7e`, the first 12 hex digits of the keyed fingerprint, so the same
  value under the same key always gives the same token and an agent can still join records
- `remove`: the field is deleted from its object or array

Masked output is never masked again: tokens are not detected (no detector matches `*`, `[` or a
12-digit hex run), values that already are tokens are skipped, and partial forms are fixed points.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Iterable

from reference.detectors import Detector
from reference.detectors.base import keep_last
from reference.detectors.identity import email_partial
from reference.invisible import INVISIBLE
from reference.walk import DECODED_JSON, HOLDER, Document

REMOVE: Any = type("Remove", (), {"__repr__": lambda self: "REMOVE"})()
TOKEN_HEX = 12
_TOKEN = re.compile(r"\[REDACTED:[A-Za-z0-9_.-]+\]|tok_[A-Za-z0-9_.-]+_[0-9a-f]{%d}" % TOKEN_HEX)
_TOKEN_STARTS = ("[REDACTED:", "tok_")
_NUMBER_LIKE = re.compile(r"\+?[0-9][0-9 ().-]*")


def is_mask_token(text: str) -> bool:
    """True for `[REDACTED:x]` and `tok_x_<hex>`: values that masking already produced."""
    return text.startswith(_TOKEN_STARTS) and _TOKEN.fullmatch(text) is not None  # most text starts otherwise


def fingerprint(normalized: str, key: bytes) -> str:
    """Keyed HMAC-SHA256 (hex) of a normalized value: what is stored instead of the value."""
    inner_pad, outer_pad = _pads(key)
    inner = inner_pad.copy()
    inner.update(normalized.encode("utf-8"))
    outer = outer_pad.copy()
    outer.update(inner.digest())
    return outer.hexdigest()


_PADS: dict[bytes, tuple[Any, Any]] = {}
_MAX_KEYS = 16  # a process uses one or two mask keys; the bound only guards against misuse


def _pads(key: bytes) -> tuple[Any, Any]:
    """SHA-256 states already fed with the key's inner and outer pads (RFC 2104). Computing them
    once per key instead of once per value makes a fingerprint three times cheaper: a large body
    has a thousand of them."""
    pads = _PADS.get(key) if type(key) is bytes else None
    if pads is None:
        block = bytes(key)
        if len(block) > hashlib.sha256().block_size:
            block = hashlib.sha256(block).digest()
        block = block.ljust(hashlib.sha256().block_size, b"\0")
        pads = hashlib.sha256(bytes(b ^ 0x36 for b in block)), hashlib.sha256(bytes(b ^ 0x5C for b in block))
        if type(key) is bytes:
            if len(_PADS) >= _MAX_KEYS:
                _PADS.clear()
            _PADS[key] = pads
    return pads


def hash_token(label: str, normalized: str, key: bytes) -> str:
    return f"tok_{label}_{fingerprint(normalized, key)[:TOKEN_HEX]}"


class Fingerprints:
    """The fingerprints of one call's values, each computed once: bodies repeat values (a card on
    every order), and a value that is hash-masked is fingerprinted again for its finding."""

    __slots__ = ("key", "_known")

    def __init__(self, key: bytes) -> None:
        self.key = key
        self._known: dict[Any, str] = {}

    def of(self, value: Any, detector: Detector | None) -> str:
        """`fingerprint(normalize(value, detector), key)`, remembered for strings and numbers."""
        if not isinstance(value, (str, int, float)):
            return fingerprint(normalize(value, detector), self.key)
        memo = (detector.name if detector is not None else None, type(value), value)
        known = self._known.get(memo)
        if known is None:
            known = self._known[memo] = fingerprint(normalize(value, detector), self.key)
        return known


def redact_token(label: str) -> str:
    return f"[REDACTED:{label}]"


def normalize(value: Any, detector: Detector | None = None) -> str:
    """The canonical text a value is fingerprinted and hashed from.

    A detector knows its own form (digits only for cards and SSNs, lower case for emails). A value
    labelled by path gets the generic form: trimmed, digits only when it is written like a number,
    lower case when it holds an `@`; containers become canonical JSON.
    """
    if detector is not None:  # as the detector read it: invisible characters taken out
        return detector.normalize(INVISIBLE.sub("", _number_text(value)))
    if isinstance(value, str):
        text = value.strip()
        if _NUMBER_LIKE.fullmatch(text):
            return "".join(char for char in text if char.isdigit())
        return text.lower() if "@" in text else text
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def candidate_fingerprints(value: str, key: bytes) -> set[str]:
    """Every fingerprint `value` could have been recorded under (for `sessions find-value`)."""
    from reference.detectors import DETECTORS

    forms = {normalize(value)}
    for detector in DETECTORS.values():
        try:
            forms.add(detector.normalize(value))
        except ValueError:
            pass
    return {fingerprint(form, key) for form in forms}


def generic_partial(value: Any) -> str:
    """Partial form of a value labelled by path: emails keep their first letter and domain;
    other text keeps its last four letters or digits when it has at least eight."""
    text = value if isinstance(value, str) else str(value)
    if "@" in text:
        return email_partial(text)
    maskable = sum(1 for char in text if char.isalnum() or char == "*")
    return keep_last(text, 4 if maskable >= 8 else 0)


def mask_whole(value: Any, style: str, label: str, key: bytes | Fingerprints, detector: Detector | None = None) -> Any:
    """The replacement for a whole value (a field, an array item, a card in a JSON number).
    `key` may be the call's `Fingerprints`, which shares hash computations with the findings."""
    if isinstance(value, str) and is_mask_token(value):
        return value
    if style == "remove":
        return REMOVE
    if style == "hash":
        if isinstance(key, Fingerprints):
            return f"tok_{label}_{key.of(value, detector)[:TOKEN_HEX]}"
        return hash_token(label, normalize(value, detector), key)
    if style == "partial" and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return detector.partial(_number_text(value)) if detector is not None else generic_partial(value)
    return redact_token(label)


def _number_text(value: Any) -> str:
    """A value as a detector reads it: `4.111111111111111e15` is the card `4111111111111111`
    (see `rules.walk`), not `4111111111111111.0`."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def mask_spans(text: str, spans: list[tuple[int, int, str, str, Detector | None]], key: bytes | Fingerprints) -> Any:
    """`text` with each (start, end, style, label, detector) span replaced; REMOVE if any removes."""
    if len(spans) == 1:  # the usual case: one value in a field
        start, end, style, label, detector = spans[0]
        if style == "remove":
            return REMOVE
        return text[:start] + mask_whole(text[start:end], style, label, key, detector) + text[end:]
    if any(style == "remove" for _, _, style, _, _ in spans):
        return REMOVE
    out = []
    position = 0
    for start, end, style, label, detector in sorted(spans, key=lambda span: span[0]):
        if start < position:  # overlapping spans are resolved at detection; be safe anyway
            continue
        out.append(text[position:start])
        out.append(mask_whole(text[start:end], style, label, key, detector))
        position = end
    out.append(text[position:])
    return "".join(out)


Changes = dict[int, dict[Any, Any]]  # {node: {key: new value, REMOVE or a copied container}}


def apply_edits(
    document: Document,
    edits: dict[tuple[int, Any], Any],
    changes_out: Changes | None = None,
    renames: dict[tuple[int, Any], Any] | None = None,
) -> Any:
    """The document's body with `edits` ({(node, key): new value or REMOVE}) applied, and the
    keys of `renames` ({(node, key): new name or REMOVE}) renamed in their objects, which keep
    their order (REMOVE removes the member).

    The input is never changed: only the containers on the way from a changed value to the root
    are copied (children before parents: a node's index is always above its parent's), and
    embedded JSON strings are re-encoded once their content is masked. The body itself cannot be
    removed; it is redacted instead. `changes_out` receives what was changed in each copied
    container (the copies of its children included), for `reapply_edits`.
    """
    if not edits and not renames:
        return document.holder[0]
    by_node: Changes = {}
    for (node, key), value in edits.items():
        changes = by_node.get(node)
        if changes is None:
            by_node[node] = {key: value}
        else:
            changes[key] = value
    for node, _ in renames or ():
        by_node.setdefault(node, {})
    parents = document.parents
    for node in list(by_node):  # every container on the way to the root gets a copy
        while node != HOLDER:
            node = parents[node]
            if node in by_node:
                break
            by_node[node] = {}
    if changes_out is not None:
        changes_out.update(by_node)
    return _rebuild(document, by_node, edits, renames)


def reapply_edits(
    document: Document, edits: dict[tuple[int, Any], Any], earlier: Changes, slots: Iterable[tuple[int, Any]]
) -> Any:
    """`apply_edits(document, edits)` when `edits` differ from those of an earlier call (whose
    `changes_out` is `earlier`) only at `slots`: only the containers on the way from those slots
    to the root are copied again, the others are shared with the earlier result. (The record
    version of a body differs from the forwarded one in a few values.)"""
    by_node: Changes = {}
    parents = document.parents
    for node, key in slots:
        changes = by_node.get(node)
        if changes is None:
            changes = by_node[node] = dict(earlier.get(node, ()))
            ancestor = node
            while ancestor != HOLDER:
                ancestor = parents[ancestor]
                if ancestor in by_node:
                    break
                by_node[ancestor] = dict(earlier.get(ancestor, ()))
        if (node, key) in edits:
            changes[key] = edits[(node, key)]
        else:
            changes.pop(key, None)
    return _rebuild(document, by_node, edits)


def _rebuild(
    document: Document, by_node: Changes, edits: dict[tuple[int, Any], Any], renames: dict[tuple[int, Any], Any] | None = None
) -> Any:
    """Copy each container of `by_node` with its changes, children first, up to the body."""
    containers, parents, keys, kinds = document.containers, document.parents, document.keys, document.kinds
    for node in sorted(by_node, reverse=True):
        changes = by_node[node]
        if node == HOLDER:
            new = changes[0]
            return new if new is not REMOVE else redact_token("body")
        container = containers[node]
        if renames and type(container) is dict and any((node, key) in renames for key in container):
            copy = {}
            for key, value in container.items():
                name = renames.get((node, key), key)
                value = changes.get(key, value)
                if name is not REMOVE and value is not REMOVE:
                    copy[name] = value
            replacement = json.dumps(copy, ensure_ascii=False) if kinds[node] == DECODED_JSON else copy
            parent, key = parents[node], keys[node]
            if (parent, key) not in edits:
                by_node[parent][key] = replacement
            continue
        copy = dict(container) if type(container) is dict else list(container)
        removed = []
        for key, value in changes.items():
            if value is REMOVE:
                removed.append(key)
            else:
                copy[key] = value
        if removed:
            if type(copy) is dict:
                for key in removed:
                    del copy[key]
            else:
                for key in sorted(removed, reverse=True):
                    del copy[key]
        replacement = json.dumps(copy, ensure_ascii=False) if kinds[node] == DECODED_JSON else copy
        parent, key = parents[node], keys[node]
        if (parent, key) not in edits:  # a mask of the whole container wins
            by_node[parent][key] = replacement
    raise AssertionError("the holder node is always reached")
