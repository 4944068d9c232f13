//! Route configurations: virtual hosts, routes, their matches, actions, retries and RBAC
//! overrides.

use std::{collections::HashSet, time::Duration};

use envoy_types::pb::envoy::{
    config::route::v3::{
        RetryPolicy as PbRetryPolicy, Route as PbRoute, RouteAction as PbRouteAction,
        RouteConfiguration, RouteMatch as PbRouteMatch, VirtualHost as PbVirtualHost,
        WeightedCluster,
        retry_policy::{RetryHostPredicate, retry_host_predicate},
        route, route_action, weighted_cluster,
    },
    extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate,
};

use super::{At, Invalid, decode, duration, is, matcher, rbac, unsupported};
use crate::{RetryOn, RetryPolicy, Route, RouteAction, RouteMatch, RouteTable, VirtualHost};

/// Envoy's route timeout when a route sets none: 15 s for the whole request.
pub(super) const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);

/// The retry host predicate that picks another endpoint than the ones already tried.
const PREVIOUS_HOSTS: &str = "envoy.retry_host_predicates.previous_hosts";

/// The `retry_on` conditions the proxy implements.
pub const RETRY_ON: [&str; 5] = [
    "connect-failure",
    "refused-stream",
    "reset-before-request",
    "5xx",
    "gateway-error",
];

const HEADER_MUTATIONS: &str = "header mutations are not supported";

impl RouteTable {
    /// Translates one route configuration (RDS, or an HCM's inline `route_config`).
    pub fn from_xds(rc: &RouteConfiguration) -> Result<RouteTable, Invalid> {
        if rc.vhds.is_some() {
            return Err(unsupported("vhds", "VHDS is not supported"));
        }
        if !rc.request_headers_to_add.is_empty() {
            return Err(unsupported("request_headers_to_add", HEADER_MUTATIONS));
        }
        if !rc.request_headers_to_remove.is_empty() {
            return Err(unsupported("request_headers_to_remove", HEADER_MUTATIONS));
        }
        if !rc.response_headers_to_add.is_empty() {
            return Err(unsupported("response_headers_to_add", HEADER_MUTATIONS));
        }
        if !rc.response_headers_to_remove.is_empty() {
            return Err(unsupported("response_headers_to_remove", HEADER_MUTATIONS));
        }
        if !rc.cluster_specifier_plugins.is_empty() {
            return Err(unsupported(
                "cluster_specifier_plugins",
                "cluster specifier plugins are not supported",
            ));
        }
        if !rc.request_mirror_policies.is_empty() {
            return Err(unsupported(
                "request_mirror_policies",
                "request mirroring is not supported",
            ));
        }
        if !rc.vhost_header.is_empty() {
            return Err(unsupported(
                "vhost_header",
                "virtual hosts are chosen by :authority only",
            ));
        }
        if rc.ignore_port_in_host_matching {
            return Err(unsupported(
                "ignore_port_in_host_matching",
                "virtual hosts are matched on the whole :authority",
            ));
        }
        if !rc.typed_per_filter_config.is_empty() {
            return Err(unsupported(
                "typed_per_filter_config",
                "per-filter configuration is supported on virtual hosts and routes only",
            ));
        }
        if !rc.route_specifiers.is_empty() {
            return Err(unsupported(
                "route_specifiers",
                "route specifiers are not supported",
            ));
        }
        let virtual_hosts = rc
            .virtual_hosts
            .iter()
            .enumerate()
            .map(|(i, v)| virtual_host(v).at(format_args!("virtual_hosts[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        // Envoy refuses a domain served by two virtual hosts: which one wins would be
        // arbitrary.
        let mut seen = HashSet::new();
        for (i, v) in virtual_hosts.iter().enumerate() {
            for (j, domain) in v.domains.iter().enumerate() {
                if !seen.insert(domain.as_str()) {
                    return Err(unsupported(
                        format!("virtual_hosts[{i}].domains[{j}]"),
                        "another virtual host has this domain",
                    ));
                }
            }
        }
        // Envoy would refuse the whole configuration for a missing cluster; the proxy answers
        // 503 on such a route instead.
        if rc.validate_clusters.as_ref().is_some_and(|b| b.value) {
            return Err(unsupported(
                "validate_clusters",
                "missing clusters are answered with 503, not refused",
            ));
        }
        only!(rc => RouteConfiguration {
            name, virtual_hosts, validate_clusters, vhds, response_headers_to_add,
            response_headers_to_remove, request_headers_to_add, request_headers_to_remove,
            cluster_specifier_plugins, request_mirror_policies, ignore_port_in_host_matching,
            vhost_header, typed_per_filter_config, route_specifiers,
        } unset {
            internal_only_headers, most_specific_header_mutations_wins,
            max_direct_response_body_size_bytes, ignore_path_parameters_in_path_matching,
            metadata,
        });
        Ok(RouteTable {
            name: rc.name.clone(),
            virtual_hosts,
        })
    }
}

fn virtual_host(v: &PbVirtualHost) -> Result<VirtualHost, Invalid> {
    if v.domains.is_empty() {
        return Err(unsupported("domains", "at least one domain is required"));
    }
    if v.require_tls != 0 {
        return Err(unsupported("require_tls", "is not supported"));
    }
    if v.matcher.is_some() {
        return Err(unsupported("matcher", "route matchers are not supported"));
    }
    if !v.request_headers_to_add.is_empty() {
        return Err(unsupported("request_headers_to_add", HEADER_MUTATIONS));
    }
    if !v.request_headers_to_remove.is_empty() {
        return Err(unsupported("request_headers_to_remove", HEADER_MUTATIONS));
    }
    if !v.response_headers_to_add.is_empty() {
        return Err(unsupported("response_headers_to_add", HEADER_MUTATIONS));
    }
    if !v.response_headers_to_remove.is_empty() {
        return Err(unsupported("response_headers_to_remove", HEADER_MUTATIONS));
    }
    if !v.request_mirror_policies.is_empty() {
        return Err(unsupported(
            "request_mirror_policies",
            "request mirroring is not supported",
        ));
    }
    if v.hedge_policy.is_some() {
        return Err(unsupported("hedge_policy", "hedging is not supported"));
    }
    if v.retry_policy_typed_config.is_some() {
        return Err(unsupported(
            "retry_policy_typed_config",
            "retry policy extensions are not supported",
        ));
    }
    if !v.route_specifiers.is_empty() {
        return Err(unsupported(
            "route_specifiers",
            "route specifiers are not supported",
        ));
    }
    // A virtual host's retry policy is the default of its routes; a route's own replaces it.
    let default_retry = v
        .retry_policy
        .as_ref()
        .map(retry)
        .transpose()
        .at("retry_policy")?;
    let routes = v
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| self::route(r, default_retry.as_ref()).at(format_args!("routes[{i}]")))
        .collect::<Result<_, _>>()?;
    only!(v => PbVirtualHost {
        name, domains, routes, typed_per_filter_config, matcher, require_tls,
        request_headers_to_add, request_headers_to_remove, response_headers_to_add,
        response_headers_to_remove, retry_policy, retry_policy_typed_config, hedge_policy,
        request_mirror_policies, route_specifiers,
    } unset {
        virtual_clusters, rate_limits, cors, include_request_attempt_count,
        include_attempt_count_in_response, include_is_timeout_retry_header,
        per_request_buffer_limit_bytes, request_body_buffer_limit, metadata,
    });
    Ok(VirtualHost {
        name: v.name.clone(),
        domains: v.domains.iter().map(|d| d.to_ascii_lowercase()).collect(),
        routes,
        rbac: rbac::per_route(&v.typed_per_filter_config).at("typed_per_filter_config")?,
    })
}

fn route(r: &PbRoute, default_retry: Option<&RetryPolicy>) -> Result<Route, Invalid> {
    if !r.request_headers_to_add.is_empty() {
        return Err(unsupported("request_headers_to_add", HEADER_MUTATIONS));
    }
    if !r.request_headers_to_remove.is_empty() {
        return Err(unsupported("request_headers_to_remove", HEADER_MUTATIONS));
    }
    if !r.response_headers_to_add.is_empty() {
        return Err(unsupported("response_headers_to_add", HEADER_MUTATIONS));
    }
    if !r.response_headers_to_remove.is_empty() {
        return Err(unsupported("response_headers_to_remove", HEADER_MUTATIONS));
    }
    if !r.route_specifiers.is_empty() {
        return Err(unsupported(
            "route_specifiers",
            "route specifiers are not supported",
        ));
    }
    let matcher = match &r.r#match {
        Some(m) => route_match(m).at("match")?,
        None => return Err(unsupported("match", "a match is required")),
    };
    const ONLY_ROUTE: &str = "only route actions (to clusters) are supported";
    let action = match &r.action {
        Some(route::Action::Route(a)) => route_action(a, default_retry).at("route")?,
        Some(route::Action::Redirect(_)) => return Err(unsupported("redirect", ONLY_ROUTE)),
        Some(route::Action::DirectResponse(_)) => {
            return Err(unsupported("direct_response", ONLY_ROUTE));
        }
        Some(route::Action::FilterAction(_)) => {
            return Err(unsupported("filter_action", ONLY_ROUTE));
        }
        Some(route::Action::NonForwardingAction(_)) => {
            return Err(unsupported("non_forwarding_action", ONLY_ROUTE));
        }
        None => return Err(unsupported("action", "an action is required")),
    };
    only!(r => PbRoute {
        name, r#match, typed_per_filter_config, stat_prefix, action, request_headers_to_add,
        request_headers_to_remove, response_headers_to_add, response_headers_to_remove,
        route_specifiers,
    } unset {
        metadata, decorator, tracing, per_request_buffer_limit_bytes, request_body_buffer_limit,
    });
    Ok(Route {
        name: r.name.clone(),
        stat_prefix: Some(r.stat_prefix.clone()).filter(|p| !p.is_empty()),
        matcher,
        action,
        rbac: rbac::per_route(&r.typed_per_filter_config).at("typed_per_filter_config")?,
    })
}

fn route_match(m: &PbRouteMatch) -> Result<RouteMatch, Invalid> {
    // Each of these narrows what a route takes; ignoring one would route more than asked.
    if m.runtime_fraction.is_some() {
        return Err(unsupported("runtime_fraction", "is not supported"));
    }
    if !m.query_parameters.is_empty() {
        return Err(unsupported(
            "query_parameters",
            "query parameter matches are not supported",
        ));
    }
    if !m.cookies.is_empty() {
        return Err(unsupported("cookies", "cookie matches are not supported"));
    }
    if m.grpc.is_some() {
        return Err(unsupported("grpc", "gRPC matches are not supported"));
    }
    if m.tls_context.is_some() {
        return Err(unsupported(
            "tls_context",
            "TLS context matches are not supported",
        ));
    }
    if !m.dynamic_metadata.is_empty() {
        return Err(unsupported(
            "dynamic_metadata",
            "metadata matches are not supported",
        ));
    }
    if !m.filter_state.is_empty() {
        return Err(unsupported(
            "filter_state",
            "filter state matches are not supported",
        ));
    }
    let path = matcher::path(m)?;
    let headers = m
        .headers
        .iter()
        .enumerate()
        .map(|(i, h)| matcher::header(h).at(format_args!("headers[{i}]")))
        .collect::<Result<_, _>>()?;
    only!(m => PbRouteMatch {
        case_sensitive, headers, path_specifier, runtime_fraction, query_parameters, cookies,
        grpc, tls_context, dynamic_metadata, filter_state,
    } unset {
    });
    Ok(RouteMatch { path, headers })
}

fn route_action(
    a: &PbRouteAction,
    default_retry: Option<&RetryPolicy>,
) -> Result<RouteAction, Invalid> {
    const REWRITES: &str = "rewrites are not supported";
    if !a.prefix_rewrite.is_empty() {
        return Err(unsupported("prefix_rewrite", REWRITES));
    }
    if a.regex_rewrite.is_some() {
        return Err(unsupported("regex_rewrite", REWRITES));
    }
    if a.path_rewrite_policy.is_some() {
        return Err(unsupported("path_rewrite_policy", REWRITES));
    }
    if !a.path_rewrite.is_empty() {
        return Err(unsupported("path_rewrite", REWRITES));
    }
    if a.host_rewrite_specifier.is_some() {
        return Err(unsupported("host_rewrite_specifier", REWRITES));
    }
    if a.metadata_match.is_some() {
        return Err(unsupported(
            "metadata_match",
            "endpoint subsets are not supported",
        ));
    }
    if !a.request_mirror_policies.is_empty() {
        return Err(unsupported(
            "request_mirror_policies",
            "request mirroring is not supported",
        ));
    }
    if a.hedge_policy.is_some() {
        return Err(unsupported("hedge_policy", "hedging is not supported"));
    }
    if a.internal_redirect_policy.is_some() {
        return Err(unsupported(
            "internal_redirect_policy",
            "internal redirects are not supported",
        ));
    }
    if a.retry_policy_typed_config.is_some() {
        return Err(unsupported(
            "retry_policy_typed_config",
            "retry policy extensions are not supported",
        ));
    }
    let clusters = match &a.cluster_specifier {
        Some(route_action::ClusterSpecifier::Cluster(name)) => {
            if name.is_empty() {
                return Err(unsupported("cluster", "must not be empty"));
            }
            vec![(name.clone(), 1)]
        }
        Some(route_action::ClusterSpecifier::WeightedClusters(w)) => {
            weighted(w).at("weighted_clusters")?
        }
        Some(route_action::ClusterSpecifier::ClusterHeader(_)) => {
            return Err(unsupported(
                "cluster_header",
                "clusters named by a header are not supported",
            ));
        }
        Some(route_action::ClusterSpecifier::ClusterSpecifierPlugin(_)) => {
            return Err(unsupported(
                "cluster_specifier_plugin",
                "cluster specifier plugins are not supported",
            ));
        }
        Some(route_action::ClusterSpecifier::InlineClusterSpecifierPlugin(_)) => {
            return Err(unsupported(
                "inline_cluster_specifier_plugin",
                "cluster specifier plugins are not supported",
            ));
        }
        None => return Err(unsupported("cluster_specifier", "a cluster is required")),
    };
    let timeout = match &a.timeout {
        None => Some(DEFAULT_ROUTE_TIMEOUT),
        Some(d) => Some(duration(d).at("timeout")?).filter(|d| !d.is_zero()),
    };
    let retry = match &a.retry_policy {
        Some(p) => Some(retry(p).at("retry_policy")?),
        None => default_retry.cloned(),
    };
    only!(a => PbRouteAction {
        timeout, retry_policy, cluster_specifier, metadata_match, prefix_rewrite, regex_rewrite,
        path_rewrite_policy, path_rewrite, retry_policy_typed_config, request_mirror_policies,
        internal_redirect_policy, hedge_policy, host_rewrite_specifier,
    } unset {
        cluster_not_found_response_code, append_x_forwarded_host, idle_timeout, flush_timeout,
        early_data_policy, priority, rate_limits, include_vh_rate_limits, hash_policy, cors,
        max_grpc_timeout, grpc_timeout_offset, upgrade_configs, internal_redirect_action,
        max_internal_redirects, max_stream_duration,
    });
    Ok(RouteAction {
        clusters,
        timeout,
        retry,
    })
}

fn weighted(w: &WeightedCluster) -> Result<Vec<(String, u32)>, Invalid> {
    if w.random_value_specifier.is_some() {
        return Err(unsupported(
            "random_value_specifier",
            "is not supported: every request draws its own random value",
        ));
    }
    if w.clusters.is_empty() {
        return Err(unsupported("clusters", "at least one cluster is required"));
    }
    let mut total: u64 = 0;
    let mut out = Vec::with_capacity(w.clusters.len());
    for (i, c) in w.clusters.iter().enumerate() {
        let at = |field: &str| format!("clusters[{i}].{field}");
        if !c.cluster_header.is_empty() {
            return Err(unsupported(
                at("cluster_header"),
                "clusters named by a header are not supported",
            ));
        }
        if c.name.is_empty() {
            return Err(unsupported(at("name"), "must not be empty"));
        }
        if c.metadata_match.is_some() {
            return Err(unsupported(
                at("metadata_match"),
                "endpoint subsets are not supported",
            ));
        }
        if !c.typed_per_filter_config.is_empty() {
            return Err(unsupported(
                at("typed_per_filter_config"),
                "per-filter configuration is supported on virtual hosts and routes only",
            ));
        }
        if !c.request_headers_to_add.is_empty()
            || !c.request_headers_to_remove.is_empty()
            || !c.response_headers_to_add.is_empty()
            || !c.response_headers_to_remove.is_empty()
        {
            return Err(unsupported(at("request_headers_to_add"), HEADER_MUTATIONS));
        }
        if c.host_rewrite_specifier.is_some() {
            return Err(unsupported(
                at("host_rewrite_specifier"),
                "rewrites are not supported",
            ));
        }
        let classified = || {
            only!(c => weighted_cluster::ClusterWeight {
                name, weight, cluster_header, metadata_match, request_headers_to_add,
                request_headers_to_remove, response_headers_to_add, response_headers_to_remove,
                typed_per_filter_config, host_rewrite_specifier,
            } unset {
            });
            Ok(())
        };
        classified().at(format_args!("clusters[{i}]"))?;
        let weight = c.weight.as_ref().map_or(0, |w| w.value);
        total += u64::from(weight);
        out.push((c.name.clone(), weight));
    }
    if total == 0 {
        return Err(unsupported("clusters", "the weights must not all be zero"));
    }
    if total > u64::from(u32::MAX) {
        return Err(unsupported(
            "clusters",
            "the weights must sum to at most 2^32 - 1",
        ));
    }
    only!(w => WeightedCluster {
        clusters, random_value_specifier,
    } unset {
        total_weight, runtime_key_prefix,
    });
    Ok(out)
}

fn retry(p: &PbRetryPolicy) -> Result<RetryPolicy, Invalid> {
    if p.retry_priority.is_some() {
        return Err(unsupported("retry_priority", "is not supported"));
    }
    if !p.retry_options_predicates.is_empty() {
        return Err(unsupported("retry_options_predicates", "are not supported"));
    }
    if !p.retriable_request_headers.is_empty() {
        return Err(unsupported(
            "retriable_request_headers",
            "are not supported",
        ));
    }
    let mut retry_on = RetryOn::default();
    for token in p
        .retry_on
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        match token {
            "connect-failure" => retry_on.connect_failure = true,
            "refused-stream" => retry_on.refused_stream = true,
            "reset-before-request" => retry_on.reset_before_request = true,
            "5xx" => retry_on.server_error = true,
            "gateway-error" => retry_on.gateway_error = true,
            _ => {
                return Err(unsupported(
                    "retry_on",
                    "only connect-failure, refused-stream, reset-before-request, 5xx and \
                     gateway-error are supported",
                ));
            }
        }
    }
    let mut other_hosts = false;
    for (i, predicate) in p.retry_host_predicate.iter().enumerate() {
        let previous_hosts = match &predicate.config_type {
            Some(retry_host_predicate::ConfigType::TypedConfig(any)) => {
                is::<PreviousHostsPredicate>(any)
            }
            None => predicate.name == PREVIOUS_HOSTS,
        };
        if !previous_hosts {
            return Err(unsupported(
                format!("retry_host_predicate[{i}]"),
                "only previous_hosts is supported",
            ));
        }
        let classified = || {
            if let Some(retry_host_predicate::ConfigType::TypedConfig(any)) = &predicate.config_type
            {
                let previous: PreviousHostsPredicate = decode(any).at("typed_config")?;
                only!(&previous => PreviousHostsPredicate {} unset {});
            }
            only!(predicate => RetryHostPredicate { name, config_type } unset {});
            Ok(())
        };
        classified().at(format_args!("retry_host_predicate[{i}]"))?;
        other_hosts = true;
    }
    let per_try_timeout = p
        .per_try_timeout
        .as_ref()
        .map(duration)
        .transpose()
        .at("per_try_timeout")?
        .filter(|d| !d.is_zero());
    only!(p => PbRetryPolicy {
        retry_on, num_retries, per_try_timeout, retry_host_predicate,
        host_selection_retry_max_attempts, retry_priority, retry_options_predicates,
        retriable_request_headers,
    } unset {
        per_try_idle_timeout, retriable_status_codes, retry_back_off, rate_limited_retry_back_off,
        retriable_headers, refresh_cluster_on_retry,
    });
    Ok(RetryPolicy {
        // Envoy's default when a policy is given without a count.
        num_retries: p.num_retries.as_ref().map_or(1, |n| n.value),
        retry_on,
        other_hosts,
        per_try_timeout,
    })
}
