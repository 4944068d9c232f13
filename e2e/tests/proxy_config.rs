//! `switchyard proxy-config` against local mode and the real sidecar of the suite's data plane:
//! the route shows the TrafficSplit's weighted clusters; an edit of the split shows once the
//! proxy ACKed it; on Envoy the clusters are those of Envoy's own `/config_dump`; the proxy's
//! private key shows nowhere; an unknown proxy is named in the error.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: a panic is the failure report"
)]

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    process::Command,
    time::Duration,
};

use envoy_types::pb::envoy::{
    config::core::v3::{Node, data_source},
    extensions::transport_sockets::tls::v3::{Secret, secret},
    service::discovery::v3::DiscoveryRequest,
};
use prost::Message as _;
use serde_json::Value;
use switchyard_e2e::{
    DataPlane,
    mesh::{Backend, Mesh, http_service, meshed_http_service, pod, split, wait_for},
    switchyard_bin,
};

const SECRET_TYPE: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// `switchyard proxy-config <args> --admin <mesh's admin>`: exit code and stdout + stderr.
fn proxy_config(mesh: &Mesh, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(switchyard_bin())
        .arg("proxy-config")
        .args(args)
        .args(["--admin", &mesh.admin.to_string()])
        .output()
        .expect("running switchyard proxy-config");
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn json(mesh: &Mesh, outputs: &mut Vec<String>) -> Value {
    let (code, text) = proxy_config(mesh, &["client-0", "-n", "demo", "-o", "json"]);
    assert_eq!(code, Some(0), "{text}");
    outputs.push(text.clone());
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// The weighted clusters of the route configuration that sends `web.demo` somewhere.
fn web_weights(config: &Value) -> BTreeMap<String, u64> {
    let mut weights = BTreeMap::new();
    for rc in config["types"]["RDS"]["resources"].as_array().unwrap() {
        for vh in rc["virtualHosts"].as_array().into_iter().flatten() {
            if !vh["domains"]
                .as_array()
                .is_some_and(|d| d.iter().any(|d| d == "web.demo"))
            {
                continue;
            }
            for route in vh["routes"].as_array().into_iter().flatten() {
                for c in route["route"]["weightedClusters"]["clusters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    weights.insert(
                        c["name"].as_str().unwrap().to_owned(),
                        c["weight"].as_u64().unwrap(),
                    );
                }
            }
        }
    }
    weights
}

fn synced(config: &Value, t: &str) -> bool {
    config["types"][t]["state"] == "SYNCED"
}

fn names(config: &Value, t: &str) -> BTreeSet<String> {
    config["types"][t]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect()
}

/// The PEM key of the client's certificate, as the xDS server gives it to the client's own
/// token: what must never show.
fn private_key(mesh: &Mesh, secret_name: &str) -> String {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let first = DiscoveryRequest {
            node: Some(Node {
                id: "demo/client-0".into(),
                ..Node::default()
            }),
            type_url: SECRET_TYPE.into(),
            resource_names: vec![secret_name.to_owned()],
            ..DiscoveryRequest::default()
        };
        let (_tx, mut responses) = mesh.ads_stream_as("client-0", first).await;
        let response = tokio::time::timeout(Duration::from_secs(10), responses.message())
            .await
            .expect("the secret in time")
            .unwrap()
            .expect("an open stream");
        let secret = Secret::decode(response.resources[0].value.as_slice()).unwrap();
        let Some(secret::Type::TlsCertificate(cert)) = secret.r#type else {
            panic!("not a certificate: {secret:?}");
        };
        match cert.private_key.and_then(|k| k.specifier) {
            Some(data_source::Specifier::InlineString(pem)) => pem,
            Some(data_source::Specifier::InlineBytes(pem)) => String::from_utf8(pem).unwrap(),
            other => panic!("an inline key, not {other:?}"),
        }
    })
}

#[test]
fn proxy_config_shows_the_live_split_and_never_the_private_key() {
    live_split_and_no_private_key(21, "sotw");
}

#[test]
fn proxy_config_shows_the_same_over_delta() {
    live_split_and_no_private_key(22, "delta");
}

/// The client of a 90/10 split on `127.0.<subnet>.1`, served over `protocol` (`sotw` or
/// `delta`).
fn live_split_and_no_private_key(subnet: u8, protocol: &str) {
    let ip = |host| Ipv4Addr::new(127, 0, subnet, host);
    let backends = [
        Backend::http("root"),
        Backend::http("v1"),
        Backend::http("v2"),
    ];
    let services = [
        http_service("web", Some(&backends[0])),
        http_service("web-v1", Some(&backends[1])),
        http_service("web-v2", Some(&backends[2])),
    ]
    .join("---\n");
    // A meshed Service, so the client's clusters use mTLS and it asks for its certificate.
    let api = format!(
        "{}---\n{}",
        pod("api-0", "api", &[("app", "api")], ip(2)),
        meshed_http_service("api", "api-0", ip(2), 8080)
    );
    let mesh = Mesh::builder(ip(1))
        .file("services.yaml", services)
        .file("api.yaml", api)
        .file(
            "split.yaml",
            split("v1alpha4", &[("web-v1", "90"), ("web-v2", "10")]),
        )
        .args(if protocol == "delta" {
            &["--delta"]
        } else {
            &[]
        })
        .start();
    wait_for(
        Duration::from_secs(10),
        || {
            mesh.tally("web.demo", 10, &[])
                .keys()
                .all(|k| k == "v1" || k == "v2")
        },
        "the split to be served",
    );
    let mut outputs = Vec::new();

    // The split, as the route the proxy acknowledged.
    let mut config = Value::Null;
    wait_for(
        Duration::from_secs(10),
        || {
            config = json(&mesh, &mut outputs);
            ["CDS", "EDS", "LDS", "RDS"]
                .iter()
                .all(|t| synced(&config, t))
                && web_weights(&config).len() == 2
        },
        "every type synced and the split's route",
    );
    let weights = web_weights(&config);
    let (v1, v2) = (weights["demo/web-v1|80"], weights["demo/web-v2|80"]);
    assert_eq!(v1, 9 * v2, "90:10 from the split: {weights:?}");
    assert_eq!(config["proxy"], "demo/client-0");
    assert_eq!(config["protocol"], protocol);
    let plane = config["data_plane"].as_str().unwrap();
    match mesh.data_plane() {
        DataPlane::Envoy => assert!(plane.starts_with("envoy "), "{plane}"),
        DataPlane::Bundled => assert!(plane.starts_with("switchyard-proxy "), "{plane}"),
    }
    let clusters = names(&config, "CDS");
    assert!(
        clusters.contains("demo/web-v1|80") && clusters.contains("demo/api|80"),
        "{clusters:?}"
    );

    // The table says the same in one line per resource.
    let (code, table) = proxy_config(&mesh, &["demo/client-0"]);
    assert_eq!(code, Some(0), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.contains(&format!("demo/web-v1|80 {v1}, demo/web-v2|80 {v2}"))),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("CDS  SYNCED  version ")),
        "{table}"
    );
    outputs.push(table);

    // On Envoy, what it runs by its own account: the same clusters.
    if mesh.data_plane() == DataPlane::Envoy {
        let dump = mesh
            .client()
            .admin_get("/config_dump?resource=dynamic_active_clusters")
            .unwrap();
        let dump: Value = serde_json::from_str(&dump.body).unwrap();
        let envoys: BTreeSet<String> = dump["configs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["cluster"]["name"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(envoys, clusters, "Envoy's /config_dump");
    }

    // An edit of the split shows once the proxy has ACKed it.
    mesh.write(
        "split.yaml",
        &split("v1alpha4", &[("web-v1", "60"), ("web-v2", "40")]),
    );
    wait_for(
        Duration::from_secs(10),
        || {
            config = json(&mesh, &mut outputs);
            let w = web_weights(&config);
            synced(&config, "RDS")
                && w.len() == 2
                && 2 * w["demo/web-v1|80"] == 3 * w["demo/web-v2|80"]
        },
        "the 60:40 split to be acknowledged",
    );

    // The client's certificate: its key is redacted in every output.
    let (code, sds) = proxy_config(
        &mesh,
        &["client-0", "-n", "demo", "--type", "sds", "-o", "json"],
    );
    assert_eq!(code, Some(0), "{sds}");
    let sds: Value = serde_json::from_str(&sds).unwrap();
    assert_eq!(sds["types"].as_object().unwrap().len(), 1, "{sds}");
    // The client's certificate (beside the mesh's trust bundle).
    let secret = sds["types"]["SDS"]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s.get("tlsCertificate").is_some())
        .unwrap_or_else(|| panic!("the client's certificate: {sds}"));
    assert_eq!(
        secret["tlsCertificate"]["privateKey"], "[redacted]",
        "{sds}"
    );
    outputs.push(sds.to_string());
    let (_, sds_table) = proxy_config(&mesh, &["client-0", "-n", "demo", "--type", "sds"]);
    outputs.push(sds_table);
    let key = private_key(&mesh, secret["name"].as_str().unwrap());
    let key_lines: Vec<&str> = key
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .collect();
    assert!(!key_lines.is_empty(), "a PEM key: {key}");
    for output in &outputs {
        assert!(!output.contains("PRIVATE KEY"), "{output}");
        for line in &key_lines {
            assert!(!output.contains(line), "key bytes in {output}");
        }
    }
}

#[test]
fn proxy_config_names_a_proxy_that_is_not_connected() {
    let mesh = Mesh::start(
        Ipv4Addr::new(127, 0, 21, 5),
        &[("web.yaml", http_service("web", None))],
    );
    let (code, text) = proxy_config(&mesh, &["nobody-0", "-n", "demo"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("demo/nobody-0"), "{text}");
    let (code, text) = proxy_config(&mesh, &["client-0", "-n", "demo", "--type", "xds"]);
    assert_eq!(code, Some(2), "clap refuses an unknown type: {text}");
}
