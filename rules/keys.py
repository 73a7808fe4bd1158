"""Secrets named by reference (`env:NAME`, `file:PATH`) and the mask key's default file: the one
implementation the gateway (addons/settings.py) and the command line (`toolgate rules explain`,
`toolgate sessions find-value`) share, so both hash with the same key. Pure: no mitmproxy."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

DEFAULT_DB = "toolgate.duckdb"


def resolve_secret(ref: str, what: str) -> bytes:
    """`env:NAME` or `file:PATH` -> the secret's bytes (`~` expanded; a file's trailing newline,
    `\\n` or `\\r\\n`, dropped; an empty secret refused). The value itself never appears in an
    error message."""
    kind, sep, name = ref.partition(":")
    if not sep or kind not in ("env", "file") or not name:
        raise ValueError(f"{what} must be env:NAME or file:PATH, not {ref!r}")
    if kind == "env":
        value = os.environ.get(name)
        if value is None:
            raise ValueError(f"{what}: the environment variable {name} is not set")
        data = value.encode()
    else:
        try:
            data = Path(name).expanduser().read_bytes()
        except OSError as exc:
            raise ValueError(f"{what}: cannot read {name}: {exc.strerror}") from None
        data = data[:-1] if data.endswith(b"\n") else data
        data = data[:-1] if data.endswith(b"\r") else data
    if not data:
        raise ValueError(f"{what}: {ref} is empty")
    return data


def default_mask_key_file(db: str | Path) -> Path:
    """Where the mask key lives when `toolgate_mask_key` is unset: beside the session store,
    so hash tokens and fingerprints survive restarts and `find-value` can use them."""
    return Path(db).expanduser().with_name(Path(db).name + ".key")


def load_or_create_key(path: Path) -> bytes:
    """The key in `path`, created (random, readable by its owner only) if it is missing."""
    try:
        return resolve_secret(f"file:{path}", "the mask key file")
    except ValueError:
        if path.exists():
            raise
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_hex(32) + "\n")
    return resolve_secret(f"file:{path}", "the mask key file")


def mask_key_reference(ref: str | None, db: str | Path = DEFAULT_DB) -> str | None:
    """The reference the gateway's mask key is read from, as a tool outside it finds it: `ref`
    (`--mask-key`, `$TOOLGATE_MASK_KEY`) when given, else the default key file beside the store
    `db` if the gateway created one; None when there is neither."""
    if ref:
        return ref
    path = default_mask_key_file(db)
    return f"file:{path}" if path.exists() else None
