//! Outbound resolution: how a Service and the TrafficSplits rooted at it become routes over
//! weighted clusters (DESIGN §4: exclusions, renormalisation, matches, the catch-all). Pure
//! functions over the store; the index publishes what they return.

use std::{collections::BTreeSet, net::SocketAddr};

use switchyard_adapters::model::{
    Cluster, ClusterName, Endpoint, HttpMatch, Identity, OutboundPort, OutboundService, Route,
    ServiceName, WeightedCluster,
};
use switchyard_crds::{Decimal, split::TrafficSplit, weight};

use super::{
    Clusters,
    store::{ServicePort, Store, http_match, ns_of},
};

/// One Service's clusters: one per port, with its ready endpoints.
pub(super) fn clusters(store: &Store, name: &ServiceName) -> Vec<Cluster> {
    let Some(info) = store.services.get(name) else {
        return Vec::new();
    };
    info.ports
        .iter()
        .map(|p| Cluster {
            name: ClusterName::new(name, p.port),
            service: name.clone(),
            port: p.port,
            protocol: p.protocol,
            endpoints: endpoints(store, name, p),
            policy: store.settings.cluster_policy.clone(),
        })
        .collect()
}

/// One Service as clients see it, with a routing table per port; `None` once it is gone.
/// `clusters` are those already published, which decide the backends excluded for having no
/// ready endpoints.
pub(super) fn service(
    store: &Store,
    clusters: &Clusters,
    name: &ServiceName,
) -> Option<OutboundService> {
    let info = store.services.get(name)?;
    Some(OutboundService {
        name: name.clone(),
        hostnames: name.hostnames(&store.settings.cluster_domain),
        cluster_ip: info.cluster_ip,
        ports: info
            .ports
            .iter()
            .map(|p| port(store, clusters, name, p))
            .collect(),
    })
}

/// Ready endpoints of one Service port, resolved through its EndpointSlices.
fn endpoints(store: &Store, name: &ServiceName, port: &ServicePort) -> Vec<Endpoint> {
    let mut out = BTreeSet::new();
    let port_name = port.name.clone().unwrap_or_default();
    for key in store.refs.slices_by_service.get(name) {
        let Some(slice) = store.slices.get(key) else {
            continue;
        };
        let ns = &key.0;
        let slice_port = slice
            .ports
            .iter()
            .find(|(n, _)| *n == port_name)
            .or_else(|| (slice.ports.len() == 1 && port.name.is_none()).then(|| &slice.ports[0]))
            .map(|(_, p)| *p);
        let Some(slice_port) = slice_port else {
            continue;
        };
        for e in slice.endpoints.iter().filter(|e| e.ready) {
            let identity = e.pod.as_ref().and_then(|pod| {
                let info = store.pods.get(&(ns.clone(), pod.clone()))?;
                Some(Identity::new(ns.clone(), info.service_account.clone()))
            });
            for addr in &e.addresses {
                out.insert(Endpoint {
                    address: SocketAddr::new(*addr, slice_port),
                    identity: identity.clone(),
                });
            }
        }
    }
    out.into_iter().collect()
}

/// The routing table of one root Service port: split routes (with matches, oldest first),
/// then the catch-all.
fn port(
    store: &Store,
    clusters: &Clusters,
    root: &ServiceName,
    port: &ServicePort,
) -> OutboundPort {
    let own = vec![WeightedCluster {
        cluster: ClusterName::new(root, port.port),
        weight: 1,
    }];
    let route = |name: String, matches: Vec<HttpMatch>, backends: Vec<WeightedCluster>| Route {
        name,
        matches,
        backends,
        policy: store.settings.route_policy.clone(),
    };
    let (with_matches, catch_all) = store.splits_for(root);
    let mut routes = Vec::new();
    if port.protocol.is_http() {
        for ts in with_matches {
            let matches = split_matches(store, ts);
            if matches.is_empty() {
                // A split whose route groups resolve to nothing matches no request.
                continue;
            }
            let backends = resolve_backends(store, clusters, root, port.port, ts)
                .unwrap_or_else(|_| own.clone());
            routes.push(route(split_route_name(ts), matches, backends));
        }
    }
    let default = match catch_all {
        Some(ts) => route(
            split_route_name(ts),
            Vec::new(),
            resolve_backends(store, clusters, root, port.port, ts).unwrap_or_else(|_| own.clone()),
        ),
        None => route("default".into(), Vec::new(), own),
    };
    routes.push(default);
    OutboundPort {
        port: port.port,
        protocol: port.protocol,
        routes,
    }
}

/// The HTTP matches of a split: every match of every route group it names, ORed.
fn split_matches(store: &Store, ts: &TrafficSplit) -> Vec<HttpMatch> {
    let ns = ns_of(&ts.metadata);
    let mut out = Vec::new();
    for m in &ts.matches {
        if let Some(g) = store
            .groups
            .get(&(ns.clone(), m.name.clone()))
            .and_then(|g| g.good.as_ref())
        {
            out.extend(g.matches.iter().map(http_match));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The weighted clusters of a split for one root port, after the DESIGN §4 exclusions.
/// `Err` means the split is inactive for this port: send traffic to the root's own endpoints.
fn resolve_backends(
    store: &Store,
    clusters: &Clusters,
    root: &ServiceName,
    port: u16,
    ts: &TrafficSplit,
) -> Result<Vec<WeightedCluster>, ()> {
    let mut kept: Vec<(ClusterName, Decimal)> = Vec::new();
    for b in &ts.backends {
        let Some(w) = b.weight.map(|w| w.0) else {
            continue;
        };
        if w.is_zero() {
            continue;
        }
        let svc = ServiceName::new(root.namespace.clone(), b.service.clone());
        let Some(info) = store.services.get(&svc) else {
            continue;
        };
        if !info.ports.iter().any(|p| p.port == port) {
            continue;
        }
        let cluster = ClusterName::new(&svc, port);
        if clusters
            .get(&cluster)
            .map(|c| c.endpoints.is_empty())
            .unwrap_or(true)
        {
            continue;
        }
        kept.push((cluster, w));
    }
    let weights: Vec<Decimal> = kept.iter().map(|(_, w)| *w).collect();
    let ints = weight::data_plane_weights(&weights).ok_or(())?;
    let out: Vec<WeightedCluster> = kept
        .into_iter()
        .zip(ints)
        .filter(|(_, w)| *w > 0)
        .map(|((cluster, _), weight)| WeightedCluster { cluster, weight })
        .collect();
    if out.is_empty() { Err(()) } else { Ok(out) }
}

fn split_route_name(ts: &TrafficSplit) -> String {
    format!(
        "{}/{}",
        ns_of(&ts.metadata),
        ts.metadata.name.clone().unwrap_or_default()
    )
}
