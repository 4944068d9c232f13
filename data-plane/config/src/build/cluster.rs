//! Clusters and endpoints: discovery type, timeouts, protocol, transport socket matches,
//! outlier detection, and the endpoints of a load assignment.

use std::{collections::BTreeMap, net::IpAddr, sync::Arc, time::Duration};

use envoy_types::pb::{
    envoy::{
        config::{
            cluster::v3::{
                Cluster, OutlierDetection as PbOutlierDetection,
                cluster::{
                    ClusterDiscoveryType, DiscoveryType, EdsClusterConfig, LbPolicy,
                    TransportSocketMatch,
                },
            },
            core::v3::{
                BindConfig, HealthStatus, Metadata, SocketAddress,
                socket_address as pb_socket_address,
            },
            endpoint::v3::{
                ClusterLoadAssignment, Endpoint as PbEndpoint, LbEndpoint, LocalityLbEndpoints,
                lb_endpoint,
            },
        },
        extensions::upstreams::http::v3::{
            HttpProtocolOptions,
            http_protocol_options::{
                UpstreamProtocolOptions, explicit_http_config::ProtocolConfig,
            },
        },
    },
    google::protobuf::{Struct, UInt32Value, value::Kind},
};

use super::{At, Invalid, decode, duration, is, is_ads, socket_address, tls, unsupported};
use crate::{ClusterConfig, Endpoint, OutlierDetection, TlsMatch};

/// Envoy's connect timeout when a cluster sets none.
pub(super) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Key of the upstream HTTP options in `typed_extension_protocol_options`.
const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// The filter metadata namespace an endpoint's transport socket match labels live in.
const TRANSPORT_SOCKET_MATCH: &str = "envoy.transport_socket_match";

impl ClusterConfig {
    /// The EDS name of an EDS cluster (`eds_cluster_config.service_name`, or the cluster's
    /// name); `None` for other clusters.
    fn eds_name(c: &Cluster) -> Option<&str> {
        match c.cluster_discovery_type {
            Some(ClusterDiscoveryType::Type(t)) if t == DiscoveryType::Eds as i32 => {
                let service = c
                    .eds_cluster_config
                    .as_ref()
                    .map(|e| e.service_name.as_str())
                    .unwrap_or_default();
                Some(if service.is_empty() { &c.name } else { service })
            }
            _ => None,
        }
    }

    /// Translates one cluster. A STATIC cluster takes its own `load_assignment`; an EDS
    /// cluster has no endpoints until [`Runtime::link`](crate::Runtime::link) gives it its
    /// assignment's (translated by [`Endpoint::list_from_xds`]); an ORIGINAL_DST cluster has
    /// none at all.
    pub fn from_xds(c: &Cluster) -> Result<ClusterConfig, Invalid> {
        let original_dst = matches!(
            c.cluster_discovery_type,
            Some(ClusterDiscoveryType::Type(t)) if t == DiscoveryType::OriginalDst as i32
        );
        if original_dst {
            original_dst_only(c)?;
        }
        let endpoints = match &c.cluster_discovery_type {
            None => static_endpoints(c)?,
            Some(ClusterDiscoveryType::Type(t)) if *t == DiscoveryType::Static as i32 => {
                static_endpoints(c)?
            }
            Some(ClusterDiscoveryType::Type(t)) if *t == DiscoveryType::Eds as i32 => {
                let eds = c.eds_cluster_config.as_ref();
                if !is_ads(eds.and_then(|e| e.eds_config.as_ref())) {
                    return Err(unsupported(
                        "eds_cluster_config.eds_config",
                        "only ADS is supported",
                    ));
                }
                Arc::from([])
            }
            Some(ClusterDiscoveryType::Type(_)) if original_dst => Arc::from([]),
            Some(ClusterDiscoveryType::Type(_)) => {
                return Err(unsupported(
                    "type",
                    "only STATIC, EDS and ORIGINAL_DST clusters are supported",
                ));
            }
            Some(ClusterDiscoveryType::ClusterType(_)) => {
                return Err(unsupported(
                    "cluster_type",
                    "custom clusters are not supported",
                ));
            }
        };
        match LbPolicy::try_from(c.lb_policy) {
            Ok(LbPolicy::RoundRobin | LbPolicy::LeastRequest) if !original_dst => {}
            // As Envoy requires: the cluster itself says where a connection goes.
            Ok(LbPolicy::ClusterProvided) if original_dst => {}
            _ if original_dst => {
                return Err(unsupported(
                    "lb_policy",
                    "an ORIGINAL_DST cluster takes CLUSTER_PROVIDED",
                ));
            }
            _ => {
                return Err(unsupported(
                    "lb_policy",
                    "only ROUND_ROBIN and LEAST_REQUEST are supported",
                ));
            }
        }
        if c.load_balancing_policy.is_some() {
            return Err(unsupported(
                "load_balancing_policy",
                "use lb_policy ROUND_ROBIN or LEAST_REQUEST",
            ));
        }
        if c.lb_subset_config.is_some() {
            return Err(unsupported(
                "lb_subset_config",
                "endpoint subsets are not supported",
            ));
        }
        if c.transport_socket_matcher.is_some() {
            return Err(unsupported(
                "transport_socket_matcher",
                "use transport_socket_matches",
            ));
        }
        if c.upstream_config.is_some() {
            return Err(unsupported(
                "upstream_config",
                "custom upstreams are not supported",
            ));
        }
        if !c.filters.is_empty() {
            return Err(unsupported("filters", "upstream filters are not supported"));
        }
        let connect_timeout = match &c.connect_timeout {
            Some(d) => duration(d).at("connect_timeout")?,
            None => DEFAULT_CONNECT_TIMEOUT,
        };
        let tls_default = match &c.transport_socket {
            Some(socket) => tls::upstream(socket).at("transport_socket")?,
            None => None,
        };
        let tls_matches = c
            .transport_socket_matches
            .iter()
            .enumerate()
            .map(|(i, m)| tls_match(m).at(format_args!("transport_socket_matches[{i}]")))
            .collect::<Result<_, _>>()?;
        let outlier = c
            .outlier_detection
            .as_ref()
            .map(outlier)
            .transpose()
            .at("outlier_detection")?;
        let source_address = c
            .upstream_bind_config
            .as_ref()
            .map(bind_source)
            .transpose()
            .at("upstream_bind_config")?;
        if let Some(eds) = &c.eds_cluster_config {
            only!(eds => EdsClusterConfig { eds_config, service_name } unset {});
        }
        only!(c => Cluster {
            transport_socket_matches, name, eds_cluster_config, connect_timeout, lb_policy,
            load_assignment, typed_extension_protocol_options, outlier_detection,
            transport_socket, cluster_discovery_type, http2_protocol_options,
            load_balancing_policy, lb_subset_config, transport_socket_matcher, upstream_config,
            filters, upstream_bind_config,
        } unset {
            alt_stat_name, stats_matcher, per_connection_buffer_limit_bytes,
            per_connection_buffer_high_watermark_timeout, health_checks,
            max_requests_per_connection, circuit_breakers, upstream_http_protocol_options,
            common_http_protocol_options, http_protocol_options, dns_refresh_rate, dns_jitter,
            dns_failure_refresh_rate, respect_dns_ttl, dns_lookup_family, dns_resolvers,
            use_tcp_for_dns_lookups, dns_resolution_config, typed_dns_resolver_config,
            wait_for_warm_on_init, cleanup_interval, common_lb_config,
            metadata, protocol_selection, upstream_connection_options,
            close_connections_on_host_health_failure, ignore_health_on_host_removal,
            lrs_server, lrs_report_endpoint_metrics, track_timeout_budgets, track_cluster_stats,
            preconnect_policy, connection_pool_per_downstream_connection, queuing_policies,
            lb_config,
        });
        let (http2, http_follows_downstream) = http2(c)?;
        Ok(ClusterConfig {
            name: c.name.clone(),
            eds: Self::eds_name(c).map(str::to_owned),
            original_dst,
            source_address,
            connect_timeout,
            http2,
            http_follows_downstream,
            endpoints,
            tls_matches,
            tls_default,
            outlier,
        })
    }
}

/// What an ORIGINAL_DST cluster may not have: endpoints (Envoy refuses a load assignment),
/// and what the proxy's passthrough does not do (TLS, HTTP settings, outlier detection: it
/// connects to one address, in plaintext, for a TCP proxy).
fn original_dst_only(c: &Cluster) -> Result<(), Invalid> {
    const PLAINTEXT: &str = "an ORIGINAL_DST cluster connects in plaintext";
    let refused = [
        (
            "load_assignment",
            c.load_assignment.is_some(),
            "an ORIGINAL_DST cluster has no endpoints",
        ),
        (
            "eds_cluster_config",
            c.eds_cluster_config.is_some(),
            "an ORIGINAL_DST cluster has no endpoints",
        ),
        ("transport_socket", c.transport_socket.is_some(), PLAINTEXT),
        (
            "transport_socket_matches",
            !c.transport_socket_matches.is_empty(),
            PLAINTEXT,
        ),
        (
            "outlier_detection",
            c.outlier_detection.is_some(),
            "an ORIGINAL_DST cluster has no endpoints to eject",
        ),
        (
            "typed_extension_protocol_options",
            !c.typed_extension_protocol_options.is_empty(),
            "an ORIGINAL_DST cluster serves TCP proxies only",
        ),
    ];
    #[allow(deprecated)]
    let http2 = c.http2_protocol_options.is_some();
    match refused.iter().find(|(_, set, _)| *set) {
        Some((field, _, reason)) => Err(unsupported(*field, *reason)),
        None if http2 => Err(unsupported(
            "http2_protocol_options",
            "an ORIGINAL_DST cluster serves TCP proxies only",
        )),
        None => Ok(()),
    }
}

/// The source address upstream connections bind (any port): the inbound proxy reaches its
/// application from `127.0.0.6`, which the redirect rules let through, where a connection from
/// the Pod IP would be captured again.
fn bind_source(b: &BindConfig) -> Result<IpAddr, Invalid> {
    only!(b => BindConfig { source_address } unset {
        freebind, socket_options, extra_source_addresses, additional_source_addresses,
        local_address_selector, validate_network_namespaces,
    });
    let Some(sa) = &b.source_address else {
        return Err(unsupported("source_address", "is required"));
    };
    let classified = || {
        only!(sa => SocketAddress { address, port_specifier, protocol } unset {
            resolver_name, ipv4_compat, network_namespace_filepath,
        });
        Ok(())
    };
    classified().at("source_address")?;
    if sa.protocol != pb_socket_address::Protocol::Tcp as i32 {
        return Err(unsupported(
            "source_address.protocol",
            "only TCP is supported",
        ));
    }
    match sa.port_specifier {
        None | Some(pb_socket_address::PortSpecifier::PortValue(0)) => {}
        Some(_) => {
            return Err(unsupported(
                "source_address.port_value",
                "only 0 (any port) is supported",
            ));
        }
    }
    sa.address
        .parse()
        .map_err(|_| unsupported("source_address.address", "must be an IP address"))
}

fn tls_match(m: &TransportSocketMatch) -> Result<TlsMatch, Invalid> {
    let tls = match &m.transport_socket {
        Some(socket) => tls::upstream(socket).at("transport_socket")?,
        None => None,
    };
    let labels = match_labels(m.r#match.as_ref()).at("match")?;
    only!(m => TransportSocketMatch { name, r#match, transport_socket } unset {});
    Ok(TlsMatch {
        name: m.name.clone(),
        labels,
        tls,
    })
}

fn static_endpoints(c: &Cluster) -> Result<Arc<[Endpoint]>, Invalid> {
    match &c.load_assignment {
        Some(cla) => Endpoint::list_from_xds(cla).at("load_assignment"),
        None => Ok(Arc::from([])),
    }
}

/// Whether the cluster speaks HTTP/2 to its endpoints (the upstream HTTP options say so
/// explicitly, or the deprecated `http2_protocol_options` is set), and whether it follows the
/// downstream's HTTP version instead (`use_downstream_protocol_config`).
fn http2(c: &Cluster) -> Result<(bool, bool), Invalid> {
    #[allow(deprecated)]
    let mut http2 = c.http2_protocol_options.is_some();
    let mut follows = false;
    if let Some(other) = c
        .typed_extension_protocol_options
        .keys()
        .filter(|k| *k != HTTP_PROTOCOL_OPTIONS)
        .min()
    {
        return Err(unsupported(
            format!("typed_extension_protocol_options[{other:?}]"),
            "only envoy.extensions.upstreams.http.v3.HttpProtocolOptions is supported",
        ));
    }
    let Some(any) = c
        .typed_extension_protocol_options
        .get(HTTP_PROTOCOL_OPTIONS)
    else {
        return Ok((http2, follows));
    };
    let at = format!("typed_extension_protocol_options[{HTTP_PROTOCOL_OPTIONS:?}]");
    if !is::<HttpProtocolOptions>(any) {
        return Err(unsupported(at, "must be an HttpProtocolOptions"));
    }
    let options: HttpProtocolOptions = decode(any).at(&at)?;
    if !options.http_filters.is_empty() {
        return Err(unsupported(
            format!("{at}.http_filters"),
            "upstream HTTP filters are not supported",
        ));
    }
    match &options.upstream_protocol_options {
        Some(UpstreamProtocolOptions::ExplicitHttpConfig(explicit)) => {
            let at = format!("{at}.explicit_http_config");
            // The proxy speaks HTTP/1.1 and HTTP/2 with its own settings.
            match &explicit.protocol_config {
                Some(ProtocolConfig::Http2ProtocolOptions(h2)) if *h2 == Default::default() => {
                    http2 = true;
                }
                Some(ProtocolConfig::HttpProtocolOptions(h1)) if *h1 == Default::default() => {}
                None => {}
                Some(ProtocolConfig::Http2ProtocolOptions(_)) => {
                    return Err(unsupported(
                        format!("{at}.http2_protocol_options"),
                        "only the defaults are supported",
                    ));
                }
                Some(ProtocolConfig::HttpProtocolOptions(_)) => {
                    return Err(unsupported(
                        format!("{at}.http_protocol_options"),
                        "only the defaults are supported",
                    ));
                }
                Some(ProtocolConfig::Http3ProtocolOptions(_)) => {
                    return Err(unsupported(
                        format!("{at}.http3_protocol_options"),
                        "HTTP/3 is not supported",
                    ));
                }
            }
        }
        Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(downstream)) => {
            let at = format!("{at}.use_downstream_protocol_config");
            // The proxy speaks HTTP/1.1 and HTTP/2 with its own settings, so only the defaults
            // (or leaving a version out, which Envoy then does not offer) are accepted.
            let defaults = |set: bool, field: &str| {
                if set {
                    Ok(())
                } else {
                    Err(unsupported(
                        format!("{at}.{field}"),
                        "only the defaults are supported",
                    ))
                }
            };
            defaults(
                downstream
                    .http_protocol_options
                    .as_ref()
                    .is_none_or(|o| *o == Default::default()),
                "http_protocol_options",
            )?;
            defaults(
                downstream
                    .http2_protocol_options
                    .as_ref()
                    .is_none_or(|o| *o == Default::default()),
                "http2_protocol_options",
            )?;
            if downstream.http3_protocol_options.is_some() {
                return Err(unsupported(
                    format!("{at}.http3_protocol_options"),
                    "HTTP/3 is not supported",
                ));
            }
            follows = true;
        }
        Some(UpstreamProtocolOptions::AutoConfig(_)) => {
            return Err(unsupported(
                format!("{at}.auto_config"),
                "use explicit_http_config",
            ));
        }
        None => {}
    }
    let classified = || {
        only!(&options => HttpProtocolOptions { upstream_protocol_options, http_filters } unset {
            common_http_protocol_options, upstream_http_protocol_options,
            header_validation_config, outlier_detection, request_mirror_policies, hash_policy,
            retry_policy,
        });
        Ok(())
    };
    classified().at(&at)?;
    Ok((http2, follows))
}

/// The labels of a transport socket match; an endpoint takes the match if its labels include
/// all of these.
fn match_labels(labels: Option<&Struct>) -> Result<BTreeMap<String, String>, Invalid> {
    let Some(labels) = labels else {
        return Ok(BTreeMap::new());
    };
    labels
        .fields
        .iter()
        .map(|(key, value)| match &value.kind {
            Some(Kind::StringValue(s)) => Ok((key.clone(), s.clone())),
            _ => Err(unsupported(
                format!("[{key:?}]"),
                "only string values are supported",
            )),
        })
        .collect()
}

/// The string labels an endpoint's metadata gives it for transport socket matches, the only
/// metadata the proxy reads.
fn socket_labels(metadata: Option<&Metadata>) -> Result<BTreeMap<String, String>, Invalid> {
    let Some(metadata) = metadata else {
        return Ok(BTreeMap::new());
    };
    if let Some(other) = metadata
        .filter_metadata
        .keys()
        .filter(|k| *k != TRANSPORT_SOCKET_MATCH)
        .min()
    {
        return Err(unsupported(
            format!("filter_metadata[{other:?}]"),
            "only envoy.transport_socket_match is supported",
        ));
    }
    let labels = match metadata.filter_metadata.get(TRANSPORT_SOCKET_MATCH) {
        Some(labels) => match_labels(Some(labels))
            .at(format_args!("filter_metadata[{TRANSPORT_SOCKET_MATCH:?}]"))?,
        None => BTreeMap::new(),
    };
    only!(metadata => Metadata { filter_metadata } unset { typed_filter_metadata });
    Ok(labels)
}

fn outlier(o: &PbOutlierDetection) -> Result<OutlierDetection, Invalid> {
    let value = |v: &Option<UInt32Value>, default: u32| v.as_ref().map_or(default, |v| v.value);
    // Ejection is all or nothing: a percentage in between would eject at random.
    let consecutive_5xx = match value(&o.enforcing_consecutive_5xx, 100) {
        100 => value(&o.consecutive_5xx, 5),
        // Counted but never enforced: a count that is never reached.
        0 => u32::MAX,
        _ => {
            return Err(unsupported(
                "enforcing_consecutive_5xx",
                "only 0 or 100 is supported",
            ));
        }
    };
    let consecutive_gateway_failure = match value(&o.enforcing_consecutive_gateway_failure, 0) {
        0 => None,
        100 => Some(value(&o.consecutive_gateway_failure, 5)),
        _ => {
            return Err(unsupported(
                "enforcing_consecutive_gateway_failure",
                "only 0 or 100 is supported",
            ));
        }
    };
    let base_ejection_time = match &o.base_ejection_time {
        Some(d) => duration(d).at("base_ejection_time")?,
        None => Duration::from_secs(30),
    };
    let max_ejection_percent = value(&o.max_ejection_percent, 10);
    if max_ejection_percent > 100 {
        return Err(unsupported("max_ejection_percent", "must be at most 100"));
    }
    only!(o => PbOutlierDetection {
        consecutive_5xx, interval, base_ejection_time, max_ejection_percent,
        enforcing_consecutive_5xx, consecutive_gateway_failure,
        enforcing_consecutive_gateway_failure,
    } unset {
        enforcing_success_rate, success_rate_minimum_hosts, success_rate_request_volume,
        success_rate_stdev_factor, split_external_local_origin_errors,
        consecutive_local_origin_failure, enforcing_consecutive_local_origin_failure,
        enforcing_local_origin_success_rate, failure_percentage_threshold,
        enforcing_failure_percentage, enforcing_failure_percentage_local_origin,
        failure_percentage_minimum_hosts, failure_percentage_request_volume, max_ejection_time,
        max_ejection_time_jitter, successful_active_health_check_uneject_host, monitors,
        always_eject_one_host, detect_degraded_hosts,
    });
    Ok(OutlierDetection {
        consecutive_5xx,
        consecutive_gateway_failure,
        base_ejection_time,
        max_ejection_percent,
    })
}

impl Endpoint {
    /// The endpoints of a load assignment, in order. Endpoints Envoy would not use (unhealthy,
    /// draining, timed out) are left out.
    pub fn list_from_xds(cla: &ClusterLoadAssignment) -> Result<Arc<[Endpoint]>, Invalid> {
        if !cla.named_endpoints.is_empty() {
            return Err(unsupported(
                "named_endpoints",
                "named endpoints are not supported",
            ));
        }
        only!(cla => ClusterLoadAssignment { cluster_name, endpoints, named_endpoints } unset {
            policy,
        });
        let mut out = Vec::with_capacity(cla.endpoints.iter().map(|l| l.lb_endpoints.len()).sum());
        for (i, locality) in cla.endpoints.iter().enumerate() {
            let classified = || {
                only!(locality => LocalityLbEndpoints { lb_endpoints, priority } unset {
                    locality, metadata, load_balancing_weight, proximity, lb_config,
                });
                Ok(())
            };
            classified().at(format_args!("endpoints[{i}]"))?;
            if locality.priority != 0 {
                return Err(unsupported(
                    format!("endpoints[{i}].priority"),
                    "priorities (failover) are not supported",
                ));
            }
            for (j, lb) in locality.lb_endpoints.iter().enumerate() {
                let at = || format!("endpoints[{i}].lb_endpoints[{j}]");
                let endpoint = match &lb.host_identifier {
                    Some(lb_endpoint::HostIdentifier::Endpoint(e)) => e,
                    Some(lb_endpoint::HostIdentifier::EndpointName(_)) => {
                        return Err(unsupported(
                            format!("{}.endpoint_name", at()),
                            "named endpoints are not supported",
                        ));
                    }
                    None => {
                        return Err(unsupported(format!("{}.endpoint", at()), "is required"));
                    }
                };
                let address = socket_address(endpoint.address.as_ref())
                    .at(format_args!("{}.endpoint.address", at()))?;
                let classified = || {
                    only!(lb => LbEndpoint {
                        health_status, metadata, load_balancing_weight, host_identifier,
                    } unset {});
                    let endpoint_fields = || {
                        only!(endpoint => PbEndpoint { address, observability_name } unset {
                            health_check_config, hostname, additional_addresses,
                        });
                        Ok(())
                    };
                    endpoint_fields().at("endpoint")
                };
                classified().at(at())?;
                let socket_labels =
                    socket_labels(lb.metadata.as_ref()).at(format_args!("{}.metadata", at()))?;
                let weight = lb.load_balancing_weight.as_ref().map_or(1, |w| w.value);
                if weight == 0 {
                    return Err(unsupported(
                        format!("{}.load_balancing_weight", at()),
                        "must be at least 1",
                    ));
                }
                let usable = match HealthStatus::try_from(lb.health_status) {
                    Ok(
                        HealthStatus::Unhealthy | HealthStatus::Draining | HealthStatus::Timeout,
                    ) => false,
                    Ok(HealthStatus::Unknown | HealthStatus::Healthy | HealthStatus::Degraded)
                    | Err(_) => true,
                };
                if usable {
                    out.push(Endpoint {
                        address,
                        weight,
                        socket_labels,
                    });
                }
            }
        }
        Ok(out.into())
    }
}
