//! TrafficTarget v1alpha2: fields under `spec`, `rules`, an optional `destination.port`.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use super::v1alpha1::Destination;
use crate::{
    access::{Rule, Subject},
    status::SmiStatus,
};

#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "access.smi-spec.io",
    version = "v1alpha2",
    kind = "TrafficTarget",
    namespaced,
    status = "SmiStatus",
    derive = "PartialEq",
    shortname = "tt",
    printcolumn = r#"{"name":"Destination","type":"string","jsonPath":".spec.destination.name","description":"The destination service account."}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
pub struct TrafficTargetSpec {
    /// The destination of this traffic target.
    pub destination: Destination,
    /// Specifications of this traffic target.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    /// Sources of this traffic target.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<Subject>,
}
