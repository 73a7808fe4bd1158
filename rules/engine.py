"""Decisions: evaluate one direction of a call against a rule set.

Every matching rule applies and the strongest action wins (deny > block > approve > mask >
allow); masks of all matching mask rules apply to their values. Rules with `mode: monitor`, and
every rule under the global monitor flag, are evaluated and reported but change nothing. The
catalog adds its own outcomes on requests: `unknown_function: deny`, groups without a grant
(block), and grants whose access review is overdue (approve).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from rules.bodies import rest_arguments, split_path
from rules.catalog import check_access, find_function, rest_name
from rules.classify import Hit
from rules.decision import Call, Decision, Finding, RuleMatch
from rules.masking import REMOVE, apply_edits, fingerprint, mask_spans, mask_whole, normalize, redact_token
from rules.model import MASK_STRENGTH, STRENGTH, Rule, RuleSet
from rules.walk import HOLDER, Document

MAX_LISTED_FIELDS = 5


@dataclass
class _Outcome:
    """One reason the call gets an action: a matched rule or a catalog check."""

    rule: str
    action: str
    monitor: bool
    reason: str
    hits: list[Hit]
    field: str | None = None
    message: str | None = None
    approvers: tuple[str, ...] = ()
    timeout: datetime.timedelta | None = None
    mask: str | None = None
    source: str | None = None


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
    entry = find_function(ruleset, function=call.function, method=call.method, host=call.host, path=path, protocol=call.protocol)
    function = call.function or (entry.name if entry else rest_name(call.method, path))
    assert ruleset.index is not None and ruleset.classifier is not None, "build rule sets with load_rules()"

    body_doc = Document(call.body)
    query_doc = Document(query, root_name="?") if query else None
    hits = ruleset.classifier.classify(body_doc)
    if query_doc is not None:
        hits.extend(ruleset.classifier.classify(query_doc))

    outcomes: list[_Outcome] = []
    if call.direction == "request":
        outcomes.extend(_catalog_outcomes(ruleset, entry, function, call, monitor))
    labels = {hit.label.name for hit in hits}
    levels = {hit.label.level for hit in hits}
    arguments: list[Any] = []  # computed on first use
    for rule in ruleset.index.candidates(call.direction, function, labels, levels):
        outcome = _match(rule, call, function, path, hits, arguments, query, monitor)
        if outcome is not None:
            outcomes.append(outcome)

    enforced = [outcome for outcome in outcomes if not outcome.monitor]
    would = _strongest(outcomes)
    action = _strongest(enforced)
    decisive = next((o for o in enforced if o.action == action), None) if action != "allow" else None
    if decisive is None and would != "allow":
        decisive = next(o for o in outcomes if o.action == would)

    plan = _mask_plan(enforced)
    body = _masked(body_doc, plan, mask_key)
    masked_query = _masked(query_doc, plan, mask_key) if query_doc is not None else query
    findings = _findings(hits, outcomes, call.direction, mask_key)
    return Decision(
        action=action,
        would=would,
        mode="monitor" if monitor else "enforce",
        direction=call.direction,
        function=function,
        catalogued=entry is not None,
        matches=tuple(_rule_match(outcome) for outcome in outcomes),
        findings=findings,
        body=body,
        query=masked_query,
        changed=body is not call.body or masked_query is not query,
        rule=decisive.rule if decisive else None,
        message=decisive.message if decisive else None,
        field=decisive.field if decisive else None,
        approvers=decisive.approvers if decisive and decisive.action == "approve" else (),
        timeout=decisive.timeout if decisive and decisive.action == "approve" else None,
        reasons=_explain(function, entry, call, findings, outcomes, action, would, monitor),
    )


def _strongest(outcomes: list[_Outcome]) -> str:
    return max((outcome.action for outcome in outcomes), key=STRENGTH.__getitem__, default="allow")


def _catalog_outcomes(ruleset: RuleSet, entry: Any, function: str, call: Call, monitor: bool) -> list[_Outcome]:
    if entry is None:
        if ruleset.unknown_function == "deny":
            reason = f"function {function} is not in the catalog (defaults: unknown_function: deny)"
            return [_Outcome("defaults.unknown_function", "deny", monitor, reason, [], message=reason)]
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
            access.reason,
            [],
            message=access.reason,
            approvers=access.approvers,
            source=str(entry.source) if entry.source else None,
        )
    ]


def _match(
    rule: Rule,
    call: Call,
    function: str,
    path: str | None,
    hits: list[Hit],
    arguments: list[Any],
    query: Any,
    monitor: bool,
) -> _Outcome | None:
    """The rule's outcome if every condition of its match holds, else None. Cheap checks first."""
    match = rule.match
    why: list[str] = []
    if match.direction and match.direction != call.direction:
        return None
    if match.function:
        if not any(glob.matches(function) for glob in match.function):
            return None
        why.append(f"function {function}")
    if match.protocol and call.protocol not in match.protocol:
        return None
    if match.host and not any(glob.matches(call.host) for glob in match.host):
        return None
    if match.method and (call.method or "").upper() not in match.method:
        return None
    if match.path and not any(glob.matches(path) for glob in match.path):
        return None
    if match.groups:
        if not set(call.groups) & set(match.groups):
            return None
        why.append(f"caller in {', '.join(sorted(set(call.groups) & set(match.groups)))}")
    if match.not_groups and set(call.groups) & set(match.not_groups):
        return None
    if match.subjects and not any(glob.matches(call.subject) for glob in match.subjects):
        return None
    covered: list[Hit] = []
    if match.about_data:
        covered = [
            hit
            for hit in hits
            if (not match.labels or hit.label.name in match.labels) and (not match.levels or hit.label.level in match.levels)
        ]
        if not covered:
            return None
        why.append(_describe_hits(covered))
    elif rule.action == "mask":
        covered = list(hits)  # a mask rule that names no labels masks every labelled value
        if covered:
            why.append(_describe_hits(covered))
    field = covered[0].path if covered and rule.action != "mask" else None
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
        "; ".join(why),
        covered,
        field=field,
        message=message,
        approvers=rule.approvers,
        timeout=rule.timeout,
        mask=rule.mask,
        source=str(rule.source) if rule.source else None,
    )


def _when_arguments(call: Call, query: Any) -> Any:
    if call.arguments is not None:
        return call.arguments
    if call.direction == "request" and call.protocol == "rest":
        return rest_arguments(call.body, query)
    return call.body


def _describe_hits(hits: list[Hit]) -> str:
    by_label: dict[str, list[str]] = {}
    for hit in hits:
        by_label.setdefault(hit.label.name, []).append(hit.path)
    parts = []
    for label, paths in by_label.items():
        shown = ", ".join(dict.fromkeys(paths[:MAX_LISTED_FIELDS]))
        more = f" and {len(paths) - MAX_LISTED_FIELDS} more" if len(paths) > MAX_LISTED_FIELDS else ""
        parts.append(f"{label} at {shown}{more}")
    return "labels " + "; ".join(parts)


# -- masking -----------------------------------------------------------------------------------


def _mask_plan(outcomes: list[_Outcome]) -> dict[Document, dict[tuple[int, Any], Any]]:
    """For every value an enforced mask rule covers, the strongest style wins; a whole-value
    mask of a field beats masks of spans inside it. `_masked` turns the plan into new values."""
    plan: dict[Document, dict[tuple[int, Any], Any]] = {}
    for outcome in outcomes:
        if outcome.action != "mask" or outcome.mask is None:
            continue
        for hit in outcome.hits:
            slots = plan.setdefault(hit.document, {})
            slot = slots.setdefault((hit.node, hit.key), {"whole": None, "spans": {}})
            if hit.span is None:
                _keep_strongest(slot, "whole", (outcome.mask, hit))
            else:
                _keep_strongest(slot["spans"], hit.span, (outcome.mask, hit))
    return plan


def _keep_strongest(table: dict[Any, Any], key: Any, candidate: tuple[str, Hit]) -> None:
    current = table.get(key)
    if current is None or MASK_STRENGTH[candidate[0]] > MASK_STRENGTH[current[0]]:
        table[key] = candidate


def _masked(document: Document, plan: dict[Document, Any], key: bytes) -> Any:
    slots = plan.get(document)
    if not slots:
        return document.holder[0]
    edits: dict[tuple[int, Any], Any] = {}
    done: dict[Any, Any] = {}  # the same value masked the same way (bodies repeat values)
    for (node, slot_key), slot in slots.items():
        value = document.value_at(node, slot_key)
        if slot["whole"] is not None:
            style, hit = slot["whole"]
            recipe: Any = (style, hit.label.name, hit.detector)
        else:
            chosen = slot["spans"]
            recipe = tuple((s, e, style, hit.label.name, hit.detector) for (s, e), (style, hit) in chosen.items())
            style, hit = next(iter(chosen.values()))
        memo = (type(value), value, _recipe_key(recipe)) if isinstance(value, (str, int, float)) else None
        new = done.get(memo) if memo is not None else None
        if new is None:
            if slot["whole"] is not None:
                new = mask_whole(value, style, hit.label.name, key, hit.detector)
            else:
                new = mask_spans(value, list(recipe), key)
            if memo is not None:
                done[memo] = new
        if new is REMOVE and (node, slot_key) == (HOLDER, 0):
            new = redact_token(hit.label.name)  # the body itself cannot be deleted
        if new is REMOVE or new != value:
            edits[(node, slot_key)] = new
    return apply_edits(document, edits)


def _recipe_key(recipe: Any) -> Any:
    """A cheap hashable key for a masking recipe (detectors are identified by name)."""
    if isinstance(recipe[0], str):
        style, label, detector = recipe
        return style, label, detector.name if detector else None
    return tuple((s, e, style, label, detector.name if detector else None) for s, e, style, label, detector in recipe)


# -- reporting ---------------------------------------------------------------------------------


def _findings(hits: list[Hit], outcomes: list[_Outcome], direction: str, key: bytes) -> tuple[Finding, ...]:
    covering: dict[int, list[_Outcome]] = {}
    for outcome in outcomes:
        for hit in outcome.hits:
            covering.setdefault(id(hit), []).append(outcome)
    verdicts: dict[tuple[int, ...], tuple[str, str | None, tuple[str, ...], bool]] = {}
    fingerprints: dict[tuple[Any, Any], str] = {}  # bodies repeat values; hash each once per call
    findings = []
    for hit in hits:
        related = covering.get(id(hit), ())
        signature = tuple(map(id, related))
        verdict = verdicts.get(signature)
        if verdict is None:
            verdict = verdicts[signature] = _verdict(related)
        raw = hit.raw
        cache_key = (hit.detector.name if hit.detector else None, type(raw), raw if isinstance(raw, (str, int, float)) else id(raw))
        print_ = fingerprints.get(cache_key)
        if print_ is None:
            print_ = fingerprints[cache_key] = fingerprint(normalize(raw, hit.detector), key)
        action, mask, rules, monitor = verdict
        findings.append(
            Finding(
                direction,
                hit.path,
                hit.label.name,
                hit.label.level,
                hit.detector.name if hit.detector else None,
                print_,
                hit.span,
                action,
                mask,
                rules,
                monitor,
            )
        )
    return tuple(findings)


def _verdict(related: Any) -> tuple[str, str | None, tuple[str, ...], bool]:
    """What the rules covering a value did with it: (action, mask style, rule ids, monitor only)."""
    enforced = [o for o in related if not o.monitor]
    deciding = enforced or list(related)
    masks = [o.mask for o in deciding if o.action == "mask" and o.mask]
    return (
        _strongest(deciding),
        max(masks, key=MASK_STRENGTH.__getitem__) if masks else None,
        tuple(o.rule for o in related),
        bool(related) and not enforced,
    )


def _rule_match(outcome: _Outcome) -> RuleMatch:
    fields = tuple(dict.fromkeys(hit.path for hit in outcome.hits))
    labels = tuple(dict.fromkeys(hit.label.name for hit in outcome.hits))
    return RuleMatch(outcome.rule, outcome.action, outcome.monitor, outcome.reason, fields, labels, outcome.mask, outcome.source)


def _explain(
    function: str,
    entry: Any,
    call: Call,
    findings: tuple[Finding, ...],
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
