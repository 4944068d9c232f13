use std::time::Duration;

use serde_json::json;
use switchyard_adapters::envoy::{BootstrapOptions, XdsApi, XdsCa, bootstrap};

use super::*;

fn options() -> BootstrapOptions {
    BootstrapOptions::new(
        "demo/web-0",
        "127.0.1.2".parse().unwrap(),
        "127.0.0.1",
        15010,
        "/run/token",
        XdsCa::File("/run/xds-ca.crt".into()),
    )
}

#[test]
fn reads_what_the_control_plane_writes_for_envoy() {
    let mut opts = options();
    opts.api = XdsApi::Delta;
    let b = Bootstrap::from_json(&bootstrap(&opts)).unwrap();
    assert_eq!(b.node_id, "demo/web-0");
    assert_eq!(b.node_cluster, "switchyard");
    assert_eq!(b.admin, "127.0.1.2:15000".parse().unwrap());
    assert_eq!(
        b.xds,
        XdsEndpoint {
            host: "127.0.0.1".into(),
            port: 15010
        }
    );
    assert_eq!(
        b.xds_tls,
        Some(XdsTls {
            roots: DataSource::File("/run/xds-ca.crt".into()),
            server_name: "127.0.0.1".into(),
        })
    );
    assert_eq!(
        b.credential,
        Some(Credential::File {
            path: "/run/token".into(),
            prefix: "Bearer ".into(),
        })
    );
    assert!(b.delta);
    assert_eq!(b.connect_timeout, Duration::from_secs(5));

    let sotw = Bootstrap::from_json(&bootstrap(&options())).unwrap();
    assert!(!sotw.delta);
    assert_eq!(sotw.health, None);

    let mut with_health = options();
    with_health.health = Some("10.244.0.7:15020".parse().unwrap());
    with_health.app_probes = vec![switchyard_adapters::envoy::AppProbe {
        path: "/app-health/web/readyz".into(),
        port: 8080,
        target: "/healthz?full=1".into(),
    }];
    let b = Bootstrap::from_json(&bootstrap(&with_health)).unwrap();
    assert_eq!(b.health, Some("10.244.0.7:15020".parse().unwrap()));
    assert_eq!(
        b.health_forwards,
        [HealthForward {
            path: "/app-health/web/readyz".into(),
            upstream: "10.244.0.7:8080".parse().unwrap(),
            source: Some("127.0.0.6".parse().unwrap()),
            target: "/healthz?full=1".into(),
        }]
    );

    opts.xds_host = "fd00::7".into();
    opts.xds_server_name = Some("switchyard.switchyard-system.svc".into());
    opts.xds_ca = XdsCa::Pem("-----BEGIN CERTIFICATE-----".into());
    let b = Bootstrap::from_json(&bootstrap(&opts)).unwrap();
    assert_eq!(b.xds.host, "fd00::7");
    assert_eq!(
        b.xds_tls,
        Some(XdsTls {
            roots: DataSource::Inline("-----BEGIN CERTIFICATE-----".into()),
            server_name: "switchyard.switchyard-system.svc".into(),
        })
    );
}

#[test]
fn the_token_is_read_from_its_file_for_every_stream() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    let credential = Credential::File {
        path: path.clone(),
        prefix: "Bearer ".into(),
    };
    assert!(credential.authorization().is_err());
    std::fs::write(&path, "first\n").unwrap();
    assert_eq!(credential.authorization().unwrap(), "Bearer first");
    std::fs::write(&path, "second").unwrap();
    assert_eq!(credential.authorization().unwrap(), "Bearer second");
}

#[test]
fn a_hand_written_envoy_grpc_bootstrap_still_works_and_debug_leaves_its_token_out() {
    let v = json!({
        "node": { "id": "demo/web-0" },
        "admin": { "address": { "socket_address": { "address": "127.0.0.1", "port_value": 15000 } } },
        "dynamic_resources": { "ads_config": {
            "api_type": "GRPC",
            "grpc_services": [{
                "envoy_grpc": { "cluster_name": "xds" },
                "initial_metadata": [{ "key": "authorization", "value": "Bearer secret-token" }],
            }],
        } },
        "static_resources": { "clusters": [{
            "name": "xds",
            "connect_timeout": "0.250s",
            "load_assignment": { "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": {
                "socket_address": { "address": "127.0.0.1", "port_value": 15010 } } } }] }] },
        }] },
    });
    let b = Bootstrap::from_json(&v).unwrap();
    assert_eq!(b.xds.port, 15010);
    assert_eq!(b.xds_tls, None);
    assert_eq!(b.connect_timeout, Duration::from_millis(250));
    assert_eq!(
        b.credential,
        Some(Credential::Inline("Bearer secret-token".into()))
    );
    let shown = format!("{b:?}");
    assert!(!shown.contains("secret-token"), "{shown}");
    assert!(shown.contains("<redacted>"), "{shown}");

    let mut missing = v.clone();
    missing["static_resources"]["clusters"][0]["name"] = json!("other");
    let e = Bootstrap::from_json(&missing).unwrap_err().to_string();
    assert!(e.contains("no cluster \"xds\""), "{e}");

    let mut port = v;
    port["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
        ["endpoint"]["address"]["socket_address"]["port_value"] = json!(70000);
    let e = Bootstrap::from_json(&port).unwrap_err().to_string();
    assert!(
        e.starts_with(
            "static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints[0].\
             endpoint.address.socket_address.port_value:"
        ),
        "{e}"
    );
}

#[test]
fn a_missing_or_foreign_field_is_named() {
    let mut v = bootstrap(&options());
    v["dynamic_resources"]["ads_config"]["api_type"] = json!("REST");
    let e = Bootstrap::from_json(&v).unwrap_err().to_string();
    assert!(
        e.starts_with("dynamic_resources.ads_config.api_type:"),
        "{e}"
    );

    let mut v = bootstrap(&options());
    v["dynamic_resources"]["ads_config"]["grpc_services"][0]["google_grpc"]["target_uri"] =
        json!("no-port");
    let e = Bootstrap::from_json(&v).unwrap_err().to_string();
    assert!(
        e.starts_with("dynamic_resources.ads_config.grpc_services[0].google_grpc.target_uri:"),
        "{e}"
    );

    let mut v = bootstrap(&options());
    v["dynamic_resources"]["ads_config"]["grpc_services"][0]["google_grpc"]["call_credentials"]
        [0]["from_plugin"]["name"] = json!("envoy.grpc_credentials.aws_iam");
    let e = Bootstrap::from_json(&v).unwrap_err().to_string();
    assert!(
        e.contains("only envoy.grpc_credentials.file_based_metadata"),
        "{e}"
    );

    let mut v = bootstrap(&options());
    v["node"] = json!({});
    let e = Bootstrap::from_json(&v).unwrap_err().to_string();
    assert_eq!(e, "node.id: required string");
}

#[test]
fn load_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.json");
    std::fs::write(&path, "{").unwrap();
    let e = Bootstrap::load(&path).unwrap_err().to_string();
    assert!(e.contains("b.json: not JSON"), "{e}");
}
