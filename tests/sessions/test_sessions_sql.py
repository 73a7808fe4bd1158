"""The store's SQL contract, read the way a user's script does: plain `duckdb` in toolgate's
own venv, no toolgate code, on a store the writer wrote."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
import time

from storekit import make_call, record_all

READ = """
import json, sys, duckdb
con = duckdb.connect(sys.argv[1], read_only=True)
calls = con.sql("select call_id, started_at, ended_at from calls order by seq").fetchall()
approvals = con.sql("select requested_at, decided_at from approvals").fetchall()
print(json.dumps({"calls": [[c, s.isoformat(), e.isoformat()] for c, s, e in calls],
                  "approvals": [[r.isoformat(), d.isoformat()] for r, d in approvals],
                  "tz": str(calls[0][1].tzinfo)}))
"""


def test_timestamptz_columns_fetch_from_plain_duckdb_in_the_venv(open_writer, db):
    # duckdb's Python API converts TIMESTAMPTZ values with pytz: without it in the venv,
    # `select started_at from calls` fails ("Required module 'pytz' failed to import").
    started = time.time() - 60
    w = open_writer()
    record_all(w, [make_call(call_id="c1", started_at=started, ended_at=started + 0.5)])
    w.record_approval("c1", started + 0.1, started + 0.4, "approved", "carol", "api", "ok",
                      "call").result(10)
    w.stop()
    w.join(10)

    result = subprocess.run([sys.executable, "-c", READ, str(db)], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    read = json.loads(result.stdout)
    [[call_id, started_at, ended_at]] = read["calls"]
    assert call_id == "c1"
    as_time = datetime.datetime.fromisoformat
    assert abs(as_time(started_at).timestamp() - started) < 0.001
    assert abs(as_time(ended_at).timestamp() - (started + 0.5)) < 0.001
    assert as_time(started_at).utcoffset() is not None  # an aware time, not a naive one
    [[requested_at, decided_at]] = read["approvals"]
    assert as_time(decided_at) > as_time(requested_at)
