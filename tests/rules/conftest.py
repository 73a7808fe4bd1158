"""Fixtures for the rule-engine tests."""

from __future__ import annotations

import datetime
import textwrap
from pathlib import Path

import pytest

from toolgate.rules import RuleSet, bundled_packs_path, load_rules

MASK_KEY = b"test-mask-key-0123456789abcdef!!"
NOW = datetime.datetime(2026, 11, 21, 12, 0, tzinfo=datetime.timezone.utc)


@pytest.fixture(scope="session")
def packs() -> RuleSet:
    return load_rules(bundled_packs_path())


@pytest.fixture
def key() -> bytes:
    return MASK_KEY


@pytest.fixture
def now() -> datetime.datetime:
    return NOW


@pytest.fixture
def write_rules(tmp_path: Path):
    """Write YAML (dedented) to tmp_path/name and return the path."""

    def write(text: str, name: str = "rules.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    return write
