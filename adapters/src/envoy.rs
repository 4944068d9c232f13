//! The Envoy adapter: compiles one proxy's mesh model into Envoy v3 xDS resources.
//!
//! What one proxy gets (names per DESIGN §3, all stable across runs):
//!
//! | resource | name | what |
//! |---|---|---|
//! | Listener | `outbound_http` | `bind_ip:outbound_http_port`, an HTTP connection manager on RDS `outbound_http` |
//! | RouteConfiguration | `outbound_http` | a virtual host `<ns>/<svc>\|<port>` per HTTP service port |
//! | Listener | `outbound_tcp\|<port>` | `bind_ip:<service port>`, `tcp_proxy` to the service's clusters |
//! | Cluster + ClusterLoadAssignment | `<ns>/<svc>\|<port>` | EDS over ADS, one per model cluster |
//! | Listener | `inbound\|<port>` | `bind_ip:<port>`: RBAC, then the local application |
//! | RouteConfiguration | `inbound\|<port>` | HTTP ports: one `*` virtual host carrying the RBAC policy |
//! | Cluster | `inbound\|<port>` | STATIC, `app_ip:<port>` |
//!
//! An intercepted proxy ([`Capture::Intercepted`]) gets, instead of the listeners and the
//! `outbound_http` route configuration above:
//!
//! | resource | name | what |
//! |---|---|---|
//! | Listener | `outbound` | `0.0.0.0:<outbound port>`: `original_dst`, a chain per `ClusterIP:port` and per meshed `podIP:port` of a headless Service, passthrough for the rest |
//! | RouteConfiguration | `<ns>/<svc>\|<port>` | per HTTP (or undeclared) service port, one `*` virtual host: the port's routes whatever `Host` says |
//! | Listener | `inbound` | `0.0.0.0:<inbound port>`: `original_dst`, the chains of each inbound port by destination port |
//! | Cluster | `<ns>/<svc>\|<port>\|<pod ip>` | STATIC, one meshed endpoint of a headless Service, over mTLS |
//! | Cluster | `passthrough` | ORIGINAL_DST: where the connection was going, unchanged |
//! | Cluster | `inbound_passthrough` | permissive mode: ORIGINAL_DST from `127.0.0.6`, for inbound ports no Service declares |
//!
//! | Secret (SDS, from [`secrets`]) | `spiffe://<td>/ns/<ns>/sa/<sa>`, `spiffe://<td>` | with [`EnvoyOptions::mtls`]: the proxy's certificate, the trust bundle |
//!
//! With [`EnvoyOptions::mtls`], sidecars talk mutual TLS with SPIFFE certificates: mesh
//! clusters reach meshed endpoints over TLS and check the peer's SPIFFE ID, and inbound
//! listeners require a mesh client certificate (strict access mode) or accept TLS and
//! plaintext side by side (permissive). Certificates come over SDS on the ADS stream; the
//! caller serves them with [`secrets`], which are never cached. See `envoy/tls.rs`.
//!
//! Output is deterministic: resources are sorted by type URL and name, every repeated field is
//! built in a defined order, and protobuf maps with more than one entry (RBAC policies) are
//! written in key order by hand (prost writes `HashMap`s in iteration order, which varies between
//! runs). Equal input therefore gives byte-identical resources, which is what the xDS server's
//! content hashes rely on.
//!
//! [`EnvoyAdapter`] caches the encoded pieces that many proxies share (a cluster and its
//! endpoints, a service's virtual hosts, a namespace's outbound route configuration), keyed by
//! name and validated by `Arc` identity or equality, so recompiling after one change re-encodes
//! only that change; [`EnvoyAdapter::compile_shared`] hands the unchanged resources out as the
//! same `Arc`s, so the xDS server need not re-hash them either.

mod bootstrap;
mod cache;
mod cluster;
mod listener;
mod matcher;
mod rbac;
mod route;
mod tap;
mod tls;
mod wire;

#[cfg(test)]
mod tests;

use std::{
    collections::BTreeSet,
    fmt,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use envoy_types::pb::{
    envoy::config::{
        core::v3::{
            Address, AggregatedConfigSource, ApiVersion, ConfigSource, SocketAddress, address,
            config_source, socket_address,
        },
        listener::v3::Listener,
    },
    google::protobuf::{self as pbuf, Any},
};
use switchyard_proxy_config::TypeUrl;

pub use self::{
    bootstrap::{
        ADMIN_CLUSTER, APP_CLUSTER_PREFIX, AppProbe, BootstrapOptions, DEFAULT_METRICS_INTERVAL,
        ENVOY_FLAGS, FILE_CREDENTIALS, HEALTH_LISTENER, METRICS_BATCH_FAMILIES,
        METRICS_STAT_PREFIX, XDS_STAT_PREFIX, XdsApi, XdsCa, bootstrap,
    },
    tap::{
        ACCESS_LOGGER, ProxyTap, RATE_LIMIT_FILTER, TAP_BUCKET, TAP_BUFFER_BYTES,
        TAP_FLUSH_INTERVAL, TAP_LOG_NAME, TAP_RESPONSE_HEADERS, TAP_STAT_PREFIX, TapMatch, TapRate,
        TapSink, tap,
    },
    tls::{certificate_secret_name, secrets, trust_bundle_secret_name},
};
use crate::model::{
    self, AccessMode, ClusterName, InboundPort, ListenerPolicy, MeshSettings, Protocol,
    ProxyConfig, ServiceName,
};

/// Type URL of `envoy.config.cluster.v3.Cluster` (CDS).
pub const CLUSTER_TYPE_URL: &str = TypeUrl::Cluster.type_url();
/// Type URL of `envoy.config.endpoint.v3.ClusterLoadAssignment` (EDS).
pub const ENDPOINT_TYPE_URL: &str = TypeUrl::ClusterLoadAssignment.type_url();
/// Type URL of `envoy.config.listener.v3.Listener` (LDS).
pub const LISTENER_TYPE_URL: &str = TypeUrl::Listener.type_url();
/// Type URL of `envoy.config.route.v3.RouteConfiguration` (RDS).
pub const ROUTE_TYPE_URL: &str = TypeUrl::RouteConfiguration.type_url();
/// Type URL of `envoy.extensions.transport_sockets.tls.v3.Secret` (SDS).
pub const SECRET_TYPE_URL: &str = TypeUrl::Secret.type_url();
/// A tapped proxy's token bucket (`tap`).
pub const TOKEN_BUCKET_TYPE_URL: &str = TypeUrl::TokenBucket.type_url();

/// Name of the outbound HTTP listener and of its route configuration.
pub const OUTBOUND_HTTP: &str = "outbound_http";

/// Name of an intercepted proxy's outbound listener.
pub const OUTBOUND: &str = "outbound";
/// Name of an intercepted proxy's inbound listener.
pub const INBOUND: &str = "inbound";
/// Name of the ORIGINAL_DST cluster, and of the chains that use it: an intercepted connection
/// to a destination the mesh does not know, passed through unchanged.
pub const PASSTHROUGH: &str = "passthrough";

/// Name of the ORIGINAL_DST cluster an intercepted proxy in permissive mode passes inbound
/// connections to ports no Service declares through, from [`INBOUND_SOURCE`] (from any other
/// source the redirect rules would send them back to the inbound port).
pub const INBOUND_PASSTHROUGH: &str = "inbound_passthrough";

/// The address an intercepted proxy connects to its application from (the redirect rules let
/// exactly these connections through to the Pod's own IP; `switchyard proxy-init` writes them).
pub const INBOUND_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);
/// [`INBOUND_SOURCE`] for IPv6 Pods (`::6`, which has to be added to `lo` first: unlike
/// `127.0.0.0/8`, only `::1` is local on Linux by default).
pub const INBOUND_SOURCE_V6: std::net::Ipv6Addr = std::net::Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6);

/// The inbound source address of the family of `ip`.
pub fn inbound_source(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => IpAddr::V4(INBOUND_SOURCE),
        IpAddr::V6(_) => IpAddr::V6(INBOUND_SOURCE_V6),
    }
}

/// Body of the 403 an inbound HTTP listener returns when no TrafficTarget allows a request.
pub const DENIED_BODY: &str = "denied by mesh policy\n";

/// How one proxy's Envoy is wired to its host: where it listens and where its application is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvoyOptions {
    /// The pod's IP; every listener binds here. In local mode a loopback such as `127.0.1.5`.
    pub bind_ip: IpAddr,
    /// Port of the outbound HTTP listener (DESIGN §3: 15001).
    pub outbound_http_port: u16,
    /// Port of the admin interface, set in the bootstrap; no listener may take it (15000).
    pub admin_port: u16,
    /// Port of the health listener (probes and metrics), set in the bootstrap; no listener
    /// may take it either (15020).
    pub health_port: u16,
    /// Where the proxy's own application listens; inbound traffic goes to `app_ip:<port>`.
    pub app_ip: IpAddr,
    /// TCP connect timeout of every cluster.
    pub connect_timeout: Duration,
    pub load_balancing: LoadBalancing,
    /// Mutual TLS between sidecars; off by default. When on, the proxy's certificate and the
    /// trust bundle must be served over SDS on the same ADS stream (see [`secrets`]): mesh
    /// clusters reach endpoints that have an identity over TLS 1.3, presenting the proxy's
    /// certificate and accepting only those identities (endpoints without one stay
    /// plaintext), and inbound listeners terminate TLS, requiring a mesh client certificate
    /// (strict access mode; plaintext is refused) or accepting plaintext too (permissive).
    /// RBAC principals match the client certificate's SPIFFE ID, so TrafficTargets only
    /// admit anyone with this on.
    pub mtls: bool,
    /// How the application's connections reach the proxy.
    pub capture: Capture,
}

/// How the application's connections reach the proxy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Capture {
    /// The application addresses the proxy (local mode, and a proxy run beside a process by
    /// hand): listeners bind `bind_ip:<port>`, HTTP is routed by `Host` on the outbound HTTP
    /// port, TCP by the port dialled.
    #[default]
    Addressed,
    /// Redirect rules in the Pod (`switchyard proxy-init`) send every outbound TCP connection
    /// of the application to `0.0.0.0:outbound` (DESIGN §3: 15001) and every inbound one to
    /// `0.0.0.0:inbound` (15006); each is routed by its original destination, whatever
    /// `Host` says.
    Intercepted { outbound: u16, inbound: u16 },
}

impl Default for EnvoyOptions {
    fn default() -> Self {
        EnvoyOptions {
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            outbound_http_port: 15001,
            admin_port: 15000,
            health_port: 15020,
            app_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            connect_timeout: Duration::from_secs(1),
            load_balancing: LoadBalancing::RoundRobin,
            mtls: false,
            capture: Capture::Addressed,
        }
    }
}

/// How a cluster spreads requests over its endpoints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum LoadBalancing {
    #[default]
    RoundRobin,
    /// Power of two choices on outstanding requests; better when endpoints differ in speed.
    LeastRequest,
}

/// One xDS resource, ready for the xDS server, which hashes `resource.value` to version it.
///
/// `Debug` prints a secret's size only, never its bytes (they hold a private key); other
/// resources print in full.
#[derive(Clone, PartialEq)]
pub struct Resource {
    /// One of the `*_TYPE_URL` constants; equal to `resource.type_url`.
    pub type_url: &'static str,
    pub name: String,
    pub resource: Any,
    /// The resources this one names, as the adapter wrote them in: a Cluster's endpoints, a
    /// Listener's route configurations and, tapped, its token bucket, and the secrets of
    /// either's TLS contexts. Sorted, no
    /// repeats; empty for other types. The xDS server needs them (a changed cluster's
    /// endpoints are sent again) and need not decode the resource to find them.
    pub references: Vec<Reference>,
}

/// A resource that another names ([`Resource::references`]), which the proxy gets over the
/// same ADS stream before it can use the one that names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    /// `ClusterLoadAssignment`, `RouteConfiguration`, `Secret` or `TokenBucket`.
    pub type_url: TypeUrl,
    pub name: Arc<str>,
}

impl Reference {
    pub fn new(type_url: TypeUrl, name: impl Into<Arc<str>>) -> Self {
        Reference {
            type_url,
            name: name.into(),
        }
    }
}

/// What one proxy is served, plus what could not be expressed.
///
/// `R` is [`Resource`], or `Arc<Resource>` from [`EnvoyAdapter::compile_shared`].
#[derive(Clone, Debug, PartialEq)]
pub struct Output<R = Resource> {
    /// Sorted by type URL, then name; names are unique within a type.
    pub resources: Vec<R>,
    /// Parts of the model that were left out (port clashes, duplicate domains), one sentence
    /// each, for logs and status; the proxy they concern is the caller's.
    pub warnings: Vec<String>,
}

impl<R> Default for Output<R> {
    fn default() -> Self {
        Output {
            resources: Vec::new(),
            warnings: Vec::new(),
        }
    }
}

/// Compiles proxies, reusing the encoding of pieces that did not change since the last call.
///
/// The cache grows with the mesh; call [`EnvoyAdapter::evict_unused`] after a round of compiles
/// to drop what no live model references any more.
#[derive(Debug, Default)]
pub struct EnvoyAdapter {
    cache: cache::Cache,
}

impl EnvoyAdapter {
    pub fn new() -> Self {
        EnvoyAdapter::default()
    }

    /// Compiles one proxy's configuration.
    pub fn compile(
        &mut self,
        proxy: &ProxyConfig,
        mesh: &MeshSettings,
        opts: &EnvoyOptions,
    ) -> Output {
        let shared = self.compile_shared(proxy, mesh, opts);
        Output {
            resources: shared
                .resources
                .into_iter()
                .map(Arc::unwrap_or_clone)
                .collect(),
            warnings: shared.warnings,
        }
    }

    /// Compiles one proxy's configuration, sharing unchanged resources: a cluster's Cluster
    /// and ClusterLoadAssignment, and the outbound route configuration of proxies in one
    /// namespace that reach the same services, are the same `Arc` for every proxy and every
    /// compile until they change. An xDS server can key its per-resource work (hashing,
    /// versions) on the pointer, which keeps a recompute after a small change proportional to
    /// the change rather than to the mesh.
    pub fn compile_shared(
        &mut self,
        proxy: &ProxyConfig,
        mesh: &MeshSettings,
        opts: &EnvoyOptions,
    ) -> Output<Arc<Resource>> {
        let mut out = Compilation::new(proxy.clusters.len() + proxy.inbound.len());
        let mtls = opts.mtls.then_some(tls::Mtls {
            identity: &proxy.identity,
            mesh,
        });
        let [clusters, endpoints] = &*self.cache.clusters(&proxy.clusters, opts, mtls);
        out.extend_shared(CLUSTER_TYPE_URL, clusters);
        out.extend_shared(ENDPOINT_TYPE_URL, endpoints);

        match opts.capture {
            Capture::Addressed => {
                let mut taken: BTreeSet<u16> = BTreeSet::new();
                taken.insert(opts.admin_port);
                taken.insert(opts.health_port);
                taken.insert(opts.outbound_http_port);
                self.inbound(proxy, mesh, opts, mtls, &mut taken, &mut out);

                let (routes, warnings) = self.cache.outbound_routes(proxy);
                let listener = listener::outbound_http(opts, &mesh.listener_policy);
                out.push_listener(listener, vec![routes.name.clone()], None);
                out.push_shared(routes);
                out.warnings.extend(warnings.iter().cloned());
                outbound_tcp(proxy, opts, &mesh.listener_policy, &taken, &mut out);
            }
            Capture::Intercepted { outbound, inbound } => {
                self.intercepted(proxy, mesh, opts, mtls, [outbound, inbound], &mut out);
            }
        }
        out.finish()
    }

    /// Drops cached pieces whose model input is no longer held by anyone but the cache: after
    /// the caller has replaced its models, what they no longer reference goes.
    pub fn evict_unused(&mut self) {
        self.cache.evict_unused();
    }

    /// Number of cached clusters and services, for metrics and tests.
    pub fn cache_len(&self) -> (usize, usize) {
        self.cache.len()
    }

    fn inbound(
        &mut self,
        proxy: &ProxyConfig,
        mesh: &MeshSettings,
        opts: &EnvoyOptions,
        mtls: Option<tls::Mtls<'_>>,
        taken: &mut BTreeSet<u16>,
        out: &mut Compilation,
    ) {
        let mut ports: Vec<_> = proxy.inbound.iter().collect();
        ports.sort_by_key(|p| p.port);
        if !ports.is_empty() && opts.bind_ip == opts.app_ip {
            out.warn(format!(
                "bind address {} equals the application address; inbound listeners would \
                 take the application's own ports",
                opts.bind_ip
            ));
        }
        for port in ports {
            if !taken.insert(port.port) {
                out.warn(format!(
                    "inbound port {} is reserved or listed twice; left out",
                    port.port
                ));
                continue;
            }
            let listener = listener::inbound(port, mesh, opts, mtls, &mut out.warnings);
            let routes = inbound_route_and_cluster(port, mesh, opts, out);
            out.push_listener(listener, routes.into_iter().collect(), mtls);
        }
    }

    /// The resources of an intercepted proxy (see the module docs): `capture` holds its
    /// outbound and inbound ports.
    fn intercepted(
        &mut self,
        proxy: &ProxyConfig,
        mesh: &MeshSettings,
        opts: &EnvoyOptions,
        mtls: Option<tls::Mtls<'_>>,
        capture: [u16; 2],
        out: &mut Compilation,
    ) {
        let [outbound, inbound] = capture;
        for r in self.cache.intercepted_routes(proxy) {
            out.push_shared(r);
        }
        let headless = headless_endpoints(proxy, opts);
        let (listener, routes) = listener::outbound_intercepted(
            proxy.outbound.values().map(|s| &**s),
            &headless,
            opts.app_ip,
            outbound,
            &mesh.listener_policy,
            &mut out.warnings,
        );
        out.push_listener(listener, routes, None);
        for one in &headless {
            let cluster = cluster::endpoint(one, opts, mtls);
            let references = cluster::references(&cluster, mtls);
            let resource = Resource::new(CLUSTER_TYPE_URL, one.name.as_str(), to_any(&cluster));
            out.push_shared(Arc::new(resource.referencing(references)));
        }
        out.push(
            CLUSTER_TYPE_URL,
            PASSTHROUGH,
            to_any(&cluster::passthrough(opts)),
        );

        let reserved = [opts.admin_port, opts.health_port, outbound, inbound];
        let mut ports: Vec<&InboundPort> = proxy.inbound.iter().collect();
        ports.sort_by_key(|p| p.port);
        let mut kept: Vec<&InboundPort> = Vec::with_capacity(ports.len());
        let mut routes = Vec::new();
        for port in ports {
            if reserved.contains(&port.port) || kept.last().is_some_and(|k| k.port == port.port) {
                out.warn(format!(
                    "inbound port {} is reserved or listed twice; left out",
                    port.port
                ));
                continue;
            }
            kept.push(port);
            routes.extend(inbound_route_and_cluster(port, mesh, opts, out));
        }
        let listener = listener::inbound_intercepted(
            &kept,
            opts.app_ip,
            inbound,
            mesh,
            mtls,
            &mut out.warnings,
        );
        out.push_listener(listener, routes, mtls);
        if mesh.access_mode == AccessMode::Permissive {
            out.push(
                CLUSTER_TYPE_URL,
                INBOUND_PASSTHROUGH,
                to_any(&cluster::inbound_passthrough(opts)),
            );
        }
    }
}

/// What an intercepted proxy reaches by the address the application dialled: every meshed
/// endpoint of every headless Service port (one without a ClusterIP, whose clients address its
/// Pods directly), as a cluster of that one endpoint named by [`ClusterName::endpoint`]. The
/// connection keeps its destination and gains mTLS and the server's policy; it is proxied as
/// TCP (splits and HTTP routes need a Service address to apply to, which a headless Service
/// does not have). Only with mTLS, and never the proxy's own Pod: without a certificate to
/// check, the mesh would add nothing to passing the connection through.
fn headless_endpoints(proxy: &ProxyConfig, opts: &EnvoyOptions) -> Vec<model::Cluster> {
    if !opts.mtls {
        return Vec::new();
    }
    let mut out = Vec::new();
    for svc in proxy.outbound.values().filter(|s| s.cluster_ip.is_none()) {
        for port in &svc.ports {
            let name = ClusterName::new(&svc.name, port.port);
            let Some(cluster) = proxy.clusters.get(&name) else {
                continue;
            };
            let mut template = model::Cluster::clone(cluster);
            template.endpoints.clear();
            template.protocol = Protocol::Tcp;
            for e in &cluster.endpoints {
                if e.identity.is_none() || e.address.ip() == opts.app_ip {
                    continue;
                }
                out.push(model::Cluster {
                    name: name.endpoint(e.address.ip()),
                    endpoints: vec![e.clone()],
                    ..template.clone()
                });
            }
        }
    }
    out
}

/// The route configuration (HTTP ports) and the local cluster of one inbound port; returns the
/// name of the route configuration, for the listener that loads it.
fn inbound_route_and_cluster(
    port: &InboundPort,
    mesh: &MeshSettings,
    opts: &EnvoyOptions,
    out: &mut Compilation,
) -> Option<String> {
    let name = inbound_name(port.port);
    out.push(
        CLUSTER_TYPE_URL,
        &name,
        to_any(&cluster::inbound(port, opts)),
    );
    if !port.protocol.is_http() {
        return None;
    }
    let routes = route::inbound(port, mesh, &mut out.warnings);
    out.push(ROUTE_TYPE_URL, &name, routes);
    Some(name)
}

/// Compiles one proxy without a cache; for tests and one-off use.
pub fn compile(proxy: &ProxyConfig, mesh: &MeshSettings, opts: &EnvoyOptions) -> Output {
    EnvoyAdapter::new().compile(proxy, mesh, opts)
}

/// Name of the inbound listener, route configuration and local cluster of a port.
pub fn inbound_name(port: u16) -> String {
    format!("inbound|{port}")
}

/// The port whose [`inbound_name`] `name` is; `None` for any other name.
pub fn inbound_port(name: &str) -> Option<u16> {
    let port = name.strip_prefix("inbound|")?.parse().ok()?;
    (inbound_name(port) == name).then_some(port)
}

/// Name of the outbound TCP listener of a service port.
pub fn outbound_tcp_name(port: u16) -> String {
    format!("outbound_tcp|{port}")
}

/// Name of the outbound virtual host of a service port; the same as its cluster's name.
pub fn virtual_host_name(service: &ServiceName, port: u16) -> String {
    format!("{service}|{port}")
}

/// One listener per TCP port. Ports are a per-proxy namespace here (every TCP service is reached
/// at `bind_ip:<service port>`), so the first service by name wins a port and the rest are
/// reported.
fn outbound_tcp(
    proxy: &ProxyConfig,
    opts: &EnvoyOptions,
    policy: &ListenerPolicy,
    taken: &BTreeSet<u16>,
    out: &mut Compilation,
) {
    let mut owners: std::collections::BTreeMap<u16, &ServiceName> = Default::default();
    for svc in proxy.outbound.values() {
        let mut ports: Vec<_> = svc.ports.iter().filter(|p| !p.protocol.is_http()).collect();
        ports.sort_by_key(|p| p.port);
        for port in ports {
            if taken.contains(&port.port) {
                out.warn(format!(
                    "tcp service {} port {} clashes with an inbound or reserved port; no \
                     outbound listener",
                    svc.name, port.port
                ));
                continue;
            }
            if let Some(owner) = owners.get(&port.port) {
                out.warn(format!(
                    "tcp service {} port {} is already served by {owner}; no outbound listener",
                    svc.name, port.port
                ));
                continue;
            }
            let Some(route) = port.routes.first() else {
                out.warn(format!(
                    "tcp service {} port {} has no route; no outbound listener",
                    svc.name, port.port
                ));
                continue;
            };
            owners.insert(port.port, &svc.name);
            let listener = listener::outbound_tcp(port.port, &route.backends, opts, policy);
            out.push(
                LISTENER_TYPE_URL,
                &outbound_tcp_name(port.port),
                to_any(&listener),
            );
        }
    }
}

/// Resources and warnings as they are produced; sorted once at the end.
struct Compilation {
    /// By type, in type URL order (the order of [`TYPE_URLS`]).
    resources: [Vec<Arc<Resource>>; 4],
    warnings: Vec<String>,
}

/// Every type URL the adapter emits, sorted.
const TYPE_URLS: [&str; 4] = [
    CLUSTER_TYPE_URL,
    ENDPOINT_TYPE_URL,
    LISTENER_TYPE_URL,
    ROUTE_TYPE_URL,
];

impl Compilation {
    fn new(expected_clusters: usize) -> Self {
        Compilation {
            resources: [
                Vec::with_capacity(expected_clusters),
                Vec::with_capacity(expected_clusters),
                Vec::new(),
                Vec::new(),
            ],
            warnings: Vec::new(),
        }
    }

    fn push(&mut self, type_url: &'static str, name: &str, resource: Any) {
        self.push_shared(Arc::new(Resource::new(type_url, name, resource)));
    }

    /// A listener that loads `routes` over RDS, and, when a chain of it terminates TLS with
    /// `mtls`, the proxy's secrets.
    fn push_listener(
        &mut self,
        listener: Listener,
        routes: Vec<String>,
        mtls: Option<tls::Mtls<'_>>,
    ) {
        let tls = listener
            .filter_chains
            .iter()
            .chain(&listener.default_filter_chain)
            .any(|c| c.transport_socket.is_some());
        let routes = routes
            .into_iter()
            .map(|name| Reference::new(TypeUrl::RouteConfiguration, name));
        let secrets = mtls.filter(|_| tls).into_iter().flat_map(|m| m.secrets());
        let resource = Resource::new(LISTENER_TYPE_URL, &listener.name, to_any(&listener));
        self.push_shared(Arc::new(resource.referencing(routes.chain(secrets))));
    }

    /// Appends resources all of one type.
    fn extend_shared(&mut self, type_url: &'static str, resources: &[Arc<Resource>]) {
        debug_assert!(resources.iter().all(|r| r.type_url == type_url));
        let index = TYPE_URLS.iter().position(|t| *t == type_url).unwrap_or(0);
        self.resources[index].extend(resources.iter().cloned());
    }

    fn push_shared(&mut self, resource: Arc<Resource>) {
        let index = TYPE_URLS
            .iter()
            .position(|t| *t == resource.type_url)
            .unwrap_or(0);
        self.resources[index].push(resource);
    }

    fn warn(&mut self, warning: String) {
        self.warnings.push(warning);
    }

    fn finish(self) -> Output<Arc<Resource>> {
        let mut resources = Vec::with_capacity(self.resources.iter().map(Vec::len).sum());
        for mut of_type in self.resources {
            // Mostly in order already (clusters come from a sorted map), which the sort
            // detects in linear time.
            of_type.sort_by(|a, b| a.name.cmp(&b.name));
            resources.append(&mut of_type);
        }
        Output {
            resources,
            warnings: self.warnings,
        }
    }
}

impl fmt::Debug for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Resource");
        d.field("type_url", &self.type_url)
            .field("name", &self.name);
        if self.type_url == SECRET_TYPE_URL || self.resource.type_url == SECRET_TYPE_URL {
            d.field(
                "resource",
                &format_args!("<secret, {} bytes>", self.resource.value.len()),
            );
        } else {
            d.field("resource", &self.resource);
        }
        d.finish()
    }
}

impl Resource {
    /// A resource that names no other.
    fn new(type_url: &'static str, name: &str, resource: Any) -> Resource {
        debug_assert_eq!(type_url, resource.type_url);
        Resource {
            type_url,
            name: name.to_owned(),
            resource,
            references: Vec::new(),
        }
    }

    /// The resource, naming `references` (in any order, repeats allowed).
    fn referencing(self, references: impl IntoIterator<Item = Reference>) -> Resource {
        let mut references: Vec<Reference> = references.into_iter().collect();
        references.sort();
        references.dedup();
        Resource { references, ..self }
    }
}

fn to_any<M: prost::Name>(message: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: message.encode_to_vec(),
    }
}
fn duration(d: Duration) -> pbuf::Duration {
    pbuf::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

fn socket_address(addr: SocketAddr) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: addr.ip().to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(
                addr.port(),
            ))),
            ..Default::default()
        })),
    }
}

/// Where a resource's dependencies come from: the same ADS stream (EDS for clusters, SDS for
/// certificates).
fn ads() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
        ..Default::default()
    }
}
