"""The match keys about the call itself (function, protocol, host, method, path, groups,
not_groups, subjects): one implementation for the rule engine and for the credential targets
of `toolgate_credentials`, so a target and a rule with the same `match` select the same calls.

Every given key must hold; a glob list or a choice list holds if any of its entries does.
`path` is the URL path without its query. The keys about values in a body (direction, labels,
levels, when) are the engine's own.
"""

from __future__ import annotations

from collections.abc import Sequence

from toolgate.rules.model import Match


def call_matches(
    match: Match,
    *,
    function: str | None,
    protocol: str | None,
    host: str | None,
    method: str | None,
    path: str | None,
    subject: str | None,
    groups: Sequence[str],
) -> bool:
    """Whether the call-level keys of `match` hold for this call. Cheap checks first."""
    if match.function and not any(glob.matches(function) for glob in match.function):
        return False
    if match.protocol and protocol not in match.protocol:
        return False
    if match.host and not any(glob.matches(host) for glob in match.host):
        return False
    if match.method and (method or "").upper() not in match.method:
        return False
    if match.path and not any(glob.matches(path) for glob in match.path):
        return False
    if match.groups and not set(groups) & set(match.groups):
        return False
    if match.not_groups and set(groups) & set(match.not_groups):
        return False
    if match.subjects and not any(glob.matches(subject) for glob in match.subjects):
        return False
    return True


def bare_path(path: str | None) -> str | None:
    """`/customers/42?x=1` -> `/customers/42`, as the engine sees a path (rules.bodies.split_path)."""
    return path.partition("?")[0] if path is not None else None
