//! Translation of the accepted xDS resources into the runtime model, one resource at a time.
//!
//! The per-resource translations (`ListenerConfig::from_xds`, `RouteTable::from_xds`,
//! `ClusterConfig::from_xds`, `Endpoint::list_from_xds`, `SecretMaterial::from_xds`,
//! `TokenBucketConfig::from_xds`) are also
//! what the xDS client runs to validate a resource when it decodes it, so the subset the proxy
//! implements is written down once: whatever they reject is NACKed (and the previous
//! configuration kept), and whatever the client accepted translates. The proxy keeps what they
//! return ([`Translated`]); [`Runtime::link`] then only ties resources together (endpoints into
//! clusters) and notes references to resources that are not there (yet).
//!
//! Field paths in errors are built only when something is wrong: the happy path allocates
//! nothing for them.

/// Destructures `$value` (a reference to a `$ty`) naming every field: the fields before `unset`
/// are the translation's (it reads them, or knows it may ignore them), and each field after it
/// must hold its default, or the resource is refused at that field. A field that envoy-types
/// adds therefore fails to compile until someone classifies it, so the proxy never accepts a
/// feature by overlooking it. Invoked after the translation's own checks of the message, so
/// those keep their more precise messages.
macro_rules! only {
    ($value:expr => $ty:path { $($ok:ident),* $(,)? } unset { $($no:ident),* $(,)? }) => {{
        #[allow(deprecated)]
        let $ty { $($ok: _,)* $($no,)* } = $value;
        $( $crate::build::unset(stringify!($no), $no)?; )*
    }};
}

mod access_log;
mod cluster;
mod listener;
mod matcher;
mod rbac;
mod route;
mod tls;
mod token_bucket;

pub use self::{access_log::PROCESS_RATELIMIT, route::RETRY_ON};

use std::{
    borrow::Cow,
    collections::BTreeMap,
    fmt,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use envoy_types::pb::{
    envoy::config::core::v3::{
        Address, ApiVersion, ConfigSource, DataSource, SocketAddress, address,
        config_source::ConfigSourceSpecifier, data_source, socket_address,
    },
    envoy::config::{
        cluster::v3::Cluster, endpoint::v3::ClusterLoadAssignment, listener::v3::Listener,
        route::v3::RouteConfiguration,
    },
    envoy::extensions::transport_sockets::tls::v3::Secret,
    envoy::r#type::v3::TokenBucket,
    google::protobuf::{self as pbuf, Any},
};
use prost::Message;

use crate::{
    BucketName, ClusterConfig, Endpoint, ListenerConfig, LogFilter, NetworkFilter, RouteSource,
    RouteTable, Runtime, SecretMaterial, TokenBucketConfig, TypeUrl,
};

/// The translated resources of an accepted configuration, each by the name it is served under
/// (EDS assignments by EDS name). The proxy keeps them as it accepts resources, so building a
/// [`Runtime`] only links them.
#[derive(Clone, Debug, Default)]
pub struct Translated {
    pub clusters: BTreeMap<String, Arc<ClusterConfig>>,
    pub endpoints: BTreeMap<String, Arc<[Endpoint]>>,
    pub listeners: BTreeMap<String, Arc<ListenerConfig>>,
    pub routes: BTreeMap<String, Arc<RouteTable>>,
    pub secrets: BTreeMap<String, Arc<SecretMaterial>>,
    pub buckets: BTreeMap<String, Arc<TokenBucketConfig>>,
}

impl Runtime {
    /// Links translated resources: endpoints into their EDS clusters, inline route tables
    /// next to the RDS ones. A reference to something missing is kept with a warning
    /// (requests to it get 503; an access log filter's `process_ratelimit` leaf whose token
    /// bucket is missing lets no request through, as Envoy's once the bucket is removed);
    /// nothing here can fail, since every piece already translated.
    ///
    /// Linear in the number of resources; no resource is translated again.
    pub fn link(translated: &Translated) -> Runtime {
        let mut warnings = Vec::new();
        let secrets = translated.secrets.clone();
        let buckets = translated.buckets.clone();

        let mut clusters = BTreeMap::new();
        for (name, cluster) in &translated.clusters {
            let cluster = match &cluster.eds {
                Some(eds) => match translated.endpoints.get(eds) {
                    Some(endpoints) => Arc::new(ClusterConfig {
                        endpoints: endpoints.clone(),
                        ..ClusterConfig::clone(cluster)
                    }),
                    None => {
                        warnings.push(format!(
                            "cluster {name}: no endpoints from EDS {eds} yet; it has no endpoints"
                        ));
                        cluster.clone()
                    }
                },
                None => cluster.clone(),
            };
            for secret in cluster.secret_names() {
                missing_secret(&secrets, TypeUrl::Cluster, name, secret, &mut warnings);
            }
            clusters.insert(name.clone(), cluster);
        }

        let mut routes = BTreeMap::new();
        for (name, table) in &translated.routes {
            table.missing_clusters(&clusters, &mut warnings);
            routes.insert(name.clone(), table.clone());
        }

        let mut listeners = BTreeMap::new();
        for (name, listener) in &translated.listeners {
            for secret in listener.secret_names() {
                missing_secret(&secrets, TypeUrl::Listener, name, secret, &mut warnings);
            }
            for bucket in listener.bucket_names() {
                if !buckets.contains_key(bucket.as_str()) {
                    warnings.push(format!(
                        "listener {name}: token bucket {bucket} does not exist; its access log \
                         filters let no request through it"
                    ));
                }
            }
            for chain in &listener.chains {
                match &chain.filter {
                    NetworkFilter::Http(hcm) => match &hcm.routes {
                        RouteSource::Rds(route) if !routes.contains_key(route) => {
                            warnings.push(format!(
                                "listener {name}: filter chain {:?}: route configuration \
                                 {route} does not exist; requests get 404",
                                chain.name
                            ));
                        }
                        RouteSource::Rds(_) => {}
                        RouteSource::Inline(table) => {
                            table.missing_clusters(&clusters, &mut warnings);
                            // Inline tables are listed under their own name for
                            // `/config_dump`, unless RDS already serves that name.
                            if !table.name.is_empty() && !routes.contains_key(&table.name) {
                                routes.insert(table.name.clone(), table.clone());
                            }
                        }
                    },
                    NetworkFilter::Tcp(tcp) => {
                        for (cluster, _) in &tcp.clusters {
                            if !clusters.contains_key(cluster) {
                                warnings.push(format!(
                                    "listener {name}: filter chain {:?}: tcp_proxy: cluster \
                                     {cluster} does not exist; connections are closed",
                                    chain.name
                                ));
                            }
                        }
                    }
                    NetworkFilter::Close => {}
                }
            }
            listeners.insert(name.clone(), listener.clone());
        }

        Runtime {
            listeners,
            routes,
            clusters,
            secrets,
            buckets,
            warnings,
        }
    }
}

/// One resource translated, whatever its type.
#[derive(Clone, Debug)]
pub enum Translation {
    Cluster(ClusterConfig),
    Endpoints(Arc<[Endpoint]>),
    Listener(ListenerConfig),
    Route(RouteTable),
    Secret(SecretMaterial),
    TokenBucket(TokenBucketConfig),
}

/// Decodes one resource as served (its `Any`) and translates it, checking that its type is
/// `ty` and its own name is `name`. The bundled adapter runs this to decide what to send: a
/// resource this refuses, the proxy would NACK.
pub fn translate(ty: TypeUrl, name: &str, any: &Any) -> Result<Translation, Invalid> {
    if any.type_url != ty.type_url() {
        return Err(unsupported("type_url", "does not match the resource type"));
    }
    let named = |inner: &str| {
        if inner == name {
            Ok(())
        } else {
            Err(unsupported("name", "differs from the resource name"))
        }
    };
    Ok(match ty {
        TypeUrl::Cluster => {
            let c: Cluster = decode(any)?;
            named(&c.name)?;
            Translation::Cluster(ClusterConfig::from_xds(&c)?)
        }
        TypeUrl::ClusterLoadAssignment => {
            let c: ClusterLoadAssignment = decode(any)?;
            named(&c.cluster_name)?;
            Translation::Endpoints(Endpoint::list_from_xds(&c)?)
        }
        TypeUrl::Listener => {
            let l: Listener = decode(any)?;
            named(&l.name)?;
            Translation::Listener(ListenerConfig::from_xds(&l)?)
        }
        TypeUrl::RouteConfiguration => {
            let r: RouteConfiguration = decode(any)?;
            named(&r.name)?;
            Translation::Route(RouteTable::from_xds(&r)?)
        }
        TypeUrl::Secret => {
            let s: Secret = decode(any)?;
            named(&s.name)?;
            Translation::Secret(SecretMaterial::from_xds(&s)?)
        }
        // A token bucket has no name of its own: it is known by the name it is served under.
        TypeUrl::TokenBucket => {
            let b: TokenBucket = decode(any)?;
            Translation::TokenBucket(TokenBucketConfig::from_xds(&b)?)
        }
    })
}

fn missing_secret(
    secrets: &BTreeMap<String, Arc<SecretMaterial>>,
    kind: TypeUrl,
    name: &str,
    secret: &str,
    warnings: &mut Vec<String>,
) {
    if !secrets.contains_key(secret) {
        warnings.push(format!(
            "{} {name}: secret {secret} does not exist yet; TLS with it fails",
            kind.noun()
        ));
    }
}

// === impl RouteTable ===

impl RouteTable {
    /// Every cluster a route of the table sends requests to, with repeats.
    pub fn cluster_names(&self) -> impl Iterator<Item = &str> {
        self.virtual_hosts
            .iter()
            .flat_map(|v| &v.routes)
            .flat_map(|r| &r.action.clusters)
            .map(|(name, _)| name.as_str())
    }

    fn missing_clusters(
        &self,
        clusters: &BTreeMap<String, Arc<ClusterConfig>>,
        warnings: &mut Vec<String>,
    ) {
        for vhost in &self.virtual_hosts {
            for route in &vhost.routes {
                for (cluster, _) in &route.action.clusters {
                    let problem = match clusters.get(cluster) {
                        None => "does not exist",
                        // The proxy's passthrough serves TCP proxies only: an HTTP request
                        // would need an upstream connection per original destination.
                        Some(c) if c.original_dst => {
                            "is ORIGINAL_DST, which only a tcp_proxy reaches"
                        }
                        Some(_) => continue,
                    };
                    warnings.push(format!(
                        "route configuration {}: virtual host {}: route {:?}: cluster \
                         {cluster} {problem}; its requests get 503",
                        self.name, vhost.name, route.name
                    ));
                }
            }
        }
    }
}

// === impl ListenerConfig ===

impl ListenerConfig {
    /// The RDS names of the listener's HTTP connection managers, with repeats.
    pub fn rds_names(&self) -> impl Iterator<Item = &str> {
        self.chains.iter().filter_map(|c| match &c.filter {
            NetworkFilter::Http(hcm) => match &hcm.routes {
                RouteSource::Rds(name) => Some(name.as_str()),
                RouteSource::Inline(_) => None,
            },
            NetworkFilter::Tcp(_) | NetworkFilter::Close => None,
        })
    }

    /// The SDS names of the listener's TLS contexts (certificates and trust bundles), with
    /// repeats.
    pub fn secret_names(&self) -> impl Iterator<Item = &str> {
        self.chains
            .iter()
            .filter_map(|c| c.tls.as_ref())
            .flat_map(|tls| {
                std::iter::once(tls.certificate.as_str()).chain(tls.trust_bundle.as_deref())
            })
    }

    /// The token buckets the access logs of the listener's HTTP connection managers take
    /// their tokens from, every bucket of every filter, with repeats. The listener waits for
    /// all of them, as Envoy's does (each bucket is an init target of its listener), whether
    /// or not a request would ever reach it.
    pub fn bucket_names(&self) -> impl Iterator<Item = &BucketName> {
        self.chains
            .iter()
            .filter_map(|c| match &c.filter {
                NetworkFilter::Http(hcm) => Some(&hcm.access_logs),
                NetworkFilter::Tcp(_) | NetworkFilter::Close => None,
            })
            .flatten()
            .filter_map(|log| log.filter.as_ref())
            .flat_map(LogFilter::bucket_names)
    }
}

// === impl LogFilter ===

impl LogFilter {
    /// The token buckets of the filter's `process_ratelimit` leaves, left to right (the order
    /// a request would reach them), with repeats.
    pub fn bucket_names(&self) -> impl Iterator<Item = &BucketName> {
        // Depth first with a stack of the filters still to visit, so that no recursion depth
        // or boxed iterator per node is needed; run at configuration time only.
        let mut to_visit = vec![self];
        std::iter::from_fn(move || {
            while let Some(filter) = to_visit.pop() {
                match filter {
                    LogFilter::Bucket(name) => return Some(name),
                    LogFilter::Header(_) => {}
                    LogFilter::And(all) | LogFilter::Or(all) => to_visit.extend(all.iter().rev()),
                }
            }
            None
        })
    }
}

// === impl ClusterConfig ===

impl ClusterConfig {
    /// The SDS names of the cluster's TLS contexts (certificates and trust bundles), with
    /// repeats.
    pub fn secret_names(&self) -> impl Iterator<Item = &str> {
        self.tls_matches
            .iter()
            .filter_map(|m| m.tls.as_ref())
            .chain(self.tls_default.as_ref())
            .flat_map(|tls| [tls.certificate.as_str(), tls.trust_bundle.as_str()])
    }
}

// === impl Invalid ===

/// Why one resource falls outside the subset the proxy implements: where (a field path inside
/// the resource, such as `virtual_hosts[0].routes[1].match.safe_regex.regex`) and what.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct Invalid {
    field: String,
    problem: Problem,
}

/// What is wrong at the field of an [`Invalid`].
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    /// A feature the proxy does not implement, or a value it cannot use.
    #[error("{0}")]
    Unsupported(Cow<'static, str>),
    /// A nested `Any` (or the resource itself) that does not decode into the type its URL
    /// names.
    #[error("cannot decode: {0}")]
    Decode(prost::DecodeError),
}

impl Invalid {
    /// The path of the field at fault, in proto field names (`filter_chains[0].filters[1]`);
    /// empty for the resource itself.
    pub fn field(&self) -> &str {
        &self.field
    }

    pub fn problem(&self) -> &Problem {
        &self.problem
    }

    pub fn into_parts(self) -> (String, Problem) {
        (self.field, self.problem)
    }

    /// Prefixes the field path with the field that holds it.
    fn within(mut self, segment: impl fmt::Display) -> Self {
        let mut field = segment.to_string();
        if !self.field.is_empty() {
            if !self.field.starts_with('[') {
                field.push('.');
            }
            field.push_str(&self.field);
        }
        self.field = field;
        self
    }
}

/// What a field outside the subset says when it is set.
pub(crate) const NOT_SUPPORTED: &str = "not supported by the bundled proxy";

/// A field the proxy does not implement, which must therefore hold its default value.
pub(crate) fn unset<T: Default + PartialEq>(field: &'static str, value: &T) -> Result<(), Invalid> {
    if *value == T::default() {
        Ok(())
    } else {
        Err(unsupported(field, NOT_SUPPORTED))
    }
}

/// An unsupported feature or value at `field`.
fn unsupported(field: impl Into<String>, reason: impl Into<Cow<'static, str>>) -> Invalid {
    Invalid {
        field: field.into(),
        problem: Problem::Unsupported(reason.into()),
    }
}

/// Adds the enclosing field to the path of an error, on the error path only.
trait At<T> {
    fn at(self, segment: impl fmt::Display) -> Result<T, Invalid>;
}

impl<T> At<T> for Result<T, Invalid> {
    fn at(self, segment: impl fmt::Display) -> Result<T, Invalid> {
        self.map_err(|e| e.within(segment))
    }
}

// === helpers shared by the translations ===

/// Decodes an `Any` already known to name `M`; errors point at the `Any` itself.
fn decode<M: Message + Default>(any: &Any) -> Result<M, Invalid> {
    M::decode(any.value.as_slice()).map_err(|error| Invalid {
        field: String::new(),
        problem: Problem::Decode(error),
    })
}

/// Whether `any` holds an `M`.
fn is<M: prost::Name>(any: &Any) -> bool {
    any.type_url == M::type_url()
}

/// A protobuf duration; negative ones are rejected.
fn duration(d: &pbuf::Duration) -> Result<Duration, Invalid> {
    let (Ok(seconds), Ok(nanos)) = (u64::try_from(d.seconds), u32::try_from(d.nanos)) else {
        return Err(unsupported("", "must not be negative"));
    };
    if nanos >= 1_000_000_000 {
        return Err(unsupported("nanos", "must be less than one second"));
    }
    Ok(Duration::new(seconds, nanos))
}

/// The text of an inline data source (certificates, keys, reply bodies). Files and
/// environment variables would make the configuration depend on the proxy's host, so they are
/// refused.
fn data_source(source: &DataSource) -> Result<String, Invalid> {
    if source.watched_directory.is_some() {
        return Err(unsupported(
            "watched_directory",
            "only inline data sources are supported",
        ));
    }
    only!(source => DataSource { specifier, watched_directory } unset {});
    match &source.specifier {
        Some(data_source::Specifier::InlineString(s)) => Ok(s.clone()),
        Some(data_source::Specifier::InlineBytes(b)) => String::from_utf8(b.clone())
            .map_err(|_| unsupported("inline_bytes", "must be UTF-8 text")),
        Some(data_source::Specifier::Filename(_)) => Err(unsupported(
            "filename",
            "only inline data sources are supported",
        )),
        Some(data_source::Specifier::EnvironmentVariable(_)) => Err(unsupported(
            "environment_variable",
            "only inline data sources are supported",
        )),
        None => Ok(String::new()),
    }
}

/// A TCP socket address with an IP literal and a numeric port; errors are relative to the
/// `Address`.
fn socket_address(address: Option<&Address>) -> Result<SocketAddr, Invalid> {
    match bind_address(address)? {
        (address, false) => Ok(address),
        (_, true) => Err(unsupported(
            "socket_address.ipv4_compat",
            "only a listener binds, so only a listener's address takes ipv4_compat",
        )),
    }
}

/// A listener's [`socket_address`] and its `ipv4_compat`: whether an IPv6 address also takes
/// IPv4 connections (`::` then takes both families, as an IPv6 Pod's capture ports must).
fn bind_address(address: Option<&Address>) -> Result<(SocketAddr, bool), Invalid> {
    let sa: &SocketAddress = match address.and_then(|a| a.address.as_ref()) {
        Some(address::Address::SocketAddress(sa)) => sa,
        Some(address::Address::Pipe(_)) => {
            return Err(unsupported("pipe", "only socket addresses are supported"));
        }
        Some(address::Address::EnvoyInternalAddress(_)) => {
            return Err(unsupported(
                "envoy_internal_address",
                "only socket addresses are supported",
            ));
        }
        None => return Err(unsupported("", "a socket address is required")),
    };
    let at = |field: &str| format!("socket_address.{field}");
    if sa.protocol != socket_address::Protocol::Tcp as i32 {
        return Err(unsupported(at("protocol"), "only TCP is supported"));
    }
    if !sa.resolver_name.is_empty() {
        return Err(unsupported(
            at("resolver_name"),
            "resolvers are not supported",
        ));
    }
    if !sa.network_namespace_filepath.is_empty() {
        return Err(unsupported(
            at("network_namespace_filepath"),
            "network namespaces are not supported",
        ));
    }
    if let Some(a) = address {
        only!(a => Address { address } unset {});
    }
    let classified = || {
        only!(sa => SocketAddress {
            address, port_specifier, protocol, resolver_name, network_namespace_filepath,
            ipv4_compat,
        } unset {});
        Ok(())
    };
    classified().at("socket_address")?;
    let ip: IpAddr = sa
        .address
        .parse()
        .map_err(|_| unsupported(at("address"), "must be an IP address"))?;
    let port = match &sa.port_specifier {
        Some(socket_address::PortSpecifier::PortValue(p)) => {
            u16::try_from(*p).map_err(|_| unsupported(at("port_value"), "must be at most 65535"))?
        }
        Some(socket_address::PortSpecifier::NamedPort(_)) => {
            return Err(unsupported(
                at("named_port"),
                "named ports are not supported",
            ));
        }
        None => return Err(unsupported(at("port_value"), "a port is required")),
    };
    if sa.ipv4_compat && !ip.is_ipv6() {
        return Err(unsupported(
            at("ipv4_compat"),
            "applies to IPv6 addresses only",
        ));
    }
    Ok((SocketAddr::new(ip, port), sa.ipv4_compat))
}

/// Whether a config source points back at the ADS stream (`ads` or `self`, API version V3),
/// the only source the proxy reads, with nothing else set.
fn is_ads(source: Option<&ConfigSource>) -> bool {
    let Some(source) = source else {
        return false;
    };
    let ConfigSource {
        config_source_specifier,
        resource_api_version,
        authorities,
        initial_fetch_timeout,
    } = source;
    matches!(
        config_source_specifier,
        Some(ConfigSourceSpecifier::Ads(_) | ConfigSourceSpecifier::Self_(_))
    ) && (*resource_api_version == ApiVersion::Auto as i32
        || *resource_api_version == ApiVersion::V3 as i32)
        && authorities.is_empty()
        && initial_fetch_timeout.is_none()
}
