//! TrafficSplit v1alpha2: whole-number weights; what Flagger (osm) writes.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{status::SmiStatus, weight::Number};

#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "split.smi-spec.io",
    version = "v1alpha2",
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
    /// The backend services of this split.
    pub backends: Vec<TrafficSplitBackend>,
}

/// A backend with a whole-number weight; shared by v1alpha2, v1alpha3 and v1alpha4.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TrafficSplitBackend {
    /// Name of the Kubernetes service.
    pub service: String,
    /// Relative traffic weight of this backend (a whole number ≥ 0; not a percentage).
    pub weight: Number,
}
