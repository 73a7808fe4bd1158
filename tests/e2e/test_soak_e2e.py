"""The soak, reduced (`make soak` runs the full one, `scripts/soak.py`): a mix of allowed,
masked, blocked, held-then-decided and unauthenticated calls from concurrent callers through
the whole chain (identity, policy, approvals with a reviewer on the admin API, vaulted
credentials, recording under audit durability). Every answer must be the one its call must get,
and every call must be recorded exactly once: the store's call ids are the ones the callers
got, the backend received exactly the calls let through. No timings are asserted."""

from __future__ import annotations

import asyncio
import collections

import pytest

from toolgate.scripts import soak

pytestmark = pytest.mark.e2e

CALLS, CALLERS = 600, 20


def test_a_mixed_load_is_answered_right_and_recorded_exactly_once(
    start_gateway, backend, issuer, tmp_path
):
    creds = tmp_path / "creds.yaml"
    creds.write_text(soak.CREDENTIALS)
    gateway = start_gateway("flow_detail=0", f"toolgate_credentials={creds}",
                            env={soak.SECRET_ENV: soak.SECRET})
    kinds = soak.plan(CALLS)
    assert set(kinds) == set(soak.MIX)
    run = asyncio.run(soak.drive(
        gateway.url, kinds, soak.agent_tokens(issuer.keys, CALLERS),
        admin_url=gateway.admin_url, reviewer_token=issuer.keys.mint(*soak.REVIEWER)))
    gateway.stop()

    store = soak.read_store(tmp_path / "toolgate.duckdb")
    assert soak.check(run, store, backend.received) == []
    assert soak.log_problems(gateway.output) == []
    assert sorted(o.index for o in run.outcomes) == list(range(CALLS))
    assert sum(len(rows) for rows in store.calls.values()) == CALLS
    by_kind = collections.Counter(o.kind for o in run.outcomes)
    assert len(backend.received) == sum(by_kind[k] for k in soak.FORWARDED)
    held = by_kind["held_approved"] + by_kind["held_denied"]
    assert held and len(run.decisions) == held == sum(map(len, store.approvals.values()))
