"""Personal identifiers: US social security numbers, email addresses, phone numbers."""

from __future__ import annotations

from toolgate.rules.detectors.base import Detector, register

# Only the written forms `123-45-6789` and `123 45 6789` (the same separator twice), SSA rules
# (area not 000, 666 or 9xx; group not 00; serial not 0000). A bare 9-digit run is deliberately
# not an SSN: ids, ZIP+4 codes, amounts and unformatted phone numbers look the same, and no
# validator can tell them apart without context. A field known to hold unformatted SSNs is
# labelled by path instead (`paths: ["$..ssn"]`).
us_ssn = register(Detector(
    name="us_ssn",
    description="US social security numbers written 123-45-6789 or 123 45 6789, SSA-validated",
    examples=("123-45-6789", "123 45 6789"),
    counter_examples=("000-12-3456", "666-12-3456", "123-00-4567", "123456789"),
))

# `@domain.tld`, then the local part read backwards from the `@` (at most 64 characters, as
# RFC 5321 allows); no dot at either end of the local part, no label starting or ending with `-`.
email = register(Detector(
    name="email",
    description="email addresses",
    examples=("jane.doe@example.com",),
    counter_examples=("a@b", "x..y@example.com", "user@-example.com"),
    needles=("@",),
))

# Two shapes only, so that ordinary numbers never look like phones: international numbers with a
# `+` (E.164, optionally grouped with spaces, dots, dashes or one pair of parentheses), and NANP
# numbers written with separators: `(415) 555-2671`, `415-555-2671`, `415.555.2671`, `1-800-555-0199`.
phone = register(Detector(
    name="phone",
    description="phone numbers: +E.164 (with or without grouping) and formatted NANP numbers",
    examples=("+14155552671", "+44 20 7946 0958", "(415) 555-2671", "415-555-2671"),
    counter_examples=("4155552671", "2024-01-02", "(115) 555-2671", "version 1.2.3"),
))
