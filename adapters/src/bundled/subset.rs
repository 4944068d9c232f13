//! The xDS subset `switchyard-proxy` implements, as a walk over the decoded resources.
//!
//! Every message the walk enters is destructured naming all of its fields, split into the
//! fields the proxy implements (checked further) and the rest (which must be unset). A field
//! that envoy-types adds later therefore fails to compile here until someone decides which side
//! it belongs to, and nothing outside the subset can pass by being overlooked.
//!
//! Typed configs (`Any`) are recognised by their type URL, never by the filter's `name`.

use std::net::IpAddr;

use envoy_types::pb::{
    envoy::{
        config::{
            accesslog::v3::{
                ComparisonFilter, StatusCodeFilter, access_log_filter, comparison_filter,
            },
            cluster::v3::{
                Cluster, OutlierDetection,
                cluster::{
                    ClusterDiscoveryType, DiscoveryType, EdsClusterConfig, LbPolicy,
                    TransportSocketMatch,
                },
            },
            core::v3::{
                Address, ApiVersion, ConfigSource, DataSource, HealthStatus, Metadata,
                SocketAddress, TransportSocket, address, config_source, data_source,
                socket_address, transport_socket,
            },
            endpoint::v3::{
                ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
            },
            listener::v3::{
                Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter, filter,
                listener_filter,
            },
            rbac::v3::{
                Permission, Policy, Principal, Rbac as Rules, permission, principal, rbac::Action,
            },
            route::v3::{
                HeaderMatcher, RetryPolicy, Route, RouteAction, RouteConfiguration, RouteMatch,
                VirtualHost, WeightedCluster, header_matcher, retry_policy, route, route_action,
                route_match, weighted_cluster,
            },
        },
        extensions::{
            filters::{
                http::{
                    rbac::v3::{Rbac as HttpRbac, RbacPerRoute},
                    router::v3::Router,
                },
                listener::tls_inspector::v3::TlsInspector,
                network::{
                    direct_response::v3::Config as DirectResponse,
                    http_connection_manager::v3::{
                        HttpConnectionManager, HttpFilter, LocalReplyConfig, Rds, ResponseMapper,
                        http_connection_manager::{CodecType, RouteSpecifier},
                        http_filter,
                    },
                    rbac::v3::Rbac as NetworkRbac,
                    tcp_proxy::v3::{TcpProxy, tcp_proxy},
                },
            },
            retry::host::previous_hosts::v3::PreviousHostsPredicate,
            transport_sockets::{
                raw_buffer::v3::RawBuffer,
                tls::v3::{
                    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext,
                    SdsSecretConfig, Secret, SubjectAltNameMatcher, TlsCertificate, TlsParameters,
                    UpstreamTlsContext,
                    common_tls_context::{
                        CombinedCertificateValidationContext, ValidationContextType,
                    },
                    secret,
                    subject_alt_name_matcher::SanType,
                    tls_parameters::TlsProtocol,
                },
            },
            upstreams::http::v3::{
                HttpProtocolOptions,
                http_protocol_options::{
                    ExplicitHttpConfig, UpstreamProtocolOptions,
                    explicit_http_config::ProtocolConfig,
                },
            },
        },
        r#type::matcher::v3::{
            PathMatcher, RegexMatcher, StringMatcher, path_matcher, string_matcher,
        },
    },
    google::protobuf::{Any, Struct, value},
};
use prost::{Message, Name};

use super::Unsupported;
use crate::envoy::{
    CLUSTER_TYPE_URL, ENDPOINT_TYPE_URL, LISTENER_TYPE_URL, ROUTE_TYPE_URL, Resource,
    SECRET_TYPE_URL,
};

/// The `retry_on` conditions the proxy implements.
pub(super) const RETRY_ON: [&str; 5] = [
    "connect-failure",
    "refused-stream",
    "reset-before-request",
    "5xx",
    "gateway-error",
];

/// The name the HTTP RBAC filter must have: per-route overrides are keyed by it.
const HTTP_RBAC: &str = "envoy.filters.http.rbac";
/// Where an endpoint's transport socket match labels live.
const TRANSPORT_SOCKET_MATCH: &str = "envoy.transport_socket_match";

/// Destructures `$value` (a reference to a `$ty`) naming every field: the `$ok` fields are left
/// to the caller to check, each of the `$no` fields must hold its default value.
macro_rules! only {
    (
        $check:expr, $at:expr, $value:expr =>
        $ty:path { $($ok:ident),* $(,)? } unset { $($no:ident),* $(,)? }
    ) => {{
        #[allow(deprecated)]
        let $ty { $($ok: _,)* $($no,)* } = $value;
        $( $check.unset($at, stringify!($no), $no)?; )*
    }};
}

type Result<T = ()> = std::result::Result<T, Unsupported>;

/// Checks one resource against the subset; the first field outside it is the error.
pub(super) fn check(resource: &Resource) -> Result {
    let kind = match resource.type_url {
        CLUSTER_TYPE_URL => "cluster",
        ENDPOINT_TYPE_URL => "cluster load assignment",
        LISTENER_TYPE_URL => "listener",
        ROUTE_TYPE_URL => "route configuration",
        SECRET_TYPE_URL => "secret",
        other => {
            return Err(Unsupported {
                kind: "resource",
                name: resource.name.clone(),
                field: "type_url".to_owned(),
                reason: format!("{other} is not a type the bundled proxy subscribes to"),
            });
        }
    };
    let check = Check {
        kind,
        name: &resource.name,
    };
    if resource.resource.type_url != resource.type_url {
        return Err(check.fail(
            "type_url",
            format!("the body is a {}", resource.resource.type_url),
        ));
    }
    let any = &resource.resource;
    let inner = match resource.type_url {
        CLUSTER_TYPE_URL => {
            let c: Cluster = check.decode("", any)?;
            check.cluster(&c)?;
            c.name
        }
        ENDPOINT_TYPE_URL => {
            let c: ClusterLoadAssignment = check.decode("", any)?;
            check.assignment("", &c)?;
            c.cluster_name
        }
        LISTENER_TYPE_URL => {
            let l: Listener = check.decode("", any)?;
            check.listener(&l)?;
            l.name
        }
        ROUTE_TYPE_URL => {
            let r: RouteConfiguration = check.decode("", any)?;
            check.route_config("", &r)?;
            r.name
        }
        _ => {
            let s: Secret = check.decode("", any)?;
            check.secret(&s)?;
            s.name
        }
    };
    if inner != resource.name {
        return Err(check.fail("name", format!("{inner:?} differs from the resource name")));
    }
    Ok(())
}

/// Where a check is: the resource, for messages. Field paths are proto field names joined by
/// dots, with `[i]` for list items and `["key"]` for map entries.
struct Check<'a> {
    kind: &'static str,
    name: &'a str,
}

fn join(at: &str, field: &str) -> String {
    if at.is_empty() {
        field.to_owned()
    } else {
        format!("{at}.{field}")
    }
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

impl Check<'_> {
    fn fail(&self, field: impl Into<String>, reason: impl Into<String>) -> Unsupported {
        Unsupported {
            kind: self.kind,
            name: self.name.to_owned(),
            field: field.into(),
            reason: reason.into(),
        }
    }

    fn unset<T: Default + PartialEq>(&self, at: &str, field: &str, value: &T) -> Result {
        if is_default(value) {
            Ok(())
        } else {
            Err(self.fail(join(at, field), "not supported by the bundled proxy"))
        }
    }

    fn required<'v, T>(&self, at: &str, field: &str, value: Option<&'v T>) -> Result<&'v T> {
        value.ok_or_else(|| self.fail(join(at, field), "is required by the bundled proxy"))
    }

    /// Decodes a typed config of type `M`, which the caller has matched on its type URL (or
    /// the resource itself, at the empty path).
    fn decode<M: Message + Default>(&self, at: &str, any: &Any) -> Result<M> {
        M::decode(any.value.as_slice()).map_err(|e| {
            self.fail(
                if at.is_empty() { "resource" } else { at },
                format!("cannot decode: {e}"),
            )
        })
    }

    /// A typed config that must be of type `M` with every field at its default.
    fn empty_config<M: Message + Default + PartialEq + Name>(&self, at: &str, any: &Any) -> Result {
        if any.type_url != M::type_url() {
            return Err(self.unknown_type(at, "", any));
        }
        let m: M = self.decode(at, any)?;
        if is_default(&m) {
            Ok(())
        } else {
            Err(self.fail(
                at,
                format!(
                    "{}: only the defaults are supported by the bundled proxy",
                    M::full_name()
                ),
            ))
        }
    }

    /// A typed config of a type outside the subset, named by `name` when it has one.
    fn unknown_type(&self, at: &str, name: &str, any: &Any) -> Unsupported {
        let type_name = any.type_url.rsplit('/').next().unwrap_or_default();
        let reason = if name.is_empty() {
            format!("{type_name} is not supported by the bundled proxy")
        } else {
            format!("{name} is not supported by the bundled proxy ({type_name})")
        };
        self.fail(at, reason)
    }

    // === clusters and endpoints ===

    fn cluster(&self, c: &Cluster) -> Result {
        only!(self, "", c => Cluster {
            transport_socket_matches, name, eds_cluster_config, connect_timeout, lb_policy,
            load_assignment, typed_extension_protocol_options, outlier_detection,
            transport_socket, cluster_discovery_type,
        } unset {
            transport_socket_matcher, alt_stat_name, stats_matcher,
            per_connection_buffer_limit_bytes, per_connection_buffer_high_watermark_timeout,
            health_checks, max_requests_per_connection, circuit_breakers,
            upstream_http_protocol_options, common_http_protocol_options, http_protocol_options,
            http2_protocol_options, dns_refresh_rate, dns_jitter, dns_failure_refresh_rate,
            respect_dns_ttl, dns_lookup_family, dns_resolvers, use_tcp_for_dns_lookups,
            dns_resolution_config, typed_dns_resolver_config, wait_for_warm_on_init,
            cleanup_interval, upstream_bind_config, lb_subset_config, common_lb_config, metadata,
            protocol_selection, upstream_connection_options,
            close_connections_on_host_health_failure, ignore_health_on_host_removal, filters,
            load_balancing_policy, lrs_server, lrs_report_endpoint_metrics, track_timeout_budgets,
            upstream_config, track_cluster_stats, preconnect_policy,
            connection_pool_per_downstream_connection, queuing_policies, lb_config,
        });
        let static_type = DiscoveryType::Static as i32;
        let eds_type = DiscoveryType::Eds as i32;
        match &c.cluster_discovery_type {
            None => self.static_cluster(c)?,
            Some(ClusterDiscoveryType::Type(t)) if *t == static_type => self.static_cluster(c)?,
            Some(ClusterDiscoveryType::Type(t)) if *t == eds_type => {
                let eds = self.required("", "eds_cluster_config", c.eds_cluster_config.as_ref())?;
                only!(self, "eds_cluster_config", eds => EdsClusterConfig {
                    eds_config, service_name,
                } unset {});
                self.ads("eds_cluster_config.eds_config", eds.eds_config.as_ref())?;
                if c.load_assignment.is_some() {
                    return Err(self.fail(
                        "load_assignment",
                        "an EDS cluster takes its endpoints from EDS only",
                    ));
                }
            }
            Some(ClusterDiscoveryType::Type(t)) => {
                let name = DiscoveryType::try_from(*t).map_or("unknown", |t| t.as_str_name());
                return Err(self.fail(
                    "type",
                    format!(
                        "{name} clusters are not supported by the bundled proxy (STATIC and EDS \
                         are)"
                    ),
                ));
            }
            Some(ClusterDiscoveryType::ClusterType(_)) => {
                return Err(self.fail(
                    "cluster_type",
                    "custom clusters are not supported by the bundled proxy",
                ));
            }
        }
        // The proxy balances every cluster the same way (power of two choices over latency);
        // these two policies only ask for a spread, which that gives.
        if c.lb_policy != LbPolicy::RoundRobin as i32
            && c.lb_policy != LbPolicy::LeastRequest as i32
        {
            let name = LbPolicy::try_from(c.lb_policy).map_or("unknown", |p| p.as_str_name());
            return Err(self.fail(
                "lb_policy",
                format!(
                    "{name} is not supported by the bundled proxy (ROUND_ROBIN and \
                     LEAST_REQUEST are)"
                ),
            ));
        }
        if let Some(socket) = &c.transport_socket {
            self.upstream_socket("transport_socket", socket)?;
        }
        for (i, m) in c.transport_socket_matches.iter().enumerate() {
            let at = format!("transport_socket_matches[{i}]");
            only!(self, &at, m => TransportSocketMatch {
                name, r#match, transport_socket,
            } unset {});
            if let Some(labels) = &m.r#match {
                self.string_struct(&join(&at, "match"), labels)?;
            }
            if let Some(socket) = &m.transport_socket {
                self.upstream_socket(&join(&at, "transport_socket"), socket)?;
            }
        }
        let mut options: Vec<_> = c.typed_extension_protocol_options.iter().collect();
        options.sort_by(|a, b| a.0.cmp(b.0));
        for (key, any) in options {
            let at = format!("typed_extension_protocol_options[{key:?}]");
            if any.type_url != HttpProtocolOptions::type_url() {
                return Err(self.unknown_type(&at, key, any));
            }
            self.http_protocol_options(&at, &self.decode(&at, any)?)?;
        }
        if let Some(outlier) = &c.outlier_detection {
            self.outlier_detection("outlier_detection", outlier)?;
        }
        Ok(())
    }

    fn static_cluster(&self, c: &Cluster) -> Result {
        if c.eds_cluster_config.is_some() {
            return Err(self.fail("eds_cluster_config", "is only for EDS clusters"));
        }
        let assignment = self.required("", "load_assignment", c.load_assignment.as_ref())?;
        self.assignment("load_assignment", assignment)
    }

    fn http_protocol_options(&self, at: &str, o: &HttpProtocolOptions) -> Result {
        only!(self, at, o => HttpProtocolOptions { upstream_protocol_options } unset {
            common_http_protocol_options, upstream_http_protocol_options, http_filters,
            header_validation_config, outlier_detection, request_mirror_policies, hash_policy,
            retry_policy,
        });
        match &o.upstream_protocol_options {
            None => Ok(()),
            Some(UpstreamProtocolOptions::ExplicitHttpConfig(explicit)) => {
                let at = join(at, "explicit_http_config");
                only!(self, &at, explicit => ExplicitHttpConfig { protocol_config } unset {});
                match &explicit.protocol_config {
                    Some(ProtocolConfig::HttpProtocolOptions(h1)) => {
                        self.defaults(&join(&at, "http_protocol_options"), h1)
                    }
                    Some(ProtocolConfig::Http2ProtocolOptions(h2)) => {
                        self.defaults(&join(&at, "http2_protocol_options"), h2)
                    }
                    Some(ProtocolConfig::Http3ProtocolOptions(_)) => Err(self.fail(
                        join(&at, "http3_protocol_options"),
                        "HTTP/3 is not supported by the bundled proxy",
                    )),
                    None => Err(self.fail(join(&at, "protocol_config"), "is required")),
                }
            }
            Some(_) => Err(self.fail(
                join(at, "upstream_protocol_options"),
                "only explicit_http_config is supported by the bundled proxy",
            )),
        }
    }

    /// A message that must hold only defaults.
    fn defaults<M: Default + PartialEq>(&self, at: &str, m: &M) -> Result {
        if is_default(m) {
            Ok(())
        } else {
            Err(self.fail(at, "only the defaults are supported by the bundled proxy"))
        }
    }

    fn outlier_detection(&self, at: &str, o: &OutlierDetection) -> Result {
        only!(self, at, o => OutlierDetection {
            consecutive_5xx, interval, base_ejection_time, max_ejection_percent,
            enforcing_consecutive_5xx, consecutive_gateway_failure,
            enforcing_consecutive_gateway_failure,
        } unset {
            enforcing_success_rate, success_rate_minimum_hosts, success_rate_request_volume,
            success_rate_stdev_factor, split_external_local_origin_errors,
            consecutive_local_origin_failure, enforcing_consecutive_local_origin_failure,
            enforcing_local_origin_success_rate, failure_percentage_threshold,
            enforcing_failure_percentage, enforcing_failure_percentage_local_origin,
            failure_percentage_minimum_hosts, failure_percentage_request_volume,
            max_ejection_time, max_ejection_time_jitter,
            successful_active_health_check_uneject_host, monitors, always_eject_one_host,
            detect_degraded_hosts,
        });
        // The proxy either enforces a detector or not; Envoy's percentages in between would
        // eject by chance.
        let all_or_nothing = |v: &Option<envoy_types::pb::google::protobuf::UInt32Value>| {
            v.as_ref().is_none_or(|v| v.value == 0 || v.value == 100)
        };
        if o.enforcing_consecutive_5xx
            .as_ref()
            .is_some_and(|v| v.value != 100)
        {
            return Err(self.fail(
                join(at, "enforcing_consecutive_5xx"),
                "only 100 (always) is supported by the bundled proxy",
            ));
        }
        if !all_or_nothing(&o.enforcing_consecutive_gateway_failure) {
            return Err(self.fail(
                join(at, "enforcing_consecutive_gateway_failure"),
                "only 0 and 100 are supported by the bundled proxy",
            ));
        }
        Ok(())
    }

    fn assignment(&self, at: &str, c: &ClusterLoadAssignment) -> Result {
        only!(self, at, c => ClusterLoadAssignment { cluster_name, endpoints } unset {
            named_endpoints, policy,
        });
        for (i, locality) in c.endpoints.iter().enumerate() {
            let at = join(at, &format!("endpoints[{i}]"));
            only!(self, &at, locality => LocalityLbEndpoints { lb_endpoints } unset {
                locality, metadata, load_balancing_weight, priority, proximity, lb_config,
            });
            for (j, e) in locality.lb_endpoints.iter().enumerate() {
                self.lb_endpoint(&join(&at, &format!("lb_endpoints[{j}]")), e)?;
            }
        }
        Ok(())
    }

    fn lb_endpoint(&self, at: &str, e: &LbEndpoint) -> Result {
        only!(self, at, e => LbEndpoint {
            health_status, metadata, load_balancing_weight, host_identifier,
        } unset {});
        if e.health_status != HealthStatus::Unknown as i32
            && e.health_status != HealthStatus::Healthy as i32
        {
            return Err(self.fail(
                join(at, "health_status"),
                "only UNKNOWN and HEALTHY are supported by the bundled proxy",
            ));
        }
        if let Some(metadata) = &e.metadata {
            self.endpoint_metadata(&join(at, "metadata"), metadata)?;
        }
        match &e.host_identifier {
            Some(lb_endpoint::HostIdentifier::Endpoint(endpoint)) => {
                let at = join(at, "endpoint");
                only!(self, &at, endpoint => Endpoint { address, observability_name } unset {
                    health_check_config, hostname, additional_addresses,
                });
                self.address(&join(&at, "address"), endpoint.address.as_ref())
            }
            Some(lb_endpoint::HostIdentifier::EndpointName(_)) => Err(self.fail(
                join(at, "endpoint_name"),
                "named endpoints are not supported by the bundled proxy",
            )),
            None => Err(self.fail(join(at, "endpoint"), "is required by the bundled proxy")),
        }
    }

    /// Only the transport socket match labels, as strings.
    fn endpoint_metadata(&self, at: &str, m: &Metadata) -> Result {
        only!(self, at, m => Metadata { filter_metadata } unset { typed_filter_metadata });
        let mut keys: Vec<_> = m.filter_metadata.iter().collect();
        keys.sort_by(|a, b| a.0.cmp(b.0));
        for (key, labels) in keys {
            let at = join(at, &format!("filter_metadata[{key:?}]"));
            if key != TRANSPORT_SOCKET_MATCH {
                return Err(self.fail(
                    at,
                    format!("only {TRANSPORT_SOCKET_MATCH} is supported by the bundled proxy"),
                ));
            }
            self.string_struct(&at, labels)?;
        }
        Ok(())
    }

    /// Transport socket match labels: string values only.
    fn string_struct(&self, at: &str, s: &Struct) -> Result {
        let mut keys: Vec<_> = s.fields.iter().collect();
        keys.sort_by(|a, b| a.0.cmp(b.0));
        for (key, v) in keys {
            if !matches!(v.kind, Some(value::Kind::StringValue(_))) {
                return Err(self.fail(
                    format!("{at}[{key:?}]"),
                    "only string values are supported by the bundled proxy",
                ));
            }
        }
        Ok(())
    }

    /// A TCP socket address with an IP literal and a port number.
    fn address(&self, at: &str, a: Option<&Address>) -> Result {
        let Some(a) = a else {
            return Err(self.fail(at, "is required by the bundled proxy"));
        };
        only!(self, at, a => Address { address } unset {});
        let Some(address::Address::SocketAddress(socket)) = &a.address else {
            return Err(self.fail(
                at,
                "only socket addresses are supported by the bundled proxy",
            ));
        };
        let at = join(at, "socket_address");
        only!(self, &at, socket => SocketAddress { address, port_specifier } unset {
            protocol, resolver_name, ipv4_compat, network_namespace_filepath,
        });
        if socket.address.parse::<IpAddr>().is_err() {
            return Err(self.fail(
                join(&at, "address"),
                format!(
                    "{:?} is not an IP address; the bundled proxy resolves no names",
                    socket.address
                ),
            ));
        }
        match socket.port_specifier {
            Some(socket_address::PortSpecifier::PortValue(p)) if p <= u32::from(u16::MAX) => Ok(()),
            Some(socket_address::PortSpecifier::PortValue(p)) => {
                Err(self.fail(join(&at, "port_value"), format!("{p} is not a port")))
            }
            Some(socket_address::PortSpecifier::NamedPort(_)) => Err(self.fail(
                join(&at, "named_port"),
                "named ports are not supported by the bundled proxy",
            )),
            None => Err(self.fail(join(&at, "port_value"), "is required by the bundled proxy")),
        }
    }

    // === transport sockets ===

    fn upstream_socket(&self, at: &str, socket: &TransportSocket) -> Result {
        let Some(any) = self.socket_config(at, socket)? else {
            return Ok(());
        };
        let at = join(at, "typed_config");
        if any.type_url != UpstreamTlsContext::type_url() {
            return Err(self.unknown_type(&at, &socket.name, any));
        }
        let tls: UpstreamTlsContext = self.decode(&at, any)?;
        only!(self, &at, &tls => UpstreamTlsContext { common_tls_context } unset {
            sni, auto_host_sni, auto_sni_san_validation, allow_renegotiation, max_session_keys,
            enforce_rsa_key_usage,
        });
        let common = self.required(&at, "common_tls_context", tls.common_tls_context.as_ref())?;
        self.common_tls(&join(&at, "common_tls_context"), common, Side::Client)
    }

    fn downstream_socket(&self, at: &str, socket: &TransportSocket) -> Result {
        let Some(any) = self.socket_config(at, socket)? else {
            return Ok(());
        };
        let at = join(at, "typed_config");
        if any.type_url != DownstreamTlsContext::type_url() {
            return Err(self.unknown_type(&at, &socket.name, any));
        }
        let tls: DownstreamTlsContext = self.decode(&at, any)?;
        only!(self, &at, &tls => DownstreamTlsContext {
            common_tls_context, require_client_certificate,
        } unset {
            require_sni, disable_stateful_session_resumption, session_timeout,
            ocsp_staple_policy, full_scan_certs_on_sni_mismatch, prefer_client_ciphers,
            session_ticket_keys_type,
        });
        let common = self.required(&at, "common_tls_context", tls.common_tls_context.as_ref())?;
        let side = Side::Server {
            requires_client_certificate: tls.require_client_certificate.is_some_and(|b| b.value),
        };
        self.common_tls(&join(&at, "common_tls_context"), common, side)
    }

    /// The typed config of a transport socket: `None` for a raw buffer (plaintext).
    fn socket_config<'s>(&self, at: &str, socket: &'s TransportSocket) -> Result<Option<&'s Any>> {
        only!(self, at, socket => TransportSocket { name, config_type } unset {});
        let Some(transport_socket::ConfigType::TypedConfig(any)) = &socket.config_type else {
            return Err(self.fail(join(at, "typed_config"), "is required by the bundled proxy"));
        };
        if any.type_url == RawBuffer::type_url() {
            self.empty_config::<RawBuffer>(&join(at, "typed_config"), any)?;
            return Ok(None);
        }
        Ok(Some(any))
    }

    fn common_tls(&self, at: &str, c: &CommonTlsContext, side: Side) -> Result {
        only!(self, at, c => CommonTlsContext {
            tls_params, tls_certificate_sds_secret_configs, alpn_protocols,
            validation_context_type,
        } unset {
            tls_certificates, tls_certificate_provider_instance, custom_tls_certificate_selector,
            tls_certificate_certificate_provider, tls_certificate_certificate_provider_instance,
            custom_handshaker, key_log,
        });
        if let Some(params) = &c.tls_params {
            self.tls_params(&join(at, "tls_params"), params)?;
        }
        match c.tls_certificate_sds_secret_configs.as_slice() {
            [sds] => self.sds(&join(at, "tls_certificate_sds_secret_configs[0]"), sds)?,
            _ => {
                return Err(self.fail(
                    join(at, "tls_certificate_sds_secret_configs"),
                    "the bundled proxy needs exactly one certificate, over SDS",
                ));
            }
        }
        match &c.validation_context_type {
            Some(ValidationContextType::ValidationContextSdsSecretConfig(sds)) => {
                self.sds(&join(at, "validation_context_sds_secret_config"), sds)
            }
            Some(ValidationContextType::CombinedValidationContext(combined)) => {
                let at = join(at, "combined_validation_context");
                only!(self, &at, combined => CombinedCertificateValidationContext {
                    default_validation_context, validation_context_sds_secret_config,
                } unset {
                    validation_context_certificate_provider,
                    validation_context_certificate_provider_instance,
                });
                let sds = self.required(
                    &at,
                    "validation_context_sds_secret_config",
                    combined.validation_context_sds_secret_config.as_ref(),
                )?;
                self.sds(&join(&at, "validation_context_sds_secret_config"), sds)?;
                match &combined.default_validation_context {
                    Some(ctx) => {
                        self.san_checks(&join(&at, "default_validation_context"), ctx, side)
                    }
                    None => Ok(()),
                }
            }
            Some(ValidationContextType::ValidationContext(_)) => Err(self.fail(
                join(at, "validation_context"),
                "the bundled proxy takes trust bundles over SDS only",
            )),
            Some(_) => Err(self.fail(
                join(at, "validation_context_type"),
                "certificate providers are not supported by the bundled proxy",
            )),
            None => match side {
                Side::Client
                | Side::Server {
                    requires_client_certificate: true,
                } => Err(self.fail(
                    join(at, "validation_context_sds_secret_config"),
                    "is required by the bundled proxy to verify the peer",
                )),
                Side::Server {
                    requires_client_certificate: false,
                } => Ok(()),
            },
        }
    }

    fn tls_params(&self, at: &str, p: &TlsParameters) -> Result {
        only!(self, at, p => TlsParameters {
            tls_minimum_protocol_version, tls_maximum_protocol_version,
        } unset {
            cipher_suites, ecdh_curves, signature_algorithms, compliance_policies,
        });
        let version = |v: i32| TlsProtocol::try_from(v).unwrap_or(TlsProtocol::TlSv10);
        // rustls speaks TLS 1.2 and 1.3 only, and cannot be capped below 1.3.
        if !matches!(
            version(p.tls_minimum_protocol_version),
            TlsProtocol::TlsAuto | TlsProtocol::TlSv12 | TlsProtocol::TlSv13
        ) {
            return Err(self.fail(
                join(at, "tls_minimum_protocol_version"),
                "only TLSv1_2 and TLSv1_3 are supported by the bundled proxy",
            ));
        }
        if !matches!(
            version(p.tls_maximum_protocol_version),
            TlsProtocol::TlsAuto | TlsProtocol::TlSv13
        ) {
            return Err(self.fail(
                join(at, "tls_maximum_protocol_version"),
                "only TLSv1_3 is supported by the bundled proxy",
            ));
        }
        Ok(())
    }

    /// The inline part of a combined validation context: exact URI SAN checks of a server.
    fn san_checks(&self, at: &str, v: &CertificateValidationContext, side: Side) -> Result {
        only!(self, at, v => CertificateValidationContext { match_typed_subject_alt_names } unset {
            trusted_ca, ca_certificate_provider_instance, system_root_certs, watched_directory,
            verify_certificate_spki, verify_certificate_hash, match_subject_alt_names,
            require_signed_certificate_timestamp, crl, allow_expired_certificate,
            trust_chain_verification, custom_validator_config, only_verify_leaf_cert_crl,
            max_verify_depth, suppress_client_ca_list,
        });
        if matches!(side, Side::Server { .. }) && !v.match_typed_subject_alt_names.is_empty() {
            return Err(self.fail(
                join(at, "match_typed_subject_alt_names"),
                "the bundled proxy checks client certificates by RBAC, not by SAN matchers",
            ));
        }
        for (i, san) in v.match_typed_subject_alt_names.iter().enumerate() {
            let at = join(at, &format!("match_typed_subject_alt_names[{i}]"));
            only!(self, &at, san => SubjectAltNameMatcher { san_type, matcher } unset { oid });
            if san.san_type != SanType::Uri as i32 {
                return Err(self.fail(
                    join(&at, "san_type"),
                    "only URI SANs are supported by the bundled proxy",
                ));
            }
            let exact = san.matcher.as_ref().is_some_and(|m| {
                !m.ignore_case
                    && matches!(
                        m.match_pattern,
                        Some(string_matcher::MatchPattern::Exact(_))
                    )
            });
            if !exact {
                return Err(self.fail(
                    join(&at, "matcher"),
                    "only exact, case-sensitive SAN matchers are supported by the bundled proxy",
                ));
            }
        }
        Ok(())
    }

    fn sds(&self, at: &str, sds: &SdsSecretConfig) -> Result {
        only!(self, at, sds => SdsSecretConfig { name, sds_config } unset {});
        if sds.name.is_empty() {
            return Err(self.fail(join(at, "name"), "must not be empty"));
        }
        self.ads(&join(at, "sds_config"), sds.sds_config.as_ref())
    }

    /// A config source pointing back at the ADS stream.
    fn ads(&self, at: &str, source: Option<&ConfigSource>) -> Result {
        let Some(source) = source else {
            return Err(self.fail(at, "is required by the bundled proxy (ads)"));
        };
        only!(self, at, source => ConfigSource {
            resource_api_version, config_source_specifier,
        } unset {
            authorities, initial_fetch_timeout,
        });
        if source.resource_api_version != ApiVersion::Auto as i32
            && source.resource_api_version != ApiVersion::V3 as i32
        {
            return Err(self.fail(join(at, "resource_api_version"), "only V3 is supported"));
        }
        match source.config_source_specifier {
            Some(
                config_source::ConfigSourceSpecifier::Ads(_)
                | config_source::ConfigSourceSpecifier::Self_(_),
            ) => Ok(()),
            _ => Err(self.fail(at, "only ADS is supported by the bundled proxy")),
        }
    }

    fn secret(&self, s: &Secret) -> Result {
        only!(self, "", s => Secret { name, r#type } unset {});
        match &s.r#type {
            Some(secret::Type::TlsCertificate(t)) => {
                let at = "tls_certificate";
                only!(self, at, t => TlsCertificate { certificate_chain, private_key } unset {
                    pkcs12, watched_directory, private_key_provider, password, ocsp_staple,
                    signed_certificate_timestamp, tls_params,
                });
                self.inline(&join(at, "certificate_chain"), t.certificate_chain.as_ref())?;
                self.inline(&join(at, "private_key"), t.private_key.as_ref())
            }
            Some(secret::Type::ValidationContext(v)) => {
                let at = "validation_context";
                only!(self, at, v => CertificateValidationContext { trusted_ca } unset {
                    ca_certificate_provider_instance, system_root_certs, watched_directory,
                    verify_certificate_spki, verify_certificate_hash, match_typed_subject_alt_names,
                    match_subject_alt_names, require_signed_certificate_timestamp, crl,
                    allow_expired_certificate, trust_chain_verification, custom_validator_config,
                    only_verify_leaf_cert_crl, max_verify_depth, suppress_client_ca_list,
                });
                self.inline(&join(at, "trusted_ca"), v.trusted_ca.as_ref())
            }
            _ => Err(self.fail(
                "type",
                "only tls_certificate and validation_context secrets are supported by the \
                 bundled proxy",
            )),
        }
    }

    /// PEM given inline: the proxy reads no files.
    fn inline(&self, at: &str, d: Option<&DataSource>) -> Result {
        let Some(d) = d else {
            return Err(self.fail(at, "is required by the bundled proxy"));
        };
        only!(self, at, d => DataSource { specifier } unset { watched_directory });
        match d.specifier {
            Some(
                data_source::Specifier::InlineString(_) | data_source::Specifier::InlineBytes(_),
            ) => Ok(()),
            _ => Err(self.fail(at, "only inline data is supported by the bundled proxy")),
        }
    }

    // === listeners ===

    fn listener(&self, l: &Listener) -> Result {
        only!(self, "", l => Listener {
            name, address, stat_prefix, filter_chains, listener_filters,
            continue_on_listener_filters_timeout, traffic_direction,
        } unset {
            additional_addresses, stats_matcher, fcds_config, filter_chain_matcher,
            use_original_dst, default_filter_chain, per_connection_buffer_limit_bytes,
            per_connection_buffer_high_watermark_timeout, metadata, deprecated_v1, drain_type,
            listener_filters_timeout, transparent, freebind, socket_options,
            tcp_fast_open_queue_length, udp_listener_config, api_listener,
            connection_balance_config, reuse_port, enable_reuse_port, access_log,
            tcp_backlog_size, max_connections_to_accept_per_socket_event, bind_to_port,
            enable_mptcp, ignore_global_conn_limit, bypass_overload_manager, tcp_keepalive,
            listener_specifier,
        });
        self.address("address", l.address.as_ref())?;
        for (i, f) in l.listener_filters.iter().enumerate() {
            self.listener_filter(&format!("listener_filters[{i}]"), f)?;
        }
        if l.filter_chains.is_empty() {
            return Err(self.fail("filter_chains", "the bundled proxy needs at least one"));
        }
        for (i, chain) in l.filter_chains.iter().enumerate() {
            self.filter_chain(&format!("filter_chains[{i}]"), chain)?;
        }
        Ok(())
    }

    fn listener_filter(&self, at: &str, f: &ListenerFilter) -> Result {
        only!(self, at, f => ListenerFilter { name, config_type } unset { filter_disabled });
        match &f.config_type {
            Some(listener_filter::ConfigType::TypedConfig(any))
                if any.type_url == TlsInspector::type_url() =>
            {
                self.empty_config::<TlsInspector>(&join(at, "typed_config"), any)
            }
            Some(listener_filter::ConfigType::TypedConfig(any)) => {
                Err(self.unknown_type(at, &f.name, any))
            }
            Some(listener_filter::ConfigType::ConfigDiscovery(_)) => Err(self.fail(
                join(at, "config_discovery"),
                "filter config discovery is not supported by the bundled proxy",
            )),
            None => Err(self.fail(join(at, "typed_config"), "is required by the bundled proxy")),
        }
    }

    fn filter_chain(&self, at: &str, chain: &FilterChain) -> Result {
        only!(self, at, chain => FilterChain {
            filter_chain_match, filters, transport_socket, name,
        } unset {
            use_proxy_proto, metadata, transport_socket_connect_timeout,
        });
        if let Some(m) = &chain.filter_chain_match {
            let at = join(at, "filter_chain_match");
            only!(self, &at, m => FilterChainMatch { transport_protocol } unset {
                destination_port, prefix_ranges, address_suffix, suffix_len,
                direct_source_prefix_ranges, source_type, source_prefix_ranges, source_ports,
                server_names, application_protocols,
            });
            if !matches!(m.transport_protocol.as_str(), "" | "tls" | "raw_buffer") {
                return Err(self.fail(
                    join(&at, "transport_protocol"),
                    "only tls and raw_buffer are supported by the bundled proxy",
                ));
            }
        }
        if let Some(socket) = &chain.transport_socket {
            self.downstream_socket(&join(at, "transport_socket"), socket)?;
        }
        self.network_filters(at, &chain.filters)
    }

    /// One terminal filter (HCM, TCP proxy or direct response), with at most a network RBAC in
    /// front of a TCP proxy: the shapes the proxy's filter chains have. Every filter is
    /// checked on its own first, so an unknown one is reported as such.
    fn network_filters(&self, at: &str, filters: &[Filter]) -> Result {
        let mut kinds = Vec::with_capacity(filters.len());
        for (i, f) in filters.iter().enumerate() {
            kinds.push(self.network_filter(&join(at, &format!("filters[{i}]")), f)?);
        }
        match kinds.as_slice() {
            [NetworkFilter::Http | NetworkFilter::TcpProxy | NetworkFilter::Close]
            | [NetworkFilter::Rbac, NetworkFilter::TcpProxy] => Ok(()),
            [] => Err(self.fail(
                join(at, "filters"),
                "the bundled proxy needs a terminal filter (http_connection_manager, tcp_proxy \
                 or direct_response)",
            )),
            _ => {
                let last = kinds.len() - 1;
                let misplaced = kinds[..last].iter().position(|k| *k != NetworkFilter::Rbac);
                let (i, reason) = match misplaced {
                    Some(i) => (i, "a terminal filter must be the last of its chain"),
                    None if kinds[last] == NetworkFilter::Rbac => {
                        (last, "network rbac must be followed by tcp_proxy")
                    }
                    None => (
                        0,
                        "the bundled proxy supports one network rbac, right before tcp_proxy",
                    ),
                };
                Err(self.fail(join(at, &format!("filters[{i}]")), reason))
            }
        }
    }

    fn network_filter(&self, at: &str, f: &Filter) -> Result<NetworkFilter> {
        only!(self, at, f => Filter { name, config_type } unset {});
        let any = match &f.config_type {
            Some(filter::ConfigType::TypedConfig(any)) => any,
            Some(filter::ConfigType::ConfigDiscovery(_)) => {
                return Err(self.fail(
                    join(at, "config_discovery"),
                    "filter config discovery is not supported by the bundled proxy",
                ));
            }
            None => {
                return Err(self.fail(join(at, "typed_config"), "is required by the bundled proxy"));
            }
        };
        let config = join(at, "typed_config");
        if any.type_url == HttpConnectionManager::type_url() {
            self.hcm(&config, &self.decode(&config, any)?)?;
            Ok(NetworkFilter::Http)
        } else if any.type_url == TcpProxy::type_url() {
            self.tcp_proxy(&config, &self.decode(&config, any)?)?;
            Ok(NetworkFilter::TcpProxy)
        } else if any.type_url == NetworkRbac::type_url() {
            let rbac: NetworkRbac = self.decode(&config, any)?;
            only!(self, &config, &rbac => NetworkRbac { rules, stat_prefix } unset {
                matcher, shadow_rules, shadow_matcher, shadow_rules_stat_prefix, enforcement_type,
                delay_deny,
            });
            if let Some(rules) = &rbac.rules {
                self.rules(&join(&config, "rules"), rules)?;
            }
            Ok(NetworkFilter::Rbac)
        } else if any.type_url == DirectResponse::type_url() {
            let direct: DirectResponse = self.decode(&config, any)?;
            only!(self, &config, &direct => DirectResponse {} unset { response });
            Ok(NetworkFilter::Close)
        } else {
            Err(self.unknown_type(at, &f.name, any))
        }
    }

    fn tcp_proxy(&self, at: &str, t: &TcpProxy) -> Result {
        only!(self, at, t => TcpProxy { stat_prefix, cluster_specifier } unset {
            on_demand, metadata_match, idle_timeout, downstream_idle_timeout,
            upstream_idle_timeout, access_log, max_connect_attempts, backoff_options, hash_policy,
            tunneling_config, max_downstream_connection_duration,
            max_downstream_connection_duration_jitter_percentage, access_log_flush_interval,
            flush_access_log_on_connected, access_log_options, proxy_protocol_tlvs,
            proxy_protocol_tlv_merge_policy, upstream_connect_mode, max_early_data_bytes,
            check_drain_close,
        });
        match &t.cluster_specifier {
            Some(tcp_proxy::ClusterSpecifier::Cluster(_)) => Ok(()),
            Some(tcp_proxy::ClusterSpecifier::WeightedClusters(w)) => {
                let at = join(at, "weighted_clusters");
                only!(self, &at, w => tcp_proxy::WeightedCluster { clusters } unset {});
                for (i, c) in w.clusters.iter().enumerate() {
                    let at = join(&at, &format!("clusters[{i}]"));
                    only!(self, &at, c => tcp_proxy::weighted_cluster::ClusterWeight {
                        name, weight,
                    } unset { metadata_match });
                }
                Ok(())
            }
            None => Err(self.fail(join(at, "cluster"), "is required by the bundled proxy")),
        }
    }

    fn hcm(&self, at: &str, h: &HttpConnectionManager) -> Result {
        only!(self, at, h => HttpConnectionManager {
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
        if h.codec_type != CodecType::Auto as i32 {
            return Err(self.fail(
                join(at, "codec_type"),
                "only AUTO is supported by the bundled proxy",
            ));
        }
        // Route and RBAC path matches must see `/a/../b` as `/b`; the proxy normalizes paths
        // and offers no way not to.
        if h.normalize_path.is_some_and(|b| !b.value) {
            return Err(self.fail(
                join(at, "normalize_path"),
                "the bundled proxy cannot turn path normalization off",
            ));
        }
        match &h.route_specifier {
            Some(RouteSpecifier::Rds(rds)) => {
                let at = join(at, "rds");
                only!(self, &at, rds => Rds { config_source, route_config_name } unset {});
                self.ads(&join(&at, "config_source"), rds.config_source.as_ref())?;
                if rds.route_config_name.is_empty() {
                    return Err(self.fail(join(&at, "route_config_name"), "must not be empty"));
                }
            }
            Some(RouteSpecifier::RouteConfig(config)) => {
                self.route_config(&join(at, "route_config"), config)?;
            }
            Some(RouteSpecifier::ScopedRoutes(_)) => {
                return Err(self.fail(
                    join(at, "scoped_routes"),
                    "scoped routes are not supported by the bundled proxy",
                ));
            }
            None => {
                return Err(self.fail(join(at, "rds"), "rds or route_config is required"));
            }
        }
        if let Some(reply) = &h.local_reply_config {
            self.local_reply(&join(at, "local_reply_config"), reply)?;
        }
        self.http_filters(at, &h.http_filters)
    }

    /// The proxy's only local reply: the body (and status) of the 403s RBAC answers.
    fn local_reply(&self, at: &str, r: &LocalReplyConfig) -> Result {
        only!(self, at, r => LocalReplyConfig { mappers } unset { body_format });
        let [mapper] = r.mappers.as_slice() else {
            return Err(self.fail(
                join(at, "mappers"),
                "the bundled proxy supports one mapper, for denied (403) replies",
            ));
        };
        let at = join(at, "mappers[0]");
        only!(self, &at, mapper => ResponseMapper { filter, status_code, body } unset {
            body_format_override, headers_to_add,
        });
        let filter = self.required(&at, "filter", mapper.filter.as_ref())?;
        let status = match &filter.filter_specifier {
            Some(access_log_filter::FilterSpecifier::StatusCodeFilter(StatusCodeFilter {
                comparison:
                    Some(ComparisonFilter {
                        op,
                        value: Some(value),
                    }),
            })) if *op == comparison_filter::Op::Eq as i32 => Some(value.default_value),
            _ => None,
        };
        if status != Some(403) {
            return Err(self.fail(
                join(&at, "filter"),
                "the bundled proxy only maps replies with status code equal to 403",
            ));
        }
        match &mapper.body {
            Some(body) => self.inline(&join(&at, "body"), Some(body)),
            None => Ok(()),
        }
    }

    /// RBAC (at most once), then the router, last.
    fn http_filters(&self, at: &str, filters: &[HttpFilter]) -> Result {
        let mut seen_rbac = false;
        for (i, f) in filters.iter().enumerate() {
            let at = join(at, &format!("http_filters[{i}]"));
            only!(self, &at, f => HttpFilter { name, config_type } unset { is_optional, disabled });
            let any = match &f.config_type {
                Some(http_filter::ConfigType::TypedConfig(any)) => any,
                Some(http_filter::ConfigType::ConfigDiscovery(_)) => {
                    return Err(self.fail(
                        join(&at, "config_discovery"),
                        "filter config discovery is not supported by the bundled proxy",
                    ));
                }
                None => {
                    return Err(self.fail(
                        join(&at, "typed_config"),
                        "is required by the bundled proxy",
                    ));
                }
            };
            let last = i + 1 == filters.len();
            let config = join(&at, "typed_config");
            if any.type_url == Router::type_url() {
                self.empty_config::<Router>(&config, any)?;
                if !last {
                    return Err(self.fail(at, "the router must be the last HTTP filter"));
                }
            } else if any.type_url == HttpRbac::type_url() {
                if seen_rbac {
                    return Err(self.fail(at, "the bundled proxy supports one HTTP rbac filter"));
                }
                seen_rbac = true;
                if f.name != HTTP_RBAC {
                    return Err(self.fail(
                        join(&at, "name"),
                        format!("the bundled proxy keys per-route RBAC by the name {HTTP_RBAC}"),
                    ));
                }
                self.http_rbac(&config, &self.decode(&config, any)?)?;
                if last {
                    return Err(self.fail(at, "the router must be the last HTTP filter"));
                }
            } else {
                return Err(self.unknown_type(&at, &f.name, any));
            }
        }
        if filters.is_empty() {
            return Err(self.fail(
                join(at, "http_filters"),
                "the bundled proxy needs envoy.filters.http.router",
            ));
        }
        Ok(())
    }

    // === authorization ===

    fn http_rbac(&self, at: &str, r: &HttpRbac) -> Result {
        only!(self, at, r => HttpRbac { rules, rules_stat_prefix, track_per_rule_stats } unset {
            matcher, shadow_rules, shadow_matcher, shadow_rules_stat_prefix,
        });
        match &r.rules {
            Some(rules) => self.rules(&join(at, "rules"), rules),
            None => Ok(()),
        }
    }

    fn rules(&self, at: &str, r: &Rules) -> Result {
        only!(self, at, r => Rules { action, policies } unset { audit_logging_options });
        if r.action != Action::Allow as i32 {
            let name = Action::try_from(r.action).map_or("unknown", |a| a.as_str_name());
            return Err(self.fail(
                join(at, "action"),
                format!("{name} is not supported by the bundled proxy (only ALLOW is)"),
            ));
        }
        let mut policies: Vec<_> = r.policies.iter().collect();
        policies.sort_by(|a, b| a.0.cmp(b.0));
        for (key, policy) in policies {
            self.policy(&join(at, &format!("policies[{key:?}]")), policy)?;
        }
        Ok(())
    }

    fn policy(&self, at: &str, p: &Policy) -> Result {
        only!(self, at, p => Policy { permissions, principals } unset {
            condition, checked_condition, cel_config,
        });
        for (i, permission) in p.permissions.iter().enumerate() {
            self.permission(&join(at, &format!("permissions[{i}]")), permission)?;
        }
        for (i, principal) in p.principals.iter().enumerate() {
            self.principal(&join(at, &format!("principals[{i}]")), principal)?;
        }
        Ok(())
    }

    fn permission(&self, at: &str, p: &Permission) -> Result {
        only!(self, at, p => Permission { rule } unset {});
        match &p.rule {
            Some(permission::Rule::Any(true)) => Ok(()),
            Some(permission::Rule::AndRules(set)) | Some(permission::Rule::OrRules(set)) => {
                let field = if matches!(p.rule, Some(permission::Rule::AndRules(_))) {
                    "and_rules"
                } else {
                    "or_rules"
                };
                let at = join(at, field);
                only!(self, &at, set => permission::Set { rules } unset {});
                for (i, rule) in set.rules.iter().enumerate() {
                    self.permission(&join(&at, &format!("rules[{i}]")), rule)?;
                }
                Ok(())
            }
            Some(permission::Rule::NotRule(rule)) => self.permission(&join(at, "not_rule"), rule),
            Some(permission::Rule::UrlPath(path)) => {
                let at = join(at, "url_path");
                only!(self, &at, path => PathMatcher { rule } unset {});
                match &path.rule {
                    Some(path_matcher::Rule::Path(m)) => self.string_matcher(&join(&at, "path"), m),
                    None => Err(self.fail(join(&at, "path"), "is required")),
                }
            }
            Some(permission::Rule::Header(h)) => self.header_matcher(&join(at, "header"), h),
            Some(permission::Rule::DestinationPort(port)) if *port <= u32::from(u16::MAX) => Ok(()),
            _ => Err(self.fail(
                at,
                "the bundled proxy supports the permissions any, and_rules, or_rules, \
                 not_rule, url_path, header and destination_port",
            )),
        }
    }

    fn principal(&self, at: &str, p: &Principal) -> Result {
        only!(self, at, p => Principal { identifier } unset {});
        match &p.identifier {
            Some(principal::Identifier::Any(true)) => Ok(()),
            Some(principal::Identifier::AndIds(set)) | Some(principal::Identifier::OrIds(set)) => {
                let field = if matches!(p.identifier, Some(principal::Identifier::AndIds(_))) {
                    "and_ids"
                } else {
                    "or_ids"
                };
                let at = join(at, field);
                only!(self, &at, set => principal::Set { ids } unset {});
                for (i, id) in set.ids.iter().enumerate() {
                    self.principal(&join(&at, &format!("ids[{i}]")), id)?;
                }
                Ok(())
            }
            Some(principal::Identifier::NotId(id)) => self.principal(&join(at, "not_id"), id),
            Some(principal::Identifier::Authenticated(a)) => {
                let at = join(at, "authenticated");
                only!(self, &at, a => principal::Authenticated { principal_name } unset {});
                let m = self.required(&at, "principal_name", a.principal_name.as_ref())?;
                self.string_matcher(&join(&at, "principal_name"), m)
            }
            _ => Err(self.fail(
                at,
                "the bundled proxy supports the principals any, and_ids, or_ids, not_id and \
                 authenticated",
            )),
        }
    }

    // === matchers ===

    fn string_matcher(&self, at: &str, m: &StringMatcher) -> Result {
        only!(self, at, m => StringMatcher { match_pattern } unset { ignore_case });
        match &m.match_pattern {
            Some(
                string_matcher::MatchPattern::Exact(_)
                | string_matcher::MatchPattern::Prefix(_)
                | string_matcher::MatchPattern::Suffix(_)
                | string_matcher::MatchPattern::Contains(_),
            ) => Ok(()),
            Some(string_matcher::MatchPattern::SafeRegex(r)) => {
                self.regex(&join(at, "safe_regex"), r)
            }
            Some(string_matcher::MatchPattern::Custom(_)) => Err(self.fail(
                join(at, "custom"),
                "custom matchers are not supported by the bundled proxy",
            )),
            None => Err(self.fail(at, "a string matcher needs a pattern")),
        }
    }

    fn regex(&self, at: &str, r: &RegexMatcher) -> Result {
        only!(self, at, r => RegexMatcher { regex } unset { engine_type });
        Ok(())
    }

    fn header_matcher(&self, at: &str, h: &HeaderMatcher) -> Result {
        only!(self, at, h => HeaderMatcher { name, invert_match, header_match_specifier } unset {
            treat_missing_header_as_empty,
        });
        match &h.header_match_specifier {
            Some(header_matcher::HeaderMatchSpecifier::StringMatch(m)) => {
                self.string_matcher(&join(at, "string_match"), m)
            }
            Some(header_matcher::HeaderMatchSpecifier::PresentMatch(true)) => Ok(()),
            Some(header_matcher::HeaderMatchSpecifier::PresentMatch(false)) => Err(self.fail(
                join(at, "present_match"),
                "only true is supported by the bundled proxy (use invert_match for absence)",
            )),
            _ => Err(self.fail(
                at,
                "the bundled proxy supports string_match and present_match header matchers",
            )),
        }
    }

    // === routes ===

    fn route_config(&self, at: &str, r: &RouteConfiguration) -> Result {
        only!(self, at, r => RouteConfiguration { name, virtual_hosts, validate_clusters } unset {
            vhds, internal_only_headers, response_headers_to_add, response_headers_to_remove,
            request_headers_to_add, request_headers_to_remove, most_specific_header_mutations_wins,
            max_direct_response_body_size_bytes, cluster_specifier_plugins,
            request_mirror_policies, ignore_port_in_host_matching, vhost_header,
            ignore_path_parameters_in_path_matching, typed_per_filter_config, metadata,
            route_specifiers,
        });
        // Envoy would reject the whole configuration for a missing cluster; the proxy answers
        // 503 on such a route instead.
        if r.validate_clusters.is_some_and(|b| b.value) {
            return Err(self.fail(
                join(at, "validate_clusters"),
                "the bundled proxy does not validate clusters (a route to a missing one \
                 answers 503)",
            ));
        }
        for (i, vhost) in r.virtual_hosts.iter().enumerate() {
            self.virtual_host(&join(at, &format!("virtual_hosts[{i}]")), vhost)?;
        }
        Ok(())
    }

    fn virtual_host(&self, at: &str, v: &VirtualHost) -> Result {
        only!(self, at, v => VirtualHost { name, domains, routes, typed_per_filter_config } unset {
            matcher, require_tls, virtual_clusters, rate_limits, request_headers_to_add,
            request_headers_to_remove, response_headers_to_add, response_headers_to_remove, cors,
            include_request_attempt_count, include_attempt_count_in_response, retry_policy,
            retry_policy_typed_config, hedge_policy, include_is_timeout_retry_header,
            per_request_buffer_limit_bytes, request_body_buffer_limit, request_mirror_policies,
            metadata, route_specifiers,
        });
        self.per_filter_config(at, &v.typed_per_filter_config)?;
        for (i, route) in v.routes.iter().enumerate() {
            self.route(&join(at, &format!("routes[{i}]")), route)?;
        }
        Ok(())
    }

    /// Per-route filter configs: only the HTTP RBAC override.
    fn per_filter_config(
        &self,
        at: &str,
        configs: &std::collections::HashMap<String, Any>,
    ) -> Result {
        let mut configs: Vec<_> = configs.iter().collect();
        configs.sort_by(|a, b| a.0.cmp(b.0));
        for (key, any) in configs {
            let at = join(at, &format!("typed_per_filter_config[{key:?}]"));
            if any.type_url != RbacPerRoute::type_url() {
                return Err(self.unknown_type(&at, key, any));
            }
            if key != HTTP_RBAC {
                return Err(self.fail(
                    at,
                    format!("the bundled proxy takes per-route RBAC under {HTTP_RBAC} only"),
                ));
            }
            let per_route: RbacPerRoute = self.decode(&at, any)?;
            only!(self, &at, &per_route => RbacPerRoute { rbac } unset {});
            if let Some(rbac) = &per_route.rbac {
                self.http_rbac(&join(&at, "rbac"), rbac)?;
            }
        }
        Ok(())
    }

    fn route(&self, at: &str, r: &Route) -> Result {
        only!(self, at, r => Route {
            name, r#match, typed_per_filter_config, stat_prefix, action,
        } unset {
            metadata, decorator, request_headers_to_add, request_headers_to_remove,
            response_headers_to_add, response_headers_to_remove, tracing,
            per_request_buffer_limit_bytes, request_body_buffer_limit, route_specifiers,
        });
        let m = self.required(at, "match", r.r#match.as_ref())?;
        self.route_match(&join(at, "match"), m)?;
        self.per_filter_config(at, &r.typed_per_filter_config)?;
        match &r.action {
            Some(route::Action::Route(action)) => self.route_action(&join(at, "route"), action),
            _ => Err(self.fail(
                at,
                "the bundled proxy supports route actions only (no redirect, direct_response \
                 or filter_action)",
            )),
        }
    }

    fn route_match(&self, at: &str, m: &RouteMatch) -> Result {
        only!(self, at, m => RouteMatch { case_sensitive, headers, path_specifier } unset {
            runtime_fraction, query_parameters, cookies, grpc, tls_context, dynamic_metadata,
            filter_state,
        });
        if m.case_sensitive.is_some_and(|b| !b.value) {
            return Err(self.fail(
                join(at, "case_sensitive"),
                "the bundled proxy matches paths case-sensitively only",
            ));
        }
        match &m.path_specifier {
            Some(route_match::PathSpecifier::Prefix(_) | route_match::PathSpecifier::Path(_)) => {}
            Some(route_match::PathSpecifier::SafeRegex(r)) => {
                self.regex(&join(at, "safe_regex"), r)?
            }
            Some(_) => {
                return Err(self.fail(
                    at,
                    "the bundled proxy supports prefix, path and safe_regex path matches",
                ));
            }
            None => return Err(self.fail(join(at, "prefix"), "a path match is required")),
        }
        for (i, h) in m.headers.iter().enumerate() {
            self.header_matcher(&join(at, &format!("headers[{i}]")), h)?;
        }
        Ok(())
    }

    fn route_action(&self, at: &str, a: &RouteAction) -> Result {
        only!(self, at, a => RouteAction { timeout, retry_policy, cluster_specifier } unset {
            cluster_not_found_response_code, metadata_match, prefix_rewrite, regex_rewrite,
            path_rewrite_policy, path_rewrite, append_x_forwarded_host, idle_timeout,
            flush_timeout, early_data_policy, retry_policy_typed_config, request_mirror_policies,
            priority, rate_limits, include_vh_rate_limits, hash_policy, cors, max_grpc_timeout,
            grpc_timeout_offset, upgrade_configs, internal_redirect_policy,
            internal_redirect_action, max_internal_redirects, hedge_policy, max_stream_duration,
            host_rewrite_specifier,
        });
        match &a.cluster_specifier {
            Some(route_action::ClusterSpecifier::Cluster(_)) => {}
            Some(route_action::ClusterSpecifier::WeightedClusters(w)) => {
                self.weighted_clusters(&join(at, "weighted_clusters"), w)?;
            }
            _ => {
                return Err(self.fail(
                    at,
                    "the bundled proxy supports cluster and weighted_clusters route targets",
                ));
            }
        }
        match &a.retry_policy {
            Some(policy) => self.retry_policy(&join(at, "retry_policy"), policy),
            None => Ok(()),
        }
    }

    fn weighted_clusters(&self, at: &str, w: &WeightedCluster) -> Result {
        only!(self, at, w => WeightedCluster { clusters } unset {
            total_weight, runtime_key_prefix, random_value_specifier,
        });
        for (i, c) in w.clusters.iter().enumerate() {
            let at = join(at, &format!("clusters[{i}]"));
            only!(self, &at, c => weighted_cluster::ClusterWeight { name, weight } unset {
                cluster_header, metadata_match, request_headers_to_add, request_headers_to_remove,
                response_headers_to_add, response_headers_to_remove, typed_per_filter_config,
                host_rewrite_specifier,
            });
        }
        Ok(())
    }

    fn retry_policy(&self, at: &str, r: &RetryPolicy) -> Result {
        only!(self, at, r => RetryPolicy {
            retry_on, num_retries, per_try_timeout, retry_host_predicate,
            host_selection_retry_max_attempts,
        } unset {
            per_try_idle_timeout, retry_priority, retry_options_predicates,
            retriable_status_codes, retry_back_off, rate_limited_retry_back_off,
            retriable_headers, retriable_request_headers, refresh_cluster_on_retry,
        });
        for token in r
            .retry_on
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            if !RETRY_ON.contains(&token) {
                return Err(self.fail(
                    join(at, "retry_on"),
                    format!(
                        "{token:?} is not supported by the bundled proxy (it retries on {})",
                        RETRY_ON.join(", ")
                    ),
                ));
            }
        }
        for (i, p) in r.retry_host_predicate.iter().enumerate() {
            let at = join(at, &format!("retry_host_predicate[{i}]"));
            only!(self, &at, p => retry_policy::RetryHostPredicate { name, config_type } unset {});
            match &p.config_type {
                Some(retry_policy::retry_host_predicate::ConfigType::TypedConfig(any))
                    if any.type_url == PreviousHostsPredicate::type_url() =>
                {
                    self.empty_config::<PreviousHostsPredicate>(&join(&at, "typed_config"), any)?;
                }
                Some(retry_policy::retry_host_predicate::ConfigType::TypedConfig(any)) => {
                    return Err(self.unknown_type(&at, &p.name, any));
                }
                None => {
                    return Err(self.fail(
                        join(&at, "typed_config"),
                        "is required by the bundled proxy",
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Which end of a TLS connection a context is for.
#[derive(Clone, Copy, Debug)]
enum Side {
    Client,
    Server { requires_client_certificate: bool },
}

/// The network filters the proxy implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NetworkFilter {
    Http,
    TcpProxy,
    Rbac,
    Close,
}
