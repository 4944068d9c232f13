//! The annotations Switchyard reads and writes on Kubernetes objects, and what they mean.
//!
//! ```text
//!  switchyard.dev/proxy-version   on a Pod: it runs a Switchyard proxy (set by the injector,
//!                                 or by whoever runs one beside the Pod); the value is the
//!                                 version that put it there. Only such Pods are in the mesh.
//! ```

use serde_json::Value;

/// Marks a Pod that runs a Switchyard proxy: in Kubernetes mode only these Pods get a proxy
/// configuration, and only their endpoints are reached over mTLS. Local mode treats every Pod
/// as meshed (each Pod in its directory is a proxy).
pub const PROXY_VERSION: &str = "switchyard.dev/proxy-version";

/// Whether a Pod (as the watch delivers it, JSON) carries [`PROXY_VERSION`] with a value.
pub fn is_meshed(pod: &Value) -> bool {
    pod["metadata"]["annotations"][PROXY_VERSION]
        .as_str()
        .is_some_and(|v| !v.is_empty())
}

#[cfg(test)]
mod tests;
