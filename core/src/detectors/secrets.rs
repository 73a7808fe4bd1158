//! Credentials: cloud keys, private keys, JWTs and common API token formats, as the reference
//! (`tests/reference/detectors/secrets.py`) finds, validates, normalizes and masks them.
//!
//! Token formats with a fixed prefix are validated by their shape and by entropy, so
//! documentation placeholders such as `ghp_xxxxxxxx...` are not reported. Two parts are not
//! regular expressions here: the PEM block (a back-reference and a lazy body: a small matcher
//! that backtracks in the order Python's `re` does) and the JWT header's JSON (Python's own
//! `json.loads`, reached through [`JWT_HEADER_CHECK`]).

use std::sync::{LazyLock, OnceLock};

use super::{find_validated, merge_patterns, py_strip, shannon_entropy, Detector, Invalid, Pattern, Span};

pub fn detectors() -> [&'static dyn Detector; 9] {
    [
        &AWS_ACCESS_KEY,
        &PrivateKey,
        &Jwt,
        &GITHUB_TOKEN,
        &SLACK_TOKEN,
        &STRIPE_KEY,
        &OPENAI_KEY,
        &ANTHROPIC_KEY,
        &GOOGLE_API_KEY,
    ]
}

/// Python's `str.isalnum` for the characters a matched token can hold (ASCII, and the
/// invisible characters the scanner takes out before matching, none of which is alphanumeric).
/// Other non-ASCII characters use Rust's Unicode tables, which differ from Python's for a few
/// (combining marks that are `Alphabetic`); no token value holds them.
fn py_isalnum(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_alphanumeric()
    } else {
        c.is_alphanumeric()
    }
}

/// The reference's `secret_partial(prefix)(text)`: keep the first `keep` characters (the
/// prefix), then mask the alphanumeric characters of the rest except its last four when it has
/// at least sixteen.
fn secret_partial(text: &str, keep: usize) -> String {
    let chars: Vec<char> = text.chars().collect();
    let keep = keep.min(chars.len());
    let (head, body) = chars.split_at(keep);
    let visible = if body.len() >= 16 { 4 } else { 0 };
    let cut = body.len() - visible;
    let mut out: String = head.iter().collect();
    out.extend(body[..cut].iter().map(|&c| if py_isalnum(c) { '*' } else { c }));
    out.extend(&body[cut..]);
    out
}

/// `secret_partial(prefix)`: the prefix is kept only when `text` starts with it.
fn partial_after(text: &str, prefix: &str) -> String {
    secret_partial(text, if text.starts_with(prefix) { prefix.chars().count() } else { 0 })
}

fn ascii(candidate: &[u8]) -> &str {
    // Every candidate of the token patterns is ASCII (the patterns match ASCII bytes only).
    std::str::from_utf8(candidate).unwrap_or("")
}

fn random_enough(token: &[u8], minimum: f64) -> bool {
    shannon_entropy(ascii(token)) >= minimum
}

// --- base64 exactly as CPython 3.11's binascii.a2b_base64 ---------------------------------

fn base64_value(b: u8) -> Option<u8> {
    match b {
        b'A'..=b'Z' => Some(b - b'A'),
        b'a'..=b'z' => Some(b - b'a' + 26),
        b'0'..=b'9' => Some(b - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

/// CPython 3.11's `binascii.a2b_base64(data, strict_mode=strict)` (Modules/binascii.c): None
/// where it raises `binascii.Error`. Not strict: characters outside the alphabet are skipped,
/// a pad ends the input once the quad is complete, pads too early are ignored. Strict: no
/// leading pad, nothing outside the alphabet, nothing after the padding, no data once a pad
/// was seen. Both: the data characters must leave a complete or correctly padded quad.
pub fn a2b_base64(data: &[u8], strict: bool) -> Option<Vec<u8>> {
    if strict && data.first() == Some(&b'=') {
        return None; // "Leading padding not allowed"
    }
    let mut out = Vec::with_capacity(data.len().div_ceil(4) * 3);
    let mut quad_pos = 0u8;
    let mut left: u32 = 0;
    let mut pads = 0u8;
    let mut padding_started = false;
    for (i, &b) in data.iter().enumerate() {
        if b == b'=' {
            padding_started = true;
            if quad_pos >= 2 {
                pads += 1;
                if quad_pos + pads >= 4 {
                    if strict && i + 1 < data.len() {
                        return None; // "Excess data after padding"
                    }
                    return Some(out);
                }
            }
            continue;
        }
        let Some(value) = base64_value(b) else {
            if strict {
                return None; // "Only base64 data is allowed"
            }
            continue;
        };
        if strict && padding_started {
            return None; // "Discontinuous padding not allowed"
        }
        pads = 0;
        let value = u32::from(value);
        match quad_pos {
            0 => {
                left = value;
                quad_pos = 1;
            }
            1 => {
                out.push(((left << 2) | (value >> 4)) as u8);
                left = value & 0x0f;
                quad_pos = 2;
            }
            2 => {
                out.push(((left << 4) | (value >> 2)) as u8);
                left = value & 0x03;
                quad_pos = 3;
            }
            _ => {
                out.push(((left << 6) | value) as u8);
                left = 0;
                quad_pos = 0;
            }
        }
    }
    if quad_pos != 0 {
        return None; // one data character too many, or "Incorrect padding"
    }
    Some(out)
}

/// `base64.b64decode(text, validate=True)` of a str: None where it raises (a non-ASCII str is
/// a `ValueError`, the rest `binascii.Error`).
pub fn b64decode_validate(text: &str) -> Option<Vec<u8>> {
    if !text.is_ascii() {
        return None;
    }
    a2b_base64(text.as_bytes(), true)
}

/// `base64.urlsafe_b64decode(text)`: `-` and `_` read as `+` and `/`, then decoded without
/// validation.
pub fn urlsafe_b64decode(text: &[u8]) -> Option<Vec<u8>> {
    let translated: Vec<u8> = text
        .iter()
        .map(|&b| match b {
            b'-' => b'+',
            b'_' => b'/',
            other => other,
        })
        .collect();
    a2b_base64(&translated, false)
}

// --- aws_access_key -------------------------------------------------------------------------

/// A detector whose value is one pattern's candidate, decided by a validator over its bytes.
pub struct Token {
    name: &'static str,
    patterns: LazyLock<Vec<Pattern>>,
    validate: fn(&[u8]) -> bool,
    partial: fn(&str) -> String,
}

impl Detector for Token {
    fn name(&self) -> &'static str {
        self.name
    }
    fn find(&self, buf: &[u8], out: &mut Vec<Span>) {
        match self.patterns.as_slice() {
            [single] => find_validated(single, buf, self.validate, out),
            patterns => {
                let mut spans = Vec::new();
                for pattern in patterns {
                    find_validated(pattern, buf, self.validate, &mut spans);
                }
                merge_patterns(spans, out);
            }
        }
    }
    fn normalize(&self, text: &str) -> Result<String, Invalid> {
        Ok(py_strip(text).to_owned())
    }
    fn partial(&self, text: &str) -> String {
        (self.partial)(text)
    }
}

const BASE32: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

// `(?:AKIA|ASIA)(?<![A-Za-z0-9]....)[A-Z0-9]{16}(?![A-Za-z0-9])`
static AWS_ACCESS_KEY: Token = Token {
    name: "aws_access_key",
    patterns: LazyLock::new(|| vec![Pattern::new(r"[^A-Za-z0-9]((?:AKIA|ASIA)[A-Z0-9]{16})[^A-Za-z0-9]", true)]),
    validate: |candidate| candidate[4..].iter().all(|b| BASE32.contains(b)),
    // The reference keeps "AKIA" only: an ASIA key is masked from its first character.
    partial: |text| partial_after(text, "AKIA"),
};

// --- private_key ----------------------------------------------------------------------------

/// A match of the reference's
/// `-----BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY((?: BLOCK)?)-----(?P<body>[^\x00]*?)-----END \1PRIVATE KEY\2-----`:
/// its end and its body, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PemMatch {
    end: usize,
    body: (usize, usize),
}

const BEGIN: &[u8] = b"-----BEGIN ";
const PRIVATE_KEY: &[u8] = b"PRIVATE KEY";
const DASHES: &[u8] = b"-----";
const END: &[u8] = b"-----END ";
const BLOCK: &[u8] = b" BLOCK";

fn has_at(text: &[u8], at: usize, piece: &[u8]) -> bool {
    text.get(at..at + piece.len()) == Some(piece)
}

/// The first `needle` in `hay` at or after `from` (the position of its first byte).
fn find_from(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    let first = needle[0];
    let mut at = from;
    while at + needle.len() <= hay.len() {
        let next = at + hay[at..hay.len() - needle.len() + 1].iter().position(|&b| b == first)?;
        if &hay[next..next + needle.len()] == needle {
            return Some(next);
        }
        at = next + 1;
    }
    None
}

/// The PEM pattern matched at exactly `start` of `text`, trying its choices in the order
/// Python's backtracking does: group 1 takes as many `WORD ` units as it can, then fewer;
/// group 2 is ` BLOCK` first, then empty; the lazy body ends at the first closing line that
/// repeats both groups, never crossing a NUL. `whole`: the match must end at the end of
/// `text` (Python's `fullmatch`).
fn pem_match_at(text: &[u8], start: usize, whole: bool) -> Option<PemMatch> {
    if !has_at(text, start, BEGIN) {
        return None;
    }
    let words_start = start + BEGIN.len();
    // where each number of `[A-Z0-9]+ ` units ends, from none up to as many as follow
    let mut ends = vec![words_start];
    let mut at = words_start;
    loop {
        let run = text[at..].iter().take_while(|b| b.is_ascii_uppercase() || b.is_ascii_digit()).count();
        if run == 0 || text.get(at + run) != Some(&b' ') {
            break;
        }
        at += run + 1;
        ends.push(at);
    }
    for &words_end in ends.iter().rev() {
        if !has_at(text, words_end, PRIVATE_KEY) {
            continue;
        }
        let after_key = words_end + PRIVATE_KEY.len();
        for block in [BLOCK, b"".as_slice()] {
            if !block.is_empty() && !has_at(text, after_key, block) {
                continue;
            }
            let after_block = after_key + block.len();
            if !has_at(text, after_block, DASHES) {
                continue;
            }
            let body_start = after_block + DASHES.len();
            let mut closing = Vec::with_capacity(
                END.len() + (words_end - words_start) + PRIVATE_KEY.len() + block.len() + DASHES.len(),
            );
            closing.extend_from_slice(END);
            closing.extend_from_slice(&text[words_start..words_end]);
            closing.extend_from_slice(PRIVATE_KEY);
            closing.extend_from_slice(block);
            closing.extend_from_slice(DASHES);
            // the body never holds a NUL: it ends before the next one
            let limit = text[body_start..].iter().position(|&b| b == 0).map_or(text.len(), |p| body_start + p);
            let found = if whole {
                // only a closing line that ends the text can end a full match
                let body_end = text.len().checked_sub(closing.len()).filter(|&e| e >= body_start && e <= limit);
                body_end.filter(|&e| text[e..] == closing[..])
            } else {
                // the closing line holds no NUL either: it ends before the next one too
                find_from(&text[..limit], body_start, &closing)
            };
            if let Some(body_end) = found {
                return Some(PemMatch { end: body_end + closing.len(), body: (body_start, body_end) });
            }
        }
    }
    None
}

/// Python's `_PEM.fullmatch(text)`.
fn pem_fullmatch(text: &str) -> Option<PemMatch> {
    pem_match_at(text.as_bytes(), 0, true)
}

/// The reference's `_pem_body`: the base64 payload of a PEM block (lines holding `:` or
/// starting with `=` dropped, escaped line breaks read as line breaks), decoded.
fn pem_body(block: &str) -> Option<Vec<u8>> {
    let found = pem_fullmatch(block)?;
    let body = block[found.body.0..found.body.1].replace("\\n", "\n");
    let mut payload = String::with_capacity(body.len());
    for line in body.split('\n') {
        let stripped = py_strip(line);
        if !line.contains(':') && !stripped.starts_with('=') {
            payload.push_str(stripped);
        }
    }
    b64decode_validate(&payload)
}

fn pem_valid(candidate: &[u8]) -> bool {
    match std::str::from_utf8(candidate) {
        Ok(text) => pem_body(text).is_some_and(|body| body.len() >= 32),
        Err(_) => false,
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    out
}

pub struct PrivateKey;

impl Detector for PrivateKey {
    fn name(&self) -> &'static str {
        "private_key"
    }
    /// `_PEM.search` from each position (the pattern has no look-behind), a rejected block
    /// retried one byte on, as the reference's loop does.
    fn find(&self, buf: &[u8], out: &mut Vec<Span>) {
        let mut position = 0;
        while let Some(start) = find_from(buf, position, BEGIN) {
            match pem_match_at(buf, start, false) {
                Some(found) if pem_valid(&buf[start..found.end]) => {
                    out.push((start, found.end));
                    position = found.end;
                }
                _ => position = start + 1,
            }
        }
    }
    /// `(_pem_body(text) or text.encode()).hex()`: an empty body is falsy, so it gives the
    /// text's own bytes too.
    fn normalize(&self, text: &str) -> Result<String, Invalid> {
        Ok(match pem_body(text) {
            Some(body) if !body.is_empty() => hex(&body),
            _ => hex(text.as_bytes()),
        })
    }
    /// The block's lines kept, its body replaced by `***`; a text that is not a whole block
    /// is masked entirely.
    fn partial(&self, text: &str) -> String {
        match pem_fullmatch(text) {
            Some(found) => format!("{}\n***\n{}", &text[..found.body.0], &text[found.body.1..]),
            None => "*".repeat(text.chars().count()),
        }
    }
}

// --- jwt ------------------------------------------------------------------------------------

/// Whether the decoded JWT header is JSON that Python's `json.loads` reads as a dict whose
/// `alg` is a str. The extension module sets it at import to a function calling Python's own
/// `json` (JSON's corner cases, and the encodings `json.loads` detects in bytes, stay exactly
/// the reference's). Unset (plain Rust use, no Python), every header is taken as valid: a token
/// is then reported rather than missed.
pub static JWT_HEADER_CHECK: OnceLock<fn(&[u8]) -> bool> = OnceLock::new();

/// The reference's `_jwt_valid`: the first part, padded, base64url-decoded, is a JSON object
/// with a string `alg`.
fn jwt_valid(candidate: &[u8]) -> bool {
    let part = candidate.split(|&b| b == b'.').next().unwrap_or_default();
    let mut padded = part.to_vec();
    padded.resize(part.len() + (4 - part.len() % 4) % 4, b'=');
    match urlsafe_b64decode(&padded) {
        Some(header) => match JWT_HEADER_CHECK.get() {
            Some(check) => check(&header),
            None => true,
        },
        None => false,
    }
}

pub struct Jwt;

// `eyJ(?<![A-Za-z0-9_-]...)[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*(?![A-Za-z0-9_-])`
static JWT: LazyLock<Pattern> = LazyLock::new(|| {
    Pattern::new(r"[^A-Za-z0-9_-](eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*)[^A-Za-z0-9_-]", true)
});

impl Detector for Jwt {
    fn name(&self) -> &'static str {
        "jwt"
    }
    fn find(&self, buf: &[u8], out: &mut Vec<Span>) {
        find_validated(&JWT, buf, jwt_valid, out);
    }
    fn normalize(&self, text: &str) -> Result<String, Invalid> {
        Ok(py_strip(text).to_owned())
    }
    fn partial(&self, text: &str) -> String {
        partial_after(text, "eyJ")
    }
}

// --- prefixed API tokens --------------------------------------------------------------------

/// `prefixed_token(..., prefix=n)`: `secret_partial(text[:n])(text)` keeps the first `n`
/// characters (all of a shorter text).
fn keep_first(text: &str, n: usize) -> String {
    secret_partial(text, n)
}

fn after_first(candidate: &[u8], separator: u8) -> &[u8] {
    match candidate.iter().position(|&b| b == separator) {
        Some(i) => &candidate[i + 1..],
        None => &candidate[candidate.len()..],
    }
}

// `gh[pousr]_(?<![A-Za-z0-9_]....)[A-Za-z0-9]{36,251}(?![A-Za-z0-9_])` and
// `github_pat_(?<![A-Za-z0-9_].{11})[A-Za-z0-9_]{22,244}(?![A-Za-z0-9_])`
static GITHUB_TOKEN: Token = Token {
    name: "github_token",
    patterns: LazyLock::new(|| {
        vec![
            Pattern::new(r"[^A-Za-z0-9_](gh[pousr]_[A-Za-z0-9]{36,251})[^A-Za-z0-9_]", true),
            Pattern::new(r"[^A-Za-z0-9_](github_pat_[A-Za-z0-9_]{22,244})[^A-Za-z0-9_]", true),
        ]
    }),
    validate: |candidate| random_enough(after_first(candidate, b'_'), 3.0),
    // `prefix=lambda text: text.index("_") + 1` (`ghp_`, `github_`); every value holds a `_`
    // (Python would raise on a text without one: the whole text is masked here)
    partial: |text| secret_partial(text, text.chars().position(|c| c == '_').map_or(0, |i| i + 1)),
};

// `xox[baprs]-(?<![A-Za-z0-9_-].{5})[A-Za-z0-9-]{10,250}(?![A-Za-z0-9_-])`
static SLACK_TOKEN: Token = Token {
    name: "slack_token",
    patterns: LazyLock::new(|| {
        vec![Pattern::new(r"[^A-Za-z0-9_-](xox[baprs]-[A-Za-z0-9-]{10,250})[^A-Za-z0-9_-]", true)]
    }),
    validate: slack_valid,
    partial: |text| keep_first(text, 5),
};

fn slack_valid(candidate: &[u8]) -> bool {
    let parts: Vec<&[u8]> = candidate.split(|&b| b == b'-').collect();
    parts.len() >= 3 && parts[1..].iter().all(|part| !part.is_empty()) && random_enough(&parts[1..].concat(), 3.0)
}

// `[rs]k_(?:live|test)_(?<![A-Za-z0-9_].{8})[A-Za-z0-9]{16,247}(?![A-Za-z0-9_])`
static STRIPE_KEY: Token = Token {
    name: "stripe_key",
    patterns: LazyLock::new(|| {
        vec![Pattern::new(r"[^A-Za-z0-9_]([rs]k_(?:live|test)_[A-Za-z0-9]{16,247})[^A-Za-z0-9_]", true)]
    }),
    validate: |candidate| random_enough(&candidate[8..], 3.0),
    partial: |text| keep_first(text, 8),
};

// `sk-(?<![A-Za-z0-9_-]...)(?!ant-)(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,250}(?![A-Za-z0-9_-])`:
// the look-ahead `(?!ant-)` fails the match at that start, which is what a rejected candidate
// does too (the search goes on one byte on), so it is checked with the validator.
static OPENAI_KEY: Token = Token {
    name: "openai_key",
    patterns: LazyLock::new(|| {
        vec![Pattern::new(r"[^A-Za-z0-9_-](sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,250})[^A-Za-z0-9_-]", true)]
    }),
    validate: |candidate| !candidate.starts_with(b"sk-ant-") && openai_valid(candidate),
    partial: |text| keep_first(text, 3),
};

/// Keys carry `T3BlbkFJ` (base64 of "OpenAI"); other long random sk- keys are accepted too.
fn openai_valid(candidate: &[u8]) -> bool {
    let body = after_first(candidate, b'-');
    body.windows(8).any(|w| w == b"T3BlbkFJ") || (body.len() >= 40 && random_enough(body, 4.0))
}

// `sk-ant-(?<![A-Za-z0-9_-].{7})[a-z]{3,8}[0-9]{2}-[A-Za-z0-9_-]{40,250}(?![A-Za-z0-9_-])`
static ANTHROPIC_KEY: Token = Token {
    name: "anthropic_key",
    patterns: LazyLock::new(|| {
        vec![Pattern::new(r"[^A-Za-z0-9_-](sk-ant-[a-z]{3,8}[0-9]{2}-[A-Za-z0-9_-]{40,250})[^A-Za-z0-9_-]", true)]
    }),
    // `candidate.split("-", 3)[3]`: what follows the third `-`
    validate: |candidate| random_enough(after_first(after_first(after_first(candidate, b'-'), b'-'), b'-'), 3.0),
    partial: |text| keep_first(text, 7),
};

// `AIza(?<![A-Za-z0-9_-]....)[0-9A-Za-z_-]{35}(?![A-Za-z0-9_-])`
static GOOGLE_API_KEY: Token = Token {
    name: "google_api_key",
    patterns: LazyLock::new(|| vec![Pattern::new(r"[^A-Za-z0-9_-](AIza[0-9A-Za-z_-]{35})[^A-Za-z0-9_-]", true)]),
    validate: |candidate| random_enough(&candidate[4..], 3.0),
    partial: |text| keep_first(text, 4),
};

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in for Python's `json.loads` check: an object with `"alg":"`.
    fn header_stand_in(header: &[u8]) -> bool {
        header.starts_with(b"{") && header.ends_with(b"}") && header.windows(7).any(|w| w == b"\"alg\":\"")
    }

    fn found(detector: &dyn Detector, text: &str) -> Vec<String> {
        let _ = JWT_HEADER_CHECK.set(header_stand_in);
        crate::detectors::found_in(detector, text)
    }

    fn assert_finds(detector: &dyn Detector, value: &str) {
        assert_eq!(found(detector, value), [value], "{value}");
        assert_eq!(found(detector, &format!("see {value} here")), [value], "{value}");
    }

    fn assert_rejects(detector: &dyn Detector, text: &str) {
        assert!(found(detector, text).is_empty(), "{text}");
    }

    const PEM_PAYLOAD: &str = "dG9vbGdhdGUgZXhhbXBsZTogYmFzZTY0IHRoYXQgaXMgbm8gcmVhbCBrZXk=";

    fn pem(words: &str, block: &str, body: &str) -> String {
        format!("-----BEGIN {words}PRIVATE KEY{block}-----{body}-----END {words}PRIVATE KEY{block}-----")
    }

    #[test]
    fn base64_as_cpython() {
        let strict = |s: &str| a2b_base64(s.as_bytes(), true);
        assert_eq!(strict(""), Some(vec![]));
        assert_eq!(strict("="), None);
        assert_eq!(strict("AAAA="), Some(vec![0, 0, 0]));
        assert_eq!(strict("AAAA==="), Some(vec![0, 0, 0]));
        assert_eq!(strict("AA="), None);
        assert_eq!(strict("AA=="), Some(vec![0]));
        assert_eq!(strict("AB=="), Some(vec![0]));
        assert_eq!(strict("AA==A"), None);
        assert_eq!(strict("AAA="), Some(vec![0, 0]));
        assert_eq!(strict("AAA=="), None);
        assert_eq!(strict("AA=A="), None);
        assert_eq!(strict("AAAAA"), None);
        assert_eq!(strict("AAAA=A"), None);
        assert_eq!(strict("Zm9v YmFy"), None);
        assert_eq!(strict("Zm9vYmFy"), Some(b"foobar".to_vec()));
        let loose = |s: &str| a2b_base64(s.as_bytes(), false);
        assert_eq!(loose("Zm9v YmFy"), Some(b"foobar".to_vec()));
        assert_eq!(loose("=Zm8="), Some(b"fo".to_vec()));
        assert_eq!(loose("Zm8=junk"), Some(b"fo".to_vec()));
        assert_eq!(loose("Zm9=v"), Some(b"fo".to_vec()));
        assert_eq!(loose("Z==="), None);
        assert_eq!(urlsafe_b64decode(b"-_-_"), Some(vec![0xfb, 0xff, 0xbf]));
        assert_eq!(b64decode_validate("Zm9v\u{e9}"), None);
    }

    #[test]
    fn aws_keys() {
        assert_finds(&AWS_ACCESS_KEY, "AKIAIOSFODNN7EXAMPLE");
        assert_finds(&AWS_ACCESS_KEY, "ASIAIOSFODNN7EXAMPLE");
        for fake in ["AKIA0000000000000000", "AKIAIOSFODNN7EXAMPL", "xAKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLEx"] {
            assert_rejects(&AWS_ACCESS_KEY, fake);
        }
        assert_eq!(AWS_ACCESS_KEY.partial("AKIAIOSFODNN7EXAMPLE"), "AKIA************MPLE");
        assert_eq!(AWS_ACCESS_KEY.partial("ASIAIOSFODNN7EXAMPLE"), "****************MPLE");
        assert_eq!(AWS_ACCESS_KEY.normalize(" AKIA\u{3000}").unwrap(), "AKIA");
    }

    #[test]
    fn private_keys() {
        for (words, block) in
            [("", ""), ("RSA ", ""), ("EC ", ""), ("OPENSSH ", ""), ("PGP ", " BLOCK"), ("A B 3 ", "")]
        {
            let key = pem(words, block, &format!("\n{PEM_PAYLOAD}\n"));
            assert_finds(&PrivateKey, &key);
            let escaped = pem(words, block, &format!("\\n{}\\n{}\\n", &PEM_PAYLOAD[..20], &PEM_PAYLOAD[20..]));
            assert_finds(&PrivateKey, &escaped);
        }
        // headers and checksum lines are dropped, lines stripped (Unicode spaces too)
        let headers = pem("RSA ", "", &format!("\nProc-Type: 4,ENCRYPTED\n\u{3000}{PEM_PAYLOAD} \n=abcd\n"));
        assert_finds(&PrivateKey, &headers);
        assert_rejects(&PrivateKey, &pem("RSA ", "", "\n...\n"));
        assert_rejects(&PrivateKey, &pem("", "", "\nQUJD\n")); // too short
        assert_rejects(
            &PrivateKey,
            &format!("-----BEGIN RSA PRIVATE KEY-----\n{PEM_PAYLOAD}\n-----END EC PRIVATE KEY-----"),
        );
        assert_rejects(
            &PrivateKey,
            &format!("-----BEGIN PRIVATE KEY BLOCK-----\n{PEM_PAYLOAD}\n-----END PRIVATE KEY-----"),
        );
        assert_rejects(
            &PrivateKey,
            &format!("-----BEGIN PRIVATE KEY-----\n{PEM_PAYLOAD}\0\n-----END PRIVATE KEY-----"),
        );
        assert_rejects(&PrivateKey, &format!("-----BEGIN PUBLIC KEY-----\n{PEM_PAYLOAD}\n-----END PUBLIC KEY-----"));
        // the lazy body stops at the first closing line: a bad first block is retried after
        // its start, and the second block is found on its own
        let good = pem("", "", &format!("\n{PEM_PAYLOAD}\n"));
        let text = format!("{} and {good}", pem("", "", "\n...\n"));
        assert_eq!(found(&PrivateKey, &text), [good.as_str()]);
        // a BEGIN inside a block: the outer one is tried first
        let nested = format!("-----BEGIN PRIVATE KEY-----x{good}");
        assert_eq!(found(&PrivateKey, &nested), [good.as_str()]);
    }

    #[test]
    fn pem_groups_backtrack_as_python() {
        // group 1 greedy over whole words, then fewer: "PRIVATE " is itself a word
        let text = pem("PRIVATE KEY ", "", "\nx\n");
        let found = pem_fullmatch(&text).unwrap();
        assert_eq!(&text[found.body.0..found.body.1], "\nx\n");
        assert!(pem_fullmatch(&pem("RSA ", " BLOCK", "")).is_some());
        assert!(
            pem_fullmatch("-----BEGIN PRIVATE KEY----------END PRIVATE KEY----------END PRIVATE KEY-----").is_some()
        );
        assert!(pem_fullmatch("-----BEGIN rsa PRIVATE KEY-----x-----END rsa PRIVATE KEY-----").is_none());
        assert!(pem_fullmatch(&format!("{} ", pem("", "", "x"))).is_none());
    }

    #[test]
    fn pem_normalize_and_partial() {
        let key = pem("", "", &format!("\n{PEM_PAYLOAD}\n"));
        let body = b64decode_validate(PEM_PAYLOAD).unwrap();
        assert_eq!(PrivateKey.normalize(&key).unwrap(), hex(&body));
        assert_eq!(PrivateKey.normalize("é").unwrap(), "c3a9");
        // an empty body is falsy: the text's own bytes
        let empty = pem("", "", "\n\n");
        assert_eq!(PrivateKey.normalize(&empty).unwrap(), hex(empty.as_bytes()));
        assert_eq!(PrivateKey.partial(&key), "-----BEGIN PRIVATE KEY-----\n***\n-----END PRIVATE KEY-----");
        assert_eq!(PrivateKey.partial("-----BEGIN é"), "************");
    }

    #[test]
    fn jwts() {
        assert_finds(
            &Jwt,
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        );
        assert_finds(&Jwt, "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.");
        assert_rejects(&Jwt, "eyJ0eXAiOiJKV1QifQ.eyJzdWIiOiJ4In0.abc");
        assert_rejects(&Jwt, "eyJub3Rqc29u.eyJzdWIiOiJ4In0.abc");
        assert_rejects(&Jwt, "xeyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.");
        // a first part one character past a quad cannot be decoded
        assert_rejects(&Jwt, "eyJhbGciOiJub25lIn0x.eyJzdWIiOiJ4In0.");
        assert_eq!(
            Jwt.partial("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."),
            format!("eyJ{}.{}In0.", "*".repeat(16), "*".repeat(12))
        );
    }

    #[test]
    fn prefixed_tokens() {
        let ghp = concat!("ghp_", "aB3dE5gH7jK9mN1pQ3sT5vX7zA9cE1gI3kM5");
        assert_finds(&GITHUB_TOKEN, ghp);
        assert_rejects(&GITHUB_TOKEN, &format!("ghp_{}", "x".repeat(36)));
        assert_rejects(&GITHUB_TOKEN, &format!("{ghp}_"));
        assert_rejects(&GITHUB_TOKEN, &format!("ghp_{}", "aB3dE5gH7j".repeat(26)));
        let pat = concat!("github_pat_", "11AB3dE5gH7jK9mN1pQ3sT5_vX7zA9cE1gI3kM5");
        assert_finds(&GITHUB_TOKEN, pat);
        assert_eq!(GITHUB_TOKEN.partial(ghp), format!("ghp_{}3kM5", "*".repeat(32)));
        assert!(GITHUB_TOKEN.partial(pat).starts_with("github_***_"));

        assert_finds(&SLACK_TOKEN, concat!("xoxb-", "123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"));
        assert_rejects(&SLACK_TOKEN, &format!("xoxb-{}", "a".repeat(30)));
        assert_rejects(&SLACK_TOKEN, "xoxb-1234567890abcdef--x");

        assert_finds(&STRIPE_KEY, concat!("sk_live_", "4eC39HqLyjWDarjtT1zdp7dc"));
        assert_rejects(&STRIPE_KEY, &format!("sk_live_{}", "x".repeat(24)));
        assert_eq!(
            STRIPE_KEY.partial(concat!("sk_live_", "4eC39HqLyjWDarjtT1zdp7dc")),
            format!("sk_live_{}p7dc", "*".repeat(20))
        );

        let openai = concat!("sk-proj-", "Ab3De5Gh7Jk9Mn1Pq3St5Vx7Za9Ce1Gi3Km5Oq7T3BlbkFJXy2Wv4Ut6Sr8Qp0On2Ml");
        assert_finds(&OPENAI_KEY, openai);
        assert_rejects(&OPENAI_KEY, &format!("sk-{}", "a".repeat(48)));
        assert_rejects(&OPENAI_KEY, concat!("task-", "Ab3De5Gh7Jk9Mn1Pq3StT3BlbkFJXy2Wv4Ut6Sr8Qp0On2Ml"));
        let anthropic =
            concat!("sk-ant-api03-", "Zx8Yw7Vu6Ts5Rq4Po3Nm2Lk1Jh0Gf9Ed8Cb7Aa6Zy5Xw4Vu3Ts2Rq1Po0NmLkJhGfEdCbA-xyzW");
        assert_rejects(&OPENAI_KEY, anthropic); // `(?!ant-)`
        assert_finds(&ANTHROPIC_KEY, anthropic);
        assert_rejects(&ANTHROPIC_KEY, &format!("sk-ant-api03-{}", "a".repeat(48)));
        assert_rejects(&ANTHROPIC_KEY, &format!("sk-ant-abcdefghi03-{}", &anthropic[13..]));

        assert_finds(&GOOGLE_API_KEY, concat!("AIza", "SyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY"));
        assert_rejects(&GOOGLE_API_KEY, &format!("AIza{}", "0".repeat(35)));
        assert_rejects(&GOOGLE_API_KEY, concat!("AIza", "SyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWYx"));
        assert_eq!(GOOGLE_API_KEY.partial("AIza"), "AIza");
        assert_eq!(GOOGLE_API_KEY.normalize("\tAIza \n").unwrap(), "AIza");
    }
}
