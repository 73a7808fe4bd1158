"""Parsing of toolgate's option values, as plain functions that raise ValueError with a
message a user can act on (the addons turn it into mitmproxy's OptionsError)."""

from __future__ import annotations

import os
import re
import secrets
import urllib.parse
from pathlib import Path

_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]i?b?|b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_size(text: str) -> int:
    """`10MiB`, `512k`, `1048576` -> bytes (binary units, as mitmproxy's body_size_limit)."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a size: use bytes or a unit, e.g. 10MiB, 512KiB")
    number, unit = match.groups()
    size = int(number) * _UNITS[(unit or "")[:1].lower()]
    if size <= 0:
        raise ValueError(f"{text!r}: the size must be positive")
    return size


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    """mitmproxy does not enforce `choices` for a script's options set with --set."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
    return value


def parse_listen(text: str) -> tuple[str, int]:
    """`127.0.0.1:8090`, `[::1]:8090` -> (host, port); port 0 picks a free one."""
    host, sep, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{text!r} is not HOST:PORT, e.g. 127.0.0.1:8090")
    return host, int(port)


def parse_http_url(text: str, what: str) -> str:
    parts = urllib.parse.urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{what} {text!r} is not an http(s) URL")
    return text.strip()


def resolve_secret(ref: str, what: str) -> bytes:
    """`env:NAME` or `file:PATH` -> the secret's bytes (a file's trailing newline dropped).
    The value itself never appears in an error message."""
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
