//! Duplicate keys in JSON text, found without building the values: the strict JSON reader
//! (`rules/protocols/jsonbody.py`) parses with Python's C decoder and asks this module which
//! key, if any, repeats inside one object, as its old per-object hook did: objects are checked
//! as they close (inner ones first), and in an object the first key that repeats an earlier one
//! is reported. Keys compare as Python strings do, escapes decoded (`"a"` and `"\u0061"` are the
//! same key), as UTF-16 code units (a surrogate pair and the character it encodes agree).

use rustc_hash::FxHashSet;

/// The source text of the first duplicate key (with its quotes), in the order described above.
/// `text` must be valid JSON (the caller parsed it first).
pub fn duplicate_key(text: &str) -> Option<&str> {
    let bytes = text.as_bytes();
    // per open container: None for an array; for an object its keys, the first duplicate,
    // and whether the next string is a key
    struct Object<'a> {
        keys: FxHashSet<Vec<u16>>,
        duplicate: Option<&'a str>,
        expect_key: bool,
    }
    let mut stack: Vec<Option<Object<'_>>> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
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
                        let key = if escaped {
                            decode(&literal[1..literal.len() - 1])
                        } else {
                            literal[1..literal.len() - 1].encode_utf16().collect()
                        };
                        if !object.keys.insert(key) && object.duplicate.is_none() {
                            object.duplicate = Some(literal);
                        }
                    }
                }
                continue;
            }
            b'{' => stack.push(Some(Object { keys: FxHashSet::default(), duplicate: None, expect_key: true })),
            b'[' => stack.push(None),
            b'}' | b']' => {
                if let Some(Some(object)) = stack.pop() {
                    if object.duplicate.is_some() {
                        return object.duplicate;
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
    None
}

/// A JSON string's contents (between the quotes) as UTF-16 code units, escapes decoded.
fn decode(inner: &str) -> Vec<u16> {
    let mut out = Vec::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            let mut units = [0u16; 2];
            out.extend_from_slice(c.encode_utf16(&mut units));
            continue;
        }
        match chars.next() {
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                out.push(u16::from_str_radix(&hex, 16).unwrap_or(0));
            }
            Some('b') => out.push(0x08),
            Some('f') => out.push(0x0c),
            Some('n') => out.push(0x0a),
            Some('r') => out.push(0x0d),
            Some('t') => out.push(0x09),
            Some(other) => out.push(other as u16),
            None => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_inner_objects_first() {
        assert_eq!(duplicate_key(r#"{"a": 1, "b": 2}"#), None);
        assert_eq!(duplicate_key(r#"{"a": 1, "a": 2}"#), Some(r#""a""#));
        assert_eq!(duplicate_key(r#"{"a": 1, "a": {"b": 1, "b": 2}}"#), Some(r#""b""#));
        assert_eq!(duplicate_key(r#"[{"x": "a", "y": "a"}, {"k": 1, "\u006b": 2}]"#), Some(r#""\u006b""#));
        assert_eq!(duplicate_key(r#"{"\ud83d\ude00": 1, "😀": 2}"#), Some(r#""😀""#));
        assert_eq!(duplicate_key(r#"{"a\"": 1, "a\u0022": 2, "q": "a,\"b\":"}"#), Some(r#""a\u0022""#));
        assert_eq!(duplicate_key(r#"["a", "a", {"s": ["a", "a"]}]"#), None);
    }
}
