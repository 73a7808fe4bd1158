"""The loaded rule set: plain frozen dataclasses, built and validated by `rules.loader`."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from toolgate.rules.globs import Glob
from toolgate.rules.jsonpaths import LabelPath, WhenCondition

if TYPE_CHECKING:
    from toolgate.rules.classify import Classifier
    from toolgate.rules.index import RuleIndex

LEVELS = ("public", "internal", "confidential", "restricted")
ACTIONS = ("allow", "mask", "block", "approve")
MASK_STYLES = ("redact", "partial", "hash", "remove")
DIRECTIONS = ("request", "response")
MODES = ("enforce", "monitor")
PROTOCOLS = ("rest", "mcp", "openai", "anthropic")
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
UNKNOWN_FUNCTION = ("allow", "deny")

# Decision strength: the strongest applicable outcome wins. `deny` (not in the catalog under
# `unknown_function: deny`) is a default policy and sits above every rule.
STRENGTH = {"allow": 0, "mask": 1, "approve": 2, "block": 3, "deny": 4}
# When several masks land on one value, the one that reveals least wins.
MASK_STRENGTH = {"partial": 0, "hash": 1, "redact": 2, "remove": 3}


@dataclass(frozen=True)
class Origin:
    """Where something was defined, for messages: `rules/packs/pii.yaml:12`."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class Label:
    """What a piece of data is. A detector finds it anywhere, paths say where it lives; with both,
    the detector only looks inside the values the paths select."""

    name: str
    level: str
    detector: str | None = None
    paths: tuple[LabelPath, ...] = ()
    source: Origin | None = None


@dataclass(frozen=True)
class Access:
    """Groups allowed to call a catalogued function, and when that access was last reviewed."""

    groups: tuple[str, ...]
    reviewed: datetime.date | None = None
    review_every: datetime.timedelta | None = None

    def review_due(self) -> datetime.date | None:
        if self.reviewed is None or self.review_every is None:
            return None
        return (self.reviewed_at(None) + self.review_every).date()

    def overdue(self, now: datetime.datetime) -> bool:
        if self.reviewed is None or self.review_every is None:
            return False
        return self.reviewed_at(now.tzinfo) + self.review_every < now

    def reviewed_at(self, tz: datetime.tzinfo | None) -> datetime.datetime:
        assert self.reviewed is not None
        return datetime.datetime.combine(self.reviewed, datetime.time(), tzinfo=tz)


@dataclass(frozen=True)
class CatalogFunction:
    """An entry of the function catalog: how REST calls are named, who owns it, who may call it."""

    name: str
    method: str | None = None
    path: Glob | None = None
    host: Glob | None = None
    protocol: str | None = None
    owner: str | None = None
    sensitivity: str | None = None
    access: tuple[Access, ...] = ()
    source: Origin | None = None

    def matches_http(self, method: str | None, host: str | None, path: str | None, protocol: str | None) -> bool:
        if self.path is None or not self.path.matches(path):
            return False
        if self.method is not None and (method or "").upper() != self.method:
            return False
        if self.host is not None and not self.host.matches(host):
            return False
        return self.protocol is None or self.protocol == protocol


@dataclass(frozen=True)
class Match:
    """The conditions of a rule; an empty tuple or None means "any"."""

    function: tuple[Glob, ...] = ()
    protocol: tuple[str, ...] = ()
    host: tuple[Glob, ...] = ()
    method: tuple[str, ...] = ()
    path: tuple[Glob, ...] = ()
    direction: str | None = None
    labels: tuple[str, ...] = ()
    levels: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    not_groups: tuple[str, ...] = ()
    subjects: tuple[Glob, ...] = ()
    when: tuple[WhenCondition, ...] = ()

    @property
    def about_data(self) -> bool:
        """True when the rule is about labelled values (so its mask applies to those values)."""
        return bool(self.labels or self.levels)


@dataclass(frozen=True)
class Rule:
    id: str
    match: Match
    action: str
    mask: str | None = None
    message: str | None = None
    approvers: tuple[str, ...] = ()
    mode: str = "enforce"
    timeout: datetime.timedelta | None = None
    source: Origin | None = None
    hold: str = "wait"  # approve rules: `wait` (the caller waits) or `return` (answered at once)

    @property
    def monitor(self) -> bool:
        return self.mode == "monitor"


@dataclass(frozen=True)
class RuleSet:
    """Everything loaded from one file or folder, validated, with its rule index built."""

    labels: tuple[Label, ...] = ()
    functions: tuple[CatalogFunction, ...] = ()
    rules: tuple[Rule, ...] = ()
    unknown_function: str = "allow"
    # MCP tool definitions that changed since they were pinned (rules/toolpins.py): monitor,
    # block or approve; who may accept a change (and approve calls of a changed tool).
    tool_changes: str = "monitor"
    tool_approvers: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    index: RuleIndex | None = field(default=None, repr=False, compare=False)
    classifier: Classifier | None = field(default=None, repr=False, compare=False)

    def label(self, name: str) -> Label | None:
        return next((label for label in self.labels if label.name == name), None)

    def rule(self, rule_id: str) -> Rule | None:
        return next((rule for rule in self.rules if rule.id == rule_id), None)
