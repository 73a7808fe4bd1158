"""`toolgate rules ...`: check rule packs, and explain what they decide for a request/response.

`toolgate rules explain PATH --request FILE` reads FILE as the request body, in one of two shapes:

- an MCP JSON-RPC `tools/call` request (`{"jsonrpc": "2.0", "method": "tools/call", "params":
  {"name": ..., "arguments": {...}}}`): the call is the MCP tool `params.name` with arguments
  `params.arguments`;
- anything else is the body of a REST call (JSON, or plain text when it is not JSON), described by
  `--method` (default POST with a body, GET without), `--path` (may carry `?query`), `--host`.

`--request -` reads stdin; an empty file is a call without a body. `--response FILE` is the
answer's body, evaluated as the response of the same call.
"""

from __future__ import annotations

import datetime
import json
import os
import secrets
import sys
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from toolgate.rules import Call, Decision, RuleLoadError, RuleSet, evaluate, load_rules
from toolgate.rules.keys import mask_key_reference, resolve_secret
from toolgate.rules.model import PROTOCOLS
from toolgate.scripts.cli_common import StoreOptions, emit_json, new_console, store_options

ACTION_STYLE = {"allow": "green", "mask": "yellow", "approve": "magenta", "block": "red", "deny": "red"}


@click.group()
def rules() -> None:
    """Check, explain and test rule packs."""


@rules.command("check")
@click.argument("path", type=click.Path(path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def check(path: str, as_json: bool) -> None:
    """Validate the rule file or folder PATH; exit 1 listing every error as file:line: message."""
    try:
        ruleset = load_rules(path)
    except RuleLoadError as exc:
        if as_json:
            errors = [{"file": e.file, "line": e.line, "message": e.message} for e in exc.errors]
            emit_json({"ok": False, "errors": errors})
        else:
            for error in exc.errors:
                click.echo(str(error))
            click.echo(f"{len(exc.errors)} error{'s' if len(exc.errors) != 1 else ''}; the rules were not loaded", err=True)
        sys.exit(1)
    summary = _summary(ruleset)
    if as_json:
        emit_json({"ok": True, **summary})
        return
    console = new_console(soft_wrap=True)
    console.print(
        f"ok: {len(summary['files'])} file(s), {len(ruleset.labels)} labels, {len(ruleset.functions)} functions, "
        f"{len(ruleset.rules)} rules; unknown functions: {ruleset.unknown_function}"
    )
    if console.is_terminal:
        table = Table("rule", "action", "match", "source")
        for rule in summary["rules"]:
            style = ACTION_STYLE.get(rule["action"], "")
            action = rule["action"] + (f" ({rule['mask']})" if rule["mask"] else "") + (" [monitor]" if rule["mode"] == "monitor" else "")
            table.add_row(rule["id"], f"[{style}]{action}[/]", rule["match"], rule["source"])
        console.print(table)


def _summary(ruleset: RuleSet) -> dict[str, Any]:
    def describe(rule: Any) -> str:
        match = rule.match
        parts = []
        for key in ("function", "host", "path", "subjects"):
            globs = getattr(match, key)
            if globs:
                parts.append(f"{key}={','.join(g.text for g in globs)}")
        for key in ("protocol", "method", "labels", "levels", "groups", "not_groups"):
            values = getattr(match, key)
            if values:
                parts.append(f"{key}={','.join(values)}")
        if match.direction:
            parts.append(f"direction={match.direction}")
        parts.extend(f"when {c.text}" for c in match.when)
        return " ".join(parts) or "(every call)"

    return {
        "files": list(ruleset.files),
        "labels": [{"name": l.name, "level": l.level, "detector": l.detector, "paths": [p.text for p in l.paths]} for l in ruleset.labels],
        "functions": [{"name": f.name, "owner": f.owner, "sensitivity": f.sensitivity} for f in ruleset.functions],
        "rules": [
            {"id": r.id, "action": r.action, "mask": r.mask, "mode": r.mode, "match": describe(r), "source": str(r.source)}
            for r in ruleset.rules
        ],
        "unknown_function": ruleset.unknown_function,
    }


def load_rules_or_exit(path: str) -> RuleSet:
    """The rules at PATH; else each error on stderr as file:line: message, and exit 1."""
    try:
        return load_rules(path)
    except RuleLoadError as exc:
        for error in exc.errors:
            click.echo(str(error), err=True)
        sys.exit(1)


def parse_caller(text: str | None) -> tuple[str | None, tuple[str, ...]]:
    """`alice:support,sre` → ("alice", ("support", "sre")); `:support` has no subject."""
    if not text:
        return None, ()
    subject, _, groups = text.partition(":")
    return subject or None, tuple(group.strip() for group in groups.split(",") if group.strip())


def resolve_mask_key(spec: str | None) -> bytes | None:
    """The gateway's mask key, resolved as the gateway resolves it (rules/keys.py): `--mask-key`
    or `$TOOLGATE_MASK_KEY` (env:NAME or file:PATH), else the key file the gateway keeps beside
    ./toolgate.duckdb; None when there is neither."""
    ref = mask_key_reference(spec or os.environ.get("TOOLGATE_MASK_KEY"))
    if ref is None:
        return None
    try:
        return resolve_secret(ref, "--mask-key")
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--mask-key") from None


def read_body(stream: Any) -> Any:
    """JSON when the text parses as JSON, else the text itself; None for an empty file."""
    text = stream.read()
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def mcp_tool_call(body: Any) -> tuple[str, Any] | None:
    """(tool name, arguments) of an MCP JSON-RPC tools/call request, else None."""
    if isinstance(body, dict) and body.get("method") == "tools/call" and isinstance(body.get("params"), dict):
        name = body["params"].get("name")
        if isinstance(name, str):
            return name, body["params"].get("arguments", {})
    return None


@rules.command("explain")
@click.argument("path", type=click.Path(path_type=str))
@click.option("--request", "request_file", type=click.File("r"), required=True, help="The request body (JSON, text, or an MCP tools/call).")
@click.option("--response", "response_file", type=click.File("r"), help="The response body, evaluated as the answer to the same call.")
@click.option("--as", "caller", metavar="SUBJECT:GROUP,...", help="The caller, e.g. alice:support,sre.")
@click.option("--function", help="The function name (default: from the MCP call or the catalog).")
@click.option("--method", help="HTTP method of a REST call (default: POST with a body, else GET).")
@click.option("--path", "url_path", default="/", show_default=True, help="URL path of a REST call, query included.")
@click.option("--host", help="Host the call goes to.")
@click.option("--protocol", type=click.Choice(PROTOCOLS), help="Protocol (default: mcp for a tools/call body, else rest).")
@click.option("--now", "now_text", metavar="DATE", help="Check access reviews as of this ISO date or time.")
@click.option("--monitor", is_flag=True, help="Evaluate as under toolgate_mode=monitor.")
@click.option("--mask-key", help="Key for hash tokens and fingerprints: env:NAME or file:PATH (default: $TOOLGATE_MASK_KEY, else the gateway's ./toolgate.duckdb.key, else a random key).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def explain(
    path: str,
    request_file: Any,
    response_file: Any,
    caller: str | None,
    function: str | None,
    method: str | None,
    url_path: str,
    host: str | None,
    protocol: str | None,
    now_text: str | None,
    monitor: bool,
    mask_key: str | None,
    as_json: bool,
) -> None:
    """Show what the rules at PATH decide for a request (and its response), and why."""
    ruleset = load_rules_or_exit(path)
    key = resolve_mask_key(mask_key)
    key_note = None
    if key is None:
        key, key_note = secrets.token_bytes(32), "hash tokens and fingerprints use a random key (set --mask-key to reproduce the gateway's)"
    now = _parse_now(now_text)
    subject, groups = parse_caller(caller)
    body = read_body(request_file)
    arguments = None
    tool = mcp_tool_call(body)
    if tool is not None and protocol in (None, "mcp"):
        protocol, function, arguments = "mcp", function or tool[0], tool[1]
    protocol = protocol or "rest"
    common = dict(
        protocol=protocol,
        function=function,
        method=(method or ("POST" if body is not None else "GET")).upper(),
        host=host,
        path=url_path,
        subject=subject,
        groups=groups,
        now=now,
    )
    decisions = {"request": evaluate(ruleset, Call(direction="request", body=body, arguments=arguments, **common), key, monitor=monitor)}
    if response_file is not None:
        response = Call(direction="response", body=read_body(response_file), **common)
        decisions["response"] = evaluate(ruleset, response, key, monitor=monitor)
    if as_json:
        emit_json({name: d.as_dict() for name, d in decisions.items()})
        return
    console = new_console(soft_wrap=True)
    if key_note:
        console.print(f"note: {key_note}", style="dim")
    for decision in decisions.values():
        _print_decision(console, decision)


def _parse_now(text: str | None) -> datetime.datetime:
    if not text:
        return datetime.datetime.now(datetime.timezone.utc)
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter("use an ISO date or time such as 2026-11-21 or 2026-11-21T10:00:00+00:00", param_hint="--now") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.timezone.utc)


def _print_decision(console: Console, decision: Decision) -> None:
    plain = not console.is_terminal
    style = ACTION_STYLE.get(decision.action, "")
    console.rule(f"{decision.direction}: {decision.function}" + ("" if decision.catalogued else " (not in the catalog)"))
    if decision.findings:
        if plain:
            console.print("findings:")
            for f in decision.findings:
                span = f" [{f.span[0]}:{f.span[1]}]" if f.span else ""
                action = f.action + (f" ({f.mask})" if f.mask else "") + (" [monitor]" if f.monitor else "")
                console.print(f"  {f.path}{span}  {f.label}  {f.level}  {action}", markup=False)
        else:
            table = Table("path", "label", "level", "action", "rules", title="findings")
            for f in decision.findings:
                span = f" [{f.span[0]}:{f.span[1]}]" if f.span else ""
                action = f.action + (f" ({f.mask})" if f.mask else "") + (" [monitor]" if f.monitor else "")
                table.add_row(f.path + span, f.label, f.level, action, ", ".join(f.rules))
            console.print(table)
    else:
        console.print("findings: none")
    console.print(f"decision: [{style}]{decision.action}[/]" + (f" (would {decision.would})" if decision.would != decision.action else ""))
    for label, value in (("rule", decision.rule), ("message", decision.message), ("field", decision.field)):
        if value:
            console.print(f"  {label}: {value}", markup=False)
    if decision.approvers:
        console.print(f"  approvers: {', '.join(decision.approvers)}", markup=False)
    console.print("reasons:")
    for reason in decision.reasons:
        console.print(f"  - {reason}", markup=False)
    console.print("masked body:" if decision.changed else "body (unchanged):")
    if decision.body is None:
        console.print("  (none)")
    elif plain:
        console.print(json.dumps(decision.body, indent=2, ensure_ascii=False), markup=False)
    else:
        console.print_json(data=decision.body)


@rules.command("test")
@click.argument("path", type=click.Path(path_type=str))
@click.option("--since", default=None, metavar="TIME",
              help="Only calls since TIME (ISO 8601, or relative: 1h, 2d).")
@click.option("--limit", type=click.IntRange(1, 10_000), default=1000, show_default=True,
              help="Re-evaluate at most this many calls (the most recent).")
@store_options
def test(opts: StoreOptions, path: str, since: str | None, limit: int) -> None:
    """Re-evaluate recorded calls against the rules in PATH and list those whose decision
    would change. Works on the store file, or through the admin API while a gateway holds it.

    Recordings keep bodies as forwarded and returned, after masking: a value that was masked
    cannot be found again, so decisions resting on it may come out weaker. Such labels are
    listed for each call ("masked in the recording")."""
    from toolgate.sessions.whatif import reevaluate

    ruleset = load_rules_or_exit(path)
    calls = opts.get("/api/calls/full", {"since": since or "", "limit": str(limit)})["calls"]
    outcomes = [(call, reevaluate(ruleset, call)) for call in calls]
    judged = [(call, what) for call, what in outcomes if what is not None]
    changed = [(call, what) for call, what in judged if what.changed]
    undetermined = [what for _, what in judged if what.undetermined]
    if opts.as_json:
        emit_json({
            "evaluated": len(judged), "skipped": len(outcomes) - len(judged),
            "undetermined": [{"call_id": w.call_id, "recorded": w.recorded, "now": w.now,
                              "masked_in_recording": w.masked_labels} for w in undetermined],
            "changed": [{"call_id": what.call_id, "started_at": call["started_at"],
                         "subject": call["subject"], "function": call["function"],
                         "recorded": what.recorded, "now": what.now, "rules": what.rules,
                         "masked_in_recording": what.masked_labels, "note": what.note}
                        for call, what in changed],
        })
        return
    console = new_console(soft_wrap=True)
    console.print(f"{len(judged)} recorded call(s) re-evaluated against {path} "
                  f"({len(outcomes) - len(judged)} skipped: no policy decided them); "
                  f"{len(changed)} would change", markup=False)
    if undetermined:
        console.print(f"{len(undetermined)} undetermined: weaker now, but the values they were "
                      "decided on were masked in the recording", markup=False)
    if not changed:
        return
    table = Table("started", "call", "subject", "function", "recorded", "now", "rules",
                  "masked in the recording")
    for call, what in changed:
        table.add_row(call["started_at"] or "", what.call_id[:12], call["subject"] or "",
                      call["function"] or "", what.recorded, what.now, ", ".join(what.rules),
                      ", ".join(what.masked_labels) + (f" ({what.note})" if what.note else ""))
    console.print(table)
