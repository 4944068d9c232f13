//! Local mode's source: a directory of ordinary Kubernetes YAML, re-read when files change, with
//! the last good state of each file kept in force while it has errors.

use std::{
    collections::{BTreeMap, hash_map::DefaultHasher},
    hash::{Hash, Hasher},
    io,
    path::{Path, PathBuf},
};

use switchyard_crds::manifest::{self, Manifest};

use crate::index::{Index, Object, ObjectKind, object_key};

#[cfg(test)]
mod tests;

/// What one scan found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Whether any file's objects changed (the index must be refreshed).
    pub changed: bool,
    /// Lines for the user, in `switchyard validate` format: `file:line: kind ns/name: field: reason`.
    pub reports: Vec<String>,
}

/// A path that could not be read: the directory, or a file under it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: cannot read: {reason}", path.display())]
pub struct Unreadable {
    /// The directory as the user gave it, or a file as found under it.
    pub path: PathBuf,
    /// The operating system's reason, without its error number.
    pub reason: String,
}

impl Unreadable {
    fn new(path: &Path, e: &io::Error) -> Self {
        Unreadable {
            path: path.to_path_buf(),
            reason: io_reason(e),
        }
    }
}

/// `No such file or directory`, not `No such file or directory (os error 2)`: the number says
/// nothing more to a user.
pub fn io_reason(e: &io::Error) -> String {
    let text = e.to_string();
    match e.raw_os_error() {
        Some(code) => text
            .strip_suffix(&format!(" (os error {code})"))
            .map_or_else(|| text.clone(), str::to_owned),
        None => text,
    }
}

#[derive(Debug)]
struct FileState {
    fingerprint: u64,
    /// The objects of the last version of the file that loaded without errors.
    objects: Vec<Object>,
}

/// A watched directory of manifests.
#[derive(Debug)]
pub struct DirSource {
    root: PathBuf,
    files: BTreeMap<PathBuf, FileState>,
    /// Whether a scan has read everything once; until then a path that cannot be read is an
    /// error rather than a report.
    loaded: bool,
    /// Paths reported unreadable, with the reason: each is reported once, not every tick.
    unreadable: BTreeMap<PathBuf, String>,
}

// === impl DirSource ===

impl DirSource {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DirSource {
            root: root.into(),
            files: BTreeMap::new(),
            loaded: false,
            unreadable: BTreeMap::new(),
        }
    }

    /// Re-reads every file whose content changed since the last scan. Polling content (not
    /// mtimes or inotify) keeps this correct for editors that save by renaming, on any file
    /// system, at the cost of reading a few small files every tick.
    ///
    /// The first scan must read the directory and every file in it: a mistyped directory or an
    /// unreadable file at start is an [`Unreadable`] error, for the caller to stop on. After
    /// that, a path that cannot be read is reported once (again if its reason changes) and what
    /// was read from it before stays in force.
    pub fn scan(&mut self) -> Result<Scan, Unreadable> {
        let mut scan = Scan::default();
        let paths = match manifest::find_files(&self.root) {
            Ok(p) => {
                self.unreadable.remove(&self.root);
                p.into_iter()
                    .filter(|p| !is_hidden(&self.root, p))
                    .collect::<Vec<_>>()
            }
            Err(e) => {
                let root = self.root.clone();
                self.unreadable(
                    Unreadable::new(&root, &e),
                    "the files read before stay in force",
                    &mut scan,
                )?;
                return Ok(scan);
            }
        };
        self.unreadable.retain(|p, _| paths.contains(p));
        let gone: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|p| !paths.contains(p))
            .cloned()
            .collect();
        for p in gone {
            self.files.remove(&p);
            scan.changed = true;
        }
        for path in paths {
            let bytes = match read_file(&path) {
                Ok(bytes) => bytes,
                // Removed since the directory was listed: the next scan sees it gone.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    self.unreadable(
                        Unreadable::new(&path, &e),
                        if self.files.contains_key(&path) {
                            "its last good version stays in force"
                        } else {
                            "not applied"
                        },
                        &mut scan,
                    )?;
                    continue;
                }
            };
            self.unreadable.remove(&path);
            let fingerprint = fingerprint(&bytes);
            if self
                .files
                .get(&path)
                .is_some_and(|f| f.fingerprint == fingerprint)
            {
                continue;
            }
            let manifest = manifest::load_bytes(&path.display().to_string(), &bytes);
            scan.reports.extend(report(&manifest));
            if manifest.errors.is_empty() {
                let objects = objects_of(&manifest, &mut scan.reports);
                self.files.insert(
                    path,
                    FileState {
                        fingerprint,
                        objects,
                    },
                );
                scan.changed = true;
            } else {
                scan.reports.push(format!(
                    "{}: not applied: the file has errors; its last good version stays in force",
                    manifest.source
                ));
                // Remember the fingerprint so the same broken content is reported once, while
                // keeping the objects of the last good version.
                match self.files.get_mut(&path) {
                    Some(f) => f.fingerprint = fingerprint,
                    None => {
                        self.files.insert(
                            path,
                            FileState {
                                fingerprint,
                                objects: Vec::new(),
                            },
                        );
                    }
                }
            }
        }
        if scan.changed {
            scan.reports.extend(self.distinct().1);
        }
        self.loaded = true;
        Ok(scan)
    }

    /// Before the first complete scan, `Err`; after it, a report the first time this path fails
    /// for this reason, saying what happens (`then`).
    fn unreadable(&mut self, u: Unreadable, then: &str, scan: &mut Scan) -> Result<(), Unreadable> {
        if !self.loaded {
            return Err(u);
        }
        if self.unreadable.get(&u.path) != Some(&u.reason) {
            scan.reports.push(format!("{u}; {then}"));
            self.unreadable.insert(u.path, u.reason);
        }
        Ok(())
    }

    /// Every object, in path order, without the duplicates (an object of the same kind,
    /// namespace and name as an earlier one), and a line for each duplicate left out. Keeping
    /// the first makes the outcome independent of which file was edited last.
    fn distinct(&self) -> (Vec<&Object>, Vec<String>) {
        let mut first: BTreeMap<(ObjectKind, (String, String)), &Path> = BTreeMap::new();
        let mut objects = Vec::new();
        let mut duplicates = Vec::new();
        for (path, f) in &self.files {
            for o in &f.objects {
                let Some(key) = object_key(o) else {
                    continue;
                };
                let kind = o.kind();
                match first.get(&(kind, key.clone())) {
                    Some(earlier) => duplicates.push(format!(
                        "{}: {} {}/{}: also defined in {}; this definition is ignored",
                        path.display(),
                        kind,
                        key.0,
                        key.1,
                        earlier.display()
                    )),
                    None => {
                        first.insert((kind, key), path);
                        objects.push(o);
                    }
                }
            }
        }
        (objects, duplicates)
    }

    /// Replaces the index's content with this directory's, kind by kind.
    pub fn feed(&self, index: &mut Index) {
        let mut by_kind: BTreeMap<ObjectKind, Vec<Object>> = BTreeMap::new();
        for kind in ALL_KINDS {
            by_kind.insert(kind, Vec::new());
        }
        for o in self.distinct().0 {
            by_kind.entry(o.kind()).or_default().push(o.clone());
        }
        // Services and endpoints before the SMI objects that refer to them, so each reset sees
        // the newest world.
        for (kind, objects) in by_kind {
            index.reset(kind, objects);
        }
    }
}

const ALL_KINDS: [ObjectKind; 9] = [
    ObjectKind::Service,
    ObjectKind::EndpointSlice,
    ObjectKind::Pod,
    ObjectKind::ServiceAccount,
    ObjectKind::Smi(switchyard_crds::Kind::HttpRouteGroup),
    ObjectKind::Smi(switchyard_crds::Kind::TcpRoute),
    ObjectKind::Smi(switchyard_crds::Kind::UdpRoute),
    ObjectKind::Smi(switchyard_crds::Kind::TrafficSplit),
    ObjectKind::Smi(switchyard_crds::Kind::TrafficTarget),
];

/// Reads a regular file. Anything else named like a manifest (a FIFO would block the reader
/// until something writes to it; a socket or a device holds no manifest) cannot be read.
fn read_file(path: &Path) -> io::Result<Vec<u8>> {
    if !std::fs::metadata(path)?.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    std::fs::read(path)
}

/// Files under a hidden directory (such as the state directory `.switchyard/`) are not input.
fn is_hidden(root: &Path, path: &Path) -> bool {
    path.strip_prefix(root)
        .unwrap_or(path)
        .components()
        .any(|c| c.as_os_str().to_string_lossy().starts_with('.'))
}

fn fingerprint(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// Load errors and validation problems, in `switchyard validate` format.
fn report(m: &Manifest) -> Vec<String> {
    let mut out: Vec<String> = m.located_errors().map(|e| e.to_string()).collect();
    out.extend(m.problems().iter().map(ToString::to_string));
    out
}

/// The objects of a manifest the index understands. Other kinds are passed over.
fn objects_of(m: &Manifest, reports: &mut Vec<String>) -> Vec<Object> {
    let mut out: Vec<Object> = m
        .objects
        .iter()
        .map(|d| Object::Smi(Box::new(d.object.clone().into_canonical())))
        .collect();
    for other in &m.others {
        let parsed = match (other.api_version.as_str(), other.kind.as_str()) {
            ("v1", "Service") => {
                serde_json::from_value(other.value.clone()).map(|o| Object::Service(Box::new(o)))
            }
            ("v1", "Pod") => {
                serde_json::from_value(other.value.clone()).map(|o| Object::Pod(Box::new(o)))
            }
            ("v1", "ServiceAccount") => serde_json::from_value(other.value.clone())
                .map(|o| Object::ServiceAccount(Box::new(o))),
            ("discovery.k8s.io/v1", "EndpointSlice") => serde_json::from_value(other.value.clone())
                .map(|o| Object::EndpointSlice(Box::new(o))),
            _ => continue,
        };
        match parsed {
            Ok(o) => out.push(o),
            Err(e) => reports.push(format!("{}:{}: {other}: {e}", m.source, other.line)),
        }
    }
    out
}
