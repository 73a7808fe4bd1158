"""`toolgate rules test`: re-evaluate recorded calls against candidate rules, offline."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from toolgate.rules import bundled_packs_path
from toolgate.scripts.cli import cli

pytestmark = pytest.mark.e2e


def test_rules_test_lists_the_calls_whose_decision_would_change(start_gateway, backend, issuer, tmp_path):
    gateway = start_gateway("toolgate_approval_timeout=0")
    alice = {"Authorization": f"Bearer {issuer.keys.mint('alice', ['support'])}"}
    with gateway.client() as http:
        small = http.get("/customers/export?limit=50", headers=alice)  # held: overdue review
        big = http.get("/customers/export?limit=500", headers=alice)  # blocked
        read = http.get("/customers/1", headers=alice)  # masked
        http.get("/customers/1")  # no token: no policy decided it
    gateway.stop()
    candidate = tmp_path / "candidate"
    shutil.copytree(bundled_packs_path(), candidate, ignore=shutil.ignore_patterns("__*"))
    demo = candidate / "demo.yaml"
    demo.write_text(demo.read_text().replace("@.limit > 100", "@.limit > 10"))

    result = CliRunner().invoke(cli, ["rules", "test", str(candidate), "--json",
                                      "--db", str(tmp_path / "toolgate.duckdb")])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["evaluated"] == 3 and report["skipped"] == 1
    changed = {c["call_id"]: c for c in report["changed"]}
    small_id = small.headers["X-Toolgate-Call-Id"]
    assert changed[small_id]["recorded"] == "approve" and changed[small_id]["now"] == "block"
    assert "demo-no-bulk-export" in changed[small_id]["rules"]
    assert big.headers["X-Toolgate-Call-Id"] not in changed  # blocked before and after
    # The masked read: its labelled values were masked in the recording, so a weaker decision
    # now is undetermined, not a change.
    read_id = read.headers["X-Toolgate-Call-Id"]
    assert read_id not in changed
    [undetermined] = report["undetermined"]
    assert undetermined["call_id"] == read_id and "ssn" in undetermined["masked_in_recording"]

    unchanged = CliRunner().invoke(cli, ["rules", "test", str(bundled_packs_path()),
                                         "--db", str(tmp_path / "toolgate.duckdb")])
    assert unchanged.exit_code == 0 and "would change" in unchanged.output


def test_rules_test_refuses_rules_that_do_not_load(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - id: x\n    action: blur\n")
    result = CliRunner().invoke(cli, ["rules", "test", str(bad), "--db", str(tmp_path / "none")])
    assert result.exit_code == 1
    assert "bad.yaml:" in result.output


def test_rules_test_asks_the_running_gateway_when_it_holds_the_store(start_gateway, backend, issuer, tmp_path):
    gateway = start_gateway("toolgate_approval_timeout=0")
    alice = {"Authorization": f"Bearer {issuer.keys.mint('alice', ['support'])}"}
    with gateway.client() as http:
        held = http.get("/customers/export?limit=50", headers=alice)
    candidate = tmp_path / "candidate"
    shutil.copytree(bundled_packs_path(), candidate, ignore=shutil.ignore_patterns("__*"))
    demo = candidate / "demo.yaml"
    demo.write_text(demo.read_text().replace("@.limit > 100", "@.limit > 10"))
    reviewer = issuer.keys.mint("carol", ["sre-leads"])
    result = CliRunner().invoke(cli, [
        "rules", "test", str(candidate), "--json", "--db", str(tmp_path / "toolgate.duckdb"),
        "--admin", gateway.admin_url, "--token", reviewer])
    assert result.exit_code == 0, result.output
    changed = json.loads(result.output)["changed"]
    assert [c["call_id"] for c in changed] == [held.headers["X-Toolgate-Call-Id"]]
