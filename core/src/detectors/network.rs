//! Network identifiers: IPv4 and IPv6 addresses, validated and printed as CPython 3.11's
//! `ipaddress.ip_address` does (its parser and `str()` are ported below).

use std::sync::LazyLock;

use regex::bytes::Regex;

use super::{merge_patterns, py_strip, Detector, Invalid, Pattern, Span};

pub fn detectors() -> [&'static dyn Detector; 1] {
    [&IpAddress]
}

// `[0-9](?<![0-9.].)[0-9]{0,2}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}(?![0-9]|\.[0-9])`
const IPV4_SOURCE: &str = r"[^0-9.]([0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3})(?:[^0-9.]|\.[^0-9])";
// `[0-9A-Fa-f:](?<![\w:.].)(?:(?<=:)|[0-9A-Fa-f]{0,3}:)(?:[0-9A-Fa-f]{0,4}:){1,6}`
// `(?:(?:[0-9]{1,3}\.){3}[0-9]{1,3}|[0-9A-Fa-f]{1,4})?(?![\w:]|\.[0-9])`: the look-behind on
// the first character chooses the branch. A ':' first tries the empty branch, and only then a
// first group of up to three digits (the lazy `??` keeps that order); a digit first is the
// second branch, its first group of one to four digits.
const IPV6_SOURCE: &str = r"[^A-Za-z0-9_:.]((?::(?:[0-9A-Fa-f]{0,3}:)??|[0-9A-Fa-f]{1,4}:)(?:[0-9A-Fa-f]{0,4}:){1,6}(?:(?:[0-9]{1,3}\.){3}[0-9]{1,3}|[0-9A-Fa-f]{1,4})?)(?:[^A-Za-z0-9_:.]|\.[^0-9])";

static IPV4: LazyLock<Pattern> = LazyLock::new(|| Pattern::new(IPV4_SOURCE, true));
static IPV6: LazyLock<Pattern> = LazyLock::new(|| Pattern::new(IPV6_SOURCE, true));

/// The two patterns searched without capture groups (three times cheaper). The value is the
/// match without its one-byte prefix and its suffix, whose length the match shows: a value
/// never ends with '.', so a '.' just before the match's last byte is the two-byte
/// `\.[^0-9]`. Nor does the order of the alternatives matter: every character a value can
/// hold fails the suffix, so a match from a given start can only end in one place.
struct Fast(Regex);

static FAST_IPV4: LazyLock<Fast> = LazyLock::new(|| Fast::new(IPV4_SOURCE));
static FAST_IPV6: LazyLock<Fast> = LazyLock::new(|| Fast::new(IPV6_SOURCE));

impl Fast {
    fn new(source: &str) -> Self {
        Fast(Regex::new(&format!("(?-u){source}")).expect("detector patterns compile"))
    }

    /// `Pattern::search`: the value of the leftmost match whose value starts at or after
    /// `position`.
    fn search(&self, buf: &[u8], position: usize) -> Option<Span> {
        let at = position.saturating_sub(1);
        if at >= buf.len() {
            return None;
        }
        let found = self.0.find_at(buf, at)?;
        let end = if buf[found.end() - 2] == b'.' { found.end() - 2 } else { found.end() - 1 };
        Some((found.start() + 1, end))
    }

    /// `find_validated` with this search.
    fn find(&self, buf: &[u8], out: &mut Vec<Span>) {
        let mut position = 0;
        while let Some((start, end)) = self.search(buf, position) {
            if ip_valid(&buf[start..end]) {
                out.push((start, end));
                position = end;
            } else {
                position = start + 1;
            }
        }
    }
}

/// An address `ipaddress.ip_address` accepts: IPv4, or IPv6 with its scope id (`%eth0`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Address<'a> {
    V4([u8; 4]),
    V6([u16; 8], Option<&'a str>),
}

/// `_BaseV4._parse_octet`: 1 to 3 ASCII digits, no leading zero, at most 255.
fn parse_octet(octet: &str) -> Result<u8, Invalid> {
    let bytes = octet.as_bytes();
    if bytes.is_empty() || bytes.len() > 3 || !bytes.iter().all(u8::is_ascii_digit) {
        return Err(Invalid);
    }
    if bytes.len() > 1 && bytes[0] == b'0' {
        return Err(Invalid);
    }
    let value = bytes.iter().fold(0u32, |value, &digit| value * 10 + u32::from(digit - b'0'));
    u8::try_from(value).map_err(|_| Invalid)
}

/// `_BaseV4._ip_int_from_string` (and `IPv4Address`'s `/` check, implied: `/` is no digit).
fn parse_v4(text: &str) -> Result<[u8; 4], Invalid> {
    let mut octets = [0u8; 4];
    let mut count = 0;
    for octet in text.split('.') {
        if count == 4 {
            return Err(Invalid);
        }
        octets[count] = parse_octet(octet)?;
        count += 1;
    }
    if count == 4 {
        Ok(octets)
    } else {
        Err(Invalid)
    }
}

/// `_BaseV6._parse_hextet`, an empty part read as `None` (where the reference never parses
/// it: `::` or an empty end; anywhere else the structure checks reject it).
fn parse_hextet(part: &str) -> Result<Option<u16>, Invalid> {
    let bytes = part.as_bytes();
    if bytes.is_empty() {
        return Ok(None);
    }
    if bytes.len() > 4 || !bytes.iter().all(u8::is_ascii_hexdigit) {
        return Err(Invalid);
    }
    u16::from_str_radix(part, 16).map(Some).map_err(|_| Invalid)
}

/// `_BaseV6._ip_int_from_string`, as eight hextets. Every non-empty part is parsed by the
/// reference whenever the structure is valid, so rejecting a bad one first changes nothing.
fn parse_v6(text: &str) -> Result<[u16; 8], Invalid> {
    if text.is_empty() {
        return Err(Invalid);
    }
    // at most 9 parts (8 hextets and an empty end of `::`); fewer than 3 is no address
    let (body, last) = text.rsplit_once(':').ok_or(Invalid)?;
    let mut parts = [None; 10];
    let mut count = 0;
    for part in body.split(':') {
        if count == 8 {
            return Err(Invalid);
        }
        parts[count] = parse_hextet(part)?;
        count += 1;
    }
    if count < 2 {
        return Err(Invalid);
    }
    if last.contains('.') {
        let [a, b, c, d] = parse_v4(last)?;
        parts[count] = Some(u16::from_be_bytes([a, b]));
        parts[count + 1] = Some(u16::from_be_bytes([c, d]));
        count += 2;
    } else {
        parts[count] = parse_hextet(last)?;
        count += 1;
    }
    if count > 9 {
        return Err(Invalid);
    }
    let mut skip = None;
    for (i, part) in parts.iter().enumerate().take(count - 1).skip(1) {
        if part.is_none() {
            if skip.is_some() {
                return Err(Invalid);
            }
            skip = Some(i);
        }
    }
    let (high, low) = match skip {
        Some(index) => {
            let (mut high, mut low) = (index, count - index - 1);
            if parts[0].is_none() {
                high -= 1;
                if high != 0 {
                    return Err(Invalid);
                }
            }
            if parts[count - 1].is_none() {
                low -= 1;
                if low != 0 {
                    return Err(Invalid);
                }
            }
            if high + low >= 8 {
                return Err(Invalid);
            }
            (high, low)
        }
        None => {
            if count != 8 || parts[0].is_none() || parts[count - 1].is_none() {
                return Err(Invalid);
            }
            (8, 0)
        }
    };
    let mut hextets = [0u16; 8];
    for i in 0..high {
        hextets[i] = parts[i].ok_or(Invalid)?;
    }
    for i in 0..low {
        hextets[8 - low + i] = parts[count - low + i].ok_or(Invalid)?;
    }
    Ok(hextets)
}

/// `ipaddress.ip_address(text)` of a string: IPv4 first, then IPv6 (no `/`; at most one `%`
/// followed by a non-empty scope id, which can hold anything else).
fn ip_address(text: &str) -> Result<Address<'_>, Invalid> {
    if let Ok(octets) = parse_v4(text) {
        return Ok(Address::V4(octets));
    }
    if text.contains('/') {
        return Err(Invalid);
    }
    let (address, scope) = match text.split_once('%') {
        None => (text, None),
        Some((_, scope)) if scope.is_empty() || scope.contains('%') => return Err(Invalid),
        Some((address, scope)) => (address, Some(scope)),
    };
    Ok(Address::V6(parse_v6(address)?, scope))
}

/// `_BaseV6._compress_hextets` joined: the first longest run of two or more zero hextets
/// becomes `::`.
fn compress(hextets: &[u16; 8]) -> String {
    let (mut best_start, mut best_len) = (0, 0);
    let mut run_start = 0;
    let mut run_len = 0;
    for (i, &hextet) in hextets.iter().enumerate() {
        if hextet == 0 {
            if run_len == 0 {
                run_start = i;
            }
            run_len += 1;
            if run_len > best_len {
                (best_start, best_len) = (run_start, run_len);
            }
        } else {
            run_len = 0;
        }
    }
    let join = |groups: &[u16]| groups.iter().map(|g| format!("{g:x}")).collect::<Vec<_>>().join(":");
    if best_len > 1 {
        format!("{}::{}", join(&hextets[..best_start]), join(&hextets[best_start + best_len..]))
    } else {
        join(hextets)
    }
}

/// `str()` of the address: dotted decimal, or compressed hextets (an IPv4-mapped address
/// too: `::ffff:102:304`, as 3.11 prints it) and the scope id.
fn address_string(address: &Address<'_>) -> String {
    match address {
        Address::V4([a, b, c, d]) => format!("{a}.{b}.{c}.{d}"),
        Address::V6(hextets, None) => compress(hextets),
        Address::V6(hextets, Some(scope)) => format!("{}%{scope}", compress(hextets)),
    }
}

/// `_ip_valid`: some letter or digit (`::` alone is noise) and an address.
fn ip_valid(candidate: &[u8]) -> bool {
    candidate.iter().any(u8::is_ascii_alphanumeric)
        && std::str::from_utf8(candidate).is_ok_and(|text| ip_address(text).is_ok())
}

/// Python's `str.isdigit` (Unicode 14.0, CPython 3.11): decimal digits and the other digits
/// (superscripts, circled digits...). Generated with
/// `[c for c in range(0x110000) if chr(c).isdigit()]`, as ranges.
#[rustfmt::skip]
const DIGITS: &[(char, char)] = &[
    ('\u{30}', '\u{39}'), ('\u{B2}', '\u{B3}'), ('\u{B9}', '\u{B9}'), ('\u{660}', '\u{669}'), ('\u{6F0}', '\u{6F9}'),
    ('\u{7C0}', '\u{7C9}'), ('\u{966}', '\u{96F}'), ('\u{9E6}', '\u{9EF}'), ('\u{A66}', '\u{A6F}'),
    ('\u{AE6}', '\u{AEF}'), ('\u{B66}', '\u{B6F}'), ('\u{BE6}', '\u{BEF}'), ('\u{C66}', '\u{C6F}'),
    ('\u{CE6}', '\u{CEF}'), ('\u{D66}', '\u{D6F}'), ('\u{DE6}', '\u{DEF}'), ('\u{E50}', '\u{E59}'),
    ('\u{ED0}', '\u{ED9}'), ('\u{F20}', '\u{F29}'), ('\u{1040}', '\u{1049}'), ('\u{1090}', '\u{1099}'),
    ('\u{1369}', '\u{1371}'), ('\u{17E0}', '\u{17E9}'), ('\u{1810}', '\u{1819}'), ('\u{1946}', '\u{194F}'),
    ('\u{19D0}', '\u{19DA}'), ('\u{1A80}', '\u{1A89}'), ('\u{1A90}', '\u{1A99}'), ('\u{1B50}', '\u{1B59}'),
    ('\u{1BB0}', '\u{1BB9}'), ('\u{1C40}', '\u{1C49}'), ('\u{1C50}', '\u{1C59}'), ('\u{2070}', '\u{2070}'),
    ('\u{2074}', '\u{2079}'), ('\u{2080}', '\u{2089}'), ('\u{2460}', '\u{2468}'), ('\u{2474}', '\u{247C}'),
    ('\u{2488}', '\u{2490}'), ('\u{24EA}', '\u{24EA}'), ('\u{24F5}', '\u{24FD}'), ('\u{24FF}', '\u{24FF}'),
    ('\u{2776}', '\u{277E}'), ('\u{2780}', '\u{2788}'), ('\u{278A}', '\u{2792}'), ('\u{A620}', '\u{A629}'),
    ('\u{A8D0}', '\u{A8D9}'), ('\u{A900}', '\u{A909}'), ('\u{A9D0}', '\u{A9D9}'), ('\u{A9F0}', '\u{A9F9}'),
    ('\u{AA50}', '\u{AA59}'), ('\u{ABF0}', '\u{ABF9}'), ('\u{FF10}', '\u{FF19}'), ('\u{104A0}', '\u{104A9}'),
    ('\u{10A40}', '\u{10A43}'), ('\u{10D30}', '\u{10D39}'), ('\u{10E60}', '\u{10E68}'), ('\u{11052}', '\u{1105A}'),
    ('\u{11066}', '\u{1106F}'), ('\u{110F0}', '\u{110F9}'), ('\u{11136}', '\u{1113F}'), ('\u{111D0}', '\u{111D9}'),
    ('\u{112F0}', '\u{112F9}'), ('\u{11450}', '\u{11459}'), ('\u{114D0}', '\u{114D9}'), ('\u{11650}', '\u{11659}'),
    ('\u{116C0}', '\u{116C9}'), ('\u{11730}', '\u{11739}'), ('\u{118E0}', '\u{118E9}'), ('\u{11950}', '\u{11959}'),
    ('\u{11C50}', '\u{11C59}'), ('\u{11D50}', '\u{11D59}'), ('\u{11DA0}', '\u{11DA9}'), ('\u{16A60}', '\u{16A69}'),
    ('\u{16AC0}', '\u{16AC9}'), ('\u{16B50}', '\u{16B59}'), ('\u{1D7CE}', '\u{1D7FF}'), ('\u{1E140}', '\u{1E149}'),
    ('\u{1E2F0}', '\u{1E2F9}'), ('\u{1E950}', '\u{1E959}'), ('\u{1F100}', '\u{1F10A}'), ('\u{1FBF0}', '\u{1FBF9}'),
];

fn py_isdigit(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_digit();
    }
    let i = DIGITS.partition_point(|&(_, last)| last < c);
    DIGITS.get(i).is_some_and(|&(first, _)| first <= c)
}

/// `_ip_partial`: the first group stays; IPv6 loses everything after its first colon,
/// IPv4 only its digits (a text without a dot gets one, as the reference's `partition` does).
fn ip_partial(text: &str) -> String {
    if let Some((head, tail)) = text.split_once(':') {
        return format!("{head}:{}", "*".repeat(tail.chars().count()));
    }
    let (head, tail) = text.split_once('.').unwrap_or((text, ""));
    let tail: String = tail.chars().map(|c| if py_isdigit(c) { '*' } else { c }).collect();
    format!("{head}.{tail}")
}

pub struct IpAddress;

impl Detector for IpAddress {
    fn name(&self) -> &'static str {
        "ip_address"
    }
    fn find(&self, buf: &[u8], out: &mut Vec<Span>) {
        let mut spans = Vec::new();
        FAST_IPV4.find(buf, &mut spans);
        FAST_IPV6.find(buf, &mut spans);
        merge_patterns(spans, out);
    }
    fn matches_whole(&self, text: &str) -> bool {
        (IPV4.fullmatch(text) || IPV6.fullmatch(text)) && ip_valid(text.as_bytes())
    }
    /// `str(ipaddress.ip_address(text.strip()))`.
    fn normalize(&self, text: &str) -> Result<String, Invalid> {
        ip_address(py_strip(text)).map(|address| address_string(&address))
    }
    fn partial(&self, text: &str) -> String {
        ip_partial(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detectors::framed;

    fn found(text: &str) -> Vec<String> {
        crate::detectors::found_in(&IpAddress, text)
    }

    fn normalized(text: &str) -> Option<String> {
        IpAddress.normalize(text).ok()
    }

    #[test]
    fn examples_alone_and_in_text() {
        for ip in ["192.168.1.20", "2001:db8::8a2e:370:7334", "::1", "::ffff:1.2.3.4", "0.0.0.0"] {
            assert_eq!(found(ip), [ip], "{ip}");
            assert_eq!(found(&format!("see {ip} here")), [ip], "{ip}");
        }
    }

    /// The fast search finds what the framework's `Pattern` (capture groups) does, and the
    /// retry loop is `find_validated`'s.
    #[test]
    fn fast_search_is_the_pattern_search() {
        let pieces = [
            "1.2.3.4",
            "::",
            ":",
            ".",
            "1",
            "a",
            "ffff",
            "10:30:00",
            "::ffff:1.2.3.4",
            "12345",
            "x",
            " ",
            "é",
            "1.2.3.4.5",
            ".5",
            "_",
            "fe80::1",
            "0",
            "::1.2.3.4.",
            "1:2:3:4:5:6:7:8",
            "999.1.1.1",
        ];
        let mut texts = Vec::new();
        for a in pieces {
            for b in pieces {
                for c in [":", ".", "", " ", "1", "::"] {
                    texts.push(format!("{a}{c}{b}"));
                    texts.push(format!("{b}{a}{c}{a}{b}"));
                }
            }
        }
        for text in texts {
            let buf = framed(&text);
            for (fast, pattern) in [(&*FAST_IPV4, &*IPV4), (&*FAST_IPV6, &*IPV6)] {
                let mut locs = pattern.locations();
                for position in 0..buf.len() {
                    assert_eq!(fast.search(&buf, position), pattern.search(&buf, position, &mut locs), "{text:?}");
                }
                let (mut quick, mut slow) = (Vec::new(), Vec::new());
                fast.find(&buf, &mut quick);
                crate::detectors::find_validated(pattern, &buf, ip_valid, &mut slow);
                assert_eq!(quick, slow, "{text:?}");
            }
        }
    }

    #[test]
    fn counter_examples() {
        for fake in ["999.1.1.1", "01.2.3.4", "10:30:00", "00:1A:2B:3C:4D:5E", "::", ":::", "1.2.3", "1.2.3.4.5"] {
            assert!(found(fake).is_empty(), "{fake}");
        }
        // a letter before IPv4 is fine, a dot after it ends a sentence
        assert_eq!(found("x1.2.3.4."), ["1.2.3.4"]);
        assert!(found("v1.2.3.4.5").is_empty());
        assert_eq!(found("a::1"), ["a::1"]);
        // a letter before IPv6 makes it part of a word
        assert!(found("xa::1").is_empty());
    }

    #[test]
    fn tricky_spans() {
        // a valid IPv4 address inside a mapped IPv6 one counts once, as the longer value
        assert_eq!(found("::ffff:10.0.0.1"), ["::ffff:10.0.0.1"]);
        // a rejected greedy candidate is retried one character on
        assert_eq!(found("1:2:3:4:5:6:7:8:9"), Vec::<String>::new());
        assert_eq!(found("1.2.3.4 and 2001:db8::1"), ["1.2.3.4", "2001:db8::1"]);
        // eight groups, or seven and a trailing '::'
        assert_eq!(found("1:2:3:4:5:6:7:8"), ["1:2:3:4:5:6:7:8"]);
        assert_eq!(found(":1:2:3:4:5:6:7"), Vec::<String>::new());
        assert_eq!(found("::1:2:3:4:5:6:7"), ["::1:2:3:4:5:6:7"]);
        // the pattern holds at most eight colons' worth of groups: the reference misses these
        assert_eq!(found("1:2:3:4:5:6:7::"), Vec::<String>::new());
        assert_eq!(found("1::2:3:4:5:6:7:8"), Vec::<String>::new());
    }

    #[test]
    fn ipv4_parsing() {
        assert_eq!(normalized("192.168.1.20"), Some("192.168.1.20".into()));
        assert_eq!(normalized(" 10.0.0.1\n"), Some("10.0.0.1".into()));
        assert_eq!(normalized("\u{1c}10.0.0.1\u{85}"), Some("10.0.0.1".into()));
        for bad in ["", "1.2.3", "1.2.3.4.5", "01.2.3.4", "1.2.3.256", "1.2.3.0000", "1.2.3.4/8", "+1.2.3.4", "1.2.3.٣"]
        {
            assert_eq!(normalized(bad), None, "{bad}");
        }
        assert_eq!(normalized("0.0.0.0"), Some("0.0.0.0".into()));
    }

    #[test]
    fn ipv6_parsing_and_compression() {
        let cases = [
            ("::", "::"),
            ("::1", "::1"),
            ("1::", "1::"),
            ("0:0:0:0:0:0:0:0", "::"),
            ("1:0:0:2:0:0:0:3", "1:0:0:2::3"),
            ("1:0:0:2:3:0:0:4", "1::2:3:0:0:4"),
            ("1:0:2:3:4:5:6:7", "1:0:2:3:4:5:6:7"),
            ("2001:DB8::0001", "2001:db8::1"),
            ("::ffff:1.2.3.4", "::ffff:102:304"),
            ("::1.2.3.4", "::102:304"),
            ("1:2:3:4:5:6:1.2.3.4", "1:2:3:4:5:6:102:304"),
            ("1:2:3:4:5:6:7::", "1:2:3:4:5:6:7:0"),
            ("::2:3:4:5:6:7:8", "0:2:3:4:5:6:7:8"),
            ("fe80::1%eth0", "fe80::1%eth0"),
            ("fe80::1%é 0", "fe80::1%é 0"),
        ];
        for (text, expected) in cases {
            assert_eq!(normalized(text).as_deref(), Some(expected), "{text}");
        }
        for bad in [
            ":",
            "1:2",
            ":::",
            "1:::2",
            "1::2::3",
            ":1::2",
            "1::2:",
            "1:2:3:4:5:6:7:8:9",
            "1:2:3:4:5:6:7",
            ":1:2:3:4:5:6:7",
            "1:2:3:4:5:6:7:",
            "12345::",
            "g::",
            "::1%",
            "::1%a%b",
            "::1/64",
            "::1%a/b",
            "1:2:3:4:5:6:7::8",
            "::1.2.3",
            "::01.2.3.4",
            "1.2.3.4::",
            "::1.2.3.4:5",
            "1::2:3:4:5:6:7:8",
        ] {
            assert_eq!(normalized(bad), None, "{bad}");
        }
    }

    #[test]
    fn partial_masks() {
        assert_eq!(IpAddress.partial("192.168.1.20"), "192.***.*.**");
        assert_eq!(IpAddress.partial("2001:db8::1"), "2001:******");
        assert_eq!(IpAddress.partial("abc"), "abc.");
        assert_eq!(IpAddress.partial("1.2²x٣"), "1.**x*");
        assert_eq!(IpAddress.partial("a:é"), "a:*");
    }

    #[test]
    fn whole_values() {
        assert!(IpAddress.matches_whole("1.2.3.4"));
        assert!(IpAddress.matches_whole("::1"));
        assert!(!IpAddress.matches_whole("::"));
        assert!(!IpAddress.matches_whole("1234"));
        assert!(!IpAddress.matches_whole("fe80::1%eth0"));
    }
}
