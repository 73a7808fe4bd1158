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

/// An object's keys: a short list searched in order, a set once it grows.
#[derive(Default)]
struct Seen<'a> {
    few: Vec<Cow<'a, str>>,
    many: Option<FxHashSet<Cow<'a, str>>>,
}

impl<'a> Seen<'a> {
    /// Adds `key`; false if it was there already.
    fn insert(&mut self, key: Cow<'a, str>) -> bool {
        if let Some(set) = &mut self.many {
            return set.insert(key);
        }
        if self.few.contains(&key) {
            return false;
        }
        self.few.push(key);
        if self.few.len() > 16 {
            self.many = Some(self.few.drain(..).collect());
        }
        true
    }
}

/// See the module; `text` must be valid JSON (the caller parsed it first).
pub fn duplicate_key(text: &str) -> Keys<'_> {
    let bytes = text.as_bytes();
    struct Object<'a> {
        keys: Seen<'a>,
        duplicate: Option<&'a str>,
        expect_key: bool,
    }
    // per open container: None for an array
    let mut stack: Vec<Option<Object<'_>>> = Vec::new();
    let mut digits = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() {
            digits += 1;
            if digits >= 19 {
                return Keys::Undecided;
            }
            i += 1;
            continue;
        }
        digits = 0;
        match bytes[i] {
            b'"' => {
                let start = i;
                i += 1;
                let mut escaped = false;
                while bytes[i] != b'"' {
                    if bytes[i] == b'\\' {
                        escaped = true;
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
                if let Some(Some(object)) = stack.last_mut() {
                    if object.expect_key {
                        object.expect_key = false;
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
                        if !object.keys.insert(key) && object.duplicate.is_none() {
                            object.duplicate = Some(literal);
                        }
                    }
                }
                continue;
            }
            b'{' => stack.push(Some(Object { keys: Seen::default(), duplicate: None, expect_key: true })),
            b'[' => stack.push(None),
            b'}' | b']' => {
                if let Some(Some(object)) = stack.pop() {
                    if let Some(duplicate) = object.duplicate {
                        return Keys::Duplicate(duplicate);
                    }
                }
            }
            b',' => {
                if let Some(Some(object)) = stack.last_mut() {
                    object.expect_key = true;
                }
            }
            _ => {}
        }
        i += 1;
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
}
