"""The pure-Python detectors the native core (core/src/detectors) must agree with, value for
value: the product's detectors before the core, kept as the reference of the differential tests."""

from reference.detectors import financial, identity, network, secrets  # noqa: F401  (they register themselves)
from reference.detectors.base import DETECTORS, Detector, Span, keep_last, register

__all__ = ["DETECTORS", "Detector", "Span", "keep_last", "register"]
