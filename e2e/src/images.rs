//! The container images a node cluster runs in the end-to-end tests: the project's image set
//! (`switchyard-images`) built from the binaries these tests already use — the debug builds
//! of `switchyard`, `switchyard-proxy` and `switchyard-echo`, Envoy from the project's
//! virtualenv, `pause` from the kube harness — and imported by `kube-node cluster`.
//!
//! The set is built once per change of its inputs, not once per test process: the archives
//! and a stamp of the inputs (path, size, modification time) are kept in
//! `target/e2e-images/`, under a file lock that serialises test binaries running at once.

#![allow(
    clippy::expect_used,
    reason = "test harness: a panic is the test's failure report"
)]

use std::{fs::File, path::PathBuf, sync::OnceLock, time::UNIX_EPOCH};

use switchyard_images::{DEFAULT_REGISTRY, DEFAULT_TAG, Image, SetInputs, build_set, envoy_elf};

use crate::{
    echo_bin, kube::harness_bin_dir, mesh::envoy_bin, proxy_bin, switchyard_bin, workspace_root,
};

/// The archives to import and the references the manifests name.
#[derive(Clone, Debug)]
pub struct NodeImages {
    /// One OCI archive per image.
    pub archives: Vec<PathBuf>,
    /// The Pod sandbox image (`pause`).
    pub sandbox: String,
    /// The operator (`switchyard`).
    pub operator: String,
    /// The bundled proxy.
    pub proxy: String,
    /// The Envoy sidecar.
    pub envoy: String,
    /// The test workload (`switchyard-echo`).
    pub echo: String,
}

/// The image set of this workspace's binaries, built when its inputs changed.
///
/// # Panics
///
/// When a binary cannot be built or found, or the set cannot be written.
pub fn node_images() -> &'static NodeImages {
    static IMAGES: OnceLock<NodeImages> = OnceLock::new();
    IMAGES.get_or_init(|| {
        let inputs = SetInputs {
            operator: switchyard_bin().to_owned(),
            proxy: proxy_bin().to_owned(),
            envoy: envoy_elf(&envoy_bin())
                .unwrap_or_else(|e| panic!("the Envoy binary for its image: {e}")),
            pause: harness_bin_dir().join("pause"),
            echo: echo_bin().to_owned(),
        };
        let out = workspace_root().join("target/e2e-images");
        std::fs::create_dir_all(&out).expect("creating target/e2e-images");
        let lock = File::create(out.join(".lock")).expect("creating target/e2e-images/.lock");
        lock.lock().expect("locking target/e2e-images/.lock");
        let stamp = stamp(&inputs);
        let stamp_path = out.join("stamp");
        let archives: Vec<PathBuf> = Image::ALL
            .iter()
            .map(|i| out.join(format!("{}.tar", i.repository())))
            .collect();
        let current = std::fs::read_to_string(&stamp_path).is_ok_and(|s| s == stamp)
            && archives.iter().all(|a| a.is_file());
        if !current {
            let building = std::time::Instant::now();
            let _ = std::fs::remove_file(&stamp_path);
            let built = build_set(&inputs, DEFAULT_REGISTRY, DEFAULT_TAG, &out)
                .unwrap_or_else(|e| panic!("building the node's images: {e}"));
            for (image, b) in &built.images {
                eprintln!(
                    "image {} {} ({} bytes)",
                    image.repository(),
                    b.digest,
                    b.size
                );
            }
            eprintln!("images built in {:?}", building.elapsed());
            std::fs::write(&stamp_path, &stamp).expect("writing target/e2e-images/stamp");
        }
        NodeImages {
            archives,
            sandbox: Image::Pause.default_reference(),
            operator: Image::Operator.default_reference(),
            proxy: Image::Proxy.default_reference(),
            envoy: Image::Envoy.default_reference(),
            echo: Image::Echo.default_reference(),
        }
    })
}

/// What the set is built from: each input's path, size and modification time.
fn stamp(inputs: &SetInputs) -> String {
    [
        &inputs.operator,
        &inputs.proxy,
        &inputs.envoy,
        &inputs.pause,
        &inputs.echo,
    ]
    .iter()
    .map(|p| {
        let meta = std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        format!("{} {} {mtime}\n", p.display(), meta.len())
    })
    .collect()
}
