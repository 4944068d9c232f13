//! `access.smi-spec.io` TrafficTarget: the canonical form and conversions from and to v1alpha1–v1alpha3.

use kube::core::ObjectMeta;
use serde::{Deserialize, Serialize};

use crate::{ConversionError, Kind, ObjectRef, status::SmiStatus};

pub mod v1alpha1;
pub mod v1alpha2;
pub mod v1alpha3;

#[cfg(test)]
mod tests;

/// A TrafficTarget in version-free form: who (`sources`) may reach whom (`destination`) over
/// which routes (`rules`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrafficTarget {
    pub metadata: ObjectMeta,
    pub destination: Destination,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<Subject>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<SmiStatus>,
}

/// The destination identity, with the v1alpha1/v1alpha2 port restriction when one was given.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Destination {
    #[serde(flatten)]
    pub subject: Subject,
    /// Container port the target is restricted to (v1alpha1/v1alpha2 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// An identity: only `kind: ServiceAccount` grants anything.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Subject {
    /// Kind of the subject; `ServiceAccount`.
    pub kind: String,
    /// Name of the subject.
    pub name: String,
    /// Namespace of the subject; defaults to the TrafficTarget's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// A route object (HTTPRouteGroup, TCPRoute, UDPRoute) and, for HTTP, the matches it allows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Rule {
    /// Kind of the route object: `HTTPRouteGroup`, `TCPRoute` or `UDPRoute`.
    pub kind: String,
    /// Name of the route object, in the TrafficTarget's namespace.
    pub name: String,
    /// Names of HTTPRouteGroup matches allowed; empty or omitted means all of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<String>,
}

// === impl TrafficTarget ===

impl TrafficTarget {
    pub fn object_ref(&self) -> ObjectRef {
        ObjectRef::from_meta(Kind::TrafficTarget, &self.metadata)
    }
}

// === v1alpha1 ===

impl From<v1alpha1::TrafficTarget> for TrafficTarget {
    fn from(tt: v1alpha1::TrafficTarget) -> Self {
        let d = tt.spec.destination;
        TrafficTarget {
            metadata: tt.metadata,
            destination: Destination {
                subject: Subject {
                    kind: d.kind,
                    name: d.name,
                    namespace: d.namespace,
                },
                port: d.port,
            },
            rules: tt.spec.specs,
            sources: tt.spec.sources,
            status: tt.status,
        }
    }
}

impl TryFrom<TrafficTarget> for v1alpha1::TrafficTarget {
    type Error = ConversionError;

    fn try_from(tt: TrafficTarget) -> Result<Self, ConversionError> {
        let Destination { subject, port } = tt.destination;
        let spec = v1alpha1::TrafficTargetFields {
            destination: v1alpha1::Destination {
                kind: subject.kind,
                name: subject.name,
                namespace: subject.namespace,
                port,
            },
            specs: tt.rules,
            sources: tt.sources,
        };
        Ok(v1alpha1::TrafficTarget {
            metadata: tt.metadata,
            spec,
            status: tt.status,
        })
    }
}

// === v1alpha2 ===

impl From<v1alpha2::TrafficTarget> for TrafficTarget {
    fn from(tt: v1alpha2::TrafficTarget) -> Self {
        let d = tt.spec.destination;
        TrafficTarget {
            metadata: tt.metadata,
            destination: Destination {
                subject: Subject {
                    kind: d.kind,
                    name: d.name,
                    namespace: d.namespace,
                },
                port: d.port,
            },
            rules: tt.spec.rules,
            sources: tt.spec.sources,
            status: tt.status,
        }
    }
}

impl TryFrom<TrafficTarget> for v1alpha2::TrafficTarget {
    type Error = ConversionError;

    fn try_from(tt: TrafficTarget) -> Result<Self, ConversionError> {
        let Destination { subject, port } = tt.destination;
        let spec = v1alpha2::TrafficTargetSpec {
            destination: v1alpha2::Destination {
                kind: subject.kind,
                name: subject.name,
                namespace: subject.namespace,
                port,
            },
            rules: tt.rules,
            sources: tt.sources,
        };
        Ok(v1alpha2::TrafficTarget {
            metadata: tt.metadata,
            spec,
            status: tt.status,
        })
    }
}

// === v1alpha3 ===

impl From<v1alpha3::TrafficTarget> for TrafficTarget {
    fn from(tt: v1alpha3::TrafficTarget) -> Self {
        TrafficTarget {
            metadata: tt.metadata,
            destination: Destination {
                subject: tt.spec.destination,
                port: None,
            },
            rules: tt.spec.rules,
            sources: tt.spec.sources,
            status: tt.status,
        }
    }
}

impl TryFrom<TrafficTarget> for v1alpha3::TrafficTarget {
    type Error = ConversionError;

    fn try_from(tt: TrafficTarget) -> Result<Self, ConversionError> {
        if tt.destination.port.is_some() {
            // The SDK drops the port here, silently widening access to every port. Fail closed.
            return Err(ConversionError {
                object: tt.object_ref(),
                version: "v1alpha3",
                field: "spec.destination.port".into(),
                reason:
                    "v1alpha3 has no destination port; restrict ports with a TCPRoute rule instead"
                        .into(),
            });
        }
        let spec = v1alpha3::TrafficTargetSpec {
            destination: tt.destination.subject,
            rules: tt.rules,
            sources: tt.sources,
        };
        Ok(v1alpha3::TrafficTarget {
            metadata: tt.metadata,
            spec,
            status: tt.status,
        })
    }
}
