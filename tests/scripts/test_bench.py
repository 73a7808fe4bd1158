"""bench.py's own parts: `--compare` values, the OTLP sink, the rounds' arithmetic, and the
wait for idle proxies between measurements, and the interval of a median."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import ThreadingHTTPServer

import pytest

from toolgate.scripts import bench
from toolgate.scripts.bench import (
    Result, _Sink, audit_pairs, median, median_interval, merged, paired, parse_compare,
)


def test_compare_values_are_options_with_values():
    assert parse_compare(["toolgate_metrics=false", "x=a=b"], True, False) == [
        ("toolgate_metrics", "false", "gateway async toolgate_metrics=false"),
        ("x", "a=b", "gateway async x=a=b")]
    assert parse_compare(["e={otlp}/v1/traces"], True, True)[0][1] == "{otlp}/v1/traces"
    for values, with_async, sink in [(["novalue"], True, False), (["=1"], True, False),
                                     (["e={otlp}"], True, False), (["a=1"], False, False)]:
        with pytest.raises(SystemExit):
            parse_compare(values, with_async, sink)


def test_the_otlp_sink_answers_every_post_and_counts():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        for size in (10, 32):
            answer = urllib.request.urlopen(urllib.request.Request(
                url + "/v1/traces", data=b"x" * size, method="POST",
                headers={"Content-Type": "application/x-protobuf"}), timeout=5)
            assert answer.status == 200 and answer.read() == b""
        stats = json.loads(urllib.request.urlopen(url + "/stats", timeout=5).read())
        assert stats == {"posts": 2, "bytes": 42}
    finally:
        server.shutdown()
        server.server_close()


def test_rounds_add_up_and_compare_in_pairs():
    def round_of(requests: int, cpu: float) -> list[Result]:
        return [Result(2.0, requests, 0, [0.01] * requests, 0.05, cpu)]

    base = [round_of(100, 0.2), round_of(80, 0.2)]
    other = [round_of(110, 0.2), round_of(96, 0.2)]
    (total,) = merged(base)
    assert (total.seconds, total.requests, total.rps) == (4.0, 180, 45.0)
    rps, cpu = paired(other, base)
    assert rps == pytest.approx([1.1, 1.2]) and median(rps) == pytest.approx(1.15)
    assert cpu == pytest.approx([1.1, 1.2])  # the same CPU for more calls: less per call
    assert median([3.0, 1.0, 2.0]) == 2.0


def test_audit_is_compared_with_async_round_by_round():
    def round_of(requests: int, latency: float) -> list[Result]:
        return [Result(2.0, requests, 0, [latency] * requests, 0.05, 0.2)]

    fast = [round_of(100, 0.010), round_of(50, 0.020), round_of(100, 0.010)]
    audit = [round_of(90, 0.012), round_of(48, 0.021), round_of(95, 0.0105)]
    ratios, adds = audit_pairs(audit, fast)
    assert ratios == pytest.approx([0.9, 0.95, 0.96])  # each round against its own async
    assert adds == pytest.approx([0.5, 1.0, 2.0])


def test_settle_waits_for_a_busy_process_and_not_for_an_idle_one():
    busy = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 1.5\n"
                             "while time.time() < end: pass"])
    try:
        started = time.monotonic()
        bench.settle([busy.pid], within=5.0)
        assert busy.poll() is not None or time.monotonic() - started >= 1.0
        started = time.monotonic()
        bench.settle([os.getpid()], within=5.0)  # this process sleeps meanwhile
        assert time.monotonic() - started < 1.0
    finally:
        busy.kill()
        busy.wait()


def test_the_median_of_the_rounds_gets_a_distribution_free_interval():
    values = [float(v) for v in range(1, 21)]
    # the sign test's order statistics: at least 95% coverage, the narrowest such ranks
    assert median_interval(values[:10]) == (2.0, 9.0)  # 97.9%; ranks 3 and 8 cover only 89.1%
    assert median_interval(values[:12]) == (3.0, 10.0)  # 96.1%
    assert median_interval(values[:16]) == (4.0, 13.0)  # 97.9%
    assert median_interval(values[:20]) == (6.0, 15.0)  # 95.9%
    assert median_interval(values[:6]) == (1.0, 6.0)  # 96.9%: the whole range
    assert median_interval(values[:5]) is None  # even the whole range covers only 93.8%
    assert median_interval(values[:5], confidence=0.9) == (1.0, 5.0)
