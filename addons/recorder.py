"""The recorder: writes every call to the DuckDB session store, last in the chain.

This addon owns the store's options; recording is built on them.
"""

from __future__ import annotations

from pathlib import Path

from mitmproxy import ctx, exceptions

from addons import settings

DURABILITIES = ("audit", "async")


class Recorder:
    def load(self, loader) -> None:
        loader.add_option("toolgate_db", str, "toolgate.duckdb", "The session store (DuckDB file).")
        loader.add_option(
            "toolgate_durability", str, "audit",
            "audit: nothing is forwarded or answered before its record is committed; "
            "async: calls are recorded in the background.",
            choices=DURABILITIES,
        )

    def configure(self, updated: set[str]) -> None:
        if "toolgate_durability" in updated:
            try:
                settings.check_choice(
                    "toolgate_durability", ctx.options.toolgate_durability, DURABILITIES
                )
            except ValueError as exc:
                raise exceptions.OptionsError(str(exc)) from None
        if "toolgate_db" in updated:
            folder = Path(ctx.options.toolgate_db).expanduser().resolve().parent
            if not folder.is_dir():
                raise exceptions.OptionsError(f"toolgate_db: the folder {folder} does not exist")
