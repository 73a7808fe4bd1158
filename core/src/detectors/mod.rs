//! The detectors: each proposes candidates with a pattern and a validator decides, exactly as
//! the Python reference (`tests/reference/detectors`) does.
//!
//! Every detector scans a *framed* buffer: strings joined with NUL bytes, with a NUL before the
//! first and after the last. No value ever holds a NUL, so no match spans two strings, and the
//! frame lets the `regex` crate (which has no look-around) express each look-behind as "the
//! byte before is not one of these" and each look-ahead as "the byte after is not...": both
//! always exist. Patterns are written as `PREFIX(VALUE)SUFFIX`, the value in group 1. The
//! crate's leftmost-first semantics are those of a backtracking engine, so the value a pattern
//! picks is the one Python's `re` picks.

pub mod financial;
pub mod identity;
pub mod network;
pub mod secrets;

use regex::bytes::{CaptureLocations, Regex};

/// A value's (start, end) in bytes of the buffer it was found in.
pub type Span = (usize, usize);

/// A value that is not of the detector's kind (Python raises `ValueError`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid;

/// One kind of sensitive value.
pub trait Detector: Sync + Send {
    /// The name rule files refer to.
    fn name(&self) -> &'static str;
    /// Validated values in a framed buffer (see the module), in order, not overlapping.
    fn find(&self, buf: &[u8], out: &mut Vec<Span>);
    /// Whether the detector also looks at JSON integers (their decimal text).
    fn numbers(&self) -> bool {
        false
    }
    /// All of `text` is one valid value (for JSON integers).
    fn matches_whole(&self, _text: &str) -> bool {
        false
    }
    /// The canonical text fingerprints and hash tokens are computed from.
    fn normalize(&self, text: &str) -> Result<String, Invalid>;
    /// The detector's own partial mask.
    fn partial(&self, text: &str) -> String;
}

/// Every detector, in the order the Python registry lists them.
pub fn all() -> &'static [&'static dyn Detector] {
    static ALL: std::sync::OnceLock<Vec<&'static dyn Detector>> = std::sync::OnceLock::new();
    ALL.get_or_init(|| {
        let mut all: Vec<&'static dyn Detector> = Vec::new();
        all.extend(financial::detectors());
        all.extend(identity::detectors());
        all.extend(network::detectors());
        all.extend(secrets::detectors());
        all
    })
}

/// Substrings one of which every value of detector `name` holds (empty: none such): a buffer
/// without any of them is not scanned by it. (The Python side lists the same ones; a test
/// checks they agree.)
pub fn needles(name: &str) -> &'static [&'static str] {
    match name {
        "email" => &["@"],
        "aws_access_key" => &["AKIA", "ASIA"],
        "private_key" => &["-----BEGIN"],
        "jwt" => &["eyJ"],
        "github_token" => &["ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"],
        "slack_token" => &["xox"],
        "stripe_key" => &["k_live_", "k_test_"],
        "openai_key" => &["sk-"],
        "anthropic_key" => &["sk-ant-"],
        "google_api_key" => &["AIza"],
        _ => &[],
    }
}

pub fn by_name(name: &str) -> Option<&'static dyn Detector> {
    all().iter().copied().find(|d| d.name() == name)
}

/// `\0text\0`: a single string framed for `Detector::find`.
pub fn framed(text: &str) -> Vec<u8> {
    let mut buf = Vec::with_capacity(text.len() + 2);
    buf.push(0);
    buf.extend_from_slice(text.as_bytes());
    buf.push(0);
    buf
}

/// The values `detector` finds in `text` alone, as text (for the detectors' tests).
#[cfg(test)]
pub fn found_in(detector: &dyn Detector, text: &str) -> Vec<String> {
    let buf = framed(text);
    let mut out = Vec::new();
    detector.find(&buf, &mut out);
    out.iter().map(|&(s, e)| String::from_utf8_lossy(&buf[s..e]).into_owned()).collect()
}

/// A pattern `PREFIX(VALUE)SUFFIX` (see the module). `behind` says whether it starts with a
/// one-byte look-behind prefix, so that a search from `position` starts one byte earlier.
pub struct Pattern {
    regex: Regex,
    behind: bool,
}

impl Pattern {
    pub fn new(source: &str, behind: bool) -> Self {
        let regex = Regex::new(&format!("(?-u){source}")).expect("detector patterns compile");
        assert_eq!(regex.captures_len(), 2, "a detector pattern has exactly one group: {source}");
        Pattern { regex, behind }
    }

    pub fn locations(&self) -> CaptureLocations {
        self.regex.capture_locations()
    }

    /// Python's `pattern.search(text, position)`: the leftmost value starting at or after
    /// `position` (its look-behind may read the byte before `position`).
    pub fn search(&self, buf: &[u8], position: usize, locs: &mut CaptureLocations) -> Option<Span> {
        let at = if self.behind { position.saturating_sub(1) } else { position };
        if at >= buf.len() {
            return None;
        }
        self.regex.captures_read_at(locs, buf, at)?;
        locs.get(1)
    }

    /// Whether the value group can match at exactly `[start, end)` (Python's `fullmatch` of
    /// the value alone: the prefix and suffix see the frame).
    pub fn fullmatch(&self, text: &str) -> bool {
        let buf = framed(text);
        let mut locs = self.locations();
        let mut position = 1;
        while let Some((start, end)) = self.search(&buf, position, &mut locs) {
            if start > 1 {
                return false;
            }
            if start == 1 && end == buf.len() - 1 {
                return true;
            }
            position = start + 1;
            if position > 1 {
                return false;
            }
        }
        false
    }
}

/// `Detector._find` of the reference: candidates left to right; a valid one is kept and the
/// search goes on after it, a rejected one is retried one byte on (so a greedy look-alike
/// cannot hide a real value inside it).
pub fn find_validated(pattern: &Pattern, buf: &[u8], validate: impl Fn(&[u8]) -> bool, out: &mut Vec<Span>) {
    let mut locs = pattern.locations();
    let mut position = 0;
    while let Some((start, end)) = pattern.search(buf, position, &mut locs) {
        if validate(&buf[start..end]) {
            out.push((start, end));
            position = if end > start { end } else { start + 1 };
        } else {
            position = start + 1;
        }
    }
}

/// The spans of several patterns of one detector merged as the reference does: sorted by
/// start then longest first, a span overlapping an earlier kept one dropped.
pub fn merge_patterns(mut spans: Vec<Span>, out: &mut Vec<Span>) {
    spans.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    let mut end = 0;
    let mut first = true;
    for span in spans {
        if first || span.0 >= end {
            out.push(span);
            end = span.1;
            first = false;
        }
    }
}

/// Python's `str.isspace` (Rust's `char::is_whitespace` plus the four information separators).
pub fn py_isspace(c: char) -> bool {
    c.is_whitespace() || ('\x1c'..='\x1f').contains(&c)
}

/// Python's `str.strip()`.
pub fn py_strip(text: &str) -> &str {
    text.trim_matches(py_isspace)
}

/// Only the ASCII digits of `text` (the reference's `digits_only`).
pub fn digits_only(text: &str) -> String {
    text.chars().filter(char::is_ascii_digit).collect()
}

/// Replace maskable characters with `*` except the last `keep` of them; others stay (the
/// reference's `keep_last`). `maskable` sees each character.
pub fn keep_last(text: &str, keep: usize, maskable: impl Fn(char) -> bool) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut cut = chars.len();
    let mut left = keep;
    while left > 0 && cut > 0 {
        cut -= 1;
        if maskable(chars[cut]) {
            left -= 1;
        }
    }
    if left > 0 {
        cut = 0;
    }
    let mut out = String::with_capacity(text.len());
    for (i, &c) in chars.iter().enumerate() {
        out.push(if i < cut && maskable(c) { '*' } else { c });
    }
    out
}

/// `4242 4242 4242 4242` → `**** **** **** 4242`.
pub fn keep_last_digits(text: &str) -> String {
    keep_last(text, 4, |c| c.is_ascii_digit())
}

/// Shannon entropy in bits per character, summed in the order characters first occur (as
/// Python's `Counter` iterates), so the float is the reference's to the last bit.
pub fn shannon_entropy(text: &str) -> f64 {
    let chars: Vec<char> = text.chars().collect();
    if chars.is_empty() {
        return 0.0;
    }
    let mut order: Vec<char> = Vec::new();
    let mut counts: Vec<usize> = Vec::new();
    for &c in &chars {
        match order.iter().position(|&o| o == c) {
            Some(i) => counts[i] += 1,
            None => {
                order.push(c);
                counts.push(1);
            }
        }
    }
    let length = chars.len() as f64;
    let mut total = 0.0;
    for count in counts {
        let p = count as f64 / length;
        total += p * p.log2();
    }
    -total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_last_keeps_separators() {
        assert_eq!(keep_last_digits("4242 4242 4242 4242"), "**** **** **** 4242");
        assert_eq!(keep_last_digits("123-45-6789"), "***-**-6789");
        assert_eq!(keep_last("abc", 4, char::is_alphanumeric), "abc");
    }

    #[test]
    fn entropy_of_uniform_text() {
        assert_eq!(shannon_entropy("abcd"), 2.0);
        assert_eq!(shannon_entropy(""), 0.0);
        assert_eq!(shannon_entropy("aaaa"), 0.0);
    }

    #[test]
    fn every_detector_is_registered_once() {
        let names: Vec<_> = all().iter().map(|d| d.name()).collect();
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(names.len(), unique.len());
        assert_eq!(names.len(), 15);
    }
}
