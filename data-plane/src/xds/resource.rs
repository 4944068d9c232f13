//! The five resource types of the ADS stream, and the decoding and validation of one resource.
//!
//! Validation happens once, here, at the wire boundary: a resource that passes is decoded, known
//! to stay within the subset `switchyard-proxy` implements, and comes with the names of the
//! resources it references (EDS, RDS and SDS names), so nothing downstream decodes an `Any`
//! again.

use std::{fmt, sync::Arc};

use envoy_types::pb::{
    envoy::{
        config::{
            cluster::v3::{
                Cluster,
                cluster::{ClusterDiscoveryType, DiscoveryType},
            },
            core::v3::{ConfigSource, TransportSocket, config_source::ConfigSourceSpecifier},
            endpoint::v3::ClusterLoadAssignment,
            listener::v3::{FilterChain, Listener, filter},
            route::v3::RouteConfiguration,
        },
        extensions::{
            filters::network::http_connection_manager::v3::{
                HttpConnectionManager, http_connection_manager::RouteSpecifier,
            },
            transport_sockets::{
                raw_buffer::v3::RawBuffer,
                tls::v3::{
                    CommonTlsContext, DownstreamTlsContext, SdsSecretConfig, Secret,
                    UpstreamTlsContext, common_tls_context::ValidationContextType,
                },
            },
        },
        service::discovery::v3::Resource as WireResource,
    },
    google::protobuf::Any,
};
use prost::{Message, Name};

use super::Error;

/// The resource types `switchyard-proxy` subscribes to on its ADS stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceType {
    /// CDS: `envoy.config.cluster.v3.Cluster`.
    Cluster,
    /// EDS: `envoy.config.endpoint.v3.ClusterLoadAssignment`.
    Endpoint,
    /// LDS: `envoy.config.listener.v3.Listener`.
    Listener,
    /// RDS: `envoy.config.route.v3.RouteConfiguration`.
    Route,
    /// SDS: `envoy.extensions.transport_sockets.tls.v3.Secret`.
    Secret,
}

impl ResourceType {
    /// Every type in the order Envoy subscribes and the server should answer (make-before-break):
    /// CDS, EDS, LDS, RDS, SDS.
    pub const ALL: [Self; 5] = [
        Self::Cluster,
        Self::Endpoint,
        Self::Listener,
        Self::Route,
        Self::Secret,
    ];

    /// The type URL of the type, as on the wire.
    pub fn type_url(self) -> &'static str {
        match self {
            Self::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            Self::Endpoint => "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
            Self::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
            Self::Route => "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
            Self::Secret => "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
        }
    }

    /// The type a type URL names, if it is one of the five.
    pub fn from_type_url(type_url: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.type_url() == type_url)
    }

    /// Whether the proxy subscribes to the type as a wildcard (`*`), as Envoy does for CDS and
    /// LDS; the other types are subscribed by name, as accepted resources reference them.
    pub fn is_wildcard(self) -> bool {
        matches!(self, Self::Cluster | Self::Listener)
    }

    /// Position in [`Self::ALL`], for per-type arrays.
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Cluster => "cluster",
            Self::Endpoint => "cluster load assignment",
            Self::Listener => "listener",
            Self::Route => "route configuration",
            Self::Secret => "secret",
        })
    }
}

/// A decoded resource of any of the five types, shared from the start so that holding it in
/// the configuration does not copy it.
#[derive(Clone, PartialEq)]
pub(crate) enum Resource {
    Cluster(Arc<Cluster>),
    Endpoint(Arc<ClusterLoadAssignment>),
    Listener(Arc<Listener>),
    Route(Arc<RouteConfiguration>),
    Secret(Arc<Secret>),
}

/// The names a resource references, which the proxy must subscribe to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Refs {
    /// EDS names: an EDS cluster's `service_name`, or its own name.
    pub(crate) endpoints: Vec<String>,
    /// RDS names: `route_config_name` of HTTP connection managers.
    pub(crate) routes: Vec<String>,
    /// SDS names: secrets named by TLS transport sockets.
    pub(crate) secrets: Vec<String>,
}

impl Refs {
    pub(crate) fn is_empty(&self) -> bool {
        self.endpoints.is_empty() && self.routes.is_empty() && self.secrets.is_empty()
    }

    /// The names of one type.
    pub(crate) fn of(&self, ty: ResourceType) -> &[String] {
        match ty {
            ResourceType::Endpoint => &self.endpoints,
            ResourceType::Route => &self.routes,
            ResourceType::Secret => &self.secrets,
            ResourceType::Cluster | ResourceType::Listener => &[],
        }
    }
}

/// One resource of a response, decoded and validated.
pub(crate) struct Decoded {
    pub(crate) name: String,
    pub(crate) version: String,
    pub(crate) resource: Resource,
    pub(crate) refs: Refs,
}

/// Decodes and validates one resource of a response of type `ty`; `index` is its position in
/// the response, for messages about a resource without a name.
pub(crate) fn decode(ty: ResourceType, index: usize, wire: WireResource) -> Result<Decoded, Error> {
    let WireResource {
        name,
        version,
        resource,
        ..
    } = wire;
    if name.is_empty() {
        return Err(Error::EmptyName { kind: ty, index });
    }
    let Some(any) = resource else {
        return Err(Error::MissingResource { kind: ty, name });
    };
    if any.type_url != ty.type_url() {
        return Err(Error::TypeMismatch {
            kind: ty,
            name,
            found: any.type_url,
        });
    }
    let mut check = Check {
        kind: ty,
        name: &name,
        refs: Refs::default(),
    };
    let (inner, resource) = match ty {
        ResourceType::Cluster => {
            let c: Cluster = check.decode("resource", &any)?;
            check.cluster(&c)?;
            (c.name.clone(), Resource::Cluster(Arc::new(c)))
        }
        ResourceType::Endpoint => {
            let c: ClusterLoadAssignment = check.decode("resource", &any)?;
            (c.cluster_name.clone(), Resource::Endpoint(Arc::new(c)))
        }
        ResourceType::Listener => {
            let l: Listener = check.decode("resource", &any)?;
            check.listener(&l)?;
            (l.name.clone(), Resource::Listener(Arc::new(l)))
        }
        ResourceType::Route => {
            let r: RouteConfiguration = check.decode("resource", &any)?;
            if r.vhds.is_some() {
                return Err(check.unsupported("vhds", "VHDS is not supported"));
            }
            (r.name.clone(), Resource::Route(Arc::new(r)))
        }
        ResourceType::Secret => {
            let s: Secret = check.decode("resource", &any)?;
            (s.name.clone(), Resource::Secret(Arc::new(s)))
        }
    };
    if inner != name {
        return Err(Error::NameMismatch {
            kind: ty,
            name,
            inner,
        });
    }
    let refs = check.refs;
    Ok(Decoded {
        name,
        version,
        resource,
        refs,
    })
}

/// The validation of one resource: where errors point, and the references found so far.
struct Check<'a> {
    kind: ResourceType,
    name: &'a str,
    refs: Refs,
}

impl Check<'_> {
    fn decode<M: Message + Default>(&self, field: &str, any: &Any) -> Result<M, Error> {
        M::decode(any.value.as_slice()).map_err(|error| Error::Decode {
            kind: self.kind,
            name: self.name.to_owned(),
            field: field.to_owned(),
            error,
        })
    }

    fn unsupported(&self, field: impl Into<String>, reason: &'static str) -> Error {
        Error::Unsupported {
            kind: self.kind,
            name: self.name.to_owned(),
            field: field.into(),
            reason,
        }
    }

    fn cluster(&mut self, c: &Cluster) -> Result<(), Error> {
        match &c.cluster_discovery_type {
            None => {}
            Some(ClusterDiscoveryType::Type(t)) if *t == DiscoveryType::Static as i32 => {}
            Some(ClusterDiscoveryType::Type(t)) if *t == DiscoveryType::Eds as i32 => {
                let eds = c.eds_cluster_config.as_ref();
                if !is_ads(eds.and_then(|e| e.eds_config.as_ref())) {
                    return Err(
                        self.unsupported("eds_cluster_config.eds_config", "only ADS is supported")
                    );
                }
                let service = eds.map(|e| e.service_name.as_str()).unwrap_or_default();
                let eds_name = if service.is_empty() { &c.name } else { service };
                self.refs.endpoints.push(eds_name.to_owned());
            }
            Some(ClusterDiscoveryType::Type(_)) => {
                return Err(self.unsupported("type", "only STATIC and EDS clusters are supported"));
            }
            Some(ClusterDiscoveryType::ClusterType(_)) => {
                return Err(self.unsupported("cluster_type", "custom clusters are not supported"));
            }
        }
        if let Some(socket) = &c.transport_socket {
            self.upstream_socket("transport_socket", socket)?;
        }
        for (i, m) in c.transport_socket_matches.iter().enumerate() {
            if let Some(socket) = &m.transport_socket {
                let field = format!("transport_socket_matches[{i}].transport_socket");
                self.upstream_socket(&field, socket)?;
            }
        }
        Ok(())
    }

    fn listener(&mut self, l: &Listener) -> Result<(), Error> {
        for (i, chain) in l.filter_chains.iter().enumerate() {
            self.filter_chain(&format!("filter_chains[{i}]"), chain)?;
        }
        if let Some(chain) = &l.default_filter_chain {
            self.filter_chain("default_filter_chain", chain)?;
        }
        Ok(())
    }

    fn filter_chain(&mut self, at: &str, chain: &FilterChain) -> Result<(), Error> {
        for (i, f) in chain.filters.iter().enumerate() {
            let at = format!("{at}.filters[{i}]");
            let any = match &f.config_type {
                None => continue,
                Some(filter::ConfigType::TypedConfig(any)) => any,
                Some(filter::ConfigType::ConfigDiscovery(_)) => {
                    return Err(self.unsupported(
                        format!("{at}.config_discovery"),
                        "filter config discovery is not supported",
                    ));
                }
            };
            if any.type_url != HttpConnectionManager::type_url() {
                continue;
            }
            let field = format!("{at}.typed_config");
            let hcm: HttpConnectionManager = self.decode(&field, any)?;
            match &hcm.route_specifier {
                Some(RouteSpecifier::Rds(rds)) => {
                    if !is_ads(rds.config_source.as_ref()) {
                        return Err(self.unsupported(
                            format!("{field}.rds.config_source"),
                            "only ADS is supported",
                        ));
                    }
                    if rds.route_config_name.is_empty() {
                        return Err(self.unsupported(
                            format!("{field}.rds.route_config_name"),
                            "must not be empty",
                        ));
                    }
                    self.refs.routes.push(rds.route_config_name.clone());
                }
                Some(RouteSpecifier::RouteConfig(_)) => {}
                Some(RouteSpecifier::ScopedRoutes(_)) => {
                    return Err(self.unsupported(
                        format!("{field}.scoped_routes"),
                        "scoped routes are not supported",
                    ));
                }
                None => {
                    return Err(self.unsupported(
                        format!("{field}.route_specifier"),
                        "rds or route_config is required",
                    ));
                }
            }
        }
        if let Some(socket) = &chain.transport_socket {
            let field = format!("{at}.transport_socket");
            if let Some(tls) = self.socket::<DownstreamTlsContext>(&field, socket)? {
                let common = tls.common_tls_context.as_ref();
                self.common_tls(&format!("{field}.typed_config.common_tls_context"), common)?;
            }
        }
        Ok(())
    }

    fn upstream_socket(&mut self, field: &str, socket: &TransportSocket) -> Result<(), Error> {
        if let Some(tls) = self.socket::<UpstreamTlsContext>(field, socket)? {
            let common = tls.common_tls_context.as_ref();
            self.common_tls(&format!("{field}.typed_config.common_tls_context"), common)?;
        }
        Ok(())
    }

    /// Decodes a transport socket: `Some` TLS context of type `T`, `None` for plaintext, or an
    /// error for any other socket.
    fn socket<T: Message + Default + Name>(
        &self,
        field: &str,
        socket: &TransportSocket,
    ) -> Result<Option<T>, Error> {
        use envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType;
        let Some(ConfigType::TypedConfig(any)) = &socket.config_type else {
            return Err(self.unsupported(
                format!("{field}.typed_config"),
                "a transport socket needs a typed config",
            ));
        };
        if any.type_url == T::type_url() {
            self.decode(&format!("{field}.typed_config"), any).map(Some)
        } else if any.type_url == RawBuffer::type_url() {
            Ok(None)
        } else {
            Err(self.unsupported(
                format!("{field}.typed_config"),
                "only TLS and raw buffer transport sockets are supported",
            ))
        }
    }

    fn common_tls(&mut self, field: &str, common: Option<&CommonTlsContext>) -> Result<(), Error> {
        let Some(common) = common else {
            return Ok(());
        };
        for (i, sds) in common.tls_certificate_sds_secret_configs.iter().enumerate() {
            self.sds(
                &format!("{field}.tls_certificate_sds_secret_configs[{i}]"),
                sds,
            )?;
        }
        match &common.validation_context_type {
            Some(ValidationContextType::ValidationContextSdsSecretConfig(sds)) => {
                self.sds(
                    &format!("{field}.validation_context_sds_secret_config"),
                    sds,
                )?;
            }
            Some(ValidationContextType::CombinedValidationContext(combined)) => {
                if let Some(sds) = &combined.validation_context_sds_secret_config {
                    let at = format!(
                        "{field}.combined_validation_context.validation_context_sds_secret_config"
                    );
                    self.sds(&at, sds)?;
                }
            }
            Some(ValidationContextType::ValidationContext(_)) | None => {}
            // The (deprecated) certificate providers.
            Some(_) => {
                return Err(self.unsupported(
                    format!("{field}.validation_context_type"),
                    "certificate providers are not supported",
                ));
            }
        }
        Ok(())
    }

    fn sds(&mut self, field: &str, sds: &SdsSecretConfig) -> Result<(), Error> {
        if sds.name.is_empty() {
            return Err(self.unsupported(format!("{field}.name"), "must not be empty"));
        }
        if !is_ads(sds.sds_config.as_ref()) {
            return Err(self.unsupported(format!("{field}.sds_config"), "only ADS is supported"));
        }
        self.refs.secrets.push(sds.name.clone());
        Ok(())
    }
}

/// Whether a config source points back at the ADS stream (`ads` or `self`).
fn is_ads(source: Option<&ConfigSource>) -> bool {
    matches!(
        source.and_then(|s| s.config_source_specifier.as_ref()),
        Some(ConfigSourceSpecifier::Ads(_) | ConfigSourceSpecifier::Self_(_))
    )
}
