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
                Filter, FilterChain as PbFilterChain, FilterChainMatch, Listener, filter,
                listener_filter,
            },
        },
        extensions::filters::{
            http::{rbac::v3::Rbac as HttpRbac, router::v3::Router},
            listener::tls_inspector::v3::TlsInspector,
            network::{
                direct_response::v3::Config as DirectResponse,
                http_connection_manager::v3::{
                    HttpConnectionManager, LocalReplyConfig,
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
    Ok(FilterChain {
        name: c.name.clone(),
        matches,
        tls,
        filter: network_filters(&c.filters)?,
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
            out
        }
        None => return Err(unsupported("cluster_specifier", "a cluster is required")),
    };
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
    let routes = match &h.route_specifier {
        Some(RouteSpecifier::Rds(rds)) => {
            if !is_ads(rds.config_source.as_ref()) {
                return Err(unsupported("rds.config_source", "only ADS is supported"));
            }
            if rds.route_config_name.is_empty() {
                return Err(unsupported("rds.route_config_name", "must not be empty"));
            }
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
        } else if !f.is_optional {
            // An optional filter may be skipped by a proxy that does not implement it.
            return Err(unsupported(
                format!("http_filters[{i}].typed_config"),
                "only the rbac and router HTTP filters are supported",
            ));
        }
    }
    Ok(HttpManager {
        stat_prefix: h.stat_prefix.clone(),
        routes,
        rbac,
        denied: denied_reply(h.local_reply_config.as_ref()).at("local_reply_config")?,
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
    Ok(denied)
}
