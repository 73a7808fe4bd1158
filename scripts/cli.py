"""`toolgate`: the command-line tool.

One noun-verb tree (`toolgate dev token`, `toolgate rules check`, ...). Exit status 0 on
success, 1 when a check fails, 2 on usage errors.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

try:
    from toolgate.scripts.cli_approvals import approvals
    from toolgate.scripts.cli_rules import rules
    from toolgate.scripts.cli_sessions import sessions
    from toolgate.scripts.cli_tools import tools
except ImportError as exc:  # the one expected failure: the native core (toolgate.rules.core)
    if type(exc).__name__ != "CoreUnavailable":
        raise
    sys.exit(f"toolgate: {exc}")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """toolgate: a governance gateway for LLM function calling."""


@cli.group()
def dev() -> None:
    """Development helpers: tokens from the dev OIDC issuer."""


@dev.command("token")
@click.option("--sub", required=True, help="The token's subject (the caller).")
@click.option("--groups", default="", help="Comma-separated groups, e.g. sre,support.")
@click.option("--alg", type=click.Choice(["RS256", "ES256"]), default="RS256", show_default=True)
@click.option("--ttl", type=click.IntRange(min=1), default=3600, show_default=True,
              help="Lifetime in seconds.")
@click.option("--aud", default=None, help="Audience (default: the dev issuer's).")
@click.option("--keys", "keys_path", type=click.Path(path_type=Path),
              default=Path(".toolgate/dev-issuer.json"), show_default=True,
              help="The dev issuer's key file (written by the issuer, e.g. by `make run`).")
def dev_token(sub: str, groups: str, alg: str, ttl: int, aud: str | None, keys_path: Path) -> None:
    """Print a token signed by the dev issuer."""
    from toolgate.scripts.dev_issuer import DevKeys

    if not keys_path.exists():
        raise click.UsageError(
            f"{keys_path} does not exist: start the dev issuer first (`make run`), or pass --keys"
        )
    keys = DevKeys.load(keys_path)
    group_list = [g.strip() for g in groups.split(",") if g.strip()]
    click.echo(keys.mint(sub, group_list, alg=alg, ttl=ttl, audience=aud))


@cli.group()
def gateway() -> None:
    """The gateway itself: a mitmproxy addon script."""


@gateway.command("path")
def gateway_path() -> None:
    """Print the path of the addon script, for `mitmdump -s "$(toolgate gateway path)"`."""
    import toolgate.addons

    click.echo(Path(toolgate.addons.__file__).resolve().with_name("gateway.py"))


cli.add_command(approvals)
cli.add_command(rules)
cli.add_command(sessions)
cli.add_command(tools)


def main() -> None:
    sys.exit(cli.main(prog_name="toolgate", standalone_mode=True))


if __name__ == "__main__":
    main()
