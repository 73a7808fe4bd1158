"""`toolgate rules check` and `toolgate rules explain`, through click's CliRunner."""

import json

import pytest
from click.testing import CliRunner

from toolgate.rules import bundled_packs_path
from toolgate.scripts.cli_rules import mcp_tool_call, parse_caller, rules

PACKS = str(bundled_packs_path())
CUSTOMER = {"id": 42, "email": "jane@example.com", "ssn": "123-45-6789", "card": 4242424242424242, "phone": "(415) 555-2671"}


@pytest.fixture
def run():
    runner = CliRunner()

    def invoke(*args, **kwargs):
        return runner.invoke(rules, list(args), catch_exceptions=False, **kwargs)

    return invoke


def test_check_passes_on_the_bundled_packs(run):
    result = run("check", PACKS)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ok: 3 file(s)")


def test_check_json_summary(run):
    result = run("check", PACKS, "--json")
    data = json.loads(result.output)
    assert data["ok"] and "demo-no-bulk-export" in {rule["id"] for rule in data["rules"]}


def test_check_reports_every_error_with_file_and_line(run, write_rules):
    path = write_rules(
        """
        labels:
          - {name: x, level: restricted, detector: us_ssn}
        rules:
          - id: mask-x
            match: {labels: [x]}
            action: mask
            mask: blur
          - id: mask-x
            action: allow
        """,
        "pii.yaml",
    )
    result = run("check", str(path))
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert f"{path}:7: rule 'mask-x': unknown mask style 'blur' (use one of: redact, partial, hash, remove)" in lines
    assert any(line.startswith(f"{path}:8: duplicate rule id 'mask-x'") for line in lines)
    assert "2 errors" in result.stderr


def test_check_json_errors(run, write_rules):
    path = write_rules("rules:\n  - {id: r, action: nope}\n")
    result = run("check", str(path), "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {"ok": False, "errors": [{"file": str(path), "line": 2, "message": "rule 'r': unknown action 'nope' (use one of: allow, mask, block, approve)"}]}


def test_usage_errors_exit_2(run):
    assert run("check").exit_code == 2
    assert run("explain", PACKS).exit_code == 2


def test_explain_a_rest_call_and_its_response(run, tmp_path):
    (tmp_path / "req.json").write_text("")
    (tmp_path / "resp.json").write_text(json.dumps(CUSTOMER))
    result = run(
        "explain", PACKS, "--request", str(tmp_path / "req.json"), "--response", str(tmp_path / "resp.json"),
        "--method", "GET", "--path", "/customers/42", "--as", "ana:support", "--mask-key", "env:TG_KEY",
        env={"TG_KEY": "secret"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = result.output
    assert "request: crm.get_customer" in out and "response: crm.get_customer" in out
    assert "$.ssn [0:11]  ssn  restricted  mask (partial)" in out
    assert "$.card  credit_card  restricted  mask (partial)" in out
    assert "decision: mask" in out and "***-**-6789" in out and "************4242" in out
    for raw in ("123-45-6789", "jane@example.com", "4242424242424242"):
        assert raw not in out


def test_explain_an_mcp_tools_call_json(run, tmp_path):
    call = {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "export_customers", "arguments": {"limit": 500}}}
    (tmp_path / "mcp.json").write_text(json.dumps(call))
    result = run("explain", PACKS, "--request", str(tmp_path / "mcp.json"), "--as", "ana:support", "--json")
    data = json.loads(result.output)
    request = data["request"]
    assert request["function"] == "export_customers" and request["action"] == "block"
    assert request["rule"] == "demo-no-bulk-export" and request["field"] == "$.limit"


def test_explain_query_arguments_and_review_date(run):
    args = ["explain", PACKS, "--request", "-", "--method", "GET", "--path", "/customers/export?limit=10", "--as", "ana:support", "--json"]
    overdue = json.loads(run(*args, "--now", "2026-11-21", input="").output)["request"]
    assert overdue["action"] == "approve" and overdue["approvers"] == ["crm-team"]


def test_explain_monitor_flag(run, tmp_path):
    (tmp_path / "deploy.json").write_text(json.dumps({"service": "api", "version": "1.2"}))
    result = run("explain", PACKS, "--request", str(tmp_path / "deploy.json"), "--path", "/deploy", "--as", "sam:sre", "--monitor", "--json")
    request = json.loads(result.output)["request"]
    assert request["action"] == "allow" and request["would"] == "approve" and request["mode"] == "monitor"


def test_explain_refuses_rules_that_do_not_load(run, write_rules, tmp_path):
    path = write_rules("rules:\n  - {id: r, action: nope}\n")
    (tmp_path / "req.json").write_text("{}")
    result = run("explain", str(path), "--request", str(tmp_path / "req.json"))
    assert result.exit_code == 1 and f"{path}:2:" in result.stderr


def test_helpers():
    assert parse_caller("alice:support, sre") == ("alice", ("support", "sre"))
    assert parse_caller(":ops") == (None, ("ops",))
    assert parse_caller(None) == (None, ())
    assert mcp_tool_call({"method": "tools/call", "params": {"name": "t", "arguments": {"a": 1}}}) == ("t", {"a": 1})
    assert mcp_tool_call({"method": "tools/list"}) is None


def test_explain_an_approve_rule_without_direction_leaves_the_answer_alone(run, write_rules, tmp_path):
    path = write_rules("rules:\n  - {id: deploys-need-approval, match: {function: \"deploy.*\"}, action: approve, approvers: [sre-leads]}\n")
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "deploy.start", "arguments": {"service": "api"}}}
    (tmp_path / "req.json").write_text(json.dumps(call))
    (tmp_path / "resp.json").write_text(json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"ok": True}}))
    data = json.loads(run("explain", str(path), "--request", str(tmp_path / "req.json"), "--response", str(tmp_path / "resp.json"), "--json").output)
    assert data["request"]["action"] == "approve" and data["request"]["rule"] == "deploys-need-approval"
    assert data["response"]["action"] == "allow" and data["response"]["rules"] == []
    listed = json.loads(run("check", str(path), "--json").output)["rules"][0]
    assert "direction=request" in listed["match"]
