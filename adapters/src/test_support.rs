//! Builders of mesh-model values for tests, here and (with the `test-support` feature) in other
//! crates, so that a new model field is filled in one place instead of in every fixture.

use std::{net::IpAddr, sync::Arc};

use crate::model::{
    Cluster, ClusterName, ClusterPolicy, DataPlane, Endpoint, HttpMatch, Identity, InboundPort,
    OutboundPort, OutboundService, Protocol, ProxyConfig, ProxyId, Route, RoutePolicy, ServiceName,
    WeightedCluster,
};

/// An endpoint at `address` (`ip:port`), meshed when it has an `identity`. Panics on a
/// malformed address: a fixture's mistake.
pub fn endpoint(address: &str, identity: Option<Identity>) -> Endpoint {
    Endpoint {
        address: address
            .parse()
            .unwrap_or_else(|e| panic!("fixture address {address:?}: {e}")),
        identity,
    }
}

/// Endpoints of namespace `ns`, as `(address, service account)`: meshed when the account is
/// given.
pub fn endpoints(ns: &str, endpoints: &[(&str, Option<&str>)]) -> Vec<Endpoint> {
    endpoints
        .iter()
        .map(|(address, sa)| endpoint(address, sa.map(|sa| Identity::new(ns, sa))))
        .collect()
}

/// A share of a route: `ns/svc|port` with `weight`.
pub fn backend(ns: &str, svc: &str, port: u16, weight: u32) -> WeightedCluster {
    WeightedCluster {
        cluster: ClusterName::new(&ServiceName::new(ns, svc), port),
        weight,
    }
}

/// A request match: an optional path regex, methods, and `(name, value regex)` headers.
pub fn http_match(path: Option<&str>, methods: &[&str], headers: &[(&str, &str)]) -> HttpMatch {
    HttpMatch {
        path_regex: path.map(Into::into),
        methods: methods.iter().map(|m| (*m).to_owned()).collect(),
        headers: headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

/// A route with the default policy.
pub fn route(name: &str, matches: Vec<HttpMatch>, backends: Vec<WeightedCluster>) -> Route {
    Route {
        name: name.into(),
        matches,
        backends,
        policy: RoutePolicy::default(),
    }
}

pub fn port(port: u16, protocol: Protocol, routes: Vec<Route>) -> OutboundPort {
    OutboundPort {
        port,
        protocol,
        routes,
    }
}

/// A Service with the host names of the `cluster.local` domain.
pub fn service(
    ns: &str,
    name: &str,
    cluster_ip: Option<IpAddr>,
    ports: Vec<OutboundPort>,
) -> Arc<OutboundService> {
    let svc = ServiceName::new(ns, name);
    Arc::new(OutboundService {
        hostnames: svc.hostnames("cluster.local"),
        name: svc,
        cluster_ip,
        ports,
    })
}

/// The cluster of `ns/svc|port`, with the default policy.
pub fn cluster(
    ns: &str,
    svc: &str,
    port: u16,
    protocol: Protocol,
    endpoints: Vec<Endpoint>,
) -> Arc<Cluster> {
    Arc::new(Cluster {
        name: ClusterName::new(&ServiceName::new(ns, svc), port),
        service: ServiceName::new(ns, svc),
        port,
        protocol,
        endpoints,
        policy: ClusterPolicy::default(),
    })
}

/// The proxy of Pod `ns/pod`, running as `ns/service_account`: it reaches `services` over
/// `clusters` and its workload serves `inbound`. An Envoy, addressed by its application, at no
/// known address.
pub fn proxy(
    ns: &str,
    pod: &str,
    service_account: &str,
    services: impl IntoIterator<Item = Arc<OutboundService>>,
    clusters: impl IntoIterator<Item = Arc<Cluster>>,
    inbound: Vec<InboundPort>,
) -> ProxyConfig {
    ProxyConfig {
        proxy: ProxyId {
            namespace: ns.into(),
            pod: pod.into(),
        },
        identity: Identity::new(ns, service_account),
        data_plane: DataPlane::Envoy,
        unknown_data_plane: None,
        address: None,
        intercepted: false,
        outbound: Arc::new(services.into_iter().map(|s| (s.name.clone(), s)).collect()),
        clusters: Arc::new(clusters.into_iter().map(|c| (c.name.clone(), c)).collect()),
        inbound,
    }
}
