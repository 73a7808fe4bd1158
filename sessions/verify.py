"""`toolgate sessions verify`: walks each hash chain and names the first row that breaks it.

A row is bad when its seq is not the next one (rows deleted or inserted), its `prev_hash` is not
the previous row's hash (rows inserted, deleted or reordered), or its content (and, for calls,
its findings) no longer gives its hash (changed). The last row must be where the head file,
kept outside the database, says the chain ends: otherwise rows were cut from the end, or
added after it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import duckdb

from toolgate.sessions import hashchain
from toolgate.sessions.hashchain import Position
from toolgate.sessions.schema import CHAIN_PREFIX, CHAINED, select_for_hashing

_FINDINGS = (
    "LEFT JOIN (SELECT call_id, list([direction, path, label, level, action, fingerprint]) "
    "AS findings FROM findings GROUP BY call_id) fl ON fl.call_id = c.call_id"
)


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
    return {"ok": not problems, "rows": rows, "problems": problems,
            "head_file": str(head_file) if head_file else None}


def _walk(
    con: duckdb.DuckDBPyConnection, table: str
) -> tuple[int, Position, dict[str, Any] | None]:
    content = CHAINED[table]
    columns = CHAIN_PREFIX + content
    if table == "calls":
        sql = (f"SELECT {select_for_hashing(table, 'c')}, fl.findings FROM calls c {_FINDINGS} "
               "ORDER BY c.seq, c.hash")
    else:
        sql = f"SELECT {select_for_hashing(table)} FROM {table} ORDER BY seq, hash"
    cursor = con.execute(sql)
    previous = Position()
    count = 0
    while True:
        batch = cursor.fetchmany(4096)
        if not batch:
            return count, previous, None
        for row in batch:
            count += 1
            seq, values = row[0], list(row[: len(columns)])
            prev_hash, digest = row[len(columns)], row[len(columns) + 1]
            call_id = values[1]
            extra = hashchain.findings_json(row[-1] or []) if table == "calls" else None

            problem = None
            if seq == previous.seq:
                problem = f"seq {seq} appears twice (a row was inserted)"
            elif seq != previous.seq + 1:
                gap = (f"row {seq - 1} is" if seq - 1 == previous.seq + 1
                       else f"rows {previous.seq + 1}..{seq - 1} are")
                problem = f"{gap} missing (deleted)"
            elif prev_hash != previous.hash:
                problem = ("its prev_hash is not the hash of the row before it "
                           "(rows were inserted, deleted or reordered)")
            elif hashchain.row_hash(prev_hash, columns, values, extra) != digest:
                problem = "its content does not match its hash (the row was changed)"
            if problem:
                return count, previous, {"table": table, "seq": seq, "call_id": call_id,
                                         "problem": problem}
            previous = Position(seq, digest)


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
