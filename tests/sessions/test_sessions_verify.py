"""Tamper evidence: `toolgate sessions verify` passes on an untouched store and names the first
bad row of one changed with DuckDB directly (a body changed, a row deleted, inserted or
swapped, rows cut from or forged at the end, findings changed), exit 1."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from toolgate.scripts.cli import cli
from toolgate.sessions import hashchain
from toolgate.sessions.schema import CHAIN_PREFIX, CALL_CONTENT, select_for_hashing
from toolgate.sessions.verify import verify_store
from storekit import fill


@pytest.fixture
def store(open_writer, db) -> Path:
    w = open_writer()
    fill(w, 8)
    w.stop()
    w.join(10)
    return db


def verify(db: Path) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["sessions", "verify", "--db", str(db)])
    return result.exit_code, result.output


def tamper(db: Path, *statements: str) -> None:
    con = duckdb.connect(str(db))
    for sql in statements:
        con.execute(sql)
    con.close()


def test_an_untouched_store_verifies(store):
    code, output = verify(store)
    assert code == 0, output
    assert "ok: 8 call(s) and 1 approval(s)" in output


COPY = ("INSERT INTO calls SELECT {seq} AS seq, * EXCLUDE (seq) FROM calls WHERE seq = {src}")


@pytest.mark.parametrize(
    "statements, seq, says",
    [
        (["UPDATE calls SET response_body = '{\"ssn\": \"536-22-1234\"}'::BLOB WHERE seq = 4"],
         4, "content does not match"),
        (["UPDATE calls SET decision = 'block', status = 403 WHERE seq = 6"], 6, "content"),
        (["UPDATE calls SET started_at = started_at - INTERVAL 1 HOUR WHERE seq = 2"], 2,
         "content"),
        (["DELETE FROM calls WHERE seq = 3"], 4, "row 3 is missing"),
        ([COPY.format(seq=5, src=2)], 5, "appears twice|prev_hash"),
        (["UPDATE calls SET seq = seq + 1 WHERE seq >= 5", COPY.format(seq=5, src=2)], 5,
         "prev_hash"),
        (["UPDATE calls SET seq = CASE seq WHEN 3 THEN 4 ELSE 3 END WHERE seq IN (3, 4)"], 3,
         "prev_hash"),
        (["UPDATE findings SET label = 'public' WHERE call_id = "
          "(SELECT call_id FROM calls WHERE seq = 7)"], 7, "content"),
        (["DELETE FROM findings WHERE call_id = (SELECT call_id FROM calls WHERE seq = 1)"], 1,
         "content"),
        (["UPDATE approvals SET decision = 'denied'"], 1, "content"),
    ],
    ids=["body-changed", "decision-changed", "time-changed", "row-deleted", "row-inserted",
         "row-inserted-renumbered", "rows-swapped", "finding-changed", "finding-deleted",
         "approval-changed"],
)
def test_tampering_is_detected_at_the_first_bad_row(store, statements, seq, says):
    tamper(store, *statements)
    code, output = verify(store)
    assert code == 1, output
    assert f"row seq {seq}" in output and re.search(says, output)


def test_rows_cut_from_the_end_are_detected(store):
    tamper(store, "DELETE FROM calls WHERE seq >= 7")
    code, output = verify(store)
    assert code == 1
    assert "rows 7..8 were cut from the end" in output


def test_a_forged_row_with_a_valid_hash_at_the_end_is_detected(store):
    con = duckdb.connect(str(store))
    names = [n for n, _ in CHAIN_PREFIX + CALL_CONTENT]
    row = list(con.execute(f"SELECT {select_for_hashing('calls')} FROM calls WHERE seq = 8"
                           ).fetchone())
    last_hash = row[-1]
    values = row[: len(names)]
    values[0] = 9
    values[1] = "forged-call"
    digest = hashchain.row_hash(last_hash, CHAIN_PREFIX + CALL_CONTENT, values, b"[]")
    con.execute(
        f"INSERT INTO calls SELECT 9, 'forged-call', * EXCLUDE (seq, call_id, prev_hash, hash, "
        f"node_id), '{last_hash}', '{digest}', NULL FROM calls WHERE seq = 8"
    )
    con.close()
    assert verify_store(duckdb.connect(str(store), read_only=True))["ok"] is False
    code, output = verify(store)
    assert code == 1
    assert "not where the head file says" in output


def test_an_added_finding_is_detected(store):
    tamper(store, "INSERT INTO findings SELECT call_id, 'response', '$.x', 'email', "
                  "'confidential', 'mask', 'ff', NULL FROM calls WHERE seq = 5")
    code, output = verify(store)
    assert code == 1 and "row seq 5" in output


def test_a_finding_for_no_call_is_detected(store):
    tamper(store, "INSERT INTO findings VALUES ('nobody', 'request', '$', 'ssn', 'restricted', "
                  "'mask', 'ff', NULL)")
    code, output = verify(store)
    assert code == 1 and "belongs to no recorded call" in output


def test_a_missing_head_file_fails_verification(store):
    hashchain.head_path(store).unlink()
    code, output = verify(store)
    assert code == 1 and "head file" in output and "missing" in output


def test_a_crash_between_head_and_commit_is_not_taken_for_tampering(store):
    # The writer writes the head (intent) before committing; a crash in between leaves the
    # store one commit behind the intent: still whole.
    head_file = hashchain.head_path(store)
    heads = hashchain.read_head(head_file)
    committed = heads["calls"].committed
    heads["calls"] = hashchain.ChainHead(committed, hashchain.Position(committed.seq + 3, "ab" * 32))
    hashchain.write_head(head_file, heads)
    assert verify(store)[0] == 0


def test_a_copied_store_verifies_with_its_head_file(store, tmp_path):
    copy = tmp_path / "copy" / "store.duckdb"
    copy.parent.mkdir()
    shutil.copy(store, copy)
    assert verify(copy)[0] == 1  # no head file beside it
    shutil.copy(hashchain.head_path(store), hashchain.head_path(copy))
    assert verify(copy)[0] == 0


def test_json_output_names_the_bad_row(store):
    tamper(store, "UPDATE calls SET url = 'http://elsewhere/' WHERE seq = 2")
    result = CliRunner().invoke(cli, ["sessions", "verify", "--json", "--db", str(store)])
    assert result.exit_code == 1
    body = json.loads(result.output)
    assert body["ok"] is False
    assert body["problems"][0]["seq"] == 2 and body["problems"][0]["call_id"]


def test_the_gateway_keeps_a_cut_visible_after_a_restart(store, open_writer):
    from storekit import make_call

    tamper(store, "DELETE FROM calls WHERE seq = 8")
    w = open_writer(store)
    w.submit_call(make_call()).result(10)
    w.stop()
    w.join(10)
    code, output = verify(store)
    assert code == 1 and "row seq 9" in output and "missing" in output
