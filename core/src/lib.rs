//! toolgate's classification core, a Python extension module (`toolgate.rules._core`).
//!
//! The plain Rust modules hold the work: `detectors` (patterns and validators), `scan` (every
//! detector over a body's strings), `fingerprint`, `text`. This file only binds them to Python.

pub mod checksums;
pub mod classified;
pub mod detectors;
pub mod document;
pub mod finding_rows;
pub mod findings;
pub mod fingerprint;
pub mod json_keys;
pub mod scan;
pub mod text;

use pyo3::exceptions::{PyKeyError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyList, PySlice, PyString};

use detectors::Detector;

fn detector(name: &str) -> PyResult<&'static dyn Detector> {
    detectors::by_name(name).ok_or_else(|| PyKeyError::new_err(format!("no detector named {name:?}")))
}

/// A Python string as UTF-8: lone surrogates (valid in Python strings, never in UTF-8) read as
/// U+FFFD, one character for one, so character offsets stay those of the original.
fn text_of(s: &Bound<'_, PyString>) -> std::borrow::Cow<'static, str> {
    match s.to_str() {
        Ok(text) => std::borrow::Cow::Owned(text.to_owned()),
        Err(_) => std::borrow::Cow::Owned(s.to_string_lossy().into_owned()),
    }
}

/// The detectors the core implements, in registry order.
#[pyfunction]
fn detector_names() -> Vec<&'static str> {
    detectors::all().iter().map(|d| d.name()).collect()
}

/// Validated values of detector `name` in `text`: (start, end) in characters.
#[pyfunction]
fn find(name: &str, text: &Bound<'_, PyString>) -> PyResult<Vec<(usize, usize)>> {
    let scanner = scan::Scanner::new(vec![detector(name)?]);
    let owned = text_of(text);
    let found = scanner.scan(&[owned.as_ref()]);
    raise_pending()?;
    Ok(found.into_iter().map(|f| (f.start, f.end)).collect())
}

/// The substrings one of which every value of detector `name` holds.
#[pyfunction]
fn needles(name: &str) -> PyResult<Vec<&'static str>> {
    Ok(detectors::needles(detector(name)?.name()).to_vec())
}

/// Whether all of `text` is one valid value of detector `name` (JSON integers).
#[pyfunction]
fn matches_whole(name: &str, text: &str) -> PyResult<bool> {
    Ok(detector(name)?.matches_whole(text))
}

/// The canonical form of a value of detector `name` (ValueError: not such a value).
#[pyfunction]
fn normalize(name: &str, text: &str) -> PyResult<String> {
    detector(name)?.normalize(text).map_err(|_| PyValueError::new_err(format!("not a valid {name} value")))
}

/// Detector `name`'s partial mask of `text`.
#[pyfunction]
fn partial(name: &str, text: &str) -> PyResult<String> {
    Ok(detector(name)?.partial(text))
}

/// Hex HMAC-SHA256 of `normalized` under `key`.
#[pyfunction(name = "fingerprint")]
fn keyed_fingerprint(normalized: &str, key: &[u8]) -> String {
    fingerprint::fingerprint(normalized, key)
}

/// `text` with its invisible characters taken out (what detectors read).
#[pyfunction]
fn visible(text: &Bound<'_, PyString>) -> String {
    text::visible(&text_of(text)).text.into_owned()
}

/// Every detector a rule set uses, built once: `scan(strings)` lists the values in them.
#[pyclass(frozen, name = "Scanner", module = "toolgate.rules._core")]
pub struct ScannerHandle {
    inner: scan::Scanner,
}

impl ScannerHandle {
    pub fn scanner(&self) -> &scan::Scanner {
        &self.inner
    }

    /// The values in a document's strings, each distinct string scanned once: (string index,
    /// start, end, detector index, text) for every occurrence, in walk order, values in order
    /// inside each string.
    #[allow(clippy::type_complexity)]
    pub fn scan_slots(&self, document: &document::Document) -> PyResult<Vec<(usize, usize, usize, usize, String)>> {
        let slots = &document.strings;
        let mut distinct: Vec<&str> = Vec::new();
        let mut index_of: rustc_hash::FxHashMap<&str, usize> = Default::default();
        let which: Vec<usize> = slots
            .iter()
            .map(|slot| {
                let text = document.text(slot);
                *index_of.entry(text).or_insert_with(|| {
                    distinct.push(text);
                    distinct.len() - 1
                })
            })
            .collect();
        let items: Vec<(&str, bool, &Py<PyString>)> =
            slots.iter().map(|slot| (document.text(slot), slot.exact, &slot.value)).collect();
        self.detect(&items, &distinct, &which)
    }

    /// `scan_slots` for the document's distinct object keys: (key index, start, end, detector,
    /// text detected).
    #[allow(clippy::type_complexity)]
    pub fn scan_keys(&self, document: &document::Document) -> PyResult<Vec<(usize, usize, usize, usize, String)>> {
        let items: Vec<(&str, bool, &Py<PyString>)> =
            document.keys_found.iter().map(|k| (k.text.as_str(), k.exact, &k.value)).collect();
        let distinct: Vec<&str> = items.iter().map(|item| item.0).collect();
        let which: Vec<usize> = (0..items.len()).collect();
        self.detect(&items, &distinct, &which)
    }

    /// The values in `items` (text, read exactly, the string), which are the `distinct` texts
    /// by `which`: each distinct text is scanned once.
    #[allow(clippy::type_complexity)]
    fn detect(
        &self,
        items: &[(&str, bool, &Py<PyString>)],
        distinct: &[&str],
        which: &[usize],
    ) -> PyResult<Vec<(usize, usize, usize, usize, String)>> {
        let found = self.inner.scan(distinct);
        raise_pending()?;
        if found.is_empty() {
            return Ok(Vec::new());
        }
        let mut spans_of: Vec<Vec<(usize, usize, usize)>> = vec![Vec::new(); distinct.len()];
        for f in found {
            spans_of[f.string].push((f.start, f.end, f.detector));
        }
        Python::attach(|py| {
            let mut hits = Vec::new();
            for (string, (&(text, exact, value), &i)) in items.iter().zip(which).enumerate() {
                if spans_of[i].is_empty() {
                    continue;
                }
                let ascii = text.is_ascii();
                let offsets: Vec<usize> = if ascii || !exact {
                    Vec::new()
                } else {
                    text.char_indices().map(|(b, _)| b).chain([text.len()]).collect()
                };
                for &(start, end, detector) in &spans_of[i] {
                    let detected = if ascii {
                        text[start..end].to_owned()
                    } else if exact {
                        text[offsets[start]..offsets[end]].to_owned()
                    } else {
                        let piece = value.bind(py).get_item(PySlice::new(py, start as isize, end as isize, 1))?;
                        piece.cast_into::<PyString>()?.to_string_lossy().into_owned()
                    };
                    hits.push((string, start, end, detector, detected));
                }
            }
            Ok(hits)
        })
    }
}

#[pymethods]
impl ScannerHandle {
    #[new]
    fn new(names: Vec<String>) -> PyResult<Self> {
        let detectors = names.iter().map(|n| detector(n)).collect::<PyResult<Vec<_>>>()?;
        Ok(ScannerHandle { inner: scan::Scanner::new(detectors) })
    }

    /// (string index, start, end, detector index) of every value, strings in order, values in
    /// order inside each; offsets in characters of the original string.
    fn scan(&self, strings: &Bound<'_, PyList>) -> PyResult<Vec<(usize, usize, usize, usize)>> {
        let mut owned = Vec::with_capacity(strings.len());
        for item in strings.iter() {
            owned.push(text_of(item.cast::<PyString>()?));
        }
        let refs: Vec<&str> = owned.iter().map(|s| s.as_ref()).collect();
        let found = self.inner.scan(&refs);
        raise_pending()?;
        Ok(found.into_iter().map(|f| (f.string, f.start, f.end, f.detector)).collect())
    }
}

/// The source text (quotes included) of the first key that repeats inside one object of the
/// valid JSON `text`, objects checked as they close (see `json_keys`); "" when no key repeats;
/// None when a key escapes a lone surrogate (the caller's own reader decides).
#[pyfunction]
fn duplicate_key(text: &str) -> Option<String> {
    match json_keys::duplicate_key(text) {
        json_keys::Keys::Unique => Some(String::new()),
        json_keys::Keys::Duplicate(literal) => Some(literal.to_owned()),
        json_keys::Keys::Undecided => None,
    }
}

/// Panics, on purpose: the tests show that a panic inside the core fails the call closed (PyO3
/// raises it as `PanicException`, a BaseException the gateway's hooks also catch).
#[pyfunction]
fn _panic_for_tests() {
    panic!("a panic in the core, raised by the tests");
}

/// What the Python side (`toolgate/rules/core.py`) expects; it refuses any other build.
const INTERFACE: u32 = 7;

/// The JWT detector's header check (`detectors::secrets::JWT_HEADER_CHECK`): Python's own
/// `json.loads` of the decoded header gives a dict whose `alg` is a str. Every exception is
/// "not valid" (the reference catches ValueError and UnicodeDecodeError; a RecursionError from a
/// deeply nested header, which the reference lets through, is "not valid" here too).
fn jwt_header_check(header: &[u8]) -> bool {
    static JSON: pyo3::sync::PyOnceLock<Py<PyModule>> = pyo3::sync::PyOnceLock::new();
    Python::attach(|py| {
        let check = || -> PyResult<bool> {
            let json = JSON.get_or_try_init(py, || py.import("json").map(Bound::unbind))?.bind(py);
            let value = json.call_method1(pyo3::intern!(py, "loads"), (pyo3::types::PyBytes::new(py, header),))?;
            let Ok(object) = value.cast::<pyo3::types::PyDict>() else {
                return Ok(false);
            };
            Ok(object.get_item(pyo3::intern!(py, "alg"))?.is_some_and(|alg| alg.is_instance_of::<PyString>()))
        };
        match check() {
            Ok(valid) => valid,
            Err(err) if err.is_instance_of::<PyValueError>(py) => false,
            Err(err) => {
                // what the reference lets through (a RecursionError of a deeply nested header):
                // raised by the scan once it returns
                PENDING.with(|pending| {
                    pending.borrow_mut().get_or_insert(err);
                });
                false
            }
        }
    })
}

thread_local! {
    /// An error a detector met that the reference does not catch, raised after the scan.
    static PENDING: std::cell::RefCell<Option<PyErr>> = const { std::cell::RefCell::new(None) };
}

/// Raise the error a detector met during the scan that just ended, if any.
fn raise_pending() -> PyResult<()> {
    match PENDING.with(|pending| pending.borrow_mut().take()) {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let _ = detectors::secrets::JWT_HEADER_CHECK.set(jwt_header_check);
    m.add("INTERFACE", INTERFACE)?;
    // what `Findings.encode` makes of no findings (`rules.decision.Findings` has no native rows then)
    let none = finding_rows::encode(std::iter::empty()).expect("no rows fit");
    m.add("NO_FINDINGS_ENCODED", pyo3::types::PyBytes::new(m.py(), &none))?;
    m.add("PanicException", m.py().get_type::<pyo3::panic::PanicException>())?;
    m.add_function(wrap_pyfunction!(_panic_for_tests, m)?)?;
    m.add_function(wrap_pyfunction!(duplicate_key, m)?)?;
    m.add_function(wrap_pyfunction!(detector_names, m)?)?;
    m.add_function(wrap_pyfunction!(find, m)?)?;
    m.add_function(wrap_pyfunction!(matches_whole, m)?)?;
    m.add_function(wrap_pyfunction!(needles, m)?)?;
    m.add_function(wrap_pyfunction!(normalize, m)?)?;
    m.add_function(wrap_pyfunction!(partial, m)?)?;
    m.add_function(wrap_pyfunction!(keyed_fingerprint, m)?)?;
    m.add_function(wrap_pyfunction!(visible, m)?)?;
    m.add_class::<ScannerHandle>()?;
    m.add_class::<classified::Classified>()?;
    m.add_class::<document::Document>()?;
    m.add_class::<findings::Findings>()?;
    m.add_class::<findings::FindingTable>()?;
    Ok(())
}
