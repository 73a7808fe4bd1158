"""Where the command line reads the store from: the file itself when no gateway holds it
(read-only), else the running gateway's admin API. Both answer the same routes with the same
JSON (`sessions.api`), so every command gives the same answer either way.

A source's errors say everything once: what was asked where, and what to do (the command that
prints them adds nothing)."""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import duckdb

from toolgate.scripts.admin_http import AdminRefused, AdminUnreachable, admin_json
from toolgate.sessions import api, hashchain
from toolgate.sessions.migrations import LATEST, current_version
from toolgate.sessions.writer import CONNECTION_CONFIG


class SourceError(Exception):
    """A request the source could not answer; the message says what to do."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class Source(Protocol):
    description: str

    def get(self, path: str, params: Mapping[str, str] | None = None) -> dict[str, Any]: ...

    def close(self) -> None: ...


class FileSource:
    """The store's file, opened read-only."""

    def __init__(self, con: duckdb.DuckDBPyConnection, path: Path) -> None:
        self.con, self.path = con, path
        self.description = str(path)

    def get(self, path: str, params: Mapping[str, str] | None = None) -> dict[str, Any]:
        status, body = api.handle(self.con, path, params or {}, hashchain.head_path(self.path))
        if status != 200:
            raise SourceError(f"{body['error']['message']} ({self.description})", status)
        return body

    def close(self) -> None:
        self.con.close()


class AdminSource:
    """The running gateway's admin API. `why` says why the command asks it rather than the
    file, which decides what a failure tells the user to do: `admin` (--admin was given),
    `held` (a gateway holds the file) or `no-store` (no file at the default path)."""

    def __init__(self, base_url: str, token: str | None, timeout: float = 30, *,
                 why: str = "admin", db: Path | None = None) -> None:
        self.base_url, self.token, self.timeout = base_url.rstrip("/"), token, timeout
        self.why, self.db = why, db
        self.description = f"the gateway's admin API at {self.base_url}"

    def get(self, path: str, params: Mapping[str, str] | None = None) -> dict[str, Any]:
        query = urllib.parse.urlencode({k: v for k, v in (params or {}).items() if v})
        url = f"{self.base_url}{urllib.parse.quote(path)}" + (f"?{query}" if query else "")
        try:
            return admin_json(url, self.token, timeout=self.timeout)
        except AdminRefused as exc:
            if exc.status == 401 and not self.token:  # we know why: say it our way, once
                raise SourceError(f"{self._lead()}{self.description} needs a token: pass "
                                  "--token TOKEN or set TOOLGATE_TOKEN", exc.status) from None
            raise SourceError(f"{self.description} answered: {exc}", exc.status) from None
        except AdminUnreachable as exc:
            raise SourceError(f"{self._lead()}{self.description} did not answer ({exc}): "
                              f"{self._unreachable_hint()}") from None

    def _lead(self) -> str:
        if self.why == "held":
            return f"the store {self.db} is held by a running gateway, and "
        if self.why == "no-store":
            return f"there is no session store at {self.db}, and "
        return ""

    def _unreachable_hint(self) -> str:
        if self.why == "held":
            return ("pass --admin URL (the gateway's toolgate_admin_listen), or stop the "
                    "gateway to read the file directly")
        if self.why == "no-store":
            return ("pass --db PATH (the gateway's toolgate_db), or --admin URL (its "
                    "toolgate_admin_listen) while it runs")
        return "check --admin URL (the gateway's toolgate_admin_listen)"

    def close(self) -> None:
        pass


def open_source(db: Path, admin: str, token: str | None, *, db_given: bool = True,
                admin_given: bool = False) -> Source:
    """The file if it can be opened, the admin API if a gateway holds it. `db_given` and
    `admin_given`: whether the user named the store (--db) and the admin API (--admin), or
    they are the defaults. The admin API alone was named: ask it, the file is not needed. No
    store at the default path: ask the admin API (a gateway's store may be anywhere)."""
    if admin_given and not db_given:
        return AdminSource(admin, token)
    if not db.exists():
        if db_given:
            raise SourceError(
                f"there is no session store at {db}: pass --db PATH (the gateway's toolgate_db)"
            )
        return AdminSource(admin, token, why="no-store", db=db)
    try:
        con = duckdb.connect(str(db), read_only=True, config=CONNECTION_CONFIG)
    except (duckdb.IOException, duckdb.ConnectionException) as exc:
        # Another process holds the file (or this one, with a writable connection).
        if "lock" in str(exc).lower() or "different configuration" in str(exc).lower():
            return AdminSource(admin, token, why="held", db=db)
        raise SourceError(f"cannot open the session store {db}: {exc}") from None
    except duckdb.Error as exc:
        raise SourceError(f"{db} is not a toolgate session store: {exc}") from None
    try:
        version = current_version(con)
    except duckdb.Error:
        version = 0
    if version == 0:
        con.close()
        raise SourceError(f"{db} is not a toolgate session store (no schema_migrations table)")
    if version < LATEST:
        con.close()
        raise SourceError(
            f"{db} has schema version {version}; start the gateway once on it to migrate it to "
            f"version {LATEST}"
        )
    return FileSource(con, db)
