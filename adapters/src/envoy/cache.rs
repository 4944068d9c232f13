//! Encoded pieces shared between proxies and between compiles: per cluster its Cluster and
//! ClusterLoadAssignment, per service its outbound virtual hosts. An entry is reused while the
//! model piece it came from is the same `Arc` or an equal value, and the options it depends on
//! are unchanged; the outbound route configuration is then assembled from encoded virtual
//! hosts without re-encoding them.

use std::{borrow::Cow, collections::HashMap, sync::Arc, time::Duration};

use envoy_types::pb::{envoy::config::route::v3::VirtualHost, google::protobuf::Any};
use prost::Message;

use super::{EnvoyOptions, LoadBalancing, OUTBOUND_HTTP, cluster, route, to_any};
use crate::model::{self, ClusterName, OutboundService, ProxyConfig, ServiceName};

#[derive(Debug, Default)]
pub(super) struct Cache {
    clusters: HashMap<ClusterName, ClusterEntry>,
    /// Indexed by whether short host names are included (the proxy is in the service's
    /// namespace), since that changes the domains.
    services: [HashMap<ServiceName, ServiceEntry>; 2],
}

#[derive(Debug)]
struct ClusterEntry {
    source: Arc<model::Cluster>,
    settings: ClusterSettings,
    cluster: Any,
    endpoints: Any,
}

/// The options a Cluster resource depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ClusterSettings {
    connect_timeout: Duration,
    load_balancing: LoadBalancing,
}

#[derive(Debug)]
struct ServiceEntry {
    source: Arc<OutboundService>,
    /// The only option virtual hosts depend on.
    route_timeout: Duration,
    vhosts: Arc<[Vhost]>,
}

#[derive(Debug)]
struct Vhost {
    name: String,
    domains: Vec<String>,
    encoded: Vec<u8>,
}

/// The Cluster and ClusterLoadAssignment of one cluster.
pub(super) struct ClusterResources {
    pub(super) cluster: Any,
    pub(super) endpoints: Any,
}

impl Cache {
    pub(super) fn cluster(
        &mut self,
        source: &Arc<model::Cluster>,
        opts: &EnvoyOptions,
    ) -> ClusterResources {
        let settings = ClusterSettings {
            connect_timeout: opts.connect_timeout,
            load_balancing: opts.load_balancing,
        };
        if let Some(entry) = self.clusters.get_mut(&source.name)
            && entry.settings == settings
            && still_valid(&mut entry.source, source)
        {
            return ClusterResources {
                cluster: entry.cluster.clone(),
                endpoints: entry.endpoints.clone(),
            };
        }
        let entry = ClusterEntry {
            source: source.clone(),
            settings,
            cluster: to_any(&cluster::eds(source, opts)),
            endpoints: to_any(&cluster::load_assignment(source)),
        };
        let out = ClusterResources {
            cluster: entry.cluster.clone(),
            endpoints: entry.endpoints.clone(),
        };
        self.clusters.insert(source.name.clone(), entry);
        out
    }

    /// The outbound route configuration of a proxy: every HTTP service port's virtual host,
    /// in service order, with domains made unique (Envoy rejects a route configuration that
    /// repeats one). A domain goes to the first virtual host that claims it.
    pub(super) fn outbound_routes(
        &mut self,
        proxy: &ProxyConfig,
        opts: &EnvoyOptions,
        warnings: &mut Vec<String>,
    ) -> Any {
        let pieces: Vec<Arc<[Vhost]>> = proxy
            .outbound
            .values()
            .map(|svc| self.service(svc, svc.name.namespace == proxy.proxy.namespace, opts))
            .collect();

        let mut owners: HashMap<&str, &str> = HashMap::new();
        let mut vhosts: Vec<Cow<'_, [u8]>> = Vec::new();
        for vhost in pieces.iter().flat_map(|p| p.iter()) {
            let mut clashes = Vec::new();
            for domain in &vhost.domains {
                if let Some(owner) = owners.get(domain.as_str()) {
                    clashes.push(domain.as_str());
                    warnings.push(format!(
                        "proxy {}: domain {domain:?} of {} is already routed to {owner}; \
                         left out",
                        proxy.proxy, vhost.name
                    ));
                } else {
                    owners.insert(domain, &vhost.name);
                }
            }
            if clashes.is_empty() {
                vhosts.push(Cow::Borrowed(&vhost.encoded));
            } else if let Some(encoded) = without_domains(vhost, &clashes) {
                vhosts.push(Cow::Owned(encoded));
            } else {
                warnings.push(format!(
                    "proxy {}: virtual host {} has no domain left; left out",
                    proxy.proxy, vhost.name
                ));
            }
        }
        route::outbound_config(OUTBOUND_HTTP, vhosts.iter().map(|v| v.as_ref()))
    }

    pub(super) fn evict_unused(&mut self) {
        self.clusters
            .retain(|_, e| Arc::strong_count(&e.source) > 1);
        for services in &mut self.services {
            services.retain(|_, e| Arc::strong_count(&e.source) > 1);
        }
    }

    pub(super) fn len(&self) -> (usize, usize) {
        (
            self.clusters.len(),
            self.services.iter().map(HashMap::len).sum(),
        )
    }

    fn service(
        &mut self,
        source: &Arc<OutboundService>,
        short_names: bool,
        opts: &EnvoyOptions,
    ) -> Arc<[Vhost]> {
        let services = &mut self.services[usize::from(short_names)];
        if let Some(entry) = services.get_mut(&source.name)
            && entry.route_timeout == opts.route_timeout
            && still_valid(&mut entry.source, source)
        {
            return entry.vhosts.clone();
        }
        let vhosts: Arc<[Vhost]> = route::outbound_virtual_hosts(source, short_names, opts)
            .into_iter()
            .map(|vhost| Vhost {
                encoded: vhost.encode_to_vec(),
                name: vhost.name,
                domains: vhost.domains,
            })
            .collect();
        let entry = ServiceEntry {
            source: source.clone(),
            route_timeout: opts.route_timeout,
            vhosts: vhosts.clone(),
        };
        services.insert(source.name.clone(), entry);
        vhosts
    }
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
