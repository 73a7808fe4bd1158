"""What the `toolgate` command groups share: the exit-2 error, the options that name the store
and the admin API, the JSON emitter and the console.

`StoreOptions` is what a command that reads recorded calls is given (`toolgate sessions ...`,
`toolgate rules test`): the store file when no gateway holds it, else the gateway's admin API
(`store_reader`), or with `--archive`, a fleet's archive: every node's sealed segments. `toolgate approvals ...` builds its own reviewer options from the same
`--admin`, `--token` and `--json` options.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from toolgate.scripts.store_reader import FileReader, ReaderError, StoreReader, open_reader
from toolgate.sessions.readonly import StoreUnreadable, open_archive

DEFAULT_ADMIN = "http://127.0.0.1:8090"

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


class CannotRun(click.ClickException):
    """The command cannot run as asked (exit 2, like a usage error)."""

    exit_code = 2


def json_option() -> Decorator:
    return click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


def token_option(help: str) -> Decorator:
    return click.option("--token", envvar="TOOLGATE_TOKEN", default=None, help=help)


def admin_option(help: str) -> Decorator:
    return click.option("--admin", default=DEFAULT_ADMIN, show_default=True, help=help)


def given(ctx: click.Context, name: str) -> bool:
    """Did the user name this option, rather than leave it to its default?"""
    return ctx.get_parameter_source(name) not in (
        click.core.ParameterSource.DEFAULT, click.core.ParameterSource.DEFAULT_MAP, None)


@dataclass
class StoreOptions:
    db: Path
    admin: str
    token: str | None
    mask_key: str | None
    as_json: bool
    db_given: bool = True  # named on the command line, not the default
    admin_given: bool = False
    archive: Path | None = None  # a fleet's archive folder, read instead of a store

    def archive_folder(self) -> Path:
        """The archive folder to read (`--archive`), which replaces --db and --admin."""
        if self.archive is None or self.db_given or self.admin_given:
            raise click.UsageError("--archive reads a fleet's archive instead of a store: "
                                   "pass it without --db and --admin")
        return self.archive

    def reader(self) -> StoreReader:
        if self.archive is not None:
            try:
                return FileReader(open_archive(self.archive_folder()))
            except StoreUnreadable as exc:
                raise CannotRun(str(exc)) from None
        try:
            return open_reader(self.db, self.admin, self.token, db_given=self.db_given,
                               admin_given=self.admin_given)
        except ReaderError as exc:
            raise CannotRun(str(exc)) from None

    def get(self, path: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        reader = self.reader()
        try:
            return reader.get(path, params)
        except ReaderError as exc:
            raise CannotRun(str(exc)) from None  # it says where and what to do already
        finally:
            reader.close()


def store_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The options every command that reads the store takes after its name."""

    @json_option()
    @click.option("--mask-key", envvar="TOOLGATE_MASK_KEY", default=None,
                  metavar="env:NAME|file:PATH",
                  help="The gateway's toolgate_mask_key, for find-value. [env: TOOLGATE_MASK_KEY]")
    @token_option("Bearer token for the admin API. [env: TOOLGATE_TOKEN]")
    @admin_option("The gateway's admin API, used while the gateway holds the store.")
    @click.option("--archive", type=click.Path(path_type=Path, file_okay=False, exists=True),
                  default=None, metavar="DIR",
                  help="A fleet's archive (its toolgate_archive), read instead of --db: the "
                       "calls of every node.")
    @click.option("--db", type=click.Path(path_type=Path, dir_okay=False),
                  default=Path("toolgate.duckdb"), show_default=True,
                  help="The session store (the gateway's toolgate_db).")
    @functools.wraps(fn)
    def wrapper(db, archive, admin, token, mask_key, as_json, **kwargs):
        ctx = click.get_current_context()
        return fn(StoreOptions(db, admin, token, mask_key, as_json, given(ctx, "db"),
                               given(ctx, "admin"), archive), **kwargs)

    return wrapper


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


def new_console(*, soft_wrap: bool = False, highlight: bool = False) -> Console:
    """A console on stdout. `soft_wrap`: long lines run on rather than break at the terminal's
    width; `highlight`: rich colours numbers and strings in what it prints."""
    return Console(highlight=highlight, soft_wrap=soft_wrap)
