//! Authorization: TrafficTarget grants as Envoy RBAC policies, for the HTTP and network filters.
//!
//! A grant is a policy named after its rule: principals are the allowed sources' SPIFFE IDs
//! (matched against the peer certificate's `authenticated.principal_name`, so they take effect
//! once mTLS is on), permissions are the allowed HTTP matches. An `Allow` with no usable rule
//! has no policy, and an ALLOW RBAC without policies denies everything.

use std::collections::BTreeMap;

use envoy_types::pb::{
    envoy::{
        config::rbac::v3::{
            Permission, Policy, Principal, Rbac as Rules, permission, principal, rbac::Action,
        },
        extensions::filters::{
            http::rbac::v3::{Rbac as HttpRbac, RbacPerRoute},
            network::rbac::v3::Rbac as NetworkRbac,
        },
        r#type::matcher::v3::{PathMatcher, StringMatcher, path_matcher, string_matcher},
    },
    google::protobuf::Any,
};
use prost::Name;

use super::{matcher, to_any, wire};
use crate::model::{Authorization, HttpMatch, InboundPort, InboundRule, MeshSettings};

/// Well-known filter names; per-route configs are keyed by them.
pub(super) const HTTP_FILTER: &str = "envoy.filters.http.rbac";
pub(super) const NETWORK_FILTER: &str = "envoy.filters.network.rbac";

/// The inbound HCM's own RBAC config: deny everything. The inbound virtual host overrides it
/// with the port's real policy, so a request only passes on a route that says so.
pub(super) fn http_filter_deny_all() -> Any {
    to_any(&HttpRbac {
        rules: Some(Rules {
            action: Action::Allow as i32,
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// The per-route RBAC config of an inbound HTTP port's virtual host.
pub(super) fn per_route(
    port: &InboundPort,
    mesh: &MeshSettings,
    warnings: &mut Vec<String>,
) -> Any {
    let value = match &port.authorization {
        // An override without `rbac` turns the filter off for the route.
        Authorization::AllowAll => Vec::new(),
        Authorization::Allow(rules) => {
            let rules = rules_bytes(&policies(port.port, rules, true, mesh, warnings));
            let rbac = wire::with_leading_field(1, &rules, &HttpRbac::default());
            let mut per_route = Vec::new();
            wire::put_field(&mut per_route, 2, &rbac);
            per_route
        }
    };
    Any {
        type_url: RbacPerRoute::type_url(),
        value,
    }
}

/// The network RBAC of an inbound TCP port: the filter, and the SPIFFE IDs its policies
/// admit (sorted), which the port's TLS handshake also requires (see `listener::inbound_filters`).
pub(super) struct NetworkPolicy {
    pub(super) filter: Any,
    pub(super) sources: Vec<String>,
}

/// The network RBAC of an inbound TCP port, or `None` when everyone is allowed.
pub(super) fn network_policy(
    port: &InboundPort,
    mesh: &MeshSettings,
    warnings: &mut Vec<String>,
) -> Option<NetworkPolicy> {
    let Authorization::Allow(rules) = &port.authorization else {
        return None;
    };
    let policies = policies(port.port, rules, false, mesh, warnings);
    let mut sources: Vec<String> = policies
        .values()
        .flat_map(|p| &p.principals)
        .filter_map(principal_id)
        .map(str::to_owned)
        .collect();
    sources.sort();
    sources.dedup();
    let rules = rules_bytes(&policies);
    let head = NetworkRbac {
        stat_prefix: format!("inbound_{}.", port.port),
        ..Default::default()
    };
    let value = wire::with_leading_field(1, &rules, &head);
    Some(NetworkPolicy {
        filter: Any {
            type_url: NetworkRbac::type_url(),
            value,
        },
        sources,
    })
}

/// An ALLOW `envoy.config.rbac.v3.RBAC` with these policies, in key order.
fn rules_bytes(policies: &BTreeMap<String, Policy>) -> Vec<u8> {
    // ALLOW is the zero value, so the action takes no bytes; policies are field 2.
    let mut buf = prost::Message::encode_to_vec(&Rules {
        action: Action::Allow as i32,
        ..Default::default()
    });
    wire::put_sorted_map(&mut buf, 2, policies);
    buf
}

/// One policy per rule, keyed by the rule's name (`#2`, `#3`… on repeats, in a stable order).
fn policies(
    port: u16,
    rules: &[InboundRule],
    http: bool,
    mesh: &MeshSettings,
    warnings: &mut Vec<String>,
) -> BTreeMap<String, Policy> {
    let mut normalized: Vec<(&str, Vec<String>, Vec<&HttpMatch>)> = Vec::new();
    for rule in rules {
        if !http && !rule.matches.is_empty() {
            // A TCP connection has no requests to match: fail closed.
            warnings.push(format!(
                "inbound port {port}: rule {} has HTTP matches on a TCP port; it grants nothing",
                rule.name
            ));
            continue;
        }
        let mut sources: Vec<String> = rule
            .sources
            .iter()
            .map(|s| s.spiffe_id(&mesh.trust_domain))
            .collect();
        sources.sort();
        sources.dedup();
        if sources.is_empty() {
            // Envoy rejects a policy without principals; a rule without sources grants nothing.
            continue;
        }
        let mut matches: Vec<&HttpMatch> = rule.matches.iter().collect();
        matches.sort();
        matches.dedup();
        normalized.push((&rule.name, sources, matches));
    }
    normalized.sort();
    normalized.dedup();

    let mut policies = BTreeMap::new();
    let mut previous: Option<(&str, usize)> = None;
    for (name, sources, matches) in normalized {
        let n = match previous {
            Some((prev, n)) if prev == name => n + 1,
            _ => 1,
        };
        previous = Some((name, n));
        let key = if n == 1 {
            name.to_owned()
        } else {
            format!("{name}#{n}")
        };
        let permissions = if matches.is_empty() {
            vec![Permission {
                rule: Some(permission::Rule::Any(true)),
            }]
        } else {
            matches.into_iter().map(permission).collect()
        };
        let principals = sources.into_iter().map(principal).collect();
        policies.insert(
            key,
            Policy {
                permissions,
                principals,
                ..Default::default()
            },
        );
    }
    policies
}

fn principal(spiffe_id: String) -> Principal {
    Principal {
        identifier: Some(principal::Identifier::Authenticated(
            principal::Authenticated {
                principal_name: Some(StringMatcher {
                    match_pattern: Some(string_matcher::MatchPattern::Exact(spiffe_id)),
                    ..Default::default()
                }),
            },
        )),
    }
}

/// The SPIFFE ID a principal built by [`principal`] admits.
fn principal_id(p: &Principal) -> Option<&str> {
    let Some(principal::Identifier::Authenticated(a)) = &p.identifier else {
        return None;
    };
    match a.principal_name.as_ref()?.match_pattern.as_ref()? {
        string_matcher::MatchPattern::Exact(id) => Some(id),
        _ => None,
    }
}

/// The request conditions of one match, ANDed; `url_path` excludes the query string, as
/// SMI's `pathRegex` does.
fn permission(m: &HttpMatch) -> Permission {
    let mut rules = Vec::new();
    if let Some(regex) = &m.path_regex {
        rules.push(Permission {
            rule: Some(permission::Rule::UrlPath(PathMatcher {
                rule: Some(path_matcher::Rule::Path(matcher::regex_string_matcher(
                    regex,
                ))),
            })),
        });
    }
    rules.extend(matcher::header_matchers(m).into_iter().map(|h| Permission {
        rule: Some(permission::Rule::Header(h)),
    }));
    match rules.len() {
        0 => Permission {
            rule: Some(permission::Rule::Any(true)),
        },
        1 => rules.remove(0),
        _ => Permission {
            rule: Some(permission::Rule::AndRules(permission::Set { rules })),
        },
    }
}
