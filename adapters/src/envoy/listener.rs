//! Listeners: outbound HTTP (one HCM on RDS), outbound TCP (one per port), and inbound (RBAC,
//! then the local application); or, for an intercepted proxy, one outbound and one inbound
//! listener that pick a filter chain by each connection's original destination.
//!
//! ```text
//!  addressed (local mode)                  intercepted (a Pod with redirect rules)
//!  app ─▶ bind_ip:15001 (Host) ─▶ vhost    app ─▶ iptables ─▶ 0.0.0.0:15001 ─▶ original_dst
//!  app ─▶ bind_ip:<svc port>  ─▶ tcp         ─▶ chain (ClusterIP, port) ─▶ HCM on RDS / tcp_proxy
//!                                            ─▶ chain (headless podIP, port) ─▶ tcp_proxy (mTLS)
//!  peer ─▶ bind_ip:<port> ─▶ RBAC ─▶ app     ─▶ no chain: passthrough to the original destination
//!                                          peer ─▶ iptables ─▶ 0.0.0.0:15006 ─▶ chain (port) ─▶ RBAC ─▶ app
//! ```
//!
//! With mTLS, an inbound listener terminates TLS. In strict access mode its only filter chain
//! requires a client certificate from the mesh CA, so plaintext and foreign certificates fail
//! the handshake before any filter runs; on a TCP port with rules, so do the certificates of
//! identities the rules do not allow (`inbound_filters` says why). In permissive mode
//! (migration: clients outside the mesh must keep working) a TLS inspector picks between that
//! chain, for TLS, and a plaintext chain for everything else, with the same filters (but on a
//! TCP port with rules, which no plaintext client can satisfy: there it closes).
//!
//! Every chain that proxies starts with a connection limit, and every HTTP connection manager
//! and TCP proxy carries the mesh's timeouts ([`ListenerPolicy`]): a slow or idle peer is
//! closed, and a flood of connections is refused past the limit, on both data planes alike.

use std::net::SocketAddr;

use switchyard_proxy_config::metrics::InboundStatPrefix;

use envoy_types::pb::{
    envoy::{
        config::{
            accesslog::v3::{
                AccessLogFilter, ComparisonFilter, StatusCodeFilter, access_log_filter,
                comparison_filter,
            },
            core::v3::{
                AggregatedConfigSource, ApiVersion, ConfigSource, DataSource, HttpProtocolOptions,
                RuntimeUInt32, TrafficDirection, config_source, data_source,
            },
            core::v3::{CidrRange, address as core_address},
            listener::v3::{
                Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter,
                ListenerFilterChainMatchPredicate, filter, listener_filter,
                listener_filter_chain_match_predicate::{MatchSet, Rule},
            },
        },
        extensions::filters::{
            http::router::v3::Router,
            listener::{http_inspector::v3::HttpInspector, original_dst::v3::OriginalDst},
            network::{
                connection_limit::v3::ConnectionLimit,
                direct_response::v3::Config as DirectResponse,
                http_connection_manager::v3::{
                    HttpConnectionManager, HttpFilter, LocalReplyConfig, Rds, ResponseMapper,
                    http_connection_manager::{
                        CodecType, ForwardClientCertDetails, RouteSpecifier,
                        SetCurrentClientCertDetails,
                    },
                    http_filter,
                },
                tcp_proxy::v3::{TcpProxy, UpstreamConnectMode, tcp_proxy},
            },
        },
        r#type::v3::Int32Range,
    },
    google::protobuf::{Any, BoolValue, UInt32Value, UInt64Value},
};

use super::{
    DENIED_BODY, EnvoyOptions, OUTBOUND_HTTP, PASSTHROUGH, duration, inbound_name, rbac, route,
    socket_address,
    tls::{self, Mtls},
    to_any, virtual_host_name,
};
use crate::model::{
    self, AccessMode, InboundPort, ListenerPolicy, MeshSettings, OutboundService, Protocol,
    WeightedCluster,
};

const HCM_FILTER: &str = "envoy.filters.network.http_connection_manager";
const TCP_PROXY_FILTER: &str = "envoy.filters.network.tcp_proxy";
const DIRECT_RESPONSE_FILTER: &str = "envoy.filters.network.direct_response";
const CONNECTION_LIMIT_FILTER: &str = "envoy.filters.network.connection_limit";
const ROUTER_FILTER: &str = "envoy.filters.http.router";
const ORIGINAL_DST_FILTER: &str = "envoy.filters.listener.original_dst";
const HTTP_INSPECTOR_FILTER: &str = "envoy.filters.listener.http_inspector";

/// The application protocols Envoy's HTTP inspector reports for plaintext HTTP.
const DETECTED_HTTP: [&str; 3] = ["http/1.0", "http/1.1", "h2c"];

/// How long an intercepted connection may stay silent before it is taken as neither TLS nor
/// HTTP. A server-first protocol's client says nothing until the server has spoken, so this is
/// the delay it pays on a port where detection runs (undeclared ports, permissive inbound);
/// Envoy's default of 15 s would be a hang to such a client.
const DETECTION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// `bind_ip:outbound_http_port`: every HTTP request of the application, routed by Host.
pub(super) fn outbound_http(opts: &EnvoyOptions, policy: &ListenerPolicy) -> Listener {
    let hcm = HttpConnectionManager {
        stat_prefix: OUTBOUND_HTTP.to_owned(),
        http_filters: vec![router()],
        ..hcm(OUTBOUND_HTTP, policy)
    };
    listener(
        OUTBOUND_HTTP.to_owned(),
        SocketAddr::new(opts.bind_ip, opts.outbound_http_port),
        TrafficDirection::Outbound,
        vec![filter(HCM_FILTER, to_any(&hcm))],
        policy,
    )
}

/// `bind_ip:<port>`: TCP to one service port, split by weight when there are several backends.
pub(super) fn outbound_tcp(
    port: u16,
    backends: &[WeightedCluster],
    opts: &EnvoyOptions,
    policy: &ListenerPolicy,
) -> Listener {
    listener(
        super::outbound_tcp_name(port),
        SocketAddr::new(opts.bind_ip, port),
        TrafficDirection::Outbound,
        vec![tcp_proxy(format!("outbound_tcp_{port}"), backends, policy)],
        policy,
    )
}

/// A `tcp_proxy` to `backends`, by weight when there are several.
fn tcp_proxy(stat_prefix: String, backends: &[WeightedCluster], policy: &ListenerPolicy) -> Filter {
    let backends = route::merged_backends(backends);
    let cluster_specifier = match backends.as_slice() {
        [(only, _)] => tcp_proxy::ClusterSpecifier::Cluster((*only).to_owned()),
        _ => tcp_proxy::ClusterSpecifier::WeightedClusters(tcp_proxy::WeightedCluster {
            clusters: backends
                .into_iter()
                .map(
                    |(name, weight)| tcp_proxy::weighted_cluster::ClusterWeight {
                        name: name.to_owned(),
                        weight,
                        ..Default::default()
                    },
                )
                .collect(),
        }),
    };
    let tcp = TcpProxy {
        stat_prefix,
        cluster_specifier: Some(cluster_specifier),
        ..tcp_settings(policy)
    };
    filter(TCP_PROXY_FILTER, to_any(&tcp))
}

/// A `tcp_proxy` to one cluster.
fn tcp_proxy_to(stat_prefix: String, cluster: String, policy: &ListenerPolicy) -> Filter {
    let tcp = TcpProxy {
        stat_prefix,
        cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(cluster)),
        ..tcp_settings(policy)
    };
    filter(TCP_PROXY_FILTER, to_any(&tcp))
}

/// The settings every TCP proxy shares: the policy's idle timeout.
fn tcp_settings(policy: &ListenerPolicy) -> TcpProxy {
    TcpProxy {
        idle_timeout: Some(duration(policy.tcp_idle_timeout)),
        ..Default::default()
    }
}

/// `0.0.0.0:<outbound port>` of an intercepted proxy: every outbound connection of the
/// application, routed by its original destination. A Service's `ClusterIP:port` takes that
/// port's chain: an HCM on the RDS route configuration named after the port (HTTP ports, and
/// undeclared ports whose first bytes are HTTP), or a `tcp_proxy` to its backends; anything
/// else passes through unchanged. Services without a ClusterIP (headless) get a chain per
/// cluster of `headless` (one endpoint each): a `tcp_proxy` to that endpoint over mTLS.
///
/// An address taken by an earlier service is left out, with a warning.
///
/// Returns the listener and the names of the route configurations its chains load.
pub(super) fn outbound_intercepted<'a>(
    services: impl IntoIterator<Item = &'a OutboundService>,
    headless: &[model::Cluster],
    pod_ip: std::net::IpAddr,
    outbound_port: u16,
    policy: &ListenerPolicy,
    warnings: &mut Vec<String>,
) -> (Listener, Vec<String>) {
    let mut chains = Vec::new();
    let mut routes = Vec::new();
    let mut detect_ports = std::collections::BTreeSet::new();
    let mut taken = std::collections::BTreeMap::new();
    for cluster in headless {
        let [endpoint] = cluster.endpoints.as_slice() else {
            continue;
        };
        let name = cluster.name.as_str().to_owned();
        let addr = endpoint.address;
        if let Some(owner) = taken.insert((addr.ip(), addr.port()), name.clone()) {
            warnings.push(format!(
                "{name}: {addr} is already routed as {owner}; left out"
            ));
            taken.insert((addr.ip(), addr.port()), owner);
            continue;
        }
        let matches = destination(addr.ip(), addr.port());
        let tcp = tcp_proxy_to(name.clone(), name.clone(), policy);
        chains.push(chain(name, Some(matches), vec![tcp]));
    }
    for svc in services {
        let Some(ip) = svc.cluster_ip else {
            continue;
        };
        let mut ports: Vec<_> = svc.ports.iter().collect();
        ports.sort_by_key(|p| p.port);
        ports.dedup_by_key(|p| p.port);
        for port in ports {
            let name = virtual_host_name(&svc.name, port.port);
            if let Some(owner) = taken.insert((ip, port.port), name.clone()) {
                warnings.push(format!(
                    "{name}: {ip}:{} is already routed as {owner}; left out",
                    port.port
                ));
                taken.insert((ip, port.port), owner);
                continue;
            }
            let matches = destination(ip, port.port);
            let mut http = || {
                routes.push(name.clone());
                filter(HCM_FILTER, to_any(&outbound_hcm(&name, policy)))
            };
            let tcp = || {
                let backends = port.routes.first().map(|r| r.backends.as_slice());
                tcp_proxy(name.clone(), backends.unwrap_or_default(), policy)
            };
            match port.protocol {
                Protocol::Http | Protocol::Http2 => {
                    chains.push(chain(name.clone(), Some(matches), vec![http()]));
                }
                Protocol::Tcp => chains.push(chain(name.clone(), Some(matches), vec![tcp()])),
                Protocol::Unknown => {
                    detect_ports.insert(port.port);
                    let detected = FilterChainMatch {
                        application_protocols: DETECTED_HTTP.map(str::to_owned).to_vec(),
                        ..matches.clone()
                    };
                    chains.push(chain(format!("{name}|http"), Some(detected), vec![http()]));
                    chains.push(chain(name.clone(), Some(matches), vec![tcp()]));
                }
            }
        }
    }
    chains.push(loop_guard(outbound_port));
    let mut listener_filters = vec![original_dst()];
    if !detect_ports.is_empty() {
        listener_filters.push(http_inspector(&detect_ports));
    }
    let passthrough = chain(
        PASSTHROUGH.to_owned(),
        None,
        vec![tcp_proxy_to(
            PASSTHROUGH.to_owned(),
            PASSTHROUGH.to_owned(),
            policy,
        )],
    );
    let listener = capture_listener(
        super::OUTBOUND,
        SocketAddr::new(pod_ip, outbound_port),
        TrafficDirection::Outbound,
        listener_filters,
        chains,
        passthrough,
        policy,
    );
    (listener, routes)
}

/// The chain match of connections to exactly `ip:port`.
fn destination(ip: std::net::IpAddr, port: u16) -> FilterChainMatch {
    FilterChainMatch {
        prefix_ranges: vec![CidrRange {
            address_prefix: ip.to_string(),
            prefix_len: Some(UInt32Value {
                value: if ip.is_ipv4() { 32 } else { 128 },
            }),
        }],
        destination_port: Some(UInt32Value {
            value: u32::from(port),
        }),
        ..Default::default()
    }
}

/// A listener that takes every redirected connection on `0.0.0.0:<port>` (`capture` is the Pod's IP and that port) and picks a chain
/// by its original destination (the `original_dst` filter comes first in `listener_filters`),
/// waiting at most [`DETECTION_TIMEOUT`] for the inspectors, and `default` when no chain fits.
///
/// An IPv6 Pod's listener binds `[::]` with `ipv4_compat`: its redirect rules send both
/// families there (ip6tables and iptables redirect to the same port), and an IPv4 connection
/// arrives with an IPv4-mapped address whose original destination is still IPv4's.
fn capture_listener(
    name: &str,
    capture: SocketAddr,
    direction: TrafficDirection,
    listener_filters: Vec<ListenerFilter>,
    filter_chains: Vec<FilterChain>,
    default: FilterChain,
    policy: &ListenerPolicy,
) -> Listener {
    let pod_ip = capture.ip();
    let mut address = socket_address(SocketAddr::new(
        if pod_ip.is_ipv6() {
            std::net::Ipv6Addr::UNSPECIFIED.into()
        } else {
            std::net::Ipv4Addr::UNSPECIFIED.into()
        },
        capture.port(),
    ));
    if let Some(core_address::Address::SocketAddress(sa)) = &mut address.address {
        sa.ipv4_compat = pod_ip.is_ipv6();
    }
    limit_connections(
        Listener {
            name: name.to_owned(),
            address: Some(address),
            traffic_direction: direction as i32,
            listener_filters,
            listener_filters_timeout: Some(duration(DETECTION_TIMEOUT)),
            continue_on_listener_filters_timeout: true,
            filter_chains,
            default_filter_chain: Some(default),
            ..Default::default()
        },
        policy,
    )
}

/// The outbound HCM of one intercepted service port, on the route configuration of the same
/// name.
fn outbound_hcm(name: &str, policy: &ListenerPolicy) -> HttpConnectionManager {
    HttpConnectionManager {
        stat_prefix: name.to_owned(),
        http_filters: vec![router()],
        ..hcm(name, policy)
    }
}

/// A chain for connections made straight to one of the proxy's own capture ports: their
/// original destination is the port itself, so passing them through would loop.
fn loop_guard(port: u16) -> FilterChain {
    chain(
        format!("loop|{port}"),
        Some(FilterChainMatch {
            destination_port: Some(UInt32Value {
                value: u32::from(port),
            }),
            ..Default::default()
        }),
        vec![close()],
    )
}

fn chain(
    name: String,
    filter_chain_match: Option<FilterChainMatch>,
    filters: Vec<Filter>,
) -> FilterChain {
    FilterChain {
        name,
        filter_chain_match,
        filters,
        ..Default::default()
    }
}

fn original_dst() -> ListenerFilter {
    ListenerFilter {
        name: ORIGINAL_DST_FILTER.to_owned(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(to_any(
            &OriginalDst::default(),
        ))),
        ..Default::default()
    }
}

/// The HTTP inspector, run only on connections to `ports` (those of undeclared protocol): on
/// any other port it would make a server-first protocol wait for the detection timeout.
fn http_inspector(ports: &std::collections::BTreeSet<u16>) -> ListenerFilter {
    let port_rule = |p: u16| {
        Rule::DestinationPortRange(Int32Range {
            start: i32::from(p),
            end: i32::from(p) + 1,
        })
    };
    let on_ports = match ports.iter().copied().collect::<Vec<_>>().as_slice() {
        [one] => port_rule(*one),
        many => Rule::OrMatch(MatchSet {
            rules: many
                .iter()
                .map(|p| ListenerFilterChainMatchPredicate {
                    rule: Some(port_rule(*p)),
                })
                .collect(),
        }),
    };
    ListenerFilter {
        name: HTTP_INSPECTOR_FILTER.to_owned(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(to_any(
            &HttpInspector::default(),
        ))),
        filter_disabled: Some(ListenerFilterChainMatchPredicate {
            rule: Some(Rule::NotMatch(Box::new(
                ListenerFilterChainMatchPredicate {
                    rule: Some(on_ports),
                },
            ))),
        }),
    }
}

/// What an inbound port runs: the filters of its TLS chain and of its plaintext chain, and
/// the identities its TLS handshake admits (empty: any certificate of the mesh CA).
struct Inbound {
    tls: Vec<Filter>,
    plaintext: Vec<Filter>,
    peers: Vec<String>,
}

impl Inbound {
    /// The same filters on both chains, but for the `stat_prefix` they get, which says whether
    /// the connection came over mTLS ([`InboundStatPrefix`]).
    fn per_transport(port: u16, filters: impl Fn(String) -> Vec<Filter>) -> Self {
        let prefix = |mtls| InboundStatPrefix { port, mtls }.to_string();
        Self {
            tls: filters(prefix(true)),
            plaintext: filters(prefix(false)),
            peers: Vec::new(),
        }
    }

    fn closed() -> Self {
        Self {
            tls: vec![close()],
            plaintext: vec![close()],
            peers: Vec::new(),
        }
    }
}

/// The filters of an inbound port. HTTP: an HCM on RDS `inbound|<port>`, whose RBAC filter
/// denies by default and takes the port's policy from the route configuration; denials answer
/// 403 with [`DENIED_BODY`]. TCP: the application, or, when the port has rules, network RBAC
/// and then the application over TLS only.
///
/// Network RBAC decides on the client's first byte, and a TCP proxy connects upstream as soon
/// as it may (envoyproxy/envoy#9023): a server that speaks first (a database greeting) would
/// reach a caller RBAC is about to deny. So on a TCP port with rules the decision is taken
/// before any upstream connection: the TLS handshake admits only the identities the rules
/// allow, and the TCP proxy connects once the handshake is done. A plaintext connection has no
/// identity, so no rule can admit it, and a port whose rules admit nobody: both are closed
/// at once. RBAC stays behind the handshake's check, as the record of the decision.
fn inbound_filters(port: &InboundPort, mesh: &MeshSettings, warnings: &mut Vec<String>) -> Inbound {
    let name = inbound_name(port.port);
    let limits = &mesh.listener_policy;
    if port.protocol.is_http() {
        let manager = |stat_prefix| HttpConnectionManager {
            stat_prefix,
            http_filters: vec![
                HttpFilter {
                    name: rbac::HTTP_FILTER.to_owned(),
                    config_type: Some(http_filter::ConfigType::TypedConfig(
                        rbac::http_filter_deny_all(),
                    )),
                    ..Default::default()
                },
                router(),
            ],
            local_reply_config: Some(denied_reply()),
            // The application learns who is calling from the certificate the handshake
            // verified: `By=<own SPIFFE ID>;Hash=<SHA-256 of the caller's certificate>;
            // URI=<caller's SPIFFE ID>`, whatever the caller sent. Without a client certificate
            // (plaintext in permissive mode) the header is removed.
            forward_client_cert_details: ForwardClientCertDetails::SanitizeSet as i32,
            set_current_client_cert_details: Some(SetCurrentClientCertDetails {
                uri: true,
                ..Default::default()
            }),
            ..hcm(&name, limits)
        };
        return Inbound::per_transport(port.port, |prefix| {
            vec![filter(HCM_FILTER, to_any(&manager(prefix)))]
        });
    }
    let Some(policy) = rbac::network_policy(port, mesh, warnings) else {
        return Inbound::per_transport(port.port, |prefix| {
            vec![tcp_proxy_to(prefix, name.clone(), limits)]
        });
    };
    if policy.sources.is_empty() {
        return Inbound::closed();
    }
    let tcp = TcpProxy {
        stat_prefix: InboundStatPrefix {
            port: port.port,
            mtls: true,
        }
        .to_string(),
        cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(name)),
        upstream_connect_mode: UpstreamConnectMode::OnDownstreamTlsHandshake as i32,
        // Envoy requires a bound with a delayed connect. With 0 it stops reading as soon as
        // the client sends anything before the upstream is there, and forwards it after.
        max_early_data_bytes: Some(UInt32Value { value: 0 }),
        ..tcp_settings(limits)
    };
    Inbound {
        tls: vec![
            filter(rbac::NETWORK_FILTER, policy.filter),
            filter(TCP_PROXY_FILTER, to_any(&tcp)),
        ],
        plaintext: vec![close()],
        peers: policy.sources,
    }
}

/// `bind_ip:<port>`: one inbound port, in plaintext without `mtls`, otherwise as the module
/// docs say for the mesh's access mode.
pub(super) fn inbound(
    port: &InboundPort,
    mesh: &MeshSettings,
    opts: &EnvoyOptions,
    mtls: Option<Mtls<'_>>,
    warnings: &mut Vec<String>,
) -> Listener {
    let filters = inbound_filters(port, mesh, warnings);
    let chains = inbound_chains(filters, port.protocol, mtls, None);
    let inspect = chains.len() > 1;
    let listener = Listener {
        name: inbound_name(port.port),
        address: Some(socket_address(SocketAddr::new(opts.bind_ip, port.port))),
        traffic_direction: TrafficDirection::Inbound as i32,
        listener_filters: if inspect {
            vec![tls::tls_inspector()]
        } else {
            Vec::new()
        },
        // A server-first protocol (the server speaks before the client, as MySQL and SMTP
        // do) gives the inspector nothing to read; after the inspector's timeout such a
        // connection takes the plaintext chain instead of being closed.
        continue_on_listener_filters_timeout: inspect,
        listener_filters_timeout: inspect.then(|| duration(DETECTION_TIMEOUT)),
        filter_chains: chains,
        ..Default::default()
    };
    limit_connections(listener, &mesh.listener_policy)
}

/// `0.0.0.0:<inbound port>` of an intercepted proxy: every connection to the Pod, on the
/// chains of the port it was addressed to (those [`inbound`] would give that port's own
/// listener). A port no Service exposes is closed in strict mode and passed through to the
/// application in permissive mode.
pub(super) fn inbound_intercepted(
    ports: &[&InboundPort],
    pod_ip: std::net::IpAddr,
    inbound_port: u16,
    mesh: &MeshSettings,
    mtls: Option<Mtls<'_>>,
    warnings: &mut Vec<String>,
) -> Listener {
    let mut chains = Vec::new();
    for port in ports {
        let filters = inbound_filters(port, mesh, warnings);
        chains.extend(inbound_chains(
            filters,
            port.protocol,
            mtls,
            Some(port.port),
        ));
    }
    let inspect = chains.iter().any(|c| {
        c.filter_chain_match
            .as_ref()
            .is_some_and(|m| !m.transport_protocol.is_empty())
    });
    chains.push(loop_guard(inbound_port));
    let mut listener_filters = vec![original_dst()];
    if inspect {
        listener_filters.push(tls::tls_inspector());
    }
    let default = match mesh.access_mode {
        AccessMode::Strict => chain("deny".to_owned(), None, vec![close()]),
        AccessMode::Permissive => chain(
            PASSTHROUGH.to_owned(),
            None,
            vec![tcp_proxy_to(
                PASSTHROUGH.to_owned(),
                super::INBOUND_PASSTHROUGH.to_owned(),
                &mesh.listener_policy,
            )],
        ),
    };
    capture_listener(
        super::INBOUND,
        SocketAddr::new(pod_ip, inbound_port),
        TrafficDirection::Inbound,
        listener_filters,
        chains,
        default,
        &mesh.listener_policy,
    )
}

/// The chains of one inbound port running `filters`: in plaintext without `mtls`, otherwise
/// as the module docs say for the mesh's access mode. With `port` (an intercepted listener),
/// each chain matches that destination port and is named after it.
fn inbound_chains(
    filters: Inbound,
    protocol: Protocol,
    mtls: Option<Mtls<'_>>,
    port: Option<u16>,
) -> Vec<FilterChain> {
    let on_port = |transport_protocol: &str| {
        let destination_port = port.map(|p| UInt32Value {
            value: u32::from(p),
        });
        (destination_port.is_some() || !transport_protocol.is_empty()).then(|| FilterChainMatch {
            destination_port,
            transport_protocol: transport_protocol.to_owned(),
            ..Default::default()
        })
    };
    let name = |tls: &str| match port {
        Some(p) if tls == tls::PLAINTEXT => format!("{}|{}", inbound_name(p), tls::PLAINTEXT),
        Some(p) => inbound_name(p),
        None => tls.to_owned(),
    };
    let Some(mtls) = mtls else {
        return vec![FilterChain {
            name: port.map(inbound_name).unwrap_or_default(),
            filter_chain_match: on_port(""),
            filters: filters.plaintext,
            ..Default::default()
        }];
    };
    let Inbound {
        tls: tls_filters,
        plaintext,
        peers,
    } = filters;
    let tls_chain = |filter_chain_match| FilterChain {
        name: name(tls::MTLS),
        filter_chain_match,
        filters: tls_filters,
        transport_socket: Some(mtls.downstream(protocol, peers)),
        ..Default::default()
    };
    match mtls.mesh.access_mode {
        AccessMode::Strict => vec![tls_chain(on_port(""))],
        AccessMode::Permissive => vec![
            tls_chain(on_port("tls")),
            FilterChain {
                name: name(tls::PLAINTEXT),
                filter_chain_match: on_port(""),
                filters: plaintext,
                ..Default::default()
            },
        ],
    }
}

fn close() -> Filter {
    filter(DIRECT_RESPONSE_FILTER, to_any(&DirectResponse::default()))
}

fn listener(
    name: String,
    address: SocketAddr,
    direction: TrafficDirection,
    filters: Vec<Filter>,
    policy: &ListenerPolicy,
) -> Listener {
    let listener = Listener {
        name,
        address: Some(socket_address(address)),
        traffic_direction: direction as i32,
        filter_chains: vec![FilterChain {
            filters,
            ..Default::default()
        }],
        ..Default::default()
    };
    limit_connections(listener, policy)
}

/// Puts a connection limit ([`ListenerPolicy::max_connections`]) first in every chain of the
/// listener that proxies; chains that only close need none. Envoy counts the connections of
/// each chain apart; its statistics (`connection_limit.<listener name>.*`) add up the chains
/// of the listener.
fn limit_connections(mut listener: Listener, policy: &ListenerPolicy) -> Listener {
    let Some(max) = policy.max_connections else {
        return listener;
    };
    let limit = ConnectionLimit {
        stat_prefix: listener.name.clone(),
        max_connections: Some(UInt64Value {
            value: u64::from(max.get()),
        }),
        ..Default::default()
    };
    let limit = filter(CONNECTION_LIMIT_FILTER, to_any(&limit));
    let chains = listener
        .filter_chains
        .iter_mut()
        .chain(listener.default_filter_chain.as_mut());
    for chain in chains {
        let closes = chain
            .filters
            .last()
            .is_none_or(|f| f.name == DIRECT_RESPONSE_FILTER);
        if !closes {
            chain.filters.insert(0, limit.clone());
        }
    }
    listener
}

/// The HCM settings both directions share, with routes from RDS under `route_config_name`,
/// and the policy's timeouts.
fn hcm(route_config_name: &str, policy: &ListenerPolicy) -> HttpConnectionManager {
    HttpConnectionManager {
        codec_type: CodecType::Auto as i32,
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: Some(ConfigSource {
                resource_api_version: ApiVersion::V3 as i32,
                config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
                    AggregatedConfigSource {},
                )),
                ..Default::default()
            }),
            route_config_name: route_config_name.to_owned(),
        })),
        // Path regexes (routes and RBAC) must see `/a/../b` as `/b`, or a policy on `/b` is
        // bypassed by spelling the path differently.
        normalize_path: Some(BoolValue { value: true }),
        // `x-forwarded-client-cert` is the mesh's to set: one a client sends is removed (the
        // inbound HCM then sets it from the verified peer).
        forward_client_cert_details: ForwardClientCertDetails::Sanitize as i32,
        request_headers_timeout: Some(duration(policy.request_headers_timeout)),
        stream_idle_timeout: Some(duration(policy.stream_idle_timeout)),
        common_http_protocol_options: Some(HttpProtocolOptions {
            idle_timeout: Some(duration(policy.http_idle_timeout)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn router() -> HttpFilter {
    HttpFilter {
        name: ROUTER_FILTER.to_owned(),
        config_type: Some(http_filter::ConfigType::TypedConfig(to_any(
            &Router::default(),
        ))),
        ..Default::default()
    }
}

/// Rewrites the body of Envoy's own 403s (RBAC's "RBAC: access denied"). Local replies only:
/// a 403 from the application passes through untouched, and RBAC is the only filter on this
/// HCM that answers 403 itself.
fn denied_reply() -> LocalReplyConfig {
    LocalReplyConfig {
        mappers: vec![ResponseMapper {
            filter: Some(AccessLogFilter {
                filter_specifier: Some(access_log_filter::FilterSpecifier::StatusCodeFilter(
                    StatusCodeFilter {
                        comparison: Some(ComparisonFilter {
                            op: comparison_filter::Op::Eq as i32,
                            value: Some(RuntimeUInt32 {
                                default_value: 403,
                                runtime_key: "switchyard.denied_status".to_owned(),
                            }),
                        }),
                    },
                )),
            }),
            body: Some(DataSource {
                specifier: Some(data_source::Specifier::InlineString(DENIED_BODY.to_owned())),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn filter(name: &str, config: Any) -> Filter {
    Filter {
        name: name.to_owned(),
        config_type: Some(filter::ConfigType::TypedConfig(config)),
    }
}
