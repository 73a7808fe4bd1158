"""Load errors that point at the exact place to fix: `file:line: message`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RuleError:
    """One problem in a rule file. `line` is 1-based (0 when the whole file is concerned)."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}" if self.line else f"{self.file}: {self.message}"


class RuleLoadError(Exception):
    """A rule set that does not load; carries every problem found, not just the first."""

    def __init__(self, errors: list[RuleError]) -> None:
        self.errors = list(errors)
        count = len(self.errors)
        super().__init__(f"{count} error{'s' if count != 1 else ''} in rules:\n" + "\n".join(map(str, self.errors)))
