"""Policy: classifies, masks, blocks or holds each call according to the rule packs.

This addon owns the policy options. Enforcement on the wire is built on the rule engine in
`rules/`; until it is wired in, the options are parsed and validated so that a deployment's
command line is checked today.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from mitmproxy import ctx, exceptions

from addons import settings

MODES = ("enforce", "monitor")
DEFAULT_MAX_BODY = "10MiB"


class Policy:
    def __init__(self) -> None:
        self.max_body = settings.parse_size(DEFAULT_MAX_BODY)
        self.mask_key: bytes | None = None

    def load(self, loader) -> None:
        loader.add_option(
            "toolgate_rules", str, "",
            "A rule file or a folder of them. Empty: the bundled packs.",
        )
        loader.add_option(
            "toolgate_mode", str, "enforce",
            "enforce, or monitor: decide and record everything, change nothing (the answer "
            "says what would have happened in X-Toolgate-Decision).",
            choices=MODES,
        )
        loader.add_option(
            "toolgate_max_body", str, DEFAULT_MAX_BODY,
            "Bodies larger than this (e.g. 10MiB, 512KiB) are refused, never passed "
            "uninspected.",
        )
        loader.add_option(
            "toolgate_mask_key", Optional[str], None,
            "The key of hash masks and fingerprints: env:NAME or file:PATH.",
        )

    def configure(self, updated: set[str]) -> None:
        try:
            if "toolgate_mode" in updated:
                settings.check_choice("toolgate_mode", ctx.options.toolgate_mode, MODES)
            if "toolgate_rules" in updated and ctx.options.toolgate_rules:
                path = Path(ctx.options.toolgate_rules).expanduser()
                if not path.exists():
                    raise ValueError(f"toolgate_rules: {path} does not exist")
            if "toolgate_max_body" in updated:
                self.max_body = settings.parse_size(ctx.options.toolgate_max_body)
            if "toolgate_mask_key" in updated and ctx.options.toolgate_mask_key:
                self.mask_key = settings.resolve_secret(
                    ctx.options.toolgate_mask_key, "toolgate_mask_key"
                )
        except ValueError as exc:
            raise exceptions.OptionsError(str(exc)) from None
