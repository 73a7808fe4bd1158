"""Network identifiers: IPv4 and IPv6 addresses, validated by the standard ipaddress module."""

from __future__ import annotations

import ipaddress
import re

from reference.detectors.base import NUMBER_RUN, Detector, compile_patterns, register


def _ip_valid(candidate: str) -> bool:
    if not any(char.isalnum() for char in candidate):  # "::" alone is noise, not an address
        return False
    try:
        ipaddress.ip_address(candidate)
    except ValueError:
        return False
    return True


def _ip_normalize(text: str) -> str:
    return str(ipaddress.ip_address(text.strip()))


def _ip_partial(text: str) -> str:
    """Keep the first group: `192.168.1.20` → `192.***.*.**`, `2001:db8::1` → `2001:******`.
    (IPv6 loses its colons too: `fe80::*` would still be an address.)"""
    if ":" in text:
        head, _, tail = text.partition(":")
        return head + ":" + "*" * len(tail)
    head, _, tail = text.partition(".")
    return head + "." + "".join("*" if char.isdigit() else char for char in tail)


ip_address = register(
    Detector(
        name="ip_address",
        patterns=compile_patterns(
            r"[0-9](?<![0-9.].)[0-9]{0,2}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}(?![0-9]|\.[0-9])",
            # IPv6: 2 to 7 groups ending in ':' (the first may be empty, as in ::1), then a last
            # group or an embedded IPv4 address
            r"[0-9A-Fa-f:](?<![\w:.].)(?:(?<=:)|[0-9A-Fa-f]{0,3}:)(?:[0-9A-Fa-f]{0,4}:){1,6}"
            r"(?:(?:[0-9]{1,3}\.){3}[0-9]{1,3}|[0-9A-Fa-f]{1,4})?(?![\w:]|\.[0-9])",
        ),
        # IPv6 needs "::" or at least three colons in a row of groups; the colon-led gate finds
        # that quickly, so ordinary text (times like 10:00:00, URLs) never runs the slow pattern
        gates=(NUMBER_RUN, re.compile(r"::|:[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:")),
        validate=_ip_valid,
        normalize=_ip_normalize,
        partial=_ip_partial,
        description="IPv4 and IPv6 addresses",
        examples=("192.168.1.20", "2001:db8::8a2e:370:7334"),
        counter_examples=("999.1.1.1", "01.2.3.4", "10:30:00", "00:1A:2B:3C:4D:5E"),
    )
)
