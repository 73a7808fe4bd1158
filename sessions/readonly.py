"""The store's file opened read-only, for the command line while no gateway holds it: the
admin API's session routes (`api.handle`) answered on the file itself.

Opening says why it cannot: `StoreHeld` when another process (a running gateway) holds the
file, `StoreUnreadable` (its message says what to do) when it is not a store of this version.
A store behind its write-ahead journal (a gateway that died before DuckDB took every record)
first gets the journal applied, as the gateway's next start would.

`open_archive` reads a fleet's archive the same way: every node's sealed segments as one
store (`sessions.archive`).

`open_store` and `query` read a store's file directly, for the tests, the benches and the soak
(`scripts/harness.py`) that check what was recorded."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb

from toolgate.sessions import api, archive, hashchain
from toolgate.sessions.journal import JournalCorrupt, journal_path
from toolgate.sessions.journal import scan as journal_scan
from toolgate.sessions.migrations import LATEST, current_version
from toolgate.sessions.writer import CONNECTION_CONFIG, Writer

logger = logging.getLogger(__name__)


class StoreHeld(Exception):
    """Another process holds the file: ask the gateway's admin API instead."""


class StoreUnreadable(Exception):
    """The file cannot be read as a toolgate store of this version; the message says why."""


class ReadOnlyStore:
    """The store's file, opened read-only."""

    def __init__(self, con: duckdb.DuckDBPyConnection, path: Path) -> None:
        self.con, self.path = con, path

    def answer(self, path: str, params: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON body) of one admin API session route."""
        return api.handle(self.con, path, params, hashchain.head_path(self.path))

    def close(self) -> None:
        self.con.close()


class ArchiveStore(ReadOnlyStore):
    """A fleet's archive folder, read as one store: its `calls`, `findings` and `approvals`
    are views over every node's segments; `/api/verify` checks the segments themselves."""

    def answer(self, path: str, params: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        if path == "/api/verify":
            return 200, archive.verify_archive(self.path)
        return api.handle(self.con, path, params)


def open_archive(folder: Path) -> ArchiveStore:
    """The archive at `folder` (the fleet's toolgate_archive), read-only."""
    if not folder.is_dir():
        raise StoreUnreadable(f"there is no archive folder {folder}: pass --archive DIR (the "
                              "fleet's toolgate_archive)")
    try:
        return ArchiveStore(archive.open_views(folder), folder)
    except duckdb.Error as exc:
        raise StoreUnreadable(f"the archive {folder} cannot be read: {exc}") from None


def open_read_only(db: Path) -> ReadOnlyStore:
    """The store at `db`, opened read-only, at the latest schema version."""
    if not db.exists() and journal_path(db).exists():  # a gateway died before DuckDB took any
        _apply_journal(db)
    try:
        con = duckdb.connect(str(db), read_only=True, config=CONNECTION_CONFIG)
    except (duckdb.IOException, duckdb.ConnectionException) as exc:
        # Another process holds the file (or this one, with a writable connection).
        if "lock" in str(exc).lower() or "different configuration" in str(exc).lower():
            raise StoreHeld(str(exc)) from None
        raise StoreUnreadable(f"cannot open the session store {db}: {exc}") from None
    except duckdb.Error as exc:
        raise StoreUnreadable(f"{db} is not a toolgate session store: {exc}") from None
    try:
        version = current_version(con)
    except duckdb.Error:
        version = 0
    if version == 0:
        con.close()
        raise StoreUnreadable(f"{db} is not a toolgate session store (no schema_migrations table)")
    if version < LATEST:
        con.close()
        raise StoreUnreadable(
            f"{db} has schema version {version}; start the gateway once on it to migrate it to "
            f"version {LATEST}"
        )
    try:
        behind = _behind_its_journal(con, db)
    except JournalCorrupt as exc:
        con.close()
        raise StoreUnreadable(str(exc)) from None
    if behind:
        # The gateway stopped with records in its journal that the store lacks (a crash): what
        # its next start would do first, so that a read sees every call anyone was answered.
        con.close()
        _apply_journal(db)
        return open_read_only(db)
    return ReadOnlyStore(con, db)


def _behind_its_journal(con: duckdb.DuckDBPyConnection, db: Path) -> bool:
    found = journal_scan(journal_path(db))
    if found is None or not found.records:
        return False
    row = con.execute("SELECT generation, position FROM journal_applied").fetchone()
    return not row or row[0] != found.generation or int(row[1]) < found.records[-1][1]


def _apply_journal(db: Path) -> None:
    writer = Writer(db).start()
    try:
        writer.wait_ready(600)
        if writer.fatal or writer.store_healthy is False:
            raise StoreUnreadable(writer.fatal or writer.store_error or f"cannot open {db}")
        logger.warning("toolgate: applied the journal %s to the session store (the gateway "
                       "stopped before it could)", journal_path(db))
    finally:
        writer.stop()
        writer.join(600)


@contextmanager
def open_store(db: Path, read_only: bool = True) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection to the store `db`, closed at the end. Read-only (the default) once no
    process writes it; `read_only=False` shares it with a writer of this process."""
    con = duckdb.connect(str(db), read_only=read_only, config=CONNECTION_CONFIG)
    try:
        yield con
    finally:
        con.close()


def query(db: Path, sql: str, params: Iterable[Any] = (), read_only: bool = True) -> list[tuple]:
    """The rows `sql` selects from the store `db`."""
    with open_store(db, read_only) as con:
        return con.execute(sql, list(params)).fetchall()
