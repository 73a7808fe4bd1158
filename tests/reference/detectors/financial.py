"""Payment data: card numbers (Luhn) and IBANs (per-country length and mod-97)."""

from __future__ import annotations

import re
from typing import Iterable

from reference.detectors.base import NUMBER_RUN, Detector, Span, compile_patterns, digits_only, keep_last, keep_last_digits, register
from reference.detectors.checksums import iban_mod97_valid, luhn_valid


def _card_valid(candidate: str) -> bool:
    digits = digits_only(candidate)
    if not 13 <= len(digits) <= 19 or len(set(digits)) == 1:
        return False
    separators = [char for char in set(candidate) if not char.isdigit()]
    return len(separators) <= 1 and luhn_valid(digits)


# Issuer ranges start with 2-6 (Mastercard 2/5, Amex 3, Visa 4, Discover 6); digits may be grouped
# with single spaces or dashes. The look-behind keeps candidates from starting inside a number.
credit_card = register(
    Detector(
        name="credit_card",
        patterns=compile_patterns(r"[2-6](?<![0-9-].)(?:[ -]?[0-9]){12,18}(?![0-9])"),
        validate=_card_valid,
        gates=(NUMBER_RUN,),
        normalize=digits_only,
        partial=keep_last_digits,
        numbers=True,
        description="payment card numbers, 13-19 digits, Luhn-checked (also JSON numbers)",
        examples=("4242 4242 4242 4242", "4111-1111-1111-1111", "378282246310005"),
        counter_examples=("4242 4242 4242 4241", "0000 0000 0000 0000", "1234567812345670",
                          "4242 4242-4242 4242"),
    )
)

# Total IBAN length per country (SWIFT IBAN registry).
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22,
    "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32,
    "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24,
    "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31,
    "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28, "TL": 23,
    "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip


def _compact(text: str) -> str:
    return text.replace(" ", "").upper()


def _iban_valid(candidate: str) -> bool:
    iban = _compact(candidate)
    return IBAN_LENGTHS.get(iban[:2]) == len(iban) and iban_mod97_valid(iban)


def _iban_partial(text: str) -> str:
    """Country code and last four stay: `DE89 3704 0044 0532 0130 00` → `DE** **** **** **** **30 00`."""
    return text[:2] + keep_last(text[2:])


class IbanDetector(Detector):
    """Candidates are greedy runs of groups; when a run is longer than the country's IBAN, the
    prefix of the right length is tried, so `BE71 0961 2345 6769 ABCD` still finds the IBAN."""

    def find(self, text: str) -> Iterable[Span]:
        found = []
        for match in self.patterns[0].finditer(text):
            start, end = match.span()
            expected = IBAN_LENGTHS.get(text[start : start + 2])
            if expected is None:
                continue
            stop = _end_after(text, start, end, expected)
            if stop is not None and self.validate(text[start:stop]):
                found.append((start, stop))
        return found


def _end_after(text: str, start: int, end: int, count: int) -> int | None:
    """Index just after the `count`-th non-space character from `start`, if it ends at a boundary."""
    seen = 0
    for index in range(start, end):
        if text[index] != " ":
            seen += 1
            if seen == count:
                stop = index + 1
                return stop if stop == end or text[stop] == " " else None
    return None


iban = register(
    IbanDetector(
        name="iban",
        patterns=compile_patterns(r"[A-Z](?<![A-Za-z0-9].)[A-Z][0-9]{2}(?: ?[A-Z0-9]){11,30}(?![A-Za-z0-9])"),
        gates=(re.compile(r"[A-Z][A-Z][0-9][0-9]", re.ASCII),),  # country code and check digits
        validate=_iban_valid,
        normalize=_compact,
        partial=_iban_partial,
        description="international bank account numbers, per-country length and mod-97 checked",
        examples=("DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432"),
        counter_examples=("DE88 3704 0044 0532 0130 00", "XX89370400440532013000",
                          "de89370400440532013000"),
    )
)
