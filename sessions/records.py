"""What gets recorded: plain values, built by the recorder addon from a flow, stored by the
writer. Secrets are removed here, when a record is made, so that no path into the store can
carry them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Union

from toolgate.rules.core import native

REDACTED = "[REDACTED]"

# Headers whose values are credentials as the caller (or the backend) sent them. Vaulted
# credentials injected by the gateway are named per call in `CallRecord.secret_headers`.
CREDENTIAL_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "set-cookie2",
        "x-api-key",
        "api-key",
        "x-auth-token",
        "x-access-token",
        "x-amz-security-token",
        "x-goog-api-key",
    }
)

# How a refusal (toolgate's error code) reads as a decision when the policy wrote none.
REFUSAL_DECISIONS = {
    "identity": "deny",
    "blocked": "block",
    "denied": "deny",
    "approval_timeout": "deny",
}

# Calls found in `pending` at start: the gateway stopped before their answer was recorded.
INTERRUPTED = "interrupted"

Headers = list[tuple[str, str]]


def redact_headers(headers: Iterable[tuple[str, str]], secret_names: Iterable[str] = ()) -> Headers:
    """`headers` with credential values replaced by `[REDACTED]`; names and order kept, so a
    responder still sees that a credential was sent."""
    secret = CREDENTIAL_HEADERS | {name.lower() for name in secret_names}
    return [(name, REDACTED if name.lower() in secret else value) for name, value in headers]


class FindingRow(NamedTuple):
    """One classified value: where it was and what it is, never the value itself. (The gateway
    records them as a FindingTable; this is a row of it for tools, tests and odd findings.)"""

    direction: str
    path: str
    label: str
    level: str | None = None
    action: str | None = None
    fingerprint: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "FindingRow":
        get = d.get
        return cls(
            str(get("direction") or ""),
            str(get("path") or ""),
            str(get("label") or ""),
            _opt_str(get("level")),
            _opt_str(get("action")),
            _opt_str(get("fingerprint")),
        )

    def as_dict(self) -> dict[str, Any]:
        return self._asdict()


# A call's findings as the store keeps them: the native core's six columns (direction, path,
# label, level, action, fingerprint), with its canonical JSON for the hash chain and its Arrow
# buffers for the `findings` table.
FindingTable = native.FindingTable
FindingItems = Union[FindingTable, Iterable[Any]]


def finding_table(findings: FindingItems) -> FindingTable:
    """`findings` as a FindingTable: it is one already, or items of the flow's metadata
    (`flowmeta.FINDINGS`: a unit's rows encoded by the policy as bytes, or one finding as a
    dict), or FindingRows."""
    if isinstance(findings, FindingTable):
        return findings
    return FindingTable([item if type(item) is bytes else _finding_row(item) for item in findings])


def finding_dicts(findings: FindingItems) -> list[dict[str, Any]]:
    """`findings` (see `finding_table`) as one dict per finding, in order: for tools and tests."""
    return [FindingRow(*row).as_dict() for row in finding_table(findings).rows()]


def _finding_row(item: Any) -> "FindingRow":
    if isinstance(item, FindingRow):
        return item
    if isinstance(item, Mapping):
        return FindingRow.from_dict(item)
    raise TypeError(f"not a finding: {type(item).__name__}")


@dataclass(slots=True)
class CallRecord:
    """One call. The request phase fills the request side; the response phase the rest."""

    call_id: str
    started_at: float
    method: str
    url: str
    request_headers: Headers
    request_body: bytes | None
    session_id: str | None = None
    ended_at: float | None = None
    client_addr: str | None = None
    subject: str | None = None
    issuer: str | None = None
    token_id: str | None = None
    groups: list[str] = field(default_factory=list)
    protocol: str | None = None
    function: str | None = None
    status: int | None = None
    response_headers: Headers | None = None
    response_body: bytes | None = None
    decision: str | None = None
    enforced: str | None = None
    rules: list[str] = field(default_factory=list)
    mode: str | None = None
    error: str | None = None
    forwarded: bool = False
    findings: FindingItems = field(default_factory=list)  # a FindingTable once made
    # Names of headers holding vaulted credentials the gateway injected into this call.
    secret_headers: tuple[str, ...] = ()
    # When the call was held for approval, on the `pending` row written as it was held.
    held_at: float | None = None

    def __post_init__(self) -> None:
        self.findings = finding_table(self.findings)
        self.request_headers = redact_headers(self.request_headers, self.secret_headers)
        if self.response_headers is not None:
            self.response_headers = redact_headers(self.response_headers, self.secret_headers)


@dataclass(frozen=True, slots=True)
class ApprovalRecord:
    """One reviewer decision on a held call (or its expiry)."""

    call_id: str
    requested_at: float | None
    decided_at: float | None
    decision: str
    reviewer: str | None = None
    channel: str | None = None
    reason: str | None = None
    scope: str | None = None


def final_decision(
    policy: Mapping[str, Any] | None, refused: str | None, forwarded: bool
) -> tuple[str, str, list[str], str | None]:
    """(decision, enforced, rules, mode) of a call.

    `decision` is what was decided: the policy's strongest action even where it was only
    monitored (`mode` says so), or a refusal that is a policy outcome (identity, a block, a
    reviewer's denial), which is what happened whatever the policy first planned. `enforced` is
    what was actually done to the call. Without a policy decision: `allow` if forwarded, else
    the refusal's code."""
    policy = policy or {}
    rules = [str(r) for r in policy.get("rules") or []]
    mode = _opt_str(policy.get("mode"))
    action = _opt_str(policy.get("action"))
    if refused in REFUSAL_DECISIONS:
        outcome = REFUSAL_DECISIONS[refused]
        if refused == "blocked" and action in ("block", "deny"):
            outcome = action  # e.g. deny: a function outside the catalog
        return outcome, outcome, rules, mode
    if action:
        return _opt_str(policy.get("would")) or action, action, rules, mode
    outcome = refused if refused and not forwarded else "allow"
    return outcome, outcome, rules, mode


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)
