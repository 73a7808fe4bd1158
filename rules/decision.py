"""What goes into an evaluation (Call) and what comes out (Decision, its Findings and RuleMatches)."""

from __future__ import annotations

import dataclasses
import datetime
from dataclasses import asdict, dataclass
from functools import cached_property
from collections.abc import Sequence
from typing import Any, Callable, Mapping, NamedTuple, overload

from toolgate.rules.core import native
from toolgate.rules.durations import format_duration


@dataclass(frozen=True)
class Call:
    """One direction of a function call, as the rule engine sees it.

    `body` is the decoded body of this direction (JSON as Python values, a form as a dict, plain
    text as a str). `query` holds the query parameters (also accepted inside `path`). `function`
    is the tool name when the protocol names it (MCP, chat completions); for REST leave it None
    and the catalog names the call. `arguments` is what `when` conditions see; when None it is
    derived: for a REST request, the query parameters merged with the body; otherwise the body.
    `now` is the time access reviews are checked against (default: the current UTC time).
    `content` marks the text of a prompt or a completion (`message.user`...): not a function
    call, so the catalog (`unknown_function`, access grants) does not apply to it.
    """

    direction: str = "request"
    protocol: str = "rest"
    function: str | None = None
    method: str | None = None
    host: str | None = None
    path: str | None = None
    query: Mapping[str, Any] | None = None
    subject: str | None = None
    groups: tuple[str, ...] = ()
    body: Any = None
    arguments: Any = None
    now: datetime.datetime | None = None
    content: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "groups", tuple(self.groups or ()))


class Finding(NamedTuple):
    """A labelled value: where, what, and a keyed fingerprint of it (never the value itself).

    `path` is JSONPath-like (`$.customers[0].ssn`, `$.args<json>.card`, `?email` for a query
    parameter); `span` is the (start, end) of the value inside that string, None for a whole value.
    `action` is what the rules did about it (`mask` with `mask` the style, `block`, ... or `allow`
    when no rule acted); `monitor` says it was only reported, not enforced. (A named tuple: a
    large body can hold thousands of findings.)
    """

    direction: str
    path: str
    label: str
    level: str
    detector: str | None
    fingerprint: str
    span: tuple[int, int] | None = None
    action: str = "allow"
    mask: str | None = None
    rules: tuple[str, ...] = ()
    monitor: bool = False

    def as_dict(self) -> dict[str, Any]:
        data = self._asdict()
        data["span"] = list(self.span) if self.span else None
        data["rules"] = list(self.rules)
        return data


class Findings(Sequence[Finding]):
    """A decision's findings, in document order: a sequence of `Finding`s that the native core
    keeps as columns until one is read. The gateway reads none: it takes the labels found
    (`labels`) and hands the rows to the session store as one bytes value (`encode`), so a large
    body's thousands of findings never become Python objects on its hot path."""

    __slots__ = ("_native", "_items")

    def __init__(self, native: Any = None) -> None:
        self._native = native  # toolgate.rules._core.Findings, or None for no findings
        self._items: tuple[Finding, ...] | None = None if native is not None and len(native) else ()

    def _all(self) -> tuple[Finding, ...]:
        if self._items is None:
            self._items = tuple(self._native.rows())
        return self._items

    def __len__(self) -> int:
        return len(self._native) if self._native is not None else 0

    @overload
    def __getitem__(self, index: int) -> Finding: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[Finding, ...]: ...
    def __getitem__(self, index: int | slice) -> Finding | tuple[Finding, ...]:
        return self._all()[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (Findings, tuple, list)):
            return self._all() == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._all())

    def __repr__(self) -> str:
        return f"Findings({list(self._all())!r})"

    def labels(self) -> list[str]:
        """The labels found, in order of first occurrence."""
        return self._native.labels() if self._native is not None else []

    def any_action(self, action: str) -> bool:
        """Whether the rules did `action` to any value found."""
        return self._native is not None and self._native.any_action(action)

    def encode(self, location: str = "$") -> bytes:
        """The findings as the session store keeps them, rows of [direction, path, label, level,
        action, fingerprint], each path placed inside the message whose part at `location` was
        evaluated (`$`: the whole message), in the core's own binary encoding: read them back
        with `sessions.records.finding_table`."""
        return self._native.encode(location) if self._native is not None else native.NO_FINDINGS_ENCODED


NO_FINDINGS = Findings()


@dataclass(frozen=True)
class RuleMatch:
    """A rule (or a catalog check such as `access:crm.export`) that matched the call, and why."""

    rule: str
    action: str
    monitor: bool
    reason: str
    fields: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    mask: str | None = None
    source: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Decision:
    """The outcome for one direction of a call.

    `action` is what the gateway does: allow, mask, block, approve or deny (deny: a function
    outside the catalog under `unknown_function: deny`). `would` is what it would do if every
    rule were enforced (it differs from `action` under monitor mode). `body`/`query` are the
    masked values to forward (the very input objects when nothing was masked: see `changed`).
    `rule`, `message` and `field` describe the decisive outcome for error answers; `approvers`
    and `timeout` come with `approve`.
    """

    action: str
    would: str
    mode: str
    direction: str
    function: str
    catalogued: bool
    rules: tuple[str, ...] = ()  # ids of every matching rule (enforced and monitored), in file order
    findings: Findings = NO_FINDINGS
    body: Any = None
    query: Mapping[str, Any] | None = None
    changed: bool = False
    # The body and query for the session store: `body`/`query` with every labelled value they
    # still hold redacted too (the very same objects when there is none).
    record_body: Any = None
    record_query: Mapping[str, Any] | None = None
    rule: str | None = None
    message: str | None = None
    field: str | None = None
    approvers: tuple[str, ...] = ()
    timeout: datetime.timedelta | None = None
    hold: str = "wait"  # with `approve`: how the call is held (see Rule.hold)
    # These render `matches` and `reasons` on first use: the gateway acts on a decision without
    # reading why, and building that text for every request and response costs time.
    # (`dataclasses.field`: `field` is a field of this class.)
    describe_matches: Callable[[], tuple[RuleMatch, ...]] = dataclasses.field(default=tuple, repr=False, compare=False)
    explanation: Callable[[], tuple[str, ...]] = dataclasses.field(default=tuple, repr=False, compare=False)

    @cached_property
    def matches(self) -> tuple[RuleMatch, ...]:
        """Every matching rule and catalog check (as `rules`), with the reason it matched."""
        return self.describe_matches()

    @cached_property
    def reasons(self) -> tuple[str, ...]:
        """Why, one line per step: what was found, each matching rule, the decision."""
        return self.explanation()

    def explain(self) -> str:
        return "\n".join(self.reasons)

    def as_dict(self, include_body: bool = True) -> dict[str, Any]:
        """JSON-ready (durations as `30m`). Findings and reasons never hold raw values; `body` is
        what is forwarded (masked, unless the mode or the rules only monitor)."""
        data = {
            "action": self.action,
            "would": self.would,
            "mode": self.mode,
            "direction": self.direction,
            "function": self.function,
            "catalogued": self.catalogued,
            "rule": self.rule,
            "message": self.message,
            "field": self.field,
            "approvers": list(self.approvers),
            "timeout": format_duration(self.timeout) if self.timeout else None,
            "hold": self.hold if self.action == "approve" else None,
            "rules": [match.as_dict() for match in self.matches],
            "findings": [finding.as_dict() for finding in self.findings],
            "reasons": list(self.reasons),
        }
        if include_body:
            data["body"] = self.body
            data["query"] = dict(self.query) if self.query is not None else None
        return data
