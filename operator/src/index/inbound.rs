//! Inbound resolution: the ports a Pod serves (from the Services that select it) and who may use
//! each (from the TrafficTargets naming its identity, DESIGN §4). Pure functions over the store.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use switchyard_adapters::model::{
    AccessMode, Authorization, HttpMatch, Identity, InboundPort, InboundRoute, InboundRule,
    Protocol, ProxyConfig, ProxyId, RouteStatName, ServiceName,
};

use switchyard_crds::access::TrafficTarget;

use super::{
    Key,
    store::{PodInfo, Store, TargetPort, http_match, selects},
};

/// One proxy's own configuration (identity, data plane, address, capture, inbound ports), or
/// `None` when the index knows no such Pod. Its outbound services and clusters, which every
/// proxy shares, are left empty: the index adds its own when it hands the configuration out.
pub(super) fn proxy(store: &Store, id: &ProxyId) -> Option<ProxyConfig> {
    let pod = store.pods.get(&(id.namespace.clone(), id.pod.clone()))?;
    let identity = Identity::new(id.namespace.clone(), pod.service_account.clone());
    let inbound = ports(store, &id.namespace, pod, &identity);
    let (data_plane, unknown_data_plane) = match &pod.data_plane {
        None => (store.settings.data_plane, None),
        Some(Ok(chosen)) => (*chosen, None),
        Some(Err(unknown)) => (store.settings.data_plane, Some(unknown.clone())),
    };
    Some(ProxyConfig {
        proxy: id.clone(),
        identity,
        data_plane,
        unknown_data_plane,
        address: pod.ip,
        intercepted: pod.intercepted,
        outbound: Arc::default(),
        clusters: Arc::default(),
        inbound,
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
            routes: routes(store, identity, port, protocol),
        })
        .collect()
}

/// The named matches the TrafficTargets to `identity` use on an HTTP port, whatever the access
/// mode (they are counted, not enforced, here): by route group name, then in the group's
/// order, each once. A rule without `matches` uses all of its group's.
fn routes(store: &Store, identity: &Identity, port: u16, protocol: Protocol) -> Vec<InboundRoute> {
    if !protocol.is_http() {
        return Vec::new();
    }
    // Route group key → the match names used (`None`: all of them).
    let mut used: BTreeMap<(String, String), Option<BTreeSet<&str>>> = BTreeMap::new();
    for ((ns, _), tt) in targets_to(store, identity, port) {
        for rule in tt.rules.iter().filter(|r| r.kind == "HTTPRouteGroup") {
            let entry = used
                .entry((ns.clone(), rule.name.clone()))
                .or_insert_with(|| Some(BTreeSet::new()));
            match (rule.matches.is_empty(), entry.as_mut()) {
                (true, _) => *entry = None,
                (false, Some(names)) => names.extend(rule.matches.iter().map(String::as_str)),
                (false, None) => {}
            }
        }
    }
    let mut out: Vec<InboundRoute> = Vec::new();
    for (key, names) in &used {
        let Some(group) = store.groups.get(key).and_then(|g| g.good.as_ref()) else {
            continue;
        };
        for m in &group.matches {
            if names.as_ref().is_some_and(|n| !n.contains(m.name.as_str())) {
                continue;
            }
            let name = RouteStatName::new(key.1.clone(), m.name.clone());
            if out.iter().all(|r| r.name != name) {
                out.push(InboundRoute {
                    name,
                    http_match: http_match(m),
                });
            }
        }
    }
    out
}

/// The accepted TrafficTargets to `identity` that cover `port` (every port, or this one), each
/// with its key (namespace, name): the one reading of "which targets apply here" for both the rules and
/// the counted routes.
fn targets_to<'a>(
    store: &'a Store,
    identity: &'a Identity,
    port: u16,
) -> impl Iterator<Item = (&'a Key, &'a TrafficTarget)> + 'a {
    store
        .refs
        .targets_by_destination
        .get(identity)
        .filter_map(move |key| {
            let tt = store.targets.get(key)?.good.as_ref()?;
            tt.destination
                .port
                .is_none_or(|p| p == port)
                .then_some((key, tt))
        })
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
    for ((ns, name), tt) in targets_to(store, identity, port) {
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
