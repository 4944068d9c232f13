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

/// The metrics service sink as Envoy takes it, to the ADS service `service`.
fn metrics_sink(service: serde_json::Value) -> serde_json::Value {
    json!([{
        "name": "envoy.stat_sinks.metrics_service",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.config.metrics.v3.MetricsServiceConfig",
            "transport_api_version": "V3",
            "report_counters_as_deltas": true,
            "emit_tags_as_labels": true,
            "histogram_emit_mode": "HISTOGRAM",
            "grpc_service": service,
        },
    }])
}

#[test]
fn the_metrics_service_sink_goes_to_the_ads_service() {
    // The adapter's bootstrap pushes every 5 s, in batches of 1,000 families.
    let mut v = bootstrap(&options());
    assert_eq!(
        Bootstrap::from_json(&v).unwrap().metrics_sink,
        Some(MetricsSink {
            flush_interval: Duration::from_secs(5),
            batch_size: Some(1_000),
        })
    );
    // No sink: no push, whatever the interval.
    let v = &mut v;
    v.as_object_mut().unwrap().remove("stats_sinks");
    let mut v = v.clone();
    assert_eq!(Bootstrap::from_json(&v).unwrap().metrics_sink, None);
    v["stats_flush_interval"] = json!("2s");
    assert_eq!(Bootstrap::from_json(&v).unwrap().metrics_sink, None);

    // google_grpc: the ADS service's own channel; its stat prefix may differ.
    let mut google = v["dynamic_resources"]["ads_config"]["grpc_services"][0].clone();
    google["google_grpc"]["stat_prefix"] = json!("metrics_service");
    v["stats_sinks"] = metrics_sink(google.clone());
    assert_eq!(
        Bootstrap::from_json(&v).unwrap().metrics_sink,
        Some(MetricsSink {
            flush_interval: Duration::from_secs(2),
            batch_size: None,
        })
    );
    v.as_object_mut().unwrap().remove("stats_flush_interval");
    let default = Bootstrap::from_json(&v).unwrap().metrics_sink.unwrap();
    assert_eq!(
        default.flush_interval,
        Duration::from_secs(5),
        "Envoy's default"
    );

    // envoy_grpc: the ADS cluster.
    let mut hand = json!({
        "node": { "id": "demo/web-0" },
        "admin": { "address": { "socket_address": { "address": "127.0.0.1", "port_value": 15000 } } },
        "stats_flush_interval": "1s",
        "stats_sinks": metrics_sink(json!({ "envoy_grpc": { "cluster_name": "xds" } })),
        "dynamic_resources": { "ads_config": {
            "api_type": "GRPC",
            "grpc_services": [{ "envoy_grpc": { "cluster_name": "xds" } }],
        } },
        "static_resources": { "clusters": [{
            "name": "xds",
            "load_assignment": { "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": {
                "socket_address": { "address": "127.0.0.1", "port_value": 15010 } } } }] }] },
        }] },
    });
    assert_eq!(
        Bootstrap::from_json(&hand).unwrap().metrics_sink,
        Some(MetricsSink {
            flush_interval: Duration::from_secs(1),
            batch_size: None,
        })
    );

    // What the proxy does not do is refused, by field.
    let refused = |v: &serde_json::Value| Bootstrap::from_json(v).unwrap_err().to_string();
    let config = "stats_sinks[0].typed_config";
    for (key, value, field) in [
        (
            "report_counters_as_deltas",
            json!(false),
            "report_counters_as_deltas",
        ),
        ("emit_tags_as_labels", json!(false), "emit_tags_as_labels"),
        (
            "histogram_emit_mode",
            json!("SUMMARY"),
            "histogram_emit_mode",
        ),
        (
            "transport_api_version",
            json!("AUTO"),
            "transport_api_version",
        ),
        (
            "grpc_service",
            json!({ "envoy_grpc": { "cluster_name": "elsewhere" } }),
            "grpc_service",
        ),
        ("grpc_service", google.clone(), "grpc_service"),
        (
            "grpc_service",
            json!({ "envoy_grpc": { "cluster_name": "xds" }, "timeout": "1s" }),
            "grpc_service.timeout",
        ),
        ("emit_summary", json!(true), "emit_summary"),
        ("batch_size", json!("many"), "batch_size"),
    ] {
        let mut v = hand.clone();
        v["stats_sinks"][0]["typed_config"][key] = value;
        let e = refused(&v);
        assert!(e.starts_with(&format!("{config}.{field}:")), "{key}: {e}");
    }
    let mut v = hand.clone();
    v["stats_sinks"][0]["typed_config"]
        .as_object_mut()
        .unwrap()
        .remove("report_counters_as_deltas");
    assert!(refused(&v).starts_with(&format!("{config}.report_counters_as_deltas:")));
    let mut v = hand.clone();
    v["stats_sinks"][0]["name"] = json!("envoy.stat_sinks.statsd");
    assert!(refused(&v).starts_with("stats_sinks[0].name:"));
    let mut v = hand.clone();
    let sink = v["stats_sinks"][0].clone();
    v["stats_sinks"] = json!([sink.clone(), sink]);
    assert!(refused(&v).starts_with("stats_sinks:"));
    for interval in ["0.5s", "301s", "soon"] {
        hand["stats_flush_interval"] = json!(interval);
        assert!(
            refused(&hand).starts_with("stats_flush_interval:"),
            "{interval}"
        );
    }
}
