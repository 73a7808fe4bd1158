"""JSONPath, compiled once at load: label paths (where a labelled value lives) and `when` conditions.

Expressions are parsed with jsonpath-ng's extended syntax. Label paths of the common shapes
(`$.a.b`, `$.a[*].b`, `$.a[0]`, `$..name`) are also turned into a small navigation plan, because
jsonpath-ng's general evaluator is far slower than a dictionary lookup on large bodies; anything
else falls back to jsonpath-ng itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterator

from jsonpath_ng import JSONPath
from jsonpath_ng.ext import parse as _parse
from jsonpath_ng.ext.filter import Expression, Filter
from jsonpath_ng.jsonpath import Child, DatumInContext, Descendants, Fields, Index, Root, This, Wildcard

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")

Step = tuple[str, Any]  # ("keys", (names...)) | ("index", i) | ("any", None)


class PathError(ValueError):
    """A JSONPath expression that does not parse; the message is jsonpath-ng's, made readable."""


def parse_jsonpath(text: object) -> JSONPath:
    if not isinstance(text, str) or not text.strip():
        raise PathError("a JSONPath must be a non-empty string such as $.customers[*].ssn")
    try:
        return _parse(text)
    except Exception as exc:  # jsonpath-ng raises several types (JsonPathParserError, LexerError, ...)
        raise PathError(str(exc).strip() or type(exc).__name__) from None


@dataclass(frozen=True)
class LabelPath:
    """Where a labelled value lives. Evaluate with `locations(holder)` where `holder == [body]`."""

    text: str
    expr: JSONPath = field(repr=False, compare=False)
    descendant_keys: frozenset[str] | None = field(default=None, compare=False)
    steps: tuple[Step, ...] | None = field(default=None, compare=False)

    def locations(self, holder: list[Any]) -> Iterator[tuple[Any, Any]]:
        """(container, key) of every value the path selects; the body itself is (holder, 0)."""
        if self.steps is not None:
            yield from _navigate(holder, self.steps)
            return
        for datum in self.expr.find(holder[0]):
            yield _container_and_key(datum, holder)


def compile_label_path(text: object) -> LabelPath:
    expr = parse_jsonpath(text)
    assert isinstance(text, str)
    if isinstance(expr, Descendants) and isinstance(expr.left, Root) and type(expr.right) is Fields:
        return LabelPath(text, expr, descendant_keys=frozenset(expr.right.fields))
    return LabelPath(text, expr, steps=_plan(expr))


def _plan(expr: JSONPath) -> tuple[Step, ...] | None:
    """A navigation plan for Root/Child/Fields/Index/Wildcard chains, or None to use jsonpath-ng."""
    steps: list[Step] = []
    while isinstance(expr, Child):
        right = expr.right
        if type(right) is Fields and "*" not in right.fields:
            steps.append(("keys", tuple(right.fields)))
        elif type(right) is Index and len(right.indices) == 1:
            steps.append(("index", right.indices[0]))
        elif type(right) is Wildcard:
            steps.append(("any", None))
        else:
            return None
        expr = expr.left
    if not isinstance(expr, Root):
        return None
    return tuple(reversed(steps))


def _navigate(holder: list[Any], steps: tuple[Step, ...]) -> Iterator[tuple[Any, Any]]:
    current: list[tuple[Any, Any]] = [(holder, 0)]
    for kind, arg in steps:
        following: list[tuple[Any, Any]] = []
        for container, key in current:
            value = container[key]
            if kind == "keys":
                if isinstance(value, dict):
                    following.extend((value, name) for name in arg if name in value)
            elif kind == "index":
                if isinstance(value, list) and -len(value) <= arg < len(value):
                    following.append((value, arg % len(value)))
            elif isinstance(value, dict):
                following.extend((value, name) for name in value)
            elif isinstance(value, list):
                following.extend((value, i) for i in range(len(value)))
        current = following
    yield from current


def _container_and_key(datum: DatumInContext, holder: list[Any]) -> tuple[Any, Any]:
    if datum.context is None:
        return holder, 0
    path = datum.path
    if isinstance(path, Fields):
        return datum.context.value, path.fields[0]
    if isinstance(path, Index):
        return datum.context.value, path.indices[0] % len(datum.context.value)
    return holder, 0  # a shape we cannot edit in place: treat it as the whole body (fails closed)


@dataclass(frozen=True)
class WhenCondition:
    """A `when` expression: true when it finds something in the call's arguments (or result).

    A filter applied to the root, as in `$[?(@.limit > 100)]`, tests the arguments object itself:
    jsonpath-ng (following RFC 9535) would apply it to the object's members instead, which is never
    what a rule author means.
    """

    text: str
    expr: JSONPath = field(repr=False, compare=False)
    tests_root: bool = field(default=False, compare=False)

    def first_match(self, arguments: Any) -> str | None:
        """A JSONPath-like location of the first thing found, or None when nothing is."""
        if self.tests_root:
            found = self.expr.find([arguments])
            return _filter_field(self.expr.right) if found else None
        found = self.expr.find(arguments)
        return render_jsonpath(found[0].full_path) if found else None


def compile_when(text: object) -> WhenCondition:
    expr = parse_jsonpath(text)
    assert isinstance(text, str)
    tests_root = isinstance(expr, Child) and isinstance(expr.left, Root) and isinstance(expr.right, Filter)
    return WhenCondition(text, expr, tests_root)


def _filter_field(filter_: Filter) -> str:
    """`$[?(@.limit > 100)]` → `$.limit`: the field a root filter looked at, for error reports."""
    for expression in filter_.expressions:
        target = getattr(expression, "target", None) if isinstance(expression, Expression) else None
        if isinstance(target, Child) and isinstance(target.left, This) and type(target.right) is Fields:
            return "$" + format_key(target.right.fields[0])
    return "$"


def render_jsonpath(path: JSONPath) -> str:
    """jsonpath-ng's `customers.[0].ssn` → `$.customers[0].ssn`."""
    parts: list[str] = []

    def walk(node: JSONPath) -> None:
        if isinstance(node, Child):
            walk(node.left)
            walk(node.right)
        elif isinstance(node, Fields):
            parts.append(format_key(node.fields[0]))
        elif isinstance(node, Index):
            parts.append(format_key(node.indices[0]))
        elif not isinstance(node, (Root, This)):
            parts.append(f".{node}")

    walk(path)
    return "$" + "".join(parts)


def format_key(key: Any) -> str:
    """One step of a JSONPath-like location: `.name`, `[3]` or `['odd key']`."""
    if isinstance(key, int):
        return f"[{key}]"
    if _IDENTIFIER.fullmatch(key):
        return f".{key}"
    return "['" + str(key).replace("\\", "\\\\").replace("'", "\\'") + "']"
