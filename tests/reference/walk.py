"""Flatten a decoded body into the values detectors look at, remembering where each one lives.

One iterative pass over dicts and lists collects every string and every integer large enough to
be a card number, plus a table of containers (parent, key, kind), so that a finding's location
is rendered as `$.customers[0].ssn` only when it is needed, and masking can copy just the
containers on the way to a changed value instead of the whole body. A string that holds a JSON
object or array is decoded and walked too (its items render as `$.payload<json>.ssn`); the masking
step re-encodes it. The distinct object keys are collected too (`key_strings`): a key can hold a
labelled value (`{"by_email": {"jane@example.com": ...}}`); a key renamed for the record
(`renamed`) is rendered by its new name in every path through it.
"""

from __future__ import annotations

import json
from typing import Any

from toolgate.rules.jsonpaths import format_key

HOLDER = 0  # node 0 is a one-item list holding the body, so the body itself has a (node, key): (0, 0)
PLAIN, DECODED_JSON = 0, 1
SMALLEST_CARD = 10**12  # 13 digits; smaller integers cannot be card numbers
MAX_EMBEDDED_JSON = 8  # JSON inside a string inside JSON...: deeper levels are treated as text


class Document:
    """A body flattened for classification. Nodes are containers; leaves are (node, key) slots."""

    __slots__ = (
        "root_name", "holder", "containers", "parents", "keys", "kinds", "embedded",
        "strings", "string_slots", "numbers", "number_slots", "key_strings", "renamed", "_node_of", "_node_paths",
        "_key_texts",
    )  # fmt: skip

    def __init__(self, value: Any, root_name: str = "$", decode_embedded: bool = True, min_length: int = 3) -> None:
        self.root_name = root_name
        self.holder = [value]
        self.containers: list[Any] = [self.holder]
        self.parents: list[int] = [-1]
        self.keys: list[Any] = [None]  # a node's index is always above its parent's
        self.kinds: list[int] = [PLAIN]
        self.embedded: list[int] = [0]  # how many JSON-in-string levels deep a node is
        self.strings: list[str] = []
        self.string_slots: list[tuple[int, Any]] = []
        self.numbers: list[int] = []
        self.number_slots: list[tuple[int, Any]] = []
        self.key_strings: list[str] = []  # distinct object keys of at least `min_length`, first seen first
        self.renamed: dict[tuple[int, Any], str] = {}  # (node, key): the key's name in paths (see `rename_keys`)
        self._node_of: dict[int, int] | None = None
        self._node_paths: dict[int, str] = {}
        self._key_texts: dict[Any, str] = {}
        self._walk(decode_embedded, min_length)

    def _add_node(self, container: Any, parent: int, key: Any, kind: int) -> int:
        self.containers.append(container)
        self.parents.append(parent)
        self.keys.append(key)
        self.kinds.append(kind)
        self.embedded.append(self.embedded[parent] + (kind == DECODED_JSON))
        return len(self.containers) - 1

    def _walk(self, decode_embedded: bool, min_length: int) -> None:
        # The hot loop of classification: locals only (the appends of strings bound once), one
        # type() per value, no method calls except to open embedded JSON.
        add_string, add_string_slot = self.strings.append, self.string_slots.append
        numbers, number_slots = self.numbers, self.number_slots
        containers, parents, keys, kinds, embedded = (
            self.containers, self.parents, self.keys, self.kinds, self.embedded,
        )  # fmt: skip
        keys_seen: set[Any] = set()
        add_key = self.key_strings.append
        pending = [HOLDER]
        while pending:
            node = pending.pop()
            container = containers[node]
            if type(container) is dict:
                for key in container:
                    if key not in keys_seen:
                        keys_seen.add(key)
                        if type(key) is str and len(key) >= min_length:
                            add_key(key)
            for key, value in container.items() if type(container) is dict else enumerate(container):
                kind = type(value)
                if kind is str:
                    if len(value) < min_length:
                        continue
                    if decode_embedded and value[0] in "[{ \n\t\r":
                        decoded = self._embedded_json(value, node)
                        if decoded is not None:
                            pending.append(self._add_node(decoded, node, key, DECODED_JSON))
                            continue
                    add_string(value)
                    add_string_slot((node, key))
                elif kind is dict or kind is list:
                    if value:
                        pending.append(len(containers))
                        containers.append(value)
                        parents.append(node)
                        keys.append(key)
                        kinds.append(PLAIN)
                        embedded.append(embedded[node])
                elif kind is int and value >= SMALLEST_CARD:
                    numbers.append(value)
                    number_slots.append((node, key))
                elif kind is float and SMALLEST_CARD <= value < 1e19 and value.is_integer():
                    # `4.111111111111111e15` is the integer a backend reads: the same card.
                    numbers.append(int(value))
                    number_slots.append((node, key))

    def _embedded_json(self, text: str, node: int) -> Any:
        """The object or array a string holds, or None when it is just text."""
        if self.embedded[node] >= MAX_EMBEDDED_JSON:
            return None
        stripped = text.strip()
        if not stripped or stripped[0] not in "[{" or stripped[-1] not in "]}":
            return None
        try:
            decoded = json.loads(stripped)
        except (ValueError, RecursionError):
            return None
        return decoded if isinstance(decoded, (dict, list)) and decoded else None

    # -- looking things up -------------------------------------------------------------------

    def value_at(self, node: int, key: Any) -> Any:
        return self.containers[node][key]

    def key_slots(self, keys: set[str]) -> list[tuple[int, str]]:
        """Every (node, key) where one of `keys` names a member: nodes in order, then members."""
        return [
            (node, key)
            for node, container in enumerate(self.containers)
            if type(container) is dict
            for key in container
            if type(key) is str and key in keys
        ]

    def rename_keys(self, renamed: dict[tuple[int, Any], str]) -> None:
        """Render the keys at these (node, key) slots by their new names from now on."""
        self.renamed.update(renamed)
        self._node_paths.clear()

    def node_of(self, container: Any) -> int | None:
        """The node of a container object of the top-level body (for JSONPath results)."""
        if self._node_of is None:
            self._node_of = {id(c): n for n, c in enumerate(self.containers) if self.embedded[n] == 0}
        return self._node_of.get(id(container))

    def top_level_dicts(self) -> list[int]:
        return [n for n, c in enumerate(self.containers) if type(c) is dict and self.embedded[n] == 0]

    def ancestors(self, node: int, key: Any):
        """The slot itself and every enclosing slot, innermost first."""
        yield node, key
        while node > HOLDER:
            node, key = self.parents[node], self.keys[node]
            yield node, key

    def path(self, node: int, key: Any) -> str:
        """A JSONPath-like location: `$.customers[0].ssn`, `$.args<json>.card`, `?email`."""
        if node == HOLDER:
            return self.root_name
        prefix = self._node_paths.get(node)
        if prefix is None:
            prefix = self._node_path(node)
        return prefix + self._key_text(key, prefix, self.renamed.get((node, key)) if self.renamed else None)

    def _key_text(self, key: Any, prefix: str, renamed: str | None = None) -> str:
        if renamed is not None:
            text = format_key(renamed)
            return text[1:] if prefix == "?" and text.startswith(".") else text
        if type(key) is int:
            return f"[{key}]"  # format_key, for the list items of a large body
        text = self._key_texts.get(key) if type(key) is str else None
        if text is None:
            text = format_key(key)
            if type(key) is str:
                self._key_texts[key] = text  # field names repeat in every record
        return text[1:] if prefix == "?" and text.startswith(".") else text

    def _node_path(self, node: int) -> str:
        """The path of a container node (remembered: its items share it)."""
        parent, key, kind = self.parents[node], self.keys[node], self.kinds[node]
        suffix = "<json>" if kind == DECODED_JSON else ""
        if parent == HOLDER:
            path = self.root_name + suffix
        else:
            prefix = self._node_paths.get(parent)
            if prefix is None:
                prefix = self._node_path(parent)
            renamed = self.renamed.get((parent, key)) if self.renamed else None
            path = prefix + self._key_text(key, prefix, renamed) + suffix
        self._node_paths[node] = path
        return path
