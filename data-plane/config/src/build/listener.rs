//! Listeners: address, direction, filter chains with their matches, TLS termination, and the
//! terminal filter (HTTP connection manager, TCP proxy behind an optional network RBAC, or a
//! close).

use std::sync::Arc;

use envoy_types::pb::{
    envoy::{
        config::{
            accesslog::v3::{access_log_filter::FilterSpecifier, comparison_filter},
            core::v3::TrafficDirection,
            listener::v3::{
                Filter, FilterChain as PbFilterChain, FilterChainMatch, Listener, ListenerFilter,
                filter, listener_filter,
            },
        },
        extensions::filters::{
            http::{rbac::v3::Rbac as HttpRbac, router::v3::Router},
            listener::tls_inspector::v3::TlsInspector,
            network::{
                direct_response::v3::Config as DirectResponse,
                http_connection_manager::v3::{
                    HttpConnectionManager, HttpFilter, LocalReplyConfig, Rds, ResponseMapper,
                    http_connection_manager::{CodecType, RouteSpecifier},
                    http_filter,
                },
                rbac::v3::Rbac as NetworkRbac,
                tcp_proxy::v3::{TcpProxy as PbTcpProxy, tcp_proxy},
            },
        },
    },
    google::protobuf::Any,
};

use super::{At, Invalid, data_source, decode, is, is_ads, rbac, socket_address, tls, unsupported};
use crate::{
    ChainMatch, DeniedReply, Direction, FilterChain, HttpManager, ListenerConfig, NetworkFilter,
    Rbac, RouteSource, RouteTable, TcpProxy,
};

/// The reply Envoy's HTTP RBAC filter gives a denied request.
pub(super) const DEFAULT_DENIED_STATUS: u16 = 403;
pub(super) const DEFAULT_DENIED_BODY: &str = "RBAC: access denied";

/// The name of the TLS inspector, for listener filters given by name only.
const TLS_INSPECTOR: &str = "envoy.filters.listener.tls_inspector";

impl ListenerConfig {
    /// Translates one listener.
    ///
    /// Chains are ordered as Envoy picks them: a chain matching the transport protocol before
    /// a chain matching everything (Envoy takes the most specific match), then the
    /// `default_filter_chain`. Listener filters other than the TLS inspector are refused; the
    /// inspector itself is implied by chains that match on the transport protocol.
    pub fn from_xds(l: &Listener) -> Result<ListenerConfig, Invalid> {
        let address = socket_address(l.address.as_ref()).at("address")?;
        if !l.additional_addresses.is_empty() {
            return Err(unsupported(
                "additional_addresses",
                "one address per listener is supported",
            ));
        }
        if l.use_original_dst.as_ref().is_some_and(|b| b.value) {
            return Err(unsupported(
                "use_original_dst",
                "transparent interception is not supported",
            ));
        }
        if l.bind_to_port.as_ref().is_some_and(|b| !b.value) {
            return Err(unsupported("bind_to_port", "every listener binds its port"));
        }
        if l.api_listener.is_some() {
            return Err(unsupported(
                "api_listener",
                "API listeners are not supported",
            ));
        }
        if l.listener_specifier.is_some() {
            return Err(unsupported(
                "internal_listener",
                "internal listeners are not supported",
            ));
        }
        if l.filter_chain_matcher.is_some() {
            return Err(unsupported(
                "filter_chain_matcher",
                "filter chain matchers are not supported; use filter_chain_match",
            ));
        }
        if l.fcds_config.is_some() {
            return Err(unsupported("fcds_config", "FCDS is not supported"));
        }
        for (i, f) in l.listener_filters.iter().enumerate() {
            let inspector = match &f.config_type {
                Some(listener_filter::ConfigType::TypedConfig(any)) => is::<TlsInspector>(any),
                Some(listener_filter::ConfigType::ConfigDiscovery(_)) => false,
                None => f.name == TLS_INSPECTOR,
            };
            if !inspector || f.filter_disabled.is_some() {
                return Err(unsupported(
                    format!("listener_filters[{i}]"),
                    "only the TLS inspector is supported",
                ));
            }
            let classified = || {
                if let Some(listener_filter::ConfigType::TypedConfig(any)) = &f.config_type {
                    let inspector: TlsInspector = decode(any).at("typed_config")?;
                    if inspector != TlsInspector::default() {
                        return Err(unsupported(
                            "typed_config",
                            "only the defaults are supported",
                        ));
                    }
                }
                only!(f => ListenerFilter { name, config_type, filter_disabled } unset {});
                Ok(())
            };
            classified().at(format_args!("listener_filters[{i}]"))?;
        }
        let direction = match TrafficDirection::try_from(l.traffic_direction) {
            Ok(TrafficDirection::Inbound) => Direction::Inbound,
            // Unspecified behaves as a client-side listener.
            Ok(TrafficDirection::Outbound | TrafficDirection::Unspecified) => Direction::Outbound,
            Err(_) => return Err(unsupported("traffic_direction", "unknown direction")),
        };

        let mut chains = Vec::with_capacity(l.filter_chains.len() + 1);
        // One chain per match at most, as Envoy requires: which would win is otherwise
        // undefined.
        let mut seen = [false; 3];
        for (i, c) in l.filter_chains.iter().enumerate() {
            let chain = filter_chain(c).at(format_args!("filter_chains[{i}]"))?;
            let slot = match chain.matches {
                ChainMatch::Any => 0,
                ChainMatch::Tls => 1,
                ChainMatch::Plaintext => 2,
            };
            if std::mem::replace(&mut seen[slot], true) {
                return Err(unsupported(
                    format!("filter_chains[{i}].filter_chain_match"),
                    "another filter chain has the same match",
                ));
            }
            chains.push(chain);
        }
        // Stable: chains of one kind keep their order.
        chains.sort_by_key(|c| c.matches == ChainMatch::Any);
        if let Some(c) = &l.default_filter_chain {
            let mut chain = filter_chain(c).at("default_filter_chain")?;
            chain.matches = ChainMatch::Any;
            chains.push(chain);
        }
        if chains.is_empty() {
            return Err(unsupported(
                "filter_chains",
                "at least one filter chain is required",
            ));
        }
        only!(l => Listener {
            name, address, stat_prefix, filter_chains, listener_filters,
            continue_on_listener_filters_timeout, traffic_direction, additional_addresses,
            use_original_dst, bind_to_port, api_listener, listener_specifier,
            filter_chain_matcher, fcds_config, default_filter_chain,
        } unset {
            stats_matcher, per_connection_buffer_limit_bytes,
            per_connection_buffer_high_watermark_timeout, metadata, deprecated_v1, drain_type,
            listener_filters_timeout, transparent, freebind, socket_options,
            tcp_fast_open_queue_length, udp_listener_config, connection_balance_config,
            reuse_port, enable_reuse_port, access_log, tcp_backlog_size,
            max_connections_to_accept_per_socket_event, enable_mptcp, ignore_global_conn_limit,
            bypass_overload_manager, tcp_keepalive,
        });
        Ok(ListenerConfig {
            name: l.name.clone(),
            address,
            direction,
            chains,
        })
    }
}

fn filter_chain(c: &PbFilterChain) -> Result<FilterChain, Invalid> {
    #[allow(deprecated)]
    let proxy_protocol = c.use_proxy_proto.as_ref().is_some_and(|b| b.value);
    if proxy_protocol {
        return Err(unsupported(
            "use_proxy_proto",
            "PROXY protocol is not supported",
        ));
    }
    let matches = match &c.filter_chain_match {
        Some(m) => chain_match(m).at("filter_chain_match")?,
        None => ChainMatch::Any,
    };
    let tls = match &c.transport_socket {
        Some(socket) => tls::downstream(socket).at("transport_socket")?,
        None => None,
    };
    let filter = network_filters(&c.filters)?;
    only!(c => PbFilterChain {
        filter_chain_match, filters, transport_socket, name, use_proxy_proto,
    } unset {
        metadata, transport_socket_connect_timeout,
    });
    Ok(FilterChain {
        name: c.name.clone(),
        matches,
        tls,
        filter,
    })
}

fn chain_match(m: &FilterChainMatch) -> Result<ChainMatch, Invalid> {
    const ONLY: &str = "only transport_protocol matches are supported";
    let other = [
        ("destination_port", m.destination_port.is_some()),
        ("prefix_ranges", !m.prefix_ranges.is_empty()),
        ("address_suffix", !m.address_suffix.is_empty()),
        ("suffix_len", m.suffix_len.is_some()),
        (
            "direct_source_prefix_ranges",
            !m.direct_source_prefix_ranges.is_empty(),
        ),
        ("source_type", m.source_type != 0),
        ("source_prefix_ranges", !m.source_prefix_ranges.is_empty()),
        ("source_ports", !m.source_ports.is_empty()),
        ("server_names", !m.server_names.is_empty()),
        ("application_protocols", !m.application_protocols.is_empty()),
    ];
    if let Some((field, _)) = other.iter().find(|(_, set)| *set) {
        return Err(unsupported(*field, ONLY));
    }
    only!(m => FilterChainMatch {
        transport_protocol, destination_port, prefix_ranges, address_suffix, suffix_len,
        direct_source_prefix_ranges, source_type, source_prefix_ranges, source_ports,
        server_names, application_protocols,
    } unset {});
    match m.transport_protocol.as_str() {
        "" => Ok(ChainMatch::Any),
        "tls" => Ok(ChainMatch::Tls),
        "raw_buffer" => Ok(ChainMatch::Plaintext),
        _ => Err(unsupported(
            "transport_protocol",
            "only tls and raw_buffer are supported",
        )),
    }
}

/// The filters of a chain: an HTTP connection manager alone, a TCP proxy with an optional
/// network RBAC in front, or a direct response that closes the connection.
fn network_filters(filters: &[Filter]) -> Result<NetworkFilter, Invalid> {
    let mut rbac: Option<Option<Arc<Rbac>>> = None;
    for (i, f) in filters.iter().enumerate() {
        // The name is a label: the typed config's URL says what the filter is.
        only!(f => Filter { name, config_type } unset {});
        let any: &Any = match &f.config_type {
            Some(filter::ConfigType::TypedConfig(any)) => any,
            Some(filter::ConfigType::ConfigDiscovery(_)) => {
                return Err(unsupported(
                    format!("filters[{i}].config_discovery"),
                    "filter config discovery is not supported",
                ));
            }
            None => {
                return Err(unsupported(
                    format!("filters[{i}].typed_config"),
                    "a typed config is required",
                ));
            }
        };
        let terminal = |filter: Result<NetworkFilter, Invalid>| {
            let filter = filter.at(format_args!("filters[{i}].typed_config"))?;
            if i + 1 < filters.len() {
                return Err(unsupported(
                    format!("filters[{}]", i + 1),
                    "nothing may follow a terminal filter",
                ));
            }
            Ok(filter)
        };
        if is::<HttpConnectionManager>(any) {
            if rbac.is_some() {
                return Err(unsupported(
                    format!("filters[{i}]"),
                    "a network RBAC filter in front of an HTTP connection manager is not \
                     supported; use the HTTP RBAC filter",
                ));
            }
            return terminal(decode(any).and_then(|h| hcm(&h)).map(NetworkFilter::Http));
        } else if is::<PbTcpProxy>(any) {
            let rbac = rbac.take().flatten();
            return terminal(
                decode(any)
                    .and_then(|t| tcp(&t, rbac))
                    .map(NetworkFilter::Tcp),
            );
        } else if is::<DirectResponse>(any) {
            return terminal(decode(any).and_then(|d| close(&d)));
        } else if is::<NetworkRbac>(any) {
            if rbac.is_some() {
                return Err(unsupported(
                    format!("filters[{i}]"),
                    "one network RBAC filter per chain is supported",
                ));
            }
            let r: NetworkRbac = decode(any).at(format_args!("filters[{i}].typed_config"))?;
            rbac = Some(rbac::network_filter(&r).at(format_args!("filters[{i}].typed_config"))?);
        } else {
            return Err(unsupported(
                format!("filters[{i}].typed_config"),
                "only http_connection_manager, tcp_proxy, rbac and direct_response network \
                 filters are supported",
            ));
        }
    }
    match filters.len() {
        0 => Err(unsupported("filters", "a terminal filter is required")),
        n => Err(unsupported(
            format!("filters[{}]", n - 1),
            "the last filter must be http_connection_manager, tcp_proxy or direct_response",
        )),
    }
}

/// A direct response with an empty body: the connection is closed at once.
fn close(d: &DirectResponse) -> Result<NetworkFilter, Invalid> {
    let body = match &d.response {
        Some(source) => data_source(source).at("response")?,
        None => String::new(),
    };
    only!(d => DirectResponse { response } unset {});
    if body.is_empty() {
        Ok(NetworkFilter::Close)
    } else {
        Err(unsupported(
            "response",
            "only an empty direct response (closing the connection) is supported",
        ))
    }
}

fn tcp(t: &PbTcpProxy, rbac: Option<Arc<Rbac>>) -> Result<TcpProxy, Invalid> {
    if t.on_demand.is_some() {
        return Err(unsupported(
            "on_demand",
            "on-demand clusters are not supported",
        ));
    }
    if t.tunneling_config.is_some() {
        return Err(unsupported(
            "tunneling_config",
            "tunneling is not supported",
        ));
    }
    if t.metadata_match.is_some() {
        return Err(unsupported(
            "metadata_match",
            "endpoint subsets are not supported",
        ));
    }
    let clusters = match &t.cluster_specifier {
        Some(tcp_proxy::ClusterSpecifier::Cluster(name)) => {
            if name.is_empty() {
                return Err(unsupported("cluster", "must not be empty"));
            }
            vec![(name.clone(), 1)]
        }
        Some(tcp_proxy::ClusterSpecifier::WeightedClusters(w)) => {
            if w.clusters.is_empty() {
                return Err(unsupported(
                    "weighted_clusters.clusters",
                    "at least one cluster is required",
                ));
            }
            let mut total: u64 = 0;
            let mut out = Vec::with_capacity(w.clusters.len());
            for (i, c) in w.clusters.iter().enumerate() {
                if c.name.is_empty() {
                    return Err(unsupported(
                        format!("weighted_clusters.clusters[{i}].name"),
                        "must not be empty",
                    ));
                }
                if c.metadata_match.is_some() {
                    return Err(unsupported(
                        format!("weighted_clusters.clusters[{i}].metadata_match"),
                        "endpoint subsets are not supported",
                    ));
                }
                let classified = || {
                    only!(c => tcp_proxy::weighted_cluster::ClusterWeight {
                        name, weight, metadata_match,
                    } unset {});
                    Ok(())
                };
                classified().at(format_args!("weighted_clusters.clusters[{i}]"))?;
                total += u64::from(c.weight);
                out.push((c.name.clone(), c.weight));
            }
            if total == 0 {
                return Err(unsupported(
                    "weighted_clusters.clusters",
                    "the weights must not all be zero",
                ));
            }
            if total > u64::from(u32::MAX) {
                return Err(unsupported(
                    "weighted_clusters.clusters",
                    "the weights must sum to at most 2^32 - 1",
                ));
            }
            let classified = || {
                only!(w => tcp_proxy::WeightedCluster { clusters } unset {});
                Ok(())
            };
            classified().at("weighted_clusters")?;
            out
        }
        None => return Err(unsupported("cluster_specifier", "a cluster is required")),
    };
    only!(t => PbTcpProxy {
        stat_prefix, cluster_specifier, on_demand, metadata_match, tunneling_config,
    } unset {
        idle_timeout, downstream_idle_timeout, upstream_idle_timeout, access_log,
        max_connect_attempts, backoff_options, hash_policy, max_downstream_connection_duration,
        max_downstream_connection_duration_jitter_percentage, access_log_flush_interval,
        flush_access_log_on_connected, access_log_options, proxy_protocol_tlvs,
        proxy_protocol_tlv_merge_policy, upstream_connect_mode, max_early_data_bytes,
        check_drain_close,
    });
    Ok(TcpProxy {
        stat_prefix: t.stat_prefix.clone(),
        clusters,
        rbac,
    })
}

fn hcm(h: &HttpConnectionManager) -> Result<HttpManager, Invalid> {
    if h.codec_type == CodecType::Http3 as i32 {
        return Err(unsupported("codec_type", "HTTP/3 is not supported"));
    }
    if h.codec_type != CodecType::Auto as i32 {
        return Err(unsupported("codec_type", "only AUTO is supported"));
    }
    // Route and RBAC path matches must see `/a/../b` as `/b`; the proxy normalizes paths and
    // offers no way not to.
    if h.normalize_path.as_ref().is_some_and(|b| !b.value) {
        return Err(unsupported(
            "normalize_path",
            "path normalization cannot be turned off",
        ));
    }
    let routes = match &h.route_specifier {
        Some(RouteSpecifier::Rds(rds)) => {
            if !is_ads(rds.config_source.as_ref()) {
                return Err(unsupported("rds.config_source", "only ADS is supported"));
            }
            if rds.route_config_name.is_empty() {
                return Err(unsupported("rds.route_config_name", "must not be empty"));
            }
            let classified = || {
                only!(rds => Rds { config_source, route_config_name } unset {});
                Ok(())
            };
            classified().at("rds")?;
            RouteSource::Rds(rds.route_config_name.clone())
        }
        Some(RouteSpecifier::RouteConfig(rc)) => {
            RouteSource::Inline(Arc::new(RouteTable::from_xds(rc).at("route_config")?))
        }
        Some(RouteSpecifier::ScopedRoutes(_)) => {
            return Err(unsupported(
                "scoped_routes",
                "scoped routes are not supported",
            ));
        }
        None => {
            return Err(unsupported(
                "route_specifier",
                "rds or route_config is required",
            ));
        }
    };
    let mut rbac = None;
    for (i, f) in h.http_filters.iter().enumerate() {
        if f.disabled {
            return Err(unsupported(
                format!("http_filters[{i}].disabled"),
                "disabled filters are not supported",
            ));
        }
        let any = match &f.config_type {
            Some(http_filter::ConfigType::TypedConfig(any)) => any,
            Some(http_filter::ConfigType::ConfigDiscovery(_)) => {
                return Err(unsupported(
                    format!("http_filters[{i}].config_discovery"),
                    "filter config discovery is not supported",
                ));
            }
            None => {
                return Err(unsupported(
                    format!("http_filters[{i}].typed_config"),
                    "a typed config is required",
                ));
            }
        };
        let classified = || {
            only!(f => HttpFilter { name, config_type, is_optional, disabled } unset {});
            Ok(())
        };
        classified().at(format_args!("http_filters[{i}]"))?;
        if is::<HttpRbac>(any) {
            if rbac.is_some() {
                return Err(unsupported(
                    format!("http_filters[{i}]"),
                    "one RBAC filter per connection manager is supported",
                ));
            }
            let r: HttpRbac = decode(any).at(format_args!("http_filters[{i}].typed_config"))?;
            rbac = Some(rbac::http_filter(&r).at(format_args!("http_filters[{i}].typed_config"))?);
        } else if is::<Router>(any) {
            if i + 1 < h.http_filters.len() {
                return Err(unsupported(
                    format!("http_filters[{i}]"),
                    "the router must be the last HTTP filter",
                ));
            }
            let router: Router = decode(any).at(format_args!("http_filters[{i}].typed_config"))?;
            if router != Router::default() {
                return Err(unsupported(
                    format!("http_filters[{i}].typed_config"),
                    "only the router's defaults are supported",
                ));
            }
        } else if !f.is_optional {
            // An optional filter may be skipped by a proxy that does not implement it.
            return Err(unsupported(
                format!("http_filters[{i}].typed_config"),
                "only the rbac and router HTTP filters are supported",
            ));
        }
    }
    let denied = denied_reply(h.local_reply_config.as_ref()).at("local_reply_config")?;
    only!(h => HttpConnectionManager {
        codec_type, stat_prefix, http_filters, normalize_path, local_reply_config,
        route_specifier,
    } unset {
        add_user_agent, tracing, common_http_protocol_options,
        http1_safe_max_connection_duration, http_protocol_options, http2_protocol_options,
        http3_protocol_options, server_name, server_header_transformation,
        scheme_header_transformation, max_request_headers_kb, stream_idle_timeout,
        stream_flush_timeout, request_timeout, request_headers_timeout, drain_timeout,
        drain_timeout_jitter, delayed_close_timeout, access_log, access_log_flush_interval,
        flush_access_log_on_new_request, access_log_options, use_remote_address,
        xff_num_trusted_hops, original_ip_detection_extensions,
        early_header_mutation_extensions, internal_address_config, skip_xff_append, via,
        generate_request_id, preserve_external_request_id,
        always_set_request_id_in_response, forward_client_cert_details,
        set_current_client_cert_details, forward_client_cert_matcher, proxy_100_continue,
        represent_ipv4_remote_address_as_ipv4_mapped_ipv6, upgrade_configs, merge_slashes,
        path_with_escaped_slashes_action, request_id_extension, strip_matching_host_port,
        stream_error_on_invalid_http_message, path_normalization_options,
        strip_trailing_host_dot, proxy_status_config, typed_header_validation_config,
        append_x_forwarded_port, append_local_overload, add_proxy_protocol_connection_state,
        forward_proto_config, strip_port_mode,
    });
    Ok(HttpManager {
        stat_prefix: h.stat_prefix.clone(),
        routes,
        rbac,
        denied,
    })
}

/// The reply to a request RBAC denies: Envoy's own (403, `RBAC: access denied`), as rewritten
/// by the first local reply mapper for status 403. Mappers for other statuses would rewrite
/// replies the proxy does not model, so they are refused.
fn denied_reply(config: Option<&LocalReplyConfig>) -> Result<DeniedReply, Invalid> {
    let mut denied = DeniedReply {
        status: DEFAULT_DENIED_STATUS,
        body: DEFAULT_DENIED_BODY.to_owned(),
    };
    let Some(config) = config else {
        return Ok(denied);
    };
    if config.body_format.is_some() {
        return Err(unsupported("body_format", "body formats are not supported"));
    }
    let mut mapped = false;
    for (i, m) in config.mappers.iter().enumerate() {
        let at = |field: &str| format!("mappers[{i}].{field}");
        if m.body_format_override.is_some() {
            return Err(unsupported(
                at("body_format_override"),
                "body formats are not supported",
            ));
        }
        if !m.headers_to_add.is_empty() {
            return Err(unsupported(
                at("headers_to_add"),
                "header mutations are not supported",
            ));
        }
        let status = match m.filter.as_ref().and_then(|f| f.filter_specifier.as_ref()) {
            Some(FilterSpecifier::StatusCodeFilter(f)) => f
                .comparison
                .as_ref()
                .filter(|c| c.op == comparison_filter::Op::Eq as i32)
                .map(|c| c.value.as_ref().map_or(0, |v| v.default_value)),
            _ => None,
        };
        match status {
            Some(403) => {}
            Some(_) => {
                return Err(unsupported(
                    at("filter"),
                    "only a mapper for 403 (the RBAC denial) is supported",
                ));
            }
            None => {
                return Err(unsupported(
                    at("filter"),
                    "only a status_code_filter with op EQ is supported",
                ));
            }
        }
        let classified = || {
            only!(m => ResponseMapper {
                filter, status_code, body, body_format_override, headers_to_add,
            } unset {});
            Ok(())
        };
        classified().at(format_args!("mappers[{i}]"))?;
        // Envoy applies the first mapper that matches.
        if std::mem::replace(&mut mapped, true) {
            continue;
        }
        if let Some(code) = &m.status_code {
            denied.status = u16::try_from(code.value)
                .ok()
                .filter(|s| (200..600).contains(s))
                .ok_or_else(|| unsupported(at("status_code"), "must be an HTTP status"))?;
        }
        if let Some(body) = &m.body {
            denied.body = data_source(body).at(at("body"))?;
        }
    }
    only!(config => LocalReplyConfig { mappers, body_format } unset {});
    Ok(denied)
}
