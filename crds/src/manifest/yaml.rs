//! A YAML reader that keeps the line of every node, built on yaml-rust2's marked events.

// serde_yaml_ng resolves values but forgets where they were written; reports need `file:line`
// for any field path, so the loader builds its own small tree from parser events. Scalars are
// resolved with the YAML 1.2 core schema (as serde_yaml_ng does), so JSON files read the same.

use std::collections::{HashMap, HashSet};

use serde_json::Value;
use yaml_rust2::{
    Event,
    parser::{Parser, Tag},
    scanner::TScalarStyle,
};

/// Kubernetes objects are shallow; the tree is converted and dropped recursively, so the depth
/// must be bounded whatever the input.
pub(crate) const MAX_DEPTH: usize = 128;

/// One YAML node and the line it starts on.
#[derive(Clone, Debug)]
pub(crate) struct Node {
    pub(crate) line: usize,
    pub(crate) kind: NodeKind,
    /// Nodes in this subtree (itself included) and its height, so that an alias can be checked
    /// against the node budget and the depth limit before it is expanded.
    size: usize,
    height: usize,
}

#[derive(Clone, Debug)]
pub(crate) enum NodeKind {
    Scalar(Value),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

/// A mapping entry; `line` is the line of the key, which is where a reader looks for a field.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub(crate) key: String,
    pub(crate) line: usize,
    pub(crate) value: Node,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    pub(crate) line: usize,
    pub(crate) message: String,
}

/// One document of a stream, in order: its root node, or why it could not be read.
#[derive(Debug)]
pub(crate) enum Parsed {
    Document(Node),
    Error(SyntaxError),
}

/// Reads every document of a stream. A syntax error ends the broken document only: reading
/// resumes at the next `---` line, so one bad document does not hide the others.
pub(crate) fn parse(text: &str) -> Vec<Parsed> {
    let mut out = Vec::new();
    // Aliases can expand a small text into a huge tree ("billion laughs"); no manifest needs
    // more than a few expansions of itself.
    let mut budget = text.len().saturating_mul(4).saturating_add(10_000);
    let (mut byte, mut lines_before) = (0, 0);
    let last_line = last_line(text);
    loop {
        let segment = text.get(byte..).unwrap_or_default();
        match parse_segment(segment, lines_before, last_line, &mut budget, &mut out) {
            Ok(()) => break,
            Err(broken_doc_line) => match next_document_marker(text, broken_doc_line) {
                Some((b, l)) => (byte, lines_before) = (b, l),
                None => break,
            },
        }
    }
    out
}

/// Parses `text` (which starts after `lines_before` lines of the file) until its end or the
/// first syntax error; on error returns the line where the broken document started.
fn parse_segment(
    text: &str,
    lines_before: usize,
    last_line: usize,
    budget: &mut usize,
    out: &mut Vec<Parsed>,
) -> Result<(), usize> {
    let mut parser = Parser::new_from_str(text);
    let mut doc: Option<Builder> = None;
    let mut doc_line = lines_before + 1;
    loop {
        let (event, mark) = match parser.next_token() {
            Ok(next) => next,
            Err(e) => {
                let mark = e.marker();
                out.push(Parsed::Error(SyntaxError {
                    line: (mark.line().max(1) + lines_before).min(last_line),
                    message: format!("invalid yaml: {} (column {})", e.info(), mark.col() + 1),
                }));
                return Err(doc_line);
            }
        };
        // The parser places the end of a stream without a final newline on a line of its own.
        let line = (mark.line().max(1) + lines_before).min(last_line);
        match event {
            Event::StreamEnd => return Ok(()),
            Event::DocumentStart => {
                doc_line = line;
                doc = Some(Builder::new(line));
            }
            Event::DocumentEnd => {
                if let Some(b) = doc.take() {
                    out.push(b.finish());
                }
            }
            Event::StreamStart | Event::Nothing => {}
            other => {
                if let Some(b) = doc.as_mut() {
                    b.event(other, line, budget);
                }
            }
        }
    }
}

/// The first `---` line after line `after` (1-based): its byte offset and the lines before it.
fn next_document_marker(text: &str, after: usize) -> Option<(usize, usize)> {
    let bytes = text.as_bytes();
    let (mut start, mut line) = (0, 1);
    loop {
        let rest = text.get(start..)?;
        if line > after && is_document_marker(rest) {
            return Some((start, line - 1));
        }
        let end = start + rest.bytes().position(|b| b == b'\n' || b == b'\r')?;
        start = end + 1;
        if bytes.get(end) == Some(&b'\r') && bytes.get(start) == Some(&b'\n') {
            start += 1;
        }
        line += 1;
    }
}

fn is_document_marker(rest: &str) -> bool {
    rest.strip_prefix("---")
        .is_some_and(|after| after.is_empty() || after.starts_with([' ', '\t', '\r', '\n']))
}

/// Line breaks as YAML counts them (`\r\n`, `\r` or `\n`), which is how the parser numbers
/// lines; everything that reports a line counts the same way.
pub(crate) fn count_breaks(bytes: &[u8]) -> usize {
    let crlf = bytes.windows(2).filter(|w| w == b"\r\n").count();
    bytes.iter().filter(|&&b| b == b'\n' || b == b'\r').count() - crlf
}

/// The last line that exists in `text`, so that an error found at the end of the stream points
/// at a line an editor shows.
fn last_line(text: &str) -> usize {
    let breaks = count_breaks(text.as_bytes());
    if text.ends_with(['\n', '\r']) {
        breaks.max(1)
    } else {
        breaks + 1
    }
}

// === impl Node ===

impl Node {
    fn leaf(line: usize, value: Value) -> Self {
        Node {
            line,
            kind: NodeKind::Scalar(value),
            size: 1,
            height: 1,
        }
    }

    pub(crate) fn is_null(&self) -> bool {
        matches!(self.kind, NodeKind::Scalar(Value::Null))
    }

    /// The entry under `key`, if this is a mapping that has it.
    pub(crate) fn get(&self, key: &str) -> Option<&Entry> {
        match &self.kind {
            NodeKind::Map(entries) => entries.iter().find(|e| e.key == key),
            _ => None,
        }
    }

    pub(crate) fn as_str(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar(Value::String(s)) => Some(s),
            _ => None,
        }
    }

    /// What a message calls this node when it is not what was expected.
    pub(crate) fn describe(&self) -> &'static str {
        match &self.kind {
            NodeKind::Scalar(Value::Null) => "null",
            NodeKind::Scalar(Value::Bool(_)) => "a boolean",
            NodeKind::Scalar(Value::Number(_)) => "a number",
            NodeKind::Scalar(_) => "a string",
            NodeKind::Seq(_) => "a list",
            NodeKind::Map(_) => "a mapping",
        }
    }

    pub(crate) fn to_json(&self) -> Value {
        match &self.kind {
            NodeKind::Scalar(v) => v.clone(),
            NodeKind::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            NodeKind::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|e| (e.key.clone(), e.value.to_json()))
                    .collect(),
            ),
        }
    }

    /// The line of the field at `path` (`spec.backends[1].weight`, as serde_path_to_error and
    /// validation write paths), or of the deepest part of the path that exists.
    ///
    /// Keys may contain dots (`switchyard.dev/data-plane`), so a key is matched against the
    /// mapping's own keys, longest first. HTTP headers are accepted both as a map and as a list of
    /// single-key maps, so `[i]` on a map means its i-th entry and `.name` on a list means the
    /// element that has that key.
    pub(crate) fn line_of(&self, path: &str) -> usize {
        let mut node = self;
        let mut line = self.line;
        let mut rest = path;
        loop {
            rest = rest.strip_prefix('.').unwrap_or(rest);
            if rest.is_empty() {
                return line;
            }
            if let Some(index) = rest.strip_prefix('[') {
                let Some((digits, after)) = index.split_once(']') else {
                    return line;
                };
                let Ok(i) = digits.parse::<usize>() else {
                    return line;
                };
                let next = match &node.kind {
                    NodeKind::Seq(items) => items.get(i).map(|n| (n.line, n)),
                    NodeKind::Map(entries) => entries.get(i).map(|e| (e.line, &e.value)),
                    NodeKind::Scalar(_) => None,
                };
                let Some((l, n)) = next else { return line };
                (line, node, rest) = (l, n, after);
                continue;
            }
            let candidates: Vec<&Entry> = match &node.kind {
                NodeKind::Map(entries) => entries.iter().collect(),
                NodeKind::Seq(items) => items
                    .iter()
                    .filter_map(|n| match &n.kind {
                        NodeKind::Map(entries) => Some(entries.iter()),
                        _ => None,
                    })
                    .flatten()
                    .collect(),
                NodeKind::Scalar(_) => return line,
            };
            let found = candidates
                .into_iter()
                .filter(|e| {
                    rest.strip_prefix(e.key.as_str())
                        .is_some_and(|after| after.is_empty() || after.starts_with(['.', '[']))
                })
                .max_by_key(|e| e.key.len());
            let Some(entry) = found else { return line };
            (line, node, rest) = (entry.line, &entry.value, &rest[entry.key.len()..]);
        }
    }
}

// === Builder ===

/// Turns the events of one document into a tree, recording the first problem that makes the
/// document unusable (duplicate key, complex key, depth, alias budget) while still consuming
/// the document's events so that the next one starts cleanly.
struct Builder {
    line: usize,
    stack: Vec<Frame>,
    root: Option<Node>,
    anchors: HashMap<usize, Node>,
    error: Option<SyntaxError>,
    /// Open containers being ignored (past the depth limit, or used as a key).
    skip: usize,
    skipping_key: bool,
}

enum Frame {
    Seq {
        line: usize,
        anchor: usize,
        items: Vec<Node>,
    },
    Map(MapFrame),
}

struct MapFrame {
    line: usize,
    anchor: usize,
    entries: Vec<Entry>,
    keys: HashSet<String>,
    key: Option<PendingKey>,
    merges: Vec<(usize, Node)>,
}

enum PendingKey {
    Key(String, usize),
    /// `<<`: the value is merged into this mapping (YAML 1.1 merge keys, which Kubernetes'
    /// YAML reader honours).
    Merge(usize),
    /// A key we refused; its value is read and dropped.
    Invalid,
}

impl Builder {
    fn new(line: usize) -> Self {
        Builder {
            line,
            stack: Vec::new(),
            root: None,
            anchors: HashMap::new(),
            error: None,
            skip: 0,
            skipping_key: false,
        }
    }

    fn fail(&mut self, line: usize, message: impl Into<String>) {
        if self.error.is_none() {
            self.error = Some(SyntaxError {
                line,
                message: message.into(),
            });
        }
    }

    fn finish(self) -> Parsed {
        if let Some(e) = self.error {
            return Parsed::Error(e);
        }
        Parsed::Document(
            self.root
                .unwrap_or_else(|| Node::leaf(self.line, Value::Null)),
        )
    }

    /// Whether the next node completes a key of the innermost mapping.
    fn expects_key(&self) -> bool {
        matches!(self.stack.last(), Some(Frame::Map(m)) if m.key.is_none())
    }

    fn set_key(&mut self, key: PendingKey) {
        if let Some(Frame::Map(m)) = self.stack.last_mut() {
            m.key = Some(key);
        }
    }

    fn event(&mut self, event: Event, line: usize, budget: &mut usize) {
        if self.skip > 0 {
            match event {
                Event::SequenceStart(..) | Event::MappingStart(..) => self.skip += 1,
                Event::SequenceEnd | Event::MappingEnd => {
                    self.skip -= 1;
                    if self.skip == 0 {
                        if self.skipping_key {
                            self.set_key(PendingKey::Invalid);
                        } else {
                            self.add(Node::leaf(line, Value::Null), 0);
                        }
                    }
                }
                _ => {}
            }
            return;
        }
        match event {
            Event::Scalar(text, style, anchor, tag) => {
                if self.expects_key() {
                    if anchor > 0 {
                        self.anchors
                            .insert(anchor, Node::leaf(line, Value::String(text.clone())));
                    }
                    let merge = text == "<<" && style == TScalarStyle::Plain && tag.is_none();
                    self.set_key(if merge {
                        PendingKey::Merge(line)
                    } else {
                        PendingKey::Key(text, line)
                    });
                    return;
                }
                let value = resolve(text, style, tag.as_ref());
                self.add(Node::leaf(line, value), anchor);
            }
            Event::Alias(id) => self.alias(id, line, budget),
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                let is_key = self.expects_key();
                if is_key || self.stack.len() >= MAX_DEPTH {
                    if is_key {
                        self.fail(line, "mapping keys must be strings, not lists or mappings");
                    } else {
                        self.fail(line, format!("nesting is deeper than {MAX_DEPTH} levels"));
                    }
                    self.skip = 1;
                    self.skipping_key = is_key;
                    return;
                }
                self.stack.push(match event {
                    Event::SequenceStart(..) => Frame::Seq {
                        line,
                        anchor,
                        items: Vec::new(),
                    },
                    _ => Frame::Map(MapFrame {
                        line,
                        anchor,
                        entries: Vec::new(),
                        keys: HashSet::new(),
                        key: None,
                        merges: Vec::new(),
                    }),
                });
            }
            Event::SequenceEnd | Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Seq {
                    line,
                    anchor,
                    items,
                }) => {
                    let size = items.iter().map(|n| n.size).fold(1, usize::saturating_add);
                    let height = 1 + items.iter().map(|n| n.height).max().unwrap_or(0);
                    self.add(
                        Node {
                            line,
                            kind: NodeKind::Seq(items),
                            size,
                            height,
                        },
                        anchor,
                    );
                }
                Some(Frame::Map(m)) => {
                    let anchor = m.anchor;
                    let node = self.close_map(m);
                    self.add(node, anchor);
                }
                None => {}
            },
            Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd
            | Event::Nothing => {}
        }
    }

    fn alias(&mut self, id: usize, line: usize, budget: &mut usize) {
        let Some(target) = self.anchors.get(&id) else {
            self.fail(line, "alias to an unknown anchor");
            return self.add(Node::leaf(line, Value::Null), 0);
        };
        if self.expects_key() {
            let key = match &target.kind {
                NodeKind::Scalar(Value::String(s)) => PendingKey::Key(s.clone(), line),
                NodeKind::Scalar(v) => PendingKey::Key(v.to_string(), line),
                _ => {
                    self.fail(line, "mapping keys must be strings, not lists or mappings");
                    PendingKey::Invalid
                }
            };
            return self.set_key(key);
        }
        if self.stack.len() + target.height > MAX_DEPTH {
            self.fail(line, format!("nesting is deeper than {MAX_DEPTH} levels"));
            return self.add(Node::leaf(line, Value::Null), 0);
        }
        if target.size > *budget {
            self.fail(line, "aliases expand to too many nodes");
            return self.add(Node::leaf(line, Value::Null), 0);
        }
        *budget -= target.size;
        let mut node = target.clone();
        node.line = line;
        self.add(node, 0);
    }

    fn close_map(&mut self, m: MapFrame) -> Node {
        let MapFrame {
            line,
            mut entries,
            mut keys,
            merges,
            ..
        } = m;
        for (merge_line, value) in merges {
            let sources: Vec<Entry> = match value.kind {
                NodeKind::Map(es) => es,
                NodeKind::Seq(items) => {
                    let mut all = Vec::new();
                    for item in items {
                        match item.kind {
                            NodeKind::Map(es) => all.extend(es),
                            _ => self.fail(merge_line, "`<<` merges only mappings"),
                        }
                    }
                    all
                }
                NodeKind::Scalar(_) => {
                    self.fail(merge_line, "`<<` merges only mappings");
                    Vec::new()
                }
            };
            // Keys written in the mapping win over merged ones, and earlier merges over later.
            for e in sources {
                if keys.insert(e.key.clone()) {
                    entries.push(e);
                }
            }
        }
        let size = entries
            .iter()
            .map(|e| e.value.size)
            .fold(1 + entries.len(), usize::saturating_add);
        let height = 1 + entries.iter().map(|e| e.value.height).max().unwrap_or(0);
        let line = entries.first().map_or(line, |e| e.line.min(line));
        Node {
            line,
            kind: NodeKind::Map(entries),
            size,
            height,
        }
    }

    /// Attaches a finished node to its parent (or makes it the root).
    fn add(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        let mut duplicate = None;
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map(m)) => match m.key.take() {
                Some(PendingKey::Key(key, line)) => {
                    if m.keys.insert(key.clone()) {
                        m.entries.push(Entry {
                            key,
                            line,
                            value: node,
                        });
                    } else {
                        duplicate = Some((line, key));
                    }
                }
                Some(PendingKey::Merge(line)) => m.merges.push((line, node)),
                Some(PendingKey::Invalid) | None => {}
            },
        }
        if let Some((line, key)) = duplicate {
            self.fail(line, format!("duplicate key {key:?}"));
        }
    }
}

// === scalars ===

const CORE_TAG: &str = "tag:yaml.org,2002:";

/// Resolves a scalar with the YAML 1.2 core schema: only plain scalars can be anything but
/// strings, and an explicit core tag says what to try.
fn resolve(text: String, style: TScalarStyle, tag: Option<&Tag>) -> Value {
    if let Some(tag) = tag {
        if tag.handle == CORE_TAG {
            return match tag.suffix.as_str() {
                "null" | "bool" | "int" | "float" => resolve_plain(text),
                _ => Value::String(text),
            };
        }
        if tag.handle == "!" && tag.suffix.is_empty() {
            // The non-specific tag `!` makes a plain scalar a string.
            return Value::String(text);
        }
    }
    if style == TScalarStyle::Plain {
        resolve_plain(text)
    } else {
        Value::String(text)
    }
}

fn resolve_plain(text: String) -> Value {
    match text.as_str() {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    if let Some(n) = parse_int(&text) {
        return n;
    }
    if is_float(&text) {
        // Infinity and NaN have no JSON form; they stay strings, as they would in Kubernetes.
        if let Some(n) = text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
        {
            return Value::Number(n);
        }
    }
    Value::String(text)
}

fn parse_int(s: &str) -> Option<Value> {
    let radix = |digits: &str, radix: u32| {
        let ok = !digits.is_empty() && digits.chars().all(|c| c.is_digit(radix));
        ok.then(|| u64::from_str_radix(digits, radix).ok().map(Value::from))
            .flatten()
    };
    if let Some(hex) = s.strip_prefix("0x") {
        return radix(hex, 16);
    }
    if let Some(oct) = s.strip_prefix("0o") {
        return radix(oct, 8);
    }
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if let Ok(v) = s.parse::<i64>() {
        return Some(v.into());
    }
    if let Ok(v) = digits.parse::<u64>()
        && !s.starts_with('-')
    {
        return Some(v.into());
    }
    // Beyond 64 bits: keep the magnitude as a float, as serde_yaml_ng does.
    s.parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map(Value::Number)
}

/// `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`, the core schema's float.
fn is_float(s: &str) -> bool {
    let s = s.strip_prefix(['-', '+']).unwrap_or(s);
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (mantissa, None),
    };
    let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match frac {
        Some(f) => digits(int) && digits(f) && !(int.is_empty() && f.is_empty()),
        None => !int.is_empty() && digits(int),
    };
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && digits(e)
    });
    mantissa_ok && exponent_ok
}
