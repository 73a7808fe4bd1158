"""What-if: re-evaluate a recorded call against another rule set (`toolgate rules test`).

A recorded call holds its bodies as they were forwarded and returned, after masking. A value
the recording rules masked cannot be found again, so a decision that rests on it may come out
weaker than it would on live traffic: `masked_labels` names the labels the recording found that
the re-evaluation did not, so a reader can tell.
"""

from __future__ import annotations

import base64
import secrets
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from toolgate.rules.decision import Call
from toolgate.rules.engine import evaluate
from toolgate.rules.model import STRENGTH, RuleSet
from toolgate.rules.protocols import (
    EVENT_STREAM, ProtocolError, Refused, StreamChecker, Unit, media_type, parse_request,
    parse_response,
)

# Outcomes recorded for calls that no policy decided (identity refusals, interruptions...).
POLICY_DECISIONS = ("allow", "mask", "approve", "block", "deny")


@dataclass
class WhatIf:
    call_id: str
    recorded: str
    now: str
    rules: list[str] = field(default_factory=list)
    masked_labels: list[str] = field(default_factory=list)
    note: str | None = None

    @property
    def undetermined(self) -> bool:
        """Weaker now, but values the recording found were masked in it: the new rules may
        well decide the same on live traffic, so this is not reported as a change."""
        return bool(self.masked_labels) and STRENGTH[self.now] < STRENGTH[self.recorded]

    @property
    def changed(self) -> bool:
        return self.recorded != self.now and not self.undetermined


def recorded_decision(call: dict[str, Any]) -> str | None:
    """The policy decision a recorded call had, or None if no policy decided it."""
    if call.get("error") == "identity" or call.get("decision") not in POLICY_DECISIONS:
        return None
    if call.get("decision") == "deny" and call.get("error") in ("denied", "approval_timeout"):
        return "approve"  # the policy held it; a reviewer (or the clock) said no
    return call["decision"]


def _body(call: dict[str, Any], side: str) -> bytes:
    text, encoding = call.get(f"{side}_body"), call.get(f"{side}_body_encoding")
    if text is None:
        return b""
    return base64.b64decode(text) if encoding == "base64" else text.encode("utf-8")


def _headers(call: dict[str, Any], side: str) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in call.get(f"{side}_headers") or []}


def reevaluate(ruleset: RuleSet, call: dict[str, Any]) -> WhatIf | None:
    """The call's decision under `ruleset`; None for calls no policy decided."""
    recorded = recorded_decision(call)
    if recorded is None:
        return None
    key = secrets.token_bytes(32)  # fingerprints and hash tokens are not compared
    url = urllib.parse.urlsplit(call.get("url") or "")
    query = {k: v[0] if len(v) == 1 else v for k, v in urllib.parse.parse_qs(url.query).items()}
    decisions: list[tuple[Unit, Any]] = []

    def judge(units: list[Unit]) -> Refused | None:
        for unit in units:
            decisions.append((unit, evaluate(ruleset, Call(
                direction=unit.direction, protocol=unit.protocol, function=unit.function,
                method=call.get("method"), host=url.hostname, path=url.path,
                query=query if unit.protocol == "rest" else None, subject=call.get("subject"),
                groups=tuple(call.get("groups") or ()), body=unit.body, arguments=unit.arguments,
                content=unit.content,
            ), key)))
        return None

    try:
        request_headers = _headers(call, "request")
        message = parse_request(url.path, request_headers.get("content-type"),
                                _body(call, "request"), request_headers)
        judge(message.units)
        if call.get("forwarded") and call.get("response_body") is not None:
            response_headers = _headers(call, "response")
            ctype = response_headers.get("content-type")
            if media_type(ctype) == EVENT_STREAM:
                checker = StreamChecker(message.context.get("protocol", message.protocol),
                                        message.context, judge, lambda refused, rid, rpc: {})
                checker(_body(call, "response"))
                checker(b"")
            else:
                judge(parse_response(message.context, ctype, _body(call, "response")).units)
    except ProtocolError as exc:
        return WhatIf(call["call_id"], recorded, "block", note=f"{exc.code}: {exc}")

    now = max((d.action for _, d in decisions), key=STRENGTH.__getitem__, default="allow")
    rules = list(dict.fromkeys(r for _, d in decisions for r in d.rules))
    found = {f.label for _, d in decisions for f in d.findings}
    masked = sorted({f["label"] for f in call.get("findings") or []} - found)
    return WhatIf(call["call_id"], recorded, now, rules, masked)
