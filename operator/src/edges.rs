//! Who talks to whom: the edges between the mesh's Pods and Services over a window, from the
//! golden metrics the proxies push, with the identity on each end and whether the edge is mTLS.
//!
//! ```text
//!  client proxy's outbound series ─┐                       ┌─ caller's identity (its Pod's account)
//!   (cluster ns/svc|port)          ├─▶ Edge{src, dst, ..} ◀┤
//!  server proxy's inbound series ──┘                       └─ the cluster's endpoints' identities
//!   (inbound_<port>, not _mtls)
//! ```
//!
//! A meshed caller is seen from its own proxy: each outbound cluster it sent requests to is an
//! edge to that cluster's Service, secured when every endpoint of the cluster is meshed (the
//! proxy then reaches each over mTLS, checking the endpoint's identity). A caller outside the
//! mesh has no proxy; it is seen from the server's side, as requests on an inbound port's
//! plaintext chain ([`InboundStatPrefix`], permissive mode only: strict mode refuses them), and
//! shown as an edge from an unknown source, not secured. Sans-IO: [`edges`] reads the series of
//! a window ([`Snapshot`], every replica's merged in a cluster) and a [`Peers`] view, and
//! answers rows, which the Traffic Metrics API serves as an [`EdgeList`].

use std::{
    collections::BTreeMap,
    sync::{Arc, PoisonError, RwLock},
};

use serde::{Deserialize, Serialize};
use switchyard_adapters::model::{Cluster, ClusterName, Identity, ProxyConfig, ProxyId};
use switchyard_proxy_config::metrics::InboundStatPrefix;

use crate::telemetry::{Snapshot, Subject};

#[cfg(test)]
mod tests;

/// What the control plane compiled for each proxy, as far as edges need it: who it runs as and
/// the clusters it may call. Cheap to build: the cluster maps are shared with the index.
#[derive(Clone, Debug, Default)]
pub struct Peers {
    /// The mesh's SPIFFE trust domain, which every identity is written in.
    trust_domain: String,
    proxies: BTreeMap<ProxyId, Peer>,
}

#[derive(Clone, Debug)]
struct Peer {
    identity: Identity,
    clusters: Arc<BTreeMap<ClusterName, Arc<Cluster>>>,
}

impl Peers {
    pub fn new<'a>(trust_domain: &str, configs: impl IntoIterator<Item = &'a ProxyConfig>) -> Self {
        let mut peers = Peers {
            trust_domain: trust_domain.to_owned(),
            proxies: BTreeMap::new(),
        };
        for c in configs {
            peers.insert(c.proxy.clone(), c.identity.clone(), Arc::clone(&c.clusters));
        }
        peers
    }

    /// The SPIFFE ID `proxy` runs as.
    pub fn spiffe_id(&self, proxy: &ProxyId) -> Option<String> {
        let peer = self.proxies.get(proxy)?;
        Some(peer.identity.spiffe_id(&self.trust_domain))
    }

    /// The SPIFFE ID of the endpoint at `address` of `proxy`'s cluster `cluster`; `None` when
    /// it is not meshed or not known.
    pub fn endpoint_spiffe_id(
        &self,
        proxy: &ProxyId,
        cluster: &str,
        address: std::net::SocketAddr,
    ) -> Option<String> {
        let cluster = self.proxies.get(proxy)?.clusters.get(cluster)?;
        let endpoint = cluster.endpoints.iter().find(|e| e.address == address)?;
        Some(endpoint.identity.as_ref()?.spiffe_id(&self.trust_domain))
    }

    /// Adds (or replaces) one proxy: who it runs as, what it may call.
    pub fn insert(
        &mut self,
        proxy: ProxyId,
        identity: Identity,
        clusters: Arc<BTreeMap<ClusterName, Arc<Cluster>>>,
    ) {
        self.proxies.insert(proxy, Peer { identity, clusters });
    }
}

/// The latest [`Peers`], shared between the publisher, which replaces it after every publish,
/// and the admin handlers, which read it.
#[derive(Clone, Debug, Default)]
pub struct SharedPeers(Arc<RwLock<Arc<Peers>>>);

impl SharedPeers {
    pub fn set(&self, peers: Peers) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(peers);
    }

    pub fn get(&self) -> Arc<Peers> {
        Arc::clone(&self.0.read().unwrap_or_else(PoisonError::into_inner))
    }
}

/// One end of an edge.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum End {
    /// A meshed Pod (its proxy).
    Pod { namespace: String, name: String },
    /// A Service, as its callers address it.
    Service { namespace: String, name: String },
    /// A caller outside the mesh: no proxy, so no name the mesh can vouch for.
    Unmeshed,
}

impl End {
    pub fn namespace(&self) -> Option<&str> {
        match self {
            End::Pod { namespace, .. } | End::Service { namespace, .. } => Some(namespace),
            End::Unmeshed => None,
        }
    }

    /// `pod/web-0`, `svc/web`, or `(unmeshed)`, as the CLI shows it.
    pub fn display_name(&self) -> String {
        match self {
            End::Pod { name, .. } => format!("pod/{name}"),
            End::Service { name, .. } => format!("svc/{name}"),
            End::Unmeshed => "(unmeshed)".to_owned(),
        }
    }
}

/// Whether an edge's requests went over the mesh's mTLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Secured {
    /// Both ends proved their identity: every endpoint of the cluster is meshed.
    Mtls,
    /// Some endpoints of the cluster are meshed and some are not: requests to the others are
    /// plaintext.
    Partly,
    /// The server is not meshed: the client's proxy speaks plaintext to it.
    ServerUnmeshed,
    /// The client is not meshed: it reached the server's proxy in plaintext (permissive mode).
    ClientUnmeshed,
}

impl Secured {
    /// `√`, or `×` with why, as `viz edges` writes it.
    pub fn display(self) -> &'static str {
        match self {
            Secured::Mtls => "√",
            Secured::Partly => "× (some endpoints unmeshed)",
            Secured::ServerUnmeshed => "× (server unmeshed)",
            Secured::ClientUnmeshed => "× (client unmeshed)",
        }
    }
}

/// One edge over the window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Edge {
    pub src: End,
    pub dst: End,
    /// The client's SPIFFE ID; `None` for a caller outside the mesh.
    pub client_id: Option<String>,
    /// The server's SPIFFE IDs (a Service's endpoints may run as several accounts); empty when
    /// no endpoint is meshed.
    pub server_ids: Vec<String>,
    pub secured: Secured,
    /// Requests answered 1xx to 4xx over the window.
    pub success_count: u64,
    /// Requests answered 5xx (or not at all) over the window.
    pub failure_count: u64,
}

/// The edges as the Traffic Metrics API serves them (`GET /apis/metrics.smi-spec.io/v1alpha1/edges`,
/// Switchyard's beside the spec's): a list object, so that it can carry annotations
/// ([`crate::traffic_metrics::PARTIAL_ANNOTATION`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EdgeList {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: serde_json::Value,
    pub items: Vec<Edge>,
}

impl EdgeList {
    pub fn new(items: Vec<Edge>) -> Self {
        EdgeList {
            api_version: format!(
                "{}/{}",
                crate::traffic_metrics::GROUP,
                crate::traffic_metrics::VERSION
            ),
            kind: "EdgeList".to_owned(),
            metadata: serde_json::json!({}),
            items,
        }
    }
}

/// The edges seen over `data`'s window, those with an end in `namespace` (every edge with
/// `None`), sorted by source then destination.
pub fn edges(data: &Snapshot, peers: &Peers, namespace: Option<&str>) -> Vec<Edge> {
    let trust_domain = peers.trust_domain.as_str();
    let mut out = Vec::new();
    for proxy in data.proxies() {
        let peer = peers.proxies.get(proxy);
        let src = End::Pod {
            namespace: proxy.namespace.clone(),
            name: proxy.pod.clone(),
        };
        for subject in data.subjects(proxy) {
            let edge = match subject {
                Subject::Upstream(cluster) => peer.and_then(|peer| {
                    let cluster = peer.clusters.get(cluster.as_str())?;
                    Some(client_side(&src, peer, cluster, trust_domain))
                }),
                Subject::Listener(prefix) => InboundStatPrefix::parse(prefix.as_str())
                    .filter(|p| !p.mtls)
                    .map(|_| Edge {
                        src: End::Unmeshed,
                        dst: src.clone(),
                        client_id: None,
                        server_ids: peer
                            .map(|p| vec![p.identity.spiffe_id(trust_domain)])
                            .unwrap_or_default(),
                        secured: Secured::ClientUnmeshed,
                        success_count: 0,
                        failure_count: 0,
                    }),
                // A part of an inbound cluster's traffic, which the listeners count.
                Subject::Route(..) => None,
            };
            let Some(mut edge) = edge else { continue };
            let in_scope = namespace.is_none_or(|ns| {
                edge.src.namespace() == Some(ns) || edge.dst.namespace() == Some(ns)
            });
            if !in_scope {
                continue;
            }
            let golden = data.query([proxy], |s| s == subject);
            if golden.request_count() == 0 {
                continue;
            }
            edge.success_count = golden.success_count();
            edge.failure_count = golden.failure_count();
            out.push(edge);
        }
    }
    merge(out)
}

/// The edge from a meshed client to the Service of `cluster`.
fn client_side(src: &End, peer: &Peer, cluster: &Cluster, trust_domain: &str) -> Edge {
    let meshed = cluster
        .endpoints
        .iter()
        .filter(|e| e.identity.is_some())
        .count();
    let secured = match meshed {
        0 => Secured::ServerUnmeshed,
        n if n == cluster.endpoints.len() => Secured::Mtls,
        _ => Secured::Partly,
    };
    let mut server_ids: Vec<String> = cluster
        .endpoints
        .iter()
        .filter_map(|e| e.identity.as_ref())
        .map(|i| i.spiffe_id(trust_domain))
        .collect();
    server_ids.sort();
    server_ids.dedup();
    Edge {
        src: src.clone(),
        dst: End::Service {
            namespace: cluster.service.namespace.clone(),
            name: cluster.service.name.clone(),
        },
        client_id: Some(peer.identity.spiffe_id(trust_domain)),
        server_ids,
        secured,
        success_count: 0,
        failure_count: 0,
    }
}

/// One edge per (source, destination, security): a Service called on two ports, or a Pod
/// reached in plaintext on two ports, is one edge with the counts summed.
fn merge(mut edges: Vec<Edge>) -> Vec<Edge> {
    edges.sort_by(|a, b| (&a.src, &a.dst, a.secured).cmp(&(&b.src, &b.dst, b.secured)));
    let mut out: Vec<Edge> = Vec::with_capacity(edges.len());
    for edge in edges {
        match out.last_mut() {
            Some(last)
                if last.src == edge.src && last.dst == edge.dst && last.secured == edge.secured =>
            {
                last.success_count += edge.success_count;
                last.failure_count += edge.failure_count;
                for id in edge.server_ids {
                    if !last.server_ids.contains(&id) {
                        last.server_ids.push(id);
                    }
                }
                last.server_ids.sort();
            }
            _ => out.push(edge),
        }
    }
    out
}
