//! Scanning the strings of a body with every detector in use, as the reference classifier does:
//! each distinct string once, invisible characters taken out, overlapping values of different
//! detectors resolved (the earliest, then the longest, wins), offsets in characters.

use crate::detectors::{needles, Detector, Span};
use crate::text::{char_index, visible};

/// A value found: in which of the scanned strings, where (characters of the original string),
/// and by which of the scanner's detectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub string: usize,
    pub start: usize,
    pub end: usize,
    pub detector: usize,
}

pub struct Scanner {
    pub detectors: Vec<&'static dyn Detector>,
}

/// Strings framed in one buffer (see `detectors`), and where each one starts.
struct Framed {
    buf: Vec<u8>,
    starts: Vec<usize>,
}

impl Framed {
    fn new<'a>(strings: impl Iterator<Item = &'a str>) -> Self {
        let mut buf = vec![0u8];
        let mut starts = Vec::new();
        for s in strings {
            starts.push(buf.len());
            buf.extend_from_slice(s.as_bytes());
            buf.push(0);
        }
        Framed { buf, starts }
    }

    /// (string index, offset inside it) of a byte of the buffer.
    fn locate(&self, position: usize) -> (usize, usize) {
        let i = self.starts.partition_point(|&start| start <= position) - 1;
        (i, position - self.starts[i])
    }
}

impl Scanner {
    pub fn new(detectors: Vec<&'static dyn Detector>) -> Self {
        Scanner { detectors }
    }

    /// The values in `strings` (each scanned as a string of its own).
    pub fn scan(&self, strings: &[&str]) -> Vec<Found> {
        if strings.is_empty() || self.detectors.is_empty() {
            return Vec::new();
        }
        let seen: Vec<_> = strings.iter().map(|s| visible(s)).collect();
        let framed = Framed::new(seen.iter().map(|v| v.text.as_ref()));
        // per string: (start, end, detector) in bytes of the visible string
        let mut spans: Vec<Vec<(usize, usize, usize)>> = vec![Vec::new(); strings.len()];
        let mut out: Vec<Span> = Vec::new();
        for (d, detector) in self.detectors.iter().enumerate() {
            let needles = needles(detector.name());
            if !needles.is_empty() && !needles.iter().any(|n| memchr::memmem::find(&framed.buf, n.as_bytes()).is_some())
            {
                continue;
            }
            out.clear();
            detector.find(&framed.buf, &mut out);
            for &(start, end) in &out {
                let (i, offset) = framed.locate(start);
                spans[i].push((offset, offset + (end - start), d));
            }
        }
        let mut found = Vec::new();
        for (i, mut here) in spans.into_iter().enumerate() {
            if here.is_empty() {
                continue;
            }
            let text = seen[i].text.as_ref();
            let ascii = text.is_ascii();
            let mut chars: Vec<(usize, usize, usize)> = here
                .drain(..)
                .map(|(start, end, d)| {
                    let (start, end) =
                        if ascii { (start, end) } else { (char_index(text, start), char_index(text, end)) };
                    match &seen[i].kept {
                        Some(kept) => (kept[start], kept[end - 1] + 1, d),
                        None => (start, end, d),
                    }
                })
                .collect();
            if chars.len() > 1 {
                // stable: a tie keeps the order of the detectors
                chars.sort_by(|a, b| a.0.cmp(&b.0).then((b.1 - b.0).cmp(&(a.1 - a.0))));
                let mut kept: Vec<(usize, usize, usize)> = Vec::with_capacity(chars.len());
                for span in chars {
                    if kept.last().is_none_or(|last| span.0 >= last.1) {
                        kept.push(span);
                    }
                }
                chars = kept;
            }
            found.extend(chars.into_iter().map(|(start, end, detector)| Found { string: i, start, end, detector }));
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detectors::by_name;

    fn scanner(names: &[&str]) -> Scanner {
        Scanner::new(names.iter().map(|n| by_name(n).unwrap()).collect())
    }

    #[test]
    fn values_are_found_per_string() {
        let found = scanner(&["us_ssn", "email"]).scan(&["x", "ssn 123-45-6789", "a@example.com and 123-45-6789"]);
        assert_eq!(
            found,
            [
                Found { string: 1, start: 4, end: 15, detector: 0 },
                Found { string: 2, start: 0, end: 13, detector: 1 },
                Found { string: 2, start: 18, end: 29, detector: 0 },
            ]
        );
    }

    #[test]
    fn offsets_are_characters_of_the_original() {
        let found = scanner(&["us_ssn"]).scan(&["é 123-45\u{200b}-6789"]);
        assert_eq!(found, [Found { string: 0, start: 2, end: 14, detector: 0 }]);
    }

    #[test]
    fn no_value_spans_two_strings() {
        assert!(scanner(&["us_ssn"]).scan(&["123-45", "-6789"]).is_empty());
    }
}
