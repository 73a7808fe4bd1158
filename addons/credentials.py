"""Vaulted credentials: injects each backend's credential as the last change before a call
leaves, so the caller never holds it.

This addon owns `toolgate_credentials`; injection is built on it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from mitmproxy import ctx, exceptions


class Credentials:
    def load(self, loader) -> None:
        loader.add_option(
            "toolgate_credentials", Optional[str], None,
            "A YAML file that maps targets to vaulted credentials.",
        )

    def configure(self, updated: set[str]) -> None:
        if "toolgate_credentials" in updated and ctx.options.toolgate_credentials:
            path = Path(ctx.options.toolgate_credentials).expanduser()
            if not path.is_file():
                raise exceptions.OptionsError(f"toolgate_credentials: {path} is not a file")
