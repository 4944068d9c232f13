//! An image's file tree and its one layer: a gzipped tar whose bytes depend only on the tree.
//!
//! Entries are written in path order with mtime 0, the owner the tree gives (root unless the spec
//! says otherwise), no user or group names, and gzip with a zero timestamp, no file name and a
//! fixed level; so source files' timestamps, owners and the order they were given in change
//! nothing.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use flate2::Compression;
use sha2::{Digest as _, Sha256};
use tar::{EntryType, Header};

use crate::spec::BuildError;

/// Compression level of layers: zlib's default, the usual trade of size for time.
const GZIP_LEVEL: u32 = 6;

/// A normalized absolute path inside the image: no `.`, `..` or empty components, not `/`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ImagePath(String);

/// Who owns an entry in the image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Owner {
    /// User ID; 0 by default.
    pub uid: u32,
    /// Group ID; 0 by default.
    pub gid: u32,
}

/// The bytes of a file in the image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Content {
    /// Read from the host when the layer is written.
    Host(PathBuf),
    /// Generated (`/etc/passwd` and friends).
    Bytes(Vec<u8>),
}

/// One entry of the tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Node {
    Dir {
        mode: u32,
        owner: Owner,
    },
    File {
        content: Content,
        mode: u32,
        owner: Owner,
    },
    Symlink {
        target: String,
    },
}

/// The image's files, keyed by path without the leading `/`.
#[derive(Debug, Default)]
pub(crate) struct Tree {
    entries: BTreeMap<String, Node>,
}

/// A written layer.
#[derive(Debug)]
pub(crate) struct Layer {
    /// The gzipped tar.
    pub(crate) gzip: Vec<u8>,
    /// SHA-256 of `gzip`, hex: the blob's digest.
    pub(crate) digest: String,
    /// SHA-256 of the uncompressed tar, hex: the config's `rootfs.diff_ids` entry.
    pub(crate) diff_id: String,
}

/// A writer that hashes what passes through it.
pub(crate) struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
}

// === impl ImagePath ===

impl ImagePath {
    /// `path` if it is absolute and has only normal components (repeated `/` are collapsed).
    pub(crate) fn parse(path: &str) -> Option<Self> {
        let rest = path.strip_prefix('/')?;
        let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
        if parts.is_empty() || parts.iter().any(|p| *p == "." || *p == "..") {
            return None;
        }
        Some(ImagePath(parts.join("/")))
    }

    /// The path without its leading `/`, as tar entries name it.
    pub(crate) fn relative(&self) -> &str {
        &self.0
    }

    pub(crate) fn join(&self, name: &str) -> Option<Self> {
        Self::parse(&format!("/{}/{name}", self.0))
    }
}

impl std::fmt::Display for ImagePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "/{}", self.0)
    }
}

// === impl Tree ===

impl Tree {
    /// Adds `node` at `path`, and any missing parent as a root-owned 0755 directory. Adding the
    /// same node twice is a no-op; adding a different one is a conflict.
    pub(crate) fn insert(&mut self, path: &ImagePath, node: Node) -> Result<(), BuildError> {
        self.parents(path)?;
        let key = path.relative().to_owned();
        match self.entries.get(&key) {
            None => {
                self.entries.insert(key, node);
                Ok(())
            }
            Some(existing) if *existing == node => Ok(()),
            Some(Node::Dir { .. }) if matches!(node, Node::Dir { .. }) => {
                // An explicit directory (e.g. /tmp 1777) replaces an implied parent.
                self.entries.insert(key, node);
                Ok(())
            }
            Some(_) => Err(BuildError::Conflict {
                path: path.to_string(),
                reason: "given twice with different contents",
            }),
        }
    }

    /// Adds `node` at `path` unless something is there already: for defaults a spec may override.
    pub(crate) fn insert_default(
        &mut self,
        path: &ImagePath,
        node: Node,
    ) -> Result<(), BuildError> {
        if self.entries.contains_key(path.relative()) {
            return Ok(());
        }
        self.insert(path, node)
    }

    fn parents(&mut self, path: &ImagePath) -> Result<(), BuildError> {
        let rel = path.relative();
        for (i, _) in rel.match_indices('/') {
            let parent = &rel[..i];
            match self.entries.get(parent) {
                None => {
                    self.entries.insert(
                        parent.to_owned(),
                        Node::Dir {
                            mode: 0o755,
                            owner: Owner::default(),
                        },
                    );
                }
                Some(Node::Dir { .. }) => {}
                Some(_) => {
                    return Err(BuildError::Conflict {
                        path: format!("/{parent}"),
                        reason: "is not a directory but has entries under it",
                    });
                }
            }
        }
        Ok(())
    }

    /// Writes the tree as a gzipped tar.
    pub(crate) fn write_layer(&self) -> io::Result<Layer> {
        let gzip = flate2::GzBuilder::new()
            .mtime(0)
            .write(HashWriter::new(Vec::new()), Compression::new(GZIP_LEVEL));
        let mut tar = tar::Builder::new(HashWriter::new(gzip));
        for (path, node) in &self.entries {
            append(&mut tar, path, node)?;
        }
        let (gzip, diff_id) = tar.into_inner()?.finish();
        let (gzip, digest) = gzip.finish()?.finish();
        Ok(Layer {
            gzip,
            digest,
            diff_id,
        })
    }

    #[cfg(test)]
    pub(crate) fn paths(&self) -> Vec<&str> {
        self.entries.keys().map(String::as_str).collect()
    }
}

fn append<W: Write>(tar: &mut tar::Builder<W>, path: &str, node: &Node) -> io::Result<()> {
    let mut header = Header::new_gnu();
    header.set_mtime(0);
    match node {
        Node::Dir { mode, owner } => {
            header.set_entry_type(EntryType::Directory);
            header.set_mode(*mode);
            header.set_uid(owner.uid.into());
            header.set_gid(owner.gid.into());
            header.set_size(0);
            tar.append_data(&mut header, format!("{path}/"), io::empty())
        }
        Node::File {
            content,
            mode,
            owner,
        } => {
            header.set_entry_type(EntryType::Regular);
            header.set_mode(*mode);
            header.set_uid(owner.uid.into());
            header.set_gid(owner.gid.into());
            match content {
                Content::Bytes(bytes) => {
                    header.set_size(bytes.len() as u64);
                    tar.append_data(&mut header, path, bytes.as_slice())
                }
                Content::Host(source) => {
                    let file = File::open(source).map_err(|e| annotate(source, e))?;
                    let len = file.metadata().map_err(|e| annotate(source, e))?.len();
                    header.set_size(len);
                    // `take` keeps the entry's size honest if the file grows while it is read.
                    tar.append_data(&mut header, path, io::Read::take(file, len))
                        .map_err(|e| annotate(source, e))
                }
            }
        }
        Node::Symlink { target } => {
            header.set_entry_type(EntryType::Symlink);
            header.set_mode(0o777);
            header.set_uid(0);
            header.set_gid(0);
            header.set_size(0);
            tar.append_link(&mut header, path, target)
        }
    }
}

fn annotate(source: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", source.display()))
}

/// SHA-256 of `bytes`, hex.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

// === impl HashWriter ===

impl<W: Write> HashWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        HashWriter {
            inner,
            hasher: Sha256::new(),
        }
    }

    /// The inner writer and the hex SHA-256 of everything written.
    pub(crate) fn finish(self) -> (W, String) {
        (self.inner, hex(&self.hasher.finalize()))
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The entries of an uncompressed tar: path → (mode, contents).
#[cfg(test)]
pub(crate) fn untar(bytes: &[u8]) -> BTreeMap<String, (u32, Vec<u8>)> {
    let mut archive = tar::Archive::new(bytes);
    archive
        .entries()
        .unwrap()
        .map(|entry| {
            let mut entry = entry.unwrap();
            let mut data = Vec::new();
            io::Read::read_to_end(&mut entry, &mut data).unwrap();
            let path = entry.path().unwrap().display().to_string();
            (path, (entry.header().mode().unwrap(), data))
        })
        .collect()
}

#[cfg(test)]
mod tests;
