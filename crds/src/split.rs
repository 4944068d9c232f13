//! `split.smi-spec.io` TrafficSplit: the canonical form and conversions from and to v1alpha1–v1alpha4.

use kube::core::ObjectMeta;
use serde::{Deserialize, Serialize};

use crate::{
    ConversionError, Kind, ObjectRef,
    status::SmiStatus,
    weight::{self, Decimal, Number, Quantity, Weight},
};

pub mod v1alpha1;
pub mod v1alpha2;
pub mod v1alpha3;
pub mod v1alpha4;

#[cfg(test)]
mod tests;

/// A TrafficSplit in version-free form.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrafficSplit {
    pub metadata: ObjectMeta,
    /// The root (apex) Service clients address: a name, or an FQDN in the same namespace.
    pub service: String,
    pub backends: Vec<Backend>,
    /// HTTPRouteGroups whose matches select the requests this split applies to (v1alpha3+).
    /// Empty: every request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<RouteGroupRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<SmiStatus>,
}

/// One weighted backend Service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backend {
    pub service: String,
    /// Exact relative weight; `None` only when a v1alpha1 object omitted it (invalid).
    pub weight: Option<Weight>,
}

/// A reference to an HTTPRouteGroup in the same namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteGroupRef {
    pub kind: String,
    pub name: String,
    /// Present in the Go type but pruned by the upstream CRD schema; kept when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_group: Option<String>,
}

// === impl TrafficSplit ===

impl TrafficSplit {
    pub fn object_ref(&self) -> ObjectRef {
        ObjectRef::from_meta(Kind::TrafficSplit, &self.metadata)
    }

    fn cannot(&self, version: &'static str, field: String, reason: &str) -> ConversionError {
        ConversionError {
            object: self.object_ref(),
            version,
            field,
            reason: reason.to_string(),
        }
    }

    /// Weights as whole numbers with the ratio kept exactly, for versions whose weights are ints.
    fn integer_backends(
        &self,
        version: &'static str,
    ) -> Result<Vec<(String, Number)>, ConversionError> {
        let mut weights = Vec::with_capacity(self.backends.len());
        for (i, b) in self.backends.iter().enumerate() {
            let w = b.weight.ok_or_else(|| {
                self.cannot(
                    version,
                    format!("spec.backends[{i}].weight"),
                    "weight is required",
                )
            })?;
            weights.push(w.0);
        }
        let ints = weight::integer_weights(&weights).ok_or_else(|| {
            self.cannot(
                version,
                "spec.backends".into(),
                "weights cannot be scaled to whole numbers in range",
            )
        })?;
        Ok(self
            .backends
            .iter()
            .zip(ints)
            .map(|(b, w)| (b.service.clone(), Number(Decimal::from_i64(w))))
            .collect())
    }

    fn no_matches(&self, version: &'static str) -> Result<(), ConversionError> {
        if self.matches.is_empty() {
            Ok(())
        } else {
            Err(self.cannot(
                version,
                "spec.matches".into(),
                "matches need v1alpha3 or later",
            ))
        }
    }
}

/// Resolves `spec.service` to a Service name: a bare name, or an FQDN of a Service in the
/// split's own namespace (`web.ns`, `web.ns.svc`, `web.ns.svc.cluster.local`, any cluster
/// domain). Anything else names another namespace or is not a Service, and is rejected.
pub fn root_service_name<'a>(service: &'a str, namespace: &str) -> Result<&'a str, String> {
    let service = service.strip_suffix('.').unwrap_or(service);
    let mut parts = service.splitn(3, '.');
    let name = parts.next().unwrap_or_default();
    match (parts.next(), parts.next()) {
        (None, _) => Ok(name),
        (Some(ns), rest) if ns == namespace => match rest {
            None => Ok(name),
            Some(r) if r == "svc" || r.starts_with("svc.") => Ok(name),
            Some(_) => Err(format!(
                "{service:?} is not a Service name or FQDN (<name>.<namespace>.svc.<domain>)"
            )),
        },
        (Some(ns), _) => Err(format!(
            "{service:?} names namespace {ns:?}; a split's root service must be in its own namespace ({namespace:?})"
        )),
    }
}

fn matches_from(refs: Vec<RouteGroupRef>) -> Vec<v1alpha3::TrafficSplitMatch> {
    refs.into_iter()
        .map(|m| v1alpha3::TrafficSplitMatch {
            kind: m.kind,
            name: m.name,
            api_group: m.api_group,
        })
        .collect()
}

fn matches_into(m: Vec<v1alpha3::TrafficSplitMatch>) -> Vec<RouteGroupRef> {
    m.into_iter()
        .map(|m| RouteGroupRef {
            kind: m.kind,
            name: m.name,
            api_group: m.api_group,
        })
        .collect()
}

// === v1alpha1 ===

impl From<v1alpha1::TrafficSplit> for TrafficSplit {
    fn from(ts: v1alpha1::TrafficSplit) -> Self {
        TrafficSplit {
            metadata: ts.metadata,
            service: ts.spec.service,
            backends: ts
                .spec
                .backends
                .into_iter()
                .map(|b| Backend {
                    service: b.service,
                    weight: b.weight.map(|q| Weight(q.0)),
                })
                .collect(),
            matches: Vec::new(),
            status: ts.status,
        }
    }
}

impl TryFrom<TrafficSplit> for v1alpha1::TrafficSplit {
    type Error = ConversionError;

    fn try_from(ts: TrafficSplit) -> Result<Self, ConversionError> {
        ts.no_matches("v1alpha1")?;
        let spec = v1alpha1::TrafficSplitSpec {
            service: ts.service,
            backends: ts
                .backends
                .into_iter()
                .map(|b| v1alpha1::TrafficSplitBackend {
                    service: b.service,
                    weight: b.weight.map(|w| Quantity(w.0)),
                })
                .collect(),
        };
        Ok(v1alpha1::TrafficSplit {
            metadata: ts.metadata,
            spec,
            status: ts.status,
        })
    }
}

// === v1alpha2 ===

impl From<v1alpha2::TrafficSplit> for TrafficSplit {
    fn from(ts: v1alpha2::TrafficSplit) -> Self {
        TrafficSplit {
            metadata: ts.metadata,
            service: ts.spec.service,
            backends: ts.spec.backends.into_iter().map(Backend::from).collect(),
            matches: Vec::new(),
            status: ts.status,
        }
    }
}

impl TryFrom<TrafficSplit> for v1alpha2::TrafficSplit {
    type Error = ConversionError;

    fn try_from(ts: TrafficSplit) -> Result<Self, ConversionError> {
        ts.no_matches("v1alpha2")?;
        let backends = ts
            .integer_backends("v1alpha2")?
            .into_iter()
            .map(|(service, weight)| v1alpha2::TrafficSplitBackend { service, weight })
            .collect();
        let spec = v1alpha2::TrafficSplitSpec {
            service: ts.service,
            backends,
        };
        Ok(v1alpha2::TrafficSplit {
            metadata: ts.metadata,
            spec,
            status: ts.status,
        })
    }
}

impl From<v1alpha2::TrafficSplitBackend> for Backend {
    fn from(b: v1alpha2::TrafficSplitBackend) -> Self {
        Backend {
            service: b.service,
            weight: Some(Weight(b.weight.0)),
        }
    }
}

// === v1alpha3 ===

impl From<v1alpha3::TrafficSplit> for TrafficSplit {
    fn from(ts: v1alpha3::TrafficSplit) -> Self {
        TrafficSplit {
            metadata: ts.metadata,
            service: ts.spec.service,
            backends: ts.spec.backends.into_iter().map(Backend::from).collect(),
            matches: matches_into(ts.spec.matches),
            status: ts.status,
        }
    }
}

impl TryFrom<TrafficSplit> for v1alpha3::TrafficSplit {
    type Error = ConversionError;

    fn try_from(ts: TrafficSplit) -> Result<Self, ConversionError> {
        let backends = ts
            .integer_backends("v1alpha3")?
            .into_iter()
            .map(|(service, weight)| v1alpha2::TrafficSplitBackend { service, weight })
            .collect();
        let spec = v1alpha3::TrafficSplitSpec {
            service: ts.service,
            backends,
            matches: matches_from(ts.matches),
        };
        Ok(v1alpha3::TrafficSplit {
            metadata: ts.metadata,
            spec,
            status: ts.status,
        })
    }
}

// === v1alpha4 ===

impl From<v1alpha4::TrafficSplit> for TrafficSplit {
    fn from(ts: v1alpha4::TrafficSplit) -> Self {
        TrafficSplit {
            metadata: ts.metadata,
            service: ts.spec.service,
            backends: ts.spec.backends.into_iter().map(Backend::from).collect(),
            matches: matches_into(ts.spec.matches),
            status: ts.status,
        }
    }
}

impl TryFrom<TrafficSplit> for v1alpha4::TrafficSplit {
    type Error = ConversionError;

    fn try_from(ts: TrafficSplit) -> Result<Self, ConversionError> {
        let backends = ts
            .integer_backends("v1alpha4")?
            .into_iter()
            .map(|(service, weight)| v1alpha2::TrafficSplitBackend { service, weight })
            .collect();
        let spec = v1alpha4::TrafficSplitSpec {
            service: ts.service,
            backends,
            matches: matches_from(ts.matches),
        };
        Ok(v1alpha4::TrafficSplit {
            metadata: ts.metadata,
            spec,
            status: ts.status,
        })
    }
}
