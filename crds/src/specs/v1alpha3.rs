//! specs v1alpha3: HTTPRouteGroup fields move under `spec`; TCPRoute gets an empty `spec`.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{specs::HttpMatch, status::SmiStatus};

#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "specs.smi-spec.io",
    version = "v1alpha3",
    kind = "HTTPRouteGroup",
    root = "HttpRouteGroup",
    namespaced,
    status = "SmiStatus",
    derive = "PartialEq",
    shortname = "htr"
)]
pub struct HttpRouteGroupSpec {
    /// Match conditions of this route group.
    pub matches: Vec<HttpMatch>,
}

#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "specs.smi-spec.io",
    version = "v1alpha3",
    kind = "TCPRoute",
    root = "TcpRoute",
    namespaced,
    status = "SmiStatus",
    derive = "PartialEq",
    shortname = "tr"
)]
pub struct TcpRouteSpec {}
