"""Fixtures of the fleet tests: the real parts on loopback (`toolgate.scripts.fleet`): one
PostgreSQL server for the whole run with a fresh database per test, and HAProxy balancers
stopped when their test ends, pass or fail. Without PostgreSQL's server or HAProxy installed,
these tests skip, saying what to install."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from toolgate.scripts.fleet import Balancer, Postgres, missing_system_deps

MakeBalancer = Callable[[Sequence[tuple[str, str, int, int]]], Balancer]


def skip_without_system_deps() -> None:
    if reason := missing_system_deps():
        pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    """One PostgreSQL server for the run, its cluster deleted at the end."""
    skip_without_system_deps()
    server = Postgres(tmp_path_factory.mktemp("postgres"))
    try:
        yield server.start()
    finally:
        server.close()


@pytest.fixture
def control_url(postgres_server: Postgres, request: pytest.FixtureRequest) -> str:
    """A fresh database for this test (named after it), owned by `toolgate`: its URL."""
    name = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:40]
    return postgres_server.create_database(f"{name}_{secrets.token_hex(4)}")


@pytest.fixture
def balancer(tmp_path: Path) -> Iterator[MakeBalancer]:
    """Starts HAProxy in front of the given nodes; every one is stopped when the test ends."""
    skip_without_system_deps()
    started: list[Balancer] = []

    def make(backends: Sequence[tuple[str, str, int, int]]) -> Balancer:
        started.append(Balancer(tmp_path / f"haproxy-{len(started)}", backends))
        return started[-1].start()

    yield make
    for balancer in started:
        balancer.stop()
