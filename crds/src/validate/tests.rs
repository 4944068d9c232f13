use super::*;
use crate::{Kind, test_util::read};

/// Validates one YAML document and returns its problems as `field: reason` lines.
fn problems(kind: Kind, version: &str, yaml: &str) -> Vec<Problem> {
    validate(&read(kind, version, yaml))
}

/// Asserts exactly one problem of `severity` on `field`, whose message contains `needle`, and
/// that the full message names the object and the field.
#[track_caller]
fn assert_one(ps: &[Problem], severity: Severity, field: &str, needle: &str) {
    let hits: Vec<_> = ps.iter().filter(|p| p.field == field).collect();
    assert_eq!(
        hits.len(),
        1,
        "expected one problem on {field}, got {ps:#?}"
    );
    let p = hits[0];
    assert_eq!(p.severity, severity, "{p}");
    assert!(
        p.reason.contains(needle),
        "{field}: {:?} does not mention {needle:?}",
        p.reason
    );
    let line = p.to_string();
    assert!(
        line.starts_with(&format!("{}: {field}: ", p.object)),
        "{line}"
    );
}

fn errors(ps: &[Problem]) -> Vec<String> {
    ps.iter()
        .filter(|p| p.severity == Severity::Error)
        .map(ToString::to_string)
        .collect()
}

const TS_V4: &str = "apiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\n";

#[test]
fn valid_objects_have_no_problems() {
    let ts = format!(
        "{TS_V4}metadata: {{name: canary, namespace: shop}}\nspec:\n  service: web.shop.svc.cluster.local\n  backends: [{{service: web-v1, weight: 90}}, {{service: web-v2, weight: 10}}]\n"
    );
    assert_eq!(problems(Kind::TrafficSplit, "v1alpha4", &ts), []);
}

#[test]
fn negative_weight() {
    let ts = format!(
        "{TS_V4}metadata: {{name: web, namespace: default}}\nspec:\n  service: web\n  backends: [{{service: a, weight: 1}}, {{service: b, weight: -5}}]\n"
    );
    let ps = problems(Kind::TrafficSplit, "v1alpha4", &ts);
    assert_one(
        &ps,
        Severity::Error,
        "spec.backends[1].weight",
        "must be ≥ 0",
    );
    assert_eq!(
        errors(&ps),
        ["trafficsplit default/web: spec.backends[1].weight: must be ≥ 0 (got -5)"]
    );
}

#[test]
fn negative_quantity_weight_in_v1alpha1() {
    let ts = "apiVersion: split.smi-spec.io/v1alpha1\nkind: TrafficSplit\nmetadata: {name: web}\nspec:\n  service: web\n  backends: [{service: a, weight: \"-500m\"}]\n";
    assert_one(
        &problems(Kind::TrafficSplit, "v1alpha1", ts),
        Severity::Error,
        "spec.backends[0].weight",
        "must be ≥ 0",
    );
}

#[test]
fn fractional_weight_from_v1alpha2_on() {
    for v in ["v1alpha2", "v1alpha3", "v1alpha4"] {
        let ts = format!(
            "apiVersion: split.smi-spec.io/{v}\nkind: TrafficSplit\nmetadata: {{name: web}}\nspec:\n  service: web\n  backends: [{{service: a, weight: 1.5}}]\n"
        );
        assert_one(
            &problems(Kind::TrafficSplit, v, &ts),
            Severity::Error,
            "spec.backends[0].weight",
            "whole number",
        );
    }
    // v1alpha1 quantities may be fractional: 1.5 is 1500m.
    let ts = "apiVersion: split.smi-spec.io/v1alpha1\nkind: TrafficSplit\nmetadata: {name: web}\nspec:\n  service: web\n  backends: [{service: a, weight: 1.5}]\n";
    assert_eq!(problems(Kind::TrafficSplit, "v1alpha1", ts), []);
}

#[test]
fn missing_v1alpha1_weight() {
    let ts = "apiVersion: split.smi-spec.io/v1alpha1\nkind: TrafficSplit\nmetadata: {name: web}\nspec:\n  service: web\n  backends: [{service: a}]\n";
    assert_one(
        &problems(Kind::TrafficSplit, "v1alpha1", ts),
        Severity::Error,
        "spec.backends[0].weight",
        "is required",
    );
}

#[test]
fn empty_backends() {
    let ts = format!("{TS_V4}metadata: {{name: web}}\nspec: {{service: web, backends: []}}\n");
    assert_one(
        &problems(Kind::TrafficSplit, "v1alpha4", &ts),
        Severity::Error,
        "spec.backends",
        "at least one backend",
    );
}

#[test]
fn all_zero_weights_warn_that_the_split_is_inactive() {
    let ts = format!(
        "{TS_V4}metadata: {{name: web}}\nspec: {{service: web, backends: [{{service: a, weight: 0}}, {{service: b, weight: 0}}]}}\n"
    );
    let ps = problems(Kind::TrafficSplit, "v1alpha4", &ts);
    assert_one(&ps, Severity::Warning, "spec.backends", "inactive");
    assert!(errors(&ps).is_empty());
}

#[test]
fn missing_root_service() {
    let ts = format!(
        "{TS_V4}metadata: {{name: web}}\nspec: {{service: '', backends: [{{service: a, weight: 1}}]}}\n"
    );
    assert_one(
        &problems(Kind::TrafficSplit, "v1alpha4", &ts),
        Severity::Error,
        "spec.service",
        "is required",
    );
}

#[test]
fn cross_namespace_root_service() {
    let ts = format!(
        "{TS_V4}metadata: {{name: web, namespace: shop}}\nspec: {{service: web.other.svc.cluster.local, backends: [{{service: a, weight: 1}}]}}\n"
    );
    assert_one(
        &problems(Kind::TrafficSplit, "v1alpha4", &ts),
        Severity::Error,
        "spec.service",
        "its own namespace",
    );
}

#[test]
fn cross_namespace_backend() {
    let ts = format!(
        "{TS_V4}metadata: {{name: web}}\nspec: {{service: web, backends: [{{service: a.other, weight: 1}}]}}\n"
    );
    assert_one(
        &problems(Kind::TrafficSplit, "v1alpha4", &ts),
        Severity::Error,
        "spec.backends[0].service",
        "own namespace",
    );
}

#[test]
fn duplicate_backend() {
    let ts = format!(
        "{TS_V4}metadata: {{name: web}}\nspec: {{service: web, backends: [{{service: a, weight: 1}}, {{service: a, weight: 2}}]}}\n"
    );
    assert_one(
        &problems(Kind::TrafficSplit, "v1alpha4", &ts),
        Severity::Error,
        "spec.backends[1].service",
        "duplicate backend",
    );
}

#[test]
fn unknown_split_match_kind() {
    let ts = format!(
        "{TS_V4}metadata: {{name: web}}\nspec:\n  service: web\n  matches: [{{kind: TCPRoute, name: x}}]\n  backends: [{{service: a, weight: 1}}]\n"
    );
    assert_one(
        &problems(Kind::TrafficSplit, "v1alpha4", &ts),
        Severity::Error,
        "spec.matches[0].kind",
        "only HTTPRouteGroup",
    );
}

#[test]
fn missing_name() {
    let ts = format!(
        "{TS_V4}metadata: {{namespace: shop}}\nspec: {{service: web, backends: [{{service: a, weight: 1}}]}}\n"
    );
    assert_one(
        &problems(Kind::TrafficSplit, "v1alpha4", &ts),
        Severity::Error,
        "metadata.name",
        "is required",
    );
}

const TT_V3: &str = "apiVersion: access.smi-spec.io/v1alpha3\nkind: TrafficTarget\nmetadata: {name: tt, namespace: default}\n";

#[test]
fn non_service_account_subjects() {
    let tt = format!(
        "{TT_V3}spec:\n  destination: {{kind: Group, name: api}}\n  rules: [{{kind: TCPRoute, name: r}}]\n  sources: [{{kind: ServiceAccount, name: a}}, {{kind: User, name: bob}}]\n"
    );
    let ps = problems(Kind::TrafficTarget, "v1alpha3", &tt);
    assert_one(
        &ps,
        Severity::Error,
        "spec.destination.kind",
        "only ServiceAccount",
    );
    assert_one(&ps, Severity::Error, "spec.sources[1].kind", "\"User\"");
}

#[test]
fn cross_namespace_destination() {
    let tt = format!(
        "{TT_V3}spec:\n  destination: {{kind: ServiceAccount, name: api, namespace: prod}}\n  rules: [{{kind: TCPRoute, name: r}}]\n  sources: [{{kind: ServiceAccount, name: a, namespace: other}}]\n"
    );
    let ps = problems(Kind::TrafficTarget, "v1alpha3", &tt);
    assert_one(
        &ps,
        Severity::Error,
        "spec.destination.namespace",
        "cross-namespace",
    );
    // Sources from other namespaces are normal.
    assert!(
        ps.iter().all(|p| !p.field.starts_with("spec.sources")),
        "{ps:#?}"
    );
}

#[test]
fn unknown_route_kind() {
    let tt = format!(
        "{TT_V3}spec:\n  destination: {{kind: ServiceAccount, name: api}}\n  rules: [{{kind: GRPCRoute, name: r}}]\n  sources: [{{kind: ServiceAccount, name: a}}]\n"
    );
    assert_one(
        &problems(Kind::TrafficTarget, "v1alpha3", &tt),
        Severity::Error,
        "spec.rules[0].kind",
        "unknown route kind \"GRPCRoute\"",
    );
}

#[test]
fn udp_rules_need_v1alpha3() {
    let tt = "apiVersion: access.smi-spec.io/v1alpha2\nkind: TrafficTarget\nmetadata: {name: tt}\nspec:\n  destination: {kind: ServiceAccount, name: api}\n  rules: [{kind: UDPRoute, name: dns}]\n  sources: [{kind: ServiceAccount, name: a}]\n";
    assert_one(
        &problems(Kind::TrafficTarget, "v1alpha2", tt),
        Severity::Error,
        "spec.rules[0].kind",
        "v1alpha3",
    );
}

#[test]
fn no_rules_or_sources_grants_nothing() {
    let tt = format!("{TT_V3}spec:\n  destination: {{kind: ServiceAccount, name: api}}\n");
    let ps = problems(Kind::TrafficTarget, "v1alpha3", &tt);
    assert_one(&ps, Severity::Warning, "spec.rules", "grants nothing");
    assert_one(&ps, Severity::Warning, "spec.sources", "grants nothing");
}

#[test]
fn legacy_paths_name_the_legacy_fields() {
    let tt = "apiVersion: access.smi-spec.io/v1alpha1\nkind: TrafficTarget\nmetadata: {name: tt}\ndestination: {kind: Pod, name: api, port: 0}\nspecs: [{kind: Nope, name: r}]\nsources: [{kind: ServiceAccount, name: a}]\n";
    let ps = problems(Kind::TrafficTarget, "v1alpha1", tt);
    assert_one(
        &ps,
        Severity::Error,
        "destination.kind",
        "only ServiceAccount",
    );
    assert_one(&ps, Severity::Error, "destination.port", "1–65535");
    assert_one(&ps, Severity::Error, "specs[0].kind", "unknown route kind");
}

const HRG_V4: &str = "apiVersion: specs.smi-spec.io/v1alpha4\nkind: HTTPRouteGroup\nmetadata: {name: routes, namespace: default}\n";

#[test]
fn invalid_path_regex() {
    let g = format!("{HRG_V4}spec:\n  matches: [{{name: api, pathRegex: '/api/(v1'}}]\n");
    assert_one(
        &problems(Kind::HttpRouteGroup, "v1alpha4", &g),
        Severity::Error,
        "spec.matches[0].pathRegex",
        "invalid regex \"/api/(v1\"",
    );
}

#[test]
fn invalid_header_regex_and_name() {
    let g = format!(
        "{HRG_V4}spec:\n  matches:\n  - name: ua\n    headers:\n    - user-agent: '*Firefox'\n    - 'bad header': x\n"
    );
    let ps = problems(Kind::HttpRouteGroup, "v1alpha4", &g);
    assert_one(
        &ps,
        Severity::Error,
        "spec.matches[0].headers[0]",
        "invalid regex",
    );
    assert_one(
        &ps,
        Severity::Error,
        "spec.matches[0].headers[1]",
        "not a valid header name",
    );
}

#[test]
fn duplicate_match_names() {
    let g =
        format!("{HRG_V4}spec:\n  matches: [{{name: api}}, {{name: metrics}}, {{name: api}}]\n");
    assert_one(
        &problems(Kind::HttpRouteGroup, "v1alpha4", &g),
        Severity::Error,
        "spec.matches[2].name",
        "duplicate match name \"api\"",
    );
}

#[test]
fn unknown_method() {
    let g = format!("{HRG_V4}spec:\n  matches: [{{name: api, methods: [GET, FETCH]}}]\n");
    assert_one(
        &problems(Kind::HttpRouteGroup, "v1alpha4", &g),
        Severity::Error,
        "spec.matches[0].methods[1]",
        "unknown method \"FETCH\"",
    );
}

#[test]
fn legacy_route_group_paths_have_no_spec() {
    let g = "apiVersion: specs.smi-spec.io/v1alpha2\nkind: HTTPRouteGroup\nmetadata: {name: g}\nmatches: [{name: a, pathRegex: '['}]\n";
    assert_one(
        &problems(Kind::HttpRouteGroup, "v1alpha2", g),
        Severity::Error,
        "matches[0].pathRegex",
        "invalid regex",
    );
}

#[test]
fn port_zero() {
    let r = "apiVersion: specs.smi-spec.io/v1alpha4\nkind: UDPRoute\nmetadata: {name: r}\nspec: {matches: {ports: [53, 0]}}\n";
    assert_one(
        &problems(Kind::UdpRoute, "v1alpha4", r),
        Severity::Error,
        "spec.matches.ports[1]",
        "1–65535",
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let ts = format!(
        "{TS_V4}metadata: {{name: web}}\nspec:\n  service: web.elsewhere\n  matches: [{{kind: Foo, name: x}}]\n  backends: [{{service: a, weight: -1}}, {{service: b.c, weight: 2.5}}]\n"
    );
    let fields: Vec<_> = problems(Kind::TrafficSplit, "v1alpha4", &ts)
        .into_iter()
        .map(|p| p.field)
        .collect();
    for f in [
        "spec.service",
        "spec.backends[0].weight",
        "spec.backends[1].service",
        "spec.backends[1].weight",
        "spec.matches[0].kind",
    ] {
        assert!(fields.iter().any(|x| x == f), "{f} missing from {fields:?}");
    }
}

#[test]
fn anchored_regex_is_a_full_match() {
    let re = anchored_regex("/api").unwrap();
    assert!(re.is_match("/api"));
    assert!(
        !re.is_match("/api/v1"),
        "the spec example /api does not match /api/v1"
    );
    assert!(anchored_regex("/api/.*").unwrap().is_match("/api/v1"));
    assert!(anchored_regex("a|b").unwrap().is_match("b"));
    assert!(
        !anchored_regex("a|b").unwrap().is_match("ab"),
        "alternation stays inside the anchors"
    );
}
