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
from rules.masking import REMOVE, Fingerprints, apply_edits, mask_spans, mask_whole, redact_token
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
    prints = Fingerprints(mask_key)
    body = _masked(body_doc, plan, prints)
    masked_query = _masked(query_doc, plan, prints) if query_doc is not None else query
    # What the session store keeps: the forwarded body with every labelled value still in it
    # (allowed, only monitored, or in a refused call) redacted as well.
    record_plan = _redacting_rest(plan, hits)
    record_body, record_query = body, masked_query
    if record_plan is not plan:
        record_body = _masked(body_doc, record_plan, prints)
        record_query = _masked(query_doc, record_plan, prints) if query_doc is not None else query
    findings = _findings(hits, outcomes, call.direction, prints)
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
        record_body=record_body,
        record_query=record_query,
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
    by_label: dict[str, list[Hit]] = {}
    for hit in hits:
        by_label.setdefault(hit.label.name, []).append(hit)
    parts = []
    for label, labelled in by_label.items():  # only the listed paths are rendered
        shown = ", ".join(dict.fromkeys(hit.path for hit in labelled[:MAX_LISTED_FIELDS]))
        more = f" and {len(labelled) - MAX_LISTED_FIELDS} more" if len(labelled) > MAX_LISTED_FIELDS else ""
        parts.append(f"{label} at {shown}{more}")
    return "labels " + "; ".join(parts)


# -- masking -----------------------------------------------------------------------------------


@dataclass
class _MaskPlan:
    """For every value an enforced mask rule covers, the strongest style wins; a whole-value mask
    of a field beats masks of spans inside it. Per document: {(node, key): (style, hit)} for whole
    values and {(node, key): {span: (style, hit)}} for spans."""

    wholes: dict[Document, dict[tuple[int, Any], tuple[str, Hit]]]
    spans: dict[Document, dict[tuple[int, Any], dict[Any, tuple[str, Hit]]]]


def _mask_plan(outcomes: list[_Outcome]) -> _MaskPlan:
    plan = _MaskPlan({}, {})
    for outcome in outcomes:
        if outcome.action != "mask" or outcome.mask is None:
            continue
        style = outcome.mask
        strength = MASK_STRENGTH[style]
        for hit in outcome.hits:
            slot = (hit.node, hit.key)
            if hit.span is None:
                table = plan.wholes.setdefault(hit.document, {})
            else:
                table = plan.spans.setdefault(hit.document, {}).setdefault(slot, {})
                slot = hit.span
            current = table.get(slot)
            if current is None or strength > MASK_STRENGTH[current[0]]:
                table[slot] = (style, hit)
    return plan


def _redacting_rest(plan: _MaskPlan, hits: list[Hit]) -> _MaskPlan:
    """`plan` plus a redaction of every hit it leaves as it is; `plan` itself if none."""
    extra = [hit for hit in hits if not _planned(plan, hit)]
    if not extra:
        return plan
    wholes = {doc: dict(table) for doc, table in plan.wholes.items()}
    spans = {doc: {slot: dict(chosen) for slot, chosen in table.items()}
             for doc, table in plan.spans.items()}
    for hit in extra:
        if hit.span is None:
            wholes.setdefault(hit.document, {})[(hit.node, hit.key)] = ("redact", hit)
        else:
            spans.setdefault(hit.document, {}).setdefault((hit.node, hit.key), {})[hit.span] = ("redact", hit)
    return _MaskPlan(wholes, spans)


def _planned(plan: _MaskPlan, hit: Hit) -> bool:
    slot = (hit.node, hit.key)
    if slot in plan.wholes.get(hit.document, {}):
        return True
    return hit.span is not None and hit.span in plan.spans.get(hit.document, {}).get(slot, {})


def _masked(document: Document, plan: _MaskPlan, prints: Fingerprints) -> Any:
    wholes = plan.wholes.get(document, {})
    spans = plan.spans.get(document, {})
    if not wholes and not spans:
        return document.holder[0]
    edits: dict[tuple[int, Any], Any] = {}
    done: dict[Any, Any] = {}  # the same value masked the same way (bodies repeat values)
    containers = document.containers
    for slot, (style, hit) in wholes.items():
        value = containers[slot[0]][slot[1]]
        memo = (type(value), value, style, hit.label.name, hit.detector.name if hit.detector else None)
        _edit(edits, slot, value, done, memo, lambda: mask_whole(value, style, hit.label.name, prints, hit.detector), hit)
    for slot, chosen in spans.items():
        if slot in wholes:
            continue
        value = containers[slot[0]][slot[1]]
        recipe = [(s, e, style, hit.label.name, hit.detector) for (s, e), (style, hit) in chosen.items()]
        memo = (type(value), value, *((s, e, style, label, d.name if d else None) for s, e, style, label, d in recipe))
        _edit(edits, slot, value, done, memo, lambda: mask_spans(value, recipe, prints), next(iter(chosen.values()))[1])
    return apply_edits(document, edits)


def _edit(edits: dict[tuple[int, Any], Any], slot: tuple[int, Any], value: Any, done: dict[Any, Any], memo: Any, mask: Any, hit: Hit) -> None:
    """Record the masked form of `value` at `slot`, computing it once per distinct (value, recipe)."""
    hashable = isinstance(value, (str, int, float))
    new = done.get(memo) if hashable else None
    if new is None:
        new = mask()
        if hashable:
            done[memo] = new
    if new is REMOVE and slot == (HOLDER, 0):
        new = redact_token(hit.label.name)  # the body itself cannot be deleted
    if new is REMOVE or new != value:
        edits[slot] = new


# -- reporting ---------------------------------------------------------------------------------


def _findings(hits: list[Hit], outcomes: list[_Outcome], direction: str, prints: Fingerprints) -> tuple[Finding, ...]:
    covering: dict[int, list[_Outcome]] = {}
    for outcome in outcomes:
        for hit in outcome.hits:
            covering.setdefault(id(hit), []).append(outcome)
    verdicts: dict[tuple[int, ...], tuple[str, str | None, tuple[str, ...], bool]] = {}
    findings = []
    no_rule: tuple[_Outcome, ...] = ()
    for hit in hits:
        related = covering.get(id(hit), no_rule)
        signature = tuple(map(id, related))
        verdict = verdicts.get(signature)
        if verdict is None:
            verdict = verdicts[signature] = _verdict(related)
        detector = hit.detector
        findings.append(
            Finding(
                direction,
                hit.path,
                hit.label.name,
                hit.label.level,
                detector.name if detector else None,
                prints.of(hit.raw, detector),
                hit.span,
                *verdict,
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
