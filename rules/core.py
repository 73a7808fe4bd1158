"""The native classification core (`toolgate.rules._core`, built from `core/` with cargo).

Detectors, validators, masks and fingerprints run there: the per-value work of a large body is at
its floor in Python. There is no Python fallback: the reference implementation lives in the
tests only, and a missing or stale core is an error at import, which the gateway turns into a
refusal to start (`addons/gateway.py`).
"""

from __future__ import annotations

from types import ModuleType

# Bumped with every change to what the Python side expects from the module: a stale build
# (sources changed, extension not rebuilt) is refused rather than trusted.
INTERFACE = 7

HOW_TO_BUILD = (
    "build it with `make core` in a checkout (cargo and a C toolchain are needed), "
    "or reinstall toolgate (`pip install -e .`)"
)


class CoreUnavailable(ImportError):
    """The native core is missing, broken or from another version of the sources."""


def _load() -> ModuleType:
    try:
        from toolgate.rules import _core
    except ImportError as exc:
        raise CoreUnavailable(
            f"toolgate's classification core (toolgate.rules._core) cannot be loaded: {exc}; {HOW_TO_BUILD}"
        ) from exc
    found = getattr(_core, "INTERFACE", None)
    if found != INTERFACE:
        raise CoreUnavailable(
            f"toolgate's classification core is stale (interface {found}, these sources need "
            f"{INTERFACE}): {_core.__file__}; {HOW_TO_BUILD}"
        )
    return _core


native = _load()
