//! TrafficSplit v1alpha1: Quantity weights (`1` = `1000m`); what Flagger (linkerd) and Argo
//! Rollouts write by default.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{status::SmiStatus, weight::Quantity};

#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "split.smi-spec.io",
    version = "v1alpha1",
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
    #[serde(default)]
    pub service: String,
    /// The backend services of this split.
    #[serde(default)]
    pub backends: Vec<TrafficSplitBackend>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TrafficSplitBackend {
    /// Name of the Kubernetes service.
    pub service: String,
    /// Relative weight as a quantity: `1` equals `1000m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<Quantity>,
}
