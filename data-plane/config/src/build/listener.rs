//! Listeners: address, direction, listener filters (original destination, TLS and HTTP
//! inspectors), filter chains with their matches, TLS termination, an optional connection
//! limit, and the terminal filter (HTTP connection manager, TCP proxy behind an optional
//! network RBAC, or a close).

use std::{net::IpAddr, sync::Arc};

use envoy_types::pb::{
    envoy::r#type::v3::Int32Range,
    envoy::{
        config::{
            accesslog::v3::{access_log_filter::FilterSpecifier, comparison_filter},
            core::v3::{CidrRange as PbCidrRange, HttpProtocolOptions, TrafficDirection},
            listener::v3::{
                Filter, FilterChain as PbFilterChain, FilterChainMatch, Listener, ListenerFilter,
                ListenerFilterChainMatchPredicate, filter, listener_filter,
                listener_filter_chain_match_predicate::{MatchSet, Rule},
            },
        },
        extensions::filters::{
            http::{rbac::v3::Rbac as HttpRbac, router::v3::Router},
            listener::{
                http_inspector::v3::HttpInspector, original_dst::v3::OriginalDst,
                tls_inspector::v3::TlsInspector,
            },
            network::{
                connection_limit::v3::ConnectionLimit as PbConnectionLimit,
                direct_response::v3::Config as DirectResponse,
                http_connection_manager::v3::{
                    HttpConnectionManager, HttpFilter, LocalReplyConfig, Rds, ResponseMapper,
                    http_connection_manager::{
                        CodecType, ForwardClientCertDetails, RouteSpecifier,
                        SetCurrentClientCertDetails,
                    },
                    http_filter,
                },
                rbac::v3::Rbac as NetworkRbac,
                tcp_proxy::v3::{TcpProxy as PbTcpProxy, UpstreamConnectMode, tcp_proxy},
            },
        },
    },
    google::protobuf::{self as pbuf, Any},
};
use prost::Message;

use super::{
    At, Invalid, access_log, bind_address, data_source, decode, duration, is, is_ads, rbac, tls,
    unsupported,
};
use crate::{
    AppProtocol, ChainMatch, ChainSelector, CidrRange, ConnectionLimit, DeniedReply, Direction,
    FilterChain, ForwardClientCert, HttpManager, HttpTimeouts, ListenerConfig, ListenerFilters,
    NetworkFilter, PortSet, Rbac, RouteSource, RouteTable, TcpProxy, TransportProtocol,
};

/// The reply Envoy's HTTP RBAC filter gives a denied request.
pub(super) const DEFAULT_DENIED_STATUS: u16 = 403;
pub(super) const DEFAULT_DENIED_BODY: &str = "RBAC: access denied";

/// The names of the listener filters, for listener filters given by name only.
const TLS_INSPECTOR: &str = "envoy.filters.listener.tls_inspector";
const ORIGINAL_DST: &str = "envoy.filters.listener.original_dst";
const HTTP_INSPECTOR: &str = "envoy.filters.listener.http_inspector";

/// The listener filters the proxy has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ListenerFilterKind {
    OriginalDst,
    TlsInspector,
    HttpInspector,
}

impl ListenerConfig {
    /// Translates one listener.
    ///
    /// Chains keep their order, the `default_filter_chain` last; [`ChainSelector`] files them
    /// by their matches for Envoy's selection, and two chains with the same match are refused,
    /// as Envoy refuses them. Listener filters: `original_dst`, `tls_inspector` and
    /// `http_inspector` (the last with an optional `filter_disabled` on destination ports),
    /// default settings each; the TLS inspector is also implied by chains that match on the
    /// transport protocol.
    pub fn from_xds(l: &Listener) -> Result<ListenerConfig, Invalid> {
        let (address, ipv4_compat) = bind_address(l.address.as_ref()).at("address")?;
        if !l.additional_addresses.is_empty() {
            return Err(unsupported(
                "additional_addresses",
                "one address per listener is supported",
            ));
        }
        if l.use_original_dst.as_ref().is_some_and(|b| b.value) {
            return Err(unsupported(
                "use_original_dst",
                "handing connections over to the listener of their original destination is not \
                 supported; use the envoy.filters.listener.original_dst listener filter",
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
        let mut filters = listener_filters(&l.listener_filters)?;
        filters.timeout = match &l.listener_filters_timeout {
            // Envoy: 0 disables the timeout.
            Some(d) => Some(duration(d).at("listener_filters_timeout")?).filter(|d| !d.is_zero()),
            None => Some(crate::DEFAULT_LISTENER_FILTERS_TIMEOUT),
        };
        filters.continue_on_timeout = l.continue_on_listener_filters_timeout;
        let direction = match TrafficDirection::try_from(l.traffic_direction) {
            Ok(TrafficDirection::Inbound) => Direction::Inbound,
            // Unspecified behaves as a client-side listener.
            Ok(TrafficDirection::Outbound | TrafficDirection::Unspecified) => Direction::Outbound,
            Err(_) => return Err(unsupported("traffic_direction", "unknown direction")),
        };

        let mut chains = Vec::with_capacity(l.filter_chains.len() + 1);
        for (i, c) in l.filter_chains.iter().enumerate() {
            chains.push(filter_chain(c).at(format_args!("filter_chains[{i}]"))?);
        }
        let default = match &l.default_filter_chain {
            Some(c) => {
                // Its own match, if any, is never consulted: it takes what the others leave.
                let mut chain = filter_chain(c).at("default_filter_chain")?;
                chain.matches = ChainMatch::ANY;
                chains.push(chain);
                Some(chains.len() - 1)
            }
            None => None,
        };
        if chains.is_empty() {
            return Err(unsupported(
                "filter_chains",
                "at least one filter chain is required",
            ));
        }
        let matched = &chains[..l.filter_chains.len()];
        let selector =
            ChainSelector::build(matched.iter().map(|c| &c.matches), default).map_err(|d| {
                unsupported(
                    format!("filter_chains[{}].filter_chain_match", d.chain),
                    if d.chain == d.other {
                        "lists the same match twice"
                    } else {
                        "another filter chain has the same match"
                    },
                )
            })?;
        // The TLS inspector gives a TLS connection the application protocols its ClientHello
        // offers (ALPN), which the proxy does not read.
        let detects_tls = filters.tls_inspector || selector.matches_transport();
        if detects_tls
            && let Some(i) = matched.iter().position(|c| {
                !c.matches.application_protocols.is_empty()
                    && c.matches.transport_protocol != Some(TransportProtocol::RawBuffer)
            })
        {
            return Err(unsupported(
                format!("filter_chains[{i}].filter_chain_match.application_protocols"),
                "matching the application protocols of TLS connections (ALPN) is not \
                 supported; match transport_protocol raw_buffer too",
            ));
        }
        only!(l => Listener {
            name, address, stat_prefix, filter_chains, listener_filters,
            listener_filters_timeout, continue_on_listener_filters_timeout, traffic_direction,
            additional_addresses, use_original_dst, bind_to_port, api_listener,
            listener_specifier, filter_chain_matcher, fcds_config, default_filter_chain,
        } unset {
            stats_matcher, per_connection_buffer_limit_bytes,
            per_connection_buffer_high_watermark_timeout, metadata, deprecated_v1, drain_type,
            transparent, freebind, socket_options,
            tcp_fast_open_queue_length, udp_listener_config, connection_balance_config,
            reuse_port, enable_reuse_port, access_log, tcp_backlog_size,
            max_connections_to_accept_per_socket_event, enable_mptcp, ignore_global_conn_limit,
            bypass_overload_manager, tcp_keepalive,
        });
        Ok(ListenerConfig {
            name: l.name.clone(),
            address,
            ipv4_compat,
            direction,
            filters,
            chains,
            selector,
        })
    }
}

/// The listener filters, each at most once; the original destination must be known before
/// the HTTP inspector's `filter_disabled` looks at the destination port.
fn listener_filters(list: &[ListenerFilter]) -> Result<ListenerFilters, Invalid> {
    let mut filters = ListenerFilters::default();
    let mut seen: Vec<ListenerFilterKind> = Vec::with_capacity(list.len());
    for (i, f) in list.iter().enumerate() {
        let at = || format!("listener_filters[{i}]");
        let kind = match &f.config_type {
            Some(listener_filter::ConfigType::TypedConfig(any)) => {
                if is::<OriginalDst>(any) {
                    Some(ListenerFilterKind::OriginalDst)
                } else if is::<TlsInspector>(any) {
                    Some(ListenerFilterKind::TlsInspector)
                } else if is::<HttpInspector>(any) {
                    Some(ListenerFilterKind::HttpInspector)
                } else {
                    None
                }
            }
            Some(listener_filter::ConfigType::ConfigDiscovery(_)) => {
                return Err(unsupported(
                    format!("{}.config_discovery", at()),
                    "filter config discovery is not supported",
                ));
            }
            None => match f.name.as_str() {
                ORIGINAL_DST => Some(ListenerFilterKind::OriginalDst),
                TLS_INSPECTOR => Some(ListenerFilterKind::TlsInspector),
                HTTP_INSPECTOR => Some(ListenerFilterKind::HttpInspector),
                _ => None,
            },
        };
        let Some(kind) = kind else {
            return Err(unsupported(
                at(),
                "only the original_dst, tls_inspector and http_inspector listener filters are \
                 supported",
            ));
        };
        if seen.contains(&kind) {
            return Err(unsupported(
                at(),
                "the same listener filter is listed twice",
            ));
        }
        if kind == ListenerFilterKind::OriginalDst
            && seen.contains(&ListenerFilterKind::HttpInspector)
        {
            return Err(unsupported(
                at(),
                "original_dst must come before the http_inspector, whose filter_disabled \
                 reads the original destination port",
            ));
        }
        seen.push(kind);
        let classified = || {
            if let Some(listener_filter::ConfigType::TypedConfig(any)) = &f.config_type {
                match kind {
                    ListenerFilterKind::OriginalDst => defaults_only::<OriginalDst>(any),
                    ListenerFilterKind::TlsInspector => defaults_only::<TlsInspector>(any),
                    ListenerFilterKind::HttpInspector => defaults_only::<HttpInspector>(any),
                }
                .at("typed_config")?;
            }
            let enabled = match &f.filter_disabled {
                None => PortSet::all(),
                Some(p) if kind == ListenerFilterKind::HttpInspector => {
                    disabled_ports(p).at("filter_disabled")?.complement()
                }
                Some(_) => {
                    return Err(unsupported(
                        "filter_disabled",
                        "only the http_inspector may be disabled (by destination port)",
                    ));
                }
            };
            only!(f => ListenerFilter { name, config_type, filter_disabled } unset {});
            Ok(enabled)
        };
        let enabled = classified().at(at())?;
        match kind {
            ListenerFilterKind::OriginalDst => filters.original_dst = true,
            ListenerFilterKind::TlsInspector => filters.tls_inspector = true,
            ListenerFilterKind::HttpInspector => filters.http_inspector = Some(enabled),
        }
    }
    Ok(filters)
}

/// A listener filter's typed config, which must hold the defaults.
fn defaults_only<M: Message + Default + PartialEq>(any: &Any) -> Result<(), Invalid> {
    let config: M = decode(any)?;
    if config == M::default() {
        Ok(())
    } else {
        Err(unsupported("", "only the defaults are supported"))
    }
}

/// The destination ports on which a `filter_disabled` predicate turns its filter off. Only
/// what an "inspect on these ports only" needs: `not_match`, `or_match` and
/// `destination_port_range`.
fn disabled_ports(p: &ListenerFilterChainMatchPredicate) -> Result<PortSet, Invalid> {
    only!(p => ListenerFilterChainMatchPredicate { rule } unset {});
    match &p.rule {
        Some(Rule::NotMatch(inner)) => Ok(disabled_ports(inner).at("not_match")?.complement()),
        Some(Rule::OrMatch(set)) => {
            let classified = || {
                only!(set => MatchSet { rules } unset {});
                Ok(())
            };
            classified().at("or_match")?;
            // Envoy's own validation: an OR of fewer than two is a mistake.
            if set.rules.len() < 2 {
                return Err(unsupported(
                    "or_match.rules",
                    "must hold at least two rules",
                ));
            }
            let mut ports = PortSet::empty();
            for (i, rule) in set.rules.iter().enumerate() {
                ports = ports.union(&disabled_ports(rule).at(format_args!("or_match.rules[{i}]"))?);
            }
            Ok(ports)
        }
        Some(Rule::DestinationPortRange(range)) => {
            only!(range => Int32Range { start, end } unset {});
            match (u32::try_from(range.start), u32::try_from(range.end)) {
                (Ok(start), Ok(end)) if start < end && end <= 65_536 => {
                    Ok(PortSet::range(start, end))
                }
                _ => Err(unsupported(
                    "destination_port_range",
                    "must be ports start (inclusive) to end (exclusive), 0 <= start < end <= \
                     65536",
                )),
            }
        }
        Some(Rule::AndMatch(_)) => Err(unsupported(
            "and_match",
            "only not_match, or_match and destination_port_range are supported",
        )),
        Some(Rule::AnyMatch(_)) => Err(unsupported(
            "any_match",
            "only not_match, or_match and destination_port_range are supported",
        )),
        None => Err(unsupported("rule", "a rule is required")),
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
        None => ChainMatch::ANY,
    };
    let tls = match &c.transport_socket {
        Some(socket) => tls::downstream(socket).at("transport_socket")?,
        None => None,
    };
    let (connection_limit, filter) = network_filters(&c.filters)?;
    only!(c => PbFilterChain {
        filter_chain_match, filters, transport_socket, name, use_proxy_proto,
    } unset {
        metadata, transport_socket_connect_timeout,
    });
    Ok(FilterChain {
        name: c.name.clone(),
        matches,
        tls,
        connection_limit,
        filter,
    })
}

fn chain_match(m: &FilterChainMatch) -> Result<ChainMatch, Invalid> {
    const ONLY: &str = "only destination_port, prefix_ranges, transport_protocol and \
                        application_protocols matches are supported";
    let other = [
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
    ];
    if let Some((field, _)) = other.iter().find(|(_, set)| *set) {
        return Err(unsupported(*field, ONLY));
    }
    only!(m => FilterChainMatch {
        transport_protocol, destination_port, prefix_ranges, application_protocols,
        address_suffix, suffix_len, direct_source_prefix_ranges, source_type,
        source_prefix_ranges, source_ports, server_names,
    } unset {});
    let destination_port = match &m.destination_port {
        None => None,
        // Envoy's own validation: 1 to 65535.
        Some(p) => Some(
            u16::try_from(p.value)
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| unsupported("destination_port", "must be a port, 1 to 65535"))?,
        ),
    };
    let prefix_ranges = m
        .prefix_ranges
        .iter()
        .enumerate()
        .map(|(i, r)| cidr_range(r).at(format_args!("prefix_ranges[{i}]")))
        .collect::<Result<_, _>>()?;
    let transport_protocol = match m.transport_protocol.as_str() {
        "" => None,
        "tls" => Some(TransportProtocol::Tls),
        "raw_buffer" => Some(TransportProtocol::RawBuffer),
        _ => {
            return Err(unsupported(
                "transport_protocol",
                "only tls and raw_buffer are supported",
            ));
        }
    };
    let application_protocols = m
        .application_protocols
        .iter()
        .enumerate()
        .map(|(i, name)| {
            AppProtocol::from_name(name).ok_or_else(|| {
                unsupported(
                    format!("application_protocols[{i}]"),
                    "only http/1.0, http/1.1 and h2c (what the HTTP inspector detects) are \
                     supported",
                )
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(ChainMatch {
        destination_port,
        prefix_ranges,
        transport_protocol,
        application_protocols,
    })
}

/// An address range; the address is masked to the prefix, as Envoy masks it.
fn cidr_range(r: &PbCidrRange) -> Result<CidrRange, Invalid> {
    only!(r => PbCidrRange { address_prefix, prefix_len } unset {});
    let address: IpAddr = r
        .address_prefix
        .parse()
        .map_err(|_| unsupported("address_prefix", "must be an IP address"))?;
    let len = r.prefix_len.as_ref().map_or(0, |l| l.value);
    u8::try_from(len)
        .ok()
        .and_then(|len| CidrRange::new(address, len))
        .ok_or_else(|| unsupported("prefix_len", "must not be longer than the address"))
}

/// The filters of a chain: an HTTP connection manager alone, a TCP proxy with an optional
/// network RBAC in front, or a direct response that closes the connection; and an optional
/// connection limit anywhere before them (Envoy runs it when the connection is made, before
/// any of the others reads a byte, wherever it stands).
fn network_filters(
    filters: &[Filter],
) -> Result<(Option<ConnectionLimit>, NetworkFilter), Invalid> {
    let mut rbac: Option<Option<Arc<Rbac>>> = None;
    let mut limit: Option<ConnectionLimit> = None;
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
            Ok((limit.clone(), filter))
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
        } else if is::<PbConnectionLimit>(any) {
            if limit.is_some() {
                return Err(unsupported(
                    format!("filters[{i}]"),
                    "one connection limit per chain is supported",
                ));
            }
            let l: PbConnectionLimit = decode(any).at(format_args!("filters[{i}].typed_config"))?;
            limit = Some(connection_limit(&l).at(format_args!("filters[{i}].typed_config"))?);
        } else {
            return Err(unsupported(
                format!("filters[{i}].typed_config"),
                "only http_connection_manager, tcp_proxy, rbac, connection_limit and \
                 direct_response network filters are supported",
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

/// A connection limit: `max_connections` (required, at least 1, as Envoy validates it).
fn connection_limit(l: &PbConnectionLimit) -> Result<ConnectionLimit, Invalid> {
    let max_connections = match &l.max_connections {
        Some(m) if m.value >= 1 => m.value,
        _ => {
            return Err(unsupported(
                "max_connections",
                "is required, and at least 1",
            ));
        }
    };
    only!(l => PbConnectionLimit {
        stat_prefix, max_connections,
    } unset {
        delay, runtime_enabled,
    });
    Ok(ConnectionLimit {
        stat_prefix: l.stat_prefix.clone(),
        max_connections,
    })
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
    // The proxy authorizes a connection once its TLS handshake is done and connects upstream
    // only after that, reading nothing from the client before: what `IMMEDIATE` and
    // `ON_DOWNSTREAM_TLS_HANDSHAKE` (with any early data bound) ask of a chain that decides on
    // the peer's identity. Waiting for the client's first byte it does not do.
    match UpstreamConnectMode::try_from(t.upstream_connect_mode) {
        Ok(UpstreamConnectMode::Immediate) => {}
        Ok(UpstreamConnectMode::OnDownstreamTlsHandshake) => {
            if t.max_early_data_bytes.is_none() {
                return Err(unsupported(
                    "max_early_data_bytes",
                    "is required when the upstream connect is delayed",
                ));
            }
        }
        Ok(UpstreamConnectMode::OnDownstreamData) | Err(_) => {
            return Err(unsupported(
                "upstream_connect_mode",
                "only IMMEDIATE and ON_DOWNSTREAM_TLS_HANDSHAKE are supported",
            ));
        }
    }
    let idle_timeout = optional_timeout(t.idle_timeout.as_ref(), crate::DEFAULT_TCP_IDLE_TIMEOUT)
        .at("idle_timeout")?;
    only!(t => PbTcpProxy {
        stat_prefix, cluster_specifier, on_demand, metadata_match, tunneling_config,
        upstream_connect_mode, max_early_data_bytes, idle_timeout,
    } unset {
        downstream_idle_timeout, upstream_idle_timeout, access_log,
        max_connect_attempts, backoff_options, hash_policy, max_downstream_connection_duration,
        max_downstream_connection_duration_jitter_percentage, access_log_flush_interval,
        flush_access_log_on_connected, access_log_options, proxy_protocol_tlvs,
        proxy_protocol_tlv_merge_policy, check_drain_close,
    });
    Ok(TcpProxy {
        stat_prefix: t.stat_prefix.clone(),
        clusters,
        rbac,
        idle_timeout,
    })
}

/// A timeout that Envoy defaults to `default` when unset and turns off with `0s`.
fn optional_timeout(
    d: Option<&pbuf::Duration>,
    default: std::time::Duration,
) -> Result<Option<std::time::Duration>, Invalid> {
    match d {
        None => Ok(Some(default)),
        Some(d) => Ok(Some(duration(d)?).filter(|d| !d.is_zero())),
    }
}

/// The timeouts of a connection manager: Envoy's defaults for those it leaves unset.
fn http_timeouts(h: &HttpConnectionManager) -> Result<HttpTimeouts, Invalid> {
    let defaults = HttpTimeouts::default();
    let request_headers = match &h.request_headers_timeout {
        Some(d) => Some(duration(d).at("request_headers_timeout")?).filter(|d| !d.is_zero()),
        None => defaults.request_headers,
    };
    let stream_idle = match &h.stream_idle_timeout {
        Some(d) => Some(duration(d).at("stream_idle_timeout")?).filter(|d| !d.is_zero()),
        None => defaults.stream_idle,
    };
    let idle = match &h.common_http_protocol_options {
        None => defaults.idle,
        Some(options) => {
            let idle = match &options.idle_timeout {
                Some(d) => Some(duration(d).at("idle_timeout")?).filter(|d| !d.is_zero()),
                None => defaults.idle,
            };
            let classified = || {
                only!(options => HttpProtocolOptions {
                    idle_timeout,
                } unset {
                    max_connection_duration, max_connection_duration_jitter, max_headers_count,
                    max_response_headers_kb,
                    max_stream_duration, headers_with_underscores_action,
                    max_requests_per_connection,
                });
                Ok(())
            };
            classified().at("common_http_protocol_options")?;
            idle
        }
    };
    Ok(HttpTimeouts {
        request_headers,
        idle,
        stream_idle,
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
    let forward_client_cert = forward_client_cert(
        h.forward_client_cert_details,
        h.set_current_client_cert_details.as_ref(),
    )?;
    let timeouts = http_timeouts(h)?;
    let access_logs = access_log::access_logs(&h.access_log)?;
    only!(h => HttpConnectionManager {
        codec_type, stat_prefix, http_filters, normalize_path, local_reply_config,
        route_specifier, forward_client_cert_details, set_current_client_cert_details,
        request_headers_timeout, stream_idle_timeout, common_http_protocol_options, access_log,
    } unset {
        add_user_agent, tracing,
        http1_safe_max_connection_duration, http_protocol_options, http2_protocol_options,
        http3_protocol_options, server_name, server_header_transformation,
        scheme_header_transformation, max_request_headers_kb,
        stream_flush_timeout, request_timeout, drain_timeout,
        drain_timeout_jitter, delayed_close_timeout, access_log_flush_interval,
        flush_access_log_on_new_request, access_log_options, use_remote_address,
        xff_num_trusted_hops, original_ip_detection_extensions,
        early_header_mutation_extensions, internal_address_config, skip_xff_append, via,
        generate_request_id, preserve_external_request_id,
        always_set_request_id_in_response, forward_client_cert_matcher, proxy_100_continue,
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
        forward_client_cert,
        timeouts,
        access_logs,
    })
}

/// `forward_client_cert_details` and `set_current_client_cert_details`: SANITIZE (the
/// default) or SANITIZE_SET, with the URI SAN as the only optional detail. The modes that
/// forward what the client sent would let a client speak for another identity; `Subject`,
/// `Issuer`, `Cert`, `Chain` and `DNS` are details the proxy does not produce, and the header
/// has Envoy's own format. The details are read whatever the mode (Envoy ignores them under
/// SANITIZE, and so does the proxy).
fn forward_client_cert(
    mode: i32,
    details: Option<&SetCurrentClientCertDetails>,
) -> Result<ForwardClientCert, Invalid> {
    let uri = match details {
        None => false,
        Some(d) => {
            let subject = d.subject.as_ref().is_some_and(|b| b.value);
            if subject || d.cert || d.chain || d.dns || d.issuer {
                return Err(unsupported(
                    "set_current_client_cert_details",
                    "only uri is supported",
                ));
            }
            let classified = || {
                only!(d => SetCurrentClientCertDetails {
                    uri, subject, cert, chain, dns, issuer,
                } unset {
                    format,
                });
                Ok(())
            };
            classified().at("set_current_client_cert_details")?;
            d.uri
        }
    };
    match ForwardClientCertDetails::try_from(mode) {
        Ok(ForwardClientCertDetails::Sanitize) => Ok(ForwardClientCert::Sanitize),
        Ok(ForwardClientCertDetails::SanitizeSet) => Ok(ForwardClientCert::SanitizeSet { uri }),
        Ok(
            ForwardClientCertDetails::ForwardOnly
            | ForwardClientCertDetails::AppendForward
            | ForwardClientCertDetails::AlwaysForwardOnly,
        )
        | Err(_) => Err(unsupported(
            "forward_client_cert_details",
            "only SANITIZE and SANITIZE_SET are supported: the application must never see a \
             client's own x-forwarded-client-cert",
        )),
    }
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
