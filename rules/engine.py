"""Decisions: evaluate one direction of a call against a rule set.

Every matching rule applies and the strongest action wins (deny > block > approve > mask >
allow); masks of all matching mask rules apply to their values. Rules with `mode: monitor`, and
every rule under the global monitor flag, are evaluated and reported but change nothing. The
catalog adds its own outcomes on requests: `unknown_function: deny`, groups without a grant
(block), and grants whose access review is overdue (approve); not on the text of prompts
(`Call.content`), which is not a function call.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from functools import partial
from typing import Any

from toolgate.rules.bodies import rest_arguments, split_path
from toolgate.rules.callmatch import call_matches
from toolgate.rules.catalog import check_access, find_function, rest_name
from toolgate.rules.decision import NO_FINDINGS, Call, Decision, Finding, Findings, RuleMatch
from toolgate.rules.masking import fingerprint, generic_partial, normalize
from toolgate.rules.model import MASK_STRENGTH, STRENGTH, Label, Origin, Rule, RuleSet
from toolgate.rules.walk import Document

MAX_LISTED_FIELDS = 5


@dataclass(slots=True)
class _Outcome:
    """One reason the call gets an action: a matched rule or a catalog check."""

    rule: str
    action: str
    monitor: bool
    notes: list[str | None]  # why it applies; None stands for a description of the values it covers
    covers: bool  # whether it covers values: every value of `labels`
    field: str | None = None
    message: str | None = None
    approvers: tuple[str, ...] = ()
    timeout: datetime.timedelta | None = None
    hold: str = "wait"
    mask: str | None = None
    source: Origin | None = None
    labels: tuple[str, ...] = ()  # the labels it covers: a rule covers every value of a label or none
    labelled: _Labelled | None = None

    @property
    def reason(self) -> str:
        """The notes as one text, rendered when it is read (see `Decision.matches`)."""
        return "; ".join(note if note is not None else _describe_hits(self.labelled, self.labels) for note in self.notes)


class _Labelled:
    """A call's labelled values (the core's rows), seen by label: rules select values by label."""

    __slots__ = ("found", "index", "labels", "counts")

    def __init__(self, found: Any, labels: tuple[Label, ...]) -> None:
        self.found = found
        self.index: dict[str, int] = {}
        self.labels: dict[str, Label] = {}  # in order of first occurrence
        self.counts: dict[str, int] = {}
        for position, count in found.labels():
            label = labels[position]
            self.index[label.name] = position
            self.labels[label.name] = label
            self.counts[label.name] = count

    def paths(self, names: tuple[str, ...], limit: int | None = None) -> list[str]:
        """The paths of the values of labels `names`, in document order."""
        return self.found.paths([self.index[name] for name in names], limit)


def evaluate(ruleset: RuleSet, call: Call, mask_key: bytes, *, monitor: bool = False) -> Decision:
    """Decide what happens to one direction of `call`, mask its body, and explain why.

    `mask_key` keys the hash tokens and the fingerprints of findings. With `monitor=True`
    (`toolgate_mode=monitor`) nothing is enforced: the action is `allow`, the body is unchanged,
    and `would` says what enforcement would have done.
    """
    if not isinstance(mask_key, (bytes, bytearray)):
        raise TypeError("mask_key must be bytes")
    path, query_in_path = split_path(call.path)
    query = call.query if call.query is not None else (query_in_path or None)
    if query is not None and type(query) is not dict:
        query = dict(query)
    entry = None if call.content else find_function(ruleset, function=call.function, method=call.method, host=call.host, path=path, protocol=call.protocol)
    function = call.function or (entry.name if entry else rest_name(call.method, path))
    assert ruleset.index is not None and ruleset.classifier is not None, "build rule sets with load_rules()"

    body_doc = Document(call.body)
    query_doc = Document(query, root_name="?") if query else None
    classifier = ruleset.classifier
    found = classifier.classify_call(body_doc, query_doc)
    key = bytes(mask_key)

    def generic_fingerprint(value: Any) -> str:  # of a value no detector read: a path label's, a key
        return fingerprint(normalize(value), key)

    if len(found):  # keys holding labelled values get their names before any path is rendered
        found.name_keys(classifier.names, key, generic_fingerprint)

    outcomes: list[_Outcome] = []
    if call.direction == "request" and not call.content:  # prompts are not function calls
        outcomes.extend(_catalog_outcomes(ruleset, entry, function, call, monitor))
    labelled = _Labelled(found, classifier.labels)
    levels = {label.level for label in labelled.labels.values()}
    arguments: list[Any] = []  # computed on first use
    for rule in ruleset.index.candidates(call.direction, function, labelled.labels, levels):
        outcome = _match(rule, call, function, path, labelled, arguments, query, monitor)
        if outcome is not None:
            outcomes.append(outcome)

    enforced = [outcome for outcome in outcomes if not outcome.monitor]
    would = _strongest(outcomes)
    action = _strongest(enforced)
    decisive = next((o for o in enforced if o.action == action), None) if action != "allow" else None
    if decisive is None and would != "allow":
        decisive = next(o for o in outcomes if o.action == would)

    body = record_body = call.body
    masked_query = record_query = query
    findings = NO_FINDINGS
    if len(found):
        # What the session store keeps: the forwarded body with every labelled value still in it
        # (allowed, only monitored, or in a refused call) redacted as well.
        versions = found.mask(_mask_plan(enforced, classifier), classifier.names, key, generic_partial, generic_fingerprint)
        body, record_body = versions[0]
        if query_doc is not None:
            masked_query, record_query = versions[1]
        findings = _findings(found, labelled, outcomes, call.direction, classifier, key, generic_fingerprint)
    return Decision(
        action=action,
        would=would,
        mode="monitor" if monitor else "enforce",
        direction=call.direction,
        function=function,
        catalogued=entry is not None,
        rules=tuple(outcome.rule for outcome in outcomes),
        findings=findings,
        body=body,
        query=masked_query,
        changed=body is not call.body or masked_query is not query,
        record_body=record_body,
        record_query=record_query,
        rule=decisive.rule if decisive else None,
        message=decisive.message if decisive else None,
        field=decisive.field if decisive else None,
        approvers=decisive.approvers if decisive and decisive.action == "approve" else (),
        timeout=decisive.timeout if decisive and decisive.action == "approve" else None,
        hold=decisive.hold if decisive and decisive.action == "approve" else "wait",
        describe_matches=partial(_rule_matches, outcomes),
        explanation=partial(_explain, function, entry, call, findings, outcomes, action, would, monitor),
    )


def _strongest(outcomes: list[_Outcome]) -> str:
    """The strongest action among `outcomes` ("allow" for none)."""
    action = "allow"
    for outcome in outcomes:
        if STRENGTH[outcome.action] > STRENGTH[action]:
            action = outcome.action
    return action


def _catalog_outcomes(ruleset: RuleSet, entry: Any, function: str, call: Call, monitor: bool) -> list[_Outcome]:
    if entry is None:
        if ruleset.unknown_function == "deny":
            reason = f"function {function} is not in the catalog (defaults: unknown_function: deny)"
            return [_Outcome("defaults.unknown_function", "deny", monitor, [reason], False, message=reason)]
        return []
    now = call.now or datetime.datetime.now(datetime.timezone.utc)
    access = check_access(entry, call.groups, now)
    if access is None:
        return []
    return [
        _Outcome(
            f"access:{entry.name}",
            access.action,
            monitor,
            [access.reason],
            False,
            message=access.reason,
            approvers=access.approvers,
            source=entry.source,
        )
    ]


def _match(
    rule: Rule,
    call: Call,
    function: str,
    path: str | None,
    labelled: _Labelled,
    arguments: list[Any],
    query: Any,
    monitor: bool,
) -> _Outcome | None:
    """The rule's outcome if every condition of its match holds, else None. Cheap checks first."""
    match = rule.match
    why: list[str | None] = []  # None: the description of the covered values, rendered when read
    if match.direction and match.direction != call.direction:
        return None
    # The call-level keys: the same function as credential targets use (rules/callmatch.py).
    if not call_matches(match, function=function, protocol=call.protocol, host=call.host,
                        method=call.method, path=path, subject=call.subject, groups=call.groups):
        return None
    if match.function:
        why.append(f"function {function}")
    if match.groups:
        why.append(f"caller in {', '.join(sorted(set(call.groups) & set(match.groups)))}")
    covers = False
    names: tuple[str, ...] = ()
    if match.about_data:
        names = tuple(
            name
            for name, label in labelled.labels.items()
            if (not match.labels or name in match.labels) and (not match.levels or label.level in match.levels)
        )
        if not names:
            return None
        covers = True
        why.append(None)
    elif rule.action == "mask":
        names = tuple(labelled.labels)  # a mask rule that names no labels masks every labelled value
        covers = bool(names)
        if covers:
            why.append(None)
    field = labelled.paths(names, 1)[0] if covers and rule.action != "mask" else None
    if match.when:
        if not arguments:
            arguments.append(_when_arguments(call, query))
        for condition in match.when:
            try:
                found = condition.first_match(arguments[0])
            except Exception as exc:  # a condition that cannot be evaluated counts as met: fail closed
                found = "$"
                why.append(f"when {condition.text} could not be evaluated ({type(exc).__name__}), treated as met")
            if found is None:
                return None
            why.append(f"when {condition.text} (found {found})")
            field = field or found
    if not why:
        why.append("matches every call" + (f" ({call.direction})" if match.direction else ""))
    message = rule.message
    if message is None and rule.action == "block":
        message = f"blocked by rule {rule.id}"
    elif message is None and rule.action == "approve":
        message = f"needs approval by {', '.join(rule.approvers)} (rule {rule.id})"
    return _Outcome(
        rule.id,
        rule.action,
        monitor or rule.monitor,
        why,
        covers,
        field=field,
        message=message,
        approvers=rule.approvers,
        timeout=rule.timeout,
        hold=rule.hold,
        mask=rule.mask,
        source=rule.source,
        labels=names,
        labelled=labelled,
    )


def _when_arguments(call: Call, query: Any) -> Any:
    if call.arguments is not None:
        return call.arguments
    if call.direction == "request" and call.protocol == "rest":
        return rest_arguments(call.body, query)
    return call.body


def _describe_hits(labelled: _Labelled, names: tuple[str, ...]) -> str:
    parts = []
    for label in names:  # only the listed paths are rendered
        count = labelled.counts[label]
        shown = ", ".join(dict.fromkeys(labelled.paths((label,), MAX_LISTED_FIELDS)))
        more = f" and {count - MAX_LISTED_FIELDS} more" if count > MAX_LISTED_FIELDS else ""
        parts.append(f"{label} at {shown}{more}")
    return "labels " + "; ".join(parts)


# -- masking -----------------------------------------------------------------------------------


def _mask_plan(outcomes: list[_Outcome], classifier: Any) -> list[tuple[int, int, int, str] | None]:
    """Per label of the rule set: None when no enforced mask rule covers it, else (strength,
    order, first, style): the strongest covering rule's style (the first on a tie) and its
    position among `outcomes`, and the position of the first covering rule. The core masks
    every value from this (at a value several labels share, the strongest wins, then the earlier
    rule, then the earlier value; a whole-value mask of a field beats masks of spans inside it)."""
    plan: list[tuple[int, int, int, str] | None] = [None] * len(classifier.labels)
    for order, outcome in enumerate(outcomes):
        if outcome.action != "mask" or outcome.mask is None:
            continue
        strength = MASK_STRENGTH[outcome.mask]
        for name in outcome.labels:
            position = classifier.index[name]
            current = plan[position]
            if current is None:
                plan[position] = (strength, order, order, outcome.mask)
            elif strength > current[0]:
                plan[position] = (strength, order, current[2], outcome.mask)
    return plan


# -- reporting ---------------------------------------------------------------------------------


def _findings(
    found: Any, labelled: _Labelled, outcomes: list[_Outcome], direction: str, classifier: Any, key: bytes,
    generic_fingerprint: Any,
) -> Findings:
    """The core renders every value's finding; the verdicts are per label (the rules covering it)."""
    verdicts: dict[str, tuple[str, str | None, tuple[str, ...], bool]] = {}
    by_rules: dict[tuple[int, ...], tuple[str, str | None, tuple[str, ...], bool]] = {}
    for name in labelled.labels:  # labels covered by the same rules share a verdict
        related = [outcome for outcome in outcomes if name in outcome.labels]
        signature = tuple(map(id, related))
        verdict = by_rules.get(signature)
        if verdict is None:
            verdict = by_rules[signature] = _verdict(related)
        verdicts[name] = verdict
    about = [
        (label.name, label.level, *verdicts[label.name]) if label.name in verdicts else None
        for label in classifier.labels
    ]
    return Findings(found.findings(key, generic_fingerprint, direction, about, classifier.detector_names, Finding))


def _verdict(related: list[_Outcome]) -> tuple[str, str | None, tuple[str, ...], bool]:
    """What the rules covering a value did with it: (action, mask style, rule ids, monitor only)."""
    enforced = [o for o in related if not o.monitor]
    deciding = enforced or related
    mask = None
    for outcome in deciding:
        if outcome.action == "mask" and outcome.mask and (mask is None or MASK_STRENGTH[outcome.mask] > MASK_STRENGTH[mask]):
            mask = outcome.mask
    return _strongest(deciding), mask, tuple(o.rule for o in related), bool(related) and not enforced


def _rule_matches(outcomes: list[_Outcome]) -> tuple[RuleMatch, ...]:
    return tuple(map(_rule_match, outcomes))


def _rule_match(outcome: _Outcome) -> RuleMatch:
    covered = outcome.labelled.paths(outcome.labels) if outcome.covers and outcome.labelled else []
    fields = tuple(dict.fromkeys(covered))
    labels = outcome.labels if outcome.covers else ()
    source = str(outcome.source) if outcome.source else None
    return RuleMatch(outcome.rule, outcome.action, outcome.monitor, outcome.reason, fields, labels, outcome.mask, source)


def _explain(
    function: str,
    entry: Any,
    call: Call,
    findings: Findings,
    outcomes: list[_Outcome],
    action: str,
    would: str,
    monitor: bool,
) -> tuple[str, ...]:
    lines = [
        f"{call.direction} of {function}"
        + (f" (catalog entry at {entry.source})" if entry is not None and entry.source else " (not in the catalog)")
    ]
    if findings:
        labels: dict[str, list[str]] = {}
        for finding in findings:
            labels.setdefault(f"{finding.label} ({finding.level})", []).append(finding.path)
        for label, paths in labels.items():
            shown = ", ".join(dict.fromkeys(paths[:MAX_LISTED_FIELDS]))
            more = f" and {len(paths) - MAX_LISTED_FIELDS} more" if len(paths) > MAX_LISTED_FIELDS else ""
            lines.append(f"found {label} at {shown}{more}")
    else:
        lines.append("found no labelled data")
    for outcome in outcomes:
        mode = "monitor only" if outcome.monitor else "enforced"
        style = f" ({outcome.mask})" if outcome.mask else ""
        lines.append(f"rule {outcome.rule}: {outcome.action}{style}, {mode}: {outcome.reason}")
    if not outcomes:
        lines.append("no rule matched")
    if monitor and would != action:
        lines.append(f"decision: {action} (monitor mode; enforcing would {would})")
    elif would != action:
        lines.append(f"decision: {action} (monitored rules alone would {would})")
    else:
        lines.append(f"decision: {action}")
    return tuple(lines)
