//! The six xDS resource types the mesh serves and the bundled proxy subscribes to: the one
//! definition the operator's snapshot, the adapters and the proxy's client share.

use std::fmt;

/// A resource type served over ADS, named after its protobuf message.
///
/// `ALL` is the push order: CDS → EDS → LDS → RDS is Envoy's make-before-break order
/// (`xds_protocol.rst`, "eventual consistency considerations"); SDS and token buckets come last
/// because a proxy asks for a secret or a bucket only once a cluster or listener that
/// references it exists, and neither depends on anything else. The proxy subscribes in the
/// same order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TypeUrl {
    /// CDS: `envoy.config.cluster.v3.Cluster`.
    Cluster,
    /// EDS: `envoy.config.endpoint.v3.ClusterLoadAssignment`.
    ClusterLoadAssignment,
    /// LDS: `envoy.config.listener.v3.Listener`.
    Listener,
    /// RDS: `envoy.config.route.v3.RouteConfiguration`.
    RouteConfiguration,
    /// SDS: `envoy.extensions.transport_sockets.tls.v3.Secret`.
    Secret,
    /// `envoy.type.v3.TokenBucket`: the rate of an access log's `process_ratelimit` filter
    /// (a tapped proxy logs at most its taps' rate); Envoy subscribes to one as a singleton
    /// resource when a listener references it.
    TokenBucket,
}

// === impl TypeUrl ===

impl TypeUrl {
    pub const ALL: [TypeUrl; 6] = [
        TypeUrl::Cluster,
        TypeUrl::ClusterLoadAssignment,
        TypeUrl::Listener,
        TypeUrl::RouteConfiguration,
        TypeUrl::Secret,
        TypeUrl::TokenBucket,
    ];

    /// The type URL, as on the wire.
    pub const fn type_url(self) -> &'static str {
        match self {
            TypeUrl::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            TypeUrl::ClusterLoadAssignment => {
                "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
            }
            TypeUrl::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
            TypeUrl::RouteConfiguration => {
                "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
            }
            TypeUrl::Secret => {
                "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
            }
            TypeUrl::TokenBucket => "type.googleapis.com/envoy.type.v3.TokenBucket",
        }
    }

    /// The type a type URL names, if it is one of the six.
    pub fn from_type_url(url: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.type_url() == url)
    }

    /// The short xDS name (`CDS`, `EDS`, …), for logs and errors; also the `Display`.
    pub const fn short_name(self) -> &'static str {
        match self {
            TypeUrl::Cluster => "CDS",
            TypeUrl::ClusterLoadAssignment => "EDS",
            TypeUrl::Listener => "LDS",
            TypeUrl::RouteConfiguration => "RDS",
            TypeUrl::Secret => "SDS",
            // Envoy names no service for it; a token bucket discovery service.
            TypeUrl::TokenBucket => "TBDS",
        }
    }

    /// What one resource of the type is called in messages about it (`cluster load
    /// assignment shop/web|80: …`).
    pub const fn noun(self) -> &'static str {
        match self {
            TypeUrl::Cluster => "cluster",
            TypeUrl::ClusterLoadAssignment => "cluster load assignment",
            TypeUrl::Listener => "listener",
            TypeUrl::RouteConfiguration => "route configuration",
            TypeUrl::Secret => "secret",
            TypeUrl::TokenBucket => "token bucket",
        }
    }

    /// LDS and CDS: subscribed to as a wildcard (`*`), and a SotW response is the complete
    /// state of the world (an empty subscription means wildcard, the legacy rule). The other
    /// types are always subscribed by name, as accepted resources reference them.
    pub const fn is_wildcard(self) -> bool {
        matches!(self, TypeUrl::Cluster | TypeUrl::Listener)
    }

    /// Whether the resource's message holds its own name: every type but `TokenBucket`. A
    /// state-of-the-world response carries a `TokenBucket` wrapped in an
    /// `envoy.service.discovery.v3.Resource`, which names it (as a delta response carries every
    /// type); Envoy takes a wrapped resource of any type.
    pub const fn names_itself(self) -> bool {
        !matches!(self, TypeUrl::TokenBucket)
    }

    /// Position in [`Self::ALL`], for per-type arrays.
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for TypeUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short_name())
    }
}
