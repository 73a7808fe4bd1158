"""Check digits used by the validators: Luhn (cards) and ISO 7064 mod-97 (IBAN)."""

from __future__ import annotations


def luhn_valid(digits: str) -> bool:
    """The Luhn check every payment card number satisfies."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def iban_mod97_valid(iban: str) -> bool:
    """ISO 13616: move the first four characters to the end, letters to numbers, remainder 1."""
    rearranged = iban[4:] + iban[:4]
    numeric = "".join(str(int(char, 36)) for char in rearranged)
    return int(numeric) % 97 == 1
