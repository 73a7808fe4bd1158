//! Personal identifiers: US social security numbers, email addresses, phone numbers.

use std::sync::LazyLock;

use super::{
    digits_only, find_validated, keep_last_digits, merge_patterns, py_strip, Detector, Invalid, Pattern, Span,
};

pub fn detectors() -> [&'static dyn Detector; 3] {
    [&UsSsn, &Email, &Phone]
}

// `[0-8](?<![0-9-].)[0-9]{2}([- ])[0-9]{2}\1[0-9]{4}(?![0-9]|-[0-9])`: the back-reference
// spelled out as its two cases.
static SSN: LazyLock<Pattern> = LazyLock::new(|| {
    Pattern::new(r"[^0-9-]([0-8][0-9]{2}(?:-[0-9]{2}-|\x20[0-9]{2}\x20)[0-9]{4})(?:[^0-9-]|-[^0-9])", true)
});

pub struct UsSsn;

/// SSA rules: area not 000, 666 or 900-999; group not 00; serial not 0000.
fn ssn_valid(candidate: &[u8]) -> bool {
    let (area, group, serial) = (&candidate[..3], &candidate[4..6], &candidate[7..]);
    area != b"000" && area != b"666" && area[0] != b'9' && group != b"00" && serial != b"0000"
}

impl Detector for UsSsn {
    fn name(&self) -> &'static str {
        "us_ssn"
    }
    fn find(&self, buf: &[u8], out: &mut Vec<Span>) {
        find_validated(&SSN, buf, ssn_valid, out);
    }
    fn normalize(&self, text: &str) -> Result<String, Invalid> {
        Ok(digits_only(text))
    }
    fn partial(&self, text: &str) -> String {
        keep_last_digits(text)
    }
}

// `@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![A-Za-z0-9-])`
static EMAIL: LazyLock<Pattern> = LazyLock::new(|| {
    Pattern::new(r"(@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24})[^A-Za-z0-9-]", false)
});
const MAX_LOCAL_PART: usize = 64;

fn local_part_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"._%+-".contains(&b)
}

fn email_valid(candidate: &[u8]) -> bool {
    let at = candidate.iter().rposition(|&b| b == b'@').unwrap_or(0);
    let (local, domain) = (&candidate[..at], &candidate[at + 1..]);
    let has = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    !local.starts_with(b".")
        && !local.ends_with(b".")
        && !has(local, b"..")
        && domain.len() <= 253
        && !(domain.starts_with(b"-") || domain.ends_with(b"-") || has(domain, b".-") || has(domain, b"-."))
}

pub struct Email;

impl Detector for Email {
    fn name(&self) -> &'static str {
        "email"
    }
    /// The pattern finds `@domain.tld`; the local part is then read backwards from the `@`, at
    /// most 64 characters (one more is read, so a longer one is seen and rejected).
    fn find(&self, buf: &[u8], out: &mut Vec<Span>) {
        let mut locs = EMAIL.locations();
        let mut position = 0;
        while let Some((at, end)) = EMAIL.search(buf, position, &mut locs) {
            position = end;
            let window = at.saturating_sub(MAX_LOCAL_PART + 1);
            let run = buf[window..at].iter().rev().take_while(|&&b| local_part_byte(b)).count();
            let start = at - run;
            if start < at && at - start <= MAX_LOCAL_PART && email_valid(&buf[start..end]) {
                out.push((start, end));
            }
        }
    }
    fn normalize(&self, text: &str) -> Result<String, Invalid> {
        Ok(py_strip(text).to_lowercase())
    }
    /// `jane.doe@example.com` → `j***@example.com`.
    fn partial(&self, text: &str) -> String {
        email_partial(text)
    }
}

pub fn email_partial(text: &str) -> String {
    let (local, at, domain) = match text.rfind('@') {
        Some(i) => (&text[..i], "@", &text[i + 1..]),
        None => ("", "", text),
    };
    let first: String = local.chars().take(1).collect();
    format!("{}***{at}{domain}", if first.is_empty() { "*" } else { &first })
}

// `\+(?<![\w+].)[1-9][0-9 ().-]{6,22}[0-9](?![0-9])`
static PHONE_INTERNATIONAL: LazyLock<Pattern> =
    LazyLock::new(|| Pattern::new(r"[^A-Za-z0-9_+](\+[1-9][0-9 ().-]{6,22}[0-9])[^0-9]", true));
// `[(1-9](?<![\w(+.-].)(?:(?<=1)...|(?<=\()...|(?<=[2-9])...)...(?![\w-]|\.[0-9])`: the
// look-behinds on the first character choose the branch, so each branch starts with it.
static PHONE_NANP: LazyLock<Pattern> = LazyLock::new(|| {
    Pattern::new(
        r"[^A-Za-z0-9_(+.-]((?:1[ .-]?(?:\([2-9][0-9]{2}\)\x20?|[2-9][0-9]{2}[ .-])|\([2-9][0-9]{2}\)\x20?|[2-9][0-9]{2}[ .-])[2-9][0-9]{2}[ .-][0-9]{4})(?:[^A-Za-z0-9_.-]|\.[^0-9])",
        true,
    )
});

fn phone_valid(candidate: &[u8]) -> bool {
    let digits = candidate.iter().filter(|b| b.is_ascii_digit()).count();
    if candidate.first() == Some(&b'+') {
        if !(8..=15).contains(&digits) {
            return false;
        }
        let pairs: [&[u8]; 6] = [b"--", b"..", b"  ", b"()", b"-.", b".-"];
        if pairs.iter().any(|pair| candidate.windows(2).any(|w| w == *pair)) {
            return false;
        }
        let open = candidate.iter().filter(|&&b| b == b'(').count();
        let close = candidate.iter().filter(|&&b| b == b')').count();
        return open == close && close <= 1;
    }
    digits == 10 || digits == 11
}

pub struct Phone;

impl Detector for Phone {
    fn name(&self) -> &'static str {
        "phone"
    }
    fn find(&self, buf: &[u8], out: &mut Vec<Span>) {
        let mut spans = Vec::new();
        find_validated(&PHONE_INTERNATIONAL, buf, phone_valid, &mut spans);
        find_validated(&PHONE_NANP, buf, phone_valid, &mut spans);
        merge_patterns(spans, out);
    }
    /// Digits, with the NANP country code added to 10-digit numbers so formats agree.
    fn normalize(&self, text: &str) -> Result<String, Invalid> {
        let digits = digits_only(text);
        Ok(if digits.len() == 10 && !text.starts_with('+') { format!("1{digits}") } else { digits })
    }
    fn partial(&self, text: &str) -> String {
        keep_last_digits(text)
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
    fn ssns() {
        for ssn in ["123-45-6789", "123 45 6789"] {
            assert_eq!(found(&UsSsn, ssn), [ssn]);
            assert_eq!(found(&UsSsn, &format!("ssn {ssn}, ok")), [ssn]);
        }
        for fake in ["000-12-3456", "666-12-3456", "123-00-4567", "123456789", "123-45 6789", "123-45-6789-1"] {
            assert!(found(&UsSsn, fake).is_empty(), "{fake}");
        }
    }

    #[test]
    fn emails() {
        assert_eq!(found(&Email, "mail jane.doe@example.com now"), ["jane.doe@example.com"]);
        for fake in ["a@b", "x..y@example.com", "user@-example.com"] {
            assert!(found(&Email, fake).is_empty(), "{fake}");
        }
        assert_eq!(Email.partial("jane.doe@example.com"), "j***@example.com");
        assert_eq!(Email.normalize(" Jane@Example.COM ").unwrap(), "jane@example.com");
    }

    #[test]
    fn phones() {
        for phone in ["+14155552671", "+44 20 7946 0958", "(415) 555-2671", "415-555-2671", "1-800-555-0199"] {
            assert_eq!(found(&Phone, phone), [phone], "{phone}");
        }
        for fake in ["4155552671", "2024-01-02", "(115) 555-2671", "version 1.2.3"] {
            assert!(found(&Phone, fake).is_empty(), "{fake}");
        }
        assert_eq!(Phone.normalize("(415) 555-2671").unwrap(), "14155552671");
    }
}
