"""The pure core of approvals: held calls, grants, argument hashes and the reviewer rules.

Nothing here knows mitmproxy or the event loop, so every rule about who may decide what is
tested on plain values (`tests/addons/approvals/test_holds.py`). The approvals addon turns flows into
`HeldCall`s and decisions into flows; the admin API turns HTTP requests into calls on it.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import secrets
import urllib.parse
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from typing import Any

from toolgate.rules import parse_duration
from toolgate.rules.durations import format_duration

DECISIONS = ("approved", "denied", "expired")
# Where a decision came from (the `channel` column of the store's `approvals` table).
CHANNELS = ("admin", "cli", "mitmweb", "timeout", "disconnect", "grant", "gateway")
REVIEW_CHANNELS = ("admin", "cli")  # the channels that carry a verified reviewer
MAX_GRANT = datetime.timedelta(hours=24)
ARGUMENTS_SHOWN = 64 * 1024  # characters of masked arguments shown to reviewers


class ReviewError(Exception):
    """A decision that is not allowed; `status` and `code` are the admin API's answer."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class Grant:
    """Calls of `function` by `subject` held by `rule` pass without holding until `expires_at`;
    with an `argument_hash`, only calls with exactly those arguments do."""

    id: str
    subject: str
    function: str | None
    rule: str | None
    argument_hash: str | None
    starts_at: float
    expires_at: float
    reviewer: str
    reason: str
    held_id: str
    # the function as shown and stored (`flowmeta.shown_function`), when it is not `function`
    shown_function: str | None = None

    def covers(self, subject: str | None, function: str | None, rule: str | None,
               argument_hash: str, now: float) -> bool:
        return (
            self.starts_at <= now < self.expires_at
            and subject is not None and subject == self.subject
            and function == self.function and rule == self.rule
            and (self.argument_hash is None or self.argument_hash == argument_hash)
        )

    @property
    def seconds(self) -> int:
        return int(round(self.expires_at - self.starts_at))

    @property
    def scope(self) -> str:
        """How the store's `scope` column describes it."""
        args = f"arguments sha256:{self.argument_hash}" if self.argument_hash else "any arguments"
        return (f"grant {format_duration(datetime.timedelta(seconds=self.seconds))}: "
                f"{self.subject} -> {self.shown_function or self.function}, {args}")

    def state(self) -> dict[str, Any]:
        """Every field, as the control plane keeps it (`from_state` reads it back)."""
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "Grant":
        return cls(**{f.name: state[f.name] for f in fields(cls) if f.name in state})

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "subject": self.subject,
            "function": self.shown_function or self.function, "rule": self.rule,
            "arguments": "same" if self.argument_hash else "any",
            "argument_hash": self.argument_hash, "starts_at": iso(self.starts_at),
            "expires_at": iso(self.expires_at), "seconds": self.seconds,
            "reviewer": self.reviewer, "reason": self.reason, "scope": self.scope,
        }


@dataclass(frozen=True)
class Verdict:
    """A decision on one held call."""

    decision: str  # approved | denied | expired
    channel: str
    reviewer: str | None
    reason: str
    decided_at: float
    grant: Grant | None = None
    argument_hash: str | None = None  # what a one-call approval is bound to

    def __post_init__(self) -> None:
        if self.decision not in DECISIONS or self.channel not in CHANNELS:
            raise ValueError(f"bad verdict {self.decision}/{self.channel}")

    def state(self) -> dict[str, Any]:
        return {**asdict(self), "grant": self.grant.state() if self.grant else None}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "Verdict":
        grant = state.get("grant")
        return cls(state["decision"], state["channel"], state.get("reviewer"),
                   state.get("reason") or "", float(state["decided_at"]),
                   Grant.from_state(grant) if grant else None, state.get("argument_hash"))

    @property
    def scope(self) -> str:
        if self.grant is not None:
            return self.grant.scope
        if self.decision == "approved" and self.argument_hash:
            return f"call: arguments sha256:{self.argument_hash}"
        return "call"

    def as_json(self) -> dict[str, Any]:
        return {
            "decision": self.decision, "channel": self.channel, "reviewer": self.reviewer,
            "reason": self.reason, "decided_at": iso(self.decided_at), "scope": self.scope,
            "grant": self.grant.as_json() if self.grant else None,
        }


@dataclass
class HeldCall:
    """A call waiting in the gateway for a decision."""

    id: str
    call_id: str
    subject: str | None
    groups: tuple[str, ...]
    anonymous: bool
    function: str | None
    rule: str | None
    approvers: tuple[str, ...]
    message: str
    field: str | None
    request: str  # "POST /deploy"
    arguments: Any  # the tool's (or REST call's) arguments after masking: what a reviewer sees
    argument_hash: str
    requested_at: float
    expires_at: float
    phase: str = "request"
    result: Any = None  # a held answer (phase "response"), masked: what a release lets out
    verdict: Verdict | None = None
    node: str | None = None  # in a fleet: the node whose caller waits
    hold: str = "wait"  # or "return": the caller was answered approval_pending and retries
    claimed: bool = False  # in a fleet: the verdict is the control plane's first decision
    # the function as shown and stored (`flowmeta.shown_function`), when it is not `function`
    # (which grants match): a tool, or a call named by its path, holding a labelled value
    shown_function: str | None = None

    @property
    def shown(self) -> str:
        """The function as reviewers, the log and the store see it."""
        return self.shown_function or self.function or self.request

    def state(self) -> dict[str, Any]:
        """The call as the control plane keeps it for every node's reviewers (undecided)."""
        state = asdict(self)
        for key in ("verdict", "claimed"):
            del state[key]
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "HeldCall":
        values = {f.name: state[f.name] for f in fields(cls)
                  if f.name in state and f.name not in ("verdict", "claimed")}
        values["groups"] = tuple(values.get("groups") or ())
        values["approvers"] = tuple(values.get("approvers") or ())
        return cls(**values)

    @property
    def access_review(self) -> bool:
        """Held because the caller's catalog grant is past its review period."""
        return bool(self.rule and self.rule.startswith("access:"))

    @property
    def caller(self) -> str:
        return self.subject or "anonymous"

    @property
    def retry_until(self) -> float:
        """How long a decided `return` hold waits for its caller's retry: as long as the call
        could have been held (at least a minute)."""
        assert self.verdict is not None
        return self.verdict.decided_at + max(self.expires_at - self.requested_at, 60.0)

    @property
    def binding(self) -> tuple[str | None, str | None, str | None, str]:
        """What a retry must share with a `return` hold to be its call: the same caller, the
        same function under the same rule, exactly the same arguments."""
        return (self.subject, self.function, self.rule, self.argument_hash)

    def summary(self) -> dict[str, Any]:
        """One entry of `GET /api/approvals` (with the node that holds it, in a fleet)."""
        return {
            "id": self.id, "call_id": self.call_id, "subject": self.subject,
            "function": self.shown_function or self.function, "rule": self.rule,
            "arguments": self.arguments,
            "requested_at": iso(self.requested_at), "expires_at": iso(self.expires_at),
            "hold": self.hold, **({"node": self.node} if self.node else {}),
        }

    def detail(self, now: float) -> dict[str, Any]:
        """`GET /api/approvals/{id}`: everything a reviewer needs to decide."""
        return {
            **self.summary(),
            "groups": list(self.groups), "anonymous": self.anonymous,
            "approvers": list(self.approvers), "message": self.message, "field": self.field,
            "request": self.request, "phase": self.phase, "argument_hash": self.argument_hash,
            "access_review": self.access_review,
            **({"result": self.result} if self.phase == "response" else {}),
            "age_seconds": round(max(0.0, now - self.requested_at), 1),
            "expires_in_seconds": round(max(0.0, self.expires_at - now), 1),
            "decided": self.verdict.as_json() if self.verdict else None,
        }

    def describe(self) -> str:
        """The comment mitmweb shows on the held flow."""
        if self.hold == "return":
            return (f"approval pending [{self.id}] · caller {self.caller} answered at once, "
                    f"retries once decided · rule {self.rule} · {self.shown}"
                    f" · approvers: {', '.join(self.approvers)} · {self.message} · arguments: "
                    f"{_brief(self.arguments)} · toolgate.approve / toolgate.deny decide it")
        why = ("access review overdue" if self.access_review else "answer held for release"
               if self.phase == "response" else "approval needed")
        approvers = ", ".join(self.approvers) or "the mitmweb operator"
        answer = f" · answer: {_brief(self.result)}" if self.phase == "response" else ""
        return (f"held [{self.id}] · {why} · rule {self.rule} · caller {self.caller} · "
                f"{self.shown} · approvers: {approvers} · "
                f"{self.message} · arguments: {_brief(self.arguments)}{answer} · "
                "Resume approves, Abort denies")


def _brief(value: Any, width: int = 300) -> str:
    text = json.dumps(value, separators=(",", ":"), default=str)
    return text[:width] + "…" if len(text) > width else text


class HeldCalls:
    """The registry of held calls, oldest first."""

    def __init__(self) -> None:
        self._calls: dict[str, HeldCall] = {}

    def __len__(self) -> int:
        return len(self._calls)

    def __iter__(self):
        return iter(sorted(self._calls.values(), key=lambda h: (h.requested_at, h.id)))

    def add(self, held: HeldCall) -> None:
        if held.id in self._calls:
            raise ValueError(f"held call {held.id} already exists")
        self._calls[held.id] = held

    def get(self, held_id: str) -> HeldCall | None:
        """By its id, or by the call id every answer carries in X-Toolgate-Call-Id."""
        held = self._calls.get(held_id)
        if held is None:
            held = next((h for h in self._calls.values() if h.call_id == held_id), None)
        return held

    def remove(self, held_id: str) -> HeldCall | None:
        return self._calls.pop(held_id, None)

    def pending(self) -> list[HeldCall]:
        return [h for h in self if h.verdict is None]

    def decide(self, held: HeldCall, verdict: Verdict) -> None:
        """Settle `held` once: the first decision wins, a later one is a conflict."""
        if held.verdict is not None or self._calls.get(held.id) is not held:
            raise ReviewError(409, "conflict", f"held call {held.id} is already decided"
                              + (f" ({held.verdict.decision})" if held.verdict else ""))
        held.verdict = verdict


class Grants:
    """Time-boxed approvals; they end on their own."""

    def __init__(self) -> None:
        self._grants: dict[str, Grant] = {}

    def add(self, grant: Grant) -> None:
        self._grants[grant.id] = grant

    def remove(self, grant_id: str) -> None:
        self._grants.pop(grant_id, None)

    def match(self, subject: str | None, function: str | None, rule: str | None,
              argument_hash: str, now: float) -> Grant | None:
        self.prune(now)
        return next((g for g in self._grants.values()
                     if g.covers(subject, function, rule, argument_hash, now)), None)

    def active(self, now: float) -> list[Grant]:
        self.prune(now)
        return sorted(self._grants.values(), key=lambda g: g.starts_at)

    def prune(self, now: float) -> None:
        for gid in [gid for gid, g in self._grants.items() if g.expires_at <= now]:
            del self._grants[gid]


# -- reviewer rules ----------------------------------------------------------------------------

def check_reviewer(held: HeldCall, reviewer: dict[str, Any], action: str, reason: str) -> str:
    """Whether `reviewer` (a verified identity, as `Caller.as_dict()`) may `action` ("approve"
    or "deny") `held`; their subject, or ReviewError saying why not. The call stays held."""
    if not (reason or "").strip():
        raise ReviewError(400, "bad_request", "a reason is required: say why (--reason TEXT)")
    subject = reviewer.get("subject")
    if not subject or reviewer.get("anonymous"):
        raise ReviewError(401, "identity", "the reviewer must present a valid OIDC token")
    if not held.approvers:
        raise ReviewError(403, "forbidden", f"rule {held.rule} names no approvers: only the "
                          "mitmweb operator can decide this call")
    if not set(reviewer.get("groups") or ()) & set(held.approvers):
        raise ReviewError(403, "forbidden", f"{subject} is not in the approvers of rule "
                          f"{held.rule} ({', '.join(held.approvers)})")
    if action == "approve" and held.subject is not None and subject == held.subject:
        raise ReviewError(403, "forbidden", "a caller can never approve their own call")
    return subject


def parse_grant_window(text: str | None) -> datetime.timedelta | None:
    """`30m` -> a grant's length (at most MAX_GRANT); None for a one-call approval."""
    if text is None or text == "":
        return None
    window = parse_duration(text)
    if window > MAX_GRANT:
        raise ValueError(f"a grant is at most {format_duration(MAX_GRANT)}, not {text}")
    return window


def new_grant(held: HeldCall, reviewer: str, reason: str, window: datetime.timedelta,
              same_args: bool, now: float) -> Grant:
    """A grant for the held call's caller and function, starting now (at approval)."""
    if held.subject is None or held.anonymous:
        raise ReviewError(400, "bad_request", "an anonymous caller cannot be granted a time "
                          "window: approve this one call instead")
    return Grant(
        id="g-" + secrets.token_hex(4), subject=held.subject, function=held.function,
        rule=held.rule, argument_hash=held.argument_hash if same_args else None,
        starts_at=now, expires_at=now + window.total_seconds(), reviewer=reviewer,
        reason=reason, held_id=held.id, shown_function=held.shown_function,
    )


def effective_timeout(option_seconds: int, rule_seconds: float | None) -> float:
    """How long a call waits: the rule's timeout if it sets one, never longer than the
    gateway's `toolgate_approval_timeout` (the operator's ceiling); 0 denies at once."""
    if option_seconds <= 0:
        return 0.0
    if rule_seconds is not None and rule_seconds > 0:
        return min(float(option_seconds), float(rule_seconds))
    return float(option_seconds)


# -- arguments ---------------------------------------------------------------------------------

def _parse_json(body: bytes) -> Any:
    if not body or body.lstrip()[:1] not in (b"{", b"["):
        raise ValueError
    return json.loads(body)


def _without_rpc_ids(doc: Any) -> Any:
    """A JSON-RPC message's `id` changes with every call: it is not an argument."""
    if isinstance(doc, dict) and doc.get("jsonrpc") == "2.0":
        return {k: v for k, v in doc.items() if k != "id"}
    if isinstance(doc, list):
        return [_without_rpc_ids(m) for m in doc]
    return doc


def argument_hash(method: str, path: str, body: bytes | None) -> str:
    """sha256 of the call's canonical arguments: method, path, sorted query, and the body (JSON
    re-serialized with sorted keys and without JSON-RPC ids; other bodies byte for byte)."""
    base, _, query = path.partition("?")
    try:
        content: Any = {"json": _without_rpc_ids(_parse_json(body or b""))}
    except (ValueError, RecursionError):
        content = {"bytes": base64.b64encode(body or b"").decode()}
    canonical = {
        "method": method.upper(), "path": base,
        "query": sorted(urllib.parse.parse_qsl(query, keep_blank_values=True)),
        "body": content,
    }
    data = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(data.encode()).hexdigest()


def arguments_view(path: str, body: bytes | None) -> Any:
    """The (already masked) arguments as a reviewer sees them: the JSON body, else its text,
    with the query string's parameters when there are any."""
    _, _, query = path.partition("?")
    shown: Any = None
    if body:
        try:
            shown = _parse_json(body)
        except (ValueError, RecursionError):
            text = body[:ARGUMENTS_SHOWN].decode("utf-8", "replace")
            shown = text + ("…" if len(body) > ARGUMENTS_SHOWN else "")
    params = urllib.parse.parse_qsl(query, keep_blank_values=True)
    if not params:
        return shown
    merged: dict[str, Any] = {}
    for key, value in params:
        merged.setdefault(key, []).append(value)
    query_view = {k: v[0] if len(v) == 1 else v for k, v in merged.items()}
    return query_view if shown is None else {"query": query_view, "body": shown}


def fingerprint(parts: Iterable[bytes]) -> str:
    """A digest of everything that makes a held flow what it is, to notice edits while held."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat(
        timespec="seconds").replace("+00:00", "Z")


def new_held_id() -> str:
    return secrets.token_hex(4)

