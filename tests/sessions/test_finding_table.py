"""A call's findings as columns (the native core's `FindingTable`), from the policy's encoded
rows to the store: the same JSON for the hash chain as the verifier makes, the same Arrow table
as one built from Python values, paths placed as the policy places them, bad input refused."""

from __future__ import annotations

import asyncio
import io
import struct

import orjson
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mitmproxy import io as mitmio
from mitmproxy.test import taddons, tflow

from toolgate.addons.policy.outcome import _field
from toolgate.addons.recording.addon import Recorder
from toolgate.rules import Call, Findings, evaluate, load_rules
from toolgate.rules.protocols import Unit
from toolgate.sessions import hashchain
from toolgate.sessions.records import FindingRow, FindingTable, finding_dicts, finding_table
from toolgate.sessions.schema import FINDING_COLUMNS, arrow_schema
from toolgate.sessions.writer import _FindingBatches
from storekit import query

KEY = b"k" * 32
# Text JSON escapes differently (quotes, backslashes, control characters), beyond the BMP,
# and plain words that sort near each other.
TEXT = st.one_of(
    st.sampled_from(["", "a", "ab", "b", "$.x", "$.x[1]", "ssn", "mask", "é", "\U0001f600"]),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=12),
)
# Characters at the edges of JSON's escaping: every one that orjson escapes, and DEL and the
# line separators, which it writes as they are.
ESCAPED = [chr(c) for c in range(0x20)] + ['"', "\\", "\x7f", "\u2028", "\u2029", "/", " "]
EDGY = st.one_of(
    st.sampled_from(ESCAPED),
    st.text(st.sampled_from(ESCAPED + ["a", "é", "\U0001f600"]), min_size=1, max_size=8),
)
FIELD = st.one_of(st.none(), TEXT, EDGY)
ROWS = st.lists(st.tuples(FIELD, FIELD, FIELD, FIELD, FIELD, FIELD), max_size=40)

# The encoding `Findings.encode` makes (core/src/finding_rows.rs): magic and version, the row
# count, each field's length (u32 little-endian, 0xFFFFFFFF for None), then the fields' text.
ABSENT = 0xFFFFFFFF


def encoded(rows, version=1):
    fields = [f for row in rows for f in row]
    lengths = [ABSENT if f is None else len(f.encode()) for f in fields]
    text = b"".join(f.encode() for f in fields if f is not None)
    return b"TGF" + bytes([version]) + struct.pack(f"<I{len(lengths)}I", len(rows), *lengths) + text


@settings(max_examples=300, deadline=None)
@given(ROWS)
def test_the_chain_json_is_the_verifiers_byte_for_byte(rows):
    table = FindingTable(rows)
    assert table.rows() == rows
    assert table.canonical() == hashchain.findings_json(rows)
    assert orjson.loads(table.objects()) == [
        dict(zip(("direction", "path", "label", "level", "action", "fingerprint"), row)) for row in rows
    ]
    assert table.objects() == orjson.dumps([FindingRow(*row).as_dict() for row in rows]).decode()
    request = [row for row in rows if row[0] == "request"]
    assert table.only("request").rows() == request
    assert FindingTable([encoded(rows)]).rows() == rows
    assert table.encode() == encoded(rows)


@pytest.mark.parametrize("text", ESCAPED + ["a\x7fb", "\u2028\u2029", "\x00\x1f\"\\", "é\U0001f600\n"])
def test_each_character_is_escaped_as_orjson_escapes_it(text):
    rows = [("request", text, "label", None, text, "f")]
    assert FindingTable(rows).canonical() == hashchain.findings_json(rows)
    assert FindingTable(rows).objects() == orjson.dumps([FindingRow(*row).as_dict() for row in rows]).decode()


@settings(max_examples=100, deadline=None)
@given(ROWS, st.text(min_size=1, max_size=20))
def test_the_arrow_columns_are_those_of_the_python_values(rows, call_id):
    batches = _FindingBatches()
    batches.add(call_id, FindingTable(rows))
    expected = pa.table(
        {name: [call_id] * len(rows) if name == "call_id" else [row[i - 1] for row in rows]
         for i, (name, _) in enumerate(FINDING_COLUMNS)},
        schema=arrow_schema(FINDING_COLUMNS),
    )
    got = batches.table()
    got.validate(full=True)
    assert got.equals(expected)
    assert batches.rows == len(rows)


RULES = """
labels:
  - {name: email, level: confidential, detector: email}
  - {name: us_ssn, level: restricted, detector: us_ssn}
rules:
  - id: mask-ssn
    match: {labels: [us_ssn]}
    action: mask
    mask: hash
"""


def _decision(tmp_path, body):
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    return evaluate(load_rules(path), Call(direction="response", protocol="mcp", function="get", body=body), KEY)


@pytest.mark.parametrize("location", ["$", "$.result.content[0].text", "headers", "$.params.arguments"])
def test_encoded_rows_are_the_findings_placed_as_the_policy_places_them(tmp_path, location):
    decision = _decision(tmp_path, {"a": "bo@example.com", "ssn": "123-45-6789", "list": ["x 078-05-1121 y"]})
    assert len(decision.findings) == 3 and decision.findings.labels() == ["email", "us_ssn"]
    unit = Unit(protocol="mcp", direction="response", function="get", body=None, put=print, location=location)
    expected = [
        (f.direction, f.path if location == "$" and f.path else _field(unit, f.path), f.label, f.level,
         f.action, f.fingerprint)
        for f in decision.findings
    ]
    assert FindingTable([decision.findings.encode(location)]).rows() == expected
    assert decision.findings.encode(location) == encoded(expected)
    assert [row[4] for row in expected] == ["allow", "mask", "mask"]
    assert decision.findings.any_action("mask") and not decision.findings.any_action("block")


def test_items_of_both_kinds_keep_their_order(tmp_path):
    decision = _decision(tmp_path, {"ssn": "123-45-6789"})
    echo = {"direction": "response", "path": "$", "label": "injected_secret", "level": "restricted",
            "action": "mask", "fingerprint": "ab" * 32}
    rows = finding_dicts([echo, decision.findings.encode("$"), echo])
    assert [f["label"] for f in rows] == ["injected_secret", "us_ssn", "injected_secret"]
    assert rows[1]["path"] == "$.ssn" and rows[1]["fingerprint"] == decision.findings[0].fingerprint


def test_no_findings_encode_as_no_rows():
    assert FindingTable([Findings().encode("$")]).rows() == []
    assert Findings().encode() == encoded([])


ROW = ("response", "$.a", "email", "confidential", "mask", "ab" * 32)
GOOD = encoded([ROW, ROW])
# what is not an encoding of findings, and what the error says
BROKEN = {
    "empty": (b"", "truncated"),
    "cut in the header": (GOOD[:6], "truncated"),
    "cut in the lengths": (GOOD[:20], "truncated"),
    "cut in the text": (GOOD[:-1], "past the end"),
    "the former JSON": (b'[["request", "$", "a", null, null, null]]', "do not start with"),
    "no magic": (b"not findings", "do not start with"),
    "version 2": (encoded([ROW], version=2), "version 2, this build reads version 1"),
    "version 0": (encoded([ROW], version=0), "version 0"),
    "trailing garbage": (GOOD + b"x", r"trailing bytes after the last field \(1\)"),
    "two encodings in one": (encoded([ROW]) + encoded([ROW]), "trailing bytes"),
    "not UTF-8": (GOOD[:-1] + b"\xff", "not UTF-8"),
    "a split character": (b"TGF\x01" + struct.pack("<I6I", 1, 1, 2, 0, 0, 0, 0) + "éa".encode(),
                          "row 0's direction ends inside a character"),
    "a length past the end": (b"TGF\x01" + struct.pack("<I6I", 1, 1 << 30, 0, 0, 0, 0, 0) + b"abc",
                              "the length of row 0's direction runs past the end"),
    "more rows than bytes": (b"TGF\x01" + struct.pack("<I", 0xFFFFFFFF), "truncated"),
}


@pytest.mark.parametrize("item, message", BROKEN.values(), ids=BROKEN.keys())
def test_what_is_not_encoded_findings_is_refused(item, message):
    with pytest.raises(ValueError, match="encoded findings are not valid: .*" + message):
        FindingTable([item])
    with pytest.raises(ValueError):  # whatever comes with it
        FindingTable([GOOD, item, GOOD])


@settings(max_examples=300, deadline=None)
@given(ROWS, st.data())
def test_damaged_encodings_are_refused_or_read_as_they_read(rows, data):
    good = encoded(rows)
    at = data.draw(st.integers(0, len(good)))
    cut = data.draw(st.integers(0, 8))
    damaged = good[:at] + data.draw(st.binary(max_size=8)) + good[at + cut:]
    try:
        table = FindingTable([damaged])
    except ValueError as exc:
        assert str(exc).startswith("encoded findings are not valid: ")
        return
    assert encoded(table.rows()) == damaged  # what was read is what the bytes say


@pytest.mark.parametrize("item", [42, "text", ("too", "short"), (1, 2, 3, 4, 5, 6)])
def test_what_is_not_a_finding_is_refused(item):
    with pytest.raises((ValueError, TypeError)):
        finding_table([item])


def _recorded(tmp_path, findings, durability="audit"):
    """(the flow, its findings in the store) after the recorder saw it with `findings`."""
    db = tmp_path / "s.duckdb"

    async def main():
        recorder = Recorder()
        with taddons.context(recorder) as tctx:
            tctx.configure(recorder, toolgate_db=str(db), toolgate_durability=durability)
            try:
                f = tflow.tflow()
                f.metadata["toolgate.call_id"] = "call-1"
                await recorder.request(f)
                if f.response is None:
                    f.response = tflow.tresp(content=b'{"answer": "from the backend"}')
                    f.metadata["toolgate.findings"] = findings
                    await recorder.response(f)
                return f
            finally:
                recorder.done()
                recorder.writer.join(10)

    f = asyncio.run(main())
    return f, query(db, "SELECT direction, path, label, level, action, fingerprint FROM findings")


def test_a_flow_saved_from_mitmweb_keeps_its_findings_and_records_them(tmp_path):
    decision = _decision(tmp_path, {"a": "bo@example.com", "ssn": "123-45-6789"})
    f = tflow.tflow(resp=True)
    f.metadata["toolgate.findings"] = [decision.findings.encode("$.result")]
    buffer = io.BytesIO()
    mitmio.FlowWriter(buffer).add(f)  # what mitmweb's save and `-w` do
    [loaded] = mitmio.FlowReader(io.BytesIO(buffer.getvalue())).stream()
    items = loaded.metadata["toolgate.findings"]
    _, stored = _recorded(tmp_path, items)
    assert stored == [tuple(row) for row in finding_table(items).rows()]
    assert [row[1] for row in stored] == ["$.result.a", "$.result.ssn"]


@pytest.mark.parametrize("case", ["cut in the lengths", "cut in the text", "version 2", "not UTF-8",
                                  "trailing garbage", "a length past the end", "the former JSON"])
def test_findings_that_cannot_be_read_withhold_the_answer(tmp_path, case):
    f, stored = _recorded(tmp_path, [BROKEN[case][0]])
    # the fail-closed answer of a hook that threw (500), never the backend's
    assert f.response.status_code == 500 and b"from the backend" not in f.response.content
    assert stored == []


@given(ROWS)
@settings(max_examples=200, deadline=None)
def test_label_and_action_counts_are_the_rows_counted(rows):
    """What /metrics counts comes from the core: the same as counting the rows in Python."""
    from collections import Counter

    counted = Counter({pair: n for pair, n in FindingTable(rows).label_actions()})
    assert counted == Counter((row[2], row[4]) for row in rows)
