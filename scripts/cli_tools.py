"""`toolgate tools ...`: the MCP tool definitions a gateway pinned, and the changes waiting.

Like `toolgate approvals`, everything goes through the running gateway's admin API (`--admin`)
with the reviewer's own OIDC token (`--token`, `$TOOLGATE_TOKEN`); accepting or forgetting a
definition needs a reviewer in the rules' `defaults: tool_approvers`, and a reason, both
recorded. Exit status 0 on success, 1 when the API refuses, 2 when the command cannot run.
"""

from __future__ import annotations

import sys

import click
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from toolgate.scripts.cli_approvals import ReviewerOptions, reviewer_options
from toolgate.scripts.cli_common import emit_json, new_console

STATUS_STYLE = {"pinned": "green", "changed": "bold red", "new": "bold yellow"}


@click.group()
def tools() -> None:
    """See pinned MCP tool definitions, review changes, accept or forget them."""


@tools.command("list")
@reviewer_options
def list_cmd(common: ReviewerOptions) -> None:
    """Every server's tools: pinned, changed or new since pinned."""
    answer = common.call("GET", "/api/tools")
    if common.as_json:
        emit_json(answer)
        return
    rows = answer["tools"]
    if not sys.stdout.isatty():
        for t in rows:
            click.echo("\t".join([t["server"], t["tool"], t["status"], t["pinned"] or "-",
                                  t["pending"] or "-"]))
        return
    table = Table(title=f"{len(rows)} tool(s); changes are handled by tool_changes: "
                        f"{answer.get('policy')}", title_justify="left")
    for column in ("SERVER", "TOOL", "STATUS", "PINNED", "LISTED NOW"):
        table.add_column(column)
    for t in rows:
        table.add_row(t["server"], t["tool"], Text(t["status"], STATUS_STYLE.get(t["status"], "")),
                      (t["pinned"] or "-")[:12], (t["pending"] or "-")[:12])
    new_console().print(table)


@tools.command("show")
@click.argument("server")
@click.argument("tool")
@reviewer_options
def show_cmd(common: ReviewerOptions, server: str, tool: str) -> None:
    """One tool: its pinned definition, and the change waiting as a diff."""
    answer = common.call("GET", "/api/tools/show", query={"server": server, "tool": tool})
    if common.as_json:
        emit_json(answer)
        return
    click.echo(f"{answer['server']} {answer['tool']}: {answer['status']}")
    click.echo(f"pinned: sha256:{answer['pinned'] or '-'}")
    if answer["pending"]:
        click.echo(f"listed now: sha256:{answer['pending']}")
    if answer["diff"]:
        if sys.stdout.isatty():
            new_console().print(Syntax(answer["diff"], "diff"))
        else:
            click.echo(answer["diff"], nl=False)


@tools.command("approve")
@click.argument("server")
@click.argument("tool")
@click.option("--reason", required=True, help="Why you accept the new definition (recorded).")
@click.option("--fingerprint", default=None,
              help="Accept only this definition (its sha256 from `tools show`): refused if "
                   "it changed again since.")
@reviewer_options
def approve_cmd(common: ReviewerOptions, server: str, tool: str, reason: str,
                fingerprint: str | None) -> None:
    """Accept the changed definition of a tool: it is pinned from now on."""
    body = {"server": server, "tool": tool, "reason": reason,
            **({"fingerprint": fingerprint} if fingerprint else {})}
    answer = common.call("POST", "/api/tools/approve", body)
    if common.as_json:
        emit_json(answer)
    else:
        click.echo(f"accepted {tool} of {server}: sha256:{answer['pinned']} is pinned")


@tools.command("forget")
@click.argument("server")
@click.argument("tool", required=False)
@click.option("--reason", required=True, help="Why (recorded).")
@reviewer_options
def forget_cmd(common: ReviewerOptions, server: str, tool: str | None, reason: str) -> None:
    """Drop a tool's pin (or every pin of a server): the next listing pins afresh."""
    answer = common.call("POST", "/api/tools/forget",
                         {"server": server, "reason": reason, **({"tool": tool} if tool else {})})
    if common.as_json:
        emit_json(answer)
    else:
        click.echo(f"forgot {'every tool' if not tool else tool} of {server}")
