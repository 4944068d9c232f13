//! RBAC: `envoy.config.rbac.v3.RBAC` rules (ALLOW only), for the HTTP and network filters and
//! the per-route override.

use std::{collections::HashMap, sync::Arc};

use envoy_types::pb::{
    envoy::{
        config::rbac::v3::{
            Permission as PbPermission, Policy as PbPolicy, Principal as PbPrincipal,
            Rbac as Rules, permission, principal, rbac::Action,
        },
        extensions::filters::{
            http::rbac::v3::{Rbac as HttpRbac, RbacPerRoute},
            network::rbac::v3::Rbac as NetworkRbac,
        },
        r#type::matcher::v3::{PathMatcher, path_matcher},
    },
    google::protobuf::Any,
};

use super::{At, Invalid, decode, is, matcher, unsupported};
use crate::{Permission, Policy, Principal, Rbac, StringMatch};

/// The name HTTP RBAC configs go by, in `typed_per_filter_config` and `http_filters`.
pub(super) const HTTP_FILTER: &str = "envoy.filters.http.rbac";

/// Where rules are enforced: HTTP permissions only make sense on requests.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Layer {
    Http,
    Network,
}

/// The RBAC an HTTP RBAC filter enforces. A filter without `rules` enforces nothing, which is
/// a policy allowing everyone everything (rather than no RBAC at all, so that a per-route
/// override still has a filter to override).
pub(super) fn http_filter(h: &HttpRbac) -> Result<Arc<Rbac>, Invalid> {
    if h.matcher.is_some() {
        return Err(unsupported(
            "matcher",
            "RBAC matchers are not supported; use rules",
        ));
    }
    // Shadow rules only log; leaving them out changes no decision.
    only!(h => HttpRbac {
        rules, rules_stat_prefix, track_per_rule_stats, matcher, shadow_rules, shadow_matcher,
        shadow_rules_stat_prefix,
    } unset {});
    match &h.rules {
        Some(rules) => http_rules(rules).map(Arc::new).at("rules"),
        None => Ok(Arc::new(allow_all())),
    }
}

/// The RBAC of a network RBAC filter; `None` when it has no rules, and so enforces nothing.
pub(super) fn network_filter(n: &NetworkRbac) -> Result<Option<Arc<Rbac>>, Invalid> {
    if n.matcher.is_some() {
        return Err(unsupported(
            "matcher",
            "RBAC matchers are not supported; use rules",
        ));
    }
    // Both enforcement types give the same decision for rules on peer identities and ports,
    // which are fixed for the life of the connection.
    only!(n => NetworkRbac {
        rules, stat_prefix, matcher, shadow_rules, shadow_matcher, shadow_rules_stat_prefix,
        enforcement_type,
    } unset {
        delay_deny,
    });
    n.rules
        .as_ref()
        .map(|rules| rbac(rules, Layer::Network).map(Arc::new))
        .transpose()
        .at("rules")
}

/// The RBAC override in a `typed_per_filter_config` map: `None` without one, `Some(None)` when
/// it turns RBAC off (an `RBACPerRoute` without `rbac`, or whose `rbac` has no rules), else the
/// replacement. Errors are relative to the map.
pub(super) fn per_route(
    configs: &HashMap<String, Any>,
) -> Result<Option<Option<Arc<Rbac>>>, Invalid> {
    if let Some(other) = configs.keys().filter(|k| *k != HTTP_FILTER).min() {
        return Err(unsupported(
            format!("[{other:?}]"),
            "only envoy.filters.http.rbac has per-route configuration",
        ));
    }
    let Some(any) = configs.get(HTTP_FILTER) else {
        return Ok(None);
    };
    let at = || format!("[{HTTP_FILTER:?}]");
    if !is::<RbacPerRoute>(any) {
        return Err(unsupported(at(), "must be an RBACPerRoute"));
    }
    let per_route: RbacPerRoute = decode(any).at(at())?;
    only!(&per_route => RbacPerRoute { rbac } unset {});
    let Some(http) = per_route.rbac else {
        return Ok(Some(None));
    };
    if http.rules.is_none() {
        return Ok(Some(None));
    }
    Ok(Some(Some(
        http_filter(&http).at(format_args!("{}.rbac", at()))?,
    )))
}

fn http_rules(rules: &Rules) -> Result<Rbac, Invalid> {
    rbac(rules, Layer::Http)
}

/// One policy that lets everything through.
fn allow_all() -> Rbac {
    Rbac {
        policies: vec![(
            String::new(),
            Policy {
                permissions: vec![Permission::Any],
                principals: vec![Principal::Any],
            },
        )],
    }
}

fn rbac(rules: &Rules, layer: Layer) -> Result<Rbac, Invalid> {
    if rules.action != Action::Allow as i32 {
        return Err(unsupported("action", "only ALLOW is supported"));
    }
    only!(rules => Rules { action, policies } unset { audit_logging_options });
    let mut policies: Vec<(&String, &PbPolicy)> = rules.policies.iter().collect();
    policies.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let policies = policies
        .into_iter()
        .map(|(name, p)| {
            policy(p, layer)
                .map(|p| (name.clone(), p))
                .at(format_args!("policies[{name:?}]"))
        })
        .collect::<Result<_, _>>()?;
    Ok(Rbac { policies })
}

fn policy(p: &PbPolicy, layer: Layer) -> Result<Policy, Invalid> {
    if p.condition.is_some() || p.checked_condition.is_some() || p.cel_config.is_some() {
        return Err(unsupported("condition", "CEL conditions are not supported"));
    }
    if p.permissions.is_empty() {
        return Err(unsupported("permissions", "at least one is required"));
    }
    if p.principals.is_empty() {
        return Err(unsupported("principals", "at least one is required"));
    }
    only!(p => PbPolicy { permissions, principals, condition, checked_condition, cel_config }
        unset {});
    Ok(Policy {
        permissions: permissions(&p.permissions, layer).at("permissions")?,
        principals: principals(&p.principals).at("principals")?,
    })
}

fn permissions(list: &[PbPermission], layer: Layer) -> Result<Vec<Permission>, Invalid> {
    list.iter()
        .enumerate()
        .map(|(i, p)| permission(p, layer).at(format_args!("[{i}]")))
        .collect()
}

fn permission(p: &PbPermission, layer: Layer) -> Result<Permission, Invalid> {
    use permission::Rule;
    only!(p => PbPermission { rule } unset {});
    let http_only = |field: &'static str| {
        unsupported(
            field,
            "HTTP permissions never match in a network RBAC filter",
        )
    };
    match &p.rule {
        Some(Rule::Any(true)) => Ok(Permission::Any),
        Some(Rule::Any(false)) => Err(unsupported("any", "must be true")),
        Some(Rule::AndRules(set)) => permissions(&set.rules, layer)
            .map(Permission::And)
            .at("and_rules.rules"),
        Some(Rule::OrRules(set)) => permissions(&set.rules, layer)
            .map(Permission::Or)
            .at("or_rules.rules"),
        Some(Rule::NotRule(inner)) => permission(inner, layer)
            .map(|p| Permission::Not(Box::new(p)))
            .at("not_rule"),
        Some(Rule::Header(_)) if layer == Layer::Network => Err(http_only("header")),
        Some(Rule::Header(h)) => matcher::header(h).map(Permission::Header).at("header"),
        Some(Rule::UrlPath(_)) if layer == Layer::Network => Err(http_only("url_path")),
        Some(Rule::UrlPath(m)) => url_path(m).map(Permission::UrlPath).at("url_path"),
        Some(Rule::DestinationPort(port)) => u16::try_from(*port)
            .map(Permission::DestinationPort)
            .map_err(|_| unsupported("destination_port", "must be at most 65535")),
        Some(Rule::DestinationIp(_)) => Err(unsupported("destination_ip", UNSUPPORTED_PERMISSION)),
        Some(Rule::DestinationPortRange(_)) => Err(unsupported(
            "destination_port_range",
            UNSUPPORTED_PERMISSION,
        )),
        #[allow(deprecated)]
        Some(Rule::Metadata(_)) => Err(unsupported("metadata", UNSUPPORTED_PERMISSION)),
        Some(Rule::RequestedServerName(_)) => {
            Err(unsupported("requested_server_name", UNSUPPORTED_PERMISSION))
        }
        Some(Rule::Matcher(_)) => Err(unsupported("matcher", UNSUPPORTED_PERMISSION)),
        Some(Rule::UriTemplate(_)) => Err(unsupported("uri_template", UNSUPPORTED_PERMISSION)),
        Some(Rule::SourcedMetadata(_)) => {
            Err(unsupported("sourced_metadata", UNSUPPORTED_PERMISSION))
        }
        None => Err(unsupported("rule", "a rule is required")),
    }
}

const UNSUPPORTED_PERMISSION: &str = "only any, and_rules, or_rules, not_rule, header, url_path \
                                      and destination_port permissions are supported";

const UNSUPPORTED_PRINCIPAL: &str =
    "only any, and_ids, or_ids, not_id and authenticated principals are supported";

fn url_path(m: &PathMatcher) -> Result<StringMatch, Invalid> {
    only!(m => PathMatcher { rule } unset {});
    match &m.rule {
        Some(path_matcher::Rule::Path(s)) => matcher::string(s).at("path"),
        None => Err(unsupported("rule", "a rule is required")),
    }
}

fn principals(list: &[PbPrincipal]) -> Result<Vec<Principal>, Invalid> {
    list.iter()
        .enumerate()
        .map(|(i, p)| principal(p).at(format_args!("[{i}]")))
        .collect()
}

fn principal(p: &PbPrincipal) -> Result<Principal, Invalid> {
    use principal::Identifier;
    only!(p => PbPrincipal { identifier } unset {});
    match &p.identifier {
        Some(Identifier::Any(true)) => Ok(Principal::Any),
        Some(Identifier::Any(false)) => Err(unsupported("any", "must be true")),
        Some(Identifier::AndIds(set)) => principals(&set.ids).map(Principal::And).at("and_ids.ids"),
        Some(Identifier::OrIds(set)) => principals(&set.ids).map(Principal::Or).at("or_ids.ids"),
        Some(Identifier::NotId(inner)) => principal(inner)
            .map(|p| Principal::Not(Box::new(p)))
            .at("not_id"),
        // Without a name, any authenticated peer (one with a verified certificate) matches.
        Some(Identifier::Authenticated(a)) => match &a.principal_name {
            Some(name) => matcher::string(name)
                .map(Principal::Authenticated)
                .at("authenticated.principal_name"),
            None => Ok(Principal::Authenticated(StringMatch::Present)),
        },
        #[allow(deprecated)]
        Some(Identifier::SourceIp(_)) => Err(unsupported("source_ip", UNSUPPORTED_PRINCIPAL)),
        Some(Identifier::DirectRemoteIp(_)) => {
            Err(unsupported("direct_remote_ip", UNSUPPORTED_PRINCIPAL))
        }
        Some(Identifier::RemoteIp(_)) => Err(unsupported("remote_ip", UNSUPPORTED_PRINCIPAL)),
        Some(Identifier::Header(_)) => Err(unsupported("header", UNSUPPORTED_PRINCIPAL)),
        Some(Identifier::UrlPath(_)) => Err(unsupported("url_path", UNSUPPORTED_PRINCIPAL)),
        #[allow(deprecated)]
        Some(Identifier::Metadata(_)) => Err(unsupported("metadata", UNSUPPORTED_PRINCIPAL)),
        Some(Identifier::FilterState(_)) => Err(unsupported("filter_state", UNSUPPORTED_PRINCIPAL)),
        Some(Identifier::SourcedMetadata(_)) => {
            Err(unsupported("sourced_metadata", UNSUPPORTED_PRINCIPAL))
        }
        Some(Identifier::Custom(_)) => Err(unsupported("custom", UNSUPPORTED_PRINCIPAL)),
        None => Err(unsupported("identifier", "an identifier is required")),
    }
}
