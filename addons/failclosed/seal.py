"""Last in the chain: tells the sentinel the chain is in force once every addon before it has
taken its options (see `Gate`)."""

from __future__ import annotations

from toolgate.addons.failclosed.gate import Gate


class Seal:
    def __init__(self, gate: Gate) -> None:
        self.gate = gate

    def configure(self, updated: set[str]) -> None:
        if self.gate.sentinel:
            self.gate.sentinel.open(self.gate)
