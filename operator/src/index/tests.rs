use serde_json::json;
use switchyard_adapters::model::{
    AccessMode, Authorization, ClusterName, ClusterPolicy, ConnectionLimits, DataPlane, Identity,
    MeshSettings, Protocol, ProxyConfig, ProxyId, RoutePolicy, ServiceName,
};
use switchyard_crds::{Kind, ObjectRef, VersionedObject, status::conditions};

use super::*;

// === Utils ===

const NS: &str = "shop";

fn index() -> Index {
    Index::new(MeshSettings {
        access_mode: AccessMode::Permissive,
        ..MeshSettings::default()
    })
}

fn service(name: &str, ports: &[u16]) -> Object {
    service_of(name, name, ports)
}

/// Service `name` selecting the Pods labelled `app`, with a port `http-<p>` for each of
/// `ports`, its target `8000 + p`.
fn service_of(name: &str, app: &str, ports: &[u16]) -> Object {
    let ports: Vec<_> = ports
        .iter()
        .map(|p| json!({"name": format!("http-{p}"), "port": p, "targetPort": 8000 + p}))
        .collect();
    Object::Service(Box::new(
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": NS},
            "spec": {"selector": {"app": app}, "ports": ports},
        }))
        .unwrap(),
    ))
}

/// An EndpointSlice for `svc` with one ready endpoint per address, on every port of `ports`.
fn slice(svc: &str, ports: &[u16], addrs: &[&str]) -> Object {
    let endpoints: Vec<_> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| json!({"addresses": [a], "conditions": {"ready": true}, "targetRef": {"kind": "Pod", "name": format!("{svc}-{i}")}}))
        .collect();
    slice_named(&format!("{svc}-abc"), svc, ports, endpoints)
}

/// EndpointSlice `name` of `svc`: `endpoints` on the target ports (`8000 + p`) of `ports`.
fn slice_named(name: &str, svc: &str, ports: &[u16], endpoints: Vec<serde_json::Value>) -> Object {
    let ports: Vec<_> = ports
        .iter()
        .map(|p| json!({"name": format!("http-{p}"), "port": 8000 + p}))
        .collect();
    Object::EndpointSlice(Box::new(
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": NS, "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4",
            "ports": ports,
            "endpoints": endpoints,
        }))
        .unwrap(),
    ))
}

fn pod(name: &str, sa: &str, app: &str) -> Object {
    Object::Pod(Box::new(
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": NS, "labels": {"app": app}},
            "spec": {"serviceAccountName": sa, "containers": [{"name": "app"}]},
        }))
        .unwrap(),
    ))
}

/// [`pod`] with a `switchyard.dev/data-plane` annotation, when `data_plane` is given.
fn annotated_pod(name: &str, sa: &str, app: &str, data_plane: Option<&str>) -> Object {
    let mut metadata = json!({"name": name, "namespace": NS, "labels": {"app": app}});
    if let Some(d) = data_plane {
        metadata["annotations"] = json!({ DATA_PLANE_ANNOTATION: d });
    }
    Object::Pod(Box::new(
        serde_json::from_value(json!({
            "metadata": metadata,
            "spec": {"serviceAccountName": sa, "containers": [{"name": "app"}]},
        }))
        .unwrap(),
    ))
}

fn smi(yaml: &str) -> Object {
    let doc: serde_json::Value = serde_yaml::from_str(yaml).unwrap();
    let api_version = doc["apiVersion"].as_str().unwrap().to_string();
    let (group, version) = api_version.split_once('/').unwrap();
    let kind = Kind::from_group_kind(group, doc["kind"].as_str().unwrap()).unwrap();
    Object::Smi(Box::new(
        VersionedObject::from_json(kind, version, doc)
            .unwrap()
            .into_canonical(),
    ))
}

fn split(name: &str, created: &str, backends: &[(&str, &str)]) -> Object {
    split_of(name, created, "web", None, backends)
}

/// TrafficSplit `name`, created at `created`, of service `root` to `(service, weight)`
/// backends, for the requests of HTTPRouteGroup `group` when given.
fn split_of(
    name: &str,
    created: &str,
    root: &str,
    group: Option<&str>,
    backends: &[(&str, &str)],
) -> Object {
    let b: Vec<String> = backends
        .iter()
        .map(|(s, w)| format!("{{service: {s}, weight: {w}}}"))
        .collect();
    let matches = group
        .map(|g| format!("  matches: [{{kind: HTTPRouteGroup, name: {g}}}]\n"))
        .unwrap_or_default();
    smi(&format!(
        "apiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\nmetadata: {{name: {name}, namespace: {NS}, creationTimestamp: '{created}'}}\nspec:\n  service: {root}\n{matches}  backends: [{}]\n",
        b.join(", ")
    ))
}

/// A mesh with root `web` and backends `web-v1`, `web-v2` on port 80, each with an endpoint.
fn mesh() -> Index {
    let mut idx = index();
    for (svc, addr) in [
        ("web", "10.0.0.1"),
        ("web-v1", "10.0.1.1"),
        ("web-v2", "10.0.2.1"),
    ] {
        idx.apply(service(svc, &[80]));
        idx.apply(slice(svc, &[80], &[addr]));
    }
    idx.apply(pod("client-0", "client", "client"));
    idx
}

/// The client proxy of [`mesh`].
fn client() -> ProxyId {
    ProxyId {
        namespace: NS.into(),
        pod: "client-0".into(),
    }
}

fn web() -> ServiceName {
    ServiceName::new(NS, "web")
}

/// The default route of `web:80` as `(cluster, weight)` pairs.
fn default_route(idx: &Index) -> Vec<(String, u32)> {
    route(idx, 80, usize::MAX)
}

fn route(idx: &Index, port: u16, n: usize) -> Vec<(String, u32)> {
    let cfg = idx.proxy_config(&client()).expect("proxy");
    let svc = cfg.outbound.get(&web()).expect("web");
    let p = svc.ports.iter().find(|p| p.port == port).expect("port");
    let r = if n == usize::MAX {
        p.routes.last().unwrap()
    } else {
        &p.routes[n]
    };
    r.backends
        .iter()
        .map(|b| (b.cluster.to_string(), b.weight))
        .collect()
}

fn status(idx: &Index, name: &str, type_: &str) -> ConditionState {
    let obj = ObjectRef {
        kind: Kind::TrafficSplit,
        namespace: NS.into(),
        name: name.into(),
    };
    idx.status(&obj)
        .and_then(|s| s.get(type_))
        .cloned()
        .unwrap_or_else(|| panic!("no {type_} on {name}: {:?}", idx.status(&obj)))
}

fn data_plane(idx: &Index, proxy: &ProxyId) -> Option<DataPlane> {
    idx.proxy_config(proxy).map(|c| c.data_plane)
}

fn invalid_data_plane(idx: &Index, proxy: &ProxyId) -> Option<InvalidDataPlane> {
    InvalidDataPlane::of(&idx.proxy_config(proxy)?)
}

fn intercepted(idx: &Index, proxy: &ProxyId) -> bool {
    idx.proxy_config(proxy).is_some_and(|c| c.intercepted)
}

fn c(svc: &str) -> String {
    ClusterName::new(&ServiceName::new(NS, svc), 80).to_string()
}

// === DESIGN §4 rows ===

#[test]
fn without_a_split_the_root_goes_to_its_own_endpoints() {
    let idx = mesh();
    assert_eq!(default_route(&idx), [(c("web"), 1)]);
    let cfg = idx.proxy_config(&client()).unwrap();
    assert_eq!(
        cfg.outbound[&web()].hostnames,
        [
            "web",
            "web.shop",
            "web.shop.svc",
            "web.shop.svc.cluster.local"
        ]
    );
    assert_eq!(
        cfg.clusters[&ClusterName::new(&web(), 80)].endpoints[0]
            .address
            .to_string(),
        "10.0.0.1:8080"
    );
}

#[test]
fn weights_split_the_root() {
    let mut idx = mesh();
    idx.apply(split(
        "canary",
        "2024-01-01T00:00:00Z",
        &[("web-v1", "90"), ("web-v2", "10")],
    ));
    assert_eq!(default_route(&idx), [(c("web-v1"), 9), (c("web-v2"), 1)]);
    assert!(status(&idx, "canary", conditions::ACCEPTED).status);
    assert!(status(&idx, "canary", conditions::RESOLVED_REFS).status);
}

#[test]
fn v1alpha1_quantities_keep_their_ratio() {
    let mut idx = mesh();
    idx.apply(smi("apiVersion: split.smi-spec.io/v1alpha1\nkind: TrafficSplit\nmetadata: {name: q, namespace: shop}\nspec:\n  service: web\n  backends: [{service: web-v1, weight: '1'}, {service: web-v2, weight: 500m}]\n"));
    assert_eq!(default_route(&idx), [(c("web-v1"), 2), (c("web-v2"), 1)]);
}

#[test]
fn invalid_weights_are_rejected_and_the_last_good_config_stays() {
    let mut idx = mesh();
    idx.apply(split(
        "canary",
        "2024-01-01T00:00:00Z",
        &[("web-v1", "90"), ("web-v2", "10")],
    ));
    idx.take_changes();
    idx.apply(split(
        "canary",
        "2024-01-01T00:00:00Z",
        &[("web-v1", "90"), ("web-v2", "-10")],
    ));
    assert_eq!(default_route(&idx), [(c("web-v1"), 9), (c("web-v2"), 1)]);
    let accepted = status(&idx, "canary", conditions::ACCEPTED);
    assert!(!accepted.status);
    assert_eq!(accepted.reason, reasons::INVALID);
    assert!(
        accepted
            .message
            .contains("spec.backends[1].weight: must be ≥ 0"),
        "{}",
        accepted.message
    );
    let changes = idx.take_changes();
    assert!(
        !changes.outbound,
        "an invalid edit must not touch the served config"
    );
    assert!(changes.statuses.contains(&ObjectRef {
        kind: Kind::TrafficSplit,
        namespace: NS.into(),
        name: "canary".into()
    }));
}

#[test]
fn all_zero_weights_fall_back_to_the_root() {
    let mut idx = mesh();
    idx.apply(split(
        "canary",
        "2024-01-01T00:00:00Z",
        &[("web-v1", "0"), ("web-v2", "0")],
    ));
    assert_eq!(default_route(&idx), [(c("web"), 1)]);
    let accepted = status(&idx, "canary", conditions::ACCEPTED);
    assert_eq!(accepted.reason, reasons::ACCEPTED_WITH_WARNINGS);
    assert!(accepted.message.contains("inactive"));
}

#[test]
fn a_zero_weight_backend_gets_nothing() {
    let mut idx = mesh();
    idx.apply(split(
        "canary",
        "2024-01-01T00:00:00Z",
        &[("web-v1", "100"), ("web-v2", "0")],
    ));
    assert_eq!(default_route(&idx), [(c("web-v1"), 1)]);
}

#[test]
fn a_missing_backend_is_excluded_and_reported() {
    let mut idx = mesh();
    idx.apply(split(
        "canary",
        "2024-01-01T00:00:00Z",
        &[("web-v1", "50"), ("web-v3", "50")],
    ));
    assert_eq!(default_route(&idx), [(c("web-v1"), 1)]);
    let resolved = status(&idx, "canary", conditions::RESOLVED_REFS);
    assert!(!resolved.status);
    assert_eq!(resolved.reason, reasons::BACKEND_NOT_FOUND);
    assert!(
        resolved
            .message
            .contains("spec.backends[1].service: Service shop/web-v3 not found"),
        "{}",
        resolved.message
    );
    // Creating it later brings it in, without touching the split.
    idx.apply(service("web-v3", &[80]));
    idx.apply(slice("web-v3", &[80], &["10.0.3.1"]));
    assert_eq!(default_route(&idx), [(c("web-v1"), 1), (c("web-v3"), 1)]);
    assert!(status(&idx, "canary", conditions::RESOLVED_REFS).status);
}

#[test]
fn a_backend_without_the_root_port_is_excluded_for_that_port() {
    let mut idx = index();
    idx.apply(service("web", &[80, 9090]));
    idx.apply(slice("web", &[80, 9090], &["10.0.0.1"]));
    idx.apply(service("web-v1", &[80, 9090]));
    idx.apply(slice("web-v1", &[80, 9090], &["10.0.1.1"]));
    idx.apply(service("web-v2", &[80]));
    idx.apply(slice("web-v2", &[80], &["10.0.2.1"]));
    idx.apply(pod("client-0", "client", "client"));
    idx.apply(split(
        "canary",
        "2024-01-01T00:00:00Z",
        &[("web-v1", "50"), ("web-v2", "50")],
    ));
    assert_eq!(default_route(&idx), [(c("web-v1"), 1), (c("web-v2"), 1)]);
    let on_9090 = route(&idx, 9090, usize::MAX);
    assert_eq!(
        on_9090,
        [(
            ClusterName::new(&ServiceName::new(NS, "web-v1"), 9090).to_string(),
            1
        )]
    );
    let resolved = status(&idx, "canary", conditions::RESOLVED_REFS);
    assert_eq!(resolved.reason, reasons::BACKEND_PORT_MISSING);
    assert!(
        resolved.message.contains("lacks port 9090"),
        "{}",
        resolved.message
    );
}

#[test]
fn a_backend_without_ready_endpoints_is_excluded_while_empty() {
    let mut idx = mesh();
    idx.apply(split(
        "canary",
        "2024-01-01T00:00:00Z",
        &[("web-v1", "90"), ("web-v2", "10")],
    ));
    idx.delete(ObjectKind::EndpointSlice, NS, "web-v2-abc");
    assert_eq!(default_route(&idx), [(c("web-v1"), 1)]);
    assert_eq!(
        status(&idx, "canary", conditions::RESOLVED_REFS).reason,
        reasons::BACKEND_NOT_READY
    );
    idx.apply(slice("web-v2", &[80], &["10.0.2.1"]));
    assert_eq!(default_route(&idx), [(c("web-v1"), 9), (c("web-v2"), 1)]);
}

#[test]
fn the_root_may_be_its_own_backend() {
    let mut idx = mesh();
    idx.apply(split(
        "rollout",
        "2024-01-01T00:00:00Z",
        &[("web-v2", "20"), ("web", "80")],
    ));
    assert_eq!(default_route(&idx), [(c("web-v2"), 1), (c("web"), 4)]);
}

#[test]
fn the_oldest_split_wins_and_the_others_are_conflicted() {
    let mut idx = mesh();
    idx.apply(split("newer", "2024-02-01T00:00:00Z", &[("web-v2", "1")]));
    idx.apply(split("older", "2024-01-01T00:00:00Z", &[("web-v1", "1")]));
    assert_eq!(default_route(&idx), [(c("web-v1"), 1)]);
    let conflicted = status(&idx, "newer", conditions::CONFLICTED);
    assert!(conflicted.status);
    assert!(
        conflicted.message.contains("shop/older"),
        "{}",
        conflicted.message
    );
    assert!(!status(&idx, "older", conditions::CONFLICTED).status);
    // Deleting the winner promotes the other.
    idx.delete(ObjectKind::Smi(Kind::TrafficSplit), NS, "older");
    assert_eq!(default_route(&idx), [(c("web-v2"), 1)]);
    assert!(!status(&idx, "newer", conditions::CONFLICTED).status);
}

#[test]
fn split_matches_route_matching_requests_and_the_rest_to_the_root() {
    let mut idx = mesh();
    idx.apply(smi("apiVersion: specs.smi-spec.io/v1alpha4\nkind: HTTPRouteGroup\nmetadata: {name: ab, namespace: shop}\nspec:\n  matches:\n  - name: firefox\n    headers: [{user-agent: '.*Firefox.*'}]\n"));
    idx.apply(smi("apiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\nmetadata: {name: ab-test, namespace: shop}\nspec:\n  service: web\n  matches: [{kind: HTTPRouteGroup, name: ab}]\n  backends: [{service: web-v1, weight: 0}, {service: web-v2, weight: 100}]\n"));
    let cfg = idx.proxy_config(&client()).unwrap();
    let routes = &cfg.outbound[&web()].ports[0].routes;
    assert_eq!(routes.len(), 2, "{routes:#?}");
    assert_eq!(
        routes[0].matches[0].headers,
        [("user-agent".to_string(), ".*Firefox.*".to_string())]
    );
    assert_eq!(route(&idx, 80, 0), [(c("web-v2"), 1)]);
    assert_eq!(
        default_route(&idx),
        [(c("web"), 1)],
        "no catch-all split: the root's own endpoints"
    );
    // A catch-all split takes the rest.
    idx.apply(split("canary", "2024-01-01T00:00:00Z", &[("web-v1", "1")]));
    assert_eq!(default_route(&idx), [(c("web-v1"), 1)]);
    assert_eq!(route(&idx, 80, 0), [(c("web-v2"), 1)]);
}

#[test]
fn a_split_naming_a_missing_route_group_matches_nothing() {
    let mut idx = mesh();
    idx.apply(smi("apiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\nmetadata: {name: ab-test, namespace: shop}\nspec:\n  service: web\n  matches: [{kind: HTTPRouteGroup, name: nope}]\n  backends: [{service: web-v2, weight: 100}]\n"));
    let cfg = idx.proxy_config(&client()).unwrap();
    assert_eq!(cfg.outbound[&web()].ports[0].routes.len(), 1);
    assert_eq!(
        status(&idx, "ab-test", conditions::RESOLVED_REFS).reason,
        reasons::ROUTE_GROUP_NOT_FOUND
    );
}

#[test]
fn the_root_may_be_named_by_fqdn() {
    let mut idx = mesh();
    idx.apply(smi("apiVersion: split.smi-spec.io/v1alpha2\nkind: TrafficSplit\nmetadata: {name: fq, namespace: shop}\nspec:\n  service: web.shop.svc.cluster.local\n  backends: [{service: web-v2, weight: 1}]\n"));
    assert_eq!(default_route(&idx), [(c("web-v2"), 1)]);
}

#[test]
fn only_changed_pieces_are_republished() {
    let mut idx = mesh();
    idx.take_changes();
    let before = idx.proxy_config(&client()).unwrap();
    idx.apply(split(
        "canary",
        "2024-01-01T00:00:00Z",
        &[("web-v1", "90"), ("web-v2", "10")],
    ));
    let changes = idx.take_changes();
    assert!(changes.outbound);
    let after = idx.proxy_config(&client()).unwrap();
    // Services the split does not touch are the very same allocation.
    let v1 = ServiceName::new(NS, "web-v1");
    assert!(Arc::ptr_eq(&before.outbound[&v1], &after.outbound[&v1]));
    assert!(!Arc::ptr_eq(
        &before.outbound[&web()],
        &after.outbound[&web()]
    ));
    // Re-applying the same object changes nothing.
    idx.apply(split(
        "canary",
        "2024-01-01T00:00:00Z",
        &[("web-v1", "90"), ("web-v2", "10")],
    ));
    assert_eq!(idx.take_changes(), Changes::default());
}

// === Access (strict mode) ===

fn strict_mesh() -> Index {
    let mut idx = Index::new(MeshSettings::default());
    idx.apply(service("api", &[80]));
    idx.apply(slice("api", &[80], &["10.0.9.1"]));
    idx.apply(pod("api-0", "api", "api"));
    idx
}

fn api_rules(idx: &Index) -> Authorization {
    let cfg = idx
        .proxy_config(&ProxyId {
            namespace: NS.into(),
            pod: "api-0".into(),
        })
        .unwrap();
    assert_eq!(cfg.inbound.len(), 1);
    assert_eq!(cfg.inbound[0].port, 8080, "inbound ports are target ports");
    cfg.inbound[0].authorization.clone()
}

const ROUTES: &str = "apiVersion: specs.smi-spec.io/v1alpha4\nkind: HTTPRouteGroup\nmetadata: {name: api-routes, namespace: shop}\nspec:\n  matches:\n  - {name: api, pathRegex: '/api/.*', methods: [GET]}\n  - {name: admin, pathRegex: '/admin'}\n";

fn target(rules: &str) -> Object {
    smi(&format!(
        "apiVersion: access.smi-spec.io/v1alpha3\nkind: TrafficTarget\nmetadata: {{name: tt, namespace: shop}}\nspec:\n  destination: {{kind: ServiceAccount, name: api, namespace: shop}}\n  rules: {rules}\n  sources: [{{kind: ServiceAccount, name: web}}]\n"
    ))
}

#[test]
fn strict_mode_denies_without_a_target() {
    assert_eq!(api_rules(&strict_mesh()), Authorization::Allow(vec![]));
}

#[test]
fn a_target_grants_its_matches_to_its_sources() {
    let mut idx = strict_mesh();
    idx.apply(smi(ROUTES));
    idx.apply(target(
        "[{kind: HTTPRouteGroup, name: api-routes, matches: [api]}]",
    ));
    let Authorization::Allow(rules) = api_rules(&idx) else {
        panic!("strict")
    };
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].sources, [Identity::new(NS, "web")]);
    assert_eq!(rules[0].matches.len(), 1);
    assert_eq!(rules[0].matches[0].path_regex.as_deref(), Some("/api/.*"));
}

#[test]
fn omitted_matches_mean_every_match_of_the_group() {
    let mut idx = strict_mesh();
    idx.apply(smi(ROUTES));
    idx.apply(target("[{kind: HTTPRouteGroup, name: api-routes}]"));
    let Authorization::Allow(rules) = api_rules(&idx) else {
        panic!("strict")
    };
    assert_eq!(rules[0].matches.len(), 2);
}

/// The names of api-0's counted routes on its one port.
fn api_routes(idx: &Index) -> Vec<String> {
    let cfg = idx
        .proxy_config(&ProxyId {
            namespace: NS.into(),
            pod: "api-0".into(),
        })
        .unwrap();
    cfg.inbound[0]
        .routes
        .iter()
        .map(|r| format!("{}/{}", r.name.group, r.name.name))
        .collect()
}

#[test]
fn the_matches_targets_use_are_counted_routes_in_either_access_mode() {
    for mode in [AccessMode::Strict, AccessMode::Permissive] {
        let mut idx = Index::new(MeshSettings {
            access_mode: mode,
            ..MeshSettings::default()
        });
        idx.apply(service("api", &[80]));
        idx.apply(slice("api", &[80], &["10.0.9.1"]));
        idx.apply(pod("api-0", "api", "api"));
        assert!(api_routes(&idx).is_empty(), "{mode:?}");
        idx.apply(smi(ROUTES));
        // The rule names one match: only it is counted, with its match.
        idx.apply(target(
            "[{kind: HTTPRouteGroup, name: api-routes, matches: [api]}]",
        ));
        assert_eq!(api_routes(&idx), ["api-routes/api"], "{mode:?}");
        // Without matches, every match of the group, in the group's order.
        idx.apply(target("[{kind: HTTPRouteGroup, name: api-routes}]"));
        assert_eq!(
            api_routes(&idx),
            ["api-routes/api", "api-routes/admin"],
            "{mode:?}"
        );
        let cfg = idx
            .proxy_config(&ProxyId {
                namespace: NS.into(),
                pod: "api-0".into(),
            })
            .unwrap();
        assert_eq!(
            cfg.inbound[0].routes[0].http_match.path_regex.as_deref(),
            Some("/api/.*")
        );
    }
}

#[test]
fn a_missing_route_fails_closed() {
    let mut idx = strict_mesh();
    idx.apply(target("[{kind: HTTPRouteGroup, name: nope}]"));
    assert_eq!(api_rules(&idx), Authorization::Allow(vec![]));
    let obj = ObjectRef {
        kind: Kind::TrafficTarget,
        namespace: NS.into(),
        name: "tt".into(),
    };
    let resolved = idx
        .status(&obj)
        .and_then(|s| s.get(conditions::RESOLVED_REFS))
        .unwrap();
    assert_eq!(resolved.reason, reasons::ROUTE_NOT_FOUND);
}

#[test]
fn a_target_without_rules_grants_nothing() {
    let mut idx = strict_mesh();
    idx.apply(target("[]"));
    assert_eq!(api_rules(&idx), Authorization::Allow(vec![]));
    let obj = ObjectRef {
        kind: Kind::TrafficTarget,
        namespace: NS.into(),
        name: "tt".into(),
    };
    assert!(
        idx.status(&obj)
            .and_then(|s| s.get(conditions::ACCEPTED))
            .unwrap()
            .message
            .contains("grants nothing")
    );
}

#[test]
fn permissive_mode_allows_all() {
    let mut idx = index();
    idx.apply(service("api", &[80]));
    idx.apply(pod("api-0", "api", "api"));
    assert_eq!(api_rules(&idx), Authorization::AllowAll);
}

fn proxy(pod: &str) -> ProxyId {
    ProxyId {
        namespace: NS.into(),
        pod: pod.into(),
    }
}

#[test]
fn the_data_plane_comes_from_the_annotation_else_the_mesh_setting() {
    for mesh in DataPlane::ALL {
        let mut idx = Index::new(MeshSettings {
            data_plane: mesh,
            ..MeshSettings::default()
        });
        idx.apply(annotated_pod("plain", "web", "web", None));
        idx.apply(annotated_pod("envoy", "web", "web", Some("envoy")));
        idx.apply(annotated_pod("bundled", "web", "web", Some("bundled")));
        assert_eq!(data_plane(&idx, &proxy("plain")), Some(mesh));
        assert_eq!(data_plane(&idx, &proxy("envoy")), Some(DataPlane::Envoy));
        assert_eq!(
            data_plane(&idx, &proxy("bundled")),
            Some(DataPlane::Bundled)
        );
        assert_eq!(data_plane(&idx, &proxy("absent")), None);
        for p in ["plain", "envoy", "bundled"] {
            assert_eq!(invalid_data_plane(&idx, &proxy(p)), None);
        }
    }
}

#[test]
fn an_invalid_data_plane_annotation_is_reported_and_the_mesh_setting_applies() {
    let mut idx = Index::new(MeshSettings {
        data_plane: DataPlane::Bundled,
        ..MeshSettings::default()
    });
    idx.apply(annotated_pod("web-0", "web", "web", Some("Envoy")));
    assert_eq!(data_plane(&idx, &proxy("web-0")), Some(DataPlane::Bundled));
    let invalid = invalid_data_plane(&idx, &proxy("web-0")).unwrap();
    assert_eq!(
        invalid.to_string(),
        "pod shop/web-0: metadata.annotations[\"switchyard.dev/data-plane\"]: \"Envoy\" is not a \
         data plane (envoy or bundled); the mesh setting (bundled) applies"
    );
}

#[test]
fn an_annotation_change_marks_the_proxy_changed() {
    let mut idx = index();
    idx.apply(service("web", &[80]));
    idx.apply(annotated_pod("web-0", "web", "web", None));
    let before = idx.proxy_config(&proxy("web-0"));
    idx.take_changes();

    idx.apply(annotated_pod("web-0", "web", "web", Some("bundled")));
    let changes = idx.take_changes();
    assert_eq!(changes.proxies, [proxy("web-0")].into());
    assert!(!changes.outbound, "other proxies are not affected");
    assert_eq!(data_plane(&idx, &proxy("web-0")), Some(DataPlane::Bundled));
    let after = idx.proxy_config(&proxy("web-0")).unwrap();
    assert_eq!(
        Some(ProxyConfig {
            data_plane: DataPlane::Envoy,
            ..after
        }),
        before,
        "the model is the same"
    );

    idx.apply(annotated_pod("web-0", "web", "web", Some("bundled")));
    assert_eq!(idx.take_changes(), Changes::default(), "no change, no mark");
    idx.apply(annotated_pod("web-0", "web", "web", Some("nope")));
    assert_eq!(idx.take_changes().proxies, [proxy("web-0")].into());
    assert!(invalid_data_plane(&idx, &proxy("web-0")).is_some());
}

mod incremental;

#[test]
fn port_protocols_follow_app_protocol_then_the_name_and_undeclared_is_unknown() {
    use super::ingest::protocol_of;
    for (app_protocol, name, expected) in [
        (Some("http"), None, Protocol::Http),
        (None, Some("http-web"), Protocol::Http),
        (Some("kubernetes.io/h2c"), None, Protocol::Http2),
        (None, Some("grpc-api"), Protocol::Http2),
        (Some("tcp"), Some("http"), Protocol::Tcp),
        (None, Some("tcp-db"), Protocol::Tcp),
        (None, Some("redis"), Protocol::Unknown),
        (None, None, Protocol::Unknown),
        (Some("mysql"), Some("http"), Protocol::Unknown),
    ] {
        assert_eq!(
            protocol_of(app_protocol, name),
            expected,
            "{app_protocol:?} {name:?}"
        );
    }
}

#[test]
fn only_pods_the_injector_marked_are_intercepted() {
    let mut idx = index();
    let marked = |name: &str, value: &str| {
        Object::Pod(Box::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": NS, "labels": {"app": "web"},
                             "annotations": {INTERCEPTED_ANNOTATION: value}},
                "spec": {"serviceAccountName": "web", "containers": [{"name": "app"}]},
            }))
            .unwrap(),
        ))
    };
    idx.apply(marked("a", "true"));
    idx.apply(marked("b", "false"));
    idx.apply(pod("c", "web", "web"));
    let proxy = |pod: &str| ProxyId {
        namespace: NS.into(),
        pod: pod.into(),
    };
    assert!(intercepted(&idx, &proxy("a")));
    assert!(!intercepted(&idx, &proxy("b")));
    assert!(!intercepted(&idx, &proxy("c")));
    assert!(!intercepted(&idx, &proxy("missing")));
}

#[test]
fn an_interception_change_marks_the_proxy_changed() {
    let mut idx = index();
    idx.apply(pod("web-0", "web", "web"));
    idx.take_changes();
    idx.apply(Object::Pod(Box::new(
        serde_json::from_value(json!({
            "metadata": {"name": "web-0", "namespace": NS, "labels": {"app": "web"},
                         "annotations": {INTERCEPTED_ANNOTATION: "true"}},
            "spec": {"serviceAccountName": "web", "containers": [{"name": "app"}]},
        }))
        .unwrap(),
    )));
    let web_0 = ProxyId {
        namespace: NS.into(),
        pod: "web-0".into(),
    };
    assert_eq!(idx.take_changes().proxies, [web_0.clone()].into());
    assert!(intercepted(&idx, &web_0));
}

#[test]
fn routes_and_clusters_carry_the_mesh_policy() {
    let route_policy = RoutePolicy {
        timeout: std::time::Duration::from_secs(3),
        ..RoutePolicy::default()
    };
    let cluster_policy = ClusterPolicy {
        connection_limits: Some(ConnectionLimits {
            max_connections: 10,
            max_pending_requests: 5,
            max_requests: 100,
        }),
        ..ClusterPolicy::default()
    };
    let mut idx = Index::new(MeshSettings {
        route_policy: route_policy.clone(),
        cluster_policy: cluster_policy.clone(),
        ..MeshSettings::default()
    });
    idx.apply(service("web", &[80]));
    idx.apply(slice("web", &[80], &["10.0.0.1"]));
    idx.apply(pod("client-0", "client", "client"));
    let cfg = idx.proxy_config(&client()).unwrap();
    let routes = &cfg.outbound[&web()].ports[0].routes;
    assert!(!routes.is_empty());
    assert!(routes.iter().all(|r| r.policy == route_policy));
    assert_eq!(
        cfg.clusters[&ClusterName::new(&web(), 80)].policy,
        cluster_policy
    );
}

// === The Traffic Metrics API's view ===

/// A Pod of Deployment `deploy` (through its ReplicaSet, as the Deployment controller writes
/// it), labelled `app`.
fn deployment_pod(name: &str, app: &str, deploy: &str) -> Object {
    Object::Pod(Box::new(
        serde_json::from_value(json!({
            "metadata": {
                "name": name, "namespace": NS,
                "labels": {"app": app, "pod-template-hash": "5d8b9"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": format!("{deploy}-5d8b9"), "uid": "u", "controller": true}],
            },
            "spec": {"serviceAccountName": app, "containers": [{"name": "app"}]},
        }))
        .unwrap(),
    ))
}

#[test]
fn the_workloads_view_has_pods_owners_service_endpoints_and_splits() {
    use workloads::{PodEntry, SplitBackend};
    let mut idx = mesh();
    let before = idx.workloads_version();
    // web-v1's slice names web-v1-0; that Pod belongs to Deployment web-v1.
    idx.apply(deployment_pod("web-v1-0", "web-v1", "web-v1"));
    assert_ne!(idx.workloads_version(), before, "a Pod changes the view");
    idx.set_unmeshed_pod(
        NS,
        "web-v1-1",
        Some(Some(Owner {
            kind: WorkloadKind::Deployment,
            name: "web-v1".into(),
        })),
    );
    idx.apply(split(
        "s",
        "2026-01-01T00:00:00Z",
        &[("web-v1", "90"), ("web-v2", "10")],
    ));
    let w = idx.workloads();
    let id = |pod: &str| ProxyId {
        namespace: NS.into(),
        pod: pod.into(),
    };
    assert_eq!(
        w.pods_of(WorkloadKind::Deployment, NS, "web-v1"),
        [&id("web-v1-0"), &id("web-v1-1")]
    );
    assert_eq!(
        w.pod(&id("web-v1-1")).map(|e| e.meshed),
        Some(false),
        "the Pod without a proxy is counted, as not meshed"
    );
    assert_eq!(
        w.pod(&id("client-0")),
        Some(&PodEntry {
            owner: None,
            meshed: true,
            routes: BTreeSet::new(),
        })
    );
    assert_eq!(
        w.workloads(WorkloadKind::Deployment, Some(NS)),
        [(NS.to_owned(), "web-v1".to_owned())]
    );
    // The Pods the Service's EndpointSlices name.
    assert_eq!(
        w.service_pods(NS, "web-v1")
            .unwrap()
            .iter()
            .collect::<Vec<_>>(),
        [&id("web-v1-0")]
    );
    let split = w.split(NS, "s").unwrap();
    assert_eq!(split.apex, "web");
    assert_eq!(
        split.backends,
        [
            SplitBackend {
                service: "web-v1".into(),
                weight: 90
            },
            SplitBackend {
                service: "web-v2".into(),
                weight: 10
            }
        ]
    );
    // A Pod that gets a proxy is no longer un-meshed once the caller forgets it; forgetting an
    // unknown one changes nothing.
    let v = idx.workloads_version();
    idx.set_unmeshed_pod(NS, "nope", None);
    assert_eq!(idx.workloads_version(), v);
    idx.set_unmeshed_pod(NS, "web-v1-1", None);
    assert_eq!(
        idx.workloads()
            .pods_of(WorkloadKind::Deployment, NS, "web-v1"),
        [&id("web-v1-0")]
    );
}

#[test]
fn v1alpha1_quantity_weights_read_as_thousandths_in_the_view() {
    let mut idx = mesh();
    idx.apply(smi("apiVersion: split.smi-spec.io/v1alpha1\nkind: TrafficSplit\nmetadata: {name: q, namespace: shop}\nspec:\n  service: web\n  backends: [{service: web-v1, weight: '1'}, {service: web-v2, weight: 500m}]\n"));
    let w = idx.workloads();
    let weights: Vec<u32> = w
        .split(NS, "q")
        .unwrap()
        .backends
        .iter()
        .map(|b| b.weight)
        .collect();
    assert_eq!(weights, [1000, 500]);
}

#[test]
fn the_workloads_view_has_each_pods_configured_routes_and_changes_with_them() {
    let mut idx = strict_mesh();
    let api_0 = proxy("api-0");
    let routes = |idx: &Index| -> Vec<String> {
        idx.workloads()
            .pod(&proxy("api-0"))
            .unwrap()
            .routes
            .iter()
            .map(|r| format!("{}/{}", r.group, r.name))
            .collect()
    };
    let mut version = idx.workloads_version();
    // Each step: whether the view changed, and api-0's routes in it.
    let mut step = |idx: &mut Index, change: Option<Object>, delete: Option<Kind>| {
        if let Some(obj) = change {
            idx.apply(obj);
        }
        if let Some(kind) = delete {
            let name = if kind == Kind::TrafficTarget {
                "tt"
            } else {
                "api-routes"
            };
            idx.delete(ObjectKind::Smi(kind), NS, name);
        }
        let changed = idx.workloads_version() != version;
        version = idx.workloads_version();
        (changed, routes(idx))
    };
    let none: Vec<String> = Vec::new();
    // A route group no TrafficTarget names configures nothing.
    assert_eq!(
        step(&mut idx, Some(smi(ROUTES)), None),
        (false, none.clone())
    );
    // A TrafficTarget to api's identity naming one match: that route, a new view.
    let one = target("[{kind: HTTPRouteGroup, name: api-routes, matches: [api]}]");
    assert_eq!(
        step(&mut idx, Some(one.clone()), None),
        (true, vec!["api-routes/api".to_owned()])
    );
    // The same TrafficTarget again (a status write's echo): nothing to rebuild.
    assert_eq!(
        step(&mut idx, Some(one), None),
        (false, vec!["api-routes/api".to_owned()])
    );
    // Every match of the group, in name order.
    assert_eq!(
        step(
            &mut idx,
            Some(target("[{kind: HTTPRouteGroup, name: api-routes}]")),
            None
        ),
        (
            true,
            vec!["api-routes/admin".to_owned(), "api-routes/api".to_owned()]
        )
    );
    // The group loses a match.
    let fewer = smi(
        "apiVersion: specs.smi-spec.io/v1alpha4\nkind: HTTPRouteGroup\nmetadata: {name: api-routes, namespace: shop}\nspec:\n  matches:\n  - {name: api, pathRegex: '/api/.*', methods: [GET]}\n",
    );
    assert_eq!(
        step(&mut idx, Some(fewer), None),
        (true, vec!["api-routes/api".to_owned()])
    );
    // The group deleted, then back, then the TrafficTarget deleted.
    assert_eq!(
        step(&mut idx, None, Some(Kind::HttpRouteGroup)),
        (true, none.clone())
    );
    assert_eq!(
        step(&mut idx, Some(smi(ROUTES)), None),
        (
            true,
            vec!["api-routes/admin".to_owned(), "api-routes/api".to_owned()]
        )
    );
    assert_eq!(
        step(&mut idx, None, Some(Kind::TrafficTarget)),
        (true, none.clone())
    );
    // The view's routes are the proxy's compiled ones, the same names.
    idx.apply(target(
        "[{kind: HTTPRouteGroup, name: api-routes, matches: [admin]}]",
    ));
    let compiled: Vec<String> = idx
        .proxy_config(&api_0)
        .unwrap()
        .inbound
        .iter()
        .flat_map(|p| &p.routes)
        .map(|r| format!("{}/{}", r.name.group, r.name.name))
        .collect();
    assert_eq!(routes(&idx), compiled);
    assert_eq!(compiled, ["api-routes/admin"]);
    // A Pod whose identity no TrafficTarget names has none.
    idx.apply(pod("api-0", "other", "api"));
    assert_eq!(routes(&idx), none);
}
