"""The archive's segments registered in a real PostgreSQL (`toolgate_segments`), and
`toolgate sessions verify --archive DIR --control URL` catching what the archive folder alone
cannot show: a segment deleted with head.json rewritten to match, a file changed, a head.json
rewritten, a segment nobody registered. Segments sealed while PostgreSQL was down are
registered once it is back."""

from __future__ import annotations

import itertools
import json
import shutil
import time
from pathlib import Path

import duckdb
import psycopg
import pytest
from click.testing import CliRunner

from toolgate.scripts.cli import cli
from toolgate.scripts.fleet import Postgres
from toolgate.sessions.archive import Archive, list_segments, registered_segments
from toolgate.sessions.records import CallRecord, FindingRow
from toolgate.sessions.writer import Writer

_ids = itertools.count(1)


def make_call() -> CallRecord:
    n = next(_ids)
    now = time.time()
    return CallRecord(
        call_id=f"call-{n:04d}", started_at=now, ended_at=now + 0.01, method="GET",
        url=f"http://backend.test/customers/{n}", request_headers=[("Host", "backend.test")],
        request_body=b"", session_id="s-1", subject="alice", function="crm.get_customer",
        status=200, response_body=b'{"ssn": "***-**-1234"}', decision="mask", forwarded=True,
        findings=[FindingRow("response", "$.ssn", "ssn", "restricted", "mask", "ab" * 32)])


class Node:
    """A node's store (the real writer) and its side of the archive."""

    def __init__(self, work: Path, archive: Path, node_id: str, control: str) -> None:
        self.writer = Writer(work / f"{node_id}.duckdb", journal=False, node_id=node_id).start()
        self.archive = Archive(archive, node_id, control)

    def record(self, n: int) -> None:
        for future in [self.writer.submit_call(make_call()) for _ in range(n)]:
            future.result(10)

    def seal(self) -> None:
        """What the recorder does every interval."""
        self.writer.run_query(self.archive.seal).result(30)
        self.archive.register()

    def stop(self) -> None:
        self.writer.stop()
        self.writer.join(10)


def verify(archive: Path, control: str | None) -> tuple[int, dict]:
    args = ["sessions", "verify", "--archive", str(archive), "--json"]
    result = CliRunner().invoke(cli, args + (["--control", control] if control else []))
    return result.exit_code, json.loads(result.output)


def problems(archive: Path, control: str) -> list[str]:
    code, body = verify(archive, control)
    assert code == (1 if body["problems"] else 0)
    return [f"{p['node']} {p['table']} {p['first_seq']}..{p['last_seq']} {p['segment']}: "
            f"{p['problem']}" for p in body["problems"]]


@pytest.fixture
def archive(tmp_path: Path, control_url: str) -> Path:
    """Two nodes' archives: gw-a's calls sealed as 1..3, 4..6, 7..9; gw-b's as 1..2; all
    registered."""
    folder = tmp_path / "archive"
    folder.mkdir()
    for node_id, seals in (("gw-a", 3), ("gw-b", 1)):
        node = Node(tmp_path, folder, node_id, control_url)
        for _ in range(seals):
            node.record(3 if node_id == "gw-a" else 2)
            node.seal()
        node.stop()
    return folder


def head_of(archive: Path, node: str) -> dict:
    return json.loads((archive / node / "head.json").read_text())


def test_sealed_segments_are_registered(archive, control_url):
    registered = registered_segments(control_url)
    assert [(s.node_id, s.chain, s.first_seq, s.last_seq, s.rows) for s in registered] == [
        ("gw-a", "calls", 1, 3, 3), ("gw-a", "calls", 4, 6, 3), ("gw-a", "calls", 7, 9, 3),
        ("gw-b", "calls", 1, 2, 2)]
    first, second = registered[:2]
    assert second.prev_hash == first.last_hash and first.prev_hash == "0" * 64
    assert first.file == "calls-000000000001-000000000003.parquet"
    assert head_of(archive, "gw-a")["chains"]["calls"]["hash"] == registered[2].last_hash
    code, body = verify(archive, control_url)
    assert code == 0, body
    assert body["control"] and "PASSWORD" not in body["control"].upper()
    result = CliRunner().invoke(cli, ["sessions", "verify", "--archive", str(archive)],
                                env={"TOOLGATE_CONTROL": control_url})
    assert result.exit_code == 0 and "checked against the segments registered" in result.output


def test_a_deleted_middle_segment_is_caught(archive, control_url):
    (archive / "gw-a" / "calls-000000000004-000000000006.parquet").unlink()
    found = problems(archive, control_url)
    assert "gw-a calls 4..6 calls-000000000004-000000000006.parquet: the segment registered in " \
           "PostgreSQL is missing from the archive (deleted)" in found
    assert any("rows 4..6 are missing before" in p for p in found)


def test_a_deleted_last_segment_with_its_head_rewritten_is_caught(archive, control_url):
    """What the folder alone cannot show: head.json made to end where the files now end."""
    last = list_segments(archive / "gw-a")["calls"][-1]
    before = list_segments(archive / "gw-a")["calls"][-2]
    last.path.unlink()
    [kept] = [s for s in registered_segments(control_url, "gw-a")
              if (s.chain, s.first_seq) == ("calls", before.first_seq)]
    head = head_of(archive, "gw-a")
    head["chains"]["calls"] = {"seq": kept.last_seq, "hash": kept.last_hash}
    (archive / "gw-a" / "head.json").write_text(json.dumps(head))
    assert verify(archive, None)[0] == 0  # the folder alone agrees with itself
    found = problems(archive, control_url)
    assert "gw-a calls 7..9 calls-000000000007-000000000009.parquet: the segment registered in " \
           "PostgreSQL is missing from the archive (deleted)" in found
    assert any("head.json says the chain was sealed up to seq 6, but PostgreSQL has its "
               "segments up to seq 9" in p for p in found)


def test_a_deleted_last_segment_is_caught(archive, control_url):
    (archive / "gw-b" / "calls-000000000001-000000000002.parquet").unlink()
    found = problems(archive, control_url)
    assert "gw-b calls 1..2 calls-000000000001-000000000002.parquet: the segment registered in " \
           "PostgreSQL is missing from the archive (deleted)" in found


def test_a_rewritten_head_file_is_caught(archive, control_url):
    head = head_of(archive, "gw-a")
    head["chains"]["calls"]["seq"] = 12
    (archive / "gw-a" / "head.json").write_text(json.dumps(head))
    found = problems(archive, control_url)
    assert found and all(p.startswith("gw-a calls") and "head.json" in p for p in found)


def test_a_changed_file_is_caught(archive, control_url):
    """The same rows written again in another file: the hashes hold, the sha256 registered
    at sealing does not."""
    path = archive / "gw-a" / "calls-000000000004-000000000006.parquet"
    copy = path.with_name("copy.tmp")
    duckdb.sql(f"COPY (SELECT * FROM read_parquet('{path}')) TO '{copy}' "
               "(FORMAT parquet, COMPRESSION zstd)")
    copy.replace(path)
    assert verify(archive, None)[0] == 0  # every row still verifies
    assert problems(archive, control_url) == [
        "gw-a calls 4..6 calls-000000000004-000000000006.parquet: the file changed since it was "
        "sealed: its sha256 is not the one registered in PostgreSQL"]


def test_a_segment_file_not_registered_is_caught(archive, control_url, tmp_path):
    """A node's folder copied in that PostgreSQL never heard of."""
    shutil.copytree(archive / "gw-b", archive / "gw-x")
    head = head_of(archive, "gw-x")
    (archive / "gw-x" / "head.json").write_text(json.dumps({**head, "node": "gw-x"}))
    found = problems(archive, control_url)
    assert "gw-x calls 1..2 calls-000000000001-000000000002.parquet: the segment is not " \
           "registered in PostgreSQL (the node could not reach it since it sealed it, or the " \
           "node did not seal it)" in found


def test_segments_sealed_while_postgresql_was_down_are_registered_later(
        tmp_path, control_url, postgres_server: Postgres):
    folder = tmp_path / "archive"
    folder.mkdir()
    node = Node(tmp_path, folder, "gw-a", control_url)
    node.record(2)
    node.seal()
    postgres_server.stop()
    try:
        node.record(3)
        node.seal()  # sealed, not registered
        health = node.archive.health()
        assert health["sealed"]["calls"]["seq"] == 5 and health["last_error"] is None
        assert health["unregistered"] == 1 and health["control_error"]
        assert "cannot register segments" in health["control_error"]
        node.stop()
    finally:
        postgres_server.start()
    assert [s.last_seq for s in registered_segments(control_url)] == [2]
    code, body = verify(folder, control_url)
    assert code == 1 and [p["first_seq"] for p in body["problems"]] == [3]
    # A restarted node registers what its folder holds that PostgreSQL lacks.
    restarted = Node(tmp_path, folder, "gw-a", control_url)
    assert restarted.archive.register() == 1
    restarted.stop()
    assert [s.last_seq for s in registered_segments(control_url)] == [2, 5]
    assert verify(folder, control_url)[0] == 0


def test_a_registration_is_never_overwritten(archive, control_url):
    """A segment sealed again differently (another store under gw-b's id) keeps the first
    registration, and verify reports the file against it."""
    with psycopg.connect(control_url) as conn:
        conn.execute("UPDATE toolgate_segments SET sha256 = 'ff' WHERE node_id = 'gw-b'")
    Archive(archive, "gw-b", control_url).register()
    assert [s.sha256 for s in registered_segments(control_url, "gw-b")] == ["ff"]
    assert any("sha256 is not the one registered" in p for p in problems(archive, control_url))
