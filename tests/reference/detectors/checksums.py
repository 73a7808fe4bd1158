"""Check digits used by the validators: Luhn (cards) and ISO 7064 mod-97 (IBAN)."""

from __future__ import annotations


def luhn_valid(digits: str) -> bool:
    """The Luhn check every payment card number satisfies (`digits`: 0-9 only). From the right,
    every second digit is doubled and its digits summed (`_DOUBLED`); both sums run in C."""
    total = sum(map(int, digits[::-2])) + sum(map(_DOUBLED.__getitem__, digits[-2::-2]))
    return total % 10 == 0


_DOUBLED = {str(digit): (2 * digit) % 10 + (2 * digit) // 10 for digit in range(10)}


def iban_mod97_valid(iban: str) -> bool:
    """ISO 13616: move the first four characters to the end, letters to numbers, remainder 1."""
    rearranged = iban[4:] + iban[:4]
    numeric = "".join(str(int(char, 36)) for char in rearranged)
    return int(numeric) % 97 == 1
