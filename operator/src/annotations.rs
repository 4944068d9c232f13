//! The annotations Switchyard reads and writes on Kubernetes objects, and what they mean.
//!
//! ```text
//!  switchyard.dev/inject          on a Namespace or a Pod (template): enabled | disabled. The
//!                                 Pod's value wins; anything else is rejected by the injector.
//!  switchyard.dev/data-plane      on a Pod, else its Namespace: envoy | bundled; else the mesh
//!                                 default. The injector writes the value it chose onto the Pod.
//!  switchyard.dev/proxy-version   on a Pod: it runs a Switchyard proxy (set by the injector,
//!                                 or by whoever runs one beside the Pod); the value is the
//!                                 version that put it there. Only such Pods are in the mesh.
//!  switchyard.dev/intercepted    on a Pod: `true` when the injector redirects its traffic
//!                                 through the proxy (`switchyard proxy-init`); its proxy then
//!                                 routes by each connection's original destination.
//!  switchyard.dev/skip-inbound-ports, switchyard.dev/skip-outbound-ports
//!                                 on a Pod: ports (`80`) and ranges (`9000-9100`), comma
//!                                 separated, that interception leaves alone.
//!  switchyard.dev/tap             on a Namespace or a Pod (template): enabled | disabled. With
//!                                 `disabled` the Pod's proxy is never tapped; the injector
//!                                 writes the Namespace's value onto a Pod without one.
//!  switchyard.dev/skip-outbound-cidrs
//!                                 on a Pod: IPv4 and IPv6 CIDRs, comma separated, whose
//!                                 outbound traffic interception leaves alone.
//! ```

use std::{fmt, str::FromStr};

use serde_json::Value;

pub use crate::index::{
    DATA_PLANE_ANNOTATION as DATA_PLANE, INTERCEPTED_ANNOTATION as INTERCEPTED,
    TAP_ANNOTATION as TAP,
};

/// Marks a Pod that runs a Switchyard proxy: in Kubernetes mode only these Pods get a proxy
/// configuration, and only their endpoints are reached over mTLS. Local mode treats every Pod
/// as meshed (each Pod in its directory is a proxy).
pub const PROXY_VERSION: &str = "switchyard.dev/proxy-version";
/// Enrols a Namespace's or a Pod's workloads in the mesh: [`InjectMode`].
pub const INJECT: &str = "switchyard.dev/inject";
/// Inbound ports interception leaves alone: a [`PortList`](crate::intercept::PortList).
pub const SKIP_INBOUND_PORTS: &str = "switchyard.dev/skip-inbound-ports";
/// Outbound ports interception leaves alone: a [`PortList`](crate::intercept::PortList).
pub const SKIP_OUTBOUND_PORTS: &str = "switchyard.dev/skip-outbound-ports";
/// Outbound destinations interception leaves alone: a [`CidrList`](crate::intercept::CidrList).
pub const SKIP_OUTBOUND_CIDRS: &str = "switchyard.dev/skip-outbound-cidrs";

/// Whether a Pod (as the watch delivers it, JSON) carries [`PROXY_VERSION`] with a value.
pub fn is_meshed(pod: &Value) -> bool {
    pod["metadata"]["annotations"][PROXY_VERSION]
        .as_str()
        .is_some_and(|v| !v.is_empty())
}

// === InjectMode ===

/// The value of [`INJECT`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InjectMode {
    Enabled,
    Disabled,
}

/// An [`INJECT`] value that is neither `enabled` nor `disabled`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not enabled or disabled")]
pub struct UnknownInjectMode(pub String);

impl InjectMode {
    pub fn as_str(self) -> &'static str {
        match self {
            InjectMode::Enabled => "enabled",
            InjectMode::Disabled => "disabled",
        }
    }
}

impl fmt::Display for InjectMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for InjectMode {
    type Err = UnknownInjectMode;

    /// Exact, lower-case values only, as Kubernetes compares annotation values: `true`, `yes`
    /// or `Enabled` are refused rather than guessed at.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "enabled" => Ok(InjectMode::Enabled),
            "disabled" => Ok(InjectMode::Disabled),
            other => Err(UnknownInjectMode(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests;
