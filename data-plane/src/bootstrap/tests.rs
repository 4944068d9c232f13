use std::time::Duration;

use serde_json::json;
use switchyard_adapters::envoy::{BootstrapOptions, XdsApi, bootstrap};

use super::*;

fn options() -> BootstrapOptions {
    BootstrapOptions::new(
        "demo/web-0",
        "127.0.1.2".parse().unwrap(),
        "127.0.0.1",
        15010,
        "secret-token",
    )
}

#[test]
fn reads_what_the_control_plane_writes_for_envoy() {
    let mut opts = options();
    opts.api = XdsApi::Delta;
    opts.connect_timeout = Duration::from_millis(250);
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
    assert_eq!(b.authorization.as_deref(), Some("Bearer secret-token"));
    assert!(b.delta);
    assert_eq!(b.connect_timeout, Duration::from_millis(250));

    let sotw = Bootstrap::from_json(&bootstrap(&options())).unwrap();
    assert!(!sotw.delta);
}

#[test]
fn debug_leaves_the_token_out() {
    let b = Bootstrap::from_json(&bootstrap(&options())).unwrap();
    let shown = format!("{b:?}");
    assert!(!shown.contains("secret-token"), "{shown}");
    assert!(shown.contains("<redacted>"), "{shown}");
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
    v["static_resources"]["clusters"][0]["name"] = json!("other");
    let e = Bootstrap::from_json(&v).unwrap_err().to_string();
    assert!(e.contains("no cluster \"xds\""), "{e}");

    let mut v = bootstrap(&options());
    v["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        ["address"]["socket_address"]["port_value"] = json!(70000);
    let e = Bootstrap::from_json(&v).unwrap_err().to_string();
    assert!(
        e.starts_with(
            "static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints[0].\
             endpoint.address.socket_address.port_value:"
        ),
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
