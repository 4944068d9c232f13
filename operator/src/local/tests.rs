//! Tests of `switchyard compile`'s rendering of xDS resources as proto3 JSON.

use std::{collections::BTreeSet, path::Path};

use envoy_types::pb::{
    envoy::config::core::v3::{DataSource, data_source},
    envoy::extensions::transport_sockets::tls::v3::{GenericSecret, Secret, secret},
    google::protobuf::Any,
};
use prost::Name;
use serde_json::Value;
use switchyard_adapters::{model::AccessMode, test_support::NESTED_TYPES};

use crate::xds::{snapshot::TypeUrl, store::ProxyKey};

use super::*;
use crate::json_lookup::named;

/// Every resource of one proxy, rendered, keyed by `(message name, resource name)`.
fn compile(dir: &Path, namespace: &str, pod: &str) -> BTreeMap<(String, String), Value> {
    compile_with(LocalConfig::new(dir), namespace, pod)
}

fn compile_with(
    config: LocalConfig,
    namespace: &str,
    pod: &str,
) -> BTreeMap<(String, String), Value> {
    let mut local = Local::new(config).unwrap();
    let tick = local.tick_without_state().unwrap();
    assert!(tick.reports.is_empty(), "{:?}", tick.reports);
    let proxy = ProxyId {
        namespace: namespace.into(),
        pod: pod.into(),
    };
    let out = local.compile_proxy(&proxy).unwrap();
    out.resources
        .iter()
        .map(|r| {
            let short = r.type_url.rsplit('.').next().unwrap().to_owned();
            ((short, r.name.clone()), render_resource(&r.resource))
        })
        .collect()
}

fn canary() -> BTreeMap<(String, String), Value> {
    compile(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/canary"),
        "demo",
        "client-0",
    )
}

fn get<'a>(resources: &'a BTreeMap<(String, String), Value>, kind: &str, name: &str) -> &'a Value {
    resources
        .get(&(kind.to_owned(), name.to_owned()))
        .unwrap_or_else(|| panic!("no {kind} {name} in {:?}", resources.keys()))
}

/// Every `@type` in a rendered value, nested ones included; panics on an `error`.
fn types_in(value: &Value, found: &mut BTreeSet<String>) {
    match value {
        Value::Object(fields) => {
            assert!(!fields.contains_key("error"), "{value:#}");
            if let Some(Value::String(t)) = fields.get("@type") {
                found.insert(t.clone());
            }
            fields.values().for_each(|v| types_in(v, found));
        }
        Value::Array(items) => items.iter().for_each(|v| types_in(v, found)),
        _ => {}
    }
}

#[test]
fn clusters_render_with_proto_json_names_and_durations() {
    let resources = canary();
    let cluster = get(&resources, "Cluster", "demo/web-v1|80");
    assert_eq!(
        cluster["@type"],
        "type.googleapis.com/envoy.config.cluster.v3.Cluster"
    );
    assert_eq!(cluster["name"], "demo/web-v1|80");
    // Enums by name, durations as strings, camelCase: what Envoy's /config_dump shows.
    assert_eq!(cluster["type"], "EDS");
    assert_eq!(cluster["connectTimeout"], "1s");
    assert_eq!(
        cluster["edsClusterConfig"]["edsConfig"]["resourceApiVersion"],
        "V3"
    );
    let cla = get(&resources, "ClusterLoadAssignment", "demo/web-v1|80");
    assert_eq!(
        cla["endpoints"][0]["lbEndpoints"][0]["endpoint"]["address"]["socketAddress"],
        serde_json::json!({ "address": "127.0.0.1", "portValue": 18081 })
    );
}

#[test]
fn the_listener_expands_its_http_connection_manager() {
    let resources = canary();
    let listener = get(&resources, "Listener", "outbound_http");
    assert_eq!(listener["trafficDirection"], "OUTBOUND");
    // After the connection limit.
    assert_eq!(
        listener["filterChains"][0]["filters"][0]["name"],
        "envoy.filters.network.connection_limit"
    );
    let filter = &listener["filterChains"][0]["filters"][1];
    assert_eq!(
        filter["name"],
        "envoy.filters.network.http_connection_manager"
    );
    let hcm = &filter["typedConfig"];
    assert_eq!(
        hcm["@type"],
        "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.\
         HttpConnectionManager"
    );
    assert_eq!(hcm["rds"]["routeConfigName"], "outbound_http");
    assert_eq!(
        hcm["httpFilters"][0]["typedConfig"]["@type"],
        "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
    );
}

#[test]
fn the_route_splits_web_90_to_10() {
    let resources = canary();
    let route = get(&resources, "RouteConfiguration", "outbound_http");
    let web = named(&route["virtualHosts"], "demo/web|80");
    let action = &web["routes"][0]["route"];
    let weights: Vec<(&str, u64)> = action["weightedClusters"]["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["weight"].as_u64().unwrap()))
        .collect();
    // The index divides weights by their common divisor, so 90/10 arrives as 9/1.
    assert_eq!(weights, [("demo/web-v1|80", 9), ("demo/web-v2|80", 1)]);
    assert_eq!(action["timeout"], "15s");
    // uint64 is a string in proto3 JSON.
    assert_eq!(action["retryPolicy"]["hostSelectionRetryMaxAttempts"], "3");
}

/// A mesh with an inbound side (RBAC on HTTP and TCP) and an HTTP/2 port, so that every type
/// the Envoy adapter puts in an `Any` shows up.
const SERVED: &str = r#"
apiVersion: v1
kind: ServiceAccount
metadata: {name: web, namespace: demo}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: client, namespace: demo}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo}
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: 8080, appProtocol: http}
  - {name: grpc, port: 9090, targetPort: 9090, appProtocol: grpc}
  - {name: db, port: 5432, targetPort: 5432}
  - {name: cache, port: 6379, targetPort: 6379}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: demo, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}, {name: grpc, port: 9090}, {name: db, port: 5432}]
endpoints:
- addresses: [127.0.2.1]
  conditions: {ready: true}
  targetRef: {kind: Pod, name: web-0, namespace: demo}
---
apiVersion: v1
kind: Pod
metadata: {name: web-0, namespace: demo, labels: {app: web}}
spec: {serviceAccountName: web, containers: [{name: app}]}
status: {podIP: 127.0.2.1}
---
apiVersion: v1
kind: Pod
metadata: {name: client-0, namespace: demo, labels: {app: client}}
spec: {serviceAccountName: client, containers: [{name: app}]}
status: {podIP: 127.0.1.1}
---
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: api, namespace: demo}
spec:
  matches: [{name: get, pathRegex: "/api/.*", methods: [GET]}]
---
apiVersion: specs.smi-spec.io/v1alpha4
kind: TCPRoute
metadata: {name: db, namespace: demo}
spec: {matches: {ports: [5432]}}
---
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: client-to-web, namespace: demo}
spec:
  destination: {kind: ServiceAccount, name: web, namespace: demo}
  rules:
  - {kind: HTTPRouteGroup, name: api, matches: [get]}
  - {kind: TCPRoute, name: db}
  sources: [{kind: ServiceAccount, name: client, namespace: demo}]
"#;

#[test]
fn every_type_the_adapter_emits_is_in_the_descriptor_set() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mesh.yaml"), SERVED).unwrap();
    let mut found = BTreeSet::new();
    for mode in [AccessMode::Strict, AccessMode::Permissive] {
        for pod in ["web-0", "client-0"] {
            let mut config = LocalConfig::new(dir.path());
            config.settings.access_mode = mode;
            for value in compile_with(config, "demo", pod).values() {
                types_in(value, &mut found);
            }
        }
    }
    let found: Vec<&str> = found
        .iter()
        .map(|t| t.strip_prefix("type.googleapis.com/").unwrap())
        .collect();
    let resources = [
        "envoy.config.cluster.v3.Cluster",
        "envoy.config.endpoint.v3.ClusterLoadAssignment",
        "envoy.config.listener.v3.Listener",
        "envoy.config.route.v3.RouteConfiguration",
    ];
    let expected: Vec<&str> = resources.into_iter().chain(NESTED_TYPES).collect();
    assert_eq!(found, expected);
}

#[test]
fn secrets_render_for_sds() {
    let secret = Secret {
        name: "spiffe://cluster.local/ns/demo/sa/web".to_owned(),
        r#type: Some(secret::Type::GenericSecret(GenericSecret {
            secret: Some(DataSource {
                specifier: Some(data_source::Specifier::InlineBytes(b"key".to_vec())),
                ..Default::default()
            }),
            ..Default::default()
        })),
    };
    let any = Any {
        type_url: Secret::type_url(),
        value: prost::Message::encode_to_vec(&secret),
    };
    let json = render_resource(&any);
    assert_eq!(json["name"], "spiffe://cluster.local/ns/demo/sa/web");
    // bytes are base64 in proto3 JSON.
    assert_eq!(json["genericSecret"]["secret"]["inlineBytes"], "a2V5");
}

#[test]
fn unknown_or_broken_resources_render_as_errors() {
    let unknown = Any {
        type_url: "type.googleapis.com/example.v1.Nope".to_owned(),
        value: vec![1, 2, 3],
    };
    assert_eq!(
        render_resource(&unknown),
        serde_json::json!({
            "@type": "type.googleapis.com/example.v1.Nope",
            "error": "unknown type",
            "bytes": 3,
        })
    );
    let broken = Any {
        type_url: envoy::CLUSTER_TYPE_URL.to_owned(),
        // Field 1 (name) as a length-delimited string that runs past the end.
        value: vec![0x0a, 0x05, b'a'],
    };
    let json = render_resource(&broken);
    assert_eq!(json["bytes"], 3);
    assert!(
        json["error"].as_str().unwrap().starts_with("cannot decode"),
        "{json}"
    );
}

/// The secret names in one proxy's snapshot, and their versions.
fn secrets(local: &Local, pod: &str) -> Vec<(String, crate::xds::snapshot::Version)> {
    let snapshot = local
        .store()
        .get(&ProxyKey::new(format!("demo/{pod}")))
        .expect("a snapshot");
    snapshot
        .resources(crate::xds::snapshot::TypeUrl::Secret)
        .iter()
        .map(|r| (r.name().to_owned(), r.version()))
        .collect()
}

#[test]
fn each_proxy_gets_only_its_own_certificate_and_renewals_are_pushed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mesh.yaml"), SERVED).unwrap();
    let mut config = LocalConfig::new(dir.path());
    config.ca.workload_lifetime = Duration::from_secs(30);
    let mut local = Local::new(config).unwrap();
    let t0 = SystemTime::now();
    let tick = local.tick_at(t0).unwrap();
    assert_eq!(tick.pushed, 2, "{tick:?}");

    let web = secrets(&local, "web-0");
    let names: Vec<&str> = web.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "spiffe://cluster.local",
            "spiffe://cluster.local/ns/demo/sa/web"
        ],
        "the trust bundle and web's own certificate, nothing else"
    );
    let client = secrets(&local, "client-0");
    assert_eq!(client[1].0, "spiffe://cluster.local/ns/demo/sa/client");
    assert_eq!(web[0], client[0], "one trust bundle");

    // Before two thirds of the lifetime nothing is renewed.
    assert_eq!(
        local.tick_at(t0 + Duration::from_secs(15)).unwrap().pushed,
        0
    );
    assert_eq!(secrets(&local, "web-0"), web);
    // After, every certificate is, and pushed; the bundle stays.
    assert_eq!(
        local.tick_at(t0 + Duration::from_secs(21)).unwrap().pushed,
        2
    );
    let renewed = secrets(&local, "web-0");
    assert_eq!(renewed[0], web[0]);
    assert_ne!(renewed[1].1, web[1].1, "a new certificate");
}

#[cfg(unix)]
#[test]
fn tokens_and_bootstraps_are_readable_by_their_owner_only() {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mesh.yaml"), SERVED).unwrap();
    let mut local = Local::new(LocalConfig::new(dir.path())).unwrap();
    local.tick().unwrap();
    let state = dir.path().join(".switchyard");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&state), 0o700);
    let files: Vec<_> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(files.len() >= 4, "{files:?}");
    for f in files {
        // The xDS server's certificate directory: its keys are private, its certificates not.
        let want = if f.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode(&f), want, "{}", f.display());
    }
    let xds = state.join("xds");
    assert_eq!(mode(&xds.join("tls.key")), 0o600);
    assert_eq!(mode(&xds.join("ca.key")), 0o600);
    assert_eq!(mode(&xds.join("ca.crt")), 0o644);
}

fn demo(pod: &str) -> ProxyId {
    ProxyId {
        namespace: "demo".into(),
        pod: pod.into(),
    }
}

/// [`SERVED`] with `web-0` annotated with `switchyard.dev/data-plane: <value>`.
fn served_with_web_on(value: &str) -> String {
    let plain = "metadata: {name: web-0, namespace: demo, labels: {app: web}}";
    assert!(SERVED.contains(plain));
    SERVED.replace(
        plain,
        &format!(
            "metadata: {{name: web-0, namespace: demo, labels: {{app: web}}, annotations: \
             {{switchyard.dev/data-plane: {value}}}}}"
        ),
    )
}

#[test]
fn annotated_pods_are_compiled_by_the_bundled_adapter() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mesh.yaml");
    std::fs::write(&file, SERVED).unwrap();
    let mut local = Local::new(LocalConfig::new(dir.path())).unwrap();
    let t0 = SystemTime::now();
    local.tick_at(t0).unwrap();
    assert_eq!(local.data_plane(&demo("web-0")), Some(DataPlane::Envoy));
    let (_, _, verdicts) = local.adapter_cache_len();
    assert_eq!(
        verdicts, 0,
        "only Envoy proxies: the bundled adapter checked nothing"
    );
    let versions = |local: &Local| {
        let snapshot = local.store().get(&ProxyKey::new("demo/web-0")).unwrap();
        [
            TypeUrl::Cluster,
            TypeUrl::Listener,
            TypeUrl::RouteConfiguration,
        ]
        .into_iter()
        .flat_map(|t| {
            let resources = snapshot.resources(t);
            resources
                .iter()
                .map(|r| (r.name().to_owned(), r.version()))
                .collect::<Vec<_>>()
        })
        .collect::<Vec<_>>()
    };
    let envoy_versions = versions(&local);
    assert!(!envoy_versions.is_empty());

    std::fs::write(&file, served_with_web_on("bundled")).unwrap();
    let tick = local.tick_at(t0).unwrap();
    assert!(
        !tick.warnings.iter().any(|w| w.contains("bundled")),
        "{:?}",
        tick.warnings
    );
    assert_eq!(local.data_plane(&demo("web-0")), Some(DataPlane::Bundled));
    assert_eq!(local.data_plane(&demo("client-0")), Some(DataPlane::Envoy));
    let (_, _, verdicts) = local.adapter_cache_len();
    assert!(verdicts > 0, "web-0 went through the bundled adapter");
    // Everything this mesh needs is in the subset, so the proxy's resources stay the same.
    assert_eq!(versions(&local), envoy_versions);
    // The bootstrap is the same Envoy v3 file for both data planes.
    let bootstrap = dir.path().join(".switchyard/demo.web-0.bootstrap.json");
    assert!(bootstrap.is_file());
}

#[test]
fn the_mesh_setting_picks_the_data_plane_of_unannotated_pods() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mesh.yaml"), served_with_web_on("envoy")).unwrap();
    let mut config = LocalConfig::new(dir.path());
    config.settings.data_plane = DataPlane::Bundled;
    let mut local = Local::new(config).unwrap();
    local.tick().unwrap();
    assert_eq!(
        local.data_plane(&demo("client-0")),
        Some(DataPlane::Bundled)
    );
    assert_eq!(local.data_plane(&demo("web-0")), Some(DataPlane::Envoy));
    assert!(local.adapter_cache_len().2 > 0);
}

#[test]
fn an_invalid_data_plane_annotation_is_reported_on_the_pod() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mesh.yaml"), served_with_web_on("bundeld")).unwrap();
    let mut local = Local::new(LocalConfig::new(dir.path())).unwrap();
    let tick = local.tick().unwrap();
    let expected = "pod demo/web-0: metadata.annotations[\"switchyard.dev/data-plane\"]: \
                    \"bundeld\" is not a data plane (envoy or bundled); the mesh setting \
                    (envoy) applies";
    let about_the_pod: Vec<&String> = tick
        .warnings
        .iter()
        .filter(|w| w.contains("data-plane"))
        .collect();
    assert_eq!(about_the_pod, [expected], "once, naming pod and annotation");
    assert_eq!(local.data_plane(&demo("web-0")), Some(DataPlane::Envoy));
    assert_eq!(local.adapter_cache_len().2, 0, "compiled for Envoy");
    // `switchyard compile` carries it too, first.
    let out = local.compile_proxy(&demo("web-0")).unwrap();
    assert_eq!(out.warnings[0], expected);
    let client = local.compile_proxy(&demo("client-0")).unwrap();
    assert!(!client.warnings.iter().any(|w| w.contains("data-plane")));
}
