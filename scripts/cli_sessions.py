"""`toolgate sessions ...`: search, show, export, replay, verify and report recorded calls.

Every command reads the store file (read-only) when no gateway holds it, and the running
gateway's admin API when one does (`--admin`, `--token`): the same answers either way. Given
`--admin` without `--db`, or with no store at the default path, they ask the admin API. With
`--archive DIR` they read a fleet's archive instead: every node's sealed segments, each call
showing its node. Tables
for people, `--json` for scripts, tab-separated lines when stdout is not a terminal. Exit status
0 on success, 1 when a check fails (`verify`, `report --fail-on`, `replay --check`), 2 when the
command cannot run (a usage error, no store, no admin API).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from toolgate.rules import candidate_fingerprints
from toolgate.scripts.cli_common import (
    CannotRun, StoreOptions, emit_json, given, new_console, store_options,
)
from toolgate.sessions.query import LEVELS
from toolgate.sessions.sessionize import explicit_session, hashed_session
from toolgate.sessions.timeparse import parse_time

DECISION_STYLES = {"allow": "green", "mask": "yellow", "approve": "cyan", "block": "red",
                   "deny": "red", "interrupted": "magenta"}


def check_time(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value:
        try:
            parse_time(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    return value


@click.group()
def sessions() -> None:
    """Search, show, export, replay, verify and report recorded sessions."""


def call_filters(ocsf: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The options that select calls, as the admin API's `/api/calls` takes them: for
    `sessions list`, and (`ocsf`) for `sessions export --format ocsf`, where `--session`
    stays `session` beside the SESSION_ID argument."""
    def text(help_text: str) -> str:
        if not ocsf:
            return help_text
        first = help_text[0] if help_text[1:2].isupper() else help_text[0].lower()  # ISO stays
        return f"ocsf: {first}{help_text[1:]}"

    options = [
        click.option("--subject", help=text("The caller (the token's subject).")),
        click.option("--since", callback=check_time,
                     help=text("ISO time, or a duration ago: 30m, 1h, 2d.")),
        click.option("--until", callback=check_time, help=text("ISO time, or a duration ago.")),
        click.option("--function", help=text("A glob on the function name, e.g. 'crm.*'.")),
        click.option("--label", help=text("Only calls with a finding of this label.")),
        click.option("--level", type=click.Choice(LEVELS),
                     help=text("Only calls with a finding at this level or above.")),
        click.option("--decision", help=text("Comma-separated decisions, e.g. block,deny.")),
        click.option("--session", *(() if ocsf else ("session_id",)),
                     help=text("Only this session (as SESSION_ID does)." if ocsf
                               else "Only this session.")),
    ]

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):  # listed in --help in this order
            command = option(command)
        return command
    return decorate


@sessions.command("list")
@call_filters()
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@store_options
def list_calls(opts: StoreOptions, **filters: Any) -> None:
    """List recorded calls, newest first."""
    params = {k: str(v) for k, v in filters.items() if v not in (None, "")}
    answer = opts.get("/api/calls", params)
    if opts.as_json:
        return emit_json(answer)
    calls = answer["calls"]
    columns = ["started_at", "session_id", "subject", "function", "status", "decision", "labels",
               "call_id"]
    rows = [[c["started_at"], c["session_id"], c["subject"] or c["client_addr"], c["function"],
             c["status"], c["decision"], ",".join(c["labels"]), c["call_id"]] for c in calls]
    if any(c.get("node") for c in calls):  # a fleet's calls: which node took each
        columns.append("node")
        for row, call in zip(rows, calls):
            row.append(call.get("node"))
    emit_table(f"{len(calls)} call(s)", columns, rows, decision_column=5)
    if answer.get("next_before"):
        click.echo("(there may be more: raise --limit, or narrow with --since/--until)", err=True)


@sessions.command("show")
@click.argument("session_id")
@click.option("--full", is_flag=True, help="Also show headers and bodies.")
@store_options
def show(opts: StoreOptions, session_id: str, full: bool) -> None:
    """Show a session as a timeline: calls, decisions, findings, approvals."""
    timeline = get_session(opts, session_id, full)
    if opts.as_json:
        return emit_json(timeline)
    console = new_console(highlight=True)
    console.print(f"[bold]session {timeline['session_id']}[/bold]: {timeline['count']} call(s), "
                  f"{timeline['started_at']} .. {timeline['ended_at']}, "
                  f"by {', '.join(timeline['subjects']) or 'anonymous callers'}")
    for call in timeline["calls"]:
        line = Text(f"{call['started_at']}  ")
        line.append(f"{call['decision']:<11}", style=DECISION_STYLES.get(call["decision"], ""))
        line.append(f" {call['status'] if call['status'] is not None else '---'}  "
                    f"{call['function']}  ({call['method']} {call['url']})  "
                    f"{call['subject'] or call['client_addr']}  {call['duration_ms']} ms")
        console.print(line, highlight=False)
        details = [f"call {call['call_id']} seq {call['seq']}"
                   + (f" on node {call['node']}" if call.get("node") else "")]
        if call["rules"]:
            details.append("rules " + ", ".join(call["rules"]))
        if call["error"]:
            details.append(f"error {call['error']}")
        console.print("    " + "; ".join(details), style="dim", highlight=False)
        for f in call["findings"]:
            console.print(f"    finding {f['direction']} {f['path']}: {f['label']} "
                          f"({f['level']}) -> {f['action']}", highlight=False)
        for a in call["approvals"]:
            console.print(f"    {a['decision']} by {a['reviewer']} via {a['channel']} at "
                          f"{a['decided_at']}: {a['reason']} [{a['scope']}]", highlight=False)
        if full:
            for side in ("request", "response"):
                headers = call.get(f"{side}_headers") or []
                for name, value in headers:
                    console.print(f"    {side} {name}: {value}", style="dim", highlight=False)
                body = call.get(f"{side}_body")
                if body:
                    console.print(f"    {side} body ({call[f'{side}_body_encoding']}): {body}",
                                  highlight=False, markup=False)


# The filters `export --format ocsf` shares with `list` (option name -> the API's parameter).
EXPORT_FILTERS = {"subject": "subject", "since": "since", "until": "until",
                  "function": "function", "label": "label", "level": "level",
                  "decision": "decision", "session": "session_id"}


@sessions.command("export")
@click.argument("session_id", required=False)
@click.option("--format", "fmt", type=click.Choice(["mitm", "ocsf"]), default="mitm",
              show_default=True,
              help="mitm: one session as a .mitm file for `mitmweb -r`; ocsf: the calls the "
                   "filters select as OCSF 1.3.0 JSON lines for a SIEM (API Activity, "
                   "Authentication, Data Security Finding; no body, header value or token).")
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False, allow_dash=True),
              help="The file to write: the .mitm file (required), or the JSON lines (created "
                   "0600; '-' or none: stdout).")
@call_filters(ocsf=True)
@click.option("--limit", type=click.IntRange(1, 10_000), default=10_000, show_default=True,
              help="ocsf: the newest calls at most (written oldest first).")
@store_options
def export(opts: StoreOptions, session_id: str | None, fmt: str, output: Path | None,
           limit: int, **filters: Any) -> None:
    """Export a session as a .mitm file for mitmweb / mitmproxy, or calls as OCSF events.

    \b
    toolgate sessions export SESSION_ID -o incident.mitm
    toolgate sessions export --format ocsf --since 1h -o calls.ocsf.jsonl
    """
    if fmt == "ocsf":
        return export_ocsf(opts, session_id, output, limit, filters)
    ctx = click.get_current_context()
    named = [f"--{name}" for name in [*EXPORT_FILTERS, "limit"] if given(ctx, name)]
    if named:
        raise click.UsageError(f"{', '.join(named)} select calls for --format ocsf; a .mitm "
                               "export is one session: pass its SESSION_ID")
    if not session_id:
        raise click.UsageError("which session? toolgate sessions export SESSION_ID -o FILE.mitm "
                               "(or --format ocsf for the OCSF events of many calls)")
    if output is None or str(output) == "-":
        raise click.UsageError("a .mitm export needs a file: -o FILE.mitm")
    from toolgate.sessions.export import export_session  # imports mitmproxy: only when needed

    count = export_session(get_session(opts, session_id, True), output)
    if opts.as_json:
        return emit_json({"session_id": session_id, "output": str(output), "flows": count})
    click.echo(f"wrote {count} flow(s) to {output}; open it with: mitmweb -r {output}")


def export_ocsf(opts: StoreOptions, session_id: str | None, output: Path | None, limit: int,
                filters: dict[str, Any]) -> None:
    """`export --format ocsf`: the selected calls' OCSF events (`sessions.ocsf`), one JSON
    line each, oldest call first."""
    from toolgate.sessions import ocsf

    if session_id and filters.get("session") and filters["session"] != session_id:
        raise click.UsageError("SESSION_ID and --session name different sessions: give one")
    params = {EXPORT_FILTERS[k]: str(v) for k, v in filters.items() if v not in (None, "")}
    if session_id:
        params["session_id"] = session_id
    params["limit"] = str(limit)
    params["bodies"] = "identity"  # the refusals' reasons: no other call's bodies travel
    calls = opts.get("/api/calls/full", params)["calls"]
    to_stdout = output is None or str(output) == "-"
    events = 0
    if to_stdout:
        for line in ocsf.lines(calls):
            click.echo(line, nl=False)
            events += 1
    else:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(fd, "w", encoding="ascii") as out:
            for line in ocsf.lines(calls):
                out.write(line)
                events += 1
    if len(calls) == limit:
        click.echo(f"(stopped at --limit {limit} call(s): there may be more; narrow with "
                   "--since/--until)", err=True)
    if to_stdout:
        return
    if opts.as_json:
        return emit_json({"format": "ocsf", "version": ocsf.OCSF_VERSION, "output": str(output),
                          "calls": len(calls), "events": events})
    click.echo(f"wrote {events} OCSF {ocsf.OCSF_VERSION} event(s) for {len(calls)} call(s) "
               f"to {output}")


@sessions.command("replay")
@click.argument("session_id")
@click.option("--target", required=True, help="Base URL to send the requests to, e.g. http://staging:8080.")
@click.option("--header", "headers", multiple=True, metavar="'NAME: VALUE'",
              help="Add a header to every request (e.g. the target's own credentials).")
@click.option("--check", is_flag=True, help="Exit 1 if any status or JSON shape changed.")
@store_options
def replay(
    opts: StoreOptions, session_id: str, target: str, headers: tuple[str, ...], check: bool
) -> None:
    """Re-issue a session's requests against TARGET and report what changed."""
    from toolgate.sessions.replay import replay_session

    extra = {}
    for header in headers:
        name, sep, value = header.partition(":")
        if not sep or not name.strip():
            raise click.BadParameter(f"{header!r} is not 'NAME: VALUE'", param_hint="--header")
        extra[name.strip()] = value.strip()
    result = replay_session(get_session(opts, session_id, True), target, extra)
    if opts.as_json:
        emit_json(result)
    else:
        rows = [[r["method"], r["path"], r["recorded_status"], r["status"] or r["error"],
                 "changed" if r["status_changed"] else "same",
                 "; ".join(r["shape_differences"]) or "same shape"] for r in result["results"]]
        emit_table(f"replayed {result['replayed']} call(s) against {target}: "
                   f"{result['changed']} changed, {len(result['skipped'])} skipped (refused)",
                   ["method", "path", "recorded", "now", "status", "JSON shape"], rows)
        dropped = sorted({h for r in result["results"] for h in r["dropped_headers"]})
        if dropped:
            click.echo(f"not sent (never stored): {', '.join(dropped)}; pass --header to add "
                       "the target's own", err=True)
    if check and result["changed"]:
        sys.exit(1)


@sessions.command("verify")
@click.option("--control", envvar="TOOLGATE_CONTROL", default=None, metavar="URL",
              help="With --archive: the fleet's PostgreSQL (toolgate_control: a URL, or "
                   "env:NAME / file:PATH holding one), to check the archive against the "
                   "segments registered there. [env: TOOLGATE_CONTROL]")
@store_options
def verify(opts: StoreOptions, control: str | None) -> None:
    """Check the hash chain: exit 1 naming the first bad row if the store was tampered with.
    With --archive, every node's chains across its segments, and with --control, the
    segments and heads registered in PostgreSQL."""
    if opts.archive is not None:
        return verify_archive(opts.archive_folder(), control, opts.as_json)
    # $TOOLGATE_CONTROL may be set for the gateways of a host: only the option is an error.
    source = click.get_current_context().get_parameter_source("control")
    if control and source is click.core.ParameterSource.COMMANDLINE:
        raise click.UsageError("--control checks a fleet's archive: pass --archive DIR too")
    result = opts.get("/api/verify")
    if opts.as_json:
        emit_json(result)
    elif result["ok"]:
        click.echo(f"ok: {result['rows']['calls']} call(s) and {result['rows']['approvals']} "
                   f"approval(s), chain intact up to the head in {result['head_file']}")
    else:
        for p in result["problems"]:
            where = f"{p['table']} row seq {p['seq']}" if p["seq"] is not None else p["table"]
            call = f" (call {p['call_id']})" if p["call_id"] else ""
            click.echo(f"TAMPERED: {where}{call}: {p['problem']}")
    if not result["ok"]:
        sys.exit(1)


def verify_archive(folder: Path, control: str | None, as_json: bool) -> None:
    """`verify --archive DIR [--control URL]`: see `sessions.archive.verify_archive`."""
    import psycopg

    from toolgate.addons.settings import control_url
    from toolgate.sessions.archive import verify_archive as check_archive
    from toolgate.sessions.control import redact_url

    try:  # a URL, or env:NAME / file:PATH holding one, as the gateway's toolgate_control
        control = control_url(control) if control else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--control") from None
    try:
        result = check_archive(folder, control)
    except psycopg.Error as exc:
        raise CannotRun(f"cannot read the registered segments from PostgreSQL at "
                        f"{redact_url(control or '')}: {exc}") from None
    if as_json:
        emit_json(result)
    else:
        for p in result["problems"]:
            first, last = p["first_seq"], p["last_seq"]
            seqs = "" if first is None else f" seq {first}" + ("" if first == last else f"..{last}")
            where = f" [{p['segment']}]" if p["segment"] else ""
            row = f", row seq {p['seq']}" if p["seq"] is not None else ""
            call = f" (call {p['call_id']})" if p["call_id"] else ""
            click.echo(f"TAMPERED: node {p['node']} {p['table'] or ''}{seqs}{where}{row}{call}: "
                       f"{p['problem']}")
        if result["ok"]:
            click.echo(f"ok: {len(result['nodes'])} node(s), {result['rows']['calls']} call(s) "
                       f"and {result['rows']['approvals']} approval(s), every chain intact up "
                       f"to its node's head.json in {result['archive']}")
            for node, chains in result["nodes"].items():
                click.echo(f"  {node}: " + ", ".join(
                    f"{chain} seq 1..{c['seq']} in {c['segments']} segment(s)"
                    for chain, c in chains.items()))
        if result["control"]:
            click.echo(f"checked against the segments registered in PostgreSQL at "
                       f"{result['control']}")
        else:
            click.echo("the heads in PostgreSQL were not checked: pass --control URL (or set "
                       "TOOLGATE_CONTROL) to rule out segments deleted with head.json rewritten")
    if not result["ok"]:
        sys.exit(1)


@sessions.command("report")
@click.option("--since", callback=check_time, help="ISO time, or a duration ago: 30m, 1h, 2d.")
@click.option("--until", callback=check_time, help="ISO time, or a duration ago.")
@click.option("--fail-on", default="", metavar="DECISIONS",
              help="Comma-separated decisions that fail the run, e.g. block,deny.")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "junit", "rich"]),
              default=None,
              help="rich: a picture for people (calls over time, top functions, labels, held "
                   "calls' waits). [default: rich on a terminal, else text]")
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False),
              help="Write the report to a file instead of stdout.")
@store_options
def report(opts: StoreOptions, since: str | None, until: str | None, fail_on: str,
           fmt: str | None, output: Path | None) -> None:
    """Summarize recorded calls for CI; exit 1 if a call's decision is in --fail-on."""
    from toolgate.sessions.report import render_junit, render_text

    console = new_console()
    if opts.as_json:
        fmt = "json"
    elif fmt is None:  # scripts and CI logs keep the plain text they always had
        fmt = "rich" if console.is_terminal and not output else "text"
    params = {"since": since or "", "until": until or "", "fail_on": fail_on}
    if fmt == "rich":
        import io

        from rich.console import Console

        from toolgate.scripts.report_view import chart_buckets, report_view

        if output:  # a file: plain characters, a fixed width
            console = Console(file=io.StringIO(), width=100, color_system=None)
        params["buckets"] = str(chart_buckets(console.width))
    result = opts.get("/api/report", params)
    if fmt == "json":
        text = json.dumps(result, indent=2) + "\n"
    elif fmt == "junit":
        text = render_junit(result)
    elif fmt == "rich":
        console.print(report_view(result))
        text = console.file.getvalue() if output else ""
    else:
        text = render_text(result)
    if output:
        output.write_text(text)
    elif text:
        click.echo(text, nl=False)
    if not result["passed"]:
        sys.exit(1)


@sessions.command("find-value")
@click.argument("value")
@store_options
def find_value(opts: StoreOptions, value: str) -> None:
    """Was VALUE ever seen? Looks its keyed fingerprint up in the findings, and the session a
    caller named after it ('-' reads VALUE from stdin, which keeps it out of shell history)."""
    from toolgate.rules.keys import DEFAULT_DB, default_mask_key_file, mask_key_reference, resolve_secret

    # Resolved as the gateway resolves it, by the same code: else the gateway's default key.
    db = opts.db or DEFAULT_DB
    mask_key = mask_key_reference(opts.mask_key, db)
    if not mask_key:
        raise click.UsageError(
            "find-value needs the gateway's mask key: pass --mask-key env:NAME|file:PATH "
            f"or set TOOLGATE_MASK_KEY (no {default_mask_key_file(db)} either)"
        )
    try:
        key = resolve_secret(mask_key, "--mask-key")
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--mask-key") from None
    if value == "-":
        value = sys.stdin.read()
    # Every form the rule engine could have fingerprinted the value in (digits only for a
    # card, lower case for an email...), so "4242 4242 4242 4242" finds "4242-4242-...".
    result = _merged([opts.get("/api/findings", {"fingerprint": fp})
                      for fp in sorted(candidate_fingerprints(value.strip(), key))])
    # A session named after the value (X-Toolgate-Session: jane@example.com) is stored under
    # the name's keyed fingerprint, as the policy computes it.
    result["sessions"] = []
    name = explicit_session(None, value)
    if name is not None:
        session = hashed_session(name, key)
        named = opts.get("/api/calls", {"session_id": session, "limit": "10000"})
        if named["count"]:
            result["sessions"].append({"session_id": session, "calls": named["count"]})
    result["seen"] = result["seen"] or bool(result["sessions"])
    if opts.as_json:
        return emit_json(result)
    if not result["seen"]:
        click.echo("not seen: no finding in the store has this value's fingerprint, and no "
                   "session is named after it")
        return
    for session in result["sessions"]:
        click.echo(f"session {session['session_id']} is named after this value "
                   f"({session['calls']} call(s)): toolgate sessions show {session['session_id']}")
    if not result["findings"]:
        return
    columns = ["started_at", "session_id", "subject", "function", "direction", "path", "label",
               "action", "call_id"]
    rows = [[f["started_at"], f["session_id"], f["subject"], f["function"], f["direction"],
             f["path"], f["label"], f["action"], f["call_id"]] for f in result["findings"]]
    if any(f.get("node") for f in result["findings"]):
        columns.append("node")
        for row, f in zip(rows, result["findings"]):
            row.append(f.get("node"))
    emit_table(f"seen {result['count']} time(s)", columns, rows)


def _merged(answers: list[dict[str, Any]]) -> dict[str, Any]:
    """One find-value answer from the answers for each candidate fingerprint."""
    findings = {(f["call_id"], f["direction"], f["path"]): f
                for answer in answers for f in answer["findings"]}
    ordered = sorted(findings.values(), key=lambda f: (f["started_at"] or "", f["call_id"]))
    return {"fingerprints": [a["fingerprint"] for a in answers], "seen": bool(ordered),
            "count": len(ordered), "findings": ordered}


# -- output ---------------------------------------------------------------------------------


def get_session(opts: StoreOptions, session_id: str, full: bool) -> dict[str, Any]:
    return opts.get(f"/api/sessions/{session_id}", {"full": "1" if full else ""})


def emit_table(title: str, columns: list[str], rows: list[list[Any]],
               decision_column: int | None = None) -> None:
    console = new_console(highlight=True)
    if not console.is_terminal:  # plain lines for pipes: one row per line, tab-separated
        click.echo("\t".join(columns))
        for row in rows:
            click.echo("\t".join("" if v is None else str(v) for v in row))
        return
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        cells = ["" if v is None else str(v) for v in row]
        if decision_column is not None:
            cells[decision_column] = Text(cells[decision_column],
                                          style=DECISION_STYLES.get(cells[decision_column], ""))
        table.add_row(*cells)
    console.print(table)
