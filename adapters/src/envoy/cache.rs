//! Encoded pieces shared between proxies and between compiles: per cluster its Cluster and
//! ClusterLoadAssignment, per service its outbound virtual hosts, per namespace the last
//! outbound route configuration. An entry is reused while the model piece it came from is the
//! same `Arc` or an equal value and the options it depends on are unchanged; the outbound
//! route configuration is assembled from encoded virtual hosts without re-encoding them.
//!
//! With mTLS a Cluster names the proxy's own certificate secret, which is named after the
//! proxy's identity, so a cluster has one encoded Cluster per identity that reaches it (its
//! ClusterLoadAssignment stays shared by all). Proxies of one identity still share every
//! Cluster, and proxies of several identities compiled in turn do not evict each other's. The
//! cost is one encoded Cluster per (cluster, identity) pair; the Clusters of an identity that
//! is no longer compiled go when their cluster changes or is evicted.

use std::{
    borrow::Cow,
    collections::{HashMap, HashSet},
    net::IpAddr,
    sync::Arc,
    time::Duration,
};

use envoy_types::pb::envoy::config::route::v3::VirtualHost;
use prost::Message;

use super::{
    CLUSTER_TYPE_URL, ENDPOINT_TYPE_URL, EnvoyOptions, LoadBalancing, OUTBOUND_HTTP,
    ROUTE_TYPE_URL, Resource, cluster, route, tls::Mtls, to_any,
};
use crate::model::{self, ClusterName, Identity, OutboundService, ProxyConfig, ServiceName};

/// A proxy's map of clusters, as the model shares it.
type ClusterMap = std::collections::BTreeMap<ClusterName, Arc<model::Cluster>>;

#[derive(Debug, Default)]
pub(super) struct Cache {
    clusters: HashMap<ClusterName, ClusterEntry>,
    /// Indexed by whether short host names are included (the proxy is in the service's
    /// namespace), since that changes the domains.
    services: [HashMap<ServiceName, ServiceEntry>; 2],
    /// The last outbound route configuration built for a proxy of each namespace: proxies of
    /// one namespace usually reach the same services, and then share it.
    routes: HashMap<String, RoutesEntry>,
    /// Per service, the route configurations of intercepted proxies (see
    /// [`route::intercepted_configs`]); they do not depend on the proxy.
    intercepted: HashMap<ServiceName, InterceptedEntry>,
    /// The Cluster and ClusterLoadAssignment resources of the last cluster map compiled, per
    /// own identity (with mTLS; one entry, `None`, without): the same map (by pointer) for
    /// every proxy, and across changes that touch no cluster.
    all_clusters: HashMap<Option<Identity>, AllClusters>,
}

#[derive(Debug)]
struct AllClusters {
    source: Arc<ClusterMap>,
    settings: ClusterSettings,
    /// Clusters and load assignments, each in name order.
    resources: Arc<[Vec<Arc<Resource>>; 2]>,
}

#[derive(Debug)]
struct ClusterEntry {
    source: Arc<model::Cluster>,
    settings: ClusterSettings,
    load_assignment: Arc<Resource>,
    /// The Cluster, by the own identity it was built for (`None` without mTLS).
    clusters: HashMap<Option<Identity>, Arc<Resource>>,
}

/// The options a Cluster and its ClusterLoadAssignment depend on, besides the proxy's own
/// identity (the key under which a Cluster is kept).
#[derive(Clone, Debug, PartialEq, Eq)]
struct ClusterSettings {
    connect_timeout: Duration,
    load_balancing: LoadBalancing,
    /// With mTLS, the trust domain, in which peer SANs and secret names are written.
    mtls: Option<String>,
}

impl ClusterSettings {
    fn new(opts: &EnvoyOptions, mtls: Option<Mtls<'_>>) -> Self {
        ClusterSettings {
            connect_timeout: opts.connect_timeout,
            load_balancing: opts.load_balancing,
            mtls: mtls.map(|m| m.mesh.trust_domain.clone()),
        }
    }
}

#[derive(Debug)]
struct ServiceEntry {
    source: Arc<OutboundService>,
    piece: Arc<ServicePiece>,
}

/// A service's encoded virtual hosts, with what the domain check needs.
#[derive(Debug)]
struct ServicePiece {
    /// Every host name is one only this service can have (see [`route::canonical_hostnames`]),
    /// so its domains can only clash through the cluster IP.
    canonical: bool,
    cluster_ip: Option<IpAddr>,
    vhosts: Vec<Vhost>,
}

#[derive(Debug)]
struct Vhost {
    name: String,
    domains: Vec<String>,
    encoded: Vec<u8>,
}

#[derive(Debug)]
struct InterceptedEntry {
    source: Arc<OutboundService>,
    routes: Arc<[Arc<Resource>]>,
}

/// An outbound route configuration and the pieces it was assembled from, in order.
#[derive(Debug)]
struct RoutesEntry {
    /// The services the pieces came from, in the same order.
    sources: Vec<Arc<OutboundService>>,
    pieces: Vec<Arc<ServicePiece>>,
    resource: Arc<Resource>,
    warnings: Arc<[String]>,
}

impl Cache {
    /// Every cluster's Cluster and ClusterLoadAssignment, by type, in name order.
    pub(super) fn clusters(
        &mut self,
        clusters: &Arc<ClusterMap>,
        opts: &EnvoyOptions,
        mtls: Option<Mtls<'_>>,
    ) -> Arc<[Vec<Arc<Resource>>; 2]> {
        let settings = ClusterSettings::new(opts, mtls);
        let identity = mtls.map(|m| m.identity.clone());
        if let Some(all) = self.all_clusters.get(&identity)
            && all.settings == settings
            && Arc::ptr_eq(&all.source, clusters)
        {
            return all.resources.clone();
        }
        let mut by_type = [
            Vec::with_capacity(clusters.len()),
            Vec::with_capacity(clusters.len()),
        ];
        for cluster in clusters.values() {
            let [c, e] = self.cluster(cluster, opts, mtls, &settings, &identity);
            by_type[0].push(c);
            by_type[1].push(e);
        }
        let resources = Arc::new(by_type);
        self.all_clusters.insert(
            identity,
            AllClusters {
                source: clusters.clone(),
                settings,
                resources: resources.clone(),
            },
        );
        resources
    }

    /// The Cluster and ClusterLoadAssignment of a cluster, for a proxy of `identity` (`None`
    /// without mTLS; see [`ClusterEntry::clusters`]).
    fn cluster(
        &mut self,
        source: &Arc<model::Cluster>,
        opts: &EnvoyOptions,
        mtls: Option<Mtls<'_>>,
        settings: &ClusterSettings,
        identity: &Option<Identity>,
    ) -> [Arc<Resource>; 2] {
        let name = source.name.as_str();
        let encode_cluster = || {
            let encoded = cluster::eds(source, opts, mtls);
            let references = cluster::references(&encoded, mtls);
            let resource = Resource::new(CLUSTER_TYPE_URL, name, to_any(&encoded));
            Arc::new(resource.referencing(references))
        };
        if let Some(entry) = self.clusters.get_mut(&source.name)
            && entry.settings == *settings
            && still_valid(&mut entry.source, source)
        {
            let cluster = entry
                .clusters
                .entry(identity.clone())
                .or_insert_with(encode_cluster)
                .clone();
            return [cluster, entry.load_assignment.clone()];
        }
        let cluster = encode_cluster();
        let load_assignment = Arc::new(Resource::new(
            ENDPOINT_TYPE_URL,
            name,
            to_any(&cluster::load_assignment(source, mtls.is_some())),
        ));
        let entry = ClusterEntry {
            source: source.clone(),
            settings: settings.clone(),
            load_assignment: load_assignment.clone(),
            clusters: [(identity.clone(), cluster.clone())].into(),
        };
        self.clusters.insert(source.name.clone(), entry);
        [cluster, load_assignment]
    }

    /// The outbound route configuration of a proxy, with its warnings: every HTTP service
    /// port's virtual host, in service order, with domains made unique (Envoy rejects a route
    /// configuration that repeats one). A domain goes to the first virtual host that claims it.
    pub(super) fn outbound_routes(
        &mut self,
        proxy: &ProxyConfig,
    ) -> (Arc<Resource>, Arc<[String]>) {
        let namespace = &proxy.proxy.namespace;
        // Walk the last list alongside: a service that is the same `Arc` at the same place
        // keeps its piece without a lookup (a weight change replaces one service of many).
        let last = self
            .routes
            .get(namespace)
            .filter(|last| last.sources.len() == proxy.outbound.len())
            .map(|last| (last.sources.clone(), last.pieces.clone()));
        let sources: Vec<Arc<OutboundService>> = proxy.outbound.values().cloned().collect();
        let pieces: Vec<Arc<ServicePiece>> = sources
            .iter()
            .enumerate()
            .map(|(i, svc)| match &last {
                Some((srcs, pieces)) if Arc::ptr_eq(&srcs[i], svc) => pieces[i].clone(),
                _ => self.service(svc, svc.name.namespace == *namespace),
            })
            .collect();
        if let Some(last) = self.routes.get(namespace)
            && last.pieces.len() == pieces.len()
            && last
                .pieces
                .iter()
                .zip(&pieces)
                .all(|(a, b)| Arc::ptr_eq(a, b))
        {
            return (last.resource.clone(), last.warnings.clone());
        }
        let mut warnings = Vec::new();
        let value = assemble(&pieces, &mut warnings);
        let entry = RoutesEntry {
            sources,
            pieces,
            resource: Arc::new(Resource::new(ROUTE_TYPE_URL, OUTBOUND_HTTP, value)),
            warnings: warnings.into(),
        };
        let out = (entry.resource.clone(), entry.warnings.clone());
        self.routes.insert(namespace.clone(), entry);
        out
    }

    /// The route configurations of an intercepted proxy: every HTTP or undeclared port of every
    /// service it reaches, in service order, each shared between all proxies until its
    /// service changes.
    pub(super) fn intercepted_routes(&mut self, proxy: &ProxyConfig) -> Vec<Arc<Resource>> {
        let mut out = Vec::new();
        for svc in proxy.outbound.values() {
            if let Some(entry) = self.intercepted.get_mut(&svc.name)
                && still_valid(&mut entry.source, svc)
            {
                out.extend(entry.routes.iter().cloned());
                continue;
            }
            let routes: Arc<[Arc<Resource>]> = route::intercepted_configs(svc)
                .into_iter()
                .map(|(name, config)| Arc::new(Resource::new(ROUTE_TYPE_URL, &name, config)))
                .collect();
            out.extend(routes.iter().cloned());
            self.intercepted.insert(
                svc.name.clone(),
                InterceptedEntry {
                    source: svc.clone(),
                    routes,
                },
            );
        }
        out
    }

    pub(super) fn evict_unused(&mut self) {
        self.clusters
            .retain(|_, e| Arc::strong_count(&e.source) > 1);
        self.intercepted
            .retain(|_, e| Arc::strong_count(&e.source) > 1);
        for services in &mut self.services {
            services.retain(|_, e| Arc::strong_count(&e.source) > 1);
        }
        // Rebuilt on the next compile; holding them would keep evicted pieces alive.
        self.routes.clear();
        self.all_clusters.clear();
    }

    pub(super) fn len(&self) -> (usize, usize) {
        (
            self.clusters.len(),
            self.services.iter().map(HashMap::len).sum(),
        )
    }

    fn service(&mut self, source: &Arc<OutboundService>, short_names: bool) -> Arc<ServicePiece> {
        let services = &mut self.services[usize::from(short_names)];
        if let Some(entry) = services.get_mut(&source.name)
            && still_valid(&mut entry.source, source)
        {
            return entry.piece.clone();
        }
        let vhosts = route::outbound_virtual_hosts(source, short_names)
            .into_iter()
            .map(|vhost| Vhost {
                encoded: vhost.encode_to_vec(),
                name: vhost.name,
                domains: vhost.domains,
            })
            .collect();
        let piece = Arc::new(ServicePiece {
            canonical: route::canonical_hostnames(source, short_names),
            cluster_ip: source.cluster_ip,
            vhosts,
        });
        let entry = ServiceEntry {
            source: source.clone(),
            piece: piece.clone(),
        };
        services.insert(source.name.clone(), entry);
        piece
    }
}

/// The route configuration from service pieces, dropping (and reporting) repeated domains.
fn assemble(
    pieces: &[Arc<ServicePiece>],
    warnings: &mut Vec<String>,
) -> envoy_types::pb::google::protobuf::Any {
    let vhosts = pieces.iter().flat_map(|p| &p.vhosts);

    // The usual case, checked without hashing every domain: canonical host names cannot
    // clash, so unique cluster IPs make every domain unique.
    let mut ips = HashSet::with_capacity(pieces.len());
    if pieces
        .iter()
        .all(|p| p.canonical && p.cluster_ip.is_none_or(|ip| ips.insert(ip)))
    {
        return route::outbound_config(OUTBOUND_HTTP, vhosts.map(|v| v.encoded.as_slice()));
    }

    let mut owners: HashMap<&str, &str> = HashMap::new();
    let mut unique: Vec<Cow<'_, [u8]>> = Vec::new();
    for vhost in vhosts {
        let mut clashes = Vec::new();
        for domain in &vhost.domains {
            if let Some(owner) = owners.get(domain.as_str()) {
                clashes.push(domain.as_str());
                warnings.push(format!(
                    "domain {domain:?} of {} is already routed to {owner}; left out",
                    vhost.name
                ));
            } else {
                owners.insert(domain, &vhost.name);
            }
        }
        if clashes.is_empty() {
            unique.push(Cow::Borrowed(&vhost.encoded));
        } else if let Some(encoded) = without_domains(vhost, &clashes) {
            unique.push(Cow::Owned(encoded));
        } else {
            warnings.push(format!(
                "virtual host {} has no domain left; left out",
                vhost.name
            ));
        }
    }
    route::outbound_config(OUTBOUND_HTTP, unique.iter().map(|v| v.as_ref()))
}

/// Whether a cached entry built from `cached` fits `current`. An equal value in a new `Arc`
/// takes the old one's place, so that the next check is a pointer comparison and the old
/// model can be freed.
fn still_valid<T: PartialEq>(cached: &mut Arc<T>, current: &Arc<T>) -> bool {
    if Arc::ptr_eq(cached, current) {
        return true;
    }
    if **cached == **current {
        *cached = current.clone();
        return true;
    }
    false
}

/// A cached virtual host re-encoded without some domains; `None` when none would be left.
fn without_domains(vhost: &Vhost, drop: &[&str]) -> Option<Vec<u8>> {
    // Decoding our own encoding cannot fail; if it somehow did, leaving the virtual host out
    // is the safe answer.
    let mut decoded = VirtualHost::decode(vhost.encoded.as_slice()).ok()?;
    decoded.domains.retain(|d| !drop.contains(&d.as_str()));
    (!decoded.domains.is_empty()).then(|| decoded.encode_to_vec())
}
