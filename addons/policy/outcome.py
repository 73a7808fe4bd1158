"""What the policy decided for a whole message, from the decisions of its units, and how the
flow shows it: metadata for the recorder, a marker and a comment for mitmweb."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mitmproxy import http

from toolgate.addons import flowmeta
from toolgate.rules import Decision
from toolgate.rules.model import STRENGTH
from toolgate.rules.protocols import Refused, Unit
# mitmweb shows `flow.marked` as an emoji.
MARKERS = {"allow": ":white_check_mark:", "mask": ":see_no_evil:", "approve": ":hourglass:",
           "deny": ":no_entry:", "block": ":no_entry:"}
# The location of a message's headers, a unit of their own: findings read `headers.x-name`.
HEADERS_LOCATION = "headers"
# A request's path, a unit of its own too: findings read `path[N]`, N from its first segment.
PATH_LOCATION = "path"
CONTEXT_LOCATIONS = (HEADERS_LOCATION, PATH_LOCATION)


@dataclass
class CallDecision:
    """The outcome of one message (a request or a response) of a call."""

    phase: str
    action: str  # the strongest enforced action of its units
    would: str  # the strongest action had every rule been enforced
    function: str | None
    protocol: str | None
    rules: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    # what the store keeps: encoded rows of a unit (`Findings.encode`) or one finding's dict
    findings: list[bytes | dict[str, Any]] = field(default_factory=list)
    refused: Refused | None = None
    approval: dict[str, Any] | None = None
    changed_body: bool = False
    query: dict[str, Any] | None = None  # a masked query string, if it changed
    monitor: bool = False

    @property
    def refusal(self) -> bool:
        return self.action in ("block", "deny", "approve")

    def record(self, flow: http.HTTPFlow) -> None:
        """Merge into the call's decision on the flow (request and response together)."""
        call = flow.metadata.setdefault(flowmeta.DECISION, {
            "action": "allow", "would": "allow", "rules": [], "labels": [],
            "mode": "enforce", "protocol": self.protocol, "function": self.function,
        })
        if STRENGTH[self.action] >= STRENGTH[call["action"]] and self.action != "allow":
            call["action"] = self.action
        if STRENGTH[self.would] >= STRENGTH[call["would"]] and self.would != "allow":
            call["would"] = self.would
        call["function"] = call.get("function") or self.function
        call["rules"] = list(dict.fromkeys(call["rules"] + self.rules))
        call["labels"] = list(dict.fromkeys(call["labels"] + self.labels))
        if self.monitor:
            call["mode"] = "monitor"
        flow.metadata.setdefault(flowmeta.FINDINGS, []).extend(self.findings)
        flow.marked = MARKERS[call["would"] if call["would"] != "allow" else call["action"]]
        flow.comment = describe(call)


def decision_header(flow: http.HTTPFlow) -> str | None:
    """X-Toolgate-Decision: what enforcement would have done to the call, when it was not
    done (monitor mode, or rules in `mode: monitor`)."""
    call = flow.metadata.get(flowmeta.DECISION)
    if not call or call["would"] == call["action"]:
        return None
    return f"{call['would']}; mode=monitor; rules={','.join(call['rules']) or '-'}"


def describe(call: dict[str, Any]) -> str:
    text = f"{call['action']}"
    if call["would"] != call["action"]:
        text += f" (would {call['would']}: monitor)"
    text += f" · {call.get('function') or 'unknown function'}"
    if call["rules"]:
        text += f" · rules: {', '.join(call['rules'])}"
    if call["labels"]:
        text += f" · labels: {', '.join(call['labels'])}"
    return text


def summarize(decisions: list[tuple[Unit, Decision]], phase: str, jsonrpc: bool) -> CallDecision:
    """One outcome for a message: the strongest unit decides, masks from all units apply."""
    outcome = CallDecision(phase, "allow", "allow", None, None)
    decisive: tuple[Unit, Decision] | None = None
    for unit, decision in decisions:
        outcome.protocol = outcome.protocol or unit.protocol
        if not unit.content:  # the text of a prompt does not name the call
            outcome.function = outcome.function or decision.function
        outcome.monitor = outcome.monitor or decision.mode == "monitor"
        outcome.rules += [r for r in decision.rules if r not in outcome.rules]
        labels = outcome.labels
        for label in decision.findings.labels():
            if label not in labels:
                labels.append(label)
        if decision.findings:  # as the store keeps them, paths inside the message
            outcome.findings.append(decision.findings.encode(unit.location))
        action, would = _actions(unit, decision)
        if STRENGTH[action] > STRENGTH[outcome.action]:
            outcome.action, decisive = action, (unit, decision)
        if STRENGTH[would] > STRENGTH[outcome.would]:
            outcome.would = would
        if decision.changed and decision.action != "block" and unit.location not in CONTEXT_LOCATIONS:
            if unit.protocol == "rest" and decision.query is not None:
                outcome.query = dict(decision.query)
            outcome.changed_body = outcome.changed_body or decision.body is not unit.body
    if decisive is not None:
        unit, decision = decisive
        where = _field(unit, decision.field) if decision.field else unit.location
        if outcome.action == "approve":
            outcome.approval = {
                "rule": decision.rule, "function": decision.function,
                "approvers": list(decision.approvers),
                "timeout": decision.timeout.total_seconds() if decision.timeout else None,
                "hold": decision.hold,
                "message": decision.message or f"{decision.function} needs an approval",
                "field": where,
                # What the reviewer sees: the decided unit as masked (a tool's arguments, not
                # the message around them), and what the approvals addon needs to find it.
                "protocol": unit.protocol,
                "arguments" if unit.direction == "request" else "result": decision.body,
                "rpc_id": unit.rpc_id if unit.is_rpc else None,
            }
        code = "blocked"
        message = decision.message or (
            f"{decision.function} is not in the function catalog" if decision.action == "deny"
            else f"{decision.function} is not allowed by rule {decision.rule}"
        )
        outcome.refused = Refused(code, message, decision.rule, where)
    return outcome


def _actions(unit: Unit, decision: Decision) -> tuple[str, str]:
    """A unit's (action, would). Headers and a path are a mask only when a value in them is (or
    would be) masked: a mask rule that matches the call without naming labels leaves them as
    they are."""
    action, would = decision.action, decision.would
    if unit.location in CONTEXT_LOCATIONS:
        if action == "mask" and not decision.changed:
            action = "allow"
        if would == "mask" and not decision.findings.any_action("mask"):
            would = "allow" if action == "allow" else action
    return action, would


def _field(unit: Unit, path: str | None) -> str:
    """A finding's or rule's path inside the unit, as a path inside the whole message."""
    if not path or unit.location == "$":
        return path or unit.location
    if path.startswith("$"):
        return unit.location + path[1:]
    return f"{unit.location}{path}"
