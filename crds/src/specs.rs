//! `specs.smi-spec.io` traffic specs: HTTPRouteGroup (v1alpha1–v1alpha4), TCPRoute
//! (v1alpha1–v1alpha4) and UDPRoute (v1alpha4), in canonical form with conversions.

use kube::core::ObjectMeta;
use serde::{Deserialize, Serialize};

use crate::{ConversionError, Kind, ObjectRef, headers::HttpHeaders, status::SmiStatus};

pub mod v1alpha1;
pub mod v1alpha2;
pub mod v1alpha3;
pub mod v1alpha4;

#[cfg(test)]
mod tests;

/// An HTTPRouteGroup in version-free form: named HTTP matches that TrafficTargets and
/// TrafficSplits refer to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HttpRouteGroup {
    pub metadata: ObjectMeta,
    pub matches: Vec<HttpMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<SmiStatus>,
}

/// One named HTTP match. Its fields are ANDed; a route group's matches are ORed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpMatch {
    /// Name of the HTTP route; what TrafficTarget rules refer to.
    pub name: String,
    /// Regex (RE2 syntax) fully matching the URI path without the query string; omitted
    /// matches every path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_regex: Option<String>,
    /// HTTP methods; empty or `*` means every method.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "methods_schema")]
    pub methods: Vec<String>,
    /// Header name to value regex; every listed header must match.
    #[serde(default, skip_serializing_if = "HttpHeaders::is_empty")]
    pub headers: HttpHeaders,
}

/// The methods the upstream CRD enumerates; `*` means all.
pub const HTTP_METHODS: [&str; 10] = [
    "*", "GET", "HEAD", "PUT", "POST", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

fn methods_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "description": "The HTTP methods of this HTTP route.",
        "items": { "type": "string", "enum": HTTP_METHODS },
    })
}

/// A TCPRoute in version-free form.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TcpRoute {
    pub metadata: ObjectMeta,
    #[serde(flatten)]
    pub ports: PortMatch,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<SmiStatus>,
}

/// A UDPRoute in version-free form.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UdpRoute {
    pub metadata: ObjectMeta,
    #[serde(flatten)]
    pub ports: PortMatch,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<SmiStatus>,
}

/// Ports a TCPRoute or UDPRoute covers. Empty `ports` means every port of the destination.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PortMatch {
    /// Name of this match (v1alpha4 Go type; optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Port numbers to match; empty means all ports.
    #[serde(default)]
    pub ports: Vec<u16>,
}

// === impl HttpRouteGroup ===

impl HttpRouteGroup {
    pub fn object_ref(&self) -> ObjectRef {
        ObjectRef::from_meta(Kind::HttpRouteGroup, &self.metadata)
    }
}

impl From<v1alpha1::HttpRouteGroup> for HttpRouteGroup {
    fn from(o: v1alpha1::HttpRouteGroup) -> Self {
        HttpRouteGroup {
            metadata: o.metadata,
            matches: o.spec.matches,
            status: o.status,
        }
    }
}

impl From<HttpRouteGroup> for v1alpha1::HttpRouteGroup {
    fn from(o: HttpRouteGroup) -> Self {
        let spec = v1alpha1::HttpRouteGroupFields { matches: o.matches };
        v1alpha1::HttpRouteGroup {
            metadata: o.metadata,
            spec,
            status: o.status,
        }
    }
}

impl From<v1alpha2::HttpRouteGroup> for HttpRouteGroup {
    fn from(o: v1alpha2::HttpRouteGroup) -> Self {
        HttpRouteGroup {
            metadata: o.metadata,
            matches: o.spec.matches,
            status: o.status,
        }
    }
}

impl From<HttpRouteGroup> for v1alpha2::HttpRouteGroup {
    fn from(o: HttpRouteGroup) -> Self {
        let spec = v1alpha2::HttpRouteGroupFields { matches: o.matches };
        v1alpha2::HttpRouteGroup {
            metadata: o.metadata,
            spec,
            status: o.status,
        }
    }
}

impl From<v1alpha3::HttpRouteGroup> for HttpRouteGroup {
    fn from(o: v1alpha3::HttpRouteGroup) -> Self {
        HttpRouteGroup {
            metadata: o.metadata,
            matches: o.spec.matches,
            status: o.status,
        }
    }
}

impl From<HttpRouteGroup> for v1alpha3::HttpRouteGroup {
    fn from(o: HttpRouteGroup) -> Self {
        let spec = v1alpha3::HttpRouteGroupSpec { matches: o.matches };
        v1alpha3::HttpRouteGroup {
            metadata: o.metadata,
            spec,
            status: o.status,
        }
    }
}

impl From<v1alpha4::HttpRouteGroup> for HttpRouteGroup {
    fn from(o: v1alpha4::HttpRouteGroup) -> Self {
        HttpRouteGroup {
            metadata: o.metadata,
            matches: o.spec.matches,
            status: o.status,
        }
    }
}

impl From<HttpRouteGroup> for v1alpha4::HttpRouteGroup {
    fn from(o: HttpRouteGroup) -> Self {
        let spec = v1alpha4::HttpRouteGroupSpec { matches: o.matches };
        v1alpha4::HttpRouteGroup {
            metadata: o.metadata,
            spec,
            status: o.status,
        }
    }
}

// === impl TcpRoute ===

impl TcpRoute {
    pub fn object_ref(&self) -> ObjectRef {
        ObjectRef::from_meta(Kind::TcpRoute, &self.metadata)
    }

    /// v1alpha1–v1alpha3 TCPRoutes carry no ports: they cover every port.
    fn all_ports_only(&self, version: &'static str) -> Result<(), ConversionError> {
        if self.ports == PortMatch::default() {
            return Ok(());
        }
        Err(ConversionError {
            object: self.object_ref(),
            version,
            field: "spec.matches".into(),
            reason: "port matches need v1alpha4".into(),
        })
    }
}

impl From<v1alpha1::TcpRoute> for TcpRoute {
    fn from(o: v1alpha1::TcpRoute) -> Self {
        TcpRoute {
            metadata: o.metadata,
            ports: PortMatch::default(),
            status: o.status,
        }
    }
}

impl TryFrom<TcpRoute> for v1alpha1::TcpRoute {
    type Error = ConversionError;

    fn try_from(o: TcpRoute) -> Result<Self, ConversionError> {
        o.all_ports_only("v1alpha1")?;
        Ok(v1alpha1::TcpRoute {
            metadata: o.metadata,
            spec: v1alpha1::TcpRouteFields {},
            status: o.status,
        })
    }
}

impl From<v1alpha2::TcpRoute> for TcpRoute {
    fn from(o: v1alpha2::TcpRoute) -> Self {
        TcpRoute {
            metadata: o.metadata,
            ports: PortMatch::default(),
            status: o.status,
        }
    }
}

impl TryFrom<TcpRoute> for v1alpha2::TcpRoute {
    type Error = ConversionError;

    fn try_from(o: TcpRoute) -> Result<Self, ConversionError> {
        o.all_ports_only("v1alpha2")?;
        Ok(v1alpha2::TcpRoute {
            metadata: o.metadata,
            spec: v1alpha2::TcpRouteFields {},
            status: o.status,
        })
    }
}

impl From<v1alpha3::TcpRoute> for TcpRoute {
    fn from(o: v1alpha3::TcpRoute) -> Self {
        TcpRoute {
            metadata: o.metadata,
            ports: PortMatch::default(),
            status: o.status,
        }
    }
}

impl TryFrom<TcpRoute> for v1alpha3::TcpRoute {
    type Error = ConversionError;

    fn try_from(o: TcpRoute) -> Result<Self, ConversionError> {
        o.all_ports_only("v1alpha3")?;
        Ok(v1alpha3::TcpRoute {
            metadata: o.metadata,
            spec: v1alpha3::TcpRouteSpec {},
            status: o.status,
        })
    }
}

impl From<v1alpha4::TcpRoute> for TcpRoute {
    fn from(o: v1alpha4::TcpRoute) -> Self {
        TcpRoute {
            metadata: o.metadata,
            ports: o.spec.matches,
            status: o.status,
        }
    }
}

impl From<TcpRoute> for v1alpha4::TcpRoute {
    fn from(o: TcpRoute) -> Self {
        let spec = v1alpha4::TcpRouteSpec { matches: o.ports };
        v1alpha4::TcpRoute {
            metadata: o.metadata,
            spec,
            status: o.status,
        }
    }
}

// === impl UdpRoute ===

impl UdpRoute {
    pub fn object_ref(&self) -> ObjectRef {
        ObjectRef::from_meta(Kind::UdpRoute, &self.metadata)
    }
}

impl From<v1alpha4::UdpRoute> for UdpRoute {
    fn from(o: v1alpha4::UdpRoute) -> Self {
        UdpRoute {
            metadata: o.metadata,
            ports: o.spec.matches,
            status: o.status,
        }
    }
}

impl From<UdpRoute> for v1alpha4::UdpRoute {
    fn from(o: UdpRoute) -> Self {
        let spec = v1alpha4::UdpRouteSpec { matches: o.ports };
        v1alpha4::UdpRoute {
            metadata: o.metadata,
            spec,
            status: o.status,
        }
    }
}
