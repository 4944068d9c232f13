//! Compiles the descriptor set that `switchyard compile` needs to print xDS resources as JSON.
//!
//! envoy-types ships its .proto sources but no public descriptors, and it has no `links` key,
//! so Cargo tells this script nothing about where the crate was unpacked. The script finds it
//! the way Cargo lays it out: the version from `Cargo.lock`, then `vendor/` next to the lock
//! or `$CARGO_HOME/registry/src/*/`. `SWITCHYARD_ENVOY_TYPES_DIR` overrides the search (for
//! source replacement elsewhere). It never runs `cargo metadata`: a nested Cargo can deadlock
//! on the package cache lock that the outer one, or an IDE's, holds.

use std::{
    env,
    error::Error,
    fs,
    path::{Path, PathBuf},
};

/// Every message the Envoy adapter emits, at the top level or inside an `Any`; protox adds
/// their imports. A type missing here renders as an error in `switchyard compile`, and the
/// operator's tests fail on it.
const ROOTS: &[&str] = &[
    "envoy/config/cluster/v3/cluster.proto",
    "envoy/config/endpoint/v3/endpoint.proto",
    "envoy/config/listener/v3/listener.proto",
    "envoy/config/route/v3/route.proto",
    "envoy/config/grpc_credential/v3/file_based_metadata.proto",
    "envoy/extensions/access_loggers/filters/process_ratelimit/v3/process_ratelimit.proto",
    "envoy/extensions/access_loggers/grpc/v3/als.proto",
    "envoy/extensions/filters/http/rbac/v3/rbac.proto",
    "envoy/extensions/filters/http/router/v3/router.proto",
    "envoy/extensions/filters/listener/tls_inspector/v3/tls_inspector.proto",
    "envoy/extensions/filters/network/connection_limit/v3/connection_limit.proto",
    "envoy/extensions/filters/network/direct_response/v3/config.proto",
    "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto",
    "envoy/extensions/filters/network/rbac/v3/rbac.proto",
    "envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.proto",
    "envoy/extensions/retry/host/previous_hosts/v3/previous_hosts.proto",
    "envoy/extensions/transport_sockets/tls/v3/secret.proto",
    "envoy/extensions/transport_sockets/tls/v3/tls.proto",
    "envoy/extensions/upstreams/http/v3/http_protocol_options.proto",
    "envoy/type/v3/token_bucket.proto",
];

/// Import roots under envoy-types' `proto/`, as its own generator uses them.
const INCLUDES: &[&str] = &[
    "data-plane-api",
    "xds",
    "protoc-gen-validate",
    "googleapis",
    "cel-spec/proto",
    "opentelemetry-proto",
    "client_model",
];

const OVERRIDE: &str = "SWITCHYARD_ENVOY_TYPES_DIR";

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed={OVERRIDE}");
    println!("cargo::rerun-if-env-changed=CARGO_HOME");
    let crate_dir = envoy_types_dir()?;
    let proto = crate_dir.join("proto");
    if !proto.join("data-plane-api").is_dir() {
        return Err(format!("{} has no proto/data-plane-api", crate_dir.display()).into());
    }
    let includes: Vec<PathBuf> = INCLUDES
        .iter()
        .map(|i| proto.join(i))
        .filter(|p| p.is_dir())
        .collect();
    let mut compiler = protox::Compiler::new(&includes)?;
    compiler.include_imports(true).include_source_info(false);
    compiler.open_files(ROOTS)?;
    for file in compiler.files() {
        if let Some(path) = file.path() {
            println!("cargo::rerun-if-changed={}", path.display());
        }
    }
    let out = PathBuf::from(env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?);
    fs::write(
        out.join("envoy_descriptors.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    Ok(())
}

/// The unpacked envoy-types package, holding `proto/`.
fn envoy_types_dir() -> Result<PathBuf, Box<dyn Error>> {
    if let Some(dir) = env::var_os(OVERRIDE) {
        return Ok(dir.into());
    }
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").ok_or("no manifest dir")?);
    let Some(lock) = manifest_dir
        .ancestors()
        .map(|d| d.join("Cargo.lock"))
        .find(|p| p.is_file())
    else {
        return Err(format!(
            "no Cargo.lock above {}; set {OVERRIDE}",
            manifest_dir.display()
        )
        .into());
    };
    println!("cargo::rerun-if-changed={}", lock.display());
    let mut versions = locked_versions(&fs::read_to_string(&lock)?, "envoy-types");
    // Newest first, in case the lock holds two (only one can be ours; any is better than none).
    versions.sort_by_key(|v| std::cmp::Reverse(version_key(v)));
    let workspace = lock.parent().unwrap_or(Path::new("."));
    let registries: Vec<PathBuf> = cargo_home()
        .map(|h| h.join("registry").join("src"))
        .and_then(|src| fs::read_dir(src).ok())
        .map(|dirs| dirs.filter_map(|d| d.ok().map(|d| d.path())).collect())
        .unwrap_or_default();
    for version in &versions {
        let versioned = format!("envoy-types-{version}");
        let candidates = [
            workspace.join("vendor").join(&versioned),
            workspace.join("vendor").join("envoy-types"),
        ]
        .into_iter()
        .chain(registries.iter().map(|r| r.join(&versioned)));
        for dir in candidates {
            if dir.join("proto").join("data-plane-api").is_dir() {
                return Ok(dir);
            }
        }
    }
    Err(format!(
        "cannot find the sources of envoy-types {} (from {}) under vendor/ or \
         $CARGO_HOME/registry/src; set {OVERRIDE} to the unpacked crate",
        versions.join(", "),
        lock.display()
    )
    .into())
}

/// The versions of package `name` in a `Cargo.lock` (v3/v4: `name` then `version` lines).
fn locked_versions(lock: &str, name: &str) -> Vec<String> {
    let wanted = format!("name = \"{name}\"");
    let mut lines = lock.lines().map(str::trim);
    let mut found = Vec::new();
    while let Some(line) = lines.next() {
        if line == wanted
            && let Some(v) = lines
                .next()
                .and_then(|l| l.strip_prefix("version = \""))
                .and_then(|l| l.strip_suffix('"'))
        {
            found.push(v.to_owned());
        }
    }
    found
}

fn version_key(v: &str) -> Vec<u64> {
    v.split(['.', '-', '+'])
        .map(|p| p.parse().unwrap_or(0))
        .collect()
}

/// Where Cargo keeps its registry: `$CARGO_HOME`, else `~/.cargo` (as the `home` crate says).
fn cargo_home() -> Option<PathBuf> {
    env::var_os("CARGO_HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .or_else(|| env::home_dir().map(|h| h.join(".cargo")))
}
