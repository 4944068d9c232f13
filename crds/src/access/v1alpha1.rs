//! TrafficTarget v1alpha1: the legacy shape with fields at the top level, `specs` instead of
//! `rules`, and an optional `destination.port`.

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
    version = "v1alpha1",
    kind = "TrafficTarget",
    namespaced,
    no_spec,
    status = "SmiStatus",
    derive = "PartialEq",
    shortname = "tt",
    printcolumn = r#"{"name":"Destination","type":"string","jsonPath":".destination.name","description":"The destination service account."}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
pub struct TrafficTargetFields {
    /// The destination of this traffic target.
    pub destination: Destination,
    /// Specifications of this traffic target (called `rules` from v1alpha2 on).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub specs: Vec<Rule>,
    /// Sources of this traffic target.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<Subject>,
}

/// The destination identity and, optionally, the one port it may be reached on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Destination {
    /// Kind of the destination; `ServiceAccount`.
    pub kind: String,
    /// Name of the destination.
    pub name: String,
    /// Namespace of the destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Port number of the destination; omitted means every port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}
