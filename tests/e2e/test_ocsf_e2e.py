"""OCSF events for a SIEM through a real mitmdump: `toolgate_ocsf_file` streams each call's
events as the calls complete (an allowed call, a masked one with findings, a blocked one, a bad
token, a call held then denied); the file equals what `toolgate sessions export --format ocsf`
writes from the admin API while the gateway runs and from the store once it stopped; no raw
PII of the demo service and no caller's token is anywhere in the file's bytes."""

from __future__ import annotations

import json
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
import pytest
from click.testing import CliRunner
from harness import wait_until

from toolgate.scripts.cli import cli
from toolgate.scripts.demo_service import CUSTOMERS
from toolgate.scripts.harness import query

pytestmark = pytest.mark.e2e


def raw_values() -> set[str]:
    """Every spelling of the demo service's PII a leak could take."""
    values = set()
    for customer in CUSTOMERS:
        for field in ("email", "ssn", "card", "phone", "iban"):
            text = str(customer[field])
            values |= {text, text.replace(" ", ""), text.replace("-", "")}
    return {v for v in values if len(v) >= 8}


def events_in(data: bytes) -> list[dict[str, Any]]:
    assert data.endswith(b"\n"), "the file ends in the middle of a line"
    return [json.loads(line) for line in data.splitlines()]


def toolgate(*args: str) -> list[dict[str, Any]]:
    result = CliRunner().invoke(cli, ["sessions", "export", "--format", "ocsf", *args])
    assert result.exit_code == 0, result.output
    return events_in(result.stdout.encode())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_streamed_events_equal_the_export_and_hold_nothing_raw(start_gateway, backend, issuer,
                                                               tmp_path: Path):
    stream_file = tmp_path / "siem" / "toolgate.ocsf.jsonl"
    stream_file.parent.mkdir()
    gateway = start_gateway(f"toolgate_ocsf_file={stream_file}")
    alice = issuer.keys.mint("alice", ["support"])
    bob = issuer.keys.mint("bob", ["sre"])
    carol = issuer.keys.mint("carol", ["sre-leads"])
    head, payload, _ = alice.split(".")
    forged = f"{head}.{payload}.{bob.split('.')[2]}"  # alice's claims, bob's token's signature

    with gateway.client() as http, ThreadPoolExecutor(2) as pool:
        allowed = http.get("/healthz", headers=bearer(alice))
        assert allowed.status_code == 200, allowed.text
        masked = http.get("/customers/1", headers=bearer(alice))
        assert masked.status_code == 200 and masked.json()["ssn"] != CUSTOMERS[0]["ssn"]
        blocked = http.get("/customers/export?limit=500", headers=bearer(alice))
        assert blocked.status_code == 403 and blocked.json()["error"]["code"] == "blocked"
        refused = http.get("/customers/2", headers=bearer(forged))
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "identity"
        held = pool.submit(http.post, "/deploy", json={"service": "api", "version": "2"},
                           headers=bearer(bob), timeout=30)

        def pending() -> list[dict[str, Any]]:
            return httpx.get(gateway.admin_url + "/api/approvals", headers=bearer(carol),
                             timeout=10).json()["approvals"]

        [approval] = wait_until(pending, timeout=10, interval=0.05)
        denied = httpx.post(f"{gateway.admin_url}/api/approvals/{approval['id']}/deny",
                            json={"reason": "change freeze"}, headers=bearer(carol), timeout=10)
        assert denied.status_code == 200, denied.text
        assert held.result(15).status_code == 403

    # Streamed as the calls completed: one API Activity per call, while the gateway runs.
    assert wait_until(lambda: stream_file.exists() and sum(
        e["class_uid"] == 6003 for e in events_in(stream_file.read_bytes())) == 5, timeout=10)
    assert stat.S_IMODE(stream_file.stat().st_mode) == 0o600
    live = toolgate("--admin", gateway.admin_url, "--token", carol)
    streamed = events_in(stream_file.read_bytes())
    assert streamed == live
    scraped = httpx.get(gateway.admin_url + "/metrics", headers=bearer(carol), timeout=10).text
    counted = {s.name: s.value for f in text_string_to_metric_families(scraped) for s in f.samples}
    assert counted["toolgate_ocsf_calls_total"] == 5
    assert counted["toolgate_ocsf_events_total"] == len(streamed)
    assert counted["toolgate_ocsf_dropped_total"] == counted["toolgate_ocsf_failed_total"] == 0

    gateway.stop()
    db = tmp_path / "toolgate.duckdb"
    stored = toolgate("--db", str(db))
    streamed = events_in(stream_file.read_bytes())
    assert streamed == stored

    # One API Activity per call, one Authentication per identity refusal, one finding event
    # per finding, all joined by the call id.
    calls = {call_id: (decision, error) for call_id, decision, error in
             query(db, "SELECT call_id, decision, error FROM calls")}
    activities = {e["metadata"]["uid"]: e for e in streamed if e["class_uid"] == 6003}
    assert set(activities) == set(calls)
    assert sorted(e["unmapped"]["decision"] for e in activities.values()) == [
        "allow", "block", "deny", "deny", "mask"]
    [auth] = [e for e in streamed if e["class_uid"] == 3002]
    assert calls[auth["metadata"]["correlation_uid"]] == ("deny", "identity")
    assert auth["status"] == "Failure" and "signature" in auth["status_detail"]
    findings = [e for e in streamed if e["class_uid"] == 2006]
    stored_findings = query(db, "SELECT call_id, direction, path, label FROM findings")
    assert len(findings) == len(stored_findings) > 0
    assert sorted((f["metadata"]["correlation_uid"], f["unmapped"]["direction"],
                   f["unmapped"]["path"], f["unmapped"]["label"]) for f in findings) == sorted(
        stored_findings)
    masked_call = next(e for e in activities.values() if e["unmapped"]["decision"] == "mask")
    assert {f["metadata"]["correlation_uid"] for f in findings} == {
        masked_call["metadata"]["correlation_uid"]}
    assert {f["unmapped"]["label"] for f in findings} >= {"ssn", "email", "credit_card"}
    by_decision = {e["unmapped"]["decision"] + ("/" + e["unmapped"]["error"]
                                                if e["unmapped"]["error"] else ""): e
                   for e in activities.values()}
    assert by_decision["block/blocked"]["disposition"] == "Blocked"
    assert by_decision["deny/denied"]["actor"]["user"]["uid"] == "bob"
    assert by_decision["allow"]["status"] == "Success"

    # Nothing raw in the bytes: no PII of the demo service, no caller's token (nor a part).
    data = stream_file.read_bytes()
    tokens = {alice, bob, carol, forged, *alice.split("."), *bob.split("."),
              *forged.split(".")}
    assert sorted(v for v in raw_values() | tokens if v.encode() in data) == []
