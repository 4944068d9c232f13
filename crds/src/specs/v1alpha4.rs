//! specs v1alpha4 (the storage version): HTTPRouteGroup as in v1alpha3; TCPRoute and the new
//! UDPRoute match on ports.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    specs::{HttpMatch, PortMatch},
    status::SmiStatus,
};

#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "specs.smi-spec.io",
    version = "v1alpha4",
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

#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "specs.smi-spec.io",
    version = "v1alpha4",
    kind = "TCPRoute",
    root = "TcpRoute",
    namespaced,
    status = "SmiStatus",
    derive = "PartialEq",
    shortname = "tr"
)]
pub struct TcpRouteSpec {
    /// Match conditions of this route.
    pub matches: PortMatch,
}

#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "specs.smi-spec.io",
    version = "v1alpha4",
    kind = "UDPRoute",
    root = "UdpRoute",
    namespaced,
    status = "SmiStatus",
    derive = "PartialEq",
    shortname = "ur"
)]
pub struct UdpRouteSpec {
    /// Match conditions of this route.
    pub matches: PortMatch,
}
