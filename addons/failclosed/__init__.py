"""Fail closed: the gate first in the chain, the sentinel, the seal last in it, and the hook wrapper that turns any exception into a 500 `internal`."""
