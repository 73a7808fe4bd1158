"""A gateway that is a node of a fleet, through a real mitmdump: its rows carry its node id, it
seals what its store committed into the archive every interval (and at shutdown), its health
says how far, and `toolgate sessions list | verify --archive` read and check the segments."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
import pytest
from click.testing import CliRunner

from harness import wait_until
from toolgate.scripts.cli import cli
from toolgate.scripts.harness import query
from toolgate.sessions.archive import list_segments

pytestmark = pytest.mark.e2e


def toolgate(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_a_node_seals_its_calls_into_the_archive(start_gateway, issuer, tmp_path: Path):
    archive = tmp_path / "archive"
    archive.mkdir()
    gateway = start_gateway(f"toolgate_archive={archive}", "toolgate_node=gw-a",
                            "toolgate_archive_interval=1")
    auth = {"Authorization": f"Bearer {issuer.keys.mint('alice', ['sre', 'support'])}"}
    with gateway.client() as http:
        answers = [http.get(f"/customers/{n}", headers=auth) for n in (1, 2, 3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    call_ids = {a.headers["X-Toolgate-Call-Id"] for a in answers}

    def sealed() -> dict | None:
        health = httpx.get(gateway.admin_url + "/healthz", timeout=10).json()["store"]
        calls = (health["archive"]["sealed"] or {}).get("calls") or {}
        return health if calls.get("seq", 0) >= 3 else None

    health = wait_until(sealed, timeout=15)
    assert health, "the calls were not sealed within a few intervals"
    assert health["node"] == "gw-a"
    assert health["archive"]["node"] == "gw-a" and health["archive"]["last_error"] is None
    assert health["archive"]["dir"] == str(archive.resolve())
    files = list_segments(archive / "gw-a")["calls"]
    assert files and files[0].first_seq == 1 and files[-1].last_seq >= 3
    assert not list((archive / "gw-a").glob(".*"))  # no temporary file left behind
    scraped = httpx.get(gateway.admin_url + "/metrics", headers=auth, timeout=10)
    assert scraped.status_code == 200, scraped.text
    counted = {s.name: s.value for f in text_string_to_metric_families(scraped.text)
               for s in f.samples}
    assert counted["toolgate_archive_seals_total"] >= 1
    assert counted["toolgate_archive_segments_total"] >= len(files)
    assert counted["toolgate_archive_failures_total"] == 0
    gateway.stop()

    assert {row[0] for row in query(tmp_path / "toolgate.duckdb",
                                    "SELECT DISTINCT node_id FROM calls")} == {"gw-a"}
    listed = toolgate("sessions", "list", "--archive", str(archive), "--json")
    assert listed.exit_code == 0, listed.output
    calls = json.loads(listed.output)["calls"]
    assert {c["call_id"] for c in calls} == call_ids
    assert {c["node"] for c in calls} == {"gw-a"}
    verified = toolgate("sessions", "verify", "--archive", str(archive))
    assert verified.exit_code == 0, verified.output
    assert "ok: 1 node(s), 3 call(s)" in verified.output
    exported = toolgate("sessions", "export", "--format", "ocsf", "--archive", str(archive))
    assert exported.exit_code == 0, exported.output
    activities = [json.loads(line) for line in exported.stdout.splitlines()]
    assert {e["metadata"]["correlation_uid"] for e in activities
            if e["class_uid"] == 6003} == call_ids
    assert toolgate("sessions", "verify", "--db", str(tmp_path / "toolgate.duckdb")).exit_code == 0
