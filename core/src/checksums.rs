//! Check digits used by the validators: Luhn (cards) and ISO 7064 mod-97 (IBAN).

/// The Luhn check every payment card number satisfies (`digits`: ASCII 0-9 only).
pub fn luhn_valid(digits: &[u8]) -> bool {
    let mut total = 0u32;
    for (i, &digit) in digits.iter().rev().enumerate() {
        let value = u32::from(digit - b'0');
        total += if i % 2 == 1 {
            let doubled = value * 2;
            doubled % 10 + doubled / 10
        } else {
            value
        };
    }
    total % 10 == 0
}

/// ISO 13616: move the first four characters to the end, letters to numbers (A=10...), and the
/// whole number must leave remainder 1 by 97. `iban`: ASCII digits and upper-case letters.
pub fn iban_mod97_valid(iban: &[u8]) -> bool {
    if iban.len() < 4 {
        return false;
    }
    let mut remainder = 0u32;
    for &c in iban[4..].iter().chain(&iban[..4]) {
        let value = match c {
            b'0'..=b'9' => u32::from(c - b'0'),
            b'A'..=b'Z' => u32::from(c - b'A') + 10,
            _ => return false,
        };
        remainder = if value >= 10 { (remainder * 100 + value) % 97 } else { (remainder * 10 + value) % 97 };
    }
    remainder == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn() {
        assert!(luhn_valid(b"4242424242424242"));
        assert!(!luhn_valid(b"4242424242424241"));
        assert!(luhn_valid(b"378282246310005"));
    }

    #[test]
    fn mod97() {
        assert!(iban_mod97_valid(b"DE89370400440532013000"));
        assert!(!iban_mod97_valid(b"DE88370400440532013000"));
    }
}
