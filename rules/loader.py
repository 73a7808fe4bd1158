"""Loading rule packs: YAML files or a folder of them, strictly validated.

Every problem is collected (not just the first) and reported as `file:line: what is wrong (how to
fix it)`; a rule set is only returned when there are none. The round-trip YAML loader keeps the
line of every key and item, which is where the messages point. JSONPath and globs are compiled
here, once.
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import re
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from toolgate.rules.classify import Classifier
from toolgate.rules.detectors import DETECTORS
from toolgate.rules.durations import parse_duration
from toolgate.rules.errors import RuleError, RuleLoadError
from toolgate.rules.globs import Glob, GlobError, compile_glob
from toolgate.rules.index import RuleIndex
from toolgate.rules.jsonpaths import PathError, compile_label_path, compile_when
from toolgate.rules.model import (
    ACTIONS, DIRECTIONS, LEVELS, MASK_STYLES, METHODS, MODES, PROTOCOLS, UNKNOWN_FUNCTION,
    Access, CatalogFunction, Label, Match, Origin, Rule, RuleSet,
)  # fmt: skip
from toolgate.rules.toolpins import TOOL_CHANGES

TOP_KEYS = ("labels", "functions", "rules", "defaults")
LABEL_KEYS = ("name", "level", "detector", "paths", "description")
FUNCTION_KEYS = ("name", "match", "owner", "sensitivity", "access", "description")
FUNCTION_MATCH_KEYS = ("method", "path", "host", "protocol")
GRANT_KEYS = ("groups", "reviewed", "review_every")
RULE_KEYS = ("id", "match", "action", "mask", "message", "approvers", "mode", "timeout", "hold", "description")
# How an approve rule holds a call: the caller waits for the decision, or gets `approval_pending`
# at once and retries (agents drop calls long before a human decides).
HOLD_MODES = ("wait", "return")
MATCH_KEYS = (
    "function", "protocol", "host", "method", "path", "direction", "labels", "levels",
    "groups", "not_groups", "subjects", "when",
)  # fmt: skip
DEFAULTS_KEYS = ("unknown_function", "tool_changes", "tool_approvers")
LABEL_NAME = re.compile(r"[A-Za-z0-9_.-]+")
JSONPATH_HELP = "jsonpath-ng extended syntax, e.g. $.customers[*].ssn or $[?(@.limit > 100)]"


def bundled_packs_path() -> Path:
    """The folder of rule packs shipped with toolgate (`rules/packs`)."""
    return Path(str(resources.files("toolgate.rules") / "packs"))


def load_rules(path: str | Path) -> RuleSet:
    """Load a rule file, or every *.yaml / *.yml file of a folder (sorted by name, merged).

    Raises RuleLoadError listing every problem, each with its file and line.
    """
    path_text = str(path)
    path = Path(path)
    loader = _Loader()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in (".yaml", ".yml"))
        if not files:
            loader.error(path_text, 0, "no rule files (*.yaml, *.yml) in this folder")
        for file in files:
            loader.load_file(file, str(Path(path_text) / file.name))
    elif path.is_file():
        loader.load_file(path, path_text)
    else:
        loader.error(path_text, 0, "no such file or folder")
    return loader.finish()


def load_rules_text(text: str, name: str = "<rules>") -> RuleSet:
    """Load rules from YAML text (tests, tools); `name` stands for the file in messages."""
    loader = _Loader()
    loader.load_text(text, name)
    return loader.finish()


def _line(node: Any, key: Any = None) -> int:
    """1-based line of `key` in a mapping or item `key` of a sequence, or of the node itself."""
    try:
        if key is None:
            return node.lc.line + 1
        if isinstance(node, CommentedMap):
            return node.lc.key(key)[0] + 1
        if isinstance(node, CommentedSeq):
            return node.lc.item(key)[0] + 1
    except (AttributeError, KeyError, IndexError, TypeError):
        pass
    return getattr(getattr(node, "lc", None), "line", -1) + 1


def _one_of(values: Iterable[str]) -> str:
    return "use one of: " + ", ".join(values)


class _Loader:
    """Accumulates definitions and errors over one or more files."""

    def __init__(self) -> None:
        self.errors: list[RuleError] = []
        self.labels: list[Label] = []
        self.functions: list[CatalogFunction] = []
        self.rules: list[Rule] = []
        self.label_refs: list[tuple[str, Origin, str]] = []  # (label, where, rule id) checked at the end
        self.defined: dict[tuple[str, str], Origin] = {}
        self.unknown_function: tuple[str, Origin] | None = None
        self.tool_changes: tuple[str, Origin] | None = None
        self.tool_approvers: tuple[tuple[str, ...], Origin] | None = None
        self.files: list[str] = []
        self.file = ""

    def error(self, file: str, line: int, message: str) -> None:
        self.errors.append(RuleError(file, line, message))

    def err(self, node: Any, key: Any, message: str) -> None:
        self.error(self.file, _line(node, key), message)

    # -- files ---------------------------------------------------------------------------------

    def load_file(self, path: Path, display: str) -> None:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            self.error(display, 0, f"cannot read the file: {exc}")
            return
        self.load_text(text, display)

    def load_text(self, text: str, display: str) -> None:
        self.file = display
        self.files.append(display)
        try:
            document = YAML(typ="rt").load(text)
        except MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark is not None else 0
            problem = (exc.problem or exc.context or "invalid YAML").strip()
            self.error(display, line, f"YAML error: {problem}")
            return
        except YAMLError as exc:
            self.error(display, 0, f"YAML error: {exc}")
            return
        if document is None:
            return
        if not isinstance(document, CommentedMap):
            self.error(display, 1, "a rule file is a mapping with labels, functions, rules and defaults")
            return
        self.check_keys(document, TOP_KEYS, "the top level")
        for key, build in (("labels", self.label), ("functions", self.function), ("rules", self.rule)):
            items = document.get(key)
            if items is None:
                continue
            if not isinstance(items, CommentedSeq):
                self.err(document, key, f"'{key}' must be a list")
                continue
            for index, item in enumerate(items):
                if not isinstance(item, CommentedMap):
                    self.err(items, index, f"each entry of '{key}' must be a mapping")
                    continue
                build(item, index)
        if "defaults" in document:
            self.defaults(document, document["defaults"])

    def finish(self) -> RuleSet:
        label_names = {name for kind, name in self.defined if kind == "label"}
        for name, where, rule_id in self.label_refs:
            if name not in label_names:
                hint = _suggest(name, label_names)
                self.error(where.file, where.line, f"rule '{rule_id}': unknown label '{name}'{hint} (define it under labels:)")
        if self.tool_changes and self.tool_changes[0] != "monitor" and not self.tool_approvers:
            where = self.tool_changes[1]
            self.error(where.file, where.line, f"defaults: tool_changes: {self.tool_changes[0]} "
                       "needs tool_approvers (the groups that may accept a changed tool: "
                       "tool_approvers: [group, ...])")
        if self.errors:
            raise RuleLoadError(self.errors)
        rules = tuple(self.rules)
        return RuleSet(
            labels=tuple(self.labels),
            functions=tuple(self.functions),
            rules=rules,
            unknown_function=self.unknown_function[0] if self.unknown_function else "allow",
            tool_changes=self.tool_changes[0] if self.tool_changes else "monitor",
            tool_approvers=self.tool_approvers[0] if self.tool_approvers else (),
            files=tuple(self.files),
            index=RuleIndex(rules),
            classifier=Classifier(self.labels),
        )

    # -- shared checks -------------------------------------------------------------------------

    def check_keys(self, node: CommentedMap, allowed: tuple[str, ...], where: str) -> None:
        for key in node:
            if key not in allowed:
                hint = _suggest(str(key), allowed)
                self.err(node, key, f"{where}: unknown key '{key}'{hint} (allowed: {', '.join(allowed)})")

    def unique(self, kind: str, name: str, node: Any, key: Any, what: str) -> Origin:
        source = Origin(self.file, _line(node, key))
        first = self.defined.get((kind, name))
        if first is not None:
            self.error(source.file, source.line, f"duplicate {what} '{name}' (first defined at {first}); {what}s must be unique")
        else:
            self.defined[(kind, name)] = source
        return source

    def string(self, node: CommentedMap, key: str, where: str, required: bool = False) -> str | None:
        if key not in node or node[key] is None:
            if required:
                self.err(node, None, f"{where}: missing '{key}'")
            return None
        value = node[key]
        if not isinstance(value, str) or not value.strip():
            self.err(node, key, f"{where}: '{key}' must be a non-empty string")
            return None
        return str(value)

    def choice(self, node: CommentedMap, key: str, choices: tuple[str, ...], where: str, what: str, required: bool = False) -> str | None:
        value = self.string(node, key, where, required)
        if value is None:
            return None
        if value not in choices:
            self.err(node, key, f"{where}: unknown {what} '{value}' ({_one_of(choices)})")
            return None
        return value

    def strings(self, node: CommentedMap, key: str, where: str) -> list[str]:
        """A string or a list of strings (`groups: sre` is the same as `groups: [sre]`)."""
        if key not in node or node[key] is None:
            return []
        value = node[key]
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list) or not all(isinstance(v, str) and v.strip() for v in values):
            self.err(node, key, f"{where}: '{key}' must be a string or a list of strings")
            return []
        return [str(v) for v in values]

    def choices(self, node: CommentedMap, key: str, choices: tuple[str, ...], where: str, what: str, upper: bool = False) -> tuple[str, ...]:
        kept = []
        for value in self.strings(node, key, where):
            value = value.upper() if upper else value
            if value in choices:
                kept.append(value)
            else:
                self.err(node, key, f"{where}: unknown {what} '{value}' ({_one_of(choices)})")
        return tuple(kept)

    def globs(self, node: CommentedMap, key: str, kind: str, where: str) -> tuple[Glob, ...]:
        compiled = []
        for text in self.strings(node, key, where):
            try:
                compiled.append(compile_glob(text, kind))
            except GlobError as exc:
                self.err(node, key, f"{where}: bad glob '{text}' in {key}: {exc}")
        return tuple(compiled)

    def which_call(self, match: CommentedMap, where: str) -> dict[str, Any]:
        """A `match` block's fields that say which call (rules and credential targets alike)."""
        return dict(
            function=self.globs(match, "function", "name", where),
            protocol=self.choices(match, "protocol", PROTOCOLS, where, "protocol"),
            host=self.globs(match, "host", "host", where),
            method=self.choices(match, "method", METHODS, where, "method", upper=True),
            path=self.globs(match, "path", "path", where),
        )

    def which_caller(self, match: CommentedMap, where: str) -> dict[str, Any]:
        """A `match` block's fields that say which caller."""
        return dict(
            groups=tuple(self.strings(match, "groups", where)),
            not_groups=tuple(self.strings(match, "not_groups", where)),
            subjects=self.globs(match, "subjects", "name", where),
        )

    def duration(self, node: CommentedMap, key: str, where: str) -> datetime.timedelta | None:
        if key not in node or node[key] is None:
            return None
        try:
            return parse_duration(node[key])
        except ValueError:
            self.err(node, key, f"{where}: bad duration '{node[key]}' in {key} (use a whole number and a unit: 90d, 12h, 30m, 45s)")
            return None

    # -- sections ------------------------------------------------------------------------------

    def label(self, node: CommentedMap, index: int) -> None:
        name = self.string(node, "name", f"label #{index + 1}", required=True)
        where = f"label '{name}'" if name else f"label #{index + 1}"
        self.check_keys(node, LABEL_KEYS, where)
        source = Origin(self.file, _line(node))
        if name is not None:
            if not LABEL_NAME.fullmatch(name):
                self.err(node, "name", f"{where}: a label name uses only letters, digits, '_', '.' and '-'")
            source = self.unique("label", name, node, "name", "label name")
        level = self.choice(node, "level", LEVELS, where, "level", required=True)
        detector = self.choice(node, "detector", tuple(DETECTORS), where, "detector")
        paths = []
        for text in self.strings(node, "paths", where):
            try:
                paths.append(compile_label_path(text))
            except PathError as exc:
                self.err(node, "paths", f"{where}: bad JSONPath '{text}' in paths: {exc} ({JSONPATH_HELP})")
        if "detector" not in node and "paths" not in node:
            self.err(node, None, f"{where}: needs a detector, paths, or both (detector: {_one_of(DETECTORS)})")
        if name and level:
            self.labels.append(Label(name, level, detector, tuple(paths), source))

    def function(self, node: CommentedMap, index: int) -> None:
        name = self.string(node, "name", f"function #{index + 1}", required=True)
        where = f"function '{name}'" if name else f"function #{index + 1}"
        self.check_keys(node, FUNCTION_KEYS, where)
        source = self.unique("function", name, node, "name", "function name") if name else None
        method = path = host = protocol = None
        match = node.get("match")
        if match is not None:
            if not isinstance(match, CommentedMap):
                self.err(node, "match", f"{where}: 'match' must be a mapping such as {{method: GET, path: /customers/*}}")
            else:
                self.check_keys(match, FUNCTION_MATCH_KEYS, f"{where}: match")
                if "method" in match:
                    raw = match["method"]
                    if isinstance(raw, str) and raw.upper() in METHODS:
                        method = raw.upper()
                    else:
                        self.err(match, "method", f"{where}: unknown method '{raw}' ({_one_of(METHODS)})")
                paths = self.globs(match, "path", "path", f"{where}: match")
                hosts = self.globs(match, "host", "host", f"{where}: match")
                path = paths[0] if paths else None
                host = hosts[0] if hosts else None
                protocol = self.choice(match, "protocol", PROTOCOLS, f"{where}: match", "protocol")
                if "method" in match and "path" not in match:
                    self.err(match, None, f"{where}: match needs a path with its method (e.g. path: /customers/*)")
        owner = self.string(node, "owner", where)
        sensitivity = self.choice(node, "sensitivity", LEVELS, where, "sensitivity")
        grants = self.grants(node, where)
        if grants and owner is None and "owner" not in node:
            self.err(node, "access", f"{where}: access grants need an owner (who approves calls when a review is overdue)")
        if name:
            self.functions.append(CatalogFunction(name, method, path, host, protocol, owner, sensitivity, grants, source))

    def grants(self, node: CommentedMap, where: str) -> tuple[Access, ...]:
        entries = node.get("access")
        if entries is None:
            return ()
        if not isinstance(entries, CommentedSeq):
            self.err(node, "access", f"{where}: 'access' must be a list of {{groups: [...], reviewed: 2026-10-01, review_every: 90d}}")
            return ()
        grants = []
        for index, entry in enumerate(entries):
            at = f"{where}: access[{index}]"
            if not isinstance(entry, CommentedMap):
                self.err(entries, index, f"{at} must be a mapping with groups, reviewed and review_every")
                continue
            self.check_keys(entry, GRANT_KEYS, at)
            groups = self.strings(entry, "groups", at)
            if not groups:
                self.err(entry, None, f"{at}: needs 'groups' (the groups this grant lets call the function)")
            reviewed = self.date(entry, "reviewed", at)
            every = self.duration(entry, "review_every", at)
            if ("reviewed" in entry) != ("review_every" in entry):
                self.err(entry, None, f"{at}: 'reviewed' and 'review_every' go together (e.g. reviewed: 2026-10-01, review_every: 90d)")
            grants.append(Access(tuple(groups), reviewed, every))
        return tuple(grants)

    def date(self, node: CommentedMap, key: str, where: str) -> datetime.date | None:
        if key not in node:
            return None
        value = node[key]
        if isinstance(value, datetime.datetime):
            return value.date()
        if isinstance(value, datetime.date):
            return value
        if isinstance(value, str):
            try:
                return datetime.date.fromisoformat(value)
            except ValueError:
                pass
        self.err(node, key, f"{where}: '{key}' must be a date such as 2026-10-01, not '{value}'")
        return None

    def rule(self, node: CommentedMap, index: int) -> None:
        rule_id = self.string(node, "id", f"rule #{index + 1}", required=True)
        where = f"rule '{rule_id}'" if rule_id else f"rule #{index + 1}"
        self.check_keys(node, RULE_KEYS, where)
        source = self.unique("rule", rule_id, node, "id", "rule id") if rule_id else Origin(self.file, _line(node))
        match = self.match(node, where, rule_id or f"#{index + 1}")
        action = self.choice(node, "action", ACTIONS, where, "action", required=True)
        mask = self.choice(node, "mask", MASK_STYLES, where, "mask style")
        mode = self.choice(node, "mode", MODES, where, "mode") or "enforce"
        message = self.string(node, "message", where)
        approvers = self.strings(node, "approvers", where)
        timeout = self.duration(node, "timeout", where)
        hold = self.choice(node, "hold", HOLD_MODES, where, "hold mode") or "wait"
        if action == "mask" and "mask" not in node:
            self.err(node, "action", f"{where}: action mask needs a mask style (mask: {' | '.join(MASK_STYLES)})")
        if action and action != "mask" and "mask" in node:
            self.err(node, "mask", f"{where}: 'mask' only applies to action: mask (this rule's action is {action})")
        if action == "approve" and not approvers:
            self.err(node, "action", f"{where}: action approve needs approvers (approvers: [group, ...])")
        if action and action != "approve":
            for key in ("approvers", "timeout", "hold"):
                if key in node:
                    self.err(node, key, f"{where}: '{key}' only applies to action: approve (this rule's action is {action})")
        if action == "approve" and match is not None and match.direction is None:
            # Approval is about making a call: without a direction, an approve rule holds
            # requests only. Holding an answer takes `direction: response`.
            match = dataclasses.replace(match, direction="request")
        if hold == "return" and match is not None and match.direction == "response":
            self.err(node, "hold", f"{where}: hold: return answers the caller before the call is made, so it "
                     "holds requests only (a held answer needs hold: wait)")
        if rule_id and action and match is not None:
            self.rules.append(Rule(rule_id, match, action, mask, message, tuple(approvers), mode, timeout, source, hold))

    def match(self, node: CommentedMap, where: str, rule_id: str) -> Match | None:
        match = node.get("match")
        if match is None:
            return Match() if "match" not in node else self._bad_match(node, where)
        if not isinstance(match, CommentedMap):
            return self._bad_match(node, where)
        at = f"{where}: match"
        self.check_keys(match, MATCH_KEYS, at)
        labels = self.strings(match, "labels", at)
        for label in labels:
            self.label_refs.append((label, Origin(self.file, _line(match, "labels")), rule_id))
        when = []
        for text in self.strings(match, "when", at):
            try:
                when.append(compile_when(text))
            except PathError as exc:
                self.err(match, "when", f"{where}: bad JSONPath '{text}' in match.when: {exc} ({JSONPATH_HELP})")
        return Match(
            **self.which_call(match, at),
            direction=self.choice(match, "direction", DIRECTIONS, at, "direction"),
            labels=tuple(labels),
            levels=self.choices(match, "levels", LEVELS, at, "level"),
            **self.which_caller(match, at),
            when=tuple(when),
        )

    def _bad_match(self, node: CommentedMap, where: str) -> None:
        self.err(node, "match", f"{where}: 'match' must be a mapping such as {{function: crm.*, direction: response}}")
        return None

    def defaults(self, document: CommentedMap, node: Any) -> None:
        if not isinstance(node, CommentedMap):
            self.err(document, "defaults", "defaults: must be a mapping such as {unknown_function: allow}")
            return
        self.check_keys(node, DEFAULTS_KEYS, "defaults")
        if "unknown_function" in node:
            value = self.choice(node, "unknown_function", UNKNOWN_FUNCTION, "defaults", "unknown_function value")
            self.unknown_function = self._agreed(node, "unknown_function", value, self.unknown_function)
        if "tool_changes" in node:
            value = self.choice(node, "tool_changes", TOOL_CHANGES, "defaults", "tool_changes value")
            self.tool_changes = self._agreed(node, "tool_changes", value, self.tool_changes)
        if "tool_approvers" in node:
            groups = tuple(self.strings(node, "tool_approvers", "defaults"))
            self.tool_approvers = self._agreed(node, "tool_approvers", groups or None, self.tool_approvers)

    def _agreed(self, node: CommentedMap, key: str, value: Any, first: tuple[Any, Origin] | None) -> tuple[Any, Origin] | None:
        """A default set in one file: files of one rule set must agree on it."""
        if value is None:
            return first
        source = Origin(self.file, _line(node, key))
        if first is not None and first[0] != value:
            shown = ", ".join(value) if isinstance(value, tuple) else value
            first_shown = ", ".join(first[0]) if isinstance(first[0], tuple) else first[0]
            self.error(source.file, source.line, f"defaults: {key} is '{shown}' here but '{first_shown}' at {first[1]}; files of one rule set must agree")
            return first
        return (value, source)


def _suggest(word: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
