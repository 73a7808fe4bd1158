"""`toolgate approvals ...`: list, show, approve, deny and watch held calls.

Everything goes through the running gateway's admin API (`--admin`) with the reviewer's own
OIDC token (`--token`, `$TOOLGATE_TOKEN`): the gateway checks that the reviewer is one of the
rule's approvers and not the caller. Tables for people, `--json` for scripts, tab-separated
lines when stdout is not a terminal. Exit status 0 on success, 1 when the API refuses (its
reason is printed), 2 when the command cannot run (a usage error, no token, no admin API).
"""

from __future__ import annotations

import datetime
import functools
import json
import sys
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from toolgate.rules import parse_duration
from toolgate.rules.durations import format_duration
from toolgate.scripts.admin_http import AdminRefused, AdminUnreachable, admin_json
from toolgate.scripts.cli_common import (
    CannotRun, admin_option, emit_json, json_option, new_console, token_option,
)


class ReviewRefused(click.ClickException):
    """The admin API said no (exit 1); the message is its reason."""

    exit_code = 1


@dataclass
class ReviewerOptions:
    admin: str
    token: str | None
    as_json: bool

    def call(self, method: str, path: str, body: dict[str, Any] | None = None,
             query: dict[str, str] | None = None) -> dict[str, Any]:
        if not self.token:
            raise CannotRun("no token: pass --token TOKEN or set TOOLGATE_TOKEN (for the dev "
                            "issuer: toolgate dev token --sub YOU --groups GROUP)")
        url = self.admin.rstrip("/") + urllib.parse.quote(path)
        if query:
            url += "?" + urllib.parse.urlencode(query)
        try:
            return admin_json(url, self.token, method=method, body=body,
                              headers={"X-Toolgate-Channel": "cli"})
        except AdminRefused as exc:
            raise ReviewRefused(f"{exc} [HTTP {exc.status}]") from None
        except AdminUnreachable as exc:
            raise CannotRun(f"the gateway's admin API at {self.admin} did not answer ({exc}): "
                            "pass --admin URL (the gateway's toolgate_admin_listen)") from None


def reviewer_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The options every `approvals` command takes after its name."""

    @json_option()
    @token_option("Your OIDC bearer token (the reviewer's). [env: TOOLGATE_TOKEN]")
    @admin_option("The gateway's admin API (its toolgate_admin_listen).")
    @functools.wraps(fn)
    def wrapper(admin: str, token: str | None, as_json: bool, **kwargs: Any) -> Any:
        return fn(ReviewerOptions(admin, token, as_json), **kwargs)

    return wrapper


def _ago(iso_time: str | None, now: float | None = None) -> str:
    if not iso_time:
        return "-"
    then = datetime.datetime.fromisoformat(iso_time.replace("Z", "+00:00")).timestamp()
    seconds = int((now or time.time()) - then)
    sign = "" if seconds >= 0 else "in "
    seconds = abs(seconds)
    text = f"{seconds}s" if seconds < 120 else f"{seconds // 60}m" if seconds < 7200 \
        else f"{seconds // 3600}h"
    return f"{sign}{text}" + (" ago" if not sign else "")


def _short(value: Any, width: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"),
                                                           default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


def held_table(approvals: list[dict[str, Any]]) -> Table:
    table = Table(title=f"{len(approvals)} held call(s), oldest first", title_justify="left")
    table.add_column("ID", no_wrap=True, min_width=8)  # what you type: never cut
    fleet = any(a.get("node") for a in approvals)  # a fleet's: which node holds each
    columns = ["CALLER", "FUNCTION", "RULE", "WAITING", "TIMES OUT", "ARGUMENTS"]
    for column in (["NODE"] if fleet else []) + columns:
        table.add_column(column, overflow="fold" if column == "ARGUMENTS" else "ellipsis")
    for a in approvals:
        table.add_row(Text(a["id"], style="bold cyan"), *([a.get("node") or "-"] if fleet else []),
                      a.get("subject") or "anonymous", a.get("function") or "-",
                      a.get("rule") or "-", _ago(a.get("requested_at")),
                      _ago(a.get("expires_at")), _short(a.get("arguments")))
    return table


def _plain_rows(approvals: list[dict[str, Any]]) -> None:
    for a in approvals:
        node = [a["node"]] if a.get("node") else []  # in a fleet, the node that holds it
        click.echo("\t".join([a["id"], *node, a.get("subject") or "anonymous",
                              a.get("function") or "-", a.get("rule") or "-",
                              a.get("requested_at") or "-", a.get("expires_at") or "-",
                              _short(a.get("arguments"), 200)]))


@click.group()
def approvals() -> None:
    """List, show, approve, deny and watch calls held for an approval."""


@approvals.command("list")
@reviewer_options
def list_cmd(common: ReviewerOptions) -> None:
    """The held calls, oldest first."""
    held = common.call("GET", "/api/approvals")["approvals"]
    if common.as_json:
        emit_json(held)
    elif sys.stdout.isatty():
        new_console().print(held_table(held))
    else:
        _plain_rows(held)


@approvals.command("show")
@click.argument("held_id", metavar="ID")
@reviewer_options
def show_cmd(common: ReviewerOptions, held_id: str) -> None:
    """One held call: caller, function, rule, masked arguments, age."""
    held = common.call("GET", f"/api/approvals/{held_id}")
    if common.as_json:
        emit_json(held)
        return
    fields = [
        ("id", held["id"]), ("call id", held["call_id"]),
        *([("node", held["node"])] if held.get("node") else []),
        ("caller", f"{held.get('subject') or 'anonymous'} "
                   f"(groups: {', '.join(held.get('groups') or []) or '-'})"),
        ("request", held.get("request")), ("function", held.get("function")),
        ("rule", held.get("rule")), ("why", held.get("message")),
        ("approvers", ", ".join(held.get("approvers") or []) or "-"),
        ("requested", f"{held.get('requested_at')} ({_ago(held.get('requested_at'))})"),
        ("times out", f"{held.get('expires_at')} (in {int(held.get('expires_in_seconds', 0))}s)"),
        ("arguments hash", held.get("argument_hash")),
    ]
    if held.get("access_review"):
        fields.insert(6, ("access review", "overdue: approving lets this call through; "
                                           "the catalog grant still needs its review"))
    shown = [("arguments", held.get("arguments"))]
    if "result" in held:  # a held answer: what approving releases
        shown.append(("answer", held.get("result")))
    if not sys.stdout.isatty():
        for name, value in fields:
            click.echo(f"{name}\t{value}")
        for name, value in shown:
            click.echo(f"{name}\t{json.dumps(value, default=str)}")
        return
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    for name, value in fields:
        table.add_row(name, str(value))
    parts: list[Any] = [table]
    for name, value in shown:
        parts += [Text(f"{name} (masked):", style="bold"),
                  Text(json.dumps(value, indent=2, default=str))]
    new_console().print(Group(*parts))


def check_window(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        try:
            parse_duration(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    return value


@approvals.command("approve")
@click.argument("held_id", metavar="ID")
@click.option("--reason", required=True, help="Why you approve (recorded).")
@click.option("--for", "window", callback=check_window, metavar="DURATION",
              help="Also grant the caller this function for a while (e.g. 30m, at most 24h), "
                   "starting now. Without it, only this one call is approved.")
@click.option("--same-args", is_flag=True,
              help="With --for: only calls with exactly these arguments (default: any).")
@reviewer_options
def approve_cmd(common: ReviewerOptions, held_id: str, reason: str, window: str | None,
                same_args: bool) -> None:
    """Approve a held call: this call only (bound to its exact arguments), or with --for a
    time-boxed grant for its caller and function."""
    if same_args and not window:
        raise click.UsageError("--same-args needs --for: a one-call approval always covers "
                               "exactly this call's arguments")
    body: dict[str, Any] = {"reason": reason}
    if window:
        body["for"] = window
        body["scope"] = "same-args" if same_args else "any-args"
    verdict = common.call("POST", f"/api/approvals/{held_id}/approve", body)
    if common.as_json:
        emit_json(verdict)
        return
    grant = verdict.get("grant")
    if grant:
        length = format_duration(datetime.timedelta(seconds=grant["seconds"]))
        which = ("with exactly these arguments only" if grant["arguments"] == "same"
                 else "with ANY arguments")
        click.echo(f"approved {held_id}, and granted {grant['subject']} the function "
                   f"{grant['function']} for {length} (until {grant['expires_at']}), {which}")
    else:
        click.echo(f"approved {held_id}: this one call only, with exactly its arguments")


@approvals.command("deny")
@click.argument("held_id", metavar="ID")
@click.option("--reason", required=True, help="Why you deny (recorded, and told the caller).")
@reviewer_options
def deny_cmd(common: ReviewerOptions, held_id: str, reason: str) -> None:
    """Deny a held call: its caller gets 403 denied with your reason."""
    verdict = common.call("POST", f"/api/approvals/{held_id}/deny", {"reason": reason})
    if common.as_json:
        emit_json(verdict)
    else:
        click.echo(f"denied {held_id}")


@approvals.command("watch")
@click.option("--interval", type=click.FloatRange(min=0.2), default=2.0, show_default=True,
              help="Seconds between refreshes.")
@click.option("--iterations", type=click.IntRange(min=1), default=None,
              help="Stop after this many refreshes (default: until Ctrl-C).")
@reviewer_options
def watch_cmd(common: ReviewerOptions, interval: float, iterations: int | None) -> None:
    """A live view of the held calls, refreshed until Ctrl-C."""
    console = new_console()
    count = 0

    def frame() -> Any:
        held = common.call("GET", "/api/approvals")["approvals"]
        if common.as_json:
            return held
        stamp = Text(f"{common.admin} · {time.strftime('%H:%M:%S')} · approve with: "
                     "toolgate approvals approve ID --reason TEXT", style="dim")
        return Group(held_table(held), stamp)

    try:
        if common.as_json or not console.is_terminal:
            while iterations is None or count < iterations:
                view = frame()
                if common.as_json:
                    click.echo(json.dumps(view, default=str))
                else:
                    console.print(view)
                count += 1
                if iterations is None or count < iterations:
                    time.sleep(interval)
            return
        with Live(frame(), console=console, refresh_per_second=4, screen=False) as live:
            count = 1
            while iterations is None or count < iterations:
                time.sleep(interval)
                live.update(frame())
                count += 1
    except KeyboardInterrupt:
        pass
