"""Payment data: card numbers (Luhn) and IBANs (per-country length and mod-97)."""

from __future__ import annotations

from toolgate.rules.detectors.base import Detector, register

# Issuer ranges start with 2-6 (Mastercard 2/5, Amex 3, Visa 4, Discover 6); digits may be grouped
# with single spaces or dashes, one kind of separator per number.
credit_card = register(Detector(
    name="credit_card",
    description="payment card numbers, 13-19 digits, Luhn-checked (also JSON numbers)",
    examples=("4242 4242 4242 4242", "4111-1111-1111-1111", "378282246310005"),
    counter_examples=("4242 4242 4242 4241", "0000 0000 0000 0000", "1234567812345670",
                      "4242 4242-4242 4242"),
    numbers=True,
))

# The country's IBAN length (SWIFT IBAN registry) and the mod-97 check digits; a run of groups
# longer than the country's IBAN is cut to its length (`BE71 0961 2345 6769 ABCD`).
iban = register(Detector(
    name="iban",
    description="international bank account numbers, per-country length and mod-97 checked",
    examples=("DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432"),
    counter_examples=("DE88 3704 0044 0532 0130 00", "XX89370400440532013000",
                      "de89370400440532013000"),
))
