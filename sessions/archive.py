"""A fleet's archive: each node seals what its store has committed into Parquet segments in a
folder the fleet shares (`toolgate_archive`), and registers them in PostgreSQL
(`toolgate_control`); `toolgate sessions ... --archive` reads every node's segments as one
store, and `toolgate sessions verify --archive` checks them.

    ARCHIVE/<node_id>/calls-<first seq>-<last seq>.parquet      calls rows, each with its findings
    ARCHIVE/<node_id>/approvals-<first seq>-<last seq>.parquet  approvals rows
    ARCHIVE/<node_id>/head.json                                 the sealed head of each chain

A segment holds a chain's rows with seq in (last sealed, committed], as the store has them
(node id, prev_hash and hash included): DuckDB writes it to a hidden temporary name, which is
fsynced, then renamed, so a reader never sees half a file. Seqs are zero-padded to 12 digits,
so names sort in chain order. A calls segment carries each call's findings as a list column
(`findings`), so that one file, one sha256, covers a call and its findings. Pending
(unanswered) calls are never sealed.

Where a node goes on is read from its folder: the newest segment's last row, or head.json's
position where it says more (a segment deleted since is left a gap for `verify` to report, not
sealed again), so a restart neither duplicates nor skips a row. A store that does not continue
the sealed chain (another store under the same node id, or a sealed row changed since) is not
sealed: the node says so in its health, and goes on serving calls.

`toolgate_segments` in PostgreSQL holds what was sealed: per node and chain, the seq range, the
hash before the first row and the last row's, the file's name and the sha256 of its bytes.
Whoever can rewrite the archive folder (files and head.json alike) cannot rewrite that too.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import psycopg

from toolgate.sessions.control import redact_url
from toolgate.sessions.hashchain import Position, write_atomically
from toolgate.sessions.migrations import migrate
from toolgate.sessions.schema import CHAINED, NODE_ID
from toolgate.sessions.verify import ChainCheck, hashing_query

logger = logging.getLogger(__name__)

HEAD_FILE = "head.json"
HEAD_VERSION = 1
SEGMENT = re.compile(r"^(calls|approvals)-(\d{12})-(\d{12})\.parquet$")
# A long backlog (a node that could not seal for a while) is sealed as several segments.
SEGMENT_ROWS = 100_000
CONNECT_TIMEOUT = 3  # seconds to reach PostgreSQL
STATEMENT_TIMEOUT_MS = 10_000
# Never resolve an unknown table name to a Python variable of the caller (DuckDB's default).
_CONFIG = {"python_enable_replacements": False}

# A segment's rows as the store has them; a calls segment with its findings.
_SEGMENT_SELECT = {
    "calls": (
        "SELECT c.*, fl.findings FROM calls c LEFT JOIN ("
        " SELECT call_id, list(struct_pack(direction, path, label, level, action, fingerprint)"
        " ORDER BY direction, path, label, fingerprint) AS findings FROM findings"
        " WHERE call_id IN (SELECT call_id FROM calls WHERE seq > {after} AND seq <= {last})"
        " GROUP BY call_id) fl ON fl.call_id = c.call_id"
        " WHERE c.seq > {after} AND c.seq <= {last} ORDER BY c.seq"
    ),
    "approvals": "SELECT * FROM approvals WHERE seq > {after} AND seq <= {last} ORDER BY seq",
}
# A calls segment's findings as `verify.ChainCheck` hashes them.
_SEGMENT_FINDINGS = ("list_transform(c.findings, lambda f: [f.direction, f.path, f.label, "
                     "f.level, f.action, f.fingerprint])")

SCHEMA = """
CREATE TABLE IF NOT EXISTS toolgate_segments (
    node_id   text NOT NULL,
    chain     text NOT NULL,            -- calls or approvals
    first_seq bigint NOT NULL,
    last_seq  bigint NOT NULL,
    prev_hash text NOT NULL,            -- the chain's hash before the segment's first row
    last_hash text NOT NULL,            -- its last row's hash
    file      text NOT NULL,            -- its name in the node's folder of the archive
    sha256    text NOT NULL,            -- of the file's bytes
    rows      bigint NOT NULL,
    sealed_at timestamptz NOT NULL,
    PRIMARY KEY (node_id, chain, first_seq)
);
"""


class ArchiveError(Exception):
    """The archive cannot be sealed into or read as it is; the message says why."""


@dataclass(frozen=True)
class Segment:
    """One sealed file, as PostgreSQL registers it."""

    node_id: str
    chain: str
    first_seq: int
    last_seq: int
    prev_hash: str
    last_hash: str
    file: str
    sha256: str
    rows: int
    sealed_at: float


@dataclass(frozen=True)
class SegmentFile:
    """A segment's file, known by its name."""

    chain: str
    first_seq: int
    last_seq: int
    path: Path


def segment_name(chain: str, first_seq: int, last_seq: int) -> str:
    return f"{chain}-{first_seq:012d}-{last_seq:012d}.parquet"


def list_segments(folder: Path) -> dict[str, list[SegmentFile]]:
    """A node folder's segment files per chain, in seq order."""
    found: dict[str, list[SegmentFile]] = {chain: [] for chain in CHAINED}
    if folder.is_dir():
        for path in folder.iterdir():
            match = SEGMENT.match(path.name)
            if match:
                chain, first, last = match.groups()
                found[chain].append(SegmentFile(chain, int(first), int(last), path))
    for files in found.values():
        files.sort(key=lambda f: (f.first_seq, f.last_seq))
    return found


def stray_files(folder: Path) -> list[Path]:
    """Files that the readers' globs (`calls-*.parquet`) take for segments but are not named
    as one: their rows would be read, never verified."""
    return sorted(p for chain in CHAINED for p in folder.glob(f"{chain}-*.parquet")
                  if not SEGMENT.match(p.name))


# -- sealing --------------------------------------------------------------------------------


def seal_next(con: duckdb.DuckDBPyConnection, folder: Path, node_id: str, chain: str,
              after: Position) -> Segment | None:
    """Seal `chain`'s next segment into `folder`: the store's committed rows after `after` (the
    last row sealed), `SEGMENT_ROWS` at most. None when there are none."""
    top = con.execute(f"SELECT coalesce(max(seq), 0) FROM {chain}").fetchone()[0]
    if after.seq and after.hash not in {r[0] for r in con.execute(
            f"SELECT hash FROM {chain} WHERE seq = ?", [after.seq]).fetchall()}:
        raise ArchiveError(
            f"the store does not continue the chain node {node_id} sealed: its {chain} row "
            f"{after.seq} is {'missing' if top < after.seq else 'another'} (another store under "
            "this node id, or a row changed since it was sealed); nothing more is sealed")
    if top == after.seq:
        return None
    # The next rows, whatever their seqs (a store with rows cut from it: the gap is sealed as
    # it is, for `verify` to report).
    last, rows = con.execute(f"SELECT max(seq), count(*) FROM (SELECT seq FROM {chain} "
                             "WHERE seq > ? ORDER BY seq LIMIT ?)",
                             [after.seq, SEGMENT_ROWS]).fetchone()
    last_hash = con.execute(f"SELECT min(hash) FROM {chain} WHERE seq = ?", [last]).fetchone()[0]
    name = segment_name(chain, after.seq + 1, last)
    final, tmp = folder / name, folder / f".{name}.tmp"
    if final.exists():
        raise ArchiveError(f"{final} exists already: is another node sealing as {node_id}?")
    try:
        select = _SEGMENT_SELECT[chain].format(after=int(after.seq), last=int(last))
        con.execute(f"COPY ({select}) TO {_literal(tmp)} (FORMAT parquet)")
        digest = _sync_and_hash(tmp)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    _sync_folder(folder)
    return Segment(node_id, chain, after.seq + 1, last, after.hash, last_hash, name, digest,
                   rows, time.time())


def sealed_positions(con: duckdb.DuckDBPyConnection, folder: Path) -> dict[str, Position]:
    """Where sealing goes on in a node's folder, per chain: its newest segment's last row, or
    head.json's position where it says more (a segment deleted since: the gap stays)."""
    head = read_head(folder) or {}
    positions: dict[str, Position] = {}
    for chain, files in list_segments(folder).items():
        tail = Position()
        if files:
            newest = files[-1]
            row = con.execute("SELECT seq, hash FROM read_parquet(?) ORDER BY seq DESC LIMIT 1",
                              [str(newest.path)]).fetchone()
            if not row or row[0] != newest.last_seq:
                raise ArchiveError(f"the segment {newest.path} does not end at seq "
                                   f"{newest.last_seq}, as its name says")
            tail = Position(int(row[0]), str(row[1]))
        sealed = head.get(chain)
        if sealed is not None and sealed.seq > tail.seq:
            logger.error("toolgate: the archive %s lacks %s rows %d..%d that its head.json says "
                         "were sealed (deleted?); sealing goes on after them, and `toolgate "
                         "sessions verify --archive` reports the gap", folder, chain,
                         tail.seq + 1, sealed.seq)
            tail = sealed
        positions[chain] = tail
    return positions


def read_head(folder: Path) -> dict[str, Position] | None:
    """A node folder's head.json, per chain; None if there is none. One that does not parse
    raises ArchiveError: it is evidence, not something to skip."""
    path = folder / HEAD_FILE
    try:
        data = json.loads(path.read_text())
        if data.get("node") != folder.name:
            raise ValueError(f"it is node {data.get('node')!r}'s, not {folder.name!r}'s")
        return {chain: Position.from_dict(p) for chain, p in data["chains"].items()}
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ArchiveError(f"the archive's head file {path} is not valid: {exc}") from None


def write_head(folder: Path, node_id: str, positions: dict[str, Position]) -> None:
    data = {"version": HEAD_VERSION, "node": node_id, "sealed_at": _iso(time.time()),
            "chains": {chain: p.as_dict() for chain, p in positions.items()}}
    write_atomically(folder / HEAD_FILE, json.dumps(data, sort_keys=True).encode())
    _sync_folder(folder)


def describe_segment(node_id: str, segment: SegmentFile) -> Segment:
    """A segment as its file has it (one sealed by an earlier run, to register it)."""
    con = duckdb.connect(config=_CONFIG)
    try:
        rows, first_prev, last_hash = con.execute(
            "SELECT count(*), arg_min(prev_hash, seq), arg_max(hash, seq) FROM read_parquet(?)",
            [str(segment.path)]).fetchone()
    finally:
        con.close()
    return Segment(node_id, segment.chain, segment.first_seq, segment.last_seq, first_prev,
                   last_hash, segment.path.name, file_sha256(segment.path), rows,
                   segment.path.stat().st_mtime)


class Archive:
    """A node's side of the archive: `seal` (on the store's reading connection) writes what
    the store committed since the last seal; `register` (on a worker thread) puts the
    segments in PostgreSQL. They run one at a time, never on the event loop; a failure is
    logged, counted and kept for `health`, and the next call tries again."""

    def __init__(self, root: Path, node_id: str, control: str | None = None) -> None:
        self.root, self.node_id, self.control = root, node_id, control
        self.folder = root / node_id
        self.sealed: dict[str, Position] | None = None  # read from the folder at the first seal
        self.last_seal: float | None = None
        self.error: str | None = None
        self.control_error: str | None = None
        self.stats = {"seals": 0, "segments": 0, "failures": 0, "registered": 0,
                      "control_failures": 0}
        self._unregistered: dict[str, Segment] = {}  # sealed here, by file name
        self._reconciled = False  # the folder's segments of earlier runs were registered
        self._lock = threading.Lock()

    def seal(self, con: duckdb.DuckDBPyConnection) -> list[Segment]:
        """Seal every chain up to what the store has committed; the segments made."""
        made: list[Segment] = []
        with self._lock:
            try:
                self.folder.mkdir(exist_ok=True)
                if self.sealed is None:
                    self.sealed = sealed_positions(con, self.folder)
                    if read_head(self.folder) != self.sealed:  # none yet, or a seal cut short
                        write_head(self.folder, self.node_id, self.sealed)
                for chain in CHAINED:
                    while segment := seal_next(con, self.folder, self.node_id, chain,
                                               self.sealed[chain]):
                        made.append(segment)
                        if self.control:
                            self._unregistered[segment.file] = segment
                        self.sealed[chain] = Position(segment.last_seq, segment.last_hash)
                        write_head(self.folder, self.node_id, self.sealed)
            except (ArchiveError, duckdb.Error, OSError) as exc:
                self._failed(f"cannot seal into the archive {self.folder}: {exc}")
            else:
                self.last_seal, self.error = time.time(), None
                self.stats["seals"] += 1
            self.stats["segments"] += len(made)
        return made

    def failed(self, message: str) -> None:
        """A seal that could not even start (the store is not open)."""
        with self._lock:
            self._failed(f"cannot seal into the archive {self.folder}: {message}")

    def register(self) -> int:
        """Register this node's segments that PostgreSQL lacks: those sealed here since it was
        last reached and, the first time, any in the folder from an earlier run; how many."""
        if not self.control:
            return 0
        with self._lock:
            try:
                todo = (list(self._unregistered.values()) if self._reconciled
                        else self._missing_from(self.control))
                register_segments(self.control, todo)
            except Exception as exc:  # noqa: BLE001 - PostgreSQL down, a file unreadable: retried
                message = f"cannot register segments in {redact_url(self.control)}: {exc}"
                if message != self.control_error:
                    logger.warning("toolgate: %s; they are registered once it can be reached",
                                   message)
                self.control_error = message
                self.stats["control_failures"] += 1
                return 0
            self._unregistered.clear()
            self._reconciled = True
            self.control_error = None
            self.stats["registered"] += len(todo)
            return len(todo)

    def _missing_from(self, url: str) -> list[Segment]:
        """The folder's segments that PostgreSQL has not registered: as sealed here, or as
        their files say (sealed by an earlier run)."""
        known = {(s.chain, s.first_seq) for s in registered_segments(url, self.node_id)}
        return [self._unregistered.get(f.path.name) or describe_segment(self.node_id, f)
                for files in list_segments(self.folder).values() for f in files
                if (f.chain, f.first_seq) not in known]

    def health(self) -> dict[str, Any]:
        return {
            "dir": str(self.root),
            "node": self.node_id,
            "sealed": {c: p.as_dict() for c, p in (self.sealed or {}).items()} or None,
            "last_seal": _iso(self.last_seal),
            "last_error": self.error,
            "control": redact_url(self.control) if self.control else None,
            "control_error": self.control_error,
            "unregistered": len(self._unregistered) if self.control else None,
            **self.stats,
        }

    def _failed(self, message: str) -> None:
        if message != self.error:
            logger.error("toolgate: %s; calls go on, the next seal tries again", message)
        self.error = message
        self.stats["failures"] += 1


# -- PostgreSQL -----------------------------------------------------------------------------


def _connect(url: str) -> psycopg.Connection:
    return psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT, application_name="toolgate",
                           options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS}")


def register_segments(url: str, segments: Iterable[Segment]) -> None:
    """Put `segments` in `toolgate_segments` (created if need be). A segment registered
    already keeps its registration: it is the evidence a changed file is checked against."""
    rows = [(s.node_id, s.chain, s.first_seq, s.last_seq, s.prev_hash, s.last_hash, s.file,
             s.sha256, s.rows, s.sealed_at) for s in segments]
    if not rows:
        return
    with _connect(url) as conn, conn.transaction(), conn.cursor() as cur:
        # Nodes start together: one of them creates the table.
        cur.execute("SELECT pg_advisory_xact_lock(hashtext('toolgate_segments'))")
        cur.execute(SCHEMA)
        cur.executemany(
            "INSERT INTO toolgate_segments (node_id, chain, first_seq, last_seq, prev_hash, "
            "last_hash, file, sha256, rows, sealed_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, "
            "%s, to_timestamp(%s)) ON CONFLICT (node_id, chain, first_seq) DO NOTHING", rows)


def registered_segments(url: str, node_id: str | None = None) -> list[Segment]:
    """The segments registered in PostgreSQL (of one node, or all), in chain order."""
    with _connect(url) as conn:
        if conn.execute("SELECT to_regclass('toolgate_segments')").fetchone()[0] is None:
            return []  # nothing was ever registered there
        rows = conn.execute(
            "SELECT node_id, chain, first_seq, last_seq, prev_hash, last_hash, file, sha256, "
            "rows, extract(epoch FROM sealed_at)::float8 FROM toolgate_segments "
            "WHERE %(node)s::text IS NULL OR node_id = %(node)s "
            "ORDER BY node_id, chain, first_seq", {"node": node_id}).fetchall()
    return [Segment(*row) for row in rows]


# -- reading --------------------------------------------------------------------------------


def open_views(root: Path) -> duckdb.DuckDBPyConnection:
    """An in-memory database whose `calls`, `findings` and `approvals` are views over every
    node's segments under `root`, so that `sessions.query` answers across the fleet. A row
    written before its node had an id shows its folder's."""
    con = duckdb.connect(config=_CONFIG)
    try:
        migrate(con)  # the store's tables, empty: a chain nothing was sealed of stays one
        for chain in CHAINED:
            if not any(root.glob(f"*/{chain}-*.parquet")):
                continue
            source = (f"read_parquet({_literal(root / '*' / f'{chain}-*.parquet')}, "
                      "union_by_name = true, filename = true)")
            node = (f"coalesce({NODE_ID}, regexp_extract(replace(filename, '\\', '/'), "
                    "'([^/]+)/[^/]+$', 1))")
            extra = ", findings" if chain == "calls" else ""
            con.execute(f"DROP TABLE {chain}")
            con.execute(f"CREATE VIEW {chain} AS SELECT * EXCLUDE (filename{extra}) "
                        f"REPLACE ({node} AS {NODE_ID}) FROM {source}")
            if chain == "calls":
                con.execute("DROP TABLE findings")
                con.execute(
                    "CREATE VIEW findings AS SELECT call_id, f.direction, f.path, f.label, "
                    f"f.level, f.action, f.fingerprint, {NODE_ID} FROM (SELECT call_id, "
                    f"{node} AS {NODE_ID}, unnest(findings) AS f FROM {source})")
    except BaseException:
        con.close()
        raise
    return con


def verify_archive(root: Path, control: str | None = None) -> dict[str, Any]:
    """Check every node's chains across its segments (seq continuous, prev_hash linked from
    file to file, each row's hash, its findings and node id), each node's head.json, and with
    `control`, the segments registered in PostgreSQL: {"ok", "archive", "rows", "nodes",
    "problems": [{"node", "table", "first_seq", "last_seq", "segment", "seq", "call_id",
    "problem"}], "control"}. Raises psycopg.Error when PostgreSQL cannot be asked."""
    problems: list[dict[str, Any]] = []
    rows = {chain: 0 for chain in CHAINED}
    nodes: dict[str, Any] = {}
    on_disk: dict[tuple[str, str, int], SegmentFile] = {}
    heads: dict[str, dict[str, Position] | None] = {}
    con = duckdb.connect(config=_CONFIG)
    try:
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            node = folder.name
            files = list_segments(folder)
            on_disk.update({(node, f.chain, f.first_seq): f for fs in files.values() for f in fs})
            problems += [_problem(node, None, path.name, None, f"{path.name} is read as a segment "
                                  "but is not named as one: its rows are not verified")
                         for path in stray_files(folder)]
            tails: dict[str, Position | None] = {}
            nodes[node] = {}
            for chain in CHAINED:
                check = ChainCheck(chain, node=node)
                problem = _walk_segments(con, node, check, files[chain])
                if problem:
                    problems.append(problem)
                tails[chain] = None if problem else check.position
                rows[chain] += check.rows
                nodes[node][chain] = {"segments": len(files[chain]), "rows": check.rows,
                                      **check.position.as_dict()}
            found, heads[node] = _check_head(folder, tails, files)
            problems += found
    finally:
        con.close()
    if control:
        problems += _check_control(root, registered_segments(control), on_disk, heads)
    return {"ok": not problems, "archive": str(root), "rows": rows, "nodes": nodes,
            "problems": problems, "control": redact_url(control) if control else None}


def _walk_segments(con: duckdb.DuckDBPyConnection, node: str, check: ChainCheck,
                   files: list[SegmentFile]) -> dict[str, Any] | None:
    """The first problem of a chain walked across its segment files, or None."""
    for f in files:
        end = check.position.seq
        if f.first_seq <= end:
            return _problem(node, f, f.path.name, None,
                            f"it overlaps the segment before it, which ends at seq {end}")
        if f.first_seq != end + 1:
            gap = SegmentFile(f.chain, end + 1, f.first_seq - 1, f.path)
            return _problem(node, gap, None, None, f"{_rows(end + 1, f.first_seq - 1)} missing "
                            f"before {f.path.name}: the segment(s) holding them were deleted")
        findings = _SEGMENT_FINDINGS if f.chain == "calls" else None
        try:
            cursor = con.execute(hashing_query(f.chain, f"read_parquet({_literal(f.path)}) c",
                                               findings))
            while batch := cursor.fetchmany(4096):
                for row in batch:
                    problem = check.check(row)
                    if problem:
                        return _problem(node, f, f.path.name, row[0], problem, row[1])
        except duckdb.Error as exc:
            return _problem(node, f, f.path.name, None, f"it cannot be read as a segment: {exc}")
        if check.position.seq != f.last_seq:
            return _problem(node, f, f.path.name, None,
                            f"its rows end at seq {check.position.seq}, not at {f.last_seq} as "
                            "its name says (rows were cut from it)")
    return None


def _check_head(folder: Path, tails: dict[str, Position | None],
                files: dict[str, list[SegmentFile]]
                ) -> tuple[list[dict[str, Any]], dict[str, Position] | None]:
    """A node's head.json against where its chains' segments end (`tails`; None where the
    walk stopped at a problem): its problems, and the head."""
    node = folder.name
    try:
        head = read_head(folder)
    except ArchiveError as exc:
        return [_problem(node, None, HEAD_FILE, None, str(exc))], None
    if head is None:
        if any(files.values()):
            return [_problem(node, None, HEAD_FILE, None, "head.json is missing, so segments "
                             "deleted from the end cannot be ruled out")], None
        return [], None
    problems = []
    for chain, tail in tails.items():
        sealed = head.get(chain, Position())
        if tail is None or sealed == tail:
            continue
        where = {"table": chain, "first_seq": min(sealed.seq, tail.seq) + 1,
                 "last_seq": max(sealed.seq, tail.seq)}
        if sealed.seq > tail.seq:
            text = (f"{_rows(tail.seq + 1, sealed.seq)} missing from the end: head.json says "
                    f"the chain was sealed up to seq {sealed.seq} (the last segment(s) were "
                    "deleted)")
        else:
            text = (f"head.json says the chain was sealed up to seq {sealed.seq}, not where its "
                    f"segments end (seq {tail.seq}): it was rewritten, or the node stopped "
                    "between sealing a segment and writing it")
        problems.append({**_problem(node, None, HEAD_FILE, None, text), **where})
    return problems, head


def _check_control(root: Path, registered: list[Segment],
                   on_disk: dict[tuple[str, str, int], SegmentFile],
                   heads: dict[str, dict[str, Position] | None]) -> list[dict[str, Any]]:
    """The archive against the segments registered in PostgreSQL."""
    problems = []
    known: dict[tuple[str, str, int], Segment] = {}
    for s in registered:
        known[(s.node_id, s.chain, s.first_seq)] = s
        where = SegmentFile(s.chain, s.first_seq, s.last_seq, root / s.node_id / s.file)
        if not where.path.is_file():
            problems.append(_problem(s.node_id, where, s.file, None, "the segment registered in "
                                     "PostgreSQL is missing from the archive (deleted)"))
        elif file_sha256(where.path) != s.sha256:
            problems.append(_problem(s.node_id, where, s.file, None, "the file changed since it "
                                     "was sealed: its sha256 is not the one registered in "
                                     "PostgreSQL"))
    for (node, chain, first), f in sorted(on_disk.items()):
        entry = known.get((node, chain, first))
        if entry is None or entry.file != f.path.name:
            problems.append(_problem(node, f, f.path.name, None, "the segment is not registered "
                                     "in PostgreSQL (the node could not reach it since it sealed "
                                     "it, or the node did not seal it)"))
    ends: dict[tuple[str, str], Segment] = {}
    for s in registered:
        ends[(s.node_id, s.chain)] = s  # in chain order: the last one stays
    for (node, chain), last in sorted(ends.items()):
        head = heads.get(node)
        sealed = (head or {}).get(chain, Position())
        if head is not None and sealed.seq < last.last_seq:
            problems.append({**_problem(node, None, HEAD_FILE, None, (
                f"head.json says the chain was sealed up to seq {sealed.seq}, but PostgreSQL has "
                f"its segments up to seq {last.last_seq} (segments were deleted and head.json "
                "rewritten)")), "table": chain, "first_seq": sealed.seq + 1,
                "last_seq": last.last_seq})
    return problems


def _problem(node: str, segment: SegmentFile | None, name: str | None, seq: int | None,
             text: str, call_id: str | None = None) -> dict[str, Any]:
    return {"node": node, "table": segment.chain if segment else None,
            "first_seq": segment.first_seq if segment else None,
            "last_seq": segment.last_seq if segment else None,
            "segment": name, "seq": seq, "call_id": call_id, "problem": text}


# -- files ----------------------------------------------------------------------------------


def _rows(first: int, last: int) -> str:
    return f"row {first} is" if first == last else f"rows {first}..{last} are"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _sync_and_hash(path: Path) -> str:
    """fsync a file DuckDB wrote, and its sha256."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return file_sha256(path)


def _sync_folder(folder: Path) -> None:
    """fsync a folder, so that a rename in it is on disk."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _literal(path: Path) -> str:
    """A path as an SQL string literal (COPY and read_parquet's glob take no parameter)."""
    return "'" + str(path).replace("'", "''") + "'"


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat().replace("+00:00", "Z")

