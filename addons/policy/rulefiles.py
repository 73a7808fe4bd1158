"""The rule files in force: loaded at start, reloaded when they change, and never replaced by
a set that does not load (the last good one stays, and the error is logged with file and line)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from toolgate.rules import RuleLoadError, RuleSet, bundled_packs_path, load_rules

logger = logging.getLogger(__name__)

POLL_SECONDS = 1.0


def _signature(path: Path) -> tuple[tuple[str, float, int], ...]:
    """What changes when a rule file is edited, added or removed."""
    files = sorted(path.rglob("*.y*ml")) if path.is_dir() else [path]
    signature = []
    for file in files:
        try:
            stat = file.stat()
        except OSError:
            continue
        signature.append((str(file), stat.st_mtime, stat.st_size))
    return tuple(signature)


class RuleFiles:
    def __init__(self) -> None:
        self.path: Path = bundled_packs_path()
        self.current: RuleSet = load_rules(self.path)
        self.signature = _signature(self.path)
        self.reload_failures = 0  # changed files that did not load (for the metrics)

    def load(self, option: str) -> None:
        """Load the rules named by `toolgate_rules` (empty: the bundled packs); ValueError
        with every error's file, line and reason if they do not load."""
        path = Path(option).expanduser() if option else bundled_packs_path()
        if not path.exists():
            raise ValueError(f"toolgate_rules: {path} does not exist")
        signature = _signature(path)
        try:
            ruleset = load_rules(path)
        except RuleLoadError as exc:
            raise ValueError(f"toolgate_rules: the rules do not load:\n{exc}") from None
        self.path, self.current, self.signature = path, ruleset, signature
        logger.info("toolgate: rules loaded from %s", path)

    def reload(self) -> bool:
        """Reload the same path; whether the new rules are in force."""
        try:
            self.load(str(self.path))
        except ValueError as exc:
            self.signature = _signature(self.path)  # do not retry until the files change again
            self.reload_failures += 1
            logger.error("toolgate: %s (the previous rules stay in force)", exc)
            return False
        return True

    async def watch(self) -> None:
        """Reload when the files change; the loading runs off the event loop."""
        while True:
            await asyncio.sleep(POLL_SECONDS)
            signature = await asyncio.to_thread(_signature, self.path)
            if signature != self.signature:
                await asyncio.to_thread(self.reload)
