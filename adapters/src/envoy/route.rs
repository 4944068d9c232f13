//! Route configurations: the outbound virtual hosts (one per HTTP service port, carrying the
//! split routes) and the inbound route configuration of an HTTP port (carrying its RBAC).
//!
//! Domains of an outbound virtual host, all lower case:
//! - `host:port` for every host name of the service;
//! - the bare host names on the service's *default port*: its HTTP port 80, or, without one,
//!   its lowest HTTP port (so `curl http://web/` works for a service that only serves 8080);
//! - `cluster_ip:port`, and the bare cluster IP on the default port;
//! - host names without a dot (`web`) only for services in the proxy's own namespace: like
//!   Kubernetes DNS search paths, a short name means "in my namespace".

use std::collections::BTreeSet;

use envoy_types::pb::{
    envoy::{
        config::route::v3::{
            RetryPolicy, Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost,
            WeightedCluster as EnvoyWeightedCluster, retry_policy, route, route_action,
            route_match, weighted_cluster,
        },
        extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate,
    },
    google::protobuf::{Any, BoolValue, UInt32Value},
};
use prost::Message;

use super::{
    duration, inbound_name,
    matcher::{header_matchers, regex},
    rbac, to_any, virtual_host_name, wire,
};
use crate::model::{
    self, HttpMatch, InboundPort, MeshSettings, OutboundPort, OutboundService, Protocol,
    RoutePolicy, WeightedCluster,
};

/// The outbound virtual hosts of one service, one per HTTP port.
pub(super) fn outbound_virtual_hosts(svc: &OutboundService, short_names: bool) -> Vec<VirtualHost> {
    let default_port = default_http_port(svc);
    let mut ports: Vec<&OutboundPort> = svc.ports.iter().filter(|p| p.protocol.is_http()).collect();
    // By port, the first entry of a repeated port winning (Envoy rejects repeated names).
    ports.sort_by_key(|p| p.port);
    ports.dedup_by_key(|p| p.port);
    ports
        .into_iter()
        .map(|port| VirtualHost {
            name: virtual_host_name(&svc.name, port.port),
            domains: domains(svc, port.port, default_port == Some(port.port), short_names),
            routes: routes(port),
            ..Default::default()
        })
        .collect()
}

/// The route configurations of an intercepted proxy for one service: one per HTTP or
/// undeclared port, named after the port's virtual host, whose single `*` virtual host routes
/// every request that reached the port's chain (by the connection's original destination),
/// whatever its `Host`.
pub(super) fn intercepted_configs(svc: &OutboundService) -> Vec<(String, Any)> {
    let mut ports: Vec<&OutboundPort> = svc
        .ports
        .iter()
        .filter(|p| p.protocol.is_http() || p.protocol == Protocol::Unknown)
        .collect();
    ports.sort_by_key(|p| p.port);
    ports.dedup_by_key(|p| p.port);
    ports
        .into_iter()
        .map(|port| {
            let name = virtual_host_name(&svc.name, port.port);
            let vhost = VirtualHost {
                name: name.clone(),
                domains: vec!["*".to_owned()],
                routes: routes(port),
                ..Default::default()
            };
            let config = to_any(&RouteConfiguration {
                name: name.clone(),
                virtual_hosts: vec![vhost],
                validate_clusters: Some(no()),
                ..Default::default()
            });
            (name, config)
        })
        .collect()
}

/// Whether every host name of `svc` (those [`domains`] uses) is one no other service can
/// have: `<name>`, or `<name>.<namespace>` with any suffix, where name and namespace are DNS
/// labels and the name starts with a letter. Two such names of different services differ in
/// their first two labels (a short name has one label, and only services of the proxy's own
/// namespace, whose names differ, have one), and none looks like an IP address.
pub(super) fn canonical_hostnames(svc: &OutboundService, short_names: bool) -> bool {
    let label = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    let (name, namespace) = (&svc.name.name, &svc.name.namespace);
    if !label(name) || !label(namespace) || !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return false;
    }
    svc.hostnames
        .iter()
        .filter(|h| short_names || h.contains('.'))
        .all(|h| {
            let h = h.to_ascii_lowercase();
            h == *name
                || h.strip_prefix(name.as_str())
                    .and_then(|rest| rest.strip_prefix('.'))
                    .and_then(|rest| rest.strip_prefix(namespace.as_str()))
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
        })
}

/// An outbound route configuration from already-encoded virtual hosts, in the given order.
pub(super) fn outbound_config<'a>(
    name: &str,
    virtual_hosts: impl IntoIterator<Item = &'a [u8]>,
) -> Any {
    let virtual_hosts: Vec<&[u8]> = virtual_hosts.into_iter().collect();
    // Each virtual host takes at most 11 bytes of framing (key, and a length up to 2^64).
    let size = virtual_hosts.iter().map(|v| v.len() + 11).sum::<usize>() + name.len() + 16;
    let mut buf = Vec::with_capacity(size);
    wire::put_field(&mut buf, 1, name.as_bytes());
    for vhost in virtual_hosts {
        wire::put_field(&mut buf, 2, vhost);
    }
    // `validate_clusters` (field 7) after the virtual hosts (field 2) keeps field order.
    let tail = RouteConfiguration {
        validate_clusters: Some(no()),
        ..Default::default()
    };
    buf.extend_from_slice(&tail.encode_to_vec());
    Any {
        type_url: <RouteConfiguration as prost::Name>::type_url(),
        value: buf,
    }
}

/// The route configuration of an inbound HTTP port: every request to the local application,
/// subject to the port's RBAC policy.
///
/// The policy sits here rather than in the listener so that a TrafficTarget change reaches
/// open connections at once: a listener change only applies to new connections (old ones
/// drain), a route change applies to the next request.
///
/// Every named match of the port's [`routes`](InboundPort::routes) gets a route of its own
/// before the catch-all `local`, with the same action and a `stat_prefix` (its
/// [`RouteStatName`](crate::model::RouteStatName)), so that Envoy counts its requests in
/// `vhost.inbound|<port>.route.<stat_prefix>.*`. Routes rather than virtual clusters: a
/// virtual cluster matches its path as the `:path` header, query string included (checked
/// with Envoy 1.40), where SMI's `pathRegex` matches the path without it, as route matches do.
pub(super) fn inbound(port: &InboundPort, mesh: &MeshSettings, warnings: &mut Vec<String>) -> Any {
    let name = inbound_name(port.port);
    let action = route::Action::Route(RouteAction {
        cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(name.clone())),
        // The client's proxy enforces the request budget; a second timer here would
        // only cut long streams that the client allowed.
        timeout: Some(duration(std::time::Duration::ZERO)),
        ..Default::default()
    });
    let counted = port.routes.iter().map(|r| {
        let stat_name = r.name.to_string();
        Route {
            name: stat_name.clone(),
            r#match: Some(route_match(&r.http_match)),
            action: Some(action.clone()),
            stat_prefix: stat_name,
            ..Default::default()
        }
    });
    let vhost = VirtualHost {
        name: name.clone(),
        domains: vec!["*".to_owned()],
        routes: counted
            .chain([Route {
                name: "local".to_owned(),
                r#match: Some(prefix_match()),
                action: Some(action.clone()),
                ..Default::default()
            }])
            .collect(),
        typed_per_filter_config: [(
            rbac::HTTP_FILTER.to_owned(),
            rbac::per_route(port, mesh, warnings),
        )]
        .into(),
        ..Default::default()
    };
    to_any(&RouteConfiguration {
        name,
        virtual_hosts: vec![vhost],
        validate_clusters: Some(no()),
        ..Default::default()
    })
}

/// Port 80 if the service serves HTTP there, else its lowest HTTP port.
fn default_http_port(svc: &OutboundService) -> Option<u16> {
    let http = svc
        .ports
        .iter()
        .filter(|p| p.protocol.is_http())
        .map(|p| p.port);
    let mut lowest = None;
    for port in http {
        if port == 80 {
            return Some(80);
        }
        lowest = Some(lowest.map_or(port, |l: u16| l.min(port)));
    }
    lowest
}

fn domains(svc: &OutboundService, port: u16, default_port: bool, short_names: bool) -> Vec<String> {
    let mut hosts: Vec<String> = svc
        .hostnames
        .iter()
        .filter(|h| short_names || h.contains('.'))
        .map(|h| h.to_ascii_lowercase())
        .collect();
    if let Some(ip) = svc.cluster_ip {
        hosts.push(match ip {
            std::net::IpAddr::V4(v4) => v4.to_string(),
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        });
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(hosts.len() * 2);
    for host in hosts {
        if !seen.insert(host.clone()) {
            continue;
        }
        if default_port {
            out.push(host.clone());
        }
        out.push(format!("{host}:{port}"));
    }
    out
}

/// One Envoy route per model route and match, in model order: a route with N matches becomes
/// N routes with the same action; a route without matches catches everything.
fn routes(port: &OutboundPort) -> Vec<Route> {
    let mut out = Vec::new();
    for model in &port.routes {
        let action = route::Action::Route(route_action(&model.backends, &model.policy));
        let matches: Vec<RouteMatch> = if model.matches.is_empty() {
            vec![prefix_match()]
        } else {
            model.matches.iter().map(route_match).collect()
        };
        out.extend(matches.into_iter().map(|m| Route {
            name: model.name.clone(),
            r#match: Some(m),
            action: Some(action.clone()),
            ..Default::default()
        }));
    }
    out
}

fn route_match(m: &HttpMatch) -> RouteMatch {
    let path_specifier = match &m.path_regex {
        // Envoy matches `safe_regex` against the path without the query string, in full.
        Some(pattern) => route_match::PathSpecifier::SafeRegex(regex(pattern)),
        None => route_match::PathSpecifier::Prefix("/".to_owned()),
    };
    RouteMatch {
        path_specifier: Some(path_specifier),
        headers: header_matchers(m),
        ..Default::default()
    }
}

fn prefix_match() -> RouteMatch {
    RouteMatch {
        path_specifier: Some(route_match::PathSpecifier::Prefix("/".to_owned())),
        ..Default::default()
    }
}

fn route_action(backends: &[WeightedCluster], policy: &RoutePolicy) -> RouteAction {
    let backends = merged_backends(backends);
    let cluster_specifier = match backends.as_slice() {
        [(only, _)] => route_action::ClusterSpecifier::Cluster((*only).to_owned()),
        _ => route_action::ClusterSpecifier::WeightedClusters(EnvoyWeightedCluster {
            clusters: backends
                .into_iter()
                .map(|(name, weight)| weighted_cluster::ClusterWeight {
                    name: name.to_owned(),
                    weight: Some(UInt32Value { value: weight }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
    };
    RouteAction {
        cluster_specifier: Some(cluster_specifier),
        timeout: Some(duration(policy.timeout)),
        retry_policy: Some(retry_policy(&policy.retry)),
        ..Default::default()
    }
}

/// Backends by cluster name, repeated clusters summed; the split's order carries no meaning,
/// so sorting keeps the output stable.
pub(super) fn merged_backends(backends: &[WeightedCluster]) -> Vec<(&str, u32)> {
    let mut merged: Vec<(&str, u32)> = Vec::with_capacity(backends.len());
    let mut sorted: Vec<&WeightedCluster> = backends.iter().collect();
    sorted.sort_by(|a, b| a.cluster.cmp(&b.cluster));
    for b in sorted {
        match merged.last_mut() {
            Some((name, weight)) if *name == b.cluster.as_str() => {
                *weight = weight.saturating_add(b.weight);
            }
            _ => merged.push((b.cluster.as_str(), b.weight)),
        }
    }
    merged
}

/// Envoy's form of a [`model::RetryPolicy`]; with `host_selection_attempts`, the
/// `previous_hosts` predicate sends each retry to another endpoint.
fn retry_policy(model: &model::RetryPolicy) -> RetryPolicy {
    let on: Vec<&str> = model.on.iter().map(|r| r.as_str()).collect();
    let retry_host_predicate = if model.host_selection_attempts > 0 {
        vec![retry_policy::RetryHostPredicate {
            name: "envoy.retry_host_predicates.previous_hosts".to_owned(),
            config_type: Some(retry_policy::retry_host_predicate::ConfigType::TypedConfig(
                to_any(&PreviousHostsPredicate {}),
            )),
        }]
    } else {
        Vec::new()
    };
    RetryPolicy {
        retry_on: on.join(","),
        num_retries: Some(UInt32Value {
            value: model.max_retries,
        }),
        retry_host_predicate,
        host_selection_retry_max_attempts: i64::from(model.host_selection_attempts),
        ..Default::default()
    }
}

fn no() -> BoolValue {
    BoolValue { value: false }
}
