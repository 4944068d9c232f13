//! Harness for end-to-end tests: starts the real `switchyard` binary, Envoy, the bundled proxy,
//! a kube-apiserver or a whole single-node cluster, and drives them; everything on this machine.

#![forbid(unsafe_code)]

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::OnceLock,
};

pub mod images;
pub mod kube;
pub mod kube_mesh;
pub mod mesh;
pub mod mtls;
pub mod netns;
pub mod traffic_metrics;
pub mod xds_client;

/// The workspace root (where the top-level `Cargo.toml` is).
pub fn workspace_root() -> &'static Path {
    // This crate lives one level below the root; both paths are fixed at compile time.
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here)
}

/// The `switchyard` binary, built once per test process.
///
/// Cargo builds a package's binaries only for that package's own integration tests, so this
/// crate asks Cargo to build `switchyard` with the same profile and target directory (a no-op
/// when it is up to date). `SWITCHYARD_BIN` points at a binary built elsewhere instead.
///
/// # Panics
///
/// When the binary cannot be built: no end-to-end test can run without it.
pub fn switchyard_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| workspace_bin("switchyard", "SWITCHYARD_BIN"))
}

/// The bundled proxy's binary, `switchyard-proxy`, built like [`switchyard_bin`];
/// `SWITCHYARD_PROXY_BIN` points at a binary built elsewhere instead.
///
/// # Panics
///
/// When the binary cannot be built.
pub fn proxy_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| workspace_bin("switchyard-proxy", "SWITCHYARD_PROXY_BIN"))
}

/// The test workload, `switchyard-echo` (echo servers and their clients), built like
/// [`switchyard_bin`]; `SWITCHYARD_ECHO_BIN` points at a binary built elsewhere instead.
///
/// # Panics
///
/// When the binary cannot be built.
pub fn echo_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| workspace_bin("switchyard-echo", "SWITCHYARD_ECHO_BIN"))
}

/// Panics, saying `why` the test needs root, unless this process's effective UID is 0.
///
/// # Panics
///
/// As said, or when `/proc/self/status` cannot be read.
/// A `kB` field of `/proc/<pid>/status` (`"VmRSS:"`) in KiB; `None` when the process is gone.
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

pub fn require_root(why: &str) {
    let status = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_else(|e| panic!("/proc/self/status: {e}"));
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1));
    assert_eq!(euid, Some("0"), "{why}, which needs root");
}

/// Which data plane the end-to-end suites run on: `SWITCHYARD_DATA_PLANE=bundled|envoy`,
/// Envoy when unset. The manifests and assertions are the same for both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataPlane {
    Envoy,
    Bundled,
}

impl DataPlane {
    /// The data plane chosen for this test run.
    ///
    /// # Panics
    ///
    /// On a value other than `envoy` or `bundled`: a typo must not silently test Envoy twice.
    pub fn from_env() -> Self {
        match std::env::var("SWITCHYARD_DATA_PLANE").as_deref() {
            Err(_) | Ok("" | "envoy") => DataPlane::Envoy,
            Ok("bundled") => DataPlane::Bundled,
            Ok(other) => panic!("SWITCHYARD_DATA_PLANE={other:?}: use envoy or bundled"),
        }
    }

    /// The value of `--data-plane` and of the `switchyard.dev/data-plane` annotation.
    pub fn as_str(self) -> &'static str {
        match self {
            DataPlane::Envoy => "envoy",
            DataPlane::Bundled => "bundled",
        }
    }
}

fn workspace_bin(package: &str, override_var: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(override_var) {
        return PathBuf::from(path);
    }
    let build = escargot::CargoBuild::new()
        .manifest_path(workspace_root().join("Cargo.toml"))
        .package(package)
        .bin(package)
        .current_release();
    // Cargo gives this test process the package's own variables (`CARGO_MANIFEST_DIR`,
    // `CARGO_PKG_NAME`…). Build scripts that declare `rerun-if-env-changed` on them (ring's
    // does) would see them differ from a `cargo` started in a shell and re-run, and
    // everything above them would rebuild, here and again in the next `cargo test`.
    let build = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| {
            k.starts_with("CARGO_PKG_")
                || k.starts_with("CARGO_MANIFEST_")
                || [
                    "CARGO_CRATE_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                ]
                .contains(&k.as_str())
        })
        .fold(build, |b, k| b.env_remove(k));
    let built = build
        .run()
        .unwrap_or_else(|e| panic!("building {package}: {e}"));
    built.path().to_path_buf()
}

/// Asserts that `name` got `expected` (a share, 0 to 1) of the answers counted in `tally`, within
/// five standard deviations of a binomial draw of that many answers.
///
/// A weighted pick is random, so a fixed tolerance fails now and then: ±3 % of 1,500 draws at
/// 2/3 is 2.5 σ, one run in 70. Five σ fails about once in 1.7 million runs and still tells 3:1
/// from 1:1 at 200 draws.
///
/// # Panics
///
/// When the share is outside that band, or nothing was counted.
pub fn assert_share<V>(tally: &BTreeMap<String, V>, name: &str, expected: f64)
where
    V: Copy + TryInto<u64> + std::fmt::Debug,
{
    let count = |v: V| v.try_into().unwrap_or(u64::MAX) as f64;
    let total: f64 = tally.values().map(|&v| count(v)).sum();
    assert!(total > 0.0, "no answers counted for {name}'s share");
    let got = tally.get(name).map_or(0.0, |&v| count(v)) / total;
    let sigma = (expected * (1.0 - expected) / total).sqrt();
    assert!(
        (got - expected).abs() <= 5.0 * sigma,
        "{name} got {got:.3} of {tally:?}, want {expected:.3} ± {:.3} (5 σ of {total} draws)",
        5.0 * sigma,
    );
}
