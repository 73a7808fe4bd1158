"""Shared fixtures: a real dev OIDC issuer and a real demo backend on loopback (in threads of
the test process, so tests can see what the backend received), and gateways started by
`harness.Launcher`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import AUDIENCE, Launcher
from toolgate.scripts.demo_service import DemoService
from toolgate.scripts.dev_issuer import DevIssuer
from toolgate.scripts.harness import Mitmdump

# Every evaluate() of the run is checked against the pure-Python reference engine.
pytest_plugins = ["reference.differential"]


@pytest.fixture(scope="session")
def mitm_confdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One mitmproxy config dir (its CA) for the whole run, outside the user's home."""
    return tmp_path_factory.mktemp("mitmproxy-conf")


@pytest.fixture(scope="session")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevIssuer]:
    keys = tmp_path_factory.mktemp("issuer") / "dev-issuer.json"
    dev = DevIssuer(keys_path=keys, audience=AUDIENCE).start()
    yield dev
    dev.stop()


@pytest.fixture(scope="session")
def demo_backend() -> Iterator[DemoService]:
    service = DemoService().start()
    yield service
    service.stop()


@pytest.fixture
def backend(demo_backend: DemoService) -> DemoService:
    """The demo backend, with an empty record of what it received."""
    demo_backend.reset()
    return demo_backend


@pytest.fixture
def start_gateway(
    tmp_path: Path, mitm_confdir: Path, issuer: DevIssuer, demo_backend: DemoService
) -> Iterator[Launcher]:
    """Starts gateways for one test; they are stopped when it ends, pass or fail."""
    launcher = Launcher(tmp_path, mitm_confdir, issuer, demo_backend)
    yield launcher
    launcher.stop_all()


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory,
    mitm_confdir: Path,
    issuer: DevIssuer,
    demo_backend: DemoService,
) -> Iterator[Mitmdump]:
    """One gateway per test module: identity required, verifying the dev issuer's tokens."""
    launcher = Launcher(tmp_path_factory.mktemp("gateway"), mitm_confdir, issuer, demo_backend)
    yield launcher()
    launcher.stop_all()
