//! A call's labelled values and what the rules do to them, as the reference engine does it
//! (tests/reference/engine.py: `_mask_plan`, `_record_delta`, `_masked`, `_edits`, `apply_edits`
//! and `_findings`), without a Python object per value: the masked bodies (the one forwarded, the
//! one recorded) and the findings, from a plan the engine makes per label.
//!
//! A value found is a row: which document of the call, which slot (node, item), the span inside a
//! string or the whole value, which detector (none for a label defined by paths) and label.
//! Rows are kept in the reference's hit order: per document, strings then numbers then the
//! values of path labels.

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PySlice, PyString, PyTuple};

use crate::detectors::Detector;
use crate::document::{Document, Key, DECODED_JSON, HOLDER};
use crate::findings::{Findings, Found};
use crate::fingerprint::Keyed;
use crate::text::visible;

/// (node, item): a value's place in a document.
type Slot = (usize, usize);
type Span = (usize, usize);

/// The first hex digits of a fingerprint a hash token keeps.
const TOKEN_HEX: usize = 12;

pub struct Row {
    doc: usize,
    node: usize,
    item: usize,
    key: Key,
    span: Option<Span>,
    /// For a span: the string's index among its document's strings.
    string: Option<usize>,
    detector: Option<usize>,
    label: usize,
    /// The text detected (a span, or a JSON integer's digits); None for a path label's value.
    text: Option<String>,
    /// The span is in the key of the slot's member, not in its value.
    in_key: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Style {
    Redact,
    Partial,
    Hash,
    Remove,
}

impl Style {
    fn parse(name: &str) -> PyResult<Style> {
        Ok(match name {
            "redact" => Style::Redact,
            "partial" => Style::Partial,
            "hash" => Style::Hash,
            "remove" => Style::Remove,
            other => return Err(pyo3::exceptions::PyValueError::new_err(format!("unknown mask style {other:?}"))),
        })
    }
}

/// How an enforced mask rule treats a label: the style of the strongest rule covering it (the
/// first such rule on a tie), that rule's position, and the position of the first mask rule
/// covering the label at all (which decides where its values enter the plan).
#[derive(Clone, Copy)]
struct LabelPlan {
    strength: i64,
    order: usize,
    first: usize,
    style: Style,
}

/// A planned whole value's entry and its rank (see `Classified::plan`).
type RankedWholes = HashMap<Slot, (Entry, (i64, usize, usize))>;
/// Per node being rebuilt: (item, key, new value; None: removed).
type NodeChanges = std::collections::BTreeMap<usize, Vec<(usize, Py<PyAny>, Option<Py<PyAny>>)>>;

/// A value's mask in the plan: the style and the row it comes from.
#[derive(Clone, Copy)]
struct Entry {
    style: Style,
    row: usize,
}

/// A planned span, with what decides the winner among the rows there and its place in the table.
#[derive(Clone, Copy)]
struct Planned {
    entry: Entry,
    rank: (i64, usize, usize),
    inserted: (usize, usize),
}

enum Masked {
    Remove,
    Value(Py<PyAny>),
}

/// Per document: whole values and spans inside strings, each table in insertion order.
#[derive(Default)]
struct Plan {
    wholes: Vec<(Slot, Entry)>,
    whole_index: HashMap<Slot, usize>,
    spans: Vec<(Slot, Vec<(Span, Entry)>)>,
    span_index: HashMap<Slot, usize>,
}

impl Plan {
    fn has_whole(&self, slot: &Slot) -> bool {
        self.whole_index.contains_key(slot)
    }
    fn span_table(&self, slot: &Slot) -> Option<&Vec<(Span, Entry)>> {
        self.span_index.get(slot).map(|&i| &self.spans[i].1)
    }
    fn is_empty(&self) -> bool {
        self.wholes.is_empty() && self.spans.is_empty()
    }
}

/// What masking needs from Python for values labelled by paths (any JSON value, Python's own
/// semantics): `partial(value)`, `fingerprint(value)`, and `is_token(text)` is ours.
struct Generic<'py> {
    partial: Bound<'py, PyAny>,
    fingerprint: Bound<'py, PyAny>,
    dumps: Bound<'py, PyAny>,
}

#[pyclass(module = "toolgate.rules._core")]
pub struct Classified {
    docs: Vec<Py<Document>>,
    rows: Vec<Row>,
    detectors: Vec<&'static dyn Detector>,
    labels_of: Vec<Vec<usize>>,
    fingerprints: Vec<HashMap<String, String>>,
    keyed: Option<Keyed>,
    /// (doc, slot, new name) of every key holding a labelled value (see `name_keys`).
    key_names: Vec<(usize, Slot, String)>,
}

/// Per document, {slot: new name; None: the member is removed} of the keys renamed.
type KeyRenames = Vec<HashMap<Slot, Option<String>>>;

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

/// `[REDACTED:x]` and `tok_x_<12 hex>`: values masking already produced.
pub fn is_mask_token(text: &str) -> bool {
    if let Some(rest) = text.strip_prefix("[REDACTED:") {
        return rest.len() > 1 && rest.ends_with(']') && rest[..rest.len() - 1].chars().all(is_token_char);
    }
    if let Some(rest) = text.strip_prefix("tok_") {
        let bytes = rest.as_bytes();
        if bytes.len() < TOKEN_HEX + 2 || !rest.is_ascii() {
            return false;
        }
        let (head, hex) = rest.split_at(rest.len() - TOKEN_HEX);
        return head.ends_with('_')
            && head.len() > 1
            && head[..head.len() - 1].chars().all(is_token_char)
            && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    }
    false
}

fn redact_token(label: &str) -> String {
    format!("[REDACTED:{label}]")
}

/// The hash mask's token of a value whose fingerprint is `print`: values and the keys named
/// after them share it, so a stored value joins with the same value elsewhere.
fn hash_token(label: &str, print: &str) -> String {
    format!("tok_{label}_{}", &print[..TOKEN_HEX])
}

impl Classified {
    fn label_name<'py>(&self, names: &'py [String], row: usize) -> &'py str {
        &names[self.rows[row].label]
    }

    /// The fingerprint of a detected text (a span, a number's digits), once per call and value.
    fn detected_fingerprint(&mut self, detector: usize, text: &str, key: &[u8]) -> PyResult<String> {
        if let Some(known) = self.fingerprints[detector].get(text) {
            return Ok(known.clone());
        }
        let normalized = self.detectors[detector].normalize(&visible(text).text).map_err(|_| {
            pyo3::exceptions::PyValueError::new_err(format!("not a valid {} value", self.detectors[detector].name()))
        })?;
        if self.keyed.as_ref().is_none_or(|k| k.key() != key) {
            self.keyed = Some(Keyed::new(key));
        }
        let print = self.keyed.as_ref().expect("a key").of(&normalized);
        self.fingerprints[detector].insert(text.to_owned(), print.clone());
        Ok(print)
    }

    /// A row's path; a value in a key has `<key>` after the member's path.
    fn row_path(&self, py: Python<'_>, row: &Row) -> PyResult<String> {
        let mut document = self.docs[row.doc].bind(py).borrow_mut();
        let path = document.slot_path(py, row.node, row.item, &row.key)?;
        Ok(if row.in_key { path + "<key>" } else { path })
    }

    /// The rows of the values in `seen`'s object keys (the reference's `_scan_keys`): each
    /// distinct key scanned once, a row for every member it names (nodes in order, then members).
    fn scan_keys(
        &mut self,
        py: Python<'_>,
        scanner: &crate::ScannerHandle,
        seen: &Document,
        doc: usize,
    ) -> PyResult<()> {
        let found = scanner.scan_keys(seen)?;
        if found.is_empty() {
            return Ok(());
        }
        let mut spans_of: Vec<Vec<(usize, usize, usize, String)>> = vec![Vec::new(); seen.keys_found.len()];
        let index = PyDict::new(py); // key -> its spans' index, by Python's equality
        for (key, start, end, detector, text) in found {
            index.set_item(seen.keys_found[key].value.bind(py), key)?;
            spans_of[key].push((start, end, detector, text));
        }
        for node in 0..seen.containers.len() {
            let Ok(dict) = seen.container(node).bind(py).cast_exact::<PyDict>() else { continue };
            for (item, name) in dict.keys().iter().enumerate() {
                if !name.is_exact_instance_of::<PyString>() {
                    continue;
                }
                let Some(key) = index.get_item(&name)? else { continue };
                for (start, end, detector, text) in &spans_of[key.extract::<usize>()?] {
                    for &label in &self.labels_of[*detector] {
                        self.rows.push(Row {
                            doc,
                            node,
                            item,
                            key: Key::Name(name.clone().unbind()),
                            span: Some((*start, *end)),
                            string: None,
                            detector: Some(*detector),
                            label,
                            text: Some(text.clone()),
                            in_key: true,
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Which keys the forwarded and the recorded versions rename (the reference's
    /// `_key_renames`): the record all of `key_names`, the forwarded body those an enforced mask
    /// covers (the strongest mask `remove` removes the member); and whether the two differ.
    fn key_renames(&self, plans: &[Option<LabelPlan>]) -> (KeyRenames, KeyRenames, bool) {
        let mut forwarded: KeyRenames = (0..self.docs.len()).map(|_| HashMap::default()).collect();
        let mut recorded: KeyRenames = (0..self.docs.len()).map(|_| HashMap::default()).collect();
        let mut differ = false;
        if self.key_names.is_empty() {
            return (forwarded, recorded, differ);
        }
        let mut styles: HashMap<(usize, Slot), (i64, Style)> = HashMap::default();
        for row in self.rows.iter().filter(|r| r.in_key) {
            let Some(plan) = plans[row.label] else { continue };
            let slot = (row.doc, (row.node, row.item));
            if styles.get(&slot).is_none_or(|(strength, _)| plan.strength > *strength) {
                styles.insert(slot, (plan.strength, plan.style));
            }
        }
        for (doc, slot, name) in &self.key_names {
            let style = styles.get(&(*doc, *slot)).map(|(_, style)| *style);
            let new = if style == Some(Style::Remove) { None } else { Some(name.clone()) };
            if style.is_some() {
                forwarded[*doc].insert(*slot, new.clone());
            } else {
                differ = true;
            }
            recorded[*doc].insert(*slot, new);
        }
        (forwarded, recorded, differ)
    }

    fn row_text(&self, py: Python<'_>, row: usize) -> Option<String> {
        let _ = py;
        self.rows[row].text.clone()
    }

    /// The reference's `mask_whole` of a detected text (spans, numbers' digits) or of a value.
    #[allow(clippy::too_many_arguments)]
    fn mask_whole(
        &mut self,
        py: Python<'_>,
        value: &Bound<'_, PyAny>,
        style: Style,
        label: &str,
        detector: Option<usize>,
        detected: Option<&str>,
        key: &[u8],
        generic: &Generic<'_>,
    ) -> PyResult<Masked> {
        if let Ok(text) = value.cast::<PyString>() {
            if is_mask_token(&text.to_string_lossy()) {
                return Ok(Masked::Value(value.clone().unbind()));
            }
        }
        let token = match style {
            Style::Remove => return Ok(Masked::Remove),
            Style::Hash => {
                let print = match (detector, detected) {
                    (Some(d), Some(text)) => self.detected_fingerprint(d, text, key)?,
                    _ => generic.fingerprint.call1((value,))?.extract::<String>()?,
                };
                hash_token(label, &print)
            }
            Style::Partial
                if (value.is_instance_of::<PyString>()
                    || value.is_instance_of::<pyo3::types::PyInt>()
                    || value.is_instance_of::<pyo3::types::PyFloat>())
                    && !value.is_instance_of::<pyo3::types::PyBool>() =>
            {
                match (detector, detected) {
                    (Some(d), Some(text)) => self.detectors[d].partial(text),
                    _ => return Ok(Masked::Value(generic.partial.call1((value,))?.unbind())),
                }
            }
            _ => redact_token(label),
        };
        Ok(Masked::Value(PyString::new(py, &token).into_any().unbind()))
    }

    fn plan(&self, py: Python<'_>, plans: &[Option<LabelPlan>]) -> Vec<Plan> {
        let _ = py;
        let mut wholes: Vec<RankedWholes> = (0..self.docs.len()).map(|_| HashMap::default()).collect();
        let mut whole_order: Vec<Vec<Slot>> = vec![Vec::new(); self.docs.len()];
        let mut spans: Vec<HashMap<Slot, HashMap<Span, Planned>>> =
            (0..self.docs.len()).map(|_| HashMap::default()).collect();
        let mut slot_order: Vec<Vec<(Slot, (usize, usize))>> = vec![Vec::new(); self.docs.len()];
        for (i, row) in self.rows.iter().enumerate() {
            let Some(plan) = plans[row.label] else { continue };
            if row.in_key {
                continue; // keys are renamed, not masked (`key_renames`)
            }
            let slot = (row.node, row.item);
            let rank = (-plan.strength, plan.order, i);
            let entry = Entry { style: plan.style, row: i };
            match row.span {
                None => {
                    let table = &mut wholes[row.doc];
                    match table.get(&slot) {
                        Some((_, best)) if *best <= rank => {}
                        Some(_) => {
                            table.insert(slot, (entry, rank));
                        }
                        None => {
                            table.insert(slot, (entry, rank));
                            whole_order[row.doc].push(slot);
                        }
                    }
                }
                Some(span) => {
                    let inserted = (plan.first, i);
                    let table = spans[row.doc].entry(slot).or_insert_with(|| {
                        slot_order[row.doc].push((slot, inserted));
                        HashMap::default()
                    });
                    let planned = table.entry(span).or_insert(Planned { entry, rank, inserted });
                    if rank < planned.rank {
                        planned.entry = entry;
                        planned.rank = rank;
                    }
                    if inserted < planned.inserted {
                        planned.inserted = inserted;
                    }
                }
            }
        }
        let mut out = Vec::with_capacity(self.docs.len());
        for d in 0..self.docs.len() {
            let mut plan = Plan::default();
            for slot in &whole_order[d] {
                plan.whole_index.insert(*slot, plan.wholes.len());
                plan.wholes.push((*slot, wholes[d][slot].0));
            }
            // slots enter the table when their first span does (the same order as spans)
            let mut slots = slot_order[d].clone();
            for (slot, first) in slots.iter_mut() {
                *first = spans[d][slot].values().map(|p| p.inserted).min().expect("a planned span");
            }
            slots.sort_by_key(|&(_, first)| first);
            for (slot, _) in slots {
                let mut table: Vec<(Span, Planned)> = spans[d][&slot].iter().map(|(s, p)| (*s, *p)).collect();
                table.sort_by_key(|(_, p)| p.inserted);
                plan.span_index.insert(slot, plan.spans.len());
                plan.spans.push((slot, table.into_iter().map(|(s, p)| (s, p.entry)).collect()));
            }
            out.push(plan);
        }
        out
    }

    /// What the recorded body masks beyond the plan: a redaction of every value no enforced mask
    /// covers (the reference's `_record_delta`); None when there is none in the whole call.
    fn delta(&self, plans: &[Option<LabelPlan>], plan: &[Plan]) -> Option<Vec<Plan>> {
        let mut delta: Option<Vec<Plan>> = None;
        for (i, row) in self.rows.iter().enumerate() {
            if row.in_key || plans[row.label].is_some() {
                continue;
            }
            let slot = (row.node, row.item);
            let own = &plan[row.doc];
            let planned = own.has_whole(&slot)
                || row
                    .span
                    .is_some_and(|span| own.span_table(&slot).is_some_and(|t| t.iter().any(|(s, _)| *s == span)));
            if planned {
                continue;
            }
            let tables = delta.get_or_insert_with(|| (0..self.docs.len()).map(|_| Plan::default()).collect());
            let table = &mut tables[row.doc];
            let entry = Entry { style: Style::Redact, row: i };
            match row.span {
                None => match table.whole_index.get(&slot) {
                    Some(&at) => table.wholes[at].1 = entry,
                    None => {
                        table.whole_index.insert(slot, table.wholes.len());
                        table.wholes.push((slot, entry));
                    }
                },
                Some(span) => {
                    let at = match table.span_index.get(&slot) {
                        Some(&at) => at,
                        None => {
                            let copied = own.span_table(&slot).cloned().unwrap_or_default();
                            table.span_index.insert(slot, table.spans.len());
                            table.spans.push((slot, copied));
                            table.spans.len() - 1
                        }
                    };
                    let spans = &mut table.spans[at].1;
                    match spans.iter_mut().find(|(s, _)| *s == span) {
                        Some(existing) => existing.1 = entry,
                        None => spans.push((span, entry)),
                    }
                }
            }
        }
        delta
    }

    /// The reference's `_edits`: {slot: masked value or REMOVE} for the slots whose value changes.
    #[allow(clippy::too_many_arguments)]
    fn edits(
        &mut self,
        py: Python<'_>,
        doc: usize,
        wholes: &[(Slot, Entry)],
        spans: &[(Slot, Vec<(Span, Entry)>)],
        skip: &[&Plan],
        names: &[String],
        key: &[u8],
        generic: &Generic<'_>,
    ) -> PyResult<Vec<(Slot, usize, Masked)>> {
        let document = self.docs[doc].clone_ref(py);
        let document = document.borrow(py);
        let mut edits = Vec::new();
        for &(slot, entry) in wholes {
            let row = entry.row;
            let value = self.value_of(py, &document, row)?;
            let label = self.label_name(names, row).to_owned();
            let detected = self.row_text(py, row);
            let detector = self.rows[row].detector;
            let mut new =
                self.mask_whole(py, &value, entry.style, &label, detector, detected.as_deref(), key, generic)?;
            if matches!(new, Masked::Remove) && slot == (HOLDER, 0) {
                new = Masked::Value(PyString::new(py, &redact_token(&label)).into_any().unbind());
            }
            if changes(py, &new, &value)? {
                edits.push((slot, row, new));
            }
        }
        for (slot, table) in spans {
            if skip.iter().any(|plan| plan.has_whole(slot)) {
                continue;
            }
            let first_row = table[0].1.row;
            let string = &document.strings[self.rows[first_row].string.expect("a span's string")];
            if string.exact {
                let original = document.text(string);
                let masked = self.mask_spans_exact(original, table, names, key)?;
                let new = match masked {
                    None if *slot == (HOLDER, 0) => Some(redact_token(self.label_name(names, first_row))),
                    other => other,
                };
                match new {
                    None => edits.push((*slot, first_row, Masked::Remove)),
                    Some(text) if text != original => {
                        edits.push((*slot, first_row, Masked::Value(PyString::new(py, &text).into_any().unbind())))
                    }
                    Some(_) => {}
                }
                continue;
            }
            let value = self.value_of(py, &document, first_row)?;
            let text = value.cast::<PyString>()?.clone();
            let mut new = self.mask_spans(py, &text, table, names, key, generic)?;
            if matches!(new, Masked::Remove) && *slot == (HOLDER, 0) {
                let label = self.label_name(names, first_row).to_owned();
                new = Masked::Value(PyString::new(py, &redact_token(&label)).into_any().unbind());
            }
            if changes(py, &new, text.as_any())? {
                edits.push((*slot, first_row, new));
            }
        }
        Ok(edits)
    }

    fn value_of<'py>(&self, py: Python<'py>, document: &Document, row: usize) -> PyResult<Bound<'py, PyAny>> {
        let row = &self.rows[row];
        document.container(row.node).bind(py).get_item(row.key.to_object(py))
    }

    /// `mask_whole` of a detected text, all in Rust (None: REMOVE).
    fn mask_text(
        &mut self,
        text: &str,
        style: Style,
        label: &str,
        detector: usize,
        key: &[u8],
    ) -> PyResult<Option<String>> {
        if is_mask_token(text) {
            return Ok(Some(text.to_owned()));
        }
        Ok(Some(match style {
            Style::Remove => return Ok(None),
            Style::Hash => hash_token(label, &self.detected_fingerprint(detector, text, key)?),
            Style::Partial => self.detectors[detector].partial(text),
            Style::Redact => redact_token(label),
        }))
    }

    /// `mask_spans` of a string read exactly (no lone surrogates), built in Rust: the new text,
    /// or None for REMOVE.
    fn mask_spans_exact(
        &mut self,
        text: &str,
        table: &[(Span, Entry)],
        names: &[String],
        key: &[u8],
    ) -> PyResult<Option<String>> {
        if table.iter().any(|(_, e)| e.style == Style::Remove) {
            return Ok(None);
        }
        let mut order: Vec<&(Span, Entry)> = table.iter().collect();
        order.sort_by_key(|((start, _), _)| *start);
        let ascii = text.is_ascii();
        let offsets: Vec<usize> =
            if ascii { Vec::new() } else { text.char_indices().map(|(i, _)| i).chain([text.len()]).collect() };
        let byte = |char_offset: usize| if ascii { char_offset } else { offsets[char_offset] };
        let mut out = String::with_capacity(text.len() + 16);
        let mut position = 0;
        for &&((start, end), entry) in &order {
            if start < position {
                continue;
            }
            out.push_str(&text[byte(position)..byte(start)]);
            let label = &names[self.rows[entry.row].label];
            let detector = self.rows[entry.row].detector.expect("spans come from detectors");
            match self.mask_text(&text[byte(start)..byte(end)], entry.style, label, detector, key)? {
                Some(piece) => out.push_str(&piece),
                None => return Ok(None),
            }
            position = end;
        }
        out.push_str(&text[byte(position)..]);
        Ok(Some(out))
    }

    /// The reference's `mask_spans`: `text` with each span replaced; REMOVE if any removes.
    fn mask_spans(
        &mut self,
        py: Python<'_>,
        text: &Bound<'_, PyString>,
        table: &[(Span, Entry)],
        names: &[String],
        key: &[u8],
        generic: &Generic<'_>,
    ) -> PyResult<Masked> {
        if table.iter().any(|(_, e)| e.style == Style::Remove) {
            return Ok(Masked::Remove);
        }
        let mut order: Vec<&(Span, Entry)> = table.iter().collect();
        order.sort_by_key(|((start, _), _)| *start);
        let length = text.len()?;
        let mut pieces: Vec<Bound<'_, PyAny>> = Vec::new();
        let mut position = 0;
        for &&((start, end), entry) in &order {
            if start < position {
                continue;
            }
            pieces.push(text.get_item(PySlice::new(py, position as isize, start as isize, 1))?);
            let piece = text.get_item(PySlice::new(py, start as isize, end as isize, 1))?;
            let label = self.label_name(names, entry.row).to_owned();
            let detector = self.rows[entry.row].detector;
            let detected = piece.cast::<PyString>()?.to_string_lossy().into_owned();
            match self.mask_whole(py, &piece, entry.style, &label, detector, Some(&detected), key, generic)? {
                Masked::Value(v) => pieces.push(v.into_bound(py)),
                Masked::Remove => return Ok(Masked::Remove),
            }
            position = end;
        }
        pieces.push(text.get_item(PySlice::new(py, position as isize, length as isize, 1))?);
        let joined = PyString::new(py, "").call_method1("join", (PyList::new(py, pieces)?,))?;
        Ok(Masked::Value(joined.unbind()))
    }

    /// The document's body as it came.
    fn original(&self, py: Python<'_>, doc: usize) -> PyResult<Py<PyAny>> {
        let document = self.docs[doc].bind(py).borrow();
        Ok(document.container(HOLDER).bind(py).get_item(0)?.unbind())
    }

    /// The reference's `apply_edits`: the body with `edits` applied and the keys of `renames`
    /// renamed (their objects keep their order); only the containers on the way from a change
    /// to the root are copied, embedded JSON is encoded again.
    fn apply(
        &self,
        py: Python<'_>,
        doc: usize,
        edits: &[(Slot, usize, Masked)],
        renames: &HashMap<Slot, Option<String>>,
        generic: &Generic<'_>,
    ) -> PyResult<Py<PyAny>> {
        let document = self.docs[doc].bind(py).borrow();
        let holder = document.container(HOLDER).bind(py);
        if edits.is_empty() && renames.is_empty() {
            return Ok(holder.get_item(0)?.unbind());
        }
        let renamed_nodes: HashSet<usize> = renames.keys().map(|(node, _)| *node).collect();
        let edited: HashSet<Slot> = edits.iter().map(|(s, _, _)| *s).collect();
        // per node: (item, key, new value) in the order they come
        let mut by_node: NodeChanges = Default::default();
        for ((node, item), row, new) in edits {
            let key = self.rows[*row].key.to_object(py);
            let value = match new {
                Masked::Remove => None,
                Masked::Value(v) => Some(v.clone_ref(py)),
            };
            by_node.entry(*node).or_default().push((*item, key, value));
        }
        for node in &renamed_nodes {
            by_node.entry(*node).or_default();
        }
        let nodes: Vec<usize> = by_node.keys().copied().collect();
        for mut node in nodes {
            while node != HOLDER {
                node = document.parents[node] as usize;
                if by_node.contains_key(&node) {
                    break;
                }
                by_node.insert(node, Vec::new());
            }
        }
        while let Some((node, changes)) = by_node.pop_last() {
            if node == HOLDER {
                let new = changes.into_iter().find(|(item, _, _)| *item == 0).and_then(|(_, _, v)| v);
                return Ok(match new {
                    Some(v) => v,
                    None => PyString::new(py, &redact_token("body")).into_any().unbind(),
                });
            }
            let container = document.container(node).bind(py);
            let (copy, changes): (Bound<'_, PyAny>, _) = if renamed_nodes.contains(&node) {
                (renamed_copy(py, container.cast_exact::<PyDict>()?, node, changes, renames)?, Vec::new())
            } else if let Ok(dict) = container.cast_exact::<PyDict>() {
                (dict.copy()?.into_any(), changes)
            } else {
                (PyList::new(py, container.try_iter()?.collect::<PyResult<Vec<_>>>()?)?.into_any(), changes)
            };
            let mut removed: Vec<(usize, Py<PyAny>)> = Vec::new();
            for (item, key, value) in changes {
                match value {
                    Some(v) => copy.set_item(key, v)?,
                    None => removed.push((item, key)),
                }
            }
            if copy.is_instance_of::<PyDict>() {
                for (_, key) in removed {
                    copy.del_item(key)?;
                }
            } else {
                removed.sort_by_key(|(item, _)| std::cmp::Reverse(*item));
                for (_, key) in removed {
                    copy.del_item(key)?;
                }
            }
            let replacement = if document.kinds[node] == DECODED_JSON {
                let kwargs = PyDict::new(py);
                kwargs.set_item("ensure_ascii", false)?;
                generic.dumps.call((copy,), Some(&kwargs))?.unbind()
            } else {
                copy.unbind()
            };
            let parent = document.parents[node] as usize;
            let item = document.items[node];
            if !edited.contains(&(parent, item)) {
                let key = document.keys[node].as_ref().expect("a key").to_object(py);
                by_node.entry(parent).or_default().push((item, key, Some(replacement)));
            }
        }
        unreachable!("the holder node is always reached")
    }
}

/// A copy of `dict` with its `changes` (item, key, new value; None: removed) and the renames of
/// its keys applied, in its order.
fn renamed_copy<'py>(
    py: Python<'py>,
    dict: &Bound<'py, PyDict>,
    node: usize,
    changes: Vec<(usize, Py<PyAny>, Option<Py<PyAny>>)>,
    renames: &HashMap<Slot, Option<String>>,
) -> PyResult<Bound<'py, PyAny>> {
    let changed: HashMap<usize, Option<Py<PyAny>>> =
        changes.into_iter().map(|(item, _, value)| (item, value)).collect();
    let copy = PyDict::new(py);
    for (item, (key, value)) in dict.iter().enumerate() {
        let value = match changed.get(&item) {
            Some(None) => continue,
            Some(Some(new)) => new.bind(py).clone(),
            None => value,
        };
        match renames.get(&(node, item)) {
            Some(None) => {}
            Some(Some(name)) => copy.set_item(name, value)?,
            None => copy.set_item(key, value)?,
        }
    }
    Ok(copy.into_any())
}

fn changes(py: Python<'_>, new: &Masked, value: &Bound<'_, PyAny>) -> PyResult<bool> {
    match new {
        Masked::Remove => Ok(true),
        Masked::Value(v) => v.bind(py).ne(value),
    }
}

#[pymethods]
impl Classified {
    #[new]
    fn new(scanner: PyRef<'_, crate::ScannerHandle>, labels_of: Vec<Vec<usize>>) -> Self {
        Classified {
            docs: Vec::new(),
            rows: Vec::new(),
            detectors: scanner.scanner().detectors.clone(),
            fingerprints: vec![HashMap::default(); labels_of.len()],
            labels_of,
            keyed: None,
            key_names: Vec::new(),
        }
    }

    /// Scan a document of the call (the body, then the query): its values join the rows, each
    /// with the labels of its detector. Returns the document's index in the call.
    fn scan(
        &mut self,
        py: Python<'_>,
        scanner: PyRef<'_, crate::ScannerHandle>,
        document: Py<Document>,
    ) -> PyResult<usize> {
        let doc = self.docs.len();
        {
            let seen = document.borrow(py);
            let found = scanner.scan_slots(&seen)?;
            for (string, start, end, detector, text) in found {
                let slot = &seen.strings[string];
                for &label in &self.labels_of[detector] {
                    self.rows.push(Row {
                        doc,
                        node: slot.node,
                        item: slot.item,
                        key: slot.key.clone_ref(py),
                        span: Some((start, end)),
                        string: Some(string),
                        detector: Some(detector),
                        label,
                        text: Some(text.clone()),
                        in_key: false,
                    });
                }
            }
            for (d, detector) in self.detectors.iter().enumerate() {
                if !detector.numbers() {
                    continue;
                }
                for number in &seen.numbers {
                    if detector.matches_whole(&number.text) {
                        for &label in &self.labels_of[d] {
                            self.rows.push(Row {
                                doc,
                                node: number.node,
                                item: number.item,
                                key: number.key.clone_ref(py),
                                span: None,
                                string: None,
                                detector: Some(d),
                                label,
                                text: Some(number.text.clone()),
                                in_key: false,
                            });
                        }
                    }
                }
            }
            self.scan_keys(py, &scanner, &seen, doc)?;
        }
        self.docs.push(document);
        Ok(doc)
    }

    /// The labels found in document `doc` so far.
    fn labels_in(&self, doc: usize) -> Vec<usize> {
        let mut seen: Vec<usize> = Vec::new();
        for row in self.rows.iter().filter(|r| r.doc == doc) {
            if !seen.contains(&row.label) {
                seen.push(row.label);
            }
        }
        seen
    }

    /// Keep the rows of `label` in document `doc` only inside the slots of `scope`, a label
    /// with a detector and paths (the reference's `_within_paths`).
    fn keep_within(
        &mut self,
        py: Python<'_>,
        doc: usize,
        label: usize,
        scope: Vec<(usize, Py<PyAny>)>,
    ) -> PyResult<()> {
        let document = self.docs[doc].bind(py).borrow();
        let mut slots = HashSet::default();
        for (node, key) in scope {
            if let Some(item) = document.item_of(py, node, key.bind(py))? {
                slots.insert((node, item));
            }
        }
        self.rows.retain(|row| {
            if row.doc != doc || row.label != label {
                return true;
            }
            let (mut node, mut item) = (row.node, row.item);
            loop {
                if slots.contains(&(node, item)) {
                    return true;
                }
                if node == HOLDER {
                    return false;
                }
                item = document.items[node];
                node = document.parents[node] as usize;
            }
        });
        Ok(())
    }

    /// Whole values of a path label in document `doc` (already filtered by the caller).
    fn add_wholes(&mut self, py: Python<'_>, doc: usize, label: usize, slots: Vec<(usize, Py<PyAny>)>) -> PyResult<()> {
        let document = self.docs[doc].clone_ref(py);
        let document = document.borrow(py);
        for (node, key) in slots {
            let bound = key.bind(py);
            let Some(item) = document.item_of(py, node, bound)? else { continue };
            let key = match bound.extract::<usize>() {
                Ok(i)
                    if bound.is_exact_instance_of::<pyo3::types::PyInt>()
                        && !document.container(node).bind(py).is_instance_of::<PyDict>() =>
                {
                    Key::Index(i)
                }
                _ => Key::Name(key),
            };
            self.rows.push(Row {
                doc,
                node,
                item,
                key,
                span: None,
                string: None,
                detector: None,
                label,
                text: None,
                in_key: false,
            });
        }
        Ok(())
    }

    /// Name every key holding a labelled value (the reference's `_name_keys`): the hash token of
    /// its first value's label (`tok_email_<12 hex>`), of that value when it is the whole key, else
    /// of the key (`fingerprint(key)`); `~2`, `~3`... after it when the name is taken in its
    /// object. Paths through the key show the name from now on.
    fn name_keys(
        &mut self,
        py: Python<'_>,
        names: Vec<String>,
        key: &[u8],
        fingerprint: Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let mut firsts: Vec<usize> = Vec::new();
        let mut seen: HashSet<(usize, Slot)> = HashSet::default();
        for (i, row) in self.rows.iter().enumerate() {
            if row.in_key && seen.insert((row.doc, (row.node, row.item))) {
                firsts.push(i);
            }
        }
        // per (doc, node), in order of first occurrence: {item: base name}
        let mut groups: Vec<((usize, usize), HashMap<usize, String>)> = Vec::new();
        let mut group_of: HashMap<(usize, usize), usize> = HashMap::default();
        for i in firsts {
            let (doc, node, item, label, detector, span) = {
                let r = &self.rows[i];
                (r.doc, r.node, r.item, r.label, r.detector, r.span)
            };
            let name = self.rows[i].key.to_object(py).into_bound(py);
            let length = name.len()?;
            let print = match (detector, self.rows[i].text.clone()) {
                (Some(d), Some(text)) if span == Some((0, length)) => self.detected_fingerprint(d, &text, key)?,
                _ => fingerprint.call1((&name,))?.extract::<String>()?,
            };
            let base = hash_token(&names[label], &print);
            let at = *group_of.entry((doc, node)).or_insert_with(|| {
                groups.push(((doc, node), HashMap::default()));
                groups.len() - 1
            });
            groups[at].1.insert(item, base);
        }
        for ((doc, node), bases) in groups {
            let document = self.docs[doc].clone_ref(py);
            let mut document = document.borrow_mut(py);
            let dict = document.container(node).bind(py).cast_exact::<PyDict>()?.clone();
            let taken = pyo3::types::PySet::empty(py)?;
            for (item, name) in dict.keys().iter().enumerate() {
                if !bases.contains_key(&item) {
                    taken.add(name)?;
                }
            }
            let mut renamed = Vec::new();
            // per base, the suffix to try next: names are only ever taken, so each search goes
            // on where the last one for its base stopped (thousands of keys with one base stay
            // linear)
            let mut suffixes: HashMap<&str, usize> = HashMap::default();
            for item in 0..dict.len() {
                let Some(base) = bases.get(&item) else { continue };
                let (mut name, mut n) = match suffixes.get(base.as_str()) {
                    None => (base.clone(), 2),
                    Some(&n) => (format!("{base}~{n}"), n + 1),
                };
                while taken.contains(&name)? {
                    name = format!("{base}~{n}");
                    n += 1;
                }
                suffixes.insert(base, n);
                taken.add(&name)?;
                self.key_names.push((doc, (node, item), name.clone()));
                renamed.push(((node, item), name));
            }
            document.rename_keys(renamed);
        }
        Ok(())
    }

    fn __len__(&self) -> usize {
        self.rows.len()
    }

    /// (node, key, span, detector index, label, text, in a key) of every row, in order (for tools and
    /// tests: the engine never asks for them).
    #[allow(clippy::type_complexity)]
    fn rows(
        &self,
        py: Python<'_>,
    ) -> Vec<(usize, Py<PyAny>, Option<Span>, Option<usize>, usize, Option<String>, bool)> {
        self.rows
            .iter()
            .map(|r| (r.node, r.key.to_object(py), r.span, r.detector, r.label, r.text.clone(), r.in_key))
            .collect()
    }

    /// (label, number of values) in order of first occurrence.
    fn labels(&self) -> Vec<(usize, usize)> {
        let mut out: Vec<(usize, usize)> = Vec::new();
        for row in &self.rows {
            match out.iter_mut().find(|(label, _)| *label == row.label) {
                Some(entry) => entry.1 += 1,
                None => out.push((row.label, 1)),
            }
        }
        out
    }

    /// The paths of the values of `labels`, in order (at most `limit`).
    #[pyo3(signature = (labels, limit = None))]
    fn paths(&self, py: Python<'_>, labels: Vec<usize>, limit: Option<usize>) -> PyResult<Vec<String>> {
        let mut out = Vec::new();
        for row in self.rows.iter().filter(|r| labels.contains(&r.label)) {
            if limit.is_some_and(|l| out.len() >= l) {
                break;
            }
            out.push(self.row_path(py, row)?);
        }
        Ok(out)
    }

    /// The forwarded and the recorded version of each document, masked by `plans` (per label:
    /// None, or (strength, order, first, style) of the enforced mask rules covering it).
    fn mask(
        &mut self,
        py: Python<'_>,
        plans: Vec<Option<(i64, usize, usize, String)>>,
        names: Vec<String>,
        key: &[u8],
        partial: Bound<'_, PyAny>,
        fingerprint: Bound<'_, PyAny>,
    ) -> PyResult<Vec<(Py<PyAny>, Py<PyAny>)>> {
        let plans = plans
            .into_iter()
            .map(|p| {
                p.map(|(strength, order, first, style)| {
                    Ok::<_, PyErr>(LabelPlan { strength, order, first, style: Style::parse(&style)? })
                })
                .transpose()
            })
            .collect::<PyResult<Vec<_>>>()?;
        let generic = Generic { partial, fingerprint, dumps: py.import("json")?.getattr("dumps")? };
        let plan = self.plan(py, &plans);
        let delta = self.delta(&plans, &plan);
        let (forwarded_keys, recorded_keys, keys_differ) = self.key_renames(&plans);
        let mut out = Vec::with_capacity(self.docs.len());
        for (doc, own) in plan.iter().enumerate() {
            let (forwarded_keys, recorded_keys) = (&forwarded_keys[doc], &recorded_keys[doc]);
            let edits = self.edits(py, doc, &own.wholes, &own.spans, &[own], &names, key, &generic)?;
            let body = self.apply(py, doc, &edits, forwarded_keys, &generic)?;
            if delta.is_none() && !keys_differ {
                out.push((body.clone_ref(py), body));
                continue;
            }
            let Some(extra) = delta.as_ref().map(|d| &d[doc]).filter(|extra| !extra.is_empty()) else {
                // The record renames every key the forwarded body does, and maybe more. When it
                // renames no more, the delta is in the call's other document: the record is
                // still a separate object.
                let renames = if recorded_keys.len() == forwarded_keys.len() { forwarded_keys } else { recorded_keys };
                let record = self.apply(py, doc, &edits, renames, &generic)?;
                out.push((body, record));
                continue;
            };
            let mut record: Vec<(Slot, usize, Masked)> = edits
                .into_iter()
                .filter(|(slot, _, _)| !extra.has_whole(slot) && !extra.span_index.contains_key(slot))
                .collect();
            let more = self.edits(py, doc, &extra.wholes, &extra.spans, &[extra, own], &names, key, &generic)?;
            record.extend(more);
            if record.is_empty() && recorded_keys.is_empty() {
                out.push((body, self.original(py, doc)?));
                continue;
            }
            let recorded = self.apply(py, doc, &record, recorded_keys, &generic)?;
            out.push((body, recorded));
        }
        Ok(out)
    }

    /// The findings, one per row in order (see `findings::Findings`), with `labels[label]` =
    /// (name, level, action, mask, rules, monitor) and `fingerprint(value)` for values of path
    /// labels.
    #[allow(clippy::too_many_arguments)]
    fn findings(
        &mut self,
        py: Python<'_>,
        key: &[u8],
        fingerprint: Bound<'_, PyAny>,
        direction: Bound<'_, PyString>,
        labels: Vec<Option<Bound<'_, PyTuple>>>,
        detector_names: Vec<Bound<'_, PyString>>,
        finding_type: Bound<'_, PyAny>,
    ) -> PyResult<Findings> {
        let mut rows = Vec::with_capacity(self.rows.len());
        for i in 0..self.rows.len() {
            let path = self.row_path(py, &self.rows[i])?;
            let (label, detector, span) = (self.rows[i].label, self.rows[i].detector, self.rows[i].span);
            let print = match (detector, self.rows[i].text.as_deref()) {
                (Some(d), Some(text)) => {
                    let text = text.to_owned();
                    self.detected_fingerprint(d, &text, key)?
                }
                _ => {
                    let document = self.docs[self.rows[i].doc].bind(py).borrow();
                    let value = self.value_of(py, &document, i)?;
                    fingerprint.call1((value,))?.extract::<String>()?
                }
            };
            rows.push(Found { path, fingerprint: print, label, detector, span });
        }
        Findings::new(direction, rows, labels, detector_names, finding_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_tokens() {
        for token in ["[REDACTED:ssn]", "tok_ssn_0123456789ab", "tok_a_b_0123456789ab", "[REDACTED:a.b-c]"] {
            assert!(is_mask_token(token), "{token}");
        }
        for text in ["[REDACTED:]", "[REDACTED:a b]", "tok__0123456789ab", "tok_ssn_0123456789aB", "tok_ssn_123", "x"] {
            assert!(!is_mask_token(text), "{text}");
        }
    }
}
