//! A call's findings as the session store keeps them: rows of six text fields (direction, path,
//! label, level, action, fingerprint; any may be absent), all their text in one buffer and each
//! row six ranges of it, so that thousands of findings cost a few allocations, not one per value.
//!
//! And their byte forms: the binary encoding a unit's rows travel in through the flow's metadata
//! (`encode`, `FindingRows::decode`), the JSON the store writes (`canonical`, `objects`: byte for
//! byte what orjson makes of the same rows) and the `findings` table's Arrow columns.
//!
//! The encoding (version 1), all integers u32 little-endian:
//!
//! ```text
//! "TGF" 0x01                magic and version
//! n                         the number of rows
//! n × 6 lengths             row by row, field by field: the field's length in bytes, or
//!                           0xFFFF_FFFF for an absent field
//! text                      the present fields' UTF-8, in the same order, back to back
//! ```
//!
//! and nothing after. The lengths come first so that a reader checks them all against the
//! item's size before it copies anything, then validates the text as UTF-8 once and copies it
//! whole.

use std::cmp::Ordering;
use std::fmt;

/// The store's columns, in order.
pub const COLUMNS: [&str; FIELDS] = ["direction", "path", "label", "level", "action", "fingerprint"];
pub const FIELDS: usize = 6;

const MAGIC: &[u8; 3] = b"TGF";
pub const VERSION: u8 = 1;
/// Magic, version and row count.
const HEADER: usize = 8;
/// An absent field's length.
const ABSENT: u32 = u32::MAX;

/// Where a field's text sits in `FindingRows::text`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    start: u32,
    end: u32,
}

type Row = [Option<Span>; FIELDS];

/// Findings too large for their offsets (u32 in the encoding and the table, i32 in Arrow).
#[derive(Debug, PartialEq, Eq)]
pub struct TooLarge;

impl fmt::Display for TooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("findings too large (their text passes the 2 GiB an Arrow column holds or the 4 GiB of a table)")
    }
}

/// Why bytes are not encoded findings. Rows count from 0; a field is its index in `COLUMNS`.
#[derive(Debug, PartialEq, Eq)]
pub enum Invalid {
    /// They do not start with the magic.
    NotFindings,
    Version(u8),
    /// The header or the lengths end past the end of the bytes.
    Truncated {
        needed: usize,
        have: usize,
    },
    /// A field's length runs past the end of the text.
    PastEnd {
        row: usize,
        field: usize,
    },
    /// Bytes after the last field's text.
    Trailing(usize),
    /// The text is not UTF-8 (at this offset in the bytes).
    NotUtf8 {
        at: usize,
    },
    /// A field ends inside a character.
    SplitCharacter {
        row: usize,
        field: usize,
    },
    TooLarge,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invalid::NotFindings => {
                write!(f, "they do not start with {MAGIC:?} (not findings encoded by this version)")
            }
            Invalid::Version(v) => write!(f, "encoding version {v}, this build reads version {VERSION}"),
            Invalid::Truncated { needed, have } => {
                write!(f, "truncated: {have} bytes, its header and lengths need {needed}")
            }
            Invalid::PastEnd { row, field } => {
                write!(f, "the length of row {row}'s {} runs past the end", COLUMNS[*field])
            }
            Invalid::Trailing(n) => write!(f, "trailing bytes after the last field ({n})"),
            Invalid::NotUtf8 { at } => write!(f, "the text is not UTF-8 (at byte {at})"),
            Invalid::SplitCharacter { row, field } => {
                write!(f, "row {row}'s {} ends inside a character", COLUMNS[*field])
            }
            Invalid::TooLarge => TooLarge.fmt(f),
        }
    }
}

/// A field to encode: its text in two parts written one after the other (a path placed inside
/// its message: the location, then the path inside the unit), or None.
pub type Parts<'a> = Option<[&'a str; 2]>;

/// `text` as the `Parts` of a field.
pub fn whole(text: &str) -> [&str; 2] {
    [text, ""]
}

/// The size of `rows`' encoding.
pub fn encoded_len<'a>(rows: impl ExactSizeIterator<Item = [Parts<'a>; FIELDS]>) -> Result<usize, TooLarge> {
    u32::try_from(rows.len()).map_err(|_| TooLarge)?;
    let mut len = HEADER + rows.len() * FIELDS * 4;
    for row in rows {
        for [a, b] in row.into_iter().flatten() {
            let field = a.len() + b.len();
            if field >= ABSENT as usize {
                return Err(TooLarge);
            }
            len += field;
        }
    }
    Ok(len)
}

/// Write `rows` in the encoding (see the module's documentation) to `out`, which is
/// `encoded_len(rows)` bytes.
pub fn encode_into<'a>(rows: impl ExactSizeIterator<Item = [Parts<'a>; FIELDS]>, out: &mut [u8]) {
    fn put(out: &mut [u8], at: usize, bytes: &[u8]) -> usize {
        out[at..at + bytes.len()].copy_from_slice(bytes);
        at + bytes.len()
    }
    put(out, 0, MAGIC);
    put(out, 3, &[VERSION]);
    put(out, 4, &(rows.len() as u32).to_le_bytes()); // counted in `encoded_len`
    let mut length_at = HEADER;
    let mut text_at = HEADER + rows.len() * FIELDS * 4;
    for row in rows {
        for field in row {
            let length = match field {
                Some([a, b]) => {
                    let start = text_at;
                    text_at = put(out, text_at, a.as_bytes());
                    text_at = put(out, text_at, b.as_bytes());
                    (text_at - start) as u32 // checked in `encoded_len`
                }
                None => ABSENT,
            };
            length_at = put(out, length_at, &length.to_le_bytes());
        }
    }
    assert_eq!(text_at, out.len(), "`out` is `encoded_len` bytes");
}

/// `rows` in the encoding (see the module's documentation).
pub fn encode<'a, I>(rows: I) -> Result<Vec<u8>, TooLarge>
where
    I: ExactSizeIterator<Item = [Parts<'a>; FIELDS]> + Clone,
{
    let mut out = vec![0; encoded_len(rows.clone())?];
    encode_into(rows, &mut out);
    Ok(out)
}

/// Two fields of a row (see `FindingRows::pair_counts`).
pub type Pair<'a> = (Option<&'a str>, Option<&'a str>);

fn u32_at(data: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(data[at..at + 4].try_into().expect("four bytes"))
}

/// A call's findings: see the module's documentation.
#[derive(Debug, Default)]
pub struct FindingRows {
    /// Every field's text, back to back (valid UTF-8: whole strings, appended).
    text: String,
    rows: Vec<Row>,
}

impl FindingRows {
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The size of the fields' text, in bytes.
    pub fn text_len(&self) -> usize {
        self.text.len()
    }

    /// Room for `text` more bytes of text.
    pub fn reserve(&mut self, text: usize) {
        self.text.reserve(text);
    }

    /// The end of the text after `more` bytes are appended, if the spans can reach it.
    fn end_after(&self, more: usize) -> Option<u32> {
        self.text.len().checked_add(more).and_then(|end| u32::try_from(end).ok())
    }

    fn field(&self, span: Option<Span>) -> Option<&str> {
        span.map(|s| &self.text[s.start as usize..s.end as usize])
    }

    fn bytes(&self, span: Span) -> &[u8] {
        &self.text.as_bytes()[span.start as usize..span.end as usize]
    }

    /// Row `i`'s fields.
    pub fn row(&self, i: usize) -> [Option<&str>; FIELDS] {
        self.rows[i].map(|span| self.field(span))
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = [Option<&str>; FIELDS]> + Clone + '_ {
        (0..self.rows.len()).map(|i| self.row(i))
    }

    /// Append one row.
    pub fn push(&mut self, fields: [Option<&str>; FIELDS]) -> Result<(), TooLarge> {
        let more = fields.iter().flatten().map(|f| f.len()).sum();
        self.end_after(more).ok_or(TooLarge)?;
        let row = fields.map(|field| {
            field.map(|text| {
                let start = self.text.len() as u32; // within the end checked above
                self.text.push_str(text);
                Span { start, end: self.text.len() as u32 }
            })
        });
        self.rows.push(row);
        Ok(())
    }

    /// Append the rows `data` encodes (see `encode`), after checking all of it: on an error,
    /// nothing is appended.
    pub fn decode(&mut self, data: &[u8]) -> Result<(), Invalid> {
        if data.len() < HEADER {
            let magic = MAGIC.len().min(data.len());
            if data[..magic] != MAGIC[..magic] {
                return Err(Invalid::NotFindings);
            }
            return Err(Invalid::Truncated { needed: HEADER, have: data.len() });
        }
        if &data[..3] != MAGIC {
            return Err(Invalid::NotFindings);
        }
        if data[3] != VERSION {
            return Err(Invalid::Version(data[3]));
        }
        let count = u32_at(data, 4) as usize;
        // checked before anything is read or reserved: a count cannot make the reader allocate
        // more than the bytes it came in
        let text_at = count
            .checked_mul(FIELDS * 4)
            .and_then(|n| n.checked_add(HEADER))
            .ok_or(Invalid::Truncated { needed: usize::MAX, have: data.len() })?;
        if text_at > data.len() {
            return Err(Invalid::Truncated { needed: text_at, have: data.len() });
        }
        let text =
            std::str::from_utf8(&data[text_at..]).map_err(|e| Invalid::NotUtf8 { at: text_at + e.valid_up_to() })?;
        let base = self.end_after(text.len()).ok_or(Invalid::TooLarge)? - text.len() as u32;
        let before = self.rows.len();
        self.rows.reserve(count);
        let mut at = 0usize;
        let mut lengths = data[HEADER..text_at].chunks_exact(4);
        for row in 0..count {
            let mut spans: Row = [None; FIELDS];
            for (field, span) in spans.iter_mut().enumerate() {
                let length = u32::from_le_bytes(lengths.next().expect("counted").try_into().expect("four bytes"));
                if length == ABSENT {
                    continue;
                }
                let end = match at.checked_add(length as usize) {
                    Some(end) if end <= text.len() => end,
                    _ => {
                        self.rows.truncate(before);
                        return Err(Invalid::PastEnd { row, field });
                    }
                };
                if !text.is_char_boundary(end) {
                    self.rows.truncate(before);
                    return Err(Invalid::SplitCharacter { row, field });
                }
                // within u32: `base` + the text's length is (checked above)
                *span = Some(Span { start: base + at as u32, end: base + end as u32 });
                at = end;
            }
            self.rows.push(spans);
        }
        if at != text.len() {
            self.rows.truncate(before);
            return Err(Invalid::Trailing(text.len() - at));
        }
        self.text.push_str(text);
        Ok(())
    }

    /// The rows of one direction.
    pub fn only(&self, direction: &str) -> FindingRows {
        let mut out = FindingRows::default();
        for row in &self.rows {
            if self.field(row[0]) == Some(direction) {
                out.push(row.map(|span| self.field(span))).expect("a part of a table fits where the table did");
            }
        }
        out
    }

    /// How many rows have each pair of the fields `a` and `b` (e.g. label and action), in the
    /// order each pair first appears: a large answer's thousands of findings counted without a
    /// row leaving the table.
    pub fn pair_counts(&self, a: usize, b: usize) -> Vec<(Pair<'_>, usize)> {
        let mut counts: Vec<(Pair<'_>, usize)> = Vec::new();
        let mut index: std::collections::HashMap<Pair<'_>, usize> = std::collections::HashMap::new();
        for row in &self.rows {
            let pair = (self.field(row[a]), self.field(row[b]));
            match index.get(&pair) {
                Some(&at) => counts[at].1 += 1,
                None => {
                    index.insert(pair, counts.len());
                    counts.push((pair, 1));
                }
            }
        }
        counts
    }

    /// The order `hashchain.finding_key` gives: field by field, strings in code point order
    /// (UTF-8 byte order is the same), None after every string.
    fn canonical_order(&self, a: &Row, b: &Row) -> Ordering {
        for (x, y) in a.iter().zip(b) {
            let order = match (x, y) {
                (Some(x), Some(y)) => self.bytes(*x).cmp(self.bytes(*y)),
                _ => x.is_none().cmp(&y.is_none()),
            };
            if order.is_ne() {
                return order;
            }
        }
        Ordering::Equal
    }

    /// What the hash chain covers: the rows in canonical order (`hashchain.canonical_findings`)
    /// as compact JSON, `[[direction, path, label, level, action, fingerprint], ...]`.
    pub fn canonical(&self) -> String {
        let mut order: Vec<&Row> = self.rows.iter().collect();
        // rows that compare equal are the same six fields: their order does not show
        order.sort_unstable_by(|a, b| self.canonical_order(a, b));
        let mut out = String::with_capacity(2 + self.text.len() + self.rows.len() * (2 + FIELDS * 3));
        out.push('[');
        for (i, row) in order.into_iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push('[');
            for (j, &span) in row.iter().enumerate() {
                if j > 0 {
                    out.push(',');
                }
                write_opt(&mut out, self.field(span));
            }
            out.push(']');
        }
        out.push(']');
        out
    }

    /// The rows in order as a JSON list of objects, `[{"direction": ..., ...}, ...]`.
    pub fn objects(&self) -> String {
        let keys = COLUMNS.map(|name| format!("\"{name}\":"));
        let per_row = 2 + keys.iter().map(|k| k.len() + 3).sum::<usize>();
        let mut out = String::with_capacity(2 + self.text.len() + self.rows.len() * per_row);
        out.push('[');
        for (i, row) in self.rows.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push('{');
            for (j, (key, &span)) in keys.iter().zip(row).enumerate() {
                if j > 0 {
                    out.push(',');
                }
                out.push_str(key);
                write_opt(&mut out, self.field(span));
            }
            out.push('}');
        }
        out.push(']');
        out
    }

    /// The `findings` table's columns for call `call_id`, in its order: call_id, then the six.
    pub fn arrow(&self, call_id: &str) -> Result<Vec<ArrowColumn>, TooLarge> {
        let len = self.rows.len();
        let mut columns = Vec::with_capacity(1 + FIELDS);
        columns.push(ArrowColumn::new(
            len,
            call_id.len().saturating_mul(len),
            std::iter::repeat_n(Some(call_id), len),
        )?);
        for field in 0..FIELDS {
            let size = self.rows.iter().flat_map(|row| row[field]).map(|s| (s.end - s.start) as usize).sum();
            columns.push(ArrowColumn::new(len, size, self.rows.iter().map(|row| self.field(row[field])))?);
        }
        Ok(columns)
    }
}

/// One Arrow string column's buffers.
#[derive(Debug, PartialEq, Eq)]
pub struct ArrowColumn {
    /// One bit per value, set where there is one; None when no value is null.
    pub validity: Option<Vec<u8>>,
    /// The values' int32 offsets into `data` (one more than the values).
    pub offsets: Vec<u8>,
    pub data: Vec<u8>,
    pub nulls: usize,
}

impl ArrowColumn {
    fn new<'a>(len: usize, size: usize, values: impl Iterator<Item = Option<&'a str>>) -> Result<Self, TooLarge> {
        if i32::try_from(size).is_err() {
            return Err(TooLarge);
        }
        let mut offsets = Vec::with_capacity((len + 1) * 4);
        let mut data = Vec::with_capacity(size);
        let mut validity = vec![0u8; len.div_ceil(8)];
        let mut nulls = 0;
        offsets.extend_from_slice(&0i32.to_le_bytes());
        for (i, value) in values.enumerate() {
            match value {
                Some(text) => {
                    data.extend_from_slice(text.as_bytes());
                    validity[i / 8] |= 1 << (i % 8);
                }
                None => nulls += 1,
            }
            // within i32: the sum of the values' sizes is (checked above)
            offsets.extend_from_slice(&(data.len() as i32).to_le_bytes());
        }
        let validity = if nulls > 0 { Some(validity) } else { None };
        Ok(ArrowColumn { validity, offsets, data, nulls })
    }
}

/// How orjson writes each byte of a string: as it is (0), as a two-character escape, or as
/// `\u00XX` (b'u').
const ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = b'u';
        b += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

/// A JSON string, escaped as orjson escapes it: `"`, `\` and the control characters below
/// U+0020 (`\b \t \n \f \r`, the others as `\u00XX` in lowercase hex); everything else, DEL and
/// U+2028 included, as UTF-8.
fn write_str(out: &mut String, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = text.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push('"');
    // most strings need no escape: checked at once (without an early exit, so that the compiler
    // can check many bytes per instruction)
    if !bytes.iter().fold(false, |any, &b| any | (b < 0x20) | (b == b'"') | (b == b'\\')) {
        out.push_str(text);
        out.push('"');
        return;
    }
    let mut start = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        let escape = ESCAPE[byte as usize];
        if escape == 0 {
            continue;
        }
        out.push_str(&text[start..i]); // `byte` is ASCII: `i` is a character boundary
        out.push('\\');
        if escape == b'u' {
            out.push_str("u00");
            out.push(HEX[(byte >> 4) as usize] as char);
            out.push(HEX[(byte & 0xf) as usize] as char);
        } else {
            out.push(escape as char);
        }
        start = i + 1;
    }
    out.push_str(&text[start..]);
    out.push('"');
}

fn write_opt(out: &mut String, text: Option<&str>) {
    match text {
        Some(text) => write_str(out, text),
        None => out.push_str("null"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Fields<'a> = [Option<&'a str>; FIELDS];

    const ROWS: [Fields<'static>; 3] = [
        [Some("response"), Some("$.a"), Some("email"), Some("confidential"), Some("allow"), Some("ab")],
        [Some("request"), Some("é\u{1F600}"), Some(""), None, None, None],
        [Some("response"), Some("$.a"), Some("email"), None, Some("mask\n\"q\"\\"), Some("cd")],
    ];

    fn encoded(rows: &[Fields<'_>]) -> Vec<u8> {
        encode(rows.iter().map(|row| row.map(|field| field.map(whole)))).unwrap()
    }

    fn decoded(data: &[u8]) -> Result<FindingRows, Invalid> {
        let mut rows = FindingRows::default();
        rows.decode(data)?;
        Ok(rows)
    }

    fn table(rows: &[Fields<'_>]) -> FindingRows {
        let mut table = FindingRows::default();
        for row in rows {
            table.push(*row).unwrap();
        }
        table
    }

    /// The encoding of one row of one field per row: header, lengths, then the text.
    fn raw(lengths: &[u32], text: &[u8]) -> Vec<u8> {
        assert_eq!(lengths.len() % FIELDS, 0);
        let mut out = b"TGF\x01".to_vec();
        out.extend_from_slice(&((lengths.len() / FIELDS) as u32).to_le_bytes());
        for length in lengths {
            out.extend_from_slice(&length.to_le_bytes());
        }
        out.extend_from_slice(text);
        out
    }

    #[test]
    fn the_encoding_is_the_documented_one() {
        let data = encoded(&[[Some("a"), None, Some("bc"), Some(""), None, Some("é")]]);
        assert_eq!(data, raw(&[1, ABSENT, 2, 0, ABSENT, 2], "abcé".as_bytes()));
        assert_eq!(encoded(&[]), b"TGF\x01\0\0\0\0");
    }

    #[test]
    fn rows_round_trip_through_the_encoding() {
        for rows in [&ROWS[..], &ROWS[..1], &[]] {
            let table = decoded(&encoded(rows)).unwrap();
            assert_eq!(table.iter().collect::<Vec<_>>(), rows);
        }
    }

    #[test]
    fn items_append_to_the_rows_already_there() {
        let mut table = table(&ROWS[1..2]);
        table.decode(&encoded(&ROWS)).unwrap();
        table.push(ROWS[0]).unwrap();
        table.decode(&encoded(&ROWS[2..])).unwrap();
        assert_eq!(table.iter().collect::<Vec<_>>(), [ROWS[1], ROWS[0], ROWS[1], ROWS[2], ROWS[0], ROWS[2]]);
    }

    #[test]
    fn placed_parts_are_joined() {
        let data = encode([[Some(["$.result", ".a"]), None, None, None, None, Some(whole("f"))]].into_iter()).unwrap();
        assert_eq!(decoded(&data).unwrap().row(0), [Some("$.result.a"), None, None, None, None, Some("f")]);
    }

    #[test]
    fn what_is_not_an_encoding_is_refused() {
        let good = encoded(&ROWS);
        let cases: Vec<(Vec<u8>, Invalid)> = vec![
            (b"".to_vec(), Invalid::Truncated { needed: HEADER, have: 0 }),
            (b"TGF\x01\0\0".to_vec(), Invalid::Truncated { needed: HEADER, have: 6 }),
            (b"[[\"request\"]]".to_vec(), Invalid::NotFindings),
            (b"[]".to_vec(), Invalid::NotFindings),
            (b"TGF\x02\0\0\0\0".to_vec(), Invalid::Version(2)),
            (b"TGF\x00\0\0\0\0".to_vec(), Invalid::Version(0)),
            // a row count the bytes cannot hold: refused before anything is allocated
            (b"TGF\x01\xff\xff\xff\xff".to_vec(), Invalid::Truncated { needed: 8 + 0xffff_ffff * 24, have: 8 }),
            (good[..HEADER + 10].to_vec(), Invalid::Truncated { needed: HEADER + 3 * 24, have: HEADER + 10 }),
            (good[..good.len() - 1].to_vec(), Invalid::PastEnd { row: 2, field: 5 }),
            ([&good[..], b"x"].concat(), Invalid::Trailing(1)),
            (raw(&[1, 0, 0, 0, 0, 0], b""), Invalid::PastEnd { row: 0, field: 0 }),
            (raw(&[u32::MAX - 1, 0, 0, 0, 0, 0], b"abc"), Invalid::PastEnd { row: 0, field: 0 }),
            (raw(&[1, 1, 0, 0, 0, 0], b"a\xff"), Invalid::NotUtf8 { at: HEADER + 24 + 1 }),
            (raw(&[1, 1, 0, 0, 0, 0], b"a\xc3"), Invalid::NotUtf8 { at: HEADER + 24 + 1 }),
            (raw(&[1, 0, 0, 0, 0, 0], "é".as_bytes()), Invalid::SplitCharacter { row: 0, field: 0 }),
            (raw(&[0, 0, 0, 0, 0, 0], b"\0"), Invalid::Trailing(1)),
        ];
        for (data, expected) in cases {
            assert_eq!(decoded(&data).unwrap_err(), expected, "{data:?}");
            // and nothing was appended
            let mut table = table(&ROWS[..1]);
            assert!(table.decode(&data).is_err());
            assert_eq!(table.iter().collect::<Vec<_>>(), &ROWS[..1]);
            assert_eq!(table.text_len(), ROWS[0].iter().flatten().map(|f| f.len()).sum::<usize>());
        }
    }

    #[test]
    fn every_cut_and_every_changed_byte_is_refused_or_read_as_it_reads() {
        let good = encoded(&ROWS);
        for len in 0..good.len() {
            assert!(decoded(&good[..len]).is_err(), "cut at {len}");
        }
        for at in 0..good.len() {
            for byte in [0x00, 0x01, 0x7f, 0x80, 0xc3, 0xff] {
                let mut changed = good.clone();
                changed[at] = byte;
                if let Ok(table) = decoded(&changed) {
                    // what was read is what the bytes say: encoding it again gives them back
                    let rows: Vec<_> = table.iter().collect();
                    assert_eq!(encoded(&rows), changed, "byte {at} changed to {byte}");
                }
            }
        }
    }

    #[test]
    fn pairs_are_counted_in_the_order_they_first_appear() {
        let rows = table(&[
            [Some("response"), Some("$.a"), Some("ssn"), Some("restricted"), Some("mask"), None],
            [Some("response"), Some("$.b"), Some("email"), Some("internal"), None, None],
            [Some("request"), Some("$.c"), Some("ssn"), Some("restricted"), Some("mask"), None],
        ]);
        assert_eq!(rows.pair_counts(2, 4), vec![((Some("ssn"), Some("mask")), 2), ((Some("email"), None), 1)]);
        assert!(FindingRows::default().pair_counts(2, 4).is_empty());
    }

    #[test]
    fn only_keeps_one_direction() {
        let table = table(&ROWS);
        assert_eq!(table.only("response").iter().collect::<Vec<_>>(), [ROWS[0], ROWS[2]]);
        assert!(table.only("nothing").is_empty());
    }

    #[test]
    fn json_strings_are_escaped_as_orjson_escapes_them() {
        let mut out = String::new();
        write_str(&mut out, "a\"\\\n\u{1}\u{8}\u{c}\r\t\u{1f} \u{7f}\u{2028}é/");
        assert_eq!(out, "\"a\\\"\\\\\\n\\u0001\\b\\f\\r\\t\\u001f \u{7f}\u{2028}é/\"");
        out.clear();
        write_str(&mut out, "plain é");
        assert_eq!(out, "\"plain é\"");
    }

    #[test]
    fn canonical_rows_are_sorted_none_last() {
        let rows = [
            [Some("b"), None, None, None, None, None],
            [Some("a"), None, None, None, None, None],
            [Some("a"), Some(""), None, None, None, None],
            [None, Some("x"), None, None, None, None],
        ];
        let json = table(&rows).canonical();
        assert_eq!(
            json,
            "[[\"a\",\"\",null,null,null,null],[\"a\",null,null,null,null,null],\
             [\"b\",null,null,null,null,null],[null,\"x\",null,null,null,null]]"
        );
        assert_eq!(table(&[]).canonical(), "[]");
        assert_eq!(table(&[]).objects(), "[]");
    }

    #[test]
    fn objects_name_their_fields() {
        let json = table(&ROWS[1..2]).objects();
        assert_eq!(
            json,
            "[{\"direction\":\"request\",\"path\":\"é\u{1F600}\",\"label\":\"\",\"level\":null,\
             \"action\":null,\"fingerprint\":null}]"
        );
    }

    #[test]
    fn arrow_columns() {
        let columns = table(&ROWS).arrow("c1").unwrap();
        assert_eq!(columns.len(), 7);
        let offsets = |values: &[i32]| values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>();
        assert_eq!(
            columns[0],
            ArrowColumn { validity: None, offsets: offsets(&[0, 2, 4, 6]), data: b"c1c1c1".to_vec(), nulls: 0 }
        );
        assert_eq!(
            columns[4],
            ArrowColumn {
                validity: Some(vec![0b001]),
                offsets: offsets(&[0, 12, 12, 12]),
                data: b"confidential".to_vec(),
                nulls: 2
            }
        );
    }
}
