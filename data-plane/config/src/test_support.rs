//! Hand-made xDS resources for tests, here and (with the `test-support` feature) in other
//! crates: the pieces of listeners, clusters and routes that tests write by hand, in one place.

use std::{net::SocketAddr, time::Duration};

use envoy_types::pb::{
    envoy::{
        config::{
            accesslog::v3::{
                AccessLog, AccessLogFilter, AndFilter, ExtensionFilter, HeaderFilter, OrFilter,
                access_log, access_log_filter::FilterSpecifier, extension_filter,
            },
            cluster::v3::{
                Cluster,
                cluster::{ClusterDiscoveryType, DiscoveryType, EdsClusterConfig, LbPolicy},
            },
            core::v3::{
                Address, AggregatedConfigSource, ApiVersion, CidrRange, ConfigSource, GrpcService,
                SocketAddress, TrafficDirection, address, config_source::ConfigSourceSpecifier,
                grpc_service, socket_address,
            },
            endpoint::v3::{
                ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
            },
            listener::v3::{
                Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter,
                ListenerFilterChainMatchPredicate, filter, listener_filter,
                listener_filter_chain_match_predicate::{MatchSet, Rule},
            },
            route::v3::{
                HeaderMatcher, Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost,
                header_matcher::HeaderMatchSpecifier, route, route_action, route_match,
            },
        },
        extensions::access_loggers::{
            filters::process_ratelimit::v3::{DynamicTokenBucket, ProcessRateLimitFilter},
            grpc::v3::{CommonGrpcAccessLogConfig, HttpGrpcAccessLogConfig},
        },
        extensions::filters::{
            http::router::v3::Router,
            listener::{
                http_inspector::v3::HttpInspector, original_dst::v3::OriginalDst,
                tls_inspector::v3::TlsInspector,
            },
            network::{
                direct_response::v3::Config as DirectResponse,
                http_connection_manager::v3::{
                    HttpConnectionManager, HttpFilter, Rds,
                    http_connection_manager::{CodecType, RouteSpecifier},
                    http_filter,
                },
                tcp_proxy::v3::{TcpProxy, tcp_proxy},
            },
        },
        r#type::{
            matcher::v3::{StringMatcher, string_matcher::MatchPattern},
            v3::{Int32Range, TokenBucket},
        },
    },
    google::protobuf::{Any, BoolValue, Duration as PbDuration, UInt32Value},
};
use prost::{Message, Name};

/// `m` packed as it travels in xDS.
pub fn any<M: Message + Name>(m: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: m.encode_to_vec(),
    }
}

/// A protobuf duration; sub-second parts are kept to the nanosecond.
pub fn duration(d: Duration) -> PbDuration {
    PbDuration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// The ADS stream as a config source.
pub fn ads() -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        ..Default::default()
    }
}

/// The socket address `ip:port` (`ip` as its text, v4 or v6).
pub fn socket(ip: impl ToString, port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(port))),
            ..Default::default()
        })),
    }
}

/// The network filter `name` with its typed config.
pub fn typed<M: Message + Name>(name: &str, config: &M) -> Filter {
    Filter {
        name: name.to_owned(),
        config_type: Some(filter::ConfigType::TypedConfig(any(config))),
    }
}

/// A TCP proxy to `cluster`.
pub fn tcp_proxy(stat_prefix: &str, cluster: &str) -> Filter {
    typed(
        "envoy.filters.network.tcp_proxy",
        &TcpProxy {
            stat_prefix: stat_prefix.to_owned(),
            cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(cluster.to_owned())),
            ..Default::default()
        },
    )
}

/// The router, the last HTTP filter.
pub fn router() -> HttpFilter {
    HttpFilter {
        name: "envoy.filters.http.router".to_owned(),
        config_type: Some(http_filter::ConfigType::TypedConfig(
            any(&Router::default()),
        )),
        ..Default::default()
    }
}

/// The HTTP connection manager of the intercepted shape: codec detected, paths normalized,
/// routes from RDS `route_config_name` over ADS.
pub fn hcm(route_config_name: &str) -> Filter {
    typed(
        "envoy.filters.network.http_connection_manager",
        &HttpConnectionManager {
            codec_type: CodecType::Auto as i32,
            stat_prefix: route_config_name.to_owned(),
            normalize_path: Some(BoolValue { value: true }),
            route_specifier: Some(RouteSpecifier::Rds(Rds {
                config_source: Some(ConfigSource {
                    resource_api_version: 2,
                    ..ads()
                }),
                route_config_name: route_config_name.to_owned(),
            })),
            http_filters: vec![router()],
            ..Default::default()
        },
    )
}

/// A `direct_response` without a body: the connection is closed.
pub fn close() -> Filter {
    typed(
        "envoy.filters.network.direct_response",
        &DirectResponse::default(),
    )
}

pub fn cidr(ip: &str, prefix_len: u32) -> CidrRange {
    CidrRange {
        address_prefix: ip.to_owned(),
        prefix_len: Some(UInt32Value { value: prefix_len }),
    }
}

/// A filter chain of one filter.
pub fn chain(name: &str, m: Option<FilterChainMatch>, filter: Filter) -> FilterChain {
    FilterChain {
        name: name.to_owned(),
        filter_chain_match: m,
        filters: vec![filter],
        ..Default::default()
    }
}

/// The match of a service port: its address (a /32 or /128) and the port; only HTTP
/// (`http/1.0`, `http/1.1`, `h2c`) when `http`.
pub fn destination(ip: &str, port: u16, http: bool) -> FilterChainMatch {
    FilterChainMatch {
        prefix_ranges: vec![cidr(ip, if ip.contains(':') { 128 } else { 32 })],
        destination_port: Some(UInt32Value {
            value: u32::from(port),
        }),
        application_protocols: if http {
            vec!["http/1.0".into(), "http/1.1".into(), "h2c".into()]
        } else {
            vec![]
        },
        ..Default::default()
    }
}

/// The chain of a service port: [`destination`] `ip:port` (HTTP only when `http`) to
/// `filter`.
pub fn service_chain(name: &str, ip: &str, port: u16, http: bool, filter: Filter) -> FilterChain {
    chain(name, Some(destination(ip, port, http)), filter)
}

/// The match of a destination port, for one transport protocol (`tls`, `raw_buffer`) or, with
/// `""`, any.
pub fn port_match(port: u16, transport: &str) -> FilterChainMatch {
    FilterChainMatch {
        destination_port: Some(UInt32Value {
            value: u32::from(port),
        }),
        transport_protocol: transport.to_owned(),
        ..Default::default()
    }
}

/// The listener filter `name` with its typed config, always enabled.
pub fn listener_filter<M: Message + Name>(name: &str, config: &M) -> ListenerFilter {
    ListenerFilter {
        name: name.to_owned(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(any(config))),
        filter_disabled: None,
    }
}

pub fn original_dst() -> ListenerFilter {
    listener_filter("envoy.filters.listener.original_dst", &OriginalDst {})
}

pub fn tls_inspector() -> ListenerFilter {
    listener_filter(
        "envoy.filters.listener.tls_inspector",
        &TlsInspector::default(),
    )
}

/// The destination port `port`, as a listener filter predicate.
pub fn port_predicate(port: u16) -> ListenerFilterChainMatchPredicate {
    ListenerFilterChainMatchPredicate {
        rule: Some(Rule::DestinationPortRange(Int32Range {
            start: i32::from(port),
            end: i32::from(port) + 1,
        })),
    }
}

/// The HTTP inspector, on `http_ports` only (disabled on every other port).
pub fn http_inspector(http_ports: &[u16]) -> ListenerFilter {
    let on = match http_ports {
        [one] => port_predicate(*one),
        many => ListenerFilterChainMatchPredicate {
            rule: Some(Rule::OrMatch(MatchSet {
                rules: many.iter().map(|p| port_predicate(*p)).collect(),
            })),
        },
    };
    ListenerFilter {
        filter_disabled: Some(ListenerFilterChainMatchPredicate {
            rule: Some(Rule::NotMatch(Box::new(on))),
        }),
        ..listener_filter("envoy.filters.listener.http_inspector", &HttpInspector {})
    }
}

/// How long the listener filters of the intercepted shape wait for the first bytes.
pub const LISTENER_FILTERS_TIMEOUT: Duration = Duration::from_secs(1);

/// A capture listener of the intercepted shape: `name` on `0.0.0.0:port`, its listener
/// filters given [`LISTENER_FILTERS_TIMEOUT`] and then passed over, `chains`, and `default`
/// for a connection no chain matches.
pub fn capture_listener(
    name: &str,
    port: u16,
    direction: TrafficDirection,
    listener_filters: Vec<ListenerFilter>,
    chains: Vec<FilterChain>,
    default: FilterChain,
) -> Listener {
    Listener {
        name: name.to_owned(),
        address: Some(socket("0.0.0.0", port)),
        traffic_direction: direction as i32,
        listener_filters,
        listener_filters_timeout: Some(duration(LISTENER_FILTERS_TIMEOUT)),
        continue_on_listener_filters_timeout: true,
        filter_chains: chains,
        default_filter_chain: Some(default),
        ..Default::default()
    }
}

/// An ORIGINAL_DST cluster `name`: a connection goes on to where it was headed; 1 s to
/// connect.
pub fn passthrough(name: &str) -> Cluster {
    Cluster {
        name: name.to_owned(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(
            DiscoveryType::OriginalDst as i32,
        )),
        lb_policy: LbPolicy::ClusterProvided as i32,
        connect_timeout: Some(duration(Duration::from_secs(1))),
        ..Default::default()
    }
}

/// A STATIC cluster `name` with no endpoints yet.
pub fn static_cluster(name: &str) -> Cluster {
    Cluster {
        name: name.to_owned(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
        ..Default::default()
    }
}

/// A STATIC cluster `name` of one endpoint, inline.
pub fn static_cluster_at(name: &str, endpoint: SocketAddr) -> Cluster {
    Cluster {
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: name.to_owned(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![LbEndpoint {
                    host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                        address: Some(socket(endpoint.ip(), endpoint.port())),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..static_cluster(name)
    }
}

/// An EDS cluster `name` whose endpoints come over ADS, under `service_name` (its own name
/// when empty).
pub fn eds_cluster(name: &str, service_name: &str) -> Cluster {
    Cluster {
        name: name.to_owned(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig {
            eds_config: Some(ads()),
            service_name: service_name.to_owned(),
        }),
        ..Default::default()
    }
}

/// The route configuration `name`: one virtual host for every host (`*`), whose one route
/// `default` sends every path to `cluster`.
pub fn routes_to(name: &str, cluster: &str) -> RouteConfiguration {
    RouteConfiguration {
        name: name.to_owned(),
        virtual_hosts: vec![VirtualHost {
            name: name.to_owned(),
            domains: vec!["*".to_owned()],
            routes: vec![Route {
                name: "default".to_owned(),
                r#match: Some(RouteMatch {
                    path_specifier: Some(route_match::PathSpecifier::Prefix("/".to_owned())),
                    ..Default::default()
                }),
                action: Some(route::Action::Route(RouteAction {
                    cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(
                        cluster.to_owned(),
                    )),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// An `envoy.access_loggers.http_grpc` access log named `log_name`, to the `xds` cluster, with
/// Envoy's defaults otherwise.
pub fn grpc_access_log(log_name: &str) -> AccessLog {
    let config = HttpGrpcAccessLogConfig {
        common_config: Some(CommonGrpcAccessLogConfig {
            log_name: log_name.to_owned(),
            grpc_service: Some(GrpcService {
                target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                    grpc_service::EnvoyGrpc {
                        cluster_name: "xds".to_owned(),
                        ..Default::default()
                    },
                )),
                ..Default::default()
            }),
            transport_api_version: ApiVersion::V3 as i32,
            ..Default::default()
        }),
        ..Default::default()
    };
    AccessLog {
        name: "envoy.access_loggers.http_grpc".to_owned(),
        config_type: Some(access_log::ConfigType::TypedConfig(any(&config))),
        ..Default::default()
    }
}

/// The access log filter the control plane puts on a tap's access log: Envoy's
/// `process_ratelimit` with the token bucket `resource_name` over ADS.
pub fn rate_limit_filter(resource_name: &str) -> AccessLogFilter {
    let config = ProcessRateLimitFilter {
        dynamic_config: Some(DynamicTokenBucket {
            resource_name: resource_name.to_owned(),
            config_source: Some(ConfigSource {
                resource_api_version: ApiVersion::V3 as i32,
                ..ads()
            }),
        }),
    };
    AccessLogFilter {
        filter_specifier: Some(FilterSpecifier::ExtensionFilter(ExtensionFilter {
            name: "envoy.access_loggers.extension_filters.process_ratelimit".to_owned(),
            config_type: Some(extension_filter::ConfigType::TypedConfig(any(&config))),
        })),
    }
}

/// The access log filter of a tap's condition: requests whose header `name` (a pseudo-header
/// such as `:method`, `:authority`, `:path`) matches `pattern`, case-sensitively.
pub fn header_filter(name: &str, pattern: MatchPattern) -> AccessLogFilter {
    AccessLogFilter {
        filter_specifier: Some(FilterSpecifier::HeaderFilter(HeaderFilter {
            header: Some(HeaderMatcher {
                name: name.to_owned(),
                header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(StringMatcher {
                    match_pattern: Some(pattern),
                    ignore_case: false,
                })),
                ..Default::default()
            }),
        })),
    }
}

/// An access log filter that passes what every one of `filters` passes, evaluated in order.
pub fn and_filter(filters: Vec<AccessLogFilter>) -> AccessLogFilter {
    AccessLogFilter {
        filter_specifier: Some(FilterSpecifier::AndFilter(AndFilter { filters })),
    }
}

/// An access log filter that passes what some one of `filters` passes, evaluated in order.
pub fn or_filter(filters: Vec<AccessLogFilter>) -> AccessLogFilter {
    AccessLogFilter {
        filter_specifier: Some(FilterSpecifier::OrFilter(OrFilter { filters })),
    }
}

/// A token bucket of `max_tokens`, `tokens_per_fill` more every `fill_interval`.
pub fn token_bucket(max_tokens: u32, tokens_per_fill: u32, fill_interval: Duration) -> TokenBucket {
    TokenBucket {
        max_tokens,
        tokens_per_fill: Some(UInt32Value {
            value: tokens_per_fill,
        }),
        fill_interval: Some(duration(fill_interval)),
    }
}

/// The listener `name` on 127.0.0.1:`port`: one HTTP connection manager (RDS `name`) with
/// these access logs.
pub fn logged_listener(name: &str, port: u16, access_log: Vec<AccessLog>) -> Listener {
    let manager = HttpConnectionManager {
        stat_prefix: name.to_owned(),
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: name.to_owned(),
        })),
        http_filters: vec![router()],
        access_log,
        ..Default::default()
    };
    Listener {
        name: name.to_owned(),
        address: Some(socket("127.0.0.1", port)),
        filter_chains: vec![chain(
            "http",
            None,
            typed("envoy.filters.network.http_connection_manager", &manager),
        )],
        ..Default::default()
    }
}
