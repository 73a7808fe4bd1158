//! Duplicate keys in JSON text, found without building the values: the strict JSON reader
//! (`rules/protocols/jsonbody.py`) parses with Python's C decoder and asks this module which
//! key, if any, repeats inside one object, as its old per-object hook did: objects are checked
//! as they close (inner ones first), and in an object the first key that repeats an earlier one
//! is reported. Keys compare as Python strings do, escapes decoded (`"a"` and `"\u0061"` are the
//! same key), as UTF-16 code units (a surrogate pair and the character it encodes agree).

use std::borrow::Cow;

use rustc_hash::FxHashSet;

/// What the check found.
#[derive(Debug, PartialEq, Eq)]
pub enum Keys<'a> {
    /// No object repeats a key.
    Unique,
    /// The source text of the first duplicate key (with its quotes), in the order described.
    Duplicate(&'a str),
    /// A key escapes a lone surrogate, which no Rust string holds, or a number has 19 digits or
    /// more (beyond 64 bits, readers differ: orjson reads a float): the caller decides.
    Undecided,
}

/// Past this many keys, an object's keys go into a set (until then a list is searched).
const FEW: usize = 16;

/// An open container: an array, or an object and what its keys are so far.
struct Open<'a> {
    object: bool,
    /// Where the object's keys start in the shared list of the open objects' keys.
    start: usize,
    /// The object's keys once there are more than `FEW` of them.
    many: Option<FxHashSet<Cow<'a, str>>>,
    duplicate: Option<&'a str>,
    expect_key: bool,
}

impl<'a> Open<'a> {
    fn new(object: bool, start: usize) -> Self {
        Open { object, start, many: None, duplicate: None, expect_key: object }
    }

    /// Adds `key` to the object's keys (`keys[start..]`, or the set); false if it was there.
    fn insert(&mut self, keys: &mut Vec<Cow<'a, str>>, key: Cow<'a, str>) -> bool {
        if let Some(set) = &mut self.many {
            return set.insert(key);
        }
        if keys[self.start..].contains(&key) {
            return false;
        }
        keys.push(key);
        if keys.len() - self.start > FEW {
            self.many = Some(keys.drain(self.start..).collect());
        }
        true
    }
}

/// What a byte starts outside strings.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Other,
    Digit,
    Quote,
    OpenObject,
    OpenArray,
    Close,
    Comma,
}

const CLASSES: [Class; 256] = {
    let mut classes = [Class::Other; 256];
    let mut digit = b'0';
    while digit <= b'9' {
        classes[digit as usize] = Class::Digit;
        digit += 1;
    }
    classes[b'"' as usize] = Class::Quote;
    classes[b'{' as usize] = Class::OpenObject;
    classes[b'[' as usize] = Class::OpenArray;
    classes[b'}' as usize] = Class::Close;
    classes[b']' as usize] = Class::Close;
    classes[b',' as usize] = Class::Comma;
    classes
};

/// The offset of the first `"` or backslash in `bytes` (its length if none): eight bytes at a time,
/// each word tested for either byte without a branch per byte.
fn quote_or_backslash(bytes: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |word: u64| word.wrapping_sub(ONES) & !word & HIGHS;
    let mut i = 0;
    while i + 8 <= bytes.len() {
        let word = u64::from_le_bytes(bytes[i..i + 8].try_into().expect("eight bytes"));
        // the lowest flagged byte is exact (flags above it may be borrows of it)
        let found = zero_byte(word ^ (ONES * u64::from(b'"'))) | zero_byte(word ^ (ONES * u64::from(b'\\')));
        if found != 0 {
            return i + (found.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    i + bytes[i..].iter().position(|&b| b == b'"' || b == b'\\').unwrap_or(bytes.len() - i)
}

/// See the module; `text` must be valid JSON (the caller parsed it first).
pub fn duplicate_key(text: &str) -> Keys<'_> {
    let bytes = text.as_bytes();
    let mut stack: Vec<Open<'_>> = Vec::new();
    // the keys of the open objects, each object's after those of the objects around it
    let mut keys: Vec<Cow<'_, str>> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match CLASSES[usize::from(bytes[i])] {
            Class::Other => i += 1,
            Class::Digit => {
                let start = i;
                while i < bytes.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
                if i - start >= 19 {
                    return Keys::Undecided;
                }
            }
            Class::Quote => {
                let start = i;
                i += 1;
                let mut escaped = false;
                loop {
                    i += quote_or_backslash(&bytes[i..]);
                    if bytes[i] == b'"' {
                        break;
                    }
                    escaped = true;
                    i += 2; // the backslash and the character it escapes
                }
                i += 1;
                if let Some(open) = stack.last_mut() {
                    if open.expect_key {
                        open.expect_key = false;
                        let literal = &text[start..i];
                        let inner = &literal[1..literal.len() - 1];
                        let key = if escaped {
                            match decode(inner) {
                                Some(decoded) => Cow::Owned(decoded),
                                None => return Keys::Undecided,
                            }
                        } else {
                            Cow::Borrowed(inner)
                        };
                        if !open.insert(&mut keys, key) && open.duplicate.is_none() {
                            open.duplicate = Some(literal);
                        }
                    }
                }
            }
            Class::OpenObject => {
                stack.push(Open::new(true, keys.len()));
                i += 1;
            }
            Class::OpenArray => {
                stack.push(Open::new(false, keys.len()));
                i += 1;
            }
            Class::Close => {
                if let Some(open) = stack.pop() {
                    if open.object {
                        if let Some(duplicate) = open.duplicate {
                            return Keys::Duplicate(duplicate);
                        }
                        keys.truncate(open.start);
                    }
                }
                i += 1;
            }
            Class::Comma => {
                if let Some(open) = stack.last_mut() {
                    open.expect_key = open.object;
                }
                i += 1;
            }
        }
    }
    Keys::Unique
}

/// A JSON string's contents (between the quotes), escapes decoded; None if it escapes a lone
/// surrogate.
fn decode(inner: &str) -> Option<String> {
    let mut units: Vec<u16> = Vec::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            let mut buf = [0u16; 2];
            units.extend_from_slice(c.encode_utf16(&mut buf));
            continue;
        }
        match chars.next() {
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                units.push(u16::from_str_radix(&hex, 16).ok()?);
            }
            Some('b') => units.push(0x08),
            Some('f') => units.push(0x0c),
            Some('n') => units.push(0x0a),
            Some('r') => units.push(0x0d),
            Some('t') => units.push(0x09),
            Some(other) => units.push(other as u16),
            None => {}
        }
    }
    String::from_utf16(&units).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_inner_objects_first() {
        assert_eq!(duplicate_key(r#"{"a": 1, "b": 2}"#), Keys::Unique);
        assert_eq!(duplicate_key(r#"{"a": 1, "a": 2}"#), Keys::Duplicate(r#""a""#));
        assert_eq!(duplicate_key(r#"{"a": 1, "a": {"b": 1, "b": 2}}"#), Keys::Duplicate(r#""b""#));
        assert_eq!(duplicate_key(r#"[{"x": "a", "y": "a"}, {"k": 1, "\u006b": 2}]"#), Keys::Duplicate(r#""\u006b""#));
        assert_eq!(duplicate_key(r#"{"\ud83d\ude00": 1, "😀": 2}"#), Keys::Duplicate(r#""😀""#));
        assert_eq!(duplicate_key(r#"{"a\"": 1, "a\u0022": 2, "q": "a,\"b\":"}"#), Keys::Duplicate(r#""a\u0022""#));
        assert_eq!(duplicate_key(r#"["a", "a", {"s": ["a", "a"]}]"#), Keys::Unique);
        assert_eq!(duplicate_key(r#"{"\ud800": 1}"#), Keys::Undecided);
        assert_eq!(duplicate_key("[1180591620717411303424]"), Keys::Undecided);
        assert_eq!(duplicate_key(r#"["1180591620717411303424", 123456789012345678]"#), Keys::Unique);
        let many: Vec<String> = (0..40).map(|i| format!("\"k{i}\": {i}")).collect();
        assert_eq!(duplicate_key(&format!("{{{}, \"k3\": 0}}", many.join(", "))), Keys::Duplicate("\"k3\""));
    }

    #[test]
    fn keys_are_per_object_across_nesting() {
        // the same key in an inner object, a sibling and the outer one is no duplicate
        assert_eq!(
            duplicate_key(r#"{"a": {"a": 1, "b": {"a": 2}}, "b": [{"a": 3}, {"a": 4}], "c": {"a": 5}}"#),
            Keys::Unique
        );
        // an outer duplicate after inner objects came and went
        assert_eq!(duplicate_key(r#"{"a": {"x": 1, "y": 2}, "b": {"x": 3}, "a": 0}"#), Keys::Duplicate(r#""a""#));
        // an object past FEW keys (a set) holding objects, then repeating its first key
        let members: Vec<String> = (0..20).map(|i| format!("\"k{i}\": {{\"k{i}\": [{{\"k0\": 1}}]}}")).collect();
        let text = format!("{{{}}}", members.join(", "));
        assert_eq!(duplicate_key(&text), Keys::Unique);
        let text = format!("{{{}, \"k0\": 1}}", members.join(", "));
        assert_eq!(duplicate_key(&text), Keys::Duplicate("\"k0\""));
        // escapes across the eight-byte words the scan reads, and a backslash right before a quote
        assert_eq!(duplicate_key(r#"{"abcdefg\\": 1, "abcdefg\u005c": 2}"#), Keys::Duplicate(r#""abcdefg\u005c""#));
        assert_eq!(duplicate_key(r#"["0123456789abcdef\"", {"k": "\\", "k\u0000": 1}]"#), Keys::Unique);
        assert_eq!(
            duplicate_key(r#"{"s": "0123456789012345678901234567890", "n": 1234567890123456789}"#),
            Keys::Undecided
        );
    }

    #[test]
    fn quotes_and_backslashes_are_found_where_they_are() {
        let alphabet = [b'a', b'"', b'\\', 0xc3, 0xa9, 0x80, 0xff, b'!', b'#', b'[', b'\\' - 1, b'"' + 1];
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        for length in 0..40 {
            for _ in 0..200 {
                let bytes: Vec<u8> = (0..length)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        alphabet[(state % alphabet.len() as u64) as usize]
                    })
                    .collect();
                let expected = bytes.iter().position(|&b| b == b'"' || b == b'\\').unwrap_or(bytes.len());
                assert_eq!(quote_or_backslash(&bytes), expected, "{bytes:?}");
            }
        }
    }
}
