"""Built-in detectors, a registry of small units (see `base`): each proposes candidates with a
pattern and validates them, so a pattern match alone never labels a value."""

from toolgate.rules.detectors import financial, identity, network, secrets  # noqa: F401  (they register themselves)
from toolgate.rules.detectors.base import DETECTORS, Detector, Span, keep_last, register

__all__ = ["DETECTORS", "Detector", "Span", "keep_last", "register"]
