//! The mesh model: everything one proxy must know, resolved, validated and version-free. The
//! index produces it; every data-plane adapter consumes it. No Kubernetes types, no protobuf.
//!
//! Pieces that many proxies share (a service's outbound routes, a cluster's endpoints) sit
//! behind `Arc`, so a mesh of thousands of proxies holds one copy of each, and an adapter can
//! cache its translation of a piece by pointer identity or by the piece's name and hash.

use std::{
    collections::BTreeMap,
    fmt,
    net::{IpAddr, SocketAddr},
    num::NonZeroU32,
    sync::Arc,
    time::Duration,
};

pub use switchyard_proxy_config::metrics::RouteStatName;

#[cfg(test)]
mod tests;

/// A Kubernetes Service, by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceName {
    pub namespace: String,
    pub name: String,
}

impl ServiceName {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ServiceName {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// Every host name a client in the mesh may use for this service, shortest first:
    /// `svc`, `svc.ns`, `svc.ns.svc`, `svc.ns.svc.<cluster domain>`.
    pub fn hostnames(&self, cluster_domain: &str) -> Vec<String> {
        let ServiceName { namespace, name } = self;
        vec![
            name.clone(),
            format!("{name}.{namespace}"),
            format!("{name}.{namespace}.svc"),
            format!("{name}.{namespace}.svc.{cluster_domain}"),
        ]
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A cluster: one port of one Service. Named `<namespace>/<service>|<port>` (DESIGN §3).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClusterName(String);

impl ClusterName {
    pub fn new(service: &ServiceName, port: u16) -> Self {
        ClusterName(format!("{service}|{port}"))
    }

    /// The cluster of one endpoint of a headless Service port, `<ns>/<svc>|<port>|<ip>`: a
    /// client of a headless Service addresses a Pod itself, so the mesh reaches that Pod.
    pub fn endpoint(&self, ip: IpAddr) -> Self {
        ClusterName(format!("{}|{ip}", self.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Looks a cluster up by the name a proxy reports it under (its metrics' `envoy.cluster_name`).
impl std::borrow::Borrow<str> for ClusterName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClusterName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A workload identity: a ServiceAccount, written as a SPIFFE ID
/// `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    pub namespace: String,
    pub service_account: String,
}

impl Identity {
    pub fn new(namespace: impl Into<String>, service_account: impl Into<String>) -> Self {
        Identity {
            namespace: namespace.into(),
            service_account: service_account.into(),
        }
    }

    pub fn spiffe_id(&self, trust_domain: &str) -> String {
        format!(
            "spiffe://{trust_domain}/ns/{}/sa/{}",
            self.namespace, self.service_account
        )
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.service_account)
    }
}

/// A proxy: one Pod's sidecar, keyed by namespace and Pod name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProxyId {
    pub namespace: String,
    pub pod: String,
}

impl fmt::Display for ProxyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.pod)
    }
}

/// The application protocol of a port: HTTP ports get L7 routing, others are proxied as TCP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Http,
    Http2,
    /// Declared opaque (`appProtocol: tcp`, a `tcp-` name): always proxied as TCP, so a
    /// server-first protocol (the server speaks first, as MySQL does) never waits for a
    /// detection timeout.
    Tcp,
    /// Not declared. Proxied as TCP, except that an intercepted connection whose first bytes
    /// are HTTP is routed as HTTP (so `curl` to a Service with an unnamed port gets retries
    /// and per-request balancing, and gRPC keeps HTTP/2 end to end).
    Unknown,
}

impl Protocol {
    /// Whether the port is declared HTTP (HTTP/1.1 or HTTP/2): routed per request, authorized
    /// by HTTPRouteGroups.
    pub fn is_http(self) -> bool {
        matches!(self, Protocol::Http | Protocol::Http2)
    }
}

/// Mesh-wide settings; never part of SMI manifests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshSettings {
    /// SPIFFE trust domain; default `cluster.local`.
    pub trust_domain: String,
    /// DNS suffix of Services; default `cluster.local`.
    pub cluster_domain: String,
    pub access_mode: AccessMode,
    /// The data plane of workloads that do not choose one themselves; default Envoy.
    pub data_plane: DataPlane,
    /// Timeout and retries of an outbound HTTP route that nothing else sets: the index puts
    /// this on every [`Route`] it builds.
    pub route_policy: RoutePolicy,
    /// How a cluster treats its endpoints (ejection of failing ones, connection limits) when
    /// nothing else sets it: the index puts this on every [`Cluster`] it builds.
    pub cluster_policy: ClusterPolicy,
    /// What every listener tolerates from its downstream peers: timeouts and a connection cap.
    pub listener_policy: ListenerPolicy,
}

impl Default for MeshSettings {
    fn default() -> Self {
        MeshSettings {
            trust_domain: "cluster.local".into(),
            cluster_domain: "cluster.local".into(),
            access_mode: AccessMode::Strict,
            data_plane: DataPlane::Envoy,
            route_policy: RoutePolicy::default(),
            cluster_policy: ClusterPolicy::default(),
            listener_policy: ListenerPolicy::default(),
        }
    }
}

/// What an outbound HTTP route does with a request besides choosing its backend.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RoutePolicy {
    /// Whole-request timeout, retries included; zero disables it. The default (15 s) is
    /// Envoy's own; long-lived streams (gRPC streaming, long polling) need more, or zero.
    pub timeout: Duration,
    pub retry: RetryPolicy,
}

impl Default for RoutePolicy {
    fn default() -> Self {
        RoutePolicy {
            timeout: Duration::from_secs(15),
            retry: RetryPolicy::default(),
        }
    }
}

/// When a failed request is tried again.
///
/// The default retries only when the request cannot have reached the application: a
/// connection that failed, a stream the peer refused, or a reset before the request was sent.
/// That keeps weight changes and endpoint churn free of errors without replaying requests that
/// were delivered (which would need an idempotency judgement the mesh cannot make).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RetryPolicy {
    /// The failures retried, in this order; empty retries nothing.
    pub on: Vec<RetryOn>,
    pub max_retries: u32,
    /// A retry goes to another endpoint than those that failed, picking up to this many times
    /// to find one (the one that just failed is the least likely to work).
    pub host_selection_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            on: vec![
                RetryOn::ConnectFailure,
                RetryOn::RefusedStream,
                RetryOn::ResetBeforeRequest,
            ],
            max_retries: 2,
            host_selection_attempts: 3,
        }
    }
}

/// A failure a request may be retried on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RetryOn {
    /// The connection to the endpoint could not be made.
    ConnectFailure,
    /// The peer refused the HTTP/2 stream (`REFUSED_STREAM`): it never processed the request.
    RefusedStream,
    /// The connection was reset before the request was sent.
    ResetBeforeRequest,
}

impl RetryOn {
    /// The name Envoy's `retry_on` uses.
    pub fn as_str(self) -> &'static str {
        match self {
            RetryOn::ConnectFailure => "connect-failure",
            RetryOn::RefusedStream => "refused-stream",
            RetryOn::ResetBeforeRequest => "reset-before-request",
        }
    }
}

/// How a cluster treats its endpoints.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ClusterPolicy {
    pub outlier_detection: OutlierDetection,
    /// `None`: the data plane's own limits.
    pub connection_limits: Option<ConnectionLimits>,
}

/// When an endpoint is ejected from its cluster for a while.
///
/// The default ejects after 5 consecutive 5xx or 3 consecutive gateway errors (502/503/504,
/// connect failures), for 30 s and longer on repeats, never more than half the cluster: enough
/// to route around a dead pod before its endpoint is withdrawn, too little to empty a cluster
/// over an application's own errors.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OutlierDetection {
    pub consecutive_5xx: u32,
    pub consecutive_gateway_failure: u32,
    /// How often ejections are evaluated.
    pub interval: Duration,
    /// How long a first ejection lasts; repeats last longer.
    pub base_ejection_time: Duration,
    pub max_ejection_percent: u32,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        OutlierDetection {
            consecutive_5xx: 5,
            consecutive_gateway_failure: 3,
            interval: Duration::from_secs(5),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_percent: 50,
        }
    }
}

/// Upper bounds on what one proxy opens towards a cluster (Envoy's circuit breakers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnectionLimits {
    pub max_connections: u32,
    pub max_pending_requests: u32,
    pub max_requests: u32,
}

/// What a listener tolerates from the peers that connect to it (an application to its own
/// sidecar, or another Pod to this one): how long they may take and stay idle, and how many
/// connections they may hold. Without these a peer that sends one header byte a second, or
/// opens connections and says nothing, holds the proxy's memory and file descriptors forever.
///
/// Both data planes get the same Envoy fields on every listener the mesh generates, and the
/// bundled proxy reads those fields. A zero duration turns its timeout off (as in Envoy).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ListenerPolicy {
    /// HTTP: how long a request's headers may take, from their first byte to their last
    /// (HCM `request_headers_timeout`); the peer then gets 408 and the connection is closed.
    /// Default 10 s: honest headers arrive in one round trip. Envoy's own default is none.
    pub request_headers_timeout: Duration,
    /// HTTP: a downstream connection with no request in flight is closed after this long
    /// (HCM `common_http_protocol_options.idle_timeout`; HTTP/2 gets a GOAWAY first).
    /// Default 5 min, not Envoy's 1 h: longer than the idle timeout of common client pools
    /// (Go's 90 s), so a client usually closes first and never races the close, yet an idle
    /// peer cannot hold a connection for an hour.
    pub http_idle_timeout: Duration,
    /// HTTP: a request with nothing received or sent for this long ends (HCM
    /// `stream_idle_timeout`): 504 `stream timeout` before the response has started, a reset
    /// after. Default
    /// 5 min, Envoy's own.
    pub stream_idle_timeout: Duration,
    /// TCP proxy: a connection with no bytes either way for this long is closed (`tcp_proxy`
    /// `idle_timeout`). Default 1 h, Envoy's own: opaque protocols (database pools) keep idle
    /// connections for long, and their clients rarely notice a closed one before using it.
    pub tcp_idle_timeout: Duration,
    /// Open connections per filter chain (the `envoy.filters.network.connection_limit`
    /// filter's `max_connections`, first in every chain that proxies): beyond it a new
    /// connection is closed at once, before any TLS handshake. A chain is a whole listener
    /// for an addressed one (`outbound_http`, `inbound|<port>`, `outbound_tcp|<port>`), and
    /// one port (or the passthrough) of an intercepted one. `None`: no limit. Default 4096:
    /// above what the pooled clients of one workload hold, while a flood of idle connections
    /// stays within about 120 MiB of the bundled proxy's memory (30 KiB each).
    pub max_connections: Option<NonZeroU32>,
}

impl Default for ListenerPolicy {
    fn default() -> Self {
        ListenerPolicy {
            request_headers_timeout: Duration::from_secs(10),
            http_idle_timeout: Duration::from_secs(5 * 60),
            stream_idle_timeout: Duration::from_secs(5 * 60),
            tcp_idle_timeout: Duration::from_secs(60 * 60),
            max_connections: NonZeroU32::new(4096),
        }
    }
}

/// The proxy a workload runs beside, which decides the adapter its configuration is compiled
/// with. Chosen mesh-wide ([`MeshSettings::data_plane`]) or per workload; never by SMI objects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DataPlane {
    /// An external Envoy (the `envoy` adapter).
    #[default]
    Envoy,
    /// `switchyard-proxy` (the `bundled` adapter).
    Bundled,
}

impl DataPlane {
    pub const ALL: [DataPlane; 2] = [DataPlane::Envoy, DataPlane::Bundled];

    /// The name used in flags and annotations: `envoy` or `bundled`.
    pub fn as_str(self) -> &'static str {
        match self {
            DataPlane::Envoy => "envoy",
            DataPlane::Bundled => "bundled",
        }
    }
}

impl fmt::Display for DataPlane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A data plane name that is neither `envoy` nor `bundled`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a data plane (envoy or bundled)")]
pub struct UnknownDataPlane(pub String);

impl std::str::FromStr for DataPlane {
    type Err = UnknownDataPlane;

    /// Exact, lower-case names only, as Kubernetes annotation values are compared.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DataPlane::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| UnknownDataPlane(s.to_owned()))
    }
}

/// Whether TrafficTargets are enforced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessMode {
    /// Deny everything no TrafficTarget allows (the default).
    Strict,
    /// Allow everything; TrafficTargets are ignored.
    Permissive,
}

/// What one proxy runs: the data plane it is, where it sits, the services it can reach, the
/// clusters behind them, and what its own workload accepts.
#[derive(Clone, Debug, PartialEq)]
pub struct ProxyConfig {
    pub proxy: ProxyId,
    pub identity: Identity,
    /// The data plane the proxy runs: its workload's choice, else the mesh's
    /// ([`MeshSettings::data_plane`]).
    pub data_plane: DataPlane,
    /// What the workload asked for when it named no data plane; `data_plane` is the mesh's
    /// then. Kept for a warning.
    pub unknown_data_plane: Option<UnknownDataPlane>,
    /// The workload's IP (a Pod's `status.podIP`), where the proxy's listeners bind and its
    /// application listens; `None` until it is known.
    pub address: Option<IpAddr>,
    /// Whether redirect rules send the workload's connections through the proxy (the injector
    /// marks such Pods): it then takes them on capture ports and routes each by its original
    /// destination; otherwise the application addresses the proxy.
    pub intercepted: bool,
    /// Outbound services by name; shared between proxies (the map itself too: an adapter can
    /// tell by pointer that nothing changed).
    pub outbound: Arc<BTreeMap<ServiceName, Arc<OutboundService>>>,
    /// Every cluster an outbound route can reach; shared like `outbound`.
    pub clusters: Arc<BTreeMap<ClusterName, Arc<Cluster>>>,
    /// The ports this proxy's workload serves.
    pub inbound: Vec<InboundPort>,
}

/// A Service as clients see it: its names, its virtual IP, and per port where requests go.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OutboundService {
    pub name: ServiceName,
    /// Host names, shortest first (see [`ServiceName::hostnames`]).
    pub hostnames: Vec<String>,
    /// The ClusterIP, when the Service has one (in local mode: a loopback address).
    pub cluster_ip: Option<IpAddr>,
    pub ports: Vec<OutboundPort>,
}

/// One Service port and its routing table.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OutboundPort {
    pub port: u16,
    pub protocol: Protocol,
    /// Tried in order; the last route has no matches and catches everything else. TCP ports
    /// have exactly one route.
    pub routes: Vec<Route>,
}

/// A routing rule: requests matching any of `matches` (all, when empty) are spread over
/// `backends` by weight.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Route {
    /// Stable, unique within the port: `default`, or `<split namespace>/<split name>`.
    pub name: String,
    pub matches: Vec<HttpMatch>,
    /// Never empty; weights are relative and sum to more than zero.
    pub backends: Vec<WeightedCluster>,
    /// Timeout and retries of the requests it routes; HTTP ports only (the one route of a TCP
    /// port carries it unused).
    pub policy: RoutePolicy,
}

/// An HTTP request match. All given conditions must hold.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HttpMatch {
    /// RE2-style regex fully matching the path without the query string; `None` matches all.
    pub path_regex: Option<String>,
    /// Upper-case methods; empty matches every method.
    pub methods: Vec<String>,
    /// Header name (lower case) and value regex (full match); all must match.
    pub headers: Vec<(String, String)>,
}

/// A share of a route's traffic.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WeightedCluster {
    pub cluster: ClusterName,
    /// Relative weight, > 0 for every entry of a route (zero-weight backends are left out, so
    /// they get exactly zero requests).
    pub weight: u32,
}

/// The endpoints of one Service port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Cluster {
    pub name: ClusterName,
    pub service: ServiceName,
    /// The Service port this cluster serves.
    pub port: u16,
    pub protocol: Protocol,
    /// Ready endpoints, sorted by address.
    pub endpoints: Vec<Endpoint>,
    pub policy: ClusterPolicy,
}

/// One ready backend address and the identity it runs as, when known.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    pub address: SocketAddr,
    pub identity: Option<Identity>,
}

/// A port the proxy's own workload serves, and who may reach it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct InboundPort {
    /// The container (target) port.
    pub port: u16,
    pub protocol: Protocol,
    pub authorization: Authorization,
    /// The named matches of the HTTPRouteGroups that the TrafficTargets to this workload use
    /// on this port (HTTP ports only), in the order a request is matched against them: the
    /// first that matches counts it. For metrics only: they change neither routing nor who
    /// may call (in permissive mode too, the TrafficTargets name the routes).
    pub routes: Vec<InboundRoute>,
}

/// A named HTTP match a workload serves: a route of `switchyard stat routes`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct InboundRoute {
    /// The route group and match names, as the proxies' route stats carry them.
    pub name: RouteStatName,
    pub http_match: HttpMatch,
}

/// Who may use an inbound port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Authorization {
    /// Permissive mode: everyone.
    AllowAll,
    /// Strict mode: these rules, ORed; an empty list denies everything.
    Allow(Vec<InboundRule>),
}

/// One grant from a TrafficTarget: these identities, with (for HTTP) these requests.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct InboundRule {
    /// `<namespace>/<name>` of the TrafficTarget, for metrics and debugging.
    pub name: String,
    pub sources: Vec<Identity>,
    /// HTTP matches allowed; empty allows every request (TCP ports, or a TCPRoute rule).
    pub matches: Vec<HttpMatch>,
}
