//! `switchyard proxy-status` against local mode: the real sidecar of the suite's data plane is
//! listed with its data plane and every type it asked for `SYNCED`; a stream that rejects its
//! configuration shows `NACKED` with its reason (and the command exits 1); a closed stream goes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{net::Ipv4Addr, process::Command, time::Duration};

use envoy_types::pb::{
    envoy::{config::core::v3::Node, service::discovery::v3::DiscoveryRequest},
    google::rpc::Status as RpcStatus,
};
use serde_json::Value;
use switchyard_e2e::{
    DataPlane,
    mesh::{Backend, Mesh, http_service, wait_for},
    switchyard_bin,
};
use tokio_stream::StreamExt as _;

const CLUSTER_TYPE: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";

/// `switchyard proxy-status --admin <mesh's admin> [args]`: exit code and stdout.
fn proxy_status(mesh: &Mesh, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(switchyard_bin())
        .args(["proxy-status", "--admin", &mesh.admin.to_string()])
        .args(args)
        .output()
        .expect("running switchyard proxy-status");
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn json(mesh: &Mesh) -> (Option<i32>, Vec<Value>) {
    let (code, text) = proxy_status(mesh, &["-o", "json"]);
    let list: Vec<Value> = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (code, list)
}

#[test]
fn proxy_status_lists_each_proxy_synced_and_a_rejection_with_its_reason() {
    let web = Backend::http("web");
    let mesh = Mesh::start(
        Ipv4Addr::new(127, 0, 20, 5),
        &[("web.yaml", http_service("web", Some(&web)))],
    );
    // Traffic flows, so the sidecar holds its configuration.
    mesh.wait_for_only("web.demo", "web", Duration::from_secs(10));

    let expected_plane = match mesh.data_plane() {
        DataPlane::Envoy => "envoy ",
        DataPlane::Bundled => "switchyard-proxy ",
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let list = loop {
        let (code, list) = json(&mesh);
        // Every type the sidecar asked for (SDS only with mTLS) is synced.
        let synced = list.len() == 1
            && ["CDS", "EDS", "LDS", "RDS"]
                .iter()
                .all(|t| list[0]["types"][t]["state"] == "SYNCED")
            && ["SYNCED", "NOT_REQUESTED"].contains(
                &list[0]["types"]["SDS"]["state"]
                    .as_str()
                    .unwrap_or_default(),
            );
        if code == Some(0) && synced {
            break list;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the sidecar is not listed with every type synced: exit {code:?}, {list:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let proxy = &list[0];
    assert_eq!(proxy["proxy"], "demo/client-0", "{proxy}");
    assert!(
        proxy["data_plane"]
            .as_str()
            .is_some_and(|d| d.starts_with(expected_plane)),
        "{proxy}"
    );
    assert_eq!(proxy["control_plane"], mesh.admin.to_string());

    let (code, table) = proxy_status(&mesh, &[]);
    assert_eq!(code, Some(0), "{table}");
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("PROXY"), "{table}");
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(row[0], "demo/client-0", "{table}");
    let asked = proxy["types"]
        .as_object()
        .unwrap()
        .values()
        .filter(|t| t["state"] != "NOT_REQUESTED")
        .count();
    assert_eq!(
        row.iter().filter(|c| **c == "SYNCED").count(),
        asked,
        "{table}"
    );

    // A second stream as the same proxy that rejects the clusters it gets.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let node = Node {
        id: "demo/client-0".into(),
        user_agent_name: "rejecting-test-client".into(),
        ..Node::default()
    };
    let (tx, stream) = runtime.block_on(async {
        let first = DiscoveryRequest {
            node: Some(node.clone()),
            type_url: CLUSTER_TYPE.into(),
            ..DiscoveryRequest::default()
        };
        let (tx, mut responses) = mesh.ads_stream_as("client-0", first).await;
        let response = tokio::time::timeout(Duration::from_secs(10), responses.next())
            .await
            .expect("clusters in time")
            .expect("an open stream")
            .expect("a healthy stream");
        tx.send(DiscoveryRequest {
            node: Some(node),
            type_url: CLUSTER_TYPE.into(),
            response_nonce: response.nonce,
            error_detail: Some(RpcStatus {
                code: 3,
                message: "cluster demo/web|80: test rejection".into(),
                details: vec![],
            }),
            ..DiscoveryRequest::default()
        })
        .await
        .unwrap();
        (tx, responses)
    });
    wait_for(
        Duration::from_secs(10),
        || {
            let (code, list) = json(&mesh);
            code == Some(1)
                && list.iter().any(|p| {
                    p["data_plane"] == "rejecting-test-client"
                        && p["types"]["CDS"]["state"] == "NACKED"
                        && p["types"]["CDS"]["message"] == "cluster demo/web|80: test rejection"
                })
        },
        "the rejection to be listed, and the command to exit 1",
    );
    let (code, table) = proxy_status(&mesh, &[]);
    assert_eq!(code, Some(1), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l == "NACKED demo/client-0 CDS: cluster demo/web|80: test rejection"),
        "{table}"
    );

    // The rejecting stream closes: it is no longer listed, the real sidecar still is.
    drop(stream);
    drop(tx);
    wait_for(
        Duration::from_secs(10),
        || {
            let (code, list) = json(&mesh);
            code == Some(0) && list.len() == 1
        },
        "the closed stream to leave the list",
    );
}

#[test]
fn proxy_status_says_which_address_did_not_answer() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = free.local_addr().unwrap();
    drop(free);
    let out = Command::new(switchyard_bin())
        .args(["proxy-status", "--admin", &addr.to_string()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&addr.to_string()), "{stderr}");
}
