"""`toolgate sessions report`'s picture of a run: the aggregates `/api/report` adds (calls over
time by decision, function durations, labels, held-call waits), computed by DuckDB on a store,
through a running gateway's admin API and on a fleet's archive, and the rich view drawn from
them (`scripts/report_view.py`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from toolgate.scripts import cli_sessions
from toolgate.scripts.cli import cli
from toolgate.scripts.report_view import (
    DecisionChart, bucket_width, chart_buckets, duration, report_view, stack,
)
from toolgate.sessions import api, query
from toolgate.sessions.archive import Archive
from toolgate.sessions.readonly import open_read_only
from toolgate.sessions.records import FindingRow
from storekit import make_call, record_all

HERE = Path(__file__).parent
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
UNTIL = "2026-01-01T00:20:00Z"  # the run: 00:00..00:19:30, in 30 s buckets
SSN = FindingRow("response", "$.ssn", "ssn", "restricted", "mask", "ab" * 32)
EMAIL = FindingRow("request", "$.to", "email", "confidential", "allow", "cd" * 32)


def toolgate(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(cli, list(args), env=env)


def at(minutes: float, duration_ms: float = 10, **fields):
    start = T0 + minutes * 60
    return make_call(started_at=start, ended_at=start + duration_ms / 1000, **fields)


def the_run() -> list:
    """12 calls over 19.5 minutes: five reads allowed, three exports blocked, two deploys
    held and approved, a mail denied and one masked."""
    return [
        *[at(m, 10 * (m + 1), call_id=f"read{m}", function="crm.get_customer",
             decision="allow", findings=[SSN] if m < 2 else []) for m in range(5)],
        *[at(m, 100, call_id=f"export{i}", function="crm.export", decision="block",
             status=403, findings=[SSN, SSN] if i == 0 else [])
          for i, m in enumerate((10, 10.5, 11))],
        at(15, 40_000, call_id="deploy1", function="deploy.start", decision="approve",
           findings=[]),
        at(16, 10_000, call_id="deploy2", function="deploy.start", decision="approve",
           findings=[]),
        at(19, call_id="mail1", function="mail.send", decision="deny", status=401,
           findings=[EMAIL]),
        at(19.5, call_id="mail2", function="mail.send", decision="mask", findings=[]),
    ]


def approvals(w) -> None:
    """Five holds: three approved by admin (10, 20, 30 s), one denied on slack (5 s), one
    expired (60 s)."""
    for call_id, minute, wait, decision, channel in [
        ("deploy1", 15, 10, "approved", "admin"), ("deploy2", 16, 20, "approved", "admin"),
        ("deploy1", 15.2, 30, "approved", "admin"), ("mail1", 18, 5, "denied", "slack"),
        ("mail1", 17, 60, "expired", "timeout"),
    ]:
        requested = T0 + minute * 60
        w.record_approval(call_id, requested, requested + wait, decision, "carol", channel,
                          "why", "call").result(10)


@pytest.fixture
def store(open_writer, db) -> Path:
    w = open_writer()
    record_all(w, the_run())
    approvals(w)
    w.stop()
    w.join(10)
    return db


def answer(db: Path, **params: str) -> dict:
    store = open_read_only(db)
    try:
        status, body = store.answer("/api/report", {"until": UNTIL, **params})
    finally:
        store.close()
    assert status == 200, body
    return body


def rendered(report: dict, width: int = 100) -> str:
    console = Console(record=True, width=width, file=open("/dev/null", "w"))
    console.print(report_view(report))
    return console.export_text()


# -- the answer's new fields ----------------------------------------------------------------


def test_calls_over_time_are_bucketed_by_decision(store):
    timeline = answer(store)["timeline"]
    assert timeline["bucket_ms"] == 30_000 and len(timeline["buckets"]) == 40
    assert timeline["start"] == "2026-01-01T00:00:00Z"
    assert timeline["end"] == "2026-01-01T00:19:59.999999Z"  # --until is exclusive
    by_start = {b["start"]: b["decisions"] for b in timeline["buckets"]}
    assert by_start["2026-01-01T00:00:00Z"] == {"allow": 1}
    assert by_start["2026-01-01T00:00:30Z"] == {}  # empty buckets are listed too
    assert by_start["2026-01-01T00:10:00Z"] == {"block": 1}
    assert by_start["2026-01-01T00:10:30Z"] == {"block": 1}
    assert by_start["2026-01-01T00:19:30Z"] == {"mask": 1}
    totals: dict[str, int] = {}
    for bucket in timeline["buckets"]:
        for decision, n in bucket["decisions"].items():
            totals[decision] = totals.get(decision, 0) + n
    assert totals == {"allow": 5, "block": 3, "approve": 2, "deny": 1, "mask": 1}
    # Fewer buckets asked for: a wider round bucket.
    coarse = answer(store, buckets="10")["timeline"]
    assert coarse["bucket_ms"] == 120_000 and len(coarse["buckets"]) == 10
    assert coarse["buckets"][5]["decisions"] == {"block": 3}


def test_functions_labels_and_holds(store):
    report = answer(store)
    functions = {f["function"]: f for f in report["by_function"]}
    reads = functions["crm.get_customer"]
    assert (reads["calls"], reads["p50_ms"], reads["p95_ms"], reads["max_ms"]) == (
        5, 30.0, 48.0, 50.0)
    assert functions["deploy.start"]["max_ms"] == 40_000.0
    assert report["labels"] == [
        {"label": "ssn", "level": "restricted", "findings": 4, "calls": 3,
         "actions": {"mask": 4}},
        {"label": "email", "level": "confidential", "findings": 1, "calls": 1,
         "actions": {"allow": 1}},
    ]
    holds = report["holds"]
    assert holds["count"] == 5
    assert holds["decisions"] == {"approved": 3, "denied": 1, "expired": 1}
    assert (holds["p50_ms"], holds["p95_ms"], holds["max_ms"]) == (20_000.0, 54_000.0, 60_000.0)
    assert [(c["channel"], c["count"], c["p50_ms"]) for c in holds["by_channel"]] == [
        ("admin", 3, 20_000.0), ("slack", 1, 5000.0), ("timeout", 1, 60_000.0)]
    assert holds["by_channel"][1]["decisions"] == {"approved": 0, "denied": 1, "expired": 0}


def test_the_range_narrows_every_aggregate(store):
    report = answer(store, since="2026-01-01T00:10:00Z", until="2026-01-01T00:12:00Z")
    assert report["total"] == 3 and report["by_decision"] == {"block": 3}
    assert report["timeline"]["start"] == "2026-01-01T00:10:00Z"
    assert [f["function"] for f in report["by_function"]] == ["crm.export"]
    assert report["labels"] == [{"label": "ssn", "level": "restricted", "findings": 2,
                                 "calls": 1, "actions": {"mask": 2}}]
    assert report["holds"]["count"] == 0 and report["holds"]["by_channel"] == []


def test_the_existing_fields_are_unchanged(store):
    report = answer(store, fail_on="block")
    assert report["by_decision"] == {"allow": 5, "approve": 2, "block": 3, "deny": 1, "mask": 1}
    assert {k: report[k] for k in ("total", "fail_on", "failed_count", "passed")} == {
        "total": 12, "fail_on": ["block"], "failed_count": 3, "passed": False}
    assert [c["call_id"] for c in report["failed"]] == ["export0", "export1", "export2"]
    assert [(f["function"], f["protocol"], f["calls"], f["decisions"])
            for f in report["by_function"]][:2] == [
        ("crm.export", "rest", 3, {"block": 3}), ("crm.get_customer", "rest", 5, {"allow": 5})]


def test_an_empty_store_answers_empty_aggregates(open_writer, db):
    w = open_writer()
    w.stop()
    w.join(10)
    store = open_read_only(db)
    try:
        status, report = store.answer("/api/report", {})
    finally:
        store.close()
    assert status == 200 and report["total"] == 0
    assert report["timeline"] == {"start": None, "end": None, "bucket_ms": None, "buckets": []}
    assert report["labels"] == [] and report["holds"]["count"] == 0
    assert report["holds"]["decisions"] == {"approved": 0, "denied": 0, "expired": 0}


@pytest.mark.parametrize("buckets", ["0", "201", "many"])
def test_a_bad_bucket_count_is_a_bad_request(store, buckets):
    ro = open_read_only(store)
    try:
        status, body = api.handle(ro.con, "/api/report", {"buckets": buckets})
    finally:
        ro.close()
    assert status == 400 and "buckets" in body["error"]["message"]


@pytest.mark.parametrize("span_s, buckets, width_ms", [
    (0, 40, 10),  # one instant: the finest bucket
    (3, 40, 100),
    (1170, 40, 30_000),
    (3600, 40, 120_000),
    (86_400, 30, 3_600_000),
    (400 * 86_400, 40, 604_800_000 * 2),
])
def test_bucket_widths_are_round_and_fit(span_s, buckets, width_ms):
    start = int(T0 * 1_000_000)
    end = start + span_s * 1_000_000
    width = query.bucket_width_ms(start, end, buckets)
    assert width == width_ms
    assert end // (width * 1000) - start // (width * 1000) + 1 <= buckets


# -- the view -------------------------------------------------------------------------------


def test_the_view_shows_the_run(store):
    text = rendered(answer(store, fail_on="block"))
    assert "12 calls  2026-01-01 00:00:00 UTC → 00:20:00 UTC (20m 00s)" in text
    assert "allow 5 · mask 1 · approve 2 · block 3 · deny 1" in text
    assert "FAILED: 3 call(s) were block" in text
    # The chart: its scale, its time axis (UTC, every 30 s column), its legend.
    assert "Calls over time (30 s per column, UTC)" in text
    assert "00:00:00" in text and "00:05:00" in text
    assert "█ allow 5" in text and "X block 3" in text and "# deny 1" in text
    # Top functions, busiest first, with their p50 and p95.
    order = [text.index(f" {name} ") for name in
             ("crm.get_customer", "crm.export", "deploy.start", "mail.send")]
    assert order == sorted(order)
    reads = next(line for line in text.splitlines() if " crm.get_customer " in line)
    assert reads.split()[1:] == ["5", "allow", "5", "30", "ms", "48", "ms"]
    # Labels with their counts.
    ssn = next(line for line in text.splitlines() if line.startswith(" ssn "))
    assert ssn.split() == ["ssn", "restricted", "4", "3", "mask", "4"]
    # Held calls' waits.
    assert "5 held: 3 approved, 1 denied, 1 expired; waited p50 20 s, p95 54 s, max 1m 00s" in text
    admin = next(line for line in text.splitlines() if line.startswith(" admin "))
    assert admin.split() == ["admin", "3", "3", "0", "0", "20", "s", "29", "s", "30", "s"]
    # The failed calls.
    assert "Failed calls (block)" in text
    assert all(f"export{i}" in text for i in range(3)) and "mail1" not in text


def test_the_view_of_a_passing_run_and_without_fail_on(store):
    assert "PASSED: no call was interrupted" in rendered(answer(store, fail_on="interrupted"))
    plain = rendered(answer(store))
    assert "no --fail-on given: nothing checked" in plain and "Failed calls" not in plain


def test_an_empty_range_is_a_clear_no_calls_view(store):
    text = rendered(answer(store, since="2025-01-01T00:00:00Z", until="2025-01-02T00:00:00Z"))
    assert "no calls" in text and "No calls were recorded in this range" in text
    assert "Top functions" not in text


def test_a_column_stacks_its_decisions_and_keeps_a_rare_block_visible():
    assert stack({"allow": 90, "block": 1}, 4) == ["allow", "allow", "allow", "block"]
    assert stack({"allow": 3, "deny": 1}, 1) == ["deny"]
    assert stack({"mask": 2, "allow": 2}, 4) == ["allow", "allow", "mask", "mask"]
    assert stack({}, 0) == []


def test_the_chart_draws_stacked_columns_without_colour():
    timeline = {"bucket_ms": 60_000, "buckets": [
        {"start": "2026-01-01T10:00:00Z", "decisions": {"allow": 2, "block": 1}},
        {"start": "2026-01-01T10:01:00Z", "decisions": {}},
        {"start": "2026-01-01T10:02:00Z", "decisions": {"mask": 1}},
    ]}
    console = Console(record=True, width=60, file=open("/dev/null", "w"))
    console.print(DecisionChart(timeline))
    lines = console.export_text().splitlines()
    assert lines[0] == "Calls over time (1 min per column, UTC)"
    assert [line.rstrip() for line in lines[1:4]] == ["3 │X", "  │█", "  │█   ▓"]
    assert lines[4].startswith("0 └┬") and lines[5].strip() == "10:00"
    assert "█ allow 2" in lines[6] and "▓ mask 1" in lines[6] and "X block 1" in lines[6]


def test_the_chart_is_coloured_on_a_terminal():
    timeline = {"bucket_ms": 1000, "buckets": [
        {"start": "2026-01-01T10:00:00Z", "decisions": {"deny": 1, "block": 1}}]}
    console = Console(record=True, width=60, force_terminal=True, color_system="standard",
                      file=open("/dev/null", "w"))
    console.print(DecisionChart(timeline))
    styled = console.export_text(styles=True)
    assert "\x1b[35m█" in styled and "\x1b[31m█" in styled  # deny and block told apart
    assert "X" not in console.export_text()


@pytest.mark.parametrize("ms, text", [(None, "-"), (4.25, "4.2 ms"), (480, "480 ms"),
                                      (2400, "2.4 s"), (45_000, "45 s"), (185_000, "3m 05s"),
                                      (7_800_000, "2h 10m"), (273_600_000, "3d 4h")])
def test_durations_read_for_people(ms, text):
    assert duration(ms) == text


def test_bucket_widths_read_round():
    assert [bucket_width(ms) for ms in (50, 15_000, 300_000, 10_800_000, 1_209_600_000)] == [
        "50 ms", "15 s", "5 min", "3 h", "2 w"]
    assert chart_buckets(100) == 40 and chart_buckets(30) == 22 and chart_buckets(5) == 10


# -- the command ----------------------------------------------------------------------------


def test_format_rich_exits_as_fail_on_says(store):
    failing = toolgate("sessions", "report", "--format", "rich", "--fail-on", "block",
                       "--until", UNTIL, "--db", str(store))
    assert failing.exit_code == 1, failing.output
    assert "FAILED: 3 call(s) were block" in failing.output
    assert "Calls over time" in failing.output and "export2" in failing.output
    passing = toolgate("sessions", "report", "--format", "rich", "--fail-on", "interrupted",
                       "--db", str(store))
    assert passing.exit_code == 0 and "PASSED" in passing.output
    as_json = toolgate("sessions", "report", "--format", "json", "--until", UNTIL, "--db",
                       str(store))
    assert json.loads(as_json.output)["holds"]["count"] == 5


def test_text_stays_the_default_off_a_terminal_and_rich_is_it_on_one(store, monkeypatch):
    piped = toolgate("sessions", "report", "--db", str(store))
    assert piped.exit_code == 0 and "by function:" in piped.output
    assert "Calls over time" not in piped.output
    monkeypatch.setattr(cli_sessions, "new_console",
                        lambda **_: Console(force_terminal=True, no_color=True, width=100))
    terminal = toolgate("sessions", "report", "--db", str(store))
    assert terminal.exit_code == 0 and "Calls over time" in terminal.output
    assert "by function:" not in terminal.output
    junit = toolgate("sessions", "report", "--format", "junit", "--db", str(store))
    assert junit.output.startswith("<?xml")


def test_rich_to_a_file_is_plain_text(store, tmp_path):
    out = tmp_path / "report.txt"
    result = toolgate("sessions", "report", "--format", "rich", "-o", str(out), "--until",
                      UNTIL, "--db", str(store))
    assert result.exit_code == 0 and result.output == ""
    text = out.read_text()
    assert "\x1b[" not in text and "█ allow 5" in text and "Labels found" in text


def test_an_empty_store_renders_no_calls_through_the_command(open_writer, db):
    w = open_writer()
    w.stop()
    w.join(10)
    result = toolgate("sessions", "report", "--format", "rich", "--fail-on", "block", "--db",
                      str(db))
    assert result.exit_code == 0, result.output
    assert "no calls" in result.output and "PASSED" in result.output


def test_the_same_view_through_the_admin_api(store):
    args = ["sessions", "report", "--format", "rich", "--fail-on", "block", "--until", UNTIL]
    offline = toolgate(*args, "--db", str(store))
    holder = subprocess.Popen([sys.executable, str(HERE / "admin_stub.py"), str(store)],
                              stdout=subprocess.PIPE, text=True, cwd=HERE,
                              env={"PYTHONPATH": str(HERE.parents[1]), "PATH": "/usr/bin:/bin"})
    try:
        port = int(holder.stdout.readline())
        live = toolgate(*args, "--db", str(store), "--admin", f"http://127.0.0.1:{port}",
                        env={"TOOLGATE_TOKEN": "admin-test-token"})
    finally:
        holder.terminate()
        holder.wait(10)
    assert live.exit_code == offline.exit_code == 1
    assert live.output == offline.output and "5 held: 3 approved" in live.output


def test_the_view_across_a_fleet_archive(open_writer, tmp_path):
    archive = tmp_path / "archive"
    archive.mkdir()
    run = the_run()
    for node, records in (("gw-a", run[:6]), ("gw-b", run[6:])):
        w = open_writer(tmp_path / f"{node}.duckdb", node_id=node)
        record_all(w, records)
        if node == "gw-b":
            approvals(w)
        w.run_query(Archive(archive, node).seal).result(30)
        w.stop()
        w.join(10)
    as_json = toolgate("sessions", "report", "--format", "json", "--until", UNTIL, "--archive",
                       str(archive))
    report = json.loads(as_json.output)
    assert report["total"] == 12 and report["holds"]["count"] == 5
    assert report["labels"][0] == {"label": "ssn", "level": "restricted", "findings": 4,
                                   "calls": 3, "actions": {"mask": 4}}
    assert sum(sum(b["decisions"].values()) for b in report["timeline"]["buckets"]) == 12
    view = toolgate("sessions", "report", "--format", "rich", "--fail-on", "deny", "--until",
                    UNTIL, "--archive", str(archive))
    assert view.exit_code == 1 and "FAILED: 1 call(s) were deny" in view.output
    assert "5 held: 3 approved, 1 denied, 1 expired" in view.output
