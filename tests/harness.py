"""The pytest-facing layer of the end-to-end harness: a `Launcher` that starts real
`mitmdump -s addons/gateway.py` processes in reverse mode in front of the demo backend with the
tests' defaults, and stops every one it started even when a test fails. The launcher itself,
the stub HTTP server and the store helper are `toolgate.scripts.harness`, shared with the
benches and the soak."""

from __future__ import annotations

from pathlib import Path

from toolgate.scripts.demo_service import DemoService
from toolgate.scripts.dev_issuer import DevIssuer
from toolgate.scripts.harness import (
    GATEWAY_SCRIPT, MITMDUMP, MITMWEB, ROOT, Mitmdump, mitmdump_args, start_mitmdump, wait_until,
)

DIFFERENTIAL_ADDON = Path(__file__).with_name("reference") / "differential_addon.py"

__all__ = ["AUDIENCE", "GATEWAY_SCRIPT", "MITMWEB", "ROOT", "Launcher", "start_mitmdump",
           "wait_until"]

AUDIENCE = "toolgate-tests"


class Launcher:
    """Starts mitmdump with the gateway in reverse mode in front of the demo backend, and
    stops every process it started."""

    def __init__(self, workdir: Path, confdir: Path, issuer: DevIssuer, backend: DemoService):
        self.workdir, self.confdir, self.issuer, self.backend = workdir, confdir, issuer, backend
        self.started: list[Mitmdump] = []

    def __call__(
        self,
        *sets: str,
        script: Path = GATEWAY_SCRIPT,
        issuer_url: str | None = None,
        upstream: str | None = None,
        wait: bool = True,
        env: dict[str, str] | None = None,
        program: Path = MITMDUMP,
        extra_args: tuple[str, ...] = (),
    ) -> Mitmdump:
        options = {
            "confdir": str(self.confdir),
            "flow_detail": "2",
            "toolgate_oidc_issuer": issuer_url or self.issuer.url,
            "toolgate_oidc_audience": AUDIENCE,
            "toolgate_db": str(self.workdir / "toolgate.duckdb"),
            "toolgate_admin_listen": "127.0.0.1:0",
        }
        # A test's own settings replace these defaults: mitmproxy refuses a key given twice.
        options.update(item.split("=", 1) for item in sets)
        if script == GATEWAY_SCRIPT:  # the real gateway: its decisions checked against the reference
            extra_args = ("-s", str(DIFFERENTIAL_ADDON), *extra_args)
        args = mitmdump_args(upstream or self.backend.url, options, script=script,
                             extra=extra_args)
        log = self.workdir / f"mitmdump-{len(self.started)}.log"
        gateway = start_mitmdump(args, log, env, wait, program)
        self.started.append(gateway)
        return gateway

    def stop_all(self) -> None:
        for gateway in self.started:
            gateway.stop()

