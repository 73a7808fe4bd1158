//! A decoded body flattened for classification, walked in Rust exactly as the reference's
//! `Document` (tests/reference/walk.py) walks it: the same nodes in the same order, the same
//! strings, the same large integers, JSON inside strings decoded by Python's own `json.loads`.
//!
//! Nodes are containers (node 0 is a one-item list holding the body); values live in (node,
//! key) slots. Python sees the tables it needs (`containers`, `parents`, ...) as lists built on
//! first use: classifying a body that holds nothing costs no Python object per value.

use rustc_hash::FxHashMap as HashMap;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyFloat, PyInt, PyList, PyString};

pub const HOLDER: usize = 0;
pub const PLAIN: u8 = 0;
pub const DECODED_JSON: u8 = 1;
/// 13 digits; smaller integers cannot be card numbers.
const SMALLEST_CARD: u64 = 1_000_000_000_000;
/// JSON inside a string inside JSON...: deeper levels are treated as text.
const MAX_EMBEDDED_JSON: u8 = 8;

/// A slot's key: a dict key (the key object itself) or a list index.
pub enum Key {
    Name(Py<PyAny>),
    Index(usize),
}

impl Key {
    pub fn clone_ref(&self, py: Python<'_>) -> Key {
        match self {
            Key::Name(name) => Key::Name(name.clone_ref(py)),
            Key::Index(i) => Key::Index(*i),
        }
    }

    pub fn to_object(&self, py: Python<'_>) -> Py<PyAny> {
        match self {
            Key::Name(name) => name.clone_ref(py),
            Key::Index(i) => i.into_pyobject(py).expect("an int").into_any().unbind(),
        }
    }
}

/// A string value of the body: where it is and its text (UTF-8; lone surrogates as U+FFFD,
/// one character for one).
pub struct StringSlot {
    pub node: usize,
    /// The slot's position among its container's items (a slot's identity: keys may repeat
    /// across containers, never inside one).
    pub item: usize,
    pub key: Key,
    pub value: Py<PyString>,
    /// Where its text is in the document's `texts` (all strings' UTF-8, one after the other).
    pub range: (usize, usize),
    /// The text is the string itself (false: it held lone surrogates, read as U+FFFD).
    pub exact: bool,
}

/// A distinct object key of the document (a key can hold a labelled value:
/// `{"by_email": {"jane@example.com": ...}}`), read as `StringSlot` reads its text.
pub struct KeyText {
    pub value: Py<PyString>,
    pub text: String,
    pub exact: bool,
}

pub struct NumberSlot {
    pub node: usize,
    pub item: usize,
    pub key: Key,
    pub text: String,
}

#[pyclass(module = "toolgate.rules._core")]
pub struct Document {
    #[pyo3(get)]
    root_name: String,
    #[pyo3(get)]
    holder: Py<PyList>,
    pub containers: Vec<Py<PyAny>>,
    pub parents: Vec<isize>,
    pub keys: Vec<Option<Key>>,
    /// Each node's position among its parent's items (its slot's identity, see `StringSlot`).
    pub items: Vec<usize>,
    pub kinds: Vec<u8>,
    pub embedded: Vec<u8>,
    pub strings: Vec<StringSlot>,
    pub texts: String,
    pub numbers: Vec<NumberSlot>,
    /// The distinct keys of at least `min_length` characters, first seen first.
    pub keys_found: Vec<KeyText>,
    /// (node, item): the new name of a key renamed for the record, shown in every path through it.
    pub renamed: HashMap<(usize, usize), String>,
    node_of: Option<HashMap<usize, usize>>,
    node_paths: HashMap<usize, String>,
    key_texts: HashMap<String, String>,
    lists: PyOnceLock<Py<PyAny>>,
}

fn utf8<'a>(s: &'a Bound<'_, PyString>) -> (std::borrow::Cow<'a, str>, bool) {
    match s.to_str() {
        Ok(text) => (text.into(), true),
        Err(_) => (s.to_string_lossy(), false),
    }
}

impl Document {
    /// The text of a string value.
    pub fn text(&self, slot: &StringSlot) -> &str {
        &self.texts[slot.range.0..slot.range.1]
    }

    fn add_node(&mut self, container: Py<PyAny>, parent: usize, item: usize, key: Key, kind: u8) -> usize {
        self.containers.push(container);
        self.parents.push(parent as isize);
        self.items.push(item);
        self.keys.push(Some(key));
        self.kinds.push(kind);
        self.embedded.push(self.embedded[parent] + u8::from(kind == DECODED_JSON));
        self.containers.len() - 1
    }

    fn walk(&mut self, py: Python<'_>, decode_embedded: bool, min_length: usize) -> PyResult<()> {
        let mut pending = vec![HOLDER];
        static LOADS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        let loads = if decode_embedded {
            Some(LOADS.get_or_try_init(py, || py.import("json")?.getattr("loads").map(Bound::unbind))?.bind(py).clone())
        } else {
            None
        };
        // Keys repeat in every record, mostly as the same objects (json's and orjson's key caches)
        // in the same places: a key object at the place it had in the last object is passed over,
        // any other is read once, and each text kept once.
        let mut keys_seen: rustc_hash::FxHashSet<usize> = Default::default();
        let mut key_texts: rustc_hash::FxHashSet<String> = Default::default();
        let mut last_keys: Vec<usize> = Vec::new();
        while let Some(node) = pending.pop() {
            let container = self.containers[node].bind(py).clone();
            let items: Vec<(Key, Bound<'_, PyAny>)> = if let Ok(dict) = container.cast_exact::<PyDict>() {
                let mut items = Vec::with_capacity(dict.len());
                for (position, (k, v)) in dict.iter().enumerate() {
                    let object = k.as_ptr() as usize;
                    if last_keys.get(position) != Some(&object) {
                        if keys_seen.insert(object) {
                            if let Ok(name) = k.cast_exact::<PyString>() {
                                self.add_key(name, min_length, &mut key_texts);
                            }
                        }
                        match last_keys.get_mut(position) {
                            Some(last) => *last = object,
                            None => last_keys.push(object),
                        }
                    }
                    items.push((Key::Name(k.unbind()), v));
                }
                items
            } else {
                let list = container.cast::<PyList>()?;
                list.iter().enumerate().map(|(i, v)| (Key::Index(i), v)).collect()
            };
            for (item, (key, value)) in items.into_iter().enumerate() {
                if let Ok(string) = value.cast_exact::<PyString>() {
                    let (text, exact) = utf8(string);
                    let length = if text.is_ascii() { text.len() } else { text.chars().count() };
                    if length < min_length {
                        continue;
                    }
                    if let Some(loads) = &loads {
                        if matches!(text.as_bytes()[0], b'[' | b'{' | b' ' | b'\n' | b'\t' | b'\r') {
                            if let Some(decoded) = self.embedded_json(loads, &text, node)? {
                                let child = self.add_node(decoded, node, item, key, DECODED_JSON);
                                pending.push(child);
                                continue;
                            }
                        }
                    }
                    let start = self.texts.len();
                    self.texts.push_str(&text);
                    let range = (start, self.texts.len());
                    self.strings.push(StringSlot { node, item, key, value: string.clone().unbind(), range, exact });
                } else if value.is_exact_instance_of::<PyDict>() || value.is_exact_instance_of::<PyList>() {
                    if value.len()? > 0 {
                        let child = self.add_node(value.unbind(), node, item, key, PLAIN);
                        pending.push(child);
                    }
                } else if value.is_exact_instance_of::<PyInt>() {
                    // an integer beyond u64 has more than 19 digits: no card number
                    if let Ok(number) = value.extract::<u64>() {
                        if number >= SMALLEST_CARD {
                            self.numbers.push(NumberSlot { node, item, key, text: number.to_string() });
                        }
                    }
                } else if value.is_exact_instance_of::<PyFloat>() {
                    // `4.111111111111111e15` is the integer a backend reads: the same card
                    let number: f64 = value.extract()?;
                    if (SMALLEST_CARD as f64) <= number && number < 1e19 && number.fract() == 0.0 {
                        self.numbers.push(NumberSlot { node, item, key, text: (number as u64).to_string() });
                    }
                }
            }
        }
        Ok(())
    }

    fn add_key(&mut self, name: &Bound<'_, PyString>, min_length: usize, seen: &mut rustc_hash::FxHashSet<String>) {
        let (text, exact) = utf8(name);
        let length = if text.is_ascii() { text.len() } else { text.chars().count() };
        if length < min_length {
            return;
        }
        // a text read with lone surrogates stands for several keys: each is kept
        if exact && !seen.insert(text.clone().into_owned()) {
            return;
        }
        self.keys_found.push(KeyText { value: name.clone().unbind(), text: text.into_owned(), exact });
    }

    /// The object or array a string holds, or None when it is just text.
    fn embedded_json(&self, loads: &Bound<'_, PyAny>, text: &str, node: usize) -> PyResult<Option<Py<PyAny>>> {
        if self.embedded[node] >= MAX_EMBEDDED_JSON {
            return Ok(None);
        }
        let stripped = crate::detectors::py_strip(text);
        let (Some(first), Some(last)) = (stripped.bytes().next(), stripped.bytes().last()) else {
            return Ok(None);
        };
        if !matches!(first, b'[' | b'{') || !matches!(last, b']' | b'}') {
            return Ok(None);
        }
        let py = loads.py();
        match loads.call1((stripped,)) {
            Ok(decoded) => {
                let container = decoded.is_instance_of::<PyDict>() || decoded.is_instance_of::<PyList>();
                Ok((container && decoded.is_truthy()?).then(|| decoded.unbind()))
            }
            Err(err)
                if err.is_instance_of::<pyo3::exceptions::PyValueError>(py)
                    || err.is_instance_of::<pyo3::exceptions::PyRecursionError>(py) =>
            {
                Ok(None)
            }
            Err(err) => Err(err),
        }
    }

    /// The position of `key` among the items of container `node` (None: not one of its keys).
    pub fn item_of(&self, py: Python<'_>, node: usize, key: &Bound<'_, PyAny>) -> PyResult<Option<usize>> {
        let container = self.containers[node].bind(py);
        if let Ok(dict) = container.cast_exact::<PyDict>() {
            for (i, k) in dict.keys().iter().enumerate() {
                if k.eq(key)? {
                    return Ok(Some(i));
                }
            }
            return Ok(None);
        }
        let length = container.len()?;
        Ok(key.extract::<isize>().ok().and_then(|i| {
            let i = if i < 0 { i + length as isize } else { i };
            (0..length as isize).contains(&i).then_some(i as usize)
        }))
    }

    pub fn container(&self, node: usize) -> &Py<PyAny> {
        &self.containers[node]
    }

    fn key_text(&mut self, key: &Key, py: Python<'_>, prefix: &str) -> PyResult<String> {
        let text = match key {
            Key::Index(i) => format!("[{i}]"),
            Key::Name(name) => {
                let bound = name.bind(py);
                match bound.cast_exact::<PyString>() {
                    // field names repeat in every record: each is formatted once
                    Ok(s) => {
                        let raw = s.to_string_lossy();
                        match self.key_texts.get(raw.as_ref()) {
                            Some(known) => known.clone(),
                            None => {
                                let text = format_key(bound)?;
                                self.key_texts.insert(raw.into_owned(), text.clone());
                                text
                            }
                        }
                    }
                    Err(_) => format_key(bound)?,
                }
            }
        };
        Ok(if prefix == "?" && text.starts_with('.') { text[1..].to_owned() } else { text })
    }

    /// The path of a container node (remembered: its items share it). Iterative: a body may be
    /// nested thousands of levels deep (JSON inside strings inside JSON).
    fn node_path(&mut self, py: Python<'_>, node: usize) -> PyResult<String> {
        // the nodes on the way up whose paths are not known yet, innermost first
        let mut missing = Vec::new();
        let mut at = node;
        while !self.node_paths.contains_key(&at) {
            missing.push(at);
            let parent = self.parents[at] as usize;
            if parent == HOLDER {
                break;
            }
            at = parent;
        }
        for &node in missing.iter().rev() {
            let parent = self.parents[node] as usize;
            let suffix = if self.kinds[node] == DECODED_JSON { "<json>" } else { "" };
            let path = if parent == HOLDER {
                format!("{}{suffix}", self.root_name)
            } else {
                let prefix = self.node_paths[&parent].clone();
                let text = match self.renamed.get(&(parent, self.items[node])) {
                    Some(name) => renamed_text(py, name, &prefix)?,
                    None => {
                        let key = self.keys[node].as_ref().expect("every node but the holder has a key").clone_ref(py);
                        self.key_text(&key, py, &prefix)?
                    }
                };
                format!("{prefix}{text}{suffix}")
            };
            self.node_paths.insert(node, path);
        }
        Ok(self.node_paths[&node].clone())
    }

    /// `$.customers[0].ssn`, `$.args<json>.card`, `?email`, for the slot (node, item).
    pub fn slot_path(&mut self, py: Python<'_>, node: usize, item: usize, key: &Key) -> PyResult<String> {
        if node == HOLDER {
            return Ok(self.root_name.clone());
        }
        let prefix = self.node_path(py, node)?;
        let text = match self.renamed.get(&(node, item)) {
            Some(name) => renamed_text(py, name, &prefix)?,
            None => self.key_text(key, py, &prefix)?,
        };
        Ok(format!("{prefix}{text}"))
    }

    /// Render the keys at these (node, item) slots by their new names from now on.
    pub fn rename_keys(&mut self, renamed: impl IntoIterator<Item = ((usize, usize), String)>) {
        self.renamed.extend(renamed);
        self.node_paths.clear();
    }
}

/// `key_text` of a key's new name.
fn renamed_text(py: Python<'_>, name: &str, prefix: &str) -> PyResult<String> {
    let text = format_key(PyString::new(py, name).as_any())?;
    Ok(if prefix == "?" && text.starts_with('.') { text[1..].to_owned() } else { text })
}

/// The reference's `format_key`: `.name`, `[3]` or `['odd key']`.
fn format_key(key: &Bound<'_, PyAny>) -> PyResult<String> {
    if key.is_instance_of::<PyInt>() {
        return Ok(format!("[{}]", key.str()?));
    }
    let text = key.str()?.to_string_lossy().into_owned();
    let bytes = text.as_bytes();
    let identifier = !bytes.is_empty()
        && (bytes[0].is_ascii_alphabetic() || bytes[0] == b'_')
        && bytes.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if identifier {
        return Ok(format!(".{text}"));
    }
    Ok(format!("['{}']", text.replace('\\', "\\\\").replace('\'', "\\'")))
}

#[pymethods]
impl Document {
    #[new]
    #[pyo3(signature = (value, root_name = "$".to_owned(), decode_embedded = true, min_length = 3))]
    fn new(
        py: Python<'_>,
        value: Py<PyAny>,
        root_name: String,
        decode_embedded: bool,
        min_length: usize,
    ) -> PyResult<Self> {
        let holder = PyList::new(py, [value])?.unbind();
        let mut document = Document {
            root_name,
            containers: vec![holder.clone_ref(py).into_any()],
            holder,
            parents: vec![-1],
            keys: vec![None],
            items: vec![0],
            kinds: vec![PLAIN],
            embedded: vec![0],
            strings: Vec::new(),
            texts: String::new(),
            numbers: Vec::new(),
            keys_found: Vec::new(),
            renamed: HashMap::default(),
            node_of: None,
            node_paths: HashMap::default(),
            key_texts: HashMap::default(),
            lists: PyOnceLock::new(),
        };
        document.walk(py, decode_embedded, min_length)?;
        Ok(document)
    }

    /// (containers, parents, keys, kinds, embedded) as Python lists, built once.
    fn tables(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.lists
            .get_or_try_init(py, || {
                let containers = PyList::new(py, self.containers.iter().map(|c| c.clone_ref(py)))?;
                let parents = PyList::new(py, &self.parents)?;
                let keys = PyList::new(py, self.keys.iter().map(|k| k.as_ref().map(|k| k.to_object(py))))?;
                let kinds = PyList::new(py, &self.kinds)?;
                let embedded = PyList::new(py, &self.embedded)?;
                Ok::<_, PyErr>((containers, parents, keys, kinds, embedded).into_pyobject(py)?.into_any().unbind())
            })
            .map(|t| t.clone_ref(py))
    }

    #[getter]
    fn containers(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.tables(py)?.bind(py).get_item(0).map(Bound::unbind)
    }

    #[getter]
    fn parents(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.tables(py)?.bind(py).get_item(1).map(Bound::unbind)
    }

    #[getter]
    fn keys(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.tables(py)?.bind(py).get_item(2).map(Bound::unbind)
    }

    #[getter]
    fn kinds(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.tables(py)?.bind(py).get_item(3).map(Bound::unbind)
    }

    #[getter]
    fn embedded(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.tables(py)?.bind(py).get_item(4).map(Bound::unbind)
    }

    /// The string values and their (node, key) slots, in walk order.
    #[getter]
    fn strings(&self, py: Python<'_>) -> Vec<Py<PyString>> {
        self.strings.iter().map(|s| s.value.clone_ref(py)).collect()
    }

    #[getter]
    fn string_slots(&self, py: Python<'_>) -> Vec<(usize, Py<PyAny>)> {
        self.strings.iter().map(|s| (s.node, s.key.to_object(py))).collect()
    }

    /// The distinct object keys a value could be found in, first seen first.
    #[getter]
    fn key_strings(&self, py: Python<'_>) -> Vec<Py<PyString>> {
        self.keys_found.iter().map(|k| k.value.clone_ref(py)).collect()
    }

    /// The integers (as ints) a card number could be, and their slots.
    #[getter]
    fn numbers(&self, py: Python<'_>) -> PyResult<Vec<Py<PyAny>>> {
        let int = py.get_type::<PyInt>();
        self.numbers.iter().map(|n| Ok(int.call1((n.text.as_str(),))?.unbind())).collect()
    }

    #[getter]
    fn number_slots(&self, py: Python<'_>) -> Vec<(usize, Py<PyAny>)> {
        self.numbers.iter().map(|n| (n.node, n.key.to_object(py))).collect()
    }

    fn value_at<'py>(&self, py: Python<'py>, node: usize, key: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        self.containers[node].bind(py).get_item(key)
    }

    /// The node of a container object of the top-level body (for JSONPath results).
    fn node_of(&mut self, container: &Bound<'_, PyAny>) -> Option<usize> {
        let map = self.node_of.get_or_insert_with(|| {
            let mut map = HashMap::default();
            for (n, c) in self.containers.iter().enumerate() {
                if self.embedded[n] == 0 {
                    map.insert(c.as_ptr() as usize, n);
                }
            }
            map
        });
        map.get(&(container.as_ptr() as usize)).copied()
    }

    fn top_level_dicts(&self, py: Python<'_>) -> Vec<usize> {
        (0..self.containers.len())
            .filter(|&n| self.embedded[n] == 0 && self.containers[n].bind(py).is_exact_instance_of::<PyDict>())
            .collect()
    }

    /// The slot itself and every enclosing slot, innermost first.
    fn ancestors(&self, py: Python<'_>, node: usize, key: Py<PyAny>) -> Vec<(usize, Py<PyAny>)> {
        let mut out = vec![(node, key)];
        let mut node = node;
        while node > HOLDER {
            let key = self.keys[node].as_ref().expect("a key").to_object(py);
            node = self.parents[node] as usize;
            out.push((node, key));
        }
        out
    }

    /// A JSONPath-like location: `$.customers[0].ssn`, `$.args<json>.card`, `?email`.
    fn path(&mut self, py: Python<'_>, node: usize, key: &Bound<'_, PyAny>) -> PyResult<String> {
        let item = self.item_of(py, node, key)?.unwrap_or(usize::MAX);
        let key = match key.extract::<usize>() {
            Ok(i) if key.is_exact_instance_of::<PyInt>() => Key::Index(i),
            _ => Key::Name(key.clone().unbind()),
        };
        self.slot_path(py, node, item, &key)
    }
}
