//! Traffic through a real Envoy configured by `switchyard local` over ADS: splits, matches,
//! live edits under load, invalid edits, vanishing endpoints, and TCP.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: a panic is the failure report"
)]

use std::{
    collections::BTreeMap,
    io::Read,
    net::{Ipv4Addr, SocketAddr, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use switchyard_e2e::{
    assert_share,
    mesh::{Backend, Mesh, canary_backends, canary_services, endpoint_slice, split, wait_for},
};

/// `web` (root, answering "root"), `web-v1` and `web-v2`, each with its own backend.
fn canary(pod_ip: Ipv4Addr, split_yaml: String) -> (Mesh, [Backend; 3]) {
    canary_with(pod_ip, split_yaml, &[])
}

fn canary_with(pod_ip: Ipv4Addr, split_yaml: String, args: &[&str]) -> (Mesh, [Backend; 3]) {
    let backends = canary_backends();
    let services = canary_services(backends.each_ref().map(Some));
    let mesh = Mesh::start_with(
        pod_ip,
        &[("services.yaml", services), ("split.yaml", split_yaml)],
        args,
    );
    (mesh, backends)
}

#[test]
fn ninety_ten_gives_ninety_percent() {
    let (mesh, _b) = canary(
        Ipv4Addr::new(127, 0, 12, 1),
        split("v1alpha4", &[("web-v1", "90"), ("web-v2", "10")]),
    );
    wait_for(
        Duration::from_secs(10),
        || {
            mesh.tally("web.demo", 10, &[])
                .keys()
                .all(|k| k == "v1" || k == "v2")
        },
        "the split to be served",
    );
    let t = mesh.tally("web.demo", 2000, &[]);
    assert_eq!(t.get("<error>"), None, "{t:?}");
    assert_share(&t, "v1", 0.9);
    assert_eq!(
        t.get("root"),
        None,
        "the root's own endpoints get nothing while the split is active"
    );
}

#[test]
fn zero_weight_gets_exactly_nothing_and_quantities_keep_their_ratio() {
    let (mesh, _b) = canary(
        Ipv4Addr::new(127, 0, 13, 1),
        split("v1alpha4", &[("web-v1", "100"), ("web-v2", "0")]),
    );
    mesh.wait_for_only("web.demo", "v1", Duration::from_secs(10));
    let t = mesh.tally("web.demo", 500, &[]);
    assert_eq!(t, BTreeMap::from([("v1".to_string(), 500)]));

    // v1alpha1: "1" and "500m" are 2:1.
    mesh.write(
        "split.yaml",
        &split("v1alpha1", &[("web-v1", "'1'"), ("web-v2", "500m")]),
    );
    wait_for(
        Duration::from_secs(5),
        || mesh.tally("web.demo", 30, &[]).contains_key("v2"),
        "v2 to get traffic",
    );
    let t = mesh.tally("web.demo", 1500, &[]);
    assert_share(&t, "v1", 2.0 / 3.0);
}

#[test]
fn all_zero_weights_fall_back_to_the_root() {
    let (mesh, _b) = canary(
        Ipv4Addr::new(127, 0, 14, 1),
        split("v1alpha4", &[("web-v1", "0"), ("web-v2", "0")]),
    );
    mesh.wait_for_only("web.demo", "root", Duration::from_secs(10));
    assert!(
        mesh.log().contains("inactive"),
        "the condition says why: {}",
        mesh.log()
    );
}

#[test]
fn split_matches_send_matching_requests_to_their_backends() {
    let (mesh, _b) = canary(
        Ipv4Addr::new(127, 0, 15, 1),
        split("v1alpha4", &[("web-v1", "100")]),
    );
    mesh.wait_for_only("web.demo", "v1", Duration::from_secs(10));
    let ab = "apiVersion: specs.smi-spec.io/v1alpha4\nkind: HTTPRouteGroup\nmetadata: {name: ab, namespace: demo}\nspec:\n  matches:\n  - name: firefox\n    headers: [{user-agent: '.*Firefox.*'}]\n---\napiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\nmetadata: {name: ab-test, namespace: demo}\nspec:\n  service: web\n  matches: [{kind: HTTPRouteGroup, name: ab}]\n  backends: [{service: web-v1, weight: 0}, {service: web-v2, weight: 100}]\n";
    mesh.write("ab.yaml", ab);
    let firefox = [("user-agent", "Mozilla/5.0 Firefox/120.0")];
    wait_for(
        Duration::from_secs(5),
        || mesh.tally("web.demo", 10, &firefox).keys().eq(["v2"]),
        "Firefox to reach v2",
    );
    assert_eq!(
        mesh.tally("web.demo", 200, &firefox),
        BTreeMap::from([("v2".to_string(), 200)])
    );
    let chrome = [("user-agent", "Chrome/120")];
    assert_eq!(
        mesh.tally("web.demo", 200, &chrome),
        BTreeMap::from([("v1".to_string(), 200)]),
        "the rest follow the catch-all split"
    );
}

#[test]
fn an_edit_applies_within_a_second_without_failing_a_request() {
    let (mesh, _b) = canary(
        Ipv4Addr::new(127, 0, 16, 1),
        split("v1alpha4", &[("web-v1", "100"), ("web-v2", "0")]),
    );
    mesh.wait_for_only("web.demo", "v1", Duration::from_secs(10));
    let mesh = Arc::new(mesh);
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load: Vec<_> = (0..2)
        .map(|_| {
            let (mesh, stop, ok, failed) = (mesh.clone(), stop.clone(), ok.clone(), failed.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match mesh.get("web.demo", "/", &[]) {
                        Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(300));
    let written = Instant::now();
    mesh.write(
        "split.yaml",
        &split("v1alpha4", &[("web-v1", "0"), ("web-v2", "100")]),
    );
    let took = mesh.wait_for_only("web.demo", "v2", Duration::from_secs(5));
    let applied = written.elapsed();
    thread::sleep(Duration::from_millis(300));

    // An invalid edit changes nothing, and says why.
    mesh.write(
        "split.yaml",
        &split("v1alpha4", &[("web-v1", "50"), ("web-v2", "-1")]),
    );
    wait_for(
        Duration::from_secs(5),
        || mesh.log().contains("spec.backends[1].weight: must be ≥ 0"),
        "the invalid edit to be reported",
    );
    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    assert_eq!(
        mesh.tally("web.demo", 200, &[]),
        BTreeMap::from([("v2".to_string(), 200)]),
        "the last good split stays"
    );
    assert!(
        mesh.log().contains("Accepted=False (Invalid)"),
        "{}",
        mesh.log()
    );
    assert!(
        applied < Duration::from_secs(1),
        "the edit took {applied:?} (observed after {took:?})"
    );
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "{} requests succeeded",
        ok.load(Ordering::Relaxed)
    );
    assert!(ok.load(Ordering::Relaxed) > 100);
}

#[test]
fn a_backend_whose_endpoints_disappear_is_excluded() {
    let (mesh, b) = canary(
        Ipv4Addr::new(127, 0, 17, 1),
        split("v1alpha4", &[("web-v1", "50"), ("web-v2", "50")]),
    );
    wait_for(
        Duration::from_secs(10),
        || mesh.tally("web.demo", 40, &[]).len() == 2,
        "both backends",
    );
    let services = canary_services([Some(&b[0]), Some(&b[1]), None]);
    mesh.write("services.yaml", &services);
    mesh.wait_for_only("web.demo", "v1", Duration::from_secs(5));
    assert_eq!(
        mesh.tally("web.demo", 200, &[]),
        BTreeMap::from([("v1".to_string(), 200)])
    );
    assert!(mesh.log().contains("BackendNotReady"), "{}", mesh.log());
}

#[test]
fn tcp_traffic_reaches_its_backend() {
    let db = Backend::tcp("db-v2");
    let port = 15432;
    let yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: db, namespace: demo}}\nspec:\n  ports: [{{name: tcp-pg, port: {port}, targetPort: 5432}}]\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: db-v2, namespace: demo}}\nspec:\n  ports: [{{name: tcp-pg, port: {port}, targetPort: 5432}}]\n{}---\napiVersion: specs.smi-spec.io/v1alpha4\nkind: TCPRoute\nmetadata: {{name: pg, namespace: demo}}\nspec: {{matches: {{ports: [{port}]}}}}\n---\napiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\nmetadata: {{name: db, namespace: demo}}\nspec:\n  service: db\n  backends: [{{service: db-v2, weight: 1}}]\n",
        endpoint_slice("db-v2", "tcp-pg", db.addr)
    );
    let mesh = Mesh::start(Ipv4Addr::new(127, 0, 18, 1), &[("db.yaml", yaml)]);
    let addr = SocketAddr::new(mesh.pod_ip, port);
    let read = || -> Option<String> {
        let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
        c.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut s = String::new();
        c.read_to_string(&mut s).ok()?;
        Some(s)
    };
    wait_for(
        Duration::from_secs(10),
        || read().as_deref() == Some("db-v2\n"),
        "the TCP backend's greeting",
    );
    for _ in 0..20 {
        assert_eq!(read().as_deref(), Some("db-v2\n"));
    }
}

#[test]
fn incremental_ads_serves_the_same_mesh() {
    let (mesh, _b) = canary_with(
        Ipv4Addr::new(127, 0, 19, 1),
        split("v1alpha4", &[("web-v1", "100"), ("web-v2", "0")]),
        &["--delta"],
    );
    let bootstrap =
        std::fs::read_to_string(mesh.path(".switchyard/demo.client-0.bootstrap.json")).unwrap();
    assert!(bootstrap.contains("DELTA_GRPC"), "{bootstrap}");
    mesh.wait_for_only("web.demo", "v1", Duration::from_secs(10));
    mesh.write(
        "split.yaml",
        &split("v1alpha4", &[("web-v1", "0"), ("web-v2", "100")]),
    );
    let took = mesh.wait_for_only("web.demo", "v2", Duration::from_secs(5));
    assert!(took < Duration::from_secs(1), "took {took:?}");
    // Deleting the split sends traffic back to the root's own endpoints.
    mesh.write("split.yaml", "");
    mesh.wait_for_only("web.demo", "root", Duration::from_secs(5));
}
