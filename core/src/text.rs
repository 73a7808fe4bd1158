//! Characters a reader does not see, and the way from byte offsets back to Python's character
//! offsets.

/// Format characters (Unicode category Cf: zero-width space and joiners, soft hyphen, word
/// joiner, BOM, bidi controls, tags...) and control characters other than tab and line breaks:
/// exactly the reference's `INVISIBLE`. Split by them, `4111\u200b1111...` still reads as a card
/// number, so detectors see strings with them taken out.
pub fn invisible(c: char) -> bool {
    matches!(c,
        '\x00'..='\x08' | '\x0b' | '\x0c' | '\x0e'..='\x1f' | '\x7f'..='\u{9f}' | '\u{ad}'
        | '\u{600}'..='\u{605}' | '\u{61c}' | '\u{6dd}' | '\u{70f}' | '\u{890}' | '\u{891}' | '\u{8e2}'
        | '\u{180e}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{206f}' | '\u{feff}' | '\u{fff9}'..='\u{fffb}' | '\u{110bd}' | '\u{110cd}'
        | '\u{13430}'..='\u{13438}' | '\u{1bca0}'..='\u{1bca3}' | '\u{1d173}'..='\u{1d17a}'
        | '\u{e0001}' | '\u{e0020}'..='\u{e007f}')
}

/// ASCII bytes that are invisible (a fast test for ASCII text).
fn invisible_ascii(b: u8) -> bool {
    b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r') || b == 0x7f
}

/// A string as detectors see it: with its invisible characters taken out, and for each visible
/// character the index of the character it was in the original (None: nothing was taken out).
pub struct Visible<'a> {
    pub text: std::borrow::Cow<'a, str>,
    pub kept: Option<Vec<usize>>,
}

pub fn visible(text: &str) -> Visible<'_> {
    let any = if text.is_ascii() { text.bytes().any(invisible_ascii) } else { text.chars().any(invisible) };
    if !any {
        return Visible { text: text.into(), kept: None };
    }
    let mut kept = Vec::with_capacity(text.len());
    let mut out = String::with_capacity(text.len());
    for (i, c) in text.chars().enumerate() {
        if !invisible(c) {
            kept.push(i);
            out.push(c);
        }
    }
    Visible { text: out.into(), kept: Some(kept) }
}

/// The character index of byte offset `byte` in `text` (a char boundary).
pub fn char_index(text: &str, byte: usize) -> usize {
    text[..byte].chars().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invisible_characters_are_taken_out() {
        let seen = visible("41\u{200b}11");
        assert_eq!(seen.text, "4111");
        assert_eq!(seen.kept, Some(vec![0, 1, 3, 4]));
        assert!(visible("plain\ttext").kept.is_none());
        assert_eq!(visible("a\x00b").text, "ab");
    }

    #[test]
    fn char_offsets() {
        assert_eq!(char_index("héllo", 3), 2);
        assert_eq!(char_index("hello", 3), 3);
    }
}
