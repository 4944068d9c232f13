//! TrafficTarget v1alpha3 (the storage version): no destination port; ports come from
//! TCPRoute/UDPRoute rules.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    access::{Rule, Subject},
    status::SmiStatus,
};

#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "access.smi-spec.io",
    version = "v1alpha3",
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
    pub destination: Subject,
    /// Specifications of this traffic target.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    /// Sources of this traffic target.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<Subject>,
}
