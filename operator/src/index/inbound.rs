//! Inbound resolution: the ports a Pod serves (from the Services that select it) and who may use
//! each (from the TrafficTargets naming its identity, DESIGN §4). Pure functions over the store.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use switchyard_adapters::model::{
    AccessMode, Authorization, DataPlane, HttpMatch, Identity, InboundPort, InboundRule, Protocol,
    ProxyId, ServiceName,
};

use super::{
    InvalidDataPlane,
    store::{PodInfo, Store, TargetPort, http_match, selects},
};

/// What the index knows about one proxy besides the shared outbound model.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct ProxyEntry {
    pub(super) identity: Identity,
    /// Where its listeners bind: an IP change (a Pod's status written after its creation)
    /// recompiles the proxy.
    pub(super) ip: Option<IpAddr>,
    pub(super) inbound: Vec<InboundPort>,
    pub(super) data_plane: DataPlane,
    pub(super) invalid_data_plane: Option<InvalidDataPlane>,
}

/// One proxy's own configuration (identity, inbound ports, data plane), or `None` when the index
/// knows no such Pod.
pub(super) fn proxy(store: &Store, id: &ProxyId) -> Option<ProxyEntry> {
    let pod = store.pods.get(&(id.namespace.clone(), id.pod.clone()))?;
    let identity = Identity::new(id.namespace.clone(), pod.service_account.clone());
    let inbound = ports(store, &id.namespace, pod, &identity);
    let fallback = store.settings.data_plane;
    let (data_plane, invalid_data_plane) = match &pod.data_plane {
        None => (fallback, None),
        Some(Ok(chosen)) => (*chosen, None),
        Some(Err(unknown)) => (
            fallback,
            Some(InvalidDataPlane {
                pod: id.clone(),
                source: unknown.clone(),
                fallback,
            }),
        ),
    };
    Some(ProxyEntry {
        identity,
        ip: pod.ip,
        inbound,
        data_plane,
        invalid_data_plane,
    })
}

/// The ports a Pod serves, from the Services that select it, with who may use each.
fn ports(store: &Store, ns: &str, pod: &PodInfo, identity: &Identity) -> Vec<InboundPort> {
    let candidates: BTreeSet<&ServiceName> = pod
        .labels
        .iter()
        .flat_map(|(k, v)| {
            let label = (ns.to_string(), k.clone(), v.clone());
            store
                .refs
                .services_by_selector
                .get(&label)
                .collect::<Vec<_>>()
        })
        .collect();
    let mut ports: BTreeMap<u16, Protocol> = BTreeMap::new();
    for svc in candidates {
        let Some(info) = store.services.get(svc) else {
            continue;
        };
        if !selects(&info.selector, &pod.labels) {
            continue;
        }
        for p in &info.ports {
            let target = match &p.target {
                TargetPort::Number(n) => Some(*n),
                TargetPort::Name(n) => pod.named_ports.get(n).copied(),
            };
            if let Some(t) = target {
                ports.entry(t).or_insert(p.protocol);
            }
        }
    }
    ports
        .into_iter()
        .map(|(port, protocol)| InboundPort {
            port,
            protocol,
            authorization: authorization(store, identity, port, protocol),
        })
        .collect()
}

/// What TrafficTargets allow on one port of one identity (DESIGN §4).
fn authorization(
    store: &Store,
    identity: &Identity,
    port: u16,
    protocol: Protocol,
) -> Authorization {
    if store.settings.access_mode == AccessMode::Permissive {
        return Authorization::AllowAll;
    }
    let mut rules = Vec::new();
    for (ns, name) in store.refs.targets_by_destination.get(identity) {
        let Some(tt) = store
            .targets
            .get(&(ns.clone(), name.clone()))
            .and_then(|s| s.good.as_ref())
        else {
            continue;
        };
        if tt.destination.port.is_some_and(|p| p != port) {
            continue;
        }
        let sources: Vec<Identity> = tt
            .sources
            .iter()
            .filter(|s| s.kind == "ServiceAccount")
            .map(|s| {
                Identity::new(
                    s.namespace.clone().unwrap_or_else(|| ns.clone()),
                    s.name.clone(),
                )
            })
            .collect();
        if sources.is_empty() {
            continue;
        }
        let is_http = protocol.is_http();
        for rule in &tt.rules {
            let key = (ns.clone(), rule.name.clone());
            let matches = match rule.kind.as_str() {
                "HTTPRouteGroup" if is_http => {
                    let Some(g) = store.groups.get(&key).and_then(|g| g.good.as_ref()) else {
                        continue;
                    };
                    let allowed: Vec<HttpMatch> = g
                        .matches
                        .iter()
                        .filter(|m| rule.matches.is_empty() || rule.matches.contains(&m.name))
                        .map(http_match)
                        .collect();
                    if allowed.is_empty() {
                        continue;
                    }
                    allowed
                }
                "TCPRoute" if !is_http => {
                    let Some(ports) = store.tcp_routes.get(&key).and_then(|r| r.good.as_ref())
                    else {
                        continue;
                    };
                    if !ports.ports.is_empty() && !ports.ports.contains(&port) {
                        continue;
                    }
                    Vec::new()
                }
                _ => continue,
            };
            rules.push(InboundRule {
                name: format!("{ns}/{name}"),
                sources: sources.clone(),
                matches,
            });
        }
    }
    Authorization::Allow(rules)
}
