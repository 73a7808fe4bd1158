"""Where the command line reads the store from: the file itself when no gateway holds it
(read-only, `sessions.readonly`), else the running gateway's admin API. Both answer the same
routes with the same JSON (`sessions.api`), so every command gives the same answer either way.

A reader's errors say everything once: what was asked where, and what to do (the command that
prints them adds nothing)."""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from toolgate.scripts.admin_http import AdminRefused, AdminUnreachable, admin_json
from toolgate.sessions.journal import journal_path
from toolgate.sessions.readonly import ReadOnlyStore, StoreHeld, StoreUnreadable, open_read_only


class ReaderError(Exception):
    """A request the reader could not answer; the message says what to do."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class StoreReader(Protocol):
    description: str

    def get(self, path: str, params: Mapping[str, str] | None = None) -> dict[str, Any]: ...

    def close(self) -> None: ...


class FileReader:
    """The store's file, opened read-only."""

    def __init__(self, store: ReadOnlyStore) -> None:
        self.store = store
        self.description = str(store.path)

    def get(self, path: str, params: Mapping[str, str] | None = None) -> dict[str, Any]:
        status, body = self.store.answer(path, params or {})
        if status != 200:
            raise ReaderError(f"{body['error']['message']} ({self.description})", status)
        return body

    def close(self) -> None:
        self.store.close()


class AdminReader:
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
                raise ReaderError(f"{self._lead()}{self.description} needs a token: pass "
                                  "--token TOKEN or set TOOLGATE_TOKEN", exc.status) from None
            raise ReaderError(f"{self.description} answered: {exc}", exc.status) from None
        except AdminUnreachable as exc:
            raise ReaderError(f"{self._lead()}{self.description} did not answer ({exc}): "
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


def open_reader(db: Path, admin: str, token: str | None, *, db_given: bool = True,
                admin_given: bool = False) -> StoreReader:
    """The file if it can be opened, the admin API if a gateway holds it. `db_given` and
    `admin_given`: whether the user named the store (--db) and the admin API (--admin), or
    they are the defaults. The admin API alone was named: ask it, the file is not needed. No
    store at the default path: ask the admin API (a gateway's store may be anywhere)."""
    if admin_given and not db_given:
        return AdminReader(admin, token)
    if not db.exists() and not journal_path(db).exists():
        if db_given:
            raise ReaderError(
                f"there is no session store at {db}: pass --db PATH (the gateway's toolgate_db)"
            )
        return AdminReader(admin, token, why="no-store", db=db)
    try:
        return FileReader(open_read_only(db))
    except StoreHeld:
        return AdminReader(admin, token, why="held", db=db)
    except StoreUnreadable as exc:
        raise ReaderError(str(exc)) from None
