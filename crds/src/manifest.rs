//! Loading manifests: each YAML or JSON document as an SMI object, another object, or an error.

use std::{
    fmt, fs, io,
    path::{Path, PathBuf},
};

use crate::{
    DEFAULT_NAMESPACE, Kind, ObjectRef, VersionedObject,
    object::ReadError,
    validate::{Problem, validate},
};

mod de;
mod yaml;

#[cfg(test)]
mod tests;

use yaml::{Node, NodeKind, Parsed};

/// Everything read from one file (or stream), in document order within each list.
#[derive(Clone, Debug)]
pub struct Manifest {
    /// The name reports use for the file: its path as given, or `<stdin>`.
    pub source: String,
    pub objects: Vec<SmiDocument>,
    /// Kubernetes objects of other kinds, passed through for whoever needs them.
    pub others: Vec<OtherDocument>,
    pub errors: Vec<LoadError>,
}

/// An SMI object as written, with where it was written.
#[derive(Clone, Debug)]
pub struct SmiDocument {
    /// The line the object starts on (its first key).
    pub line: usize,
    pub object: VersionedObject,
    tree: Node,
}

/// A Kubernetes object that is not an SMI object, kept as JSON.
#[derive(Clone, Debug)]
pub struct OtherDocument {
    pub line: usize,
    /// `v1`, `discovery.k8s.io/v1`, …
    pub api_version: String,
    pub kind: String,
    /// `default` when the object names none (also for cluster-scoped kinds; `value` has the truth).
    pub namespace: String,
    pub name: String,
    pub value: serde_json::Value,
    tree: Node,
}

/// A document that could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct LoadError {
    pub line: usize,
    /// The object, when the document got far enough to name one.
    pub object: Option<ObjectRef>,
    /// The field path (`spec.backends[1].weight`), when one field is to blame.
    pub field: Option<String>,
    pub message: String,
}

/// Something reported about a file, with the file and line it is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located<T> {
    pub source: String,
    pub line: usize,
    pub item: T,
}

/// Reads a manifest from bytes: invalid UTF-8 is an error at the line where it occurs.
pub fn load_bytes(source: &str, bytes: &[u8]) -> Manifest {
    match std::str::from_utf8(bytes) {
        Ok(text) => load_str(source, text),
        Err(e) => {
            let valid = bytes.get(..e.valid_up_to()).unwrap_or_default();
            let line = 1 + yaml::count_breaks(valid);
            let message = if bytes.starts_with(&[0xff, 0xfe]) || bytes.starts_with(&[0xfe, 0xff]) {
                "the file is UTF-16; manifests must be UTF-8".to_string()
            } else {
                format!(
                    "invalid UTF-8 at byte {}; manifests must be UTF-8",
                    e.valid_up_to()
                )
            };
            let mut m = Manifest::empty(source);
            m.errors.push(LoadError {
                line,
                object: None,
                field: None,
                message,
            });
            m
        }
    }
}

/// Reads every document of a YAML (or JSON) text. `source` is the name used in reports.
///
/// Never fails as a whole and never panics: whatever the text, the result holds what could be
/// read plus one error per document that could not. Lines are 1-based and count from the start
/// of the text. Non-SMI objects are kept as JSON with their identity, because local mode reads
/// Services, EndpointSlices, Pods and ServiceAccounts from the same files.
pub fn load_str(source: &str, text: &str) -> Manifest {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut m = Manifest::empty(source);
    for parsed in yaml::parse(text) {
        match parsed {
            Parsed::Document(root) => m.read_document(root),
            Parsed::Error(e) => m.error(e.line, None, None, e.message),
        }
    }
    m
}

/// Reads a file; only I/O fails, everything about the content is in the manifest's errors.
pub fn load_file(path: &Path) -> io::Result<Manifest> {
    let bytes = fs::read(path)?;
    Ok(load_bytes(&path.display().to_string(), &bytes))
}

/// The manifest files at `path`: the path itself if it is a file (whatever its name), or every
/// `*.yaml`, `*.yml` and `*.json` file below it if it is a directory, recursively, in name order.
pub fn find_files(path: &Path) -> io::Result<Vec<PathBuf>> {
    if !fs::metadata(path)?.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut seen = Vec::new();
    walk(path, &mut seen, &mut out)?;
    Ok(out)
}

fn walk(dir: &Path, seen: &mut Vec<PathBuf>, out: &mut Vec<PathBuf>) -> io::Result<()> {
    // Symbolic links are followed, so a link back up the tree must not loop forever.
    let canonical = fs::canonicalize(dir)?;
    if seen.contains(&canonical) {
        return Ok(());
    }
    seen.push(canonical);
    let mut entries = fs::read_dir(dir)?.collect::<io::Result<Vec<_>>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let Ok(meta) = fs::metadata(&path) else {
            // A dangling symbolic link holds no manifest.
            continue;
        };
        if meta.is_dir() {
            walk(&path, seen, out)?;
        } else if is_manifest_name(&path) {
            out.push(path);
        }
    }
    Ok(())
}

fn is_manifest_name(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
        ["yaml", "yml", "json"]
            .iter()
            .any(|x| e.eq_ignore_ascii_case(x))
    })
}

// === impl Manifest ===

impl Manifest {
    fn empty(source: &str) -> Self {
        Manifest {
            source: source.to_string(),
            objects: Vec::new(),
            others: Vec::new(),
            errors: Vec::new(),
        }
    }

    /// Validates every SMI object and places each problem on the line of its field.
    pub fn problems(&self) -> Vec<Located<Problem>> {
        self.objects
            .iter()
            .flat_map(|doc| {
                validate(&doc.object).into_iter().map(|p| Located {
                    source: self.source.clone(),
                    line: doc.line_of(&p.field),
                    item: p,
                })
            })
            .collect()
    }

    /// The load errors with the file they are in.
    pub fn located_errors(&self) -> impl Iterator<Item = Located<&LoadError>> {
        self.errors.iter().map(|e| Located {
            source: self.source.clone(),
            line: e.line,
            item: e,
        })
    }

    fn error(
        &mut self,
        line: usize,
        object: Option<ObjectRef>,
        field: Option<&str>,
        message: String,
    ) {
        self.errors.push(LoadError {
            line,
            object,
            field: field.map(str::to_string),
            message,
        });
    }

    fn read_document(&mut self, root: Node) {
        if root.is_null() {
            // Empty documents (only comments, or `---` twice) are what kubectl skips too.
            return;
        }
        if !matches!(root.kind, NodeKind::Map(_)) {
            let message = format!(
                "expected a Kubernetes object (a mapping with apiVersion and kind), found {}",
                root.describe()
            );
            return self.error(root.line, None, None, message);
        }
        let api_version = root.get("apiVersion");
        let kind = root.get("kind");
        let (api_version, kind) = match (api_version, kind) {
            (None, None) => {
                return self.error(root.line, None, None, "missing apiVersion and kind".into());
            }
            (None, Some(_)) => {
                return self.error(root.line, None, Some("apiVersion"), "missing".into());
            }
            (Some(_), None) => return self.error(root.line, None, Some("kind"), "missing".into()),
            (Some(a), Some(k)) => (a, k),
        };
        for (field, entry) in [("apiVersion", api_version), ("kind", kind)] {
            if entry.value.as_str().is_none_or(str::is_empty) {
                let message = format!(
                    "must be a non-empty string, found {}",
                    entry.value.describe()
                );
                return self.error(entry.line, None, Some(field), message);
            }
        }
        let api_version_line = api_version.line;
        let api_version = api_version.value.as_str().unwrap_or_default().to_string();
        let kind_line = kind.line;
        let kind = kind.value.as_str().unwrap_or_default().to_string();

        if api_version == "v1" && kind == "List" {
            return self.read_list(root);
        }
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g, Some(v)),
            // A bare SMI group is a version left out; any other bare value is a core version.
            None if is_smi_group(&api_version) => (api_version.as_str(), None),
            None => ("", Some(api_version.as_str())),
        };
        if !is_smi_group(group) {
            return self.read_other(root, api_version, kind);
        }
        let Some(smi_kind) = Kind::from_group_kind(group, &kind) else {
            return self.error(
                kind_line,
                None,
                Some("kind"),
                unknown_kind_message(group, &kind),
            );
        };
        let object = object_ref(smi_kind, &root);
        let Some(version) = version else {
            let message = format!(
                "{api_version:?} names no version (served: {})",
                smi_kind.versions().join(", ")
            );
            return self.error(api_version_line, Some(object), Some("apiVersion"), message);
        };
        match VersionedObject::from_deserializer(smi_kind, version, &root) {
            Ok(o) => {
                if o.object_ref().name.is_empty() {
                    let line = root.line_of("metadata");
                    return self.error(line, Some(object), Some("metadata.name"), "missing".into());
                }
                self.objects.push(SmiDocument {
                    line: root.line,
                    object: o,
                    tree: root,
                });
            }
            Err(ReadError::UnknownVersion { served, .. }) => {
                let message = format!("unknown version {api_version:?} (served: {served})");
                self.error(api_version_line, Some(object), Some("apiVersion"), message);
            }
            Err(ReadError::Field { path, message, .. }) => {
                let line = root.line_of(&path);
                // serde_path_to_error writes the whole object as `.`.
                let field = (!path.is_empty() && path != ".").then_some(path.as_str());
                self.error(line, Some(object), field, message);
            }
        }
    }

    /// `kind: List` (what `kubectl get -o yaml` writes): each item is a document of its own.
    fn read_list(&mut self, root: Node) {
        let line = root.line;
        let NodeKind::Map(entries) = root.kind else {
            return;
        };
        let Some(items) = entries.into_iter().find(|e| e.key == "items") else {
            return self.error(line, None, Some("items"), "missing in a List".into());
        };
        match items.value.kind {
            NodeKind::Seq(items) => items.into_iter().for_each(|item| self.read_document(item)),
            NodeKind::Scalar(serde_json::Value::Null) => {}
            _ => {
                let message = format!("must be a list, found {}", items.value.describe());
                self.error(items.line, None, Some("items"), message);
            }
        }
    }

    fn read_other(&mut self, root: Node, api_version: String, kind: String) {
        let meta = |key| {
            root.get("metadata")
                .and_then(|m| m.value.get(key))
                .and_then(|e| e.value.as_str())
                .map(str::to_string)
        };
        self.others.push(OtherDocument {
            line: root.line,
            api_version,
            kind,
            namespace: meta("namespace").unwrap_or_else(|| DEFAULT_NAMESPACE.to_string()),
            name: meta("name").unwrap_or_default(),
            value: root.to_json(),
            tree: root,
        });
    }
}

fn is_smi_group(group: &str) -> bool {
    Kind::ALL.into_iter().any(|k| k.group() == group)
}

/// The object a document names, read leniently so that errors about it can name it.
fn object_ref(kind: Kind, root: &Node) -> ObjectRef {
    let meta = |key| {
        root.get("metadata")
            .and_then(|m| m.value.get(key))
            .and_then(|e| match &e.value.kind {
                NodeKind::Scalar(serde_json::Value::String(s)) => Some(s.clone()),
                NodeKind::Scalar(v) if !v.is_null() => Some(v.to_string()),
                _ => None,
            })
    };
    ObjectRef {
        kind,
        namespace: meta("namespace").unwrap_or_else(|| DEFAULT_NAMESPACE.to_string()),
        name: meta("name").unwrap_or_default(),
    }
}

fn unknown_kind_message(group: &str, kind: &str) -> String {
    let served: Vec<&str> = Kind::ALL
        .into_iter()
        .filter(|k| k.group() == group)
        .map(Kind::as_str)
        .collect();
    let hint = Kind::ALL
        .into_iter()
        .find(|k| k.as_str().eq_ignore_ascii_case(kind))
        .map(|k| {
            if k.group() == group {
                format!("; did you mean {}?", k.as_str())
            } else {
                format!("; {} is in {}", k.as_str(), k.group())
            }
        })
        .unwrap_or_default();
    format!(
        "{kind:?} is not a kind of {group} (served: {}){hint}",
        served.join(", ")
    )
}

// === impl SmiDocument ===

impl SmiDocument {
    /// The line of a field (`spec.backends[1].weight`), or of the nearest enclosing field that
    /// is written; the object's first line if none is.
    pub fn line_of(&self, field: &str) -> usize {
        self.tree.line_of(field)
    }

    pub fn object_ref(&self) -> ObjectRef {
        self.object.object_ref()
    }
}

// === impl OtherDocument ===

impl OtherDocument {
    /// The line of a field, as for [`SmiDocument::line_of`].
    pub fn line_of(&self, field: &str) -> usize {
        self.tree.line_of(field)
    }
}

/// `v1/Service default/web`.
impl fmt::Display for OtherDocument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} {}/{}",
            self.api_version, self.kind, self.namespace, self.name
        )
    }
}

// === impl LoadError ===

/// `trafficsplit default/web: spec.backends[0].weight: invalid quantity "abc"…`, leaving out
/// what is unknown.
impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(object) = &self.object {
            write!(f, "{object}: ")?;
        }
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)
    }
}

// === impl Located ===

/// `file:line: item`.
impl<T: fmt::Display> fmt::Display for Located<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.source, self.line, self.item)
    }
}
