"""What a crash loses, by durability: calls answered (or forwarded) that are not in the store.

    .venv/bin/python scripts/crash_loss.py [--rounds 3] [--callers 20] [--seconds 3]

For each durability (`audit`, `async`) and round: the demo service and a dev issuer in this
process, a gateway (`mitmdump -s addons/gateway.py`) in front of them, `--callers` callers on
keep-alive connections making allowed calls (`POST /echo`) for `--seconds`, then SIGKILL to the
gateway under that load. The gateway is started once more on the same store (it applies its
journal and records interrupted calls) and stopped; then the store is read. Printed per
durability: calls answered 200 before the kill, how many of them the store lacks, calls the
backend received that the store lacks, and rows recorded twice. Under `audit` each of those
must be 0; under `async` the store lacks what the last commits before the kill would have
carried (it commits at most every 50 ms). Exit status 1 if `audit` lost anything.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from toolgate.scripts.demo_service import DemoService
from toolgate.scripts.dev_issuer import DevIssuer
from toolgate.scripts.harness import GATEWAY_SCRIPT, mitmdump_args, query, start_mitmdump

AUDIENCE = "toolgate-crash"
CALL_ID = "X-Toolgate-Call-Id"


def one_round(work: Path, backend: DemoService, issuer: DevIssuer, durability: str,
              callers: int, seconds: float) -> dict[str, int]:
    db = work / "store.duckdb"
    args = mitmdump_args(backend.url, {
        "flow_detail": 0, "confdir": work / "conf", "toolgate_oidc_issuer": issuer.url,
        "toolgate_oidc_audience": AUDIENCE, "toolgate_db": db, "toolgate_durability": durability,
        "toolgate_admin_listen": "127.0.0.1:0",
    }, script=GATEWAY_SCRIPT)
    backend.reset()
    gateway = start_mitmdump(args)
    token = issuer.keys.mint("crash", ["sre"], ttl=3600)
    answered: list[str] = []
    lock, stop = threading.Lock(), threading.Event()

    def caller(n: int) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{gateway.port}", timeout=5) as http:
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    answer = http.post("/echo", json={"caller": n, "i": i},
                                       headers={"Authorization": f"Bearer {token}"})
                except httpx.HTTPError:
                    return  # the gateway is gone
                if answer.status_code == 200:
                    with lock:
                        answered.append(answer.headers[CALL_ID])

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(callers)]
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    gateway.proc.kill()  # SIGKILL, under load
    gateway.proc.wait(10)
    stop.set()
    for thread in threads:
        thread.join(10)
    reached = {r.header(CALL_ID) for r in backend.received}
    again = start_mitmdump(args)  # applies the journal, records the interrupted calls
    again.stop()
    rows = [r[0] for r in query(db, "SELECT call_id FROM calls")]
    recorded = set(rows)
    return {
        "answered": len(answered),
        "answered, not recorded": len(set(answered) - recorded),
        "forwarded, not recorded": len(reached - recorded),
        "recorded twice": len(rows) - len(recorded),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--callers", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=3.0, help="load before the kill")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="toolgate-crash-"))
    backend = DemoService().start()
    # Connections the killed gateway leaves behind reset under the service: expected, not news.
    backend.server.handle_error = lambda request, client_address: None
    issuer = DevIssuer(keys_path=work / "issuer.json", audience=AUDIENCE).start()
    failed = False
    try:
        for durability in ("audit", "async"):
            totals: dict[str, int] = {}
            for n in range(args.rounds):
                folder = work / f"{durability}-{n}"
                folder.mkdir()
                result = one_round(folder, backend, issuer, durability, args.callers, args.seconds)
                for key, value in result.items():
                    totals[key] = totals.get(key, 0) + value
                shutil.rmtree(folder, ignore_errors=True)
            print(f"{durability:6} " + ", ".join(f"{key}: {value}" for key, value in totals.items())
                  + f"  ({args.rounds} kills, {args.callers} callers)")
            if durability == "audit":
                failed = any(v for k, v in totals.items() if k != "answered")
    finally:
        issuer.stop()
        backend.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
