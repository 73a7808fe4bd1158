"""`toolgate sessions report`: a run's summary (from `query.report`) as text or JUnit XML,
so a CI job can show it and fail on the decisions it names."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any


def render_text(report: dict[str, Any]) -> str:
    lines = [f"{report['total']} call(s)"
             + (f" since {report['since']}" if report.get("since") else "")
             + (f" until {report['until']}" if report.get("until") else "")]
    for decision, count in sorted(report["by_decision"].items(), key=lambda kv: str(kv[0])):
        lines.append(f"  {decision}: {count}")
    if report["by_function"]:
        lines.append("by function:")
        for entry in report["by_function"]:
            decisions = ", ".join(f"{d}={n}" for d, n in sorted(entry["decisions"].items(),
                                                                key=lambda kv: str(kv[0])))
            lines.append(f"  {entry['function']} ({entry['protocol']}): {entry['calls']} "
                         f"[{decisions}]")
    if report["fail_on"]:
        if report["passed"]:
            lines.append(f"PASSED: no call was {' or '.join(report['fail_on'])}")
        else:
            lines.append(f"FAILED: {report['failed_count']} call(s) were "
                         f"{' or '.join(report['fail_on'])}:")
            for call in report["failed"]:
                lines.append(
                    f"  {call['started_at']} {call['decision']} {call['function']} "
                    f"by {call['subject'] or call['client_addr'] or '?'} "
                    f"status={call['status']} rules={','.join(call['rules']) or '-'} "
                    f"call_id={call['call_id']}"
                )
    return "\n".join(lines) + "\n"


def render_junit(report: dict[str, Any]) -> str:
    """One test case per function; it fails when one of its calls has a decision in
    `fail_on` (each such call is listed in the failure)."""
    failing: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for call in report["failed"]:
        key = (call["function"] or "?", call["protocol"] or "?")
        failing.setdefault(key, []).append(call)
    cases = report["by_function"]
    suite = ET.Element("testsuite", {
        "name": "toolgate sessions",
        "tests": str(len(cases)),
        "failures": str(sum(1 for c in cases if (c["function"], c["protocol"]) in failing)),
        "errors": "0",
    })
    for entry in cases:
        case = ET.SubElement(suite, "testcase", {
            "classname": f"toolgate.{entry['protocol']}",
            "name": str(entry["function"]),
        })
        calls = failing.get((entry["function"], entry["protocol"]))
        if calls:
            decisions = sorted({c["decision"] for c in calls})
            failure = ET.SubElement(case, "failure", {
                "message": f"{len(calls)} call(s) {'/'.join(decisions)}",
                "type": "toolgate.policy",
            })
            failure.text = "\n".join(
                f"{c['started_at']} {c['decision']} by {c['subject'] or c['client_addr']} "
                f"rules={','.join(c['rules']) or '-'} call_id={c['call_id']}"
                for c in calls
            )
        ET.SubElement(case, "system-out").text = ", ".join(
            f"{d}={n}" for d, n in sorted(entry["decisions"].items(), key=lambda kv: str(kv[0]))
        )
    ET.indent(suite)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suite, "unicode") + "\n"
