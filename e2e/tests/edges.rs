//! Edges end to end on the suite's data plane: a meshed client calls a meshed Service and one
//! outside the mesh, and a caller outside the mesh reaches the meshed Pod in plaintext
//! (permissive mode); the admin API and `switchyard edges` show each edge with its
//! identities, whether it is mTLS, and the exact request counts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{net::Ipv4Addr, net::SocketAddr, process::Command, time::Duration};

use switchyard::edges::{Edge, EdgeList, End, Secured};
use switchyard_e2e::{
    mesh::{Backend, Mesh, Sidecar, http_get, http_service, meshed_web, wait_for},
    switchyard_bin,
};

/// Sends `n` GETs of `/` to `host` through `client`; how many were answered 200.
fn send(client: &Sidecar, host: &str, n: usize) -> usize {
    (0..n)
        .filter(|_| {
            client
                .request("GET", host, "/")
                .is_ok_and(|r| r.status == 200)
        })
        .count()
}

fn end(kind: &str, name: &str) -> End {
    let (namespace, name) = ("demo".to_owned(), name.to_owned());
    match kind {
        "pod" => End::Pod { namespace, name },
        _ => End::Service { namespace, name },
    }
}

#[test]
fn edges_show_identities_mtls_and_unmeshed_ends() {
    let ip = |host| Ipv4Addr::new(127, 0, 62, host);
    let web = Backend::http("web");
    let legacy = Backend::http("legacy");
    let port = web.addr.port();
    let mut mesh = Mesh::builder(ip(1))
        .file("web.yaml", meshed_web(ip(2), &web))
        .file("legacy.yaml", http_service("legacy", Some(&legacy)))
        .start();
    let _server = mesh.sidecar("web-0");
    let client = mesh.client();
    wait_for(
        Duration::from_secs(15),
        || send(&client, "web.demo", 1) == 1 && send(&client, "legacy.demo", 1) == 1,
        "web and legacy to answer through the client's sidecar",
    );
    let to_web = 1 + send(&client, "web.demo", 10);
    let to_legacy = 1 + send(&client, "legacy.demo", 4);
    // A caller outside the mesh: plaintext straight to web-0's inbound listener.
    let inbound = SocketAddr::from((ip(2), port));
    let plaintext = (0..3)
        .filter(|_| http_get(inbound, "web", "/", &[]).is_ok_and(|r| r.status == 200))
        .count();
    assert_eq!((to_web, to_legacy, plaintext), (11, 5, 3));

    let client_id = "spiffe://cluster.local/ns/demo/sa/client";
    let web_id = "spiffe://cluster.local/ns/demo/sa/web";
    let want = vec![
        Edge {
            src: end("pod", "client-0"),
            dst: end("svc", "legacy"),
            client_id: Some(client_id.to_owned()),
            server_ids: vec![],
            secured: Secured::ServerUnmeshed,
            success_count: to_legacy as u64,
            failure_count: 0,
        },
        Edge {
            src: end("pod", "client-0"),
            dst: end("svc", "web"),
            client_id: Some(client_id.to_owned()),
            server_ids: vec![web_id.to_owned()],
            secured: Secured::Mtls,
            success_count: to_web as u64,
            failure_count: 0,
        },
        Edge {
            src: End::Unmeshed,
            dst: end("pod", "web-0"),
            client_id: None,
            server_ids: vec![web_id.to_owned()],
            secured: Secured::ClientUnmeshed,
            success_count: plaintext as u64,
            failure_count: 0,
        },
    ];
    // The pushes arrive every 5 s (the bootstrap's default interval).
    let mut got: Vec<Edge> = Vec::new();
    wait_for(
        Duration::from_secs(30),
        || {
            let r = http_get(
                mesh.admin,
                "admin",
                "/apis/metrics.smi-spec.io/v1alpha1/edges?t=1m&namespace=demo",
                &[],
            )
            .unwrap();
            got = serde_json::from_str::<EdgeList>(&r.body)
                .map(|list| list.items)
                .unwrap_or_default();
            got == want
        },
        "the edges to show the traffic sent",
    );

    let out = Command::new(switchyard_bin())
        .args(["edges", "-n", "demo", "-o", "wide", "--admin"])
        .arg(mesh.admin.to_string())
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    eprintln!("switchyard edges -n demo -o wide:\n{table}");
    assert!(
        out.status.success(),
        "{table}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        [
            vec![
                "SRC",
                "DST",
                "SRC_NS",
                "DST_NS",
                "SECURED",
                "CLIENT_ID",
                "SERVER_ID"
            ],
            vec![
                "pod/client-0",
                "svc/legacy",
                "demo",
                "demo",
                "×",
                "(server",
                "unmeshed)",
                client_id,
                "-"
            ],
            vec![
                "pod/client-0",
                "svc/web",
                "demo",
                "demo",
                "√",
                client_id,
                web_id
            ],
            vec![
                "(unmeshed)",
                "pod/web-0",
                "-",
                "demo",
                "×",
                "(client",
                "unmeshed)",
                "-",
                web_id
            ],
        ],
        "{table}"
    );
}
