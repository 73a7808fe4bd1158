//! Payment data: card numbers (Luhn) and IBANs (per-country length and mod-97).

use std::sync::LazyLock;

use super::{digits_only, find_validated, keep_last, keep_last_digits, Detector, Invalid, Pattern, Span};
use crate::checksums::{iban_mod97_valid, luhn_valid};

pub fn detectors() -> [&'static dyn Detector; 2] {
    [&CreditCard, &Iban]
}

// `[2-6](?<![0-9-].)(?:[ -]?[0-9]){12,18}(?![0-9])`
static CARD: LazyLock<Pattern> = LazyLock::new(|| Pattern::new(r"[^0-9-]([2-6](?:[ -]?[0-9]){12,18})[^0-9]", true));

pub struct CreditCard;

pub fn card_valid(candidate: &[u8]) -> bool {
    let digits: Vec<u8> = candidate.iter().copied().filter(u8::is_ascii_digit).collect();
    if !(13..=19).contains(&digits.len()) || digits.iter().all(|&d| d == digits[0]) {
        return false;
    }
    let mut separator: Option<u8> = None;
    for &byte in candidate.iter().filter(|b| !b.is_ascii_digit()) {
        match separator {
            None => separator = Some(byte),
            Some(seen) if seen != byte => return false,
            Some(_) => {}
        }
    }
    luhn_valid(&digits)
}

impl Detector for CreditCard {
    fn name(&self) -> &'static str {
        "credit_card"
    }
    fn find(&self, buf: &[u8], out: &mut Vec<Span>) {
        find_validated(&CARD, buf, card_valid, out);
    }
    fn numbers(&self) -> bool {
        true
    }
    fn matches_whole(&self, text: &str) -> bool {
        // The pattern, anchored at both ends of a text of digits (JSON integers are digits).
        let bytes = text.as_bytes();
        (13..=19).contains(&bytes.len())
            && (b'2'..=b'6').contains(&bytes[0])
            && bytes.iter().all(u8::is_ascii_digit)
            && card_valid(bytes)
    }
    fn normalize(&self, text: &str) -> Result<String, Invalid> {
        Ok(digits_only(text))
    }
    fn partial(&self, text: &str) -> String {
        keep_last_digits(text)
    }
}

/// Total IBAN length per country (SWIFT IBAN registry).
#[rustfmt::skip]
const IBAN_LENGTHS: &[(&str, usize)] = &[
    ("AD", 24), ("AE", 23), ("AL", 28), ("AT", 20), ("AZ", 28), ("BA", 20), ("BE", 16), ("BG", 22), ("BH", 22),
    ("BI", 27), ("BR", 29), ("BY", 28), ("CH", 21), ("CR", 22), ("CY", 28), ("CZ", 24), ("DE", 22), ("DJ", 27),
    ("DK", 18), ("DO", 28), ("EE", 20), ("EG", 29), ("ES", 24), ("FI", 18), ("FK", 18), ("FO", 18), ("FR", 27),
    ("GB", 22), ("GE", 22), ("GI", 23), ("GL", 18), ("GR", 27), ("GT", 28), ("HR", 21), ("HU", 28), ("IE", 22),
    ("IL", 23), ("IQ", 23), ("IS", 26), ("IT", 27), ("JO", 30), ("KW", 30), ("KZ", 20), ("LB", 28), ("LC", 32),
    ("LI", 21), ("LT", 20), ("LU", 20), ("LV", 21), ("LY", 25), ("MC", 27), ("MD", 24), ("ME", 22), ("MK", 19),
    ("MN", 20), ("MR", 27), ("MT", 31), ("MU", 30), ("NI", 28), ("NL", 18), ("NO", 15), ("OM", 23), ("PK", 24),
    ("PL", 28), ("PS", 29), ("PT", 25), ("QA", 29), ("RO", 24), ("RS", 22), ("RU", 33), ("SA", 24), ("SC", 31),
    ("SD", 18), ("SE", 24), ("SI", 19), ("SK", 24), ("SM", 27), ("SO", 23), ("ST", 25), ("SV", 28), ("TL", 23),
    ("TN", 24), ("TR", 26), ("UA", 29), ("VA", 22), ("VG", 24), ("XK", 20), ("YE", 30),
];

fn iban_length(country: &[u8]) -> Option<usize> {
    IBAN_LENGTHS.iter().find(|(code, _)| code.as_bytes() == country).map(|&(_, length)| length)
}

// `[A-Z](?<![A-Za-z0-9].)[A-Z][0-9]{2}(?: ?[A-Z0-9]){11,30}(?![A-Za-z0-9])`
static IBAN: LazyLock<Pattern> =
    LazyLock::new(|| Pattern::new(r"[^A-Za-z0-9]([A-Z][A-Z][0-9]{2}(?: ?[A-Z0-9]){11,30})[^A-Za-z0-9]", true));

pub struct Iban;

fn iban_valid(candidate: &[u8]) -> bool {
    let iban: Vec<u8> = candidate.iter().copied().filter(|&b| b != b' ').map(|b| b.to_ascii_uppercase()).collect();
    iban.len() >= 2 && iban_length(&iban[..2]) == Some(iban.len()) && iban_mod97_valid(&iban)
}

/// The index just after the `count`-th non-space byte from `start`, if it ends at a boundary.
fn end_after(buf: &[u8], start: usize, end: usize, count: usize) -> Option<usize> {
    let mut seen = 0;
    for index in start..end {
        if buf[index] != b' ' {
            seen += 1;
            if seen == count {
                let stop = index + 1;
                return (stop == end || buf[stop] == b' ').then_some(stop);
            }
        }
    }
    None
}

impl Detector for Iban {
    fn name(&self) -> &'static str {
        "iban"
    }
    /// Candidates are greedy runs of groups, never retried; when a run is longer than the
    /// country's IBAN, the prefix of the right length is tried (`BE71 0961 2345 6769 ABCD`).
    fn find(&self, buf: &[u8], out: &mut Vec<Span>) {
        let mut locs = IBAN.locations();
        let mut position = 0;
        while let Some((start, end)) = IBAN.search(buf, position, &mut locs) {
            position = end;
            let Some(expected) = iban_length(&buf[start..start + 2]) else { continue };
            if let Some(stop) = end_after(buf, start, end, expected) {
                if iban_valid(&buf[start..stop]) {
                    out.push((start, stop));
                }
            }
        }
    }
    fn normalize(&self, text: &str) -> Result<String, Invalid> {
        Ok(text.replace(' ', "").to_uppercase())
    }
    /// Country code and last four stay: `DE89 3704 0044 0532 0130 00` → `DE** **** **** **** **30 00`.
    fn partial(&self, text: &str) -> String {
        let split = text.char_indices().nth(2).map_or(text.len(), |(i, _)| i);
        format!("{}{}", &text[..split], keep_last(&text[split..], 4, char::is_alphanumeric))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detectors::found_in;

    fn found(detector: &dyn Detector, text: &str) -> Vec<String> {
        found_in(detector, text)
    }

    #[test]
    fn cards() {
        for card in ["4242 4242 4242 4242", "4111-1111-1111-1111", "378282246310005"] {
            assert_eq!(found(&CreditCard, card), [card]);
            assert_eq!(found(&CreditCard, &format!("card: {card}.")), [card]);
        }
        for fake in ["4242 4242 4242 4241", "0000 0000 0000 0000", "1234567812345670", "4242 4242-4242 4242"] {
            assert!(found(&CreditCard, fake).is_empty(), "{fake}");
        }
        // a greedy look-alike does not hide the card inside it
        assert_eq!(found(&CreditCard, "1234 4242 4242 4242 4242"), ["4242 4242 4242 4242"]);
        assert!(CreditCard.matches_whole("4242424242424242"));
        assert!(!CreditCard.matches_whole("4242424242424241"));
    }

    #[test]
    fn ibans() {
        for iban in ["DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432"] {
            assert_eq!(found(&Iban, iban), [iban]);
        }
        for fake in ["DE88 3704 0044 0532 0130 00", "XX89370400440532013000", "de89370400440532013000"] {
            assert!(found(&Iban, fake).is_empty(), "{fake}");
        }
        assert_eq!(Iban.partial("DE89 3704 0044 0532 0130 00"), "DE** **** **** **** **30 00");
        assert_eq!(Iban.normalize("de89 3704").unwrap(), "DE893704");
    }
}
