"""Personal identifiers: US social security numbers, email addresses, phone numbers."""

from __future__ import annotations

from typing import Iterable

from reference.detectors.base import NUMBER_RUN, Detector, Span, compile_patterns, digits_only, keep_last_digits, register

def _ssn_valid(candidate: str) -> bool:
    """SSA rules: area not 000, 666 or 900-999; group not 00; serial not 0000. (Numbers once
    printed on sample cards, such as 078-05-1120, still count: masking them costs nothing.)"""
    area, group, serial = candidate[:3], candidate[4:6], candidate[7:]  # the pattern fixed the layout
    return (
        area not in ("000", "666")
        and area[0] != "9"
        and group != "00"
        and serial != "0000"
    )


# Only the written forms `123-45-6789` and `123 45 6789` (the same separator twice). A bare
# 9-digit run is deliberately not an SSN: ids, ZIP+4 codes, amounts and unformatted phone
# numbers look the same, and no validator can tell them apart without context. A field known to
# hold unformatted SSNs is labelled by path instead (`paths: ["$..ssn"]`).
us_ssn = register(
    Detector(
        name="us_ssn",
        patterns=compile_patterns(r"[0-8](?<![0-9-].)[0-9]{2}([- ])[0-9]{2}\1[0-9]{4}(?![0-9]|-[0-9])"),
        gates=(NUMBER_RUN,),
        validate=_ssn_valid,
        normalize=digits_only,
        partial=keep_last_digits,
        description="US social security numbers written 123-45-6789 or 123 45 6789, SSA-validated",
        examples=("123-45-6789", "123 45 6789"),
        counter_examples=("000-12-3456", "666-12-3456", "123-00-4567", "123456789"),
    )
)


def _email_valid(candidate: str) -> bool:
    local, _, domain = candidate.rpartition("@")
    return (
        not local.startswith(".")
        and not local.endswith(".")
        and ".." not in local
        and len(domain) <= 253
        # no label of the domain starts or ends with a dash
        and not (domain.startswith("-") or domain.endswith("-") or ".-" in domain or "-." in domain)
    )


def email_partial(text: str) -> str:
    """`jane.doe@example.com` → `j***@example.com` (idempotent: `j***@…` stays `j***@…`)."""
    local, at, domain = text.rpartition("@")
    return (local[:1] or "*") + "***" + at + domain


_LOCAL_PART = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._%+-"
MAX_LOCAL_PART = 64


class EmailDetector(Detector):
    """The pattern finds `@domain.tld` (an `@` is rare, so the scan is fast); the local part is
    then read backwards from the `@`, at most 64 characters, as RFC 5321 allows."""

    def find(self, text: str) -> Iterable[Span]:
        found = []
        for match in self.patterns[0].finditer(text):
            at, end = match.span()
            # one character more than allowed, so that a longer local part is seen and rejected;
            # rstrip measures the run of local-part characters in C rather than a Python loop
            before = text[max(0, at - MAX_LOCAL_PART - 1) : at]
            start = at - (len(before) - len(before.rstrip(_LOCAL_PART)))
            if start < at and at - start <= MAX_LOCAL_PART and self.validate(text[start:end]):
                found.append((start, end))
        return found


email = register(
    EmailDetector(
        name="email",
        patterns=compile_patterns(r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![A-Za-z0-9-])"),
        validate=_email_valid,
        normalize=lambda text: text.strip().lower(),
        partial=email_partial,
        needles=("@",),
        description="email addresses",
        examples=("jane.doe@example.com",),
        counter_examples=("a@b", "x..y@example.com", "user@-example.com"),
    )
)


def _phone_valid(candidate: str) -> bool:
    digits = digits_only(candidate)
    if candidate.startswith("+"):
        if not 8 <= len(digits) <= 15:
            return False
        if any(pair in candidate for pair in ("--", "..", "  ", "()", "-.", ".-")):
            return False
        return candidate.count("(") == candidate.count(")") <= 1
    return len(digits) in (10, 11)


def _phone_normalize(text: str) -> str:
    """Digits, with the NANP country code added to 10-digit numbers so formats agree."""
    digits = digits_only(text)
    return "1" + digits if len(digits) == 10 and not text.startswith("+") else digits


# Two shapes only, so that ordinary numbers never look like phones: international numbers with a
# `+` (E.164, optionally grouped with spaces, dots, dashes or one pair of parentheses), and NANP
# numbers written with separators: `(415) 555-2671`, `415-555-2671`, `415.555.2671`, `1-800-555-0199`.
phone = register(
    Detector(
        name="phone",
        patterns=compile_patterns(
            r"\+(?<![\w+].)[1-9][0-9 ().-]{6,22}[0-9](?![0-9])",
            # the first character is consumed, then the look-behinds say which form it started
            r"[(1-9](?<![\w(+.-].)"
            r"(?:(?<=1)[ .-]?(?:\([2-9][0-9]{2}\) ?|[2-9][0-9]{2}[ .-])|(?<=\()[2-9][0-9]{2}\) ?|(?<=[2-9])[0-9]{2}[ .-])"
            r"[2-9][0-9]{2}[ .-][0-9]{4}(?![\w-]|\.[0-9])",
        ),
        gates=(NUMBER_RUN, NUMBER_RUN),
        validate=_phone_valid,
        normalize=_phone_normalize,
        partial=keep_last_digits,
        description="phone numbers: +E.164 (with or without grouping) and formatted NANP numbers",
        examples=("+14155552671", "+44 20 7946 0958", "(415) 555-2671", "415-555-2671"),
        counter_examples=("4155552671", "2024-01-02", "(115) 555-2671", "version 1.2.3"),
    )
)
