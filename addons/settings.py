"""Parsing of toolgate's option values, as plain functions that raise ValueError with a
message a user can act on (the addons turn it into mitmproxy's OptionsError)."""

from __future__ import annotations

import re
import socket
import urllib.parse
from typing import Any

# Secrets and the mask key file: one implementation with the command line, in rules/keys.py.
from toolgate.rules.keys import default_mask_key_file, load_or_create_key, resolve_secret
from toolgate.sessions.control import check_url

__all__ = ["check_choice", "control_url", "default_mask_key_file", "load_or_create_key", "node_id",
           "parse_http_url", "parse_listen", "parse_node_id", "parse_size", "resolve_secret"]

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


_NODE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def parse_node_id(text: str) -> str:
    """A gateway's name in a fleet: it names the node's folder in the archive, so letters,
    digits, `.`, `_` and `-` only (at most 64, not starting with a dot or dash)."""
    if not _NODE_ID.match(text):
        raise ValueError(f"{text!r} is not a node id: use 1-64 letters, digits, '.', '_' or "
                         "'-', starting with a letter or digit (e.g. gw-a)")
    return text


def node_id(options: Any) -> str | None:
    """This gateway's node id: `toolgate_node`, or in a fleet (`toolgate_control` or
    `toolgate_archive` set) `<hostname>-<proxy port>`, stable across restarts; None for a
    single gateway that names none (its rows carry no node id, as before fleets)."""
    named = getattr(options, "toolgate_node", "") or ""
    if named:
        return parse_node_id(named)
    if not (getattr(options, "toolgate_control", None) or getattr(options, "toolgate_archive",
                                                                   None)):
        return None
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname().split(".")[0]) or "node"
    return parse_node_id(f"{host[:50].lstrip('.-') or 'node'}-{options.listen_port}")


def control_url(text: str) -> str:
    """`toolgate_control`: a PostgreSQL URL, or `env:NAME` / `file:PATH` holding one, which
    keeps its password out of the process list and the options mitmweb shows."""
    text = text.strip()
    if text.startswith(("env:", "file:")):
        text = resolve_secret(text, "toolgate_control").decode("utf-8", "replace").strip()
    return check_url(text)
