//! Which files the dynamic loader needs to start an ELF binary: its interpreter and, recursively,
//! its `DT_NEEDED` libraries, searched as glibc's `ld.so` searches them (`DT_RUNPATH`, else
//! `DT_RPATH`, then the system directories).
//!
//! The search is written against [`Objects`], so the rules are tested on fake file systems; the
//! host implementation reads real files. A library is found on the host and placed in the image
//! at the path the loader will look for it there: the same directory for absolute search paths
//! and system directories, the directory relative to the object for `$ORIGIN` paths. Symbolic
//! links are followed to the real file, whose bytes go in under the name that was looked up.
//! `/etc/ld.so.cache` is not consulted: the image has none, so a library only the cache knows
//! would not be found at run time either.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

use goblin::elf::Elf;
use goblin::elf::header::{EM_X86_64, machine_to_str};

/// The directories glibc's loader searches after an object's own search paths, in its order, for
/// x86-64. Debian's loader has the multiarch directories built in; other distributions' `/lib64`.
pub(crate) const SYSTEM_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
];

/// A failure to read an ELF binary or to find a library it needs.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    /// The file cannot be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file does not start with the ELF magic.
    #[error("{path}: not an ELF binary")]
    NotElf {
        /// The file.
        path: PathBuf,
    },
    /// The file starts like an ELF binary but does not parse as one.
    #[error("{path}: malformed ELF: {source}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What goblin found wrong.
        source: goblin::error::Error,
    },
    /// The binary is for another machine than the images' `linux/amd64`.
    #[error("{path}: an ELF binary for {machine}, but images are linux/amd64 (x86-64)")]
    WrongMachine {
        /// The file.
        path: PathBuf,
        /// The machine it is built for.
        machine: &'static str,
    },
    /// A `DT_NEEDED` library is in none of the directories the loader would search.
    #[error("library {library} needed by {needed_by}: not found in {}", display_dirs(.searched))]
    LibraryNotFound {
        /// The name in `DT_NEEDED`.
        library: String,
        /// The host path of the object that needs it.
        needed_by: PathBuf,
        /// The host directories searched, in order.
        searched: Vec<PathBuf>,
    },
    /// The interpreter named in `PT_INTERP` does not exist on the host.
    #[error("interpreter {interpreter} of {binary}: not found")]
    InterpreterNotFound {
        /// The `PT_INTERP` path.
        interpreter: String,
        /// The binary that names it.
        binary: PathBuf,
    },
}

fn display_dirs(dirs: &[PathBuf]) -> String {
    let dirs: Vec<_> = dirs.iter().map(|d| d.display().to_string()).collect();
    dirs.join(", ")
}

/// What the loader reads from an ELF object's headers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ElfInfo {
    /// `PT_INTERP`: absent in static binaries (static-pie included) and in libraries.
    pub(crate) interpreter: Option<String>,
    /// `DT_NEEDED`, in order.
    pub(crate) needed: Vec<String>,
    /// `DT_RUNPATH` entries (colon lists split).
    pub(crate) runpath: Vec<String>,
    /// `DT_RPATH` entries; glibc ignores them when `DT_RUNPATH` is present.
    pub(crate) rpath: Vec<String>,
    /// `DT_SONAME`.
    pub(crate) soname: Option<String>,
}

/// An object found on the host: its real path (symbolic links resolved) and headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Found {
    pub(crate) real: PathBuf,
    pub(crate) info: ElfInfo,
}

/// A file the loader needs: where its bytes are on the host, and the absolute path it must have
/// in the image.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Dependency {
    pub(crate) host: PathBuf,
    pub(crate) image: PathBuf,
}

/// Where ELF objects come from: the host's file system, or a fake in tests.
pub(crate) trait Objects {
    /// The object at `path`, `Ok(None)` when there is no file there or it is an ELF object for
    /// another class or machine (the loader skips those and searches on). Errors for files that
    /// exist but cannot be read or parsed.
    fn load(&self, path: &Path) -> Result<Option<Found>, ElfError>;
}

/// The host's file system.
pub(crate) struct Host;

/// Reads `path` as an x86-64 ELF object: `Ok(None)` if it is not an ELF file at all.
pub(crate) fn read(path: &Path) -> Result<Option<ElfInfo>, ElfError> {
    let bytes = std::fs::read(path).map_err(|source| ElfError::Read {
        path: path.to_owned(),
        source,
    })?;
    if !bytes.starts_with(b"\x7fELF") {
        return Ok(None);
    }
    let elf = Elf::parse(&bytes).map_err(|source| ElfError::Malformed {
        path: path.to_owned(),
        source,
    })?;
    if !elf.is_64 || elf.header.e_machine != EM_X86_64 {
        return Err(ElfError::WrongMachine {
            path: path.to_owned(),
            machine: if elf.is_64 {
                machine_to_str(elf.header.e_machine)
            } else {
                "32-bit"
            },
        });
    }
    let split = |entries: &[&str]| -> Vec<String> {
        entries
            .iter()
            .flat_map(|e| e.split(':'))
            .filter(|e| !e.is_empty())
            .map(str::to_owned)
            .collect()
    };
    Ok(Some(ElfInfo {
        interpreter: elf.interpreter.map(str::to_owned),
        needed: elf.libraries.iter().map(|l| (*l).to_owned()).collect(),
        runpath: split(&elf.runpaths),
        rpath: split(&elf.rpaths),
        soname: elf.soname.map(str::to_owned),
    }))
}

// === impl Host ===

impl Objects for Host {
    fn load(&self, path: &Path) -> Result<Option<Found>, ElfError> {
        if !path.is_file() {
            return Ok(None);
        }
        let real = std::fs::canonicalize(path).map_err(|source| ElfError::Read {
            path: path.to_owned(),
            source,
        })?;
        match read(&real) {
            Ok(Some(info)) => Ok(Some(Found { real, info })),
            // A 32-bit library of the same name (or a linker script) in an earlier directory:
            // the loader passes over it, and so do we.
            Ok(None) | Err(ElfError::WrongMachine { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Every file the loader needs to run `binary`, which sits at `image_path` in the image: its
/// interpreter and the closure of its `DT_NEEDED` libraries, sorted by image path. Empty for a
/// static binary.
pub(crate) fn dependencies(
    objects: &impl Objects,
    binary: &Found,
    image_path: &Path,
) -> Result<Vec<Dependency>, ElfError> {
    let mut deps = BTreeMap::new();
    // Names the loader considers loaded: it matches DT_NEEDED against sonames of loaded objects
    // before it searches, so libc's DT_NEEDED `ld-linux-x86-64.so.2` is the interpreter itself.
    let mut loaded = BTreeSet::new();

    if let Some(interpreter) = &binary.info.interpreter {
        let found =
            objects
                .load(Path::new(interpreter))?
                .ok_or_else(|| ElfError::InterpreterNotFound {
                    interpreter: interpreter.clone(),
                    binary: binary.real.clone(),
                })?;
        loaded.extend(found.info.soname.clone());
        loaded.insert(file_name(interpreter).to_owned());
        deps.insert(PathBuf::from(interpreter), found.real);
    }

    let root_rpath = if binary.info.runpath.is_empty() {
        binary.info.rpath.clone()
    } else {
        Vec::new()
    };
    let mut queue = VecDeque::from([(binary.clone(), image_path.to_owned())]);
    while let Some((object, image)) = queue.pop_front() {
        for library in &object.info.needed {
            if loaded.contains(library) {
                continue;
            }
            let (found, image_lib) = search(objects, library, &object, &image, &root_rpath)?;
            loaded.insert(library.clone());
            loaded.extend(found.info.soname.clone());
            deps.insert(image_lib.clone(), found.real.clone());
            queue.push_back((found, image_lib));
        }
    }
    Ok(deps
        .into_iter()
        .map(|(image, host)| Dependency { host, image })
        .collect())
}

/// Finds `library` for `object` (at `image` in the image): the host object and its image path.
fn search(
    objects: &impl Objects,
    library: &str,
    object: &Found,
    image: &Path,
    root_rpath: &[String],
) -> Result<(Found, PathBuf), ElfError> {
    if library.contains('/') {
        // A DT_NEEDED with a slash is a path, relative to the working directory: the image's
        // working directory is unknown here, so only absolute ones can be honoured.
        let path = Path::new(library);
        if path.is_absolute()
            && let Some(found) = objects.load(path)?
        {
            return Ok((found, path.to_owned()));
        }
        return Err(ElfError::LibraryNotFound {
            library: library.to_owned(),
            needed_by: object.real.clone(),
            searched: Vec::new(),
        });
    }
    let host_origin = object.real.parent().unwrap_or(Path::new("/"));
    let image_origin = image.parent().unwrap_or(Path::new("/"));
    let own: Vec<&String> = if object.info.runpath.is_empty() {
        object.info.rpath.iter().chain(root_rpath).collect()
    } else {
        object.info.runpath.iter().collect()
    };
    let dirs = own
        .into_iter()
        .map(|dir| {
            (
                expand_origin(dir, host_origin),
                expand_origin(dir, image_origin),
            )
        })
        .chain(
            SYSTEM_DIRS
                .iter()
                .map(|d| (PathBuf::from(d), PathBuf::from(d))),
        );

    let mut searched = Vec::new();
    for (host_dir, image_dir) in dirs {
        if searched.contains(&host_dir) {
            continue;
        }
        if let Some(found) = objects.load(&host_dir.join(library))? {
            return Ok((found, normalize(&image_dir.join(library))));
        }
        searched.push(host_dir);
    }
    Err(ElfError::LibraryNotFound {
        library: library.to_owned(),
        needed_by: object.real.clone(),
        searched,
    })
}

/// Substitutes `$ORIGIN` / `${ORIGIN}` (the directory of the object) in a search path.
fn expand_origin(dir: &str, origin: &Path) -> PathBuf {
    let origin = origin.to_string_lossy();
    let expanded = dir
        .replace("${ORIGIN}", &origin)
        .replace("$ORIGIN", &origin);
    normalize(Path::new(&expanded))
}

/// Removes `.` and resolves `..` lexically, as the loader does for search paths.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::Normal(p) => out.push(p),
            std::path::Component::RootDir
            | std::path::Component::CurDir
            | std::path::Component::Prefix(_) => {}
        }
    }
    out
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

#[cfg(test)]
mod tests;
