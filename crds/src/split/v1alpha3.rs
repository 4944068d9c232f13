//! TrafficSplit v1alpha3: whole-number weights and `matches` on HTTPRouteGroups.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::status::SmiStatus;

pub use super::v1alpha2::TrafficSplitBackend;

#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "split.smi-spec.io",
    version = "v1alpha3",
    kind = "TrafficSplit",
    namespaced,
    status = "SmiStatus",
    derive = "PartialEq",
    shortname = "ts",
    printcolumn = r#"{"name":"Service","type":"string","jsonPath":".spec.service","description":"The root service of this split."}"#,
    printcolumn = r#"{"name":"Backends","type":"string","jsonPath":".spec.backends[*].service","description":"The backend services."}"#,
    printcolumn = r#"{"name":"Weights","type":"string","jsonPath":".spec.backends[*].weight","description":"Relative weights of the backends."}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
pub struct TrafficSplitSpec {
    /// The root (apex) service of this split.
    pub service: String,
    /// The HTTP route groups whose requests this split applies to; others go to the root service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<TrafficSplitMatch>,
    /// The backend services of this split.
    pub backends: Vec<TrafficSplitBackend>,
}

/// A reference to an HTTPRouteGroup in the split's namespace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrafficSplitMatch {
    /// Kind of the matching group; only `HTTPRouteGroup`.
    pub kind: String,
    /// Name of the matching group.
    pub name: String,
    /// API group of the matching group (`specs.smi-spec.io`); optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_group: Option<String>,
}
