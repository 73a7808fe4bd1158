"""Per-node stores, one audit trail: every row carries its node's id (in its hash too, without
changing the hash of rows that have none), each node seals what its store committed into the
fleet's archive as Parquet segments, and `toolgate sessions ... --archive` reads and verifies
every node's segments. A real DuckDB file and the real writer; PostgreSQL's side is in
tests/fleet/test_archive_pg.py."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import shutil
import time
from pathlib import Path

import duckdb
import orjson
import pytest
from click.testing import CliRunner
from mitmproxy import exceptions
from mitmproxy.test import taddons

from toolgate.addons.recording.addon import Recorder
from toolgate.rules import Call, bundled_packs_path, evaluate, load_rules
from toolgate.scripts.cli import cli
from toolgate.sessions import archive as archive_module
from toolgate.sessions import hashchain
from toolgate.sessions.archive import Archive, list_segments, read_head
from toolgate.sessions.records import FindingRow
from toolgate.sessions.schema import APPROVAL_CONTENT, CALL_CONTENT, CHAIN_PREFIX, select_for_hashing
from toolgate.sessions.verify import verify_store
from storekit import fill, make_call, query, record_all

KEY = b"mask-key-for-tests"


def toolgate(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(cli, list(args), env=env)


def stopped(w) -> None:
    w.stop()
    w.join(10)


def fill_and_return(w, n: int):
    fill(w, n)
    return w


def seal(w, archive: Archive) -> list:
    return w.run_query(archive.seal).result(30)


def verify_json(folder: Path) -> tuple[int, dict]:
    result = toolgate("sessions", "verify", "--archive", str(folder), "--json")
    return result.exit_code, json.loads(result.output)


def problems(folder: Path) -> list[str]:
    code, body = verify_json(folder)
    assert code == (1 if body["problems"] else 0)
    return [f"{p['node']} {p['table']} {p['first_seq']}..{p['last_seq']} {p['segment']}: "
            f"{p['problem']}" for p in body["problems"]]


@pytest.fixture
def archive_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "archive"
    folder.mkdir()
    return folder


# -- the node id in rows and hashes ---------------------------------------------------------


def test_a_rows_hash_covers_its_node_id_only_when_it_has_one():
    columns = CHAIN_PREFIX + APPROVAL_CONTENT
    values = [1, "call-1", 1_700_000_000_000_000, 1_700_000_001_000_000, "approved", "bob",
              "api", "fine", "call"]
    payload = orjson.dumps(values)
    before_fleets = hashlib.sha256(hashchain.GENESIS.encode() + b"\n" + payload).hexdigest()
    assert hashchain.row_hash(hashchain.GENESIS, columns, values) == before_fleets
    assert before_fleets == "9c43e83f3e870ff658cf1c7c22fc3b14808ff56da950eeb673c760bc75cbdc7f"
    with_node = payload[:-1] + b',"gw-a"]'  # the array's last element
    assert hashchain.row_hash(hashchain.GENESIS, columns, values, None, "gw-a") == \
        hashlib.sha256(hashchain.GENESIS.encode() + b"\n" + with_node).hexdigest()
    findings = hashchain.findings_json([("response", "$.ssn", "ssn", "restricted", "mask", "ff")])
    call_values = [1] + [None] * len(CALL_CONTENT)
    plain = orjson.dumps(call_values)
    assert hashchain.row_hash(hashchain.GENESIS, CHAIN_PREFIX + CALL_CONTENT, call_values,
                              findings, "gw-a") == hashlib.sha256(
        hashchain.GENESIS.encode() + b"\n" + plain[:-1] + b"," + findings + b',"gw-a"]').hexdigest()


def test_every_row_carries_the_node_and_its_hash_covers_it(open_writer, db):
    w = open_writer(node_id="gw-a")
    fill(w, 3)
    stopped(w)
    assert query(db, "SELECT DISTINCT node_id FROM calls") == [("gw-a",)]
    assert query(db, "SELECT DISTINCT node_id FROM approvals") == [("gw-a",)]
    assert query(db, "SELECT DISTINCT node_id FROM findings") == [("gw-a",)]
    con = duckdb.connect(str(db), read_only=True)
    row = con.execute(f"SELECT {select_for_hashing('approvals')} FROM approvals").fetchone()
    con.close()
    columns = CHAIN_PREFIX + APPROVAL_CONTENT
    values, prev_hash, digest = list(row[:len(columns)]), row[-2], row[-1]
    assert hashchain.row_hash(prev_hash, columns, values, None, "gw-a") == digest
    assert hashchain.row_hash(prev_hash, columns, values) != digest
    assert toolgate("sessions", "verify", "--db", str(db)).exit_code == 0


def test_a_store_that_gets_a_node_id_later_still_verifies(open_writer, db):
    single = open_writer()
    fill(single, 3)
    stopped(single)
    w = open_writer(node_id="gw-a")
    fill(w, 2)
    stopped(w)
    assert query(db, "SELECT seq, node_id FROM calls ORDER BY seq") == [
        (1, None), (2, None), (3, None), (4, "gw-a"), (5, "gw-a")]
    result = toolgate("sessions", "verify", "--db", str(db))
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("statement, says", [
    ("UPDATE calls SET node_id = 'gw-b' WHERE seq = 2", "calls row seq 2.*content"),
    ("UPDATE calls SET node_id = NULL WHERE seq = 3", "calls row seq 3.*content"),
    ("UPDATE approvals SET node_id = 'gw-b'", "approvals row seq 1.*content"),
    ("UPDATE findings SET node_id = 'gw-b' WHERE call_id = (SELECT call_id FROM calls "
     "WHERE seq = 2)", "findings row seq 2.*node_id is not its call's"),
], ids=["call", "call-null", "approval", "finding"])
def test_a_changed_node_id_is_caught(open_writer, db, statement, says):
    stopped(fill_and_return(open_writer(node_id="gw-a"), 4))
    con = duckdb.connect(str(db))
    con.execute(statement)
    con.close()
    result = toolgate("sessions", "verify", "--db", str(db))
    assert result.exit_code == 1
    assert re.search(says, result.output), result.output


def test_a_row_of_another_nodes_chain_is_caught_even_with_a_valid_hash(open_writer, db):
    """A row appended with a correct hash but another node's id: the chain's rows must agree."""
    stopped(fill_and_return(open_writer(node_id="gw-a"), 3))
    con = duckdb.connect(str(db))
    names = CHAIN_PREFIX + CALL_CONTENT
    row = list(con.execute(f"SELECT {select_for_hashing('calls')} FROM calls WHERE seq = 3"
                           ).fetchone())
    values, last_hash = row[:len(names)], row[-1]
    values[0], values[1] = 4, "moved-call"
    digest = hashchain.row_hash(last_hash, names, values, b"[]", "gw-b")
    con.execute("INSERT INTO calls SELECT 4, 'moved-call', * EXCLUDE (seq, call_id, prev_hash, "
                "hash, node_id), ?, ?, 'gw-b' FROM calls WHERE seq = 3", [last_hash, digest])
    con.close()
    assert verify_store(duckdb.connect(str(db), read_only=True), Path("/nonexistent"))[
        "problems"][0]["problem"].startswith("its node_id 'gw-b' is not the node of the rows")


def test_a_store_of_another_node_is_not_written(open_writer, db):
    stopped(fill_and_return(open_writer(node_id="gw-a"), 2))
    w = open_writer(node_id="gw-b")
    assert w.wait_ready(10)
    assert w.fatal and "holds the chain of node gw-a" in w.fatal and "toolgate_node=gw-a" in w.fatal
    with pytest.raises(Exception):
        w.submit_call(make_call()).result(10)
    stopped(w)
    assert query(db, "SELECT DISTINCT node_id FROM calls") == [("gw-a",)]


def test_a_writer_given_no_node_goes_on_with_the_stores(open_writer, db):
    stopped(fill_and_return(open_writer(node_id="gw-a"), 2))
    w = open_writer()
    fill(w, 1)
    assert w.node_id == "gw-a"
    stopped(w)
    assert query(db, "SELECT DISTINCT node_id FROM calls") == [("gw-a",)]
    assert toolgate("sessions", "verify", "--db", str(db)).exit_code == 0


# -- sealing --------------------------------------------------------------------------------


def test_sealing_twice_continues_where_the_last_seal_ended(open_writer, archive_dir):
    w = open_writer(node_id="gw-a")
    archive = Archive(archive_dir, "gw-a")
    fill(w, 4)
    first = seal(w, archive)
    assert [(s.chain, s.first_seq, s.last_seq) for s in first] == [("calls", 1, 4),
                                                                  ("approvals", 1, 1)]
    assert seal(w, archive) == []  # nothing new: no empty segment
    record_all(w, [make_call() for _ in range(3)])
    second = seal(w, archive)
    assert [(s.chain, s.first_seq, s.last_seq) for s in second] == [("calls", 5, 7)]
    assert second[0].prev_hash == first[0].last_hash
    folder = archive_dir / "gw-a"
    assert sorted(p.name for p in folder.iterdir()) == [
        "approvals-000000000001-000000000001.parquet", "calls-000000000001-000000000004.parquet",
        "calls-000000000005-000000000007.parquet", "head.json"]
    assert read_head(folder)["calls"] == hashchain.Position(7, second[0].last_hash)
    assert json.loads((folder / "head.json").read_text())["node"] == "gw-a"
    assert second[0].sha256 == hashlib.sha256((folder / second[0].file).read_bytes()).hexdigest()
    rows = duckdb.sql(f"SELECT seq, len(findings) FROM read_parquet('{folder}/calls-*.parquet') "
                      "ORDER BY seq").fetchall()
    assert rows == [(n, 1) for n in range(1, 8)]
    assert archive.health()["sealed"]["calls"]["seq"] == 7 and archive.health()["segments"] == 3
    stopped(w)
    assert problems(archive_dir) == []


def test_a_restarted_node_continues_from_the_archive(open_writer, db, archive_dir):
    w = open_writer(node_id="gw-a")
    fill(w, 3)
    seal(w, Archive(archive_dir, "gw-a"))
    record_all(w, [make_call() for _ in range(2)])
    stopped(w)
    # A new process: its archive state is read from the folder; the rows committed after the
    # last seal (and those its journal brings) are sealed, none twice, none skipped.
    w = open_writer(node_id="gw-a")
    made = seal(w, Archive(archive_dir, "gw-a"))
    assert [(s.chain, s.first_seq, s.last_seq) for s in made] == [("calls", 4, 5)]
    stopped(w)
    assert problems(archive_dir) == []
    assert toolgate("sessions", "list", "--archive", str(archive_dir), "--json").exit_code == 0


def test_a_head_file_behind_its_segments_is_repaired_at_start(open_writer, archive_dir):
    """A node that stopped between renaming a segment and writing head.json."""
    w = open_writer(node_id="gw-a")
    fill(w, 3)
    archive = Archive(archive_dir, "gw-a")
    seal(w, archive)
    old = (archive_dir / "gw-a" / "head.json").read_text()
    record_all(w, [make_call()])
    seal(w, archive)
    (archive_dir / "gw-a" / "head.json").write_text(old)
    assert any("head.json says the chain was sealed up to seq 3" in p
               for p in problems(archive_dir))
    assert seal(w, Archive(archive_dir, "gw-a")) == []
    stopped(w)
    assert problems(archive_dir) == []


def test_a_long_backlog_is_sealed_in_several_segments(open_writer, archive_dir, monkeypatch):
    monkeypatch.setattr(archive_module, "SEGMENT_ROWS", 3)
    w = open_writer(node_id="gw-a")
    fill(w, 8)
    made = seal(w, Archive(archive_dir, "gw-a"))
    assert [(s.first_seq, s.last_seq) for s in made if s.chain == "calls"] == [
        (1, 3), (4, 6), (7, 8)]
    stopped(w)
    assert problems(archive_dir) == []


def test_pending_calls_are_never_sealed(open_writer, archive_dir):
    w = open_writer(node_id="gw-a")
    fill(w, 2)
    w.submit_request(make_call(call_id="still-waiting")).result(10)
    seal(w, Archive(archive_dir, "gw-a"))
    stopped(w)
    ids = duckdb.sql(f"SELECT call_id FROM read_parquet('{archive_dir}/gw-a/calls-*.parquet')"
                     ).fetchall()
    assert len(ids) == 2 and ("still-waiting",) not in ids


def test_a_store_that_does_not_continue_the_archive_is_not_sealed(open_writer, tmp_path,
                                                                  archive_dir):
    w = open_writer(tmp_path / "one.duckdb", node_id="gw-a")
    fill(w, 3)
    seal(w, Archive(archive_dir, "gw-a"))
    stopped(w)
    other = open_writer(tmp_path / "two.duckdb", node_id="gw-a")  # a new, empty store
    fill(other, 5)
    archive = Archive(archive_dir, "gw-a")
    assert seal(other, archive) == []
    stopped(other)
    health = archive.health()
    assert "does not continue the chain node gw-a sealed" in health["last_error"]
    assert health["failures"] == 1
    assert [f.last_seq for f in list_segments(archive_dir / "gw-a")["calls"]] == [3]
    assert problems(archive_dir) == []


def test_a_failed_seal_is_counted_and_the_next_one_tries_again(open_writer, archive_dir):
    w = open_writer(node_id="gw-a")
    fill(w, 2)
    archive = Archive(archive_dir, "gw-a")
    (archive_dir / "gw-a").write_text("not a folder")  # the node's folder cannot be made
    assert seal(w, archive) == []
    assert "cannot seal into the archive" in archive.health()["last_error"]
    assert archive.health()["failures"] == 1
    (archive_dir / "gw-a").unlink()
    assert len(seal(w, archive)) == 2
    assert archive.health()["last_error"] is None
    stopped(w)


# -- tampering, found without PostgreSQL ----------------------------------------------------


@pytest.fixture
def sealed(open_writer, archive_dir) -> Path:
    """Node gw-a's archive: calls 1..3, 4..6, 7..9 (each seal after three calls), one
    approval."""
    w = open_writer(node_id="gw-a")
    archive = Archive(archive_dir, "gw-a")
    fill(w, 3)
    for _ in range(3):
        seal(w, archive)
        record_all(w, [make_call() for _ in range(3)])
    stopped(w)  # calls 10..12 are not sealed
    return archive_dir


def segment(folder: Path, chain: str, index: int) -> Path:
    return list_segments(folder / "gw-a")[chain][index].path


def rewrite(path: Path, select: str) -> None:
    """Rewrite a segment file with DuckDB: `select` over its rows (named `t`)."""
    tmp = path.with_name("rewritten.parquet.tmp")
    rows = select.format(t=f"read_parquet('{path}')")
    duckdb.sql(f"COPY ({rows}) TO '{tmp}' (FORMAT parquet)")
    tmp.replace(path)


def test_an_untouched_archive_verifies(sealed):
    result = toolgate("sessions", "verify", "--archive", str(sealed))
    assert result.exit_code == 0, result.output
    assert "ok: 1 node(s), 9 call(s) and 1 approval(s)" in result.output
    assert "gw-a: calls seq 1..9 in 3 segment(s)" in result.output
    assert "the heads in PostgreSQL were not checked" in result.output


def test_a_deleted_middle_segment_is_caught(sealed):
    segment(sealed, "calls", 1).unlink()
    assert problems(sealed) == [
        "gw-a calls 4..6 None: rows 4..6 are missing before "
        "calls-000000000007-000000000009.parquet: the segment(s) holding them were deleted"]


def test_a_deleted_last_segment_is_caught(sealed):
    segment(sealed, "calls", 2).unlink()
    assert problems(sealed) == [
        "gw-a calls 7..9 head.json: rows 7..9 are missing from the end: head.json says the chain "
        "was sealed up to seq 9 (the last segment(s) were deleted)"]


def test_a_rewritten_head_file_is_caught(sealed):
    head = json.loads((sealed / "gw-a" / "head.json").read_text())
    head["chains"]["calls"] = {"seq": 9, "hash": "ab" * 32}
    (sealed / "gw-a" / "head.json").write_text(json.dumps(head))
    [problem] = problems(sealed)
    assert "head.json says the chain was sealed up to seq 9, not where its segments end" in problem


def test_a_missing_head_file_is_caught(sealed):
    (sealed / "gw-a" / "head.json").unlink()
    assert problems(sealed) == ["gw-a None None..None head.json: head.json is missing, so "
                                "segments deleted from the end cannot be ruled out"]


@pytest.mark.parametrize("select, says", [
    ("SELECT * REPLACE (CASE WHEN seq = 5 THEN 'block' ELSE decision END AS decision) FROM {t}",
     "row seq 5.*content does not match"),
    ("SELECT * REPLACE (CASE WHEN seq = 5 THEN [] ELSE findings END AS findings) FROM {t}",
     "row seq 5.*content does not match"),
    ("SELECT * FROM {t} WHERE seq <> 5", "row seq 6.*row 5 is missing"),
    ("SELECT * FROM {t} WHERE seq < 6", "rows end at seq 5, not at 6"),
    ("SELECT * REPLACE (CASE WHEN seq = 5 THEN 'gw-b' ELSE node_id END AS node_id) FROM {t}",
     "row seq 5.*content does not match"),
], ids=["row-changed", "findings-dropped", "row-deleted", "cut-from-the-file", "node-changed"])
def test_a_changed_segment_file_is_caught(sealed, select, says):
    rewrite(segment(sealed, "calls", 1), select)
    code, body = verify_json(sealed)
    assert code == 1
    [problem] = body["problems"]
    assert problem["node"] == "gw-a" and problem["table"] == "calls"
    assert (problem["first_seq"], problem["last_seq"]) == (4, 6)
    text = f"row seq {problem['seq']}: {problem['problem']}"
    assert re.search(says, text), text


def test_rows_moved_from_another_nodes_files_are_caught(open_writer, tmp_path, archive_dir):
    """gw-b's first segment put in place of gw-a's, head.json made to agree: every hash and
    link holds, but the rows are another node's."""
    for node in ("gw-a", "gw-b"):
        w = open_writer(tmp_path / f"{node}.duckdb", node_id=node)
        fill(w, 3)
        seal(w, Archive(archive_dir, node))
        stopped(w)
    shutil.copy(archive_dir / "gw-b" / "calls-000000000001-000000000003.parquet",
                archive_dir / "gw-a" / "calls-000000000001-000000000003.parquet")
    shutil.copy(archive_dir / "gw-b" / "approvals-000000000001-000000000001.parquet",
                archive_dir / "gw-a" / "approvals-000000000001-000000000001.parquet")
    head = json.loads((archive_dir / "gw-b" / "head.json").read_text())
    (archive_dir / "gw-a" / "head.json").write_text(json.dumps({**head, "node": "gw-a"}))
    found = problems(archive_dir)
    assert len(found) == 2 and all("its node_id 'gw-b' is not the node 'gw-a'" in p
                                   for p in found), found


def test_a_file_named_like_no_segment_is_caught(sealed):
    shutil.copy(segment(sealed, "calls", 0), sealed / "gw-a" / "calls-extra.parquet")
    assert problems(sealed) == ["gw-a None None..None calls-extra.parquet: calls-extra.parquet "
                                "is read as a segment but is not named as one: its rows are not "
                                "verified"]


# -- reading the archive ---------------------------------------------------------------------


def fingerprint(field: str, value) -> str:
    decision = evaluate(load_rules(bundled_packs_path()),
                        Call(direction="response", body={field: value}), KEY)
    [finding] = decision.findings
    return finding.fingerprint


@pytest.fixture
def fleet_archive(open_writer, tmp_path, archive_dir) -> Path:
    """Two nodes behind one balancer, one session across both: gw-a took a1 and a3, gw-b a2
    (and b1, with the SSN)."""
    now = time.time()
    calls = {
        "gw-a": [make_call(call_id="a1", session_id="s-alice", started_at=now - 30,
                           function="crm.get_customer"),
                 make_call(call_id="a3", session_id="s-alice", started_at=now - 10,
                           function="deploy.start", decision="approve")],
        "gw-b": [make_call(call_id="a2", session_id="s-alice", started_at=now - 20,
                           function="crm.export", decision="block", status=403, findings=[]),
                 make_call(call_id="b1", session_id="s-bob", started_at=now - 5, subject="bob",
                           findings=[FindingRow("response", "$.ssn", "ssn", "restricted", "mask",
                                                fingerprint("ssn", "536-22-1234"))])],
    }
    for node, records in calls.items():
        w = open_writer(tmp_path / f"{node}.duckdb", node_id=node)
        record_all(w, records)
        if node == "gw-a":
            w.record_approval("a3", now - 9, now - 8, "approved", "carol", "api", "ok",
                              "call").result(10)
        seal(w, Archive(archive_dir, node))
        stopped(w)
    return archive_dir


def test_list_answers_across_every_node(fleet_archive):
    result = toolgate("sessions", "list", "--archive", str(fleet_archive), "--json")
    assert result.exit_code == 0, result.output
    calls = json.loads(result.output)["calls"]
    # Newest first by start time: the nodes' seqs are unrelated.
    assert [(c["call_id"], c["node"]) for c in calls] == [
        ("b1", "gw-b"), ("a3", "gw-a"), ("a2", "gw-b"), ("a1", "gw-a")]
    blocked = toolgate("sessions", "list", "--archive", str(fleet_archive), "--decision",
                       "block", "--json")
    assert [c["call_id"] for c in json.loads(blocked.output)["calls"]] == ["a2"]
    table = toolgate("sessions", "list", "--archive", str(fleet_archive)).output.splitlines()
    assert table[0].split("\t")[-1] == "node"
    assert [line.split("\t")[-1] for line in table[1:]] == ["gw-b", "gw-a", "gw-b", "gw-a"]


def test_show_is_one_timeline_across_nodes(fleet_archive):
    result = toolgate("sessions", "show", "s-alice", "--archive", str(fleet_archive))
    assert result.exit_code == 0, result.output
    text = result.output
    assert text.index("crm.get_customer") < text.index("crm.export") < text.index("deploy.start")
    assert "call a2 seq 1 on node gw-b" in text and "call a3 seq 2 on node gw-a" in text
    assert "approved by carol via api" in text
    assert "finding response $.ssn: ssn (restricted) -> mask" in text


def test_find_value_and_report_answer_across_nodes(fleet_archive, tmp_path):
    key_file = tmp_path / "key"
    key_file.write_bytes(KEY)
    seen = toolgate("sessions", "find-value", "536-22-1234", "--json", "--mask-key",
                    f"file:{key_file}", "--archive", str(fleet_archive))
    assert seen.exit_code == 0, seen.output
    assert [(f["call_id"], f["node"]) for f in json.loads(seen.output)["findings"]] == [
        ("b1", "gw-b")]
    report = toolgate("sessions", "report", "--fail-on", "block", "--format", "json",
                      "--archive", str(fleet_archive))
    assert report.exit_code == 1
    body = json.loads(report.output)
    assert body["total"] == 4 and [c["call_id"] for c in body["failed"]] == ["a2"]
    result = toolgate("sessions", "verify", "--archive", str(fleet_archive))
    assert result.exit_code == 0 and "ok: 2 node(s), 4 call(s) and 1 approval(s)" in result.output


def test_archive_usage_errors_exit_2(fleet_archive, tmp_path):
    with_db = toolgate("sessions", "list", "--archive", str(fleet_archive), "--db",
                       str(tmp_path / "x.duckdb"))
    assert with_db.exit_code == 2 and "without --db" in with_db.output
    missing = toolgate("sessions", "list", "--archive", str(tmp_path / "nowhere"))
    assert missing.exit_code == 2 and "does not exist" in missing.output
    control_alone = toolgate("sessions", "verify", "--db", str(tmp_path / "x.duckdb"),
                             "--control", "postgresql://u@127.0.0.1:1/db")
    assert control_alone.exit_code == 2 and "--archive" in control_alone.output
    unreachable = toolgate("sessions", "verify", "--archive", str(fleet_archive), "--control",
                           "postgresql://u@127.0.0.1:1/db")
    assert unreachable.exit_code == 2 and "PostgreSQL" in unreachable.output


# -- the recorder ---------------------------------------------------------------------------


def recorder_options(tctx, **options) -> None:
    # toolgate_node is the approvals addon's option, not loaded here.
    tctx.options.add_option("toolgate_node", str, "", "")
    tctx.configure(tctx.master.addons.get("recorder"), **options)


@pytest.mark.parametrize("options, says", [
    ({"toolgate_archive_interval": 0}, "toolgate_archive_interval must be a positive"),
    ({"toolgate_archive": "/nonexistent/archive"}, "does not exist"),
    ({"toolgate_node": "-bad"}, "not a node id"),
])
def test_archive_options_are_checked(tmp_path, options, says):
    recorder = Recorder()
    with taddons.context(recorder) as tctx:
        with pytest.raises(exceptions.OptionsError, match=says):
            recorder_options(tctx, toolgate_db=str(tmp_path / "s.duckdb"), **options)


def test_the_recorder_seals_at_start_and_at_shutdown(tmp_path, archive_dir):
    db = tmp_path / "s.duckdb"

    async def main():
        recorder = Recorder()
        with taddons.context(recorder) as tctx:
            recorder_options(tctx, toolgate_db=str(db), toolgate_archive=str(archive_dir),
                             toolgate_node="gw-a", toolgate_archive_interval=3600)
            recorder.running()
            try:
                for _ in range(100):  # the seal at start: nothing committed yet, head.json
                    if recorder.health()["archive"]["seals"]:
                        break
                    await asyncio.sleep(0.05)
                assert (archive_dir / "gw-a" / "head.json").exists()
                health = recorder.health()
                assert health["node"] == "gw-a" and health["archive"]["node"] == "gw-a"
                assert health["archive"]["seals"] == 1 and health["archive"]["last_error"] is None
                record_all(recorder.writer, [make_call() for _ in range(3)])
            finally:
                recorder.done()  # seals what was committed
                recorder.writer.join(10)
        return recorder

    recorder = asyncio.run(main())
    assert [(f.first_seq, f.last_seq) for f in list_segments(archive_dir / "gw-a")["calls"]] == [
        (1, 3)]
    assert recorder.health()["archive"]["sealed"]["calls"]["seq"] == 3
    assert query(db, "SELECT DISTINCT node_id FROM calls") == [("gw-a",)]
    assert problems(archive_dir) == []
