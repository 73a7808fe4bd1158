"""Network identifiers: IPv4 and IPv6 addresses, validated as Python's `ipaddress` does."""

from __future__ import annotations

from toolgate.rules.detectors.base import Detector, register

# The partial form keeps the first group: `192.168.1.20` → `192.***.*.**`, `2001:db8::1` →
# `2001:******` (IPv6 loses its colons too: `fe80::*` would still be an address).
ip_address = register(Detector(
    name="ip_address",
    description="IPv4 and IPv6 addresses",
    examples=("192.168.1.20", "2001:db8::8a2e:370:7334"),
    counter_examples=("999.1.1.1", "01.2.3.4", "10:30:00", "00:1A:2B:3C:4D:5E"),
))
