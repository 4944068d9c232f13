//! specs v1alpha1: HTTPRouteGroup with `matches` at the top level (no `spec`), and TCPRoute with no fields.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{specs::HttpMatch, status::SmiStatus};

#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "specs.smi-spec.io",
    version = "v1alpha1",
    kind = "HTTPRouteGroup",
    root = "HttpRouteGroup",
    namespaced,
    no_spec,
    status = "SmiStatus",
    derive = "PartialEq",
    shortname = "htr"
)]
pub struct HttpRouteGroupFields {
    /// Match conditions of this route group.
    pub matches: Vec<HttpMatch>,
}

/// Raw, non protocol specific traffic; it has no fields and covers every port.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "specs.smi-spec.io",
    version = "v1alpha1",
    kind = "TCPRoute",
    root = "TcpRoute",
    namespaced,
    no_spec,
    status = "SmiStatus",
    derive = "PartialEq",
    shortname = "tr"
)]
pub struct TcpRouteFields {}
