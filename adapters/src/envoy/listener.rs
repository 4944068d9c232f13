//! Listeners: outbound HTTP (one HCM on RDS), outbound TCP (one per port), and inbound (RBAC,
//! then the local application).
//!
//! With mTLS, an inbound listener terminates TLS. In strict access mode its only filter chain
//! requires a client certificate from the mesh CA, so plaintext and foreign certificates fail
//! the handshake before any filter runs. In permissive mode (migration: clients outside the
//! mesh must keep working) a TLS inspector picks between that chain, for TLS, and a plaintext
//! chain with the same filters for everything else.

use std::net::SocketAddr;

use envoy_types::pb::{
    envoy::{
        config::{
            accesslog::v3::{
                AccessLogFilter, ComparisonFilter, StatusCodeFilter, access_log_filter,
                comparison_filter,
            },
            core::v3::{
                AggregatedConfigSource, ApiVersion, ConfigSource, DataSource, RuntimeUInt32,
                TrafficDirection, config_source, data_source,
            },
            listener::v3::{Filter, FilterChain, FilterChainMatch, Listener, filter},
        },
        extensions::filters::{
            http::router::v3::Router,
            network::{
                direct_response::v3::Config as DirectResponse,
                http_connection_manager::v3::{
                    HttpConnectionManager, HttpFilter, LocalReplyConfig, Rds, ResponseMapper,
                    http_connection_manager::{CodecType, RouteSpecifier},
                    http_filter,
                },
                tcp_proxy::v3::{TcpProxy, tcp_proxy},
            },
        },
    },
    google::protobuf::{Any, BoolValue},
};

use super::{
    DENIED_BODY, EnvoyOptions, OUTBOUND_HTTP, inbound_name, rbac, route, socket_address,
    tls::{self, Mtls},
    to_any,
};
use crate::model::{
    AccessMode, Authorization, InboundPort, MeshSettings, Protocol, WeightedCluster,
};

const HCM_FILTER: &str = "envoy.filters.network.http_connection_manager";
const TCP_PROXY_FILTER: &str = "envoy.filters.network.tcp_proxy";
const DIRECT_RESPONSE_FILTER: &str = "envoy.filters.network.direct_response";
const ROUTER_FILTER: &str = "envoy.filters.http.router";

/// `bind_ip:outbound_http_port`: every HTTP request of the application, routed by Host.
pub(super) fn outbound_http(opts: &EnvoyOptions) -> Listener {
    let hcm = HttpConnectionManager {
        stat_prefix: OUTBOUND_HTTP.to_owned(),
        http_filters: vec![router()],
        ..hcm(OUTBOUND_HTTP)
    };
    listener(
        OUTBOUND_HTTP.to_owned(),
        SocketAddr::new(opts.bind_ip, opts.outbound_http_port),
        TrafficDirection::Outbound,
        vec![filter(HCM_FILTER, to_any(&hcm))],
    )
}

/// `bind_ip:<port>`: TCP to one service port, split by weight when there are several backends.
pub(super) fn outbound_tcp(
    port: u16,
    backends: &[WeightedCluster],
    opts: &EnvoyOptions,
) -> Listener {
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
        stat_prefix: format!("outbound_tcp_{port}"),
        cluster_specifier: Some(cluster_specifier),
        ..Default::default()
    };
    listener(
        super::outbound_tcp_name(port),
        SocketAddr::new(opts.bind_ip, port),
        TrafficDirection::Outbound,
        vec![filter(TCP_PROXY_FILTER, to_any(&tcp))],
    )
}

/// An inbound HTTP port: an HCM on RDS `inbound|<port>`, whose RBAC filter denies by default
/// and takes the port's policy from the route configuration; denials answer 403 with
/// [`DENIED_BODY`].
pub(super) fn inbound_http(
    port: u16,
    protocol: Protocol,
    opts: &EnvoyOptions,
    mtls: Option<Mtls<'_>>,
) -> Listener {
    let name = inbound_name(port);
    let hcm = HttpConnectionManager {
        stat_prefix: format!("inbound_{port}"),
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
        ..hcm(&name)
    };
    inbound(
        name,
        SocketAddr::new(opts.bind_ip, port),
        vec![filter(HCM_FILTER, to_any(&hcm))],
        protocol,
        mtls,
    )
}

/// An inbound TCP port: network RBAC (unless everyone is allowed), then the application.
pub(super) fn inbound_tcp(
    port: &InboundPort,
    mesh: &MeshSettings,
    opts: &EnvoyOptions,
    mtls: Option<Mtls<'_>>,
    warnings: &mut Vec<String>,
) -> Listener {
    let name = inbound_name(port.port);
    let mut filters = Vec::new();
    if matches!(&port.authorization, Authorization::Allow(rules) if rules.is_empty()) {
        // Nothing is allowed: close every connection without ever connecting upstream. Network
        // RBAC decides on the client's first byte, after TCP proxy has already connected, so
        // a server-first protocol (a database greeting) would reach a caller that only reads
        // (envoyproxy/envoy#9023).
        let close = DirectResponse::default();
        filters.push(filter(DIRECT_RESPONSE_FILTER, to_any(&close)));
        return inbound(
            name,
            SocketAddr::new(opts.bind_ip, port.port),
            filters,
            port.protocol,
            mtls,
        );
    }
    if let Some(rbac) = rbac::network_filter(port, mesh, warnings) {
        filters.push(filter(rbac::NETWORK_FILTER, rbac));
    }
    let tcp = TcpProxy {
        stat_prefix: format!("inbound_{}", port.port),
        cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(name.clone())),
        ..Default::default()
    };
    filters.push(filter(TCP_PROXY_FILTER, to_any(&tcp)));
    inbound(
        name,
        SocketAddr::new(opts.bind_ip, port.port),
        filters,
        port.protocol,
        mtls,
    )
}

/// An inbound listener running `filters`: in plaintext without `mtls`, otherwise as the
/// module docs say for the mesh's access mode.
fn inbound(
    name: String,
    address: SocketAddr,
    filters: Vec<Filter>,
    protocol: Protocol,
    mtls: Option<Mtls<'_>>,
) -> Listener {
    let Some(mtls) = mtls else {
        return listener(name, address, TrafficDirection::Inbound, filters);
    };
    let tls_chain = |filters, filter_chain_match| FilterChain {
        name: tls::MTLS.to_owned(),
        filter_chain_match,
        filters,
        transport_socket: Some(mtls.downstream(protocol)),
        ..Default::default()
    };
    let base = Listener {
        name,
        address: Some(socket_address(address)),
        traffic_direction: TrafficDirection::Inbound as i32,
        ..Default::default()
    };
    match mtls.mesh.access_mode {
        AccessMode::Strict => Listener {
            filter_chains: vec![tls_chain(filters, None)],
            ..base
        },
        AccessMode::Permissive => Listener {
            listener_filters: vec![tls::tls_inspector()],
            // A server-first protocol (the server speaks before the client, as MySQL and SMTP
            // do) gives the inspector nothing to read; after the inspector's timeout such a
            // connection takes the plaintext chain instead of being closed.
            continue_on_listener_filters_timeout: true,
            filter_chains: vec![
                tls_chain(
                    filters.clone(),
                    Some(FilterChainMatch {
                        transport_protocol: "tls".to_owned(),
                        ..Default::default()
                    }),
                ),
                FilterChain {
                    name: tls::PLAINTEXT.to_owned(),
                    filters,
                    ..Default::default()
                },
            ],
            ..base
        },
    }
}

fn listener(
    name: String,
    address: SocketAddr,
    direction: TrafficDirection,
    filters: Vec<Filter>,
) -> Listener {
    Listener {
        name,
        address: Some(socket_address(address)),
        traffic_direction: direction as i32,
        filter_chains: vec![FilterChain {
            filters,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The HCM settings both directions share, with routes from RDS under `route_config_name`.
fn hcm(route_config_name: &str) -> HttpConnectionManager {
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
