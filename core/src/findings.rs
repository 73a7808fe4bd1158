//! Findings as columns: from the scan to the session store without a Python object per value.
//!
//! `Findings` holds one evaluation's findings (one unit of a message, one direction): per row
//! the path, the keyed fingerprint, the label and, for tools, the detector and span; what the
//! rules did is kept per label. The gateway never asks it for Python objects: it `encode`s the
//! rows, their paths placed inside the whole message, as one bytes value for the flow's metadata
//! (plain bytes, so a flow saved from mitmweb still serializes; see `finding_rows` for the
//! encoding).
//!
//! `FindingTable` is a call's findings as the store keeps them (`finding_rows::FindingRows`: six
//! columns, direction, path, label, level, action, fingerprint), gathered from those bytes and
//! the odd finding made in Python. It gives the hash chain its canonical JSON (byte for byte what
//! `orjson.dumps` makes of `hashchain.canonical_findings`), the `pending` row its JSON, and the
//! `findings` table its Arrow columns. Their byte work runs without the GIL.

use pyo3::exceptions::PyValueError;
use pyo3::marker::Ungil;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::types::{PyBytes, PyString, PyTuple};

use crate::finding_rows::{self, whole, FindingRows, Pair, Parts, FIELDS};

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
/// there, and join the location elsewhere): in two parts, to be written one after the other.
pub fn placed<'a>(location: &'a str, path: &'a str) -> [&'a str; 2] {
    if path.is_empty() {
        [location, ""]
    } else if location == "$" {
        ["", path]
    } else {
        [location, path.strip_prefix('$').unwrap_or(path)]
    }
}

/// Below this many bytes of work, a method keeps the GIL: releasing and retaking it costs more
/// than the work, and retaking it may wait for another thread's turn (the event loop's thread
/// should not wait on the store's writer for a few rows).
const DETACH_AT: usize = 16 * 1024;

/// `work()`, with the GIL released if `size` bytes are worth it.
fn detached<T, F>(py: Python<'_>, size: usize, work: F) -> T
where
    F: Ungil + FnOnce() -> T,
    T: Ungil,
{
    if size >= DETACH_AT {
        py.detach(work)
    } else {
        work()
    }
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

    /// The rows as the store keeps them, `[direction, path, label, level, action,
    /// fingerprint]` in order, each path placed inside the message at `location`, in the binary
    /// encoding `FindingTable` reads (see `finding_rows`).
    fn encode<'py>(&self, py: Python<'py>, location: &str) -> PyResult<Bound<'py, PyBytes>> {
        let direction = self.direction.bind(py).to_str()?;
        let rows = self.rows.iter().map(|row| {
            let verdict = self.verdict(row);
            [
                Some(whole(direction)),
                Some(placed(location, &row.path)),
                Some(whole(&verdict.name)),
                verdict.level.as_deref().map(whole),
                verdict.action.as_deref().map(whole),
                Some(whole(&row.fingerprint)),
            ]
        });
        encoded(py, rows)
    }
}

/// `rows` in the encoding (`finding_rows::encode`), written in place: a large body's is half a
/// megabyte.
fn encoded<'py, 'a, I>(py: Python<'py>, rows: I) -> PyResult<Bound<'py, PyBytes>>
where
    I: ExactSizeIterator<Item = [Parts<'a>; FIELDS]> + Clone + Send,
{
    let len = finding_rows::encoded_len(rows.clone()).map_err(|e| PyValueError::new_err(e.to_string()))?;
    PyBytes::new_with(py, len, |out| {
        detached(py, len, || finding_rows::encode_into(rows, out));
        Ok(())
    })
}

/// One Arrow string column: (validity bitmap or None, int32 offsets, UTF-8 data, null count).
type ArrowColumn<'py> = (Option<Bound<'py, PyBytes>>, Bound<'py, PyBytes>, Bound<'py, PyBytes>, usize);

/// An item of `FindingTable`'s, read with the GIL held and appended without it.
enum Item<'a> {
    Encoded(&'a [u8]),
    Row([Option<PyBackedStr>; FIELDS]),
}

#[pyclass(frozen, module = "toolgate.rules._core")]
pub struct FindingTable {
    rows: FindingRows,
}

#[pymethods]
impl FindingTable {
    /// The rows of `items` in order: each is bytes (what `Findings.encode` made) or one row, a
    /// 6-tuple.
    #[new]
    #[pyo3(signature = (items = Vec::new()))]
    fn new(py: Python<'_>, items: Vec<Bound<'_, PyAny>>) -> PyResult<Self> {
        let mut read = Vec::with_capacity(items.len());
        let mut size = 0;
        for item in &items {
            if let Ok(encoded) = item.cast::<PyBytes>() {
                // immutable, and alive while `items` holds it: readable without the GIL
                let bytes = encoded.as_bytes();
                size += bytes.len();
                read.push(Item::Encoded(bytes));
            } else {
                let (a, b, c, d, e, f) = item.extract()?;
                read.push(Item::Row([a, b, c, d, e, f]));
            }
        }
        let rows = detached(py, size, || -> Result<FindingRows, String> {
            let mut rows = FindingRows::default();
            rows.reserve(size);
            for item in &read {
                match item {
                    Item::Encoded(bytes) => {
                        rows.decode(bytes).map_err(|e| format!("encoded findings are not valid: {e}"))?
                    }
                    Item::Row(fields) => {
                        rows.push(fields.each_ref().map(|f| f.as_deref())).map_err(|e| e.to_string())?
                    }
                }
            }
            Ok(rows)
        })
        .map_err(PyValueError::new_err)?;
        Ok(FindingTable { rows })
    }

    fn __len__(&self) -> usize {
        self.rows.len()
    }

    /// The rows of one direction.
    fn only(&self, direction: &str) -> FindingTable {
        FindingTable { rows: self.rows.only(direction) }
    }

    /// Every row as a 6-tuple, in order (for tools and tests).
    #[allow(clippy::type_complexity)]
    fn rows(&self) -> Vec<(Option<&str>, Option<&str>, Option<&str>, Option<&str>, Option<&str>, Option<&str>)> {
        self.rows.iter().map(|[a, b, c, d, e, f]| (a, b, c, d, e, f)).collect()
    }

    /// How many rows have each (label, action): what metrics count, without a Python object
    /// per finding.
    fn label_actions(&self) -> Vec<(Pair<'_>, usize)> {
        self.rows.pair_counts(2, 4)
    }

    /// The rows in order, in the encoding `Findings.encode` makes: `FindingTable([t.encode()])`
    /// has the rows of `t`.
    fn encode<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        encoded(py, self.rows.iter().map(|row| row.map(|field| field.map(whole))))
    }

    /// What the hash chain covers: the rows in canonical order, as compact JSON (byte for byte
    /// `hashchain.findings_json`).
    fn canonical<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let json = detached(py, self.rows.text_len(), || self.rows.canonical());
        PyBytes::new(py, json.as_bytes())
    }

    /// The rows as a JSON list of objects (the `pending` row's `findings`), in order.
    fn objects(&self, py: Python<'_>) -> String {
        detached(py, self.rows.text_len(), || self.rows.objects())
    }

    /// The `findings` table's columns for call `call_id`, in its order (call_id, then the six),
    /// as Arrow string buffers (see `ArrowColumn`).
    fn arrow<'py>(&self, py: Python<'py>, call_id: &str) -> PyResult<Vec<ArrowColumn<'py>>> {
        let columns = detached(py, self.rows.text_len(), || self.rows.arrow(call_id))
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok(columns
            .into_iter()
            .map(|c| {
                let validity = c.validity.map(|v| PyBytes::new(py, &v));
                (validity, PyBytes::new(py, &c.offsets), PyBytes::new(py, &c.data), c.nulls)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placed_paths() {
        let joined = |location, path| placed(location, path).concat();
        assert_eq!(joined("$", "$.a"), "$.a");
        assert_eq!(joined("$", ""), "$");
        assert_eq!(joined("$", "?x-name"), "?x-name");
        assert_eq!(joined("$.params.arguments", "$.a[0]"), "$.params.arguments.a[0]");
        assert_eq!(joined("$.params.arguments", "$"), "$.params.arguments");
        assert_eq!(joined("$.params.arguments", ""), "$.params.arguments");
        assert_eq!(joined("headers", "?x-name"), "headers?x-name");
    }
}
