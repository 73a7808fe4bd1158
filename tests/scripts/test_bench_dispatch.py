"""bench_dispatch.py runs, and measures the dispatch of both setups in the same process."""

from __future__ import annotations

import re
import subprocess
import sys

from toolgate.scripts.harness import ROOT


def test_the_dispatch_bench_measures_bare_and_toolgate_dispatch():
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_dispatch.py"), "--calls", "50", "--repeat", "2"],
        capture_output=True, text=True, timeout=120, check=True, cwd=ROOT,
    ).stdout
    bare = re.search(r"^  bare +([\d.]+) +([\d.]+)$", out, re.M)
    toolgate = re.search(r"^  toolgate +([\d.]+) +([\d.]+) +adds +(-?[\d.]+) us to bare$", out, re.M)
    assert bare and toolgate, out
    assert float(bare.group(1)) > 0 and float(toolgate.group(1)) > 0
    # what it adds is the difference of the two best figures (each printed rounded)
    assert abs(float(toolgate.group(3)) - (float(toolgate.group(1)) - float(bare.group(1)))) <= 0.11
    own = re.search(r"\((\d+) addons of mitmdump's own", out)
    assert own and int(own.group(1)) > 20, out  # mitmdump's own addons are in the walk
