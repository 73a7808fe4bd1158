//! Findings as columns: from the scan to the session store without a Python object per value.
//!
//! `Findings` holds one evaluation's findings (one unit of a message, one direction): per row
//! the path, the keyed fingerprint, the label and, for tools, the detector and span; what the
//! rules did is kept per label. The gateway never asks it for Python objects: it `encode`s the
//! rows, their paths placed inside the whole message, as one bytes value for the flow's metadata
//! (plain JSON, so a flow saved from mitmweb still serializes).
//!
//! `FindingTable` is a call's findings as the store keeps them, six columns (direction, path,
//! label, level, action, fingerprint), gathered from those bytes and the odd finding made in
//! Python. It gives the hash chain its canonical JSON (byte for byte what `orjson.dumps` makes
//! of `hashchain.canonical_findings`), the `pending` row its JSON, and the `findings` table its
//! Arrow columns.

use std::borrow::Cow;
use std::cmp::Ordering;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString, PyTuple};

/// One value found: where it is and what it is, never the value itself.
pub struct Found {
    pub path: String,
    pub fingerprint: String,
    pub label: usize,
    pub detector: Option<usize>,
    pub span: Option<(usize, usize)>,
}

/// What the rules did with a label's values, as the store records it, and the tuple
/// (name, level, action, mask, rules, monitor) that ends each of its rows' `Finding`s.
struct Verdict {
    name: String,
    level: Option<String>,
    action: Option<String>,
    about: Py<PyTuple>,
}

#[pyclass(frozen, module = "toolgate.rules._core")]
pub struct Findings {
    direction: Py<PyString>,
    rows: Vec<Found>,
    verdicts: Vec<Option<Verdict>>,
    detectors: Vec<Py<PyString>>,
    finding_type: Py<PyAny>,
}

impl Findings {
    /// `about[label]`: None for a label without values, else its verdict tuple.
    pub fn new(
        direction: Bound<'_, PyString>,
        rows: Vec<Found>,
        about: Vec<Option<Bound<'_, PyTuple>>>,
        detectors: Vec<Bound<'_, PyString>>,
        finding_type: Bound<'_, PyAny>,
    ) -> PyResult<Self> {
        let verdicts = about
            .into_iter()
            .map(|tuple| {
                tuple
                    .map(|t| {
                        Ok::<_, PyErr>(Verdict {
                            name: t.get_item(0)?.extract()?,
                            level: t.get_item(1)?.extract()?,
                            action: t.get_item(2)?.extract()?,
                            about: t.unbind(),
                        })
                    })
                    .transpose()
            })
            .collect::<PyResult<Vec<_>>>()?;
        if let Some(row) = rows.iter().find(|r| verdicts.get(r.label).is_none_or(|v| v.is_none())) {
            return Err(PyValueError::new_err(format!("label {} has values but no verdict", row.label)));
        }
        Ok(Findings {
            direction: direction.unbind(),
            rows,
            verdicts,
            detectors: detectors.into_iter().map(Bound::unbind).collect(),
            finding_type: finding_type.unbind(),
        })
    }

    fn verdict(&self, row: &Found) -> &Verdict {
        self.verdicts[row.label].as_ref().expect("checked in new")
    }
}

/// A finding's path inside the unit, as a path inside the whole message whose unit sits at
/// `location` (`$` for a unit that is the message; `?name` paths of a query stay as they are
/// there, and join the location elsewhere).
pub fn placed<'a>(location: &'a str, path: &'a str) -> Cow<'a, str> {
    if path.is_empty() {
        return Cow::Borrowed(location);
    }
    if location == "$" {
        return Cow::Borrowed(path);
    }
    Cow::Owned(match path.strip_prefix('$') {
        Some(rest) => format!("{location}{rest}"),
        None => format!("{location}{path}"),
    })
}

/// A JSON string, escaped as orjson and serde_json both escape it (`"`, `\`, control
/// characters; everything else as UTF-8).
fn write_str(out: &mut Vec<u8>, text: &str) {
    serde_json::to_writer(&mut *out, text).expect("writing to a Vec cannot fail");
}

fn write_opt(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        Some(text) => write_str(out, text),
        None => out.extend_from_slice(b"null"),
    }
}

/// `[[a, b, ...], ...]`: rows of strings (or null) as compact JSON.
fn write_rows<'a, R, F>(out: &mut Vec<u8>, rows: R)
where
    R: IntoIterator<Item = F>,
    F: IntoIterator<Item = Option<&'a str>>,
{
    out.push(b'[');
    for (i, row) in rows.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'[');
        for (j, field) in row.into_iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            write_opt(out, field);
        }
        out.push(b']');
    }
    out.push(b']');
}

#[pymethods]
impl Findings {
    fn __len__(&self) -> usize {
        self.rows.len()
    }

    /// Every row as a `finding_type` tuple: (direction, path, label, level, detector,
    /// fingerprint, span, action, mask, rules, monitor). For tools and tests: the gateway
    /// never asks.
    fn rows(&self, py: Python<'_>) -> PyResult<Vec<Py<PyAny>>> {
        let tuple_new = py.get_type::<PyTuple>().getattr("__new__")?;
        let finding_type = self.finding_type.bind(py);
        let direction = self.direction.bind(py).clone().into_any();
        let none = py.None().into_bound(py);
        let mut out = Vec::with_capacity(self.rows.len());
        for row in &self.rows {
            let about = self.verdict(row).about.bind(py);
            let detector = match row.detector {
                Some(d) => self.detectors[d].bind(py).clone().into_any(),
                None => none.clone(),
            };
            let span = match row.span {
                Some(span) => span.into_pyobject(py)?.into_any(),
                None => none.clone(),
            };
            let items = [
                direction.clone(),
                PyString::new(py, &row.path).into_any(),
                about.get_item(0)?,
                about.get_item(1)?,
                detector,
                PyString::new(py, &row.fingerprint).into_any(),
                span,
                about.get_item(2)?,
                about.get_item(3)?,
                about.get_item(4)?,
                about.get_item(5)?,
            ];
            out.push(tuple_new.call1((finding_type, PyTuple::new(py, items)?))?.unbind());
        }
        Ok(out)
    }

    /// The rows' labels, in order of first occurrence.
    fn labels(&self) -> Vec<&str> {
        let mut seen = vec![false; self.verdicts.len()];
        let mut out = Vec::new();
        for row in &self.rows {
            if !std::mem::replace(&mut seen[row.label], true) {
                out.push(self.verdict(row).name.as_str());
            }
        }
        out
    }

    /// Whether any row's action is `action`.
    fn any_action(&self, action: &str) -> bool {
        self.rows.iter().any(|row| self.verdict(row).action.as_deref() == Some(action))
    }

    /// The rows as the store keeps them, JSON `[[direction, path, label, level, action,
    /// fingerprint], ...]` in order, each path placed inside the message at `location`.
    fn encode<'py>(&self, py: Python<'py>, location: &str) -> PyResult<Bound<'py, PyBytes>> {
        let direction = self.direction.bind(py).to_str()?;
        let paths: Vec<Cow<'_, str>> = self.rows.iter().map(|row| placed(location, &row.path)).collect();
        let mut out = Vec::with_capacity(self.rows.len() * 128);
        write_rows(
            &mut out,
            self.rows.iter().zip(&paths).map(|(row, path)| {
                let verdict = self.verdict(row);
                [
                    Some(direction),
                    Some(path.as_ref()),
                    Some(verdict.name.as_str()),
                    verdict.level.as_deref(),
                    verdict.action.as_deref(),
                    Some(row.fingerprint.as_str()),
                ]
            }),
        );
        Ok(PyBytes::new(py, &out))
    }
}

/// direction, path, label, level, action, fingerprint.
type StoreRow = [Option<String>; 6];
pub const STORE_COLUMNS: [&str; 6] = ["direction", "path", "label", "level", "action", "fingerprint"];

/// The order `hashchain.finding_key` gives: field by field, strings in code point order (UTF-8
/// byte order is the same), None after every string.
fn canonical_order(a: &StoreRow, b: &StoreRow) -> Ordering {
    fn key(field: &Option<String>) -> (bool, &str) {
        (field.is_none(), field.as_deref().unwrap_or(""))
    }
    a.iter().map(key).cmp(b.iter().map(key))
}

/// One Arrow string column: (validity bitmap or None, int32 offsets, UTF-8 data, null count).
type ArrowColumn<'py> = (Option<Bound<'py, PyBytes>>, Bound<'py, PyBytes>, Bound<'py, PyBytes>, usize);

fn arrow_column<'py, 'a>(
    py: Python<'py>,
    len: usize,
    values: impl Iterator<Item = Option<&'a str>>,
) -> PyResult<ArrowColumn<'py>> {
    let mut offsets: Vec<u8> = Vec::with_capacity((len + 1) * 4);
    let mut data: Vec<u8> = Vec::new();
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
        let end = i32::try_from(data.len()).map_err(|_| PyValueError::new_err("findings too large for one column"))?;
        offsets.extend_from_slice(&end.to_le_bytes());
    }
    let validity = if nulls > 0 { Some(PyBytes::new(py, &validity)) } else { None };
    Ok((validity, PyBytes::new(py, &offsets), PyBytes::new(py, &data), nulls))
}

#[pyclass(frozen, module = "toolgate.rules._core")]
pub struct FindingTable {
    rows: Vec<StoreRow>,
}

#[pymethods]
impl FindingTable {
    /// The rows of `items` in order: each is bytes (what `Findings.encode` made) or one row, a
    /// 6-tuple.
    #[new]
    #[pyo3(signature = (items = Vec::new()))]
    fn new(items: Vec<Bound<'_, PyAny>>) -> PyResult<Self> {
        let mut rows: Vec<StoreRow> = Vec::new();
        for item in &items {
            if let Ok(encoded) = item.cast::<PyBytes>() {
                let parsed: Vec<StoreRow> = serde_json::from_slice(encoded.as_bytes())
                    .map_err(|e| PyValueError::new_err(format!("encoded findings are not valid: {e}")))?;
                rows.extend(parsed);
            } else {
                let (a, b, c, d, e, f) = item.extract()?;
                rows.push([a, b, c, d, e, f]);
            }
        }
        Ok(FindingTable { rows })
    }

    fn __len__(&self) -> usize {
        self.rows.len()
    }

    /// The rows of one direction.
    fn only(&self, direction: &str) -> FindingTable {
        FindingTable { rows: self.rows.iter().filter(|r| r[0].as_deref() == Some(direction)).cloned().collect() }
    }

    /// Every row as a 6-tuple, in order (for tools and tests).
    #[allow(clippy::type_complexity)]
    fn rows(&self) -> Vec<(Option<&str>, Option<&str>, Option<&str>, Option<&str>, Option<&str>, Option<&str>)> {
        self.rows
            .iter()
            .map(|r| {
                (r[0].as_deref(), r[1].as_deref(), r[2].as_deref(), r[3].as_deref(), r[4].as_deref(), r[5].as_deref())
            })
            .collect()
    }

    /// What the hash chain covers: the rows in canonical order, as compact JSON.
    fn canonical<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let mut order: Vec<&StoreRow> = self.rows.iter().collect();
        order.sort_by(|a, b| canonical_order(a, b));
        let mut out = Vec::with_capacity(self.rows.len() * 128);
        write_rows(&mut out, order.iter().map(|row| row.iter().map(|f| f.as_deref())));
        PyBytes::new(py, &out)
    }

    /// The rows as a JSON list of objects (the `pending` row's `findings`), in order.
    fn objects(&self) -> String {
        let mut out = Vec::with_capacity(self.rows.len() * 192);
        out.push(b'[');
        for (i, row) in self.rows.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.push(b'{');
            for (j, (name, value)) in STORE_COLUMNS.iter().zip(row).enumerate() {
                if j > 0 {
                    out.push(b',');
                }
                write_str(&mut out, name);
                out.push(b':');
                write_opt(&mut out, value.as_deref());
            }
            out.push(b'}');
        }
        out.push(b']');
        String::from_utf8(out).expect("JSON of strings is UTF-8")
    }

    /// The `findings` table's columns for call `call_id`, in its order (call_id, then the six),
    /// as Arrow string buffers (see `ArrowColumn`).
    fn arrow<'py>(&self, py: Python<'py>, call_id: &str) -> PyResult<Vec<ArrowColumn<'py>>> {
        let len = self.rows.len();
        let mut columns = vec![arrow_column(py, len, std::iter::repeat_n(Some(call_id), len))?];
        for field in 0..STORE_COLUMNS.len() {
            columns.push(arrow_column(py, len, self.rows.iter().map(|r| r[field].as_deref()))?);
        }
        Ok(columns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placed_paths() {
        assert_eq!(placed("$", "$.a"), "$.a");
        assert_eq!(placed("$", ""), "$");
        assert_eq!(placed("$.params.arguments", "$.a[0]"), "$.params.arguments.a[0]");
        assert_eq!(placed("$.params.arguments", "$"), "$.params.arguments");
        assert_eq!(placed("$.params.arguments", ""), "$.params.arguments");
        assert_eq!(placed("headers", "?x-name"), "headers?x-name");
    }

    #[test]
    fn rows_as_json() {
        let mut out = Vec::new();
        write_rows(&mut out, [[Some("a\"\\\n\u{1}é"), None]]);
        assert_eq!(out, b"[[\"a\\\"\\\\\\n\\u0001\xc3\xa9\",null]]");
        let mut empty = Vec::new();
        write_rows(&mut empty, Vec::<[Option<&str>; 1]>::new());
        assert_eq!(empty, b"[]");
    }

    #[test]
    fn none_sorts_after_strings() {
        let row = |level: Option<&str>| -> StoreRow {
            [Some("a".into()), Some("b".into()), Some("c".into()), level.map(Into::into), None, None]
        };
        assert_eq!(canonical_order(&row(Some("z")), &row(None)), Ordering::Less);
        assert_eq!(canonical_order(&row(Some("")), &row(Some("a"))), Ordering::Less);
        assert_eq!(canonical_order(&row(None), &row(None)), Ordering::Equal);
    }
}
