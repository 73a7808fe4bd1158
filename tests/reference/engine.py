"""The reference engine: toolgate's `evaluate` before the native core, with its own pure-Python
classifier (reference.classify) built from the rule set's labels. The differential tests hold
`toolgate.rules.evaluate` to exactly its decisions, findings and bodies.

Decisions: evaluate one direction of a call against a rule set.

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
from reference.classify import Classifier, Hit
from toolgate.rules.decision import Call, Decision, Finding, RuleMatch
from reference.masking import REMOVE, TOKEN_HEX, Changes, Fingerprints, apply_edits, mask_spans, mask_whole, reapply_edits, redact_token
from toolgate.rules.model import MASK_STRENGTH, STRENGTH, Label, Origin, Rule, RuleSet
from reference.walk import HOLDER, Document

MAX_LISTED_FIELDS = 5


@dataclass(slots=True)
class _Outcome:
    """One reason the call gets an action: a matched rule or a catalog check."""

    rule: str
    action: str
    monitor: bool
    notes: list[str | None]  # why it applies; None stands for a description of the values it covers
    hits: list[Hit]  # the hits it covers, in document order
    field: str | None = None
    message: str | None = None
    approvers: tuple[str, ...] = ()
    timeout: datetime.timedelta | None = None
    hold: str = "wait"
    mask: str | None = None
    source: Origin | None = None
    labels: tuple[str, ...] = ()  # the labels of `hits`: a rule covers every hit of a label or none
    labelled: _Labelled | None = None

    @property
    def reason(self) -> str:
        """The notes as one text, rendered when it is read (see `Decision.matches`)."""
        return "; ".join(note if note is not None else _describe_hits(self.labelled, self.labels) for note in self.notes)


class _Labelled:
    """A call's hits, and the same hits grouped by label (rules select hits by label only)."""

    __slots__ = ("hits", "by_label", "labels")

    def __init__(self, hits: list[Hit]) -> None:
        self.hits = hits
        self.by_label: dict[str, list[Hit]] = {}  # in order of first occurrence
        self.labels: dict[str, Label] = {}
        for hit in hits:
            group = self.by_label.get(hit.label.name)
            if group is None:
                self.by_label[hit.label.name] = [hit]
                self.labels[hit.label.name] = hit.label
            else:
                group.append(hit)


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
    classifier = _classifier(ruleset)

    body_doc = Document(call.body)
    query_doc = Document(query, root_name="?") if query else None
    hits = classifier.classify(body_doc)
    if query_doc is not None:
        hits.extend(classifier.classify(query_doc))
    prints = Fingerprints(mask_key)
    names = _name_keys(hits, prints)

    outcomes: list[_Outcome] = []
    if call.direction == "request" and not call.content:  # prompts are not function calls
        outcomes.extend(_catalog_outcomes(ruleset, entry, function, call, monitor))
    labelled = _Labelled(hits)
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

    plan = _mask_plan(enforced)
    # What the session store keeps: the forwarded body with every labelled value still in it
    # (allowed, only monitored, or in a refused call) redacted as well.
    masked_labels = {name for o in enforced if o.action == "mask" and o.mask is not None for name in o.labels}
    delta = _record_delta(plan, hits, masked_labels)
    renames = _key_renames(enforced, names)
    body, record_body = _masked(body_doc, plan, delta, prints, renames)
    masked_query = record_query = query
    if query_doc is not None:
        masked_query, record_query = _masked(query_doc, plan, delta, prints, renames)
    findings = _findings(labelled, outcomes, call.direction, prints)
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


_CLASSIFIERS: dict[int, tuple[RuleSet, Classifier]] = {}


def _classifier(ruleset: RuleSet) -> Classifier:
    """The reference classifier of a rule set, built once (the rule set is kept alive with it)."""
    known = _CLASSIFIERS.get(id(ruleset))
    if known is None or known[0] is not ruleset:
        known = _CLASSIFIERS[id(ruleset)] = (ruleset, Classifier(ruleset.labels))
    return known[1]


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
            return [_Outcome("defaults.unknown_function", "deny", monitor, [reason], [], message=reason)]
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
            [],
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
    covered: list[Hit] = []
    names: tuple[str, ...] = ()
    if match.about_data:
        names = tuple(
            name
            for name, label in labelled.labels.items()
            if (not match.labels or name in match.labels) and (not match.levels or label.level in match.levels)
        )
        if not names:
            return None
        covered = labelled.hits
        if len(names) < len(labelled.labels):
            covered = [hit for hit in covered if hit.label.name in names]
        why.append(None)
    elif rule.action == "mask":
        names = tuple(labelled.labels)  # a mask rule that names no labels masks every labelled value
        covered = labelled.hits
        if covered:
            why.append(None)
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
        why,
        covered,
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
        hits = labelled.by_label[label]
        shown = ", ".join(dict.fromkeys(hit.path for hit in hits[:MAX_LISTED_FIELDS]))
        more = f" and {len(hits) - MAX_LISTED_FIELDS} more" if len(hits) > MAX_LISTED_FIELDS else ""
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
    """The masks the enforced `outcomes` put on the document(s)' values."""
    plan = _MaskPlan({}, {})
    for outcome in outcomes:
        if outcome.action != "mask" or outcome.mask is None:
            continue
        style = outcome.mask
        strength = MASK_STRENGTH[style]
        for hit in outcome.hits:
            if hit.in_key:  # keys are renamed, not masked (`_key_renames`)
                continue
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


def _record_delta(plan: _MaskPlan, hits: list[Hit], masked_labels: set[str]) -> _MaskPlan | None:
    """What the record version of the body masks beyond `plan`: a redaction of every hit `plan`
    leaves as it is. Only the slots that differ are listed (a span slot with its whole table:
    the plan's spans there plus the redactions); None when there are none. The hits of
    `masked_labels` (those an enforced mask rule covers) are all in the plan."""
    delta: _MaskPlan | None = None
    for hit in hits:
        if hit.in_key or hit.label.name in masked_labels or _planned(plan, hit):
            continue
        if delta is None:
            delta = _MaskPlan({}, {})
        slot = (hit.node, hit.key)
        if hit.span is None:
            delta.wholes.setdefault(hit.document, {})[slot] = ("redact", hit)
        else:
            tables = delta.spans.setdefault(hit.document, {})
            table = tables.get(slot)
            if table is None:
                table = tables[slot] = dict(plan.spans.get(hit.document, {}).get(slot, {}))
            table[hit.span] = ("redact", hit)
    return delta


def _planned(plan: _MaskPlan, hit: Hit) -> bool:
    slot = (hit.node, hit.key)
    if slot in plan.wholes.get(hit.document, {}):
        return True
    return hit.span is not None and hit.span in plan.spans.get(hit.document, {}).get(slot, {})


def _masked(
    document: Document, plan: _MaskPlan, delta: _MaskPlan | None, prints: Fingerprints, renames: _KeyRenames
) -> tuple[Any, Any]:
    """The document masked by `plan` (to forward), and by `plan` plus `delta` (to record), with
    the keys `renames` renames in each.

    The record version reuses the forwarded one's edits and copied containers: only the slots
    `delta` changes, and the containers on their way to the root, are done again. Without a
    delta both are the very same object."""
    empty: dict[Any, Any] = {}
    forwarded_keys = renames.forwarded.get(document, empty)
    recorded_keys = renames.recorded.get(document, empty)
    wholes = plan.wholes.get(document, empty)
    edits = _edits(document, wholes, plan.spans.get(document, empty), prints)
    changes: Changes = {}
    body = apply_edits(document, edits, changes, forwarded_keys)
    if delta is None and not renames.differ:
        return body, body
    extra_wholes = delta.wholes.get(document, empty) if delta is not None else empty
    extra_spans = delta.spans.get(document, empty) if delta is not None else empty
    if not extra_wholes and not extra_spans and recorded_keys == forwarded_keys:
        # The delta is in the call's other document. A record that differs from what is
        # forwarded only there is still a separate object (callers compare with `is`).
        return body, apply_edits(document, _edits(document, wholes, plan.spans.get(document, empty), prints), None, forwarded_keys)
    record_edits = dict(edits)
    for slot in extra_wholes:
        record_edits.pop(slot, None)
    for slot in extra_spans:
        if slot not in extra_wholes:
            record_edits.pop(slot, None)
    # a delta slot is never one of the plan's wholes (those hits are planned)
    record_edits.update(_edits(document, extra_wholes, extra_spans, prints, wholes))
    if not record_edits and not recorded_keys:
        return body, document.holder[0]
    if recorded_keys:
        return body, apply_edits(document, record_edits, None, recorded_keys)
    return body, reapply_edits(document, record_edits, changes, [*extra_wholes, *extra_spans])


@dataclass
class _KeyRenames:
    """Per document, {(node, key): new name or REMOVE} for the keys holding labelled values:
    `recorded` has all of them, `forwarded` those an enforced mask rule covers; `differ` when
    the two differ in any document of the call."""

    forwarded: dict[Document, dict[tuple[int, Any], Any]]
    recorded: dict[Document, dict[tuple[int, Any], Any]]
    differ: bool


def _name_keys(hits: list[Hit], prints: Fingerprints) -> dict[tuple[Document, int, Any], str]:
    """The new name of every key holding a labelled value: the hash token of its first value's
    label (`tok_email_<12 hex>`), of that value when it is the whole key, else of the key; `~2`,
    `~3`... after it when the name is taken in its object. Paths through the key show it."""
    firsts: dict[tuple[Document, int, Any], Hit] = {}
    for hit in hits:
        if hit.in_key:
            firsts.setdefault((hit.document, hit.node, hit.key), hit)
    if not firsts:
        return {}
    bases: dict[tuple[Document, int], dict[Any, str]] = {}
    for (document, node, key), hit in firsts.items():
        if hit.span == (0, len(key)):
            print_ = prints.of(hit.text, hit.detector)
        else:
            print_ = prints.of(key, None)
        bases.setdefault((document, node), {})[key] = f"tok_{hit.label.name}_{print_[:TOKEN_HEX]}"
    names: dict[tuple[Document, int, Any], str] = {}
    for (document, node), base_of in bases.items():
        container = document.containers[node]
        taken = {key for key in container if key not in base_of}
        renamed = {}
        # per base, the suffix to try next: names are only ever taken, so each search goes on
        # where the last one for its base stopped (thousands of keys with one base stay linear)
        suffixes: dict[str, int] = {}
        for key in container:
            base = base_of.get(key)
            if base is None:
                continue
            n = suffixes.get(base)
            name, n = (base, 2) if n is None else (f"{base}~{n}", n + 1)
            while name in taken:
                name, n = f"{base}~{n}", n + 1
            suffixes[base] = n
            taken.add(name)
            names[(document, node, key)] = renamed[(node, key)] = name
        document.rename_keys(renamed)
    return names


def _key_renames(outcomes: list[_Outcome], names: dict[tuple[Document, int, Any], str]) -> _KeyRenames:
    """Keys are renamed in the record always, and in the forwarded body when an enforced mask
    rule covers a value in them (the strongest rule's `remove` removes the member instead)."""
    renames = _KeyRenames({}, {}, False)
    if not names:
        return renames
    styles: dict[tuple[Document, int, Any], str] = {}
    for outcome in outcomes:
        if outcome.action != "mask" or outcome.mask is None:
            continue
        for hit in outcome.hits:
            if hit.in_key:
                slot = (hit.document, hit.node, hit.key)
                current = styles.get(slot)
                if current is None or MASK_STRENGTH[outcome.mask] > MASK_STRENGTH[current]:
                    styles[slot] = outcome.mask
    for (document, node, key), name in names.items():
        style = styles.get((document, node, key))
        new = REMOVE if style == "remove" else name
        renames.recorded.setdefault(document, {})[(node, key)] = new
        if style is not None:
            renames.forwarded.setdefault(document, {})[(node, key)] = new
        else:
            renames.differ = True
    return renames


def _edits(
    document: Document,
    wholes: dict[tuple[int, Any], tuple[str, Hit]],
    spans: dict[tuple[int, Any], dict[Any, tuple[str, Hit]]],
    prints: Fingerprints,
    also_whole: dict[tuple[int, Any], Any] | None = None,
) -> dict[tuple[int, Any], Any]:
    """{(node, key): masked value or REMOVE} for the slots whose value changes. A whole-value mask
    of a slot (in `wholes` or `also_whole`) beats masks of spans inside it. Each distinct (value,
    recipe) is masked once: bodies repeat values."""
    edits: dict[tuple[int, Any], Any] = {}
    done: dict[Any, Any] = {}
    containers = document.containers
    for slot, (style, hit) in wholes.items():
        value = containers[slot[0]][slot[1]]
        label, detector = hit.label.name, hit.detector
        hashable = isinstance(value, (str, int, float))
        memo = (type(value), value, style, label, detector.name if detector else None) if hashable else None
        new = done.get(memo) if hashable else None
        if new is None:
            new = mask_whole(value, style, label, prints, detector)
            if hashable:
                done[memo] = new
        if new is REMOVE and slot == (HOLDER, 0):
            new = redact_token(label)  # the body itself cannot be deleted
        if new is REMOVE or new != value:
            edits[slot] = new
    for slot, chosen in spans.items():
        if slot in wholes or (also_whole is not None and slot in also_whole):
            continue
        value = containers[slot[0]][slot[1]]  # a string: spans are found in text
        recipe = [(s, e, style, hit.label.name, hit.detector) for (s, e), (style, hit) in chosen.items()]
        if len(recipe) == 1:  # the usual case: one value in a field
            start, end, style, label, detector = recipe[0]
            memo = (type(value), value, start, end, style, label, detector.name if detector else None)
        else:
            memo = (type(value), value, *[(s, e, style, label, d.name if d else None) for s, e, style, label, d in recipe])
        new = done.get(memo)
        if new is None:
            new = done[memo] = mask_spans(value, recipe, prints)
        if new is REMOVE and slot == (HOLDER, 0):
            new = redact_token(recipe[0][3])  # the body itself cannot be deleted
        if new is REMOVE or new != value:
            edits[slot] = new
    return edits


# -- reporting ---------------------------------------------------------------------------------


def _findings(labelled: _Labelled, outcomes: list[_Outcome], direction: str, prints: Fingerprints) -> tuple[Finding, ...]:
    verdicts: dict[str, tuple[str, str | None, tuple[str, ...], bool]] = {}
    by_rules: dict[tuple[int, ...], tuple[str, str | None, tuple[str, ...], bool]] = {}
    for name in labelled.labels:  # labels covered by the same rules share a verdict
        related = [outcome for outcome in outcomes if name in outcome.labels]
        signature = tuple(map(id, related))
        verdict = by_rules.get(signature)
        if verdict is None:
            verdict = by_rules[signature] = _verdict(related)
        verdicts[name] = verdict
    new_finding = tuple.__new__  # Finding(...) without the named tuple's keyword handling
    of = prints.of
    findings = []
    for hit in labelled.hits:
        label, detector = hit.label, hit.detector
        findings.append(
            new_finding(
                Finding,
                (
                    direction,
                    hit.path,
                    label.name,
                    label.level,
                    detector.name if detector else None,
                    of(hit.raw, detector),
                    hit.span,
                    *verdicts[label.name],
                ),
            )
        )
    return tuple(findings)


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
    fields = tuple(dict.fromkeys(hit.path for hit in outcome.hits))
    labels = outcome.labels if outcome.hits else ()
    source = str(outcome.source) if outcome.source else None
    return RuleMatch(outcome.rule, outcome.action, outcome.monitor, outcome.reason, fields, labels, outcome.mask, source)


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
