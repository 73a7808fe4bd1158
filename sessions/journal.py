"""The write-ahead journal in front of the session store (`toolgate_durability=audit`).

A call's records are made durable by appending them to this file and fsyncing it, which costs
a write and an fsync instead of a DuckDB transaction; the store is fed from the journal in
large batches in the background (`sessions.writer`). The file is ours, so that every way it can
be damaged is told apart:

    file   = header record*
    header = b"TGJ1" generation(16 bytes) crc32(b"TGJ1" + generation)(4, little-endian)
    record = b"TGR1" length(4) crc32(length + payload)(4) payload(length bytes)

- A record whose write was cut off (a crash mid-append: a short record, zeros, garbage) can
  only be the last: nothing after it validates. It was never acknowledged (the call waits for
  the fsync after its whole batch), so it is dropped, with a warning, and cut off the file.
- A record that fails its checksum with a valid record after it is damage in the middle of the
  file: `JournalCorrupt` says where, and the gateway refuses to start rather than drop it.

The generation names one life of the file: once every record in it is in the store, the writer
replaces it with an empty journal of a new generation (written aside, fsynced, renamed over:
never a half-written header). The store remembers the generation and offset it has applied, in
the same transaction as the rows, so a restart applies exactly the records after it.
"""

from __future__ import annotations

import errno
import os
import struct
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path

FILE_MAGIC = b"TGJ1"
RECORD_MAGIC = b"TGR1"
HEADER_SIZE = len(FILE_MAGIC) + 16 + 4
RECORD_HEAD = struct.Struct("<4sII")  # magic, payload length, crc32(length + payload)
MAX_RECORD = 1 << 30
IOV_MAX = 1024  # buffers per pwritev (Linux's limit)


class JournalCorrupt(Exception):
    """The journal is damaged somewhere other than a torn last record: never applied, never
    dropped; the gateway does not start until someone looks at it."""

    def __init__(self, path: Path, offset: int, why: str) -> None:
        super().__init__(f"the journal {path} is damaged at byte {offset}: {why}; the gateway "
                         "will not start until it is repaired or moved aside (the records in it "
                         "may be calls that were answered and are not yet in the store)")
        self.path, self.offset = path, offset


@dataclass
class Scan:
    """What a journal file holds: its generation, each record's payload and the offset just
    past it, and where a torn last record begins (None: the file ends cleanly)."""

    generation: str
    records: list[tuple[bytes, int]] = field(default_factory=list)
    end: int = HEADER_SIZE
    torn_at: int | None = None


def journal_path(db_path: str | os.PathLike[str]) -> Path:
    return Path(f"{db_path}.journal")


def _header(generation: str) -> bytes:
    head = FILE_MAGIC + bytes.fromhex(generation)
    return head + struct.pack("<I", zlib.crc32(head))


def _valid_at(data: bytes | memoryview, offset: int) -> int | None:
    """The end of a valid record starting at `offset`, or None."""
    if offset + RECORD_HEAD.size > len(data):
        return None
    magic, length, crc = RECORD_HEAD.unpack_from(data, offset)
    start = offset + RECORD_HEAD.size
    if magic != RECORD_MAGIC or length > MAX_RECORD or start + length > len(data):
        return None
    if zlib.crc32(data[start:start + length], zlib.crc32(struct.pack("<I", length))) != crc:
        return None
    return start + length


def scan(path: Path) -> Scan | None:
    """Read and check the journal at `path` (None: there is none). Raises JournalCorrupt for
    damage anywhere but a torn last record."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    if len(data) < HEADER_SIZE:
        if FILE_MAGIC.startswith(data[: len(FILE_MAGIC)]):
            return Scan(generation="", torn_at=0)  # a header cut off while it was first written
        raise JournalCorrupt(path, 0, "it does not start with a journal header")
    head = data[: HEADER_SIZE - 4]
    if head[: len(FILE_MAGIC)] != FILE_MAGIC or struct.unpack_from("<I", data, HEADER_SIZE - 4)[0] != zlib.crc32(head):
        raise JournalCorrupt(path, 0, "its header is not a journal header or fails its checksum")
    result = Scan(generation=head[len(FILE_MAGIC):].hex())
    view = memoryview(data)
    offset = HEADER_SIZE
    while offset < len(data):
        end = _valid_at(view, offset)
        if end is None:
            # Torn (nothing valid follows: dropped) or damaged (a valid record follows).
            later = data.find(RECORD_MAGIC, offset + 1)
            while later != -1:
                if _valid_at(view, later) is not None:
                    raise JournalCorrupt(
                        path, offset, f"record {len(result.records) + 1} fails its checksum and "
                        f"a valid record follows at byte {later}")
                later = data.find(RECORD_MAGIC, later + 1)
            result.torn_at = offset
            break
        result.records.append((bytes(view[offset + RECORD_HEAD.size:end]), end))
        offset = end
    result.end = offset
    return result


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Journal:
    """The journal file, open for appending (one thread appends; see `sessions.writer`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.generation = ""
        self.end = 0  # bytes of the file that hold the header and whole, synced records
        self._fd: int | None = None
        self._dirty = False  # a failed append may have left bytes past `end`

    def open(self, found: Scan | None) -> None:
        """Open the file `scan` read (cutting off a torn last record), or a new one."""
        if found is None or not found.generation:
            self.start_new()
            return
        self._fd = os.open(self.path, os.O_WRONLY | os.O_DSYNC)
        self.generation, self.end = found.generation, found.end
        if found.torn_at is not None:
            os.ftruncate(self._fd, self.end)
            os.fsync(self._fd)

    def start_new(self) -> None:
        """Replace the file by an empty journal of a new generation (every record of the old
        one must be in the store)."""
        generation = uuid.uuid4().hex
        aside = self.path.with_name(self.path.name + ".new")
        fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DSYNC, 0o600)
        try:
            _write_all(fd, [_header(generation)], 0)
            os.fsync(fd)
            os.replace(aside, self.path)
            _fsync_dir(self.path.parent)
        except BaseException:
            os.close(fd)
            raise
        self.close()
        self._fd, self.generation, self.end, self._dirty = fd, generation, HEADER_SIZE, False

    def append(self, payloads: list[list[bytes]]) -> list[int]:
        """Append `payloads` (each given as the parts it is made of, written as they are, not
        copied together) as records, durably: the offset past each, once all are on disk. On
        any failure (a full disk), the file is cut back to its last whole record, and the
        error raised: none of them is in the journal."""
        if self._fd is None:
            raise OSError(errno.EBADF, "the journal is not open")
        if self._dirty:
            os.ftruncate(self._fd, self.end)
            self._dirty = False
        ends, position, pieces = [], self.end, []
        for parts in payloads:
            length = sum(len(part) for part in parts)
            if length > MAX_RECORD:
                raise ValueError(f"a journal record of {length} bytes is too large")
            crc = zlib.crc32(struct.pack("<I", length))
            for part in parts:
                crc = zlib.crc32(part, crc)
            pieces.append(RECORD_HEAD.pack(RECORD_MAGIC, length, crc))
            pieces.extend(parts)
            position += RECORD_HEAD.size + length
            ends.append(position)
        try:
            # O_DSYNC: each write returns once its data is on disk, as write + fdatasync would,
            # in one system call (one wait for the GIL after it, not two).
            _write_all(self._fd, pieces, self.end)
        except BaseException:
            self._dirty = True
            try:
                os.ftruncate(self._fd, self.end)
                self._dirty = False
            except OSError:
                pass
            raise
        self.end = position
        return ends

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


def _write_all(fd: int, pieces: list[bytes], offset: int) -> None:
    """Write `pieces` one after the other at `offset`, however many system calls it takes."""
    views = [memoryview(piece) for piece in pieces if len(piece)]
    while views:
        written = os.pwritev(fd, views[:IOV_MAX], offset)
        offset += written
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if written:
            views[0] = views[0][written:]
