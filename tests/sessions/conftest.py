"""Fixtures for the session store's tests: writers on a fresh store (helpers: storekit)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from toolgate.sessions import writer as writer_module
from toolgate.sessions.writer import Writer


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "store.duckdb"


@pytest.fixture
def open_writer(db: Path, monkeypatch) -> Iterator:
    """Starts writers (as if each were a new gateway process) and stops them at the end."""
    started: list[Writer] = []

    def start(path: Path = db, new_process: bool = True, journal: bool = False, **kwargs) -> Writer:
        if new_process:  # pending rows are recovered once per process
            monkeypatch.setattr(writer_module, "_recovered", set())
        # Without the journal unless asked: a future then resolves once its record is in
        # DuckDB, which most of these tests look at (test_journal_writer.py: with it).
        w = Writer(path, journal=journal, **kwargs).start()
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()
        w.join(10)


