//! SMI API types for every served version, their version-free canonical form, lossless
//! conversions between them, validation with field paths, and CRD generation.
//!
//! Each kind has one canonical type (`split::TrafficSplit`, `access::TrafficTarget`,
//! `specs::HttpRouteGroup`, `specs::TcpRoute`, `specs::UdpRoute`) and one module per served
//! version holding the wire type. Everything downstream of parsing (the index, the adapters, the
//! conversion webhook) works on the canonical form.

#![forbid(unsafe_code)]

use std::fmt;

pub mod access;
pub mod crdgen;
pub mod headers;
pub mod manifest;
pub mod object;
pub mod specs;
pub mod split;
pub mod status;
pub mod validate;
pub mod weight;

#[cfg(test)]
mod test_util;

pub use k8s_openapi;
pub use kube;

pub use object::{SmiObject, VersionedObject};
pub use weight::{Decimal, Weight};

/// The SMI kinds Switchyard serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    TrafficSplit,
    TrafficTarget,
    HttpRouteGroup,
    TcpRoute,
    UdpRoute,
}

// === impl Kind ===

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::TrafficSplit,
        Kind::TrafficTarget,
        Kind::HttpRouteGroup,
        Kind::TcpRoute,
        Kind::UdpRoute,
    ];

    /// The Kubernetes `kind` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::TrafficSplit => "TrafficSplit",
            Kind::TrafficTarget => "TrafficTarget",
            Kind::HttpRouteGroup => "HTTPRouteGroup",
            Kind::TcpRoute => "TCPRoute",
            Kind::UdpRoute => "UDPRoute",
        }
    }

    pub fn group(self) -> &'static str {
        match self {
            Kind::TrafficSplit => "split.smi-spec.io",
            Kind::TrafficTarget => "access.smi-spec.io",
            Kind::HttpRouteGroup | Kind::TcpRoute | Kind::UdpRoute => "specs.smi-spec.io",
        }
    }

    /// Served versions, oldest first; the last one is the storage version.
    pub fn versions(self) -> &'static [&'static str] {
        match self {
            Kind::TrafficSplit => &["v1alpha1", "v1alpha2", "v1alpha3", "v1alpha4"],
            Kind::TrafficTarget => &["v1alpha1", "v1alpha2", "v1alpha3"],
            Kind::HttpRouteGroup | Kind::TcpRoute => {
                &["v1alpha1", "v1alpha2", "v1alpha3", "v1alpha4"]
            }
            Kind::UdpRoute => &["v1alpha4"],
        }
    }

    pub fn storage_version(self) -> &'static str {
        self.versions().last().copied().unwrap_or("v1alpha4")
    }

    pub fn plural(self) -> &'static str {
        match self {
            Kind::TrafficSplit => "trafficsplits",
            Kind::TrafficTarget => "traffictargets",
            Kind::HttpRouteGroup => "httproutegroups",
            Kind::TcpRoute => "tcproutes",
            Kind::UdpRoute => "udproutes",
        }
    }

    pub fn short_name(self) -> &'static str {
        match self {
            Kind::TrafficSplit => "ts",
            Kind::TrafficTarget => "tt",
            Kind::HttpRouteGroup => "htr",
            Kind::TcpRoute => "tr",
            Kind::UdpRoute => "ur",
        }
    }

    /// Looks a kind up by its `kind` string within its API group.
    pub fn from_group_kind(group: &str, kind: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.group() == group && k.as_str() == kind)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Messages are lowercase (`trafficsplit default/web: …`), as kubectl prints kinds.
        f.write_str(&self.as_str().to_ascii_lowercase())
    }
}

/// Names one object in messages: `trafficsplit default/web`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl ObjectRef {
    /// Builds a reference from object metadata; an unset namespace is `default`, as kubectl does.
    pub fn from_meta(kind: Kind, meta: &kube::core::ObjectMeta) -> Self {
        ObjectRef {
            kind,
            namespace: meta
                .namespace
                .clone()
                .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string()),
            name: meta.name.clone().unwrap_or_default(),
        }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// The namespace of an object that names none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// A canonical object that a target version cannot represent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{object}: {field}: cannot be represented in {version}: {reason}")]
pub struct ConversionError {
    pub object: ObjectRef,
    pub version: &'static str,
    pub field: String,
    pub reason: String,
}
