"""Built-in detectors, a registry of small units (see `base`): each proposes candidates with a
pattern and validates them, so a pattern match alone never labels a value. The work is done by
the native core; these modules describe each detector."""

from toolgate.rules.detectors import financial, identity, network, secrets  # noqa: F401  (they register themselves)
from toolgate.rules.detectors.base import DETECTORS, Detector, Span, register

__all__ = ["DETECTORS", "Detector", "Span", "register"]
