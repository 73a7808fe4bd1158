"""The write-ahead journal's file: what a crash can leave (a torn last record, dropped) told
apart from damage (refused, with where), a failed append leaving nothing behind, a new
generation replacing the file whole."""

from __future__ import annotations

import os
import resource
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toolgate.sessions.journal import (
    HEADER_SIZE, RECORD_HEAD, Journal, JournalCorrupt, journal_path, scan,
)


def written(tmp_path, payloads: list[bytes]) -> Journal:
    journal = Journal(journal_path(tmp_path / "s.duckdb"))
    journal.open(None)
    if payloads:
        journal.append([[p] for p in payloads])
    return journal


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=12), st.integers(1, 4))
def test_what_is_appended_is_read_back_in_order(tmp_path_factory, payloads, batches):
    folder = tmp_path_factory.mktemp("j")
    journal = written(folder, [])
    ends = []
    for start in range(0, len(payloads), batches):  # each in two parts, as the writer gives them
        ends += journal.append([[p[:3], p[3:]] for p in payloads[start:start + batches]])
    journal.close()
    found = scan(journal.path)
    assert found.generation == journal.generation and found.torn_at is None
    assert found.records == list(zip(payloads, ends))
    assert found.end == journal.path.stat().st_size == (ends[-1] if ends else HEADER_SIZE)


@pytest.mark.parametrize("cut", [1, RECORD_HEAD.size - 1, RECORD_HEAD.size, RECORD_HEAD.size + 3])
def test_a_record_cut_off_while_it_was_written_is_dropped(tmp_path, cut):
    journal = written(tmp_path, [b"first", b"second", b"third-record"])
    journal.close()
    whole = journal.path.read_bytes()
    last = len(whole) - (RECORD_HEAD.size + len(b"third-record"))
    journal.path.write_bytes(whole[: last + cut])
    found = scan(journal.path)
    assert [p for p, _ in found.records] == [b"first", b"second"]
    assert found.torn_at == last and found.end == last
    again = Journal(journal.path)
    again.open(found)  # cuts it off, and appends after the second record
    again.append([[b"fourth"]])
    again.close()
    assert [p for p, _ in scan(journal.path).records] == [b"first", b"second", b"fourth"]


def test_zeros_after_the_last_record_are_a_torn_tail(tmp_path):
    journal = written(tmp_path, [b"only"])
    journal.close()
    with journal.path.open("ab") as f:
        f.write(b"\0" * 4096)  # a file system that extended the file before the data landed
    found = scan(journal.path)
    assert [p for p, _ in found.records] == [b"only"] and found.torn_at is not None


@pytest.mark.parametrize("where", ["payload", "length", "magic"])
def test_a_damaged_record_in_the_middle_refuses_and_says_where(tmp_path, where):
    journal = written(tmp_path, [b"a" * 40, b"b" * 40, b"c" * 40])
    journal.close()
    data = bytearray(journal.path.read_bytes())
    second = HEADER_SIZE + RECORD_HEAD.size + 40
    offset = {"payload": second + RECORD_HEAD.size + 5, "length": second + 4, "magic": second}[where]
    data[offset] ^= 0x41
    journal.path.write_bytes(bytes(data))
    with pytest.raises(JournalCorrupt) as caught:
        scan(journal.path)
    assert caught.value.offset == second
    assert f"byte {second}" in str(caught.value) and str(journal.path) in str(caught.value)


def test_a_damaged_header_refuses(tmp_path):
    journal = written(tmp_path, [b"x"])
    journal.close()
    data = bytearray(journal.path.read_bytes())
    data[6] ^= 1
    journal.path.write_bytes(bytes(data))
    with pytest.raises(JournalCorrupt, match="header"):
        scan(journal.path)


def test_a_header_cut_off_while_first_written_starts_a_new_journal(tmp_path):
    path = journal_path(tmp_path / "s.duckdb")
    path.write_bytes(b"TGJ1" + b"\x12" * 5)
    found = scan(path)
    assert found.records == [] and found.torn_at == 0
    journal = Journal(path)
    journal.open(found)
    journal.append([[b"after"]])
    assert [p for p, _ in scan(path).records] == [b"after"]


def test_a_failed_append_leaves_no_part_of_its_records(tmp_path):
    journal = written(tmp_path, [b"kept"])
    size = journal.path.stat().st_size
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    # As a full disk: the file may grow by 10 bytes only, so the write stops part way.
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + 10, hard))
    try:
        with pytest.raises(OSError):
            journal.append([[b"y" * 100], [b"z" * 100]])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert journal.path.stat().st_size == size
    journal.append([[b"later"]])
    journal.close()
    assert [p for p, _ in scan(journal.path).records] == [b"kept", b"later"]


def test_a_new_generation_replaces_the_file_whole(tmp_path):
    journal = written(tmp_path, [b"applied"])
    old = journal.generation
    journal.start_new()
    journal.append([[b"new"]])
    journal.close()
    found = scan(journal.path)
    assert found.generation != old and [p for p, _ in found.records] == [b"new"]
    assert not journal.path.with_name(journal.path.name + ".new").exists()
    assert oct(os.stat(journal.path).st_mode & 0o777) == "0o600"


def test_no_journal_is_none(tmp_path):
    assert scan(tmp_path / "missing.journal") is None


def test_lengths_past_the_end_are_not_read(tmp_path):
    journal = written(tmp_path, [b"one"])
    journal.close()
    with journal.path.open("ab") as f:
        f.write(RECORD_HEAD.pack(b"TGR1", 1 << 29, 0) + struct.pack("<I", 0))
    found = scan(journal.path)
    assert [p for p, _ in found.records] == [b"one"] and found.torn_at is not None
