"""The function catalog: naming REST calls, and checking who may call a function.

A REST call takes the name of the most specific catalog entry whose method, path glob and
(optional) host and protocol match, else `METHOD /path`. MCP and chat-completion calls arrive
with their tool name, which is looked up as is.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from toolgate.rules.durations import format_duration
from toolgate.rules.model import CatalogFunction, RuleSet


def find_function(
    ruleset: RuleSet,
    *,
    function: str | None,
    method: str | None,
    host: str | None,
    path: str | None,
    protocol: str | None,
) -> CatalogFunction | None:
    """The catalog entry of a call: by name when the protocol names it, else by method and path."""
    if function is not None:
        for entry in ruleset.functions:
            if entry.name == function and (entry.protocol is None or entry.protocol == protocol):
                return entry
        return None
    candidates = [entry for entry in ruleset.functions if entry.matches_http(method, host, path, protocol)]
    if not candidates:
        return None
    return max(candidates, key=_specificity)


def _specificity(entry: CatalogFunction) -> tuple[bool, int, int, bool, bool]:
    """Exact paths beat globs, longer literal prefixes beat shorter ones (`/customers/export`
    beats `/customers/*`), and entries that also pin method or host beat those that do not."""
    assert entry.path is not None
    return (entry.path.is_literal, len(entry.path.literal_prefix), len(entry.path.text), entry.method is not None, entry.host is not None)


def rest_name(method: str | None, path: str | None) -> str:
    return f"{(method or 'GET').upper()} {path or '/'}"


def is_rest_name(function: str | None, method: str | None) -> bool:
    """Whether `function` is only a call's method and path (`rest_name`: a REST call outside the
    catalog, or any call no protocol named): a path may hold values, so it is never a metric's
    label or a span's tool name. Decided by its shape, not by the flow's path, which the policy
    may have masked or replaced by the stored one since."""
    return not function or function.startswith(f"{(method or 'GET').upper()} /")


@dataclass(frozen=True)
class AccessOutcome:
    """Why the catalog's access grants stop or hold a call."""

    action: str  # "block" or "approve"
    reason: str
    approvers: tuple[str, ...] = ()


def check_access(entry: CatalogFunction, groups: tuple[str, ...], now: datetime.datetime) -> AccessOutcome | None:
    """None when a current grant covers one of the caller's groups.

    No grant for any of the caller's groups is a block; grants that exist but whose review is
    overdue make the call need an approval by the function's owner.
    """
    if not entry.access:
        return None
    mine = [grant for grant in entry.access if set(grant.groups) & set(groups)]
    if not mine:
        granted = sorted({group for grant in entry.access for group in grant.groups})
        return AccessOutcome(
            "block",
            f"group not granted: {entry.name} may be called by {', '.join(granted)}; "
            f"the caller's groups are {', '.join(groups) if groups else '(none)'}",
        )
    if all(grant.overdue(now) for grant in mine):
        grant = mine[0]
        assert grant.review_every is not None
        return AccessOutcome(
            "approve",
            f"access review overdue: the grant of {entry.name} to {', '.join(grant.groups)} was last reviewed "
            f"{grant.reviewed}, due every {format_duration(grant.review_every)} (overdue since {grant.review_due()})",
            (entry.owner,) if entry.owner else (),
        )
    return None
