"""`toolgate sessions verify`: walks each hash chain and names the first row that breaks it.

A row is bad when its seq is not the next one (rows deleted or inserted), its `prev_hash` is not
the previous row's hash (rows inserted, deleted or reordered), its content (and, for calls,
its findings, and its node id when it has one) no longer gives its hash (changed), or its node
id is not the one of the rows before it (a row of another node's chain). The last row must be
where the head file, kept outside the database, says the chain ends: otherwise rows were cut
from the end, or added after it.

`ChainCheck` and `hashing_query` also walk the chains of an archive's segments
(`sessions.archive`), so a row is judged the same way wherever it is kept.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb

from toolgate.sessions import hashchain
from toolgate.sessions.hashchain import Position
from toolgate.sessions.schema import CHAIN_PREFIX, CHAINED, NODE_ID, select_for_hashing

# A store's chained tables as `hashing_query` reads them, and their findings (a list of
# [direction, path, label, level, action, fingerprint] per call).
_STORE_SOURCES = {
    "calls": ("calls c LEFT JOIN (SELECT call_id, list([direction, path, label, level, action, "
              "fingerprint]) AS findings FROM findings GROUP BY call_id) fl "
              "ON fl.call_id = c.call_id", "fl.findings"),
    "approvals": ("approvals c", None),
}


def database_path(con: duckdb.DuckDBPyConnection) -> str | None:
    row = con.execute(
        "SELECT path FROM duckdb_databases() WHERE database_name = current_database()"
    ).fetchone()
    return row[0] if row and row[0] else None


def verify_store(
    con: duckdb.DuckDBPyConnection, head_file: Path | None = None
) -> dict[str, Any]:
    """{"ok", "rows": {table: n}, "problems": [{"table", "seq", "call_id", "problem"}],
    "head_file"}; `problems` holds at most the first bad row of each chain."""
    if head_file is None:
        db = database_path(con)
        head_file = hashchain.head_path(db) if db else None
    problems: list[dict[str, Any]] = []
    rows: dict[str, int] = {}
    for table in CHAINED:
        count, last, problem = _walk(con, table)
        rows[table] = count
        if problem:
            problems.append(problem)
            continue
        problem = _check_tail(con, table, head_file)
        if problem:
            problems.append(problem)
    orphans = con.execute(
        "SELECT call_id FROM findings WHERE call_id NOT IN (SELECT call_id FROM calls) LIMIT 1"
    ).fetchone()
    if orphans:
        problems.append({"table": "findings", "seq": None, "call_id": orphans[0],
                         "problem": "a finding belongs to no recorded call (its call was deleted, "
                                    "or the finding was inserted)"})
    moved = con.execute(
        f"SELECT c.seq, f.call_id FROM findings f JOIN calls c ON c.call_id = f.call_id "
        f"WHERE f.{NODE_ID} IS DISTINCT FROM c.{NODE_ID} ORDER BY c.seq LIMIT 1").fetchone()
    if moved:
        problems.append({"table": "findings", "seq": moved[0], "call_id": moved[1],
                         "problem": "a finding's node_id is not its call's (it was changed, or "
                                    "taken from another node's store)"})
    return {"ok": not problems, "rows": rows, "problems": problems,
            "head_file": str(head_file) if head_file else None}


def hashing_query(table: str, source: str, findings: str | None = None) -> str:
    """The SELECT that `ChainCheck.check` takes the rows of: a chained table's rows from
    `source` (aliased `c`), in seq order, with their node id and, for calls, `findings` (an
    expression giving a call's findings as a list of six-value lists)."""
    extra = f", {findings} AS findings" if table == "calls" else ""
    return (f"SELECT {select_for_hashing(table, 'c')}, c.{NODE_ID}{extra} FROM {source} "
            "ORDER BY c.seq, c.hash")


class ChainCheck:
    """One chain's rows, fed in seq order (`hashing_query`), each checked against the ones
    before it: `position` is the last good row. `node`: the node the rows must belong to (an
    archive folder's); else they must agree with each other."""

    def __init__(self, table: str, start: Position = Position(), node: str | None = None):
        self.table = table
        self.columns = CHAIN_PREFIX + CHAINED[table]
        self.position = start
        self.expected_node = node
        self.node: str | None = None  # the node id of the rows so far
        self.rows = 0

    def check(self, row: Sequence[Any]) -> str | None:
        """The problem `row` shows, or None (it is then the chain's new last row)."""
        n = len(self.columns)
        seq, values = row[0], list(row[:n])
        prev_hash, digest, node_id = row[n], row[n + 1], row[n + 2]
        findings = hashchain.findings_json(row[n + 3] or []) if self.table == "calls" else None
        previous = self.position
        self.rows += 1
        if seq == previous.seq:
            return f"seq {seq} appears twice (a row was inserted)"
        if seq != previous.seq + 1:
            gap = (f"row {seq - 1} is" if seq - 1 == previous.seq + 1
                   else f"rows {previous.seq + 1}..{seq - 1} are")
            return f"{gap} missing (deleted)"
        if prev_hash != previous.hash:
            return ("its prev_hash is not the hash of the row before it "
                    "(rows were inserted, deleted or reordered)")
        if hashchain.row_hash(prev_hash, self.columns, values, findings, node_id) != digest:
            return "its content does not match its hash (the row was changed)"
        problem = self._node_problem(node_id)
        if problem:
            return problem
        self.position = Position(seq, digest)
        return None

    def _node_problem(self, node_id: str | None) -> str | None:
        if node_id is None:
            if self.node is not None:
                return (f"it has no node_id, while the rows before it are node {self.node}'s "
                        "(a row of another store's chain)")
            return None
        if self.expected_node is not None and node_id != self.expected_node:
            return (f"its node_id {node_id!r} is not the node {self.expected_node!r} whose "
                    "segments hold it (a row of another node's chain)")
        if self.node is not None and node_id != self.node:
            return (f"its node_id {node_id!r} is not the node of the rows before it "
                    f"({self.node!r}): a row of another node's chain")
        self.node = node_id
        return None


def _walk(
    con: duckdb.DuckDBPyConnection, table: str
) -> tuple[int, Position, dict[str, Any] | None]:
    check = ChainCheck(table)
    cursor = con.execute(hashing_query(table, *_STORE_SOURCES[table]))
    while True:
        batch = cursor.fetchmany(4096)
        if not batch:
            return check.rows, check.position, None
        for row in batch:
            problem = check.check(row)
            if problem:
                return check.rows, check.position, {"table": table, "seq": row[0],
                                                    "call_id": row[1], "problem": problem}


def _check_tail(
    con: duckdb.DuckDBPyConnection, table: str, head_file: Path | None
) -> dict[str, Any] | None:
    if head_file is None:
        return None  # an in-memory store has no head file
    # A running gateway moves its head while we look: read the head file around the tail and
    # judge only a stable pair.
    for _ in range(50):
        try:
            before = hashchain.read_head(head_file)
            row = con.execute(
                f"SELECT seq, hash FROM {table} ORDER BY seq DESC, hash LIMIT 1"
            ).fetchone()
            after = hashchain.read_head(head_file)
        except ValueError as exc:
            return {"table": table, "seq": None, "call_id": None, "problem": str(exc)}
        if before == after:
            break
        time.sleep(0.01)
    tail = Position(int(row[0]), str(row[1])) if row else Position()
    if after is None:
        if tail.seq == 0:
            return None
        return {"table": table, "seq": tail.seq, "call_id": None,
                "problem": f"the chain head file {head_file} is missing, so rows cut from the "
                           "end cannot be ruled out (copy it next to the database)"}
    head = after.get(table)
    if head is None or head.accepts(tail):
        return None
    if head.committed.seq > tail.seq:
        return {"table": table, "seq": tail.seq + 1, "call_id": None,
                "problem": f"rows {tail.seq + 1}..{head.committed.seq} were cut from the end "
                           f"(the head file says the chain ends at {head.committed.seq})"}
    return {"table": table, "seq": tail.seq, "call_id": None,
            "problem": f"the chain ends at row {tail.seq}, not where the head file says "
                       f"({head.committed.seq}): rows were added or changed at its end"}
