"""One mask-key resolution for the gateway and the command line (rules/keys.py): from the same
reference, `toolgate rules explain`, `toolgate sessions find-value` and the gateway's policy get
the same key, or all refuse it."""

import asyncio

import click
import pytest
from click.testing import CliRunner
from mitmproxy import exceptions
from mitmproxy.test import taddons

from toolgate.addons.policy.addon import Policy
from toolgate.addons.recording.addon import Recorder
from toolgate.rules import keys
from toolgate.scripts.cli import cli
from toolgate.scripts.cli_rules import resolve_mask_key


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    """The addons configure with their defaults first (toolgate_db=toolgate.duckdb, no mask
    key: a key file created in the current folder); keep that out of the checkout."""
    monkeypatch.chdir(tmp_path)


def gateway_key(ref: str, db) -> bytes:
    """The key the gateway's policy addon hashes with for `toolgate_mask_key=ref`."""

    async def scenario():
        policy = Policy()
        with taddons.context(policy, Recorder()) as tctx:
            tctx.configure(policy, toolgate_db=str(db), toolgate_mask_key=ref)
            return policy.mask_key

    return asyncio.run(scenario())


def find_value_key(ref: str | None, db) -> bytes:
    """The key `find-value` resolves: its own code path, up to the lookup."""
    return keys.resolve_secret(keys.mask_key_reference(ref, db), "--mask-key")


@pytest.mark.parametrize("content, expected", [
    (b"key-with-crlf\r\n", b"key-with-crlf"),
    (b"key-with-lf\n", b"key-with-lf"),
    (b"key-two-newlines\n\n", b"key-two-newlines\n"),  # one newline is dropped, not all
    (b"  spaced key  ", b"  spaced key  "),
    (b"\x00binary\xff", b"\x00binary\xff"),
])
def test_the_cli_and_the_gateway_derive_the_same_key_from_a_home_file(tmp_path, monkeypatch,
                                                                       content, expected):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "mask.key").write_bytes(content)
    ref = "file:~/mask.key"
    db = tmp_path / "toolgate.duckdb"
    assert gateway_key(ref, db) == expected
    assert resolve_mask_key(ref) == expected
    assert find_value_key(ref, db) == expected


def test_an_empty_key_is_refused_by_both(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "empty.key").write_bytes(b"\r\n")
    with pytest.raises(exceptions.OptionsError, match="empty"):
        gateway_key("file:~/empty.key", tmp_path / "toolgate.duckdb")
    with pytest.raises(click.BadParameter, match="empty"):
        resolve_mask_key("file:~/empty.key")
    monkeypatch.setenv("TG_EMPTY_KEY", "")
    with pytest.raises(click.BadParameter, match="empty"):
        resolve_mask_key("env:TG_EMPTY_KEY")
    runner = CliRunner()
    result = runner.invoke(cli, ["sessions", "find-value", "x", "--db", str(tmp_path / "t.duckdb"),
                                 "--mask-key", "file:~/empty.key"])
    assert result.exit_code != 0 and "empty" in result.output


def test_without_a_reference_the_cli_uses_the_key_the_gateway_created(tmp_path, monkeypatch):
    db = tmp_path / "elsewhere" / "toolgate.duckdb"
    db.parent.mkdir()
    created = gateway_key("", db)  # unset: the gateway creates toolgate.duckdb.key beside it
    assert keys.default_mask_key_file(db).exists()
    assert find_value_key(None, db) == created
    monkeypatch.chdir(db.parent)
    monkeypatch.delenv("TOOLGATE_MASK_KEY", raising=False)
    assert resolve_mask_key(None) == created  # rules explain, beside ./toolgate.duckdb


def test_without_any_key_explain_has_none(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TOOLGATE_MASK_KEY", raising=False)
    assert resolve_mask_key(None) is None
    assert keys.mask_key_reference(None, tmp_path / "toolgate.duckdb") is None
