"""Tamper evidence: each chained row's hash covers its content and the previous row's hash,
and the chain's head is also kept outside the database file, in `<db>.head`.

The writer updates the head file *before* each commit: `committed` is the head that is in the
database, `intent` the head the commit in progress will make. A store whose last row is either
of them is whole (a crash may stop a commit between the two); a store that ends anywhere else
has lost rows from its end, or gained some. When the writer has nothing more to commit it
settles the file (`intent == committed`), so only a commit still in progress is ever open.

The chain proves a store has not been edited by someone who cannot also rewrite the head file;
an attacker with write access to both can rebuild everything. Ship the head elsewhere (a log
service, a WORM bucket) for more.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from toolgate.sessions.schema import BLOB

GENESIS = "0" * 64
HEAD_VERSION = 1


def encode_value(kind: str, value: Any) -> Any:
    """A column's value as it enters the hash: bodies by their own SHA-256 (tagged, so that a
    body never reads as a string); everything else as JSON."""
    if kind == BLOB and value is not None:
        return {"sha256": hashlib.sha256(value).hexdigest()}
    return value


def finding_key(finding: Sequence[Any]) -> tuple:
    return tuple((v is None, "" if v is None else str(v)) for v in finding)


def canonical_findings(findings: Iterable[Sequence[Any]]) -> list[tuple[Any, ...]]:
    """A call's findings in an order that does not depend on how they were stored."""
    rows = [tuple(f) for f in findings]
    if all(type(v) is str for row in rows for v in row):
        # The order `finding_key` gives when there is no None: a large response has a
        # thousand findings, and building their keys costs ten times the sort.
        rows.sort()
    else:
        rows.sort(key=finding_key)
    return rows


def findings_json(findings: Iterable[Sequence[Any]]) -> bytes:
    """The JSON a calls row's hash covers for its findings (rows of six: direction, path,
    label, level, action, fingerprint), in canonical order. The writer has the native core
    make the same bytes (`FindingTable.canonical`); the verifier makes them here."""
    return orjson.dumps(canonical_findings(findings))


def row_hash(
    prev_hash: str,
    columns: Sequence[tuple[str, str]],
    values: Sequence[Any],
    findings: bytes | None = None,
    node_id: str | None = None,
) -> str:
    """SHA-256 over `prev_hash` and the canonical JSON of the row's values: a JSON array of
    them and, for calls, of their findings (`findings_json`), so that a finding cannot be
    added, changed or dropped either; then the fleet node's id, only when the row has one, so
    that the rows of a single gateway (and those written before fleets) keep their hashes."""
    encoded = [encode_value(kind, v) for (_, kind), v in zip(columns, values, strict=True)]
    payload = orjson.dumps(encoded)
    tail = [] if findings is None else [findings]  # JSON already
    if node_id is not None:
        tail.append(orjson.dumps(node_id))
    if tail:  # appended as the array's last elements
        payload = payload[:-1] + (b"," if encoded else b"") + b",".join(tail) + b"]"
    return hashlib.sha256(prev_hash.encode() + b"\n" + payload).hexdigest()


@dataclass(frozen=True)
class Position:
    """A point in a chain: the last row's seq and hash (seq 0 is the empty chain)."""

    seq: int = 0
    hash: str = GENESIS

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "hash": self.hash}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Position":
        return cls(int(d["seq"]), str(d["hash"]))


@dataclass(frozen=True)
class ChainHead:
    committed: Position = Position()
    intent: Position = Position()

    def accepts(self, tail: Position) -> bool:
        return tail in (self.committed, self.intent)

    def settled(self, tail: Position) -> "ChainHead":
        return ChainHead(tail, tail)


def head_path(db_path: str | os.PathLike[str]) -> Path:
    return Path(f"{os.fspath(db_path)}.head")


def read_head(path: Path) -> dict[str, ChainHead] | None:
    """The head file's chains, or None if there is none. A file that does not parse raises
    ValueError: it is evidence, not something to skip."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ValueError(f"the chain head file {path} cannot be read: {exc}") from None
    try:
        return {
            table: ChainHead(Position.from_dict(h["committed"]), Position.from_dict(h["intent"]))
            for table, h in data["chains"].items()
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"the chain head file {path} is not valid: {exc!r}") from None


def write_head(path: Path, heads: dict[str, ChainHead], sync: bool = True) -> None:
    """Atomically replace the head file; with `sync`, on disk before it replaces the old one
    (a settled head need not be: the unsettled one it replaces accepts the same store)."""
    data = {
        "version": HEAD_VERSION,
        "chains": {
            table: {"committed": h.committed.as_dict(), "intent": h.intent.as_dict()}
            for table, h in heads.items()
        },
    }
    write_atomically(path, json.dumps(data, sort_keys=True).encode(), sync)


def write_atomically(path: Path, data: bytes, sync: bool = True) -> None:
    """Replace `path` with `data` by a rename, so a reader sees the old file or the new one,
    never half of one; with `sync`, the data is on disk before it replaces the old."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
