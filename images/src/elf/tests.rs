use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::*;

// === Utils ===

/// A file system of ELF objects: path → (real path, headers). Symbolic links are entries whose
/// real path differs from their own.
#[derive(Default)]
struct Fake(HashMap<PathBuf, Found>);

impl Fake {
    fn object(mut self, path: &str, info: ElfInfo) -> Self {
        let found = Found {
            real: PathBuf::from(path),
            info,
        };
        self.0.insert(PathBuf::from(path), found);
        self
    }

    fn link(mut self, path: &str, target: &str) -> Self {
        let found = self.0[Path::new(target)].clone();
        self.0.insert(PathBuf::from(path), found);
        self
    }
}

impl Objects for Fake {
    fn load(&self, path: &Path) -> Result<Option<Found>, ElfError> {
        Ok(self.0.get(path).cloned())
    }
}

fn lib(soname: &str, needed: &[&str]) -> ElfInfo {
    ElfInfo {
        soname: Some(soname.to_owned()),
        needed: needed.iter().map(|n| (*n).to_owned()).collect(),
        ..ElfInfo::default()
    }
}

fn exe(needed: &[&str]) -> ElfInfo {
    ElfInfo {
        interpreter: Some("/lib64/ld-linux-x86-64.so.2".to_owned()),
        needed: needed.iter().map(|n| (*n).to_owned()).collect(),
        ..ElfInfo::default()
    }
}

/// A Debian-like host: the loader behind the /lib64 link, libc needing the loader by soname.
fn glibc() -> Fake {
    Fake::default()
        .object(
            "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            lib("ld-linux-x86-64.so.2", &[]),
        )
        .link(
            "/lib64/ld-linux-x86-64.so.2",
            "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
        )
        .object(
            "/lib/x86_64-linux-gnu/libc.so.6",
            lib("libc.so.6", &["ld-linux-x86-64.so.2"]),
        )
        .object(
            "/usr/lib/x86_64-linux-gnu/libstdc++.so.6.0.30",
            lib("libstdc++.so.6", &["libm.so.6", "libc.so.6"]),
        )
        .link(
            "/usr/lib/x86_64-linux-gnu/libstdc++.so.6",
            "/usr/lib/x86_64-linux-gnu/libstdc++.so.6.0.30",
        )
        .object(
            "/lib/x86_64-linux-gnu/libm.so.6",
            lib("libm.so.6", &["libc.so.6"]),
        )
}

fn deps(fake: &Fake, binary: &str, image: &str) -> Result<Vec<(String, String)>, ElfError> {
    let found = fake.0[Path::new(binary)].clone();
    Ok(dependencies(fake, &found, Path::new(image))?
        .into_iter()
        .map(|d| (d.image.display().to_string(), d.host.display().to_string()))
        .collect())
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

// === Tests ===

#[test]
fn static_binary_needs_nothing() {
    let fake = glibc().object("/build/pause", ElfInfo::default());
    assert_eq!(deps(&fake, "/build/pause", "/pause").unwrap(), vec![]);
}

#[test]
fn interpreter_and_closure_at_the_names_the_loader_looks_for() {
    let fake = glibc().object("/build/envoy", exe(&["libstdc++.so.6", "libc.so.6"]));
    assert_eq!(
        deps(&fake, "/build/envoy", "/usr/local/bin/envoy").unwrap(),
        pairs(&[
            (
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib/x86_64-linux-gnu/libc.so.6"
            ),
            (
                "/lib/x86_64-linux-gnu/libm.so.6",
                "/lib/x86_64-linux-gnu/libm.so.6"
            ),
            // The interpreter is the real file behind the link, at the PT_INTERP path; libc's
            // DT_NEEDED on it is satisfied by soname and not copied twice.
            (
                "/lib64/ld-linux-x86-64.so.2",
                "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
            ),
            // Found through a link: the real file's bytes under the DT_NEEDED name.
            (
                "/usr/lib/x86_64-linux-gnu/libstdc++.so.6",
                "/usr/lib/x86_64-linux-gnu/libstdc++.so.6.0.30"
            ),
        ])
    );
}

#[test]
fn runpath_with_origin_is_relative_to_the_object_in_the_image() {
    let mut info = exe(&["libfoo.so.1"]);
    info.runpath = vec!["$ORIGIN/../lib".to_owned()];
    let fake = glibc()
        .object("/opt/foo/bin/foo", info)
        .object(
            "/opt/foo/lib/libfoo.so.1",
            lib("libfoo.so.1", &["libc.so.6"]),
        )
        // A system copy that RUNPATH must win over.
        .object("/lib/x86_64-linux-gnu/libfoo.so.1", lib("libfoo.so.1", &[]));
    let got = deps(&fake, "/opt/foo/bin/foo", "/app/bin/foo").unwrap();
    assert!(
        got.contains(&(
            "/app/lib/libfoo.so.1".to_owned(),
            "/opt/foo/lib/libfoo.so.1".to_owned()
        )),
        "{got:?}"
    );
    assert!(
        !got.iter()
            .any(|(_, host)| host == "/lib/x86_64-linux-gnu/libfoo.so.1"),
        "{got:?}"
    );
}

#[test]
fn runpath_hides_rpath_and_absolute_rpath_keeps_its_directory() {
    let mut info = exe(&["libbar.so"]);
    info.rpath = vec!["/opt/bar/lib".to_owned()];
    let fake = glibc()
        .object("/build/bar", info.clone())
        .object("/opt/bar/lib/libbar.so", lib("libbar.so", &[]));
    assert!(deps(&fake, "/build/bar", "/bar").unwrap().contains(&(
        "/opt/bar/lib/libbar.so".to_owned(),
        "/opt/bar/lib/libbar.so".to_owned()
    )));

    info.runpath = vec!["/nowhere".to_owned()];
    let fake = fake.object("/build/bar", info);
    let err = deps(&fake, "/build/bar", "/bar").unwrap_err();
    assert_eq!(
        err.to_string(),
        "library libbar.so needed by /build/bar: not found in /nowhere, /lib/x86_64-linux-gnu, \
         /usr/lib/x86_64-linux-gnu, /lib64, /usr/lib64, /lib, /usr/lib"
    );
}

#[test]
fn a_missing_library_names_who_needs_it() {
    let fake = glibc().object(
        "/lib/x86_64-linux-gnu/libz.so.1",
        lib("libz.so.1", &["libgone.so.3"]),
    );
    let fake = fake.object("/build/app", exe(&["libz.so.1"]));
    let err = deps(&fake, "/build/app", "/app").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("library libgone.so.3 needed by /lib/x86_64-linux-gnu/libz.so.1: not found in /lib/x86_64-linux-gnu"),
        "{err}"
    );
}

#[test]
fn a_missing_interpreter_is_an_error() {
    let fake = Fake::default().object("/build/app", exe(&[]));
    let err = deps(&fake, "/build/app", "/app").unwrap_err();
    assert_eq!(
        err.to_string(),
        "interpreter /lib64/ld-linux-x86-64.so.2 of /build/app: not found"
    );
}

/// The host implementation, on this test's own executable: a glibc-dynamic Rust binary.
#[test]
fn host_resolves_this_test_binary() {
    let exe = std::env::current_exe().unwrap();
    let info = read(&exe).unwrap().expect("the test binary is an ELF");
    let found = Found {
        real: exe.clone(),
        info,
    };
    let deps = dependencies(&Host, &found, Path::new("/test")).unwrap();
    let images: Vec<_> = deps.iter().map(|d| d.image.display().to_string()).collect();
    assert!(
        images.contains(&"/lib64/ld-linux-x86-64.so.2".to_owned()),
        "{images:?}"
    );
    assert!(
        images.iter().any(|i| i.ends_with("/libc.so.6")),
        "{images:?}"
    );
    for dep in &deps {
        assert!(dep.host.is_file(), "{dep:?}");
        assert!(
            !dep.host.is_symlink(),
            "{dep:?}: links are followed to the real file"
        );
    }
}

#[test]
fn host_read_tells_elf_from_other_files() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("envoy");
    std::fs::write(&script, "#!/usr/bin/python3\n").unwrap();
    assert_eq!(read(&script).unwrap(), None);

    let truncated = dir.path().join("truncated");
    std::fs::write(&truncated, b"\x7fELF\x02\x01").unwrap();
    assert!(matches!(read(&truncated), Err(ElfError::Malformed { .. })));

    let missing = dir.path().join("missing");
    assert_eq!(
        read(&missing).unwrap_err().to_string(),
        format!(
            "{}: cannot read: No such file or directory (os error 2)",
            missing.display()
        )
    );
}
