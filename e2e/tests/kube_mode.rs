//! Kubernetes mode end to end, on whichever data plane `SWITCHYARD_DATA_PLANE` selects: a real
//! kube-apiserver and kubectl (built by `e2e/kube-harness`), `switchyard install` applied to
//! it, `switchyard controller` running as its own ServiceAccount, Pods and EndpointSlices
//! created by the tests (there is no kubelet) pointing at loopback, and real proxies that
//! authenticate with Pod-bound ServiceAccount tokens.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: a panic is the failure report"
)]

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
    thread,
    time::{Duration, Instant},
};

use switchyard_e2e::{
    kube_mesh::{KubeMesh, OPERATOR_NAMESPACE},
    mesh::{Backend, Load, Sidecar, failures, wait_for},
};

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 6, last))
}

/// Sends `n` requests to `host` through `sidecar` and counts bodies (`<status>` or `<error>`).
fn tally(sidecar: &Sidecar, host: &str, n: usize) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for _ in 0..n {
        let key = match sidecar.request("GET", host, "/") {
            Ok(r) if r.status == 200 => r.body,
            Ok(r) => format!("<{}>", r.status),
            Err(_) => "<error>".into(),
        };
        *out.entry(key).or_insert(0) += 1;
    }
    out
}

/// Waits until every one of 20 requests reaches `name`; returns how long that took.
fn wait_only(sidecar: &Sidecar, host: &str, name: &str, within: Duration) -> Duration {
    let start = Instant::now();
    let mut last = BTreeMap::new();
    while start.elapsed() < within {
        last = tally(sidecar, host, 20);
        if last.keys().eq([name]) {
            return start.elapsed();
        }
        thread::sleep(Duration::from_millis(20));
    }
    let listeners = sidecar
        .admin_get("/listeners")
        .map(|r| r.body)
        .unwrap_or_default();
    panic!(
        "{host} did not go only to {name} within {within:?}; last 20 requests: {last:?}; \
         {}'s listeners: {listeners}",
        sidecar.pod
    );
}

/// A root Service `web` with its own backend, and `web-v1`, `web-v2`; a client Pod with its
/// proxy. Returns the backends (kept alive by the caller) and the client's sidecar.
fn canary_mesh(mesh: &mut KubeMesh, client_ip: IpAddr) -> (Vec<Backend>, Sidecar) {
    let backends: Vec<Backend> = ["web", "web-v1", "web-v2"]
        .into_iter()
        .map(Backend::http)
        .collect();
    for b in &backends {
        mesh.backend_service(&b.name, b.addr);
    }
    let client = mesh.sidecar("client-0", "client", &[("app", "client")], client_ip);
    (backends, client)
}

fn split_yaml(api_version: &str, backends: &[(&str, &str)]) -> String {
    let b: Vec<String> = backends
        .iter()
        .map(|(s, w)| format!("  - {{service: {s}, weight: {w}}}"))
        .collect();
    format!(
        "apiVersion: split.smi-spec.io/{api_version}\nkind: TrafficSplit\nmetadata: {{name: web-split}}\nspec:\n  service: web\n  backends:\n{}\n",
        b.join("\n")
    )
}

#[test]
fn kubectl_apply_of_a_trafficsplit_takes_effect_within_a_second_and_delete_restores_the_default() {
    let mut mesh = KubeMesh::start("split");
    let (_backends, client) = canary_mesh(&mut mesh, ip(10));
    let host = format!("web.{}", mesh.ns());
    wait_only(&client, &host, "web", Duration::from_secs(20));

    mesh.apply(&split_yaml(
        "v1alpha4",
        &[("web-v1", "0"), ("web-v2", "100")],
    ));
    let took = wait_only(&client, &host, "web-v2", Duration::from_secs(10));
    println!("kubectl apply → only web-v2 after {took:?}");
    assert!(took <= Duration::from_secs(1), "took {took:?}");

    mesh.kubectl(&["delete", "trafficsplit", "web-split"]);
    let took = wait_only(&client, &host, "web", Duration::from_secs(10));
    println!("kubectl delete → only web after {took:?}");
    assert!(took <= Duration::from_secs(1), "took {took:?}");

    // The status says the split was accepted and resolved while it existed; the proxy came in
    // over TokenReview (the operator counted the stream).
    assert!(mesh.operators[0].metric("switchyard_xds_connected_proxies") >= 1);
    assert_eq!(
        mesh.operators[0].metric("switchyard_xds_auth_failures_total"),
        0
    );
}

#[test]
fn flagger_v1alpha1_quantity_weights_convert_through_the_webhook_and_split_traffic() {
    let mut mesh = KubeMesh::start("flagger");
    let (_backends, client) = canary_mesh(&mut mesh, ip(20));
    let host = format!("web.{}", mesh.ns());
    // Flagger writes v1alpha1 with quantity weights.
    mesh.apply(&split_yaml(
        "v1alpha1",
        &[("web-v1", "\"95\""), ("web-v2", "\"5\"")],
    ));
    let v4 = mesh.cluster.get_json(&[
        "trafficsplits.v1alpha4.split.smi-spec.io",
        "web-split",
        "-n",
        mesh.ns(),
    ]);
    let weights: Vec<i64> = v4["spec"]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["weight"].as_i64().unwrap())
        .collect();
    assert_eq!(weights, [95, 5], "read back as v1alpha4: {v4}");
    wait_for(
        Duration::from_secs(10),
        || mesh.has_condition("trafficsplit", "web-split", "Accepted", "True", None),
        "the v1alpha1 split to be accepted",
    );
    let seen = tally(&client, &host, 300);
    let v1 = seen.get("web-v1").copied().unwrap_or(0);
    let v2 = seen.get("web-v2").copied().unwrap_or(0);
    assert_eq!(v1 + v2, 300, "{seen:?}");
    assert!((2..=40).contains(&v2), "95:5 split, got {seen:?}");

    // The reverse: written as v1alpha4, read as v1alpha1 with the same ratio.
    mesh.apply(&split_yaml(
        "v1alpha4",
        &[("web-v1", "90"), ("web-v2", "10")],
    ));
    let v1a1 = mesh.cluster.get_json(&[
        "trafficsplits.v1alpha1.split.smi-spec.io",
        "web-split",
        "-n",
        mesh.ns(),
    ]);
    let ratio: Vec<f64> = v1a1["spec"]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| quantity(&b["weight"]))
        .collect();
    assert_eq!(ratio.len(), 2, "{v1a1}");
    assert!(
        (ratio[0] / (ratio[0] + ratio[1]) - 0.9).abs() < 1e-9,
        "{v1a1}"
    );

    // Argo Rollouts: the root service is also a backend.
    mesh.apply(&split_yaml("v1alpha2", &[("web", "80"), ("web-v2", "20")]));
    wait_for(
        Duration::from_secs(10),
        || {
            let seen = tally(&client, &host, 100);
            seen.contains_key("web") && seen.contains_key("web-v2") && seen.len() == 2
        },
        "an Argo-style split (root as a backend) to send to web and web-v2",
    );
}

/// A v1alpha1 weight: a quantity (`"5"`, `"500m"`) or a number.
fn quantity(v: &serde_json::Value) -> f64 {
    if let Some(n) = v.as_f64() {
        return n;
    }
    let s = v.as_str().unwrap();
    match s.strip_suffix('m') {
        Some(milli) => milli.parse::<f64>().unwrap() / 1000.0,
        None => s.parse().unwrap(),
    }
}

#[test]
fn a_flagger_weight_progression_under_load_fails_no_request() {
    let mut mesh = KubeMesh::start("progress");
    let (_backends, client) = canary_mesh(&mut mesh, ip(30));
    let host = format!("web.{}", mesh.ns());
    mesh.apply(&split_yaml(
        "v1alpha1",
        &[("web-v1", "\"100\""), ("web-v2", "\"0\"")],
    ));
    wait_only(&client, &host, "web-v1", Duration::from_secs(10));
    let load = Load::start(&client, host.clone());
    for (stable, canary) in [(90, 10), (50, 50), (0, 100)] {
        thread::sleep(Duration::from_millis(700));
        mesh.apply(&split_yaml(
            "v1alpha1",
            &[
                ("web-v1", &format!("\"{stable}\"")),
                ("web-v2", &format!("\"{canary}\"")),
            ],
        ));
    }
    wait_only(&client, &host, "web-v2", Duration::from_secs(10));
    thread::sleep(Duration::from_millis(300));
    let answers = load.finish();
    assert!(answers.len() > 300, "only {} requests", answers.len());
    let failed = failures(&answers);
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    println!("{} requests, 0 failed", answers.len());
}

#[test]
fn a_split_naming_a_missing_service_is_reported_and_the_others_keep_working() {
    let mut mesh = KubeMesh::start("missing");
    let (_backends, client) = canary_mesh(&mut mesh, ip(40));
    let host = format!("web.{}", mesh.ns());
    mesh.apply(&split_yaml(
        "v1alpha4",
        &[("web-v1", "0"), ("web-v2", "100")],
    ));
    // A second split, for another root, naming a Service that does not exist.
    let api = Backend::http("api");
    mesh.backend_service("api", api.addr);
    mesh.apply(
        "apiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\nmetadata: {name: api-split}\nspec:\n  service: api\n  backends:\n  - {service: ghost, weight: 100}\n",
    );
    wait_for(
        Duration::from_secs(10),
        || {
            mesh.has_condition(
                "trafficsplit",
                "api-split",
                "ResolvedRefs",
                "False",
                Some("BackendNotFound"),
            )
        },
        "api-split: ResolvedRefs=False (BackendNotFound)",
    );
    let conds = mesh.conditions("trafficsplit", "api-split");
    let (_, _, _, message) = conds.iter().find(|c| c.0 == "ResolvedRefs").unwrap();
    assert!(
        message.contains("ghost"),
        "message names the Service: {message}"
    );
    wait_for(
        Duration::from_secs(10),
        || {
            mesh.events_about("api-split")
                .iter()
                .any(|(t, r, _)| t == "Warning" && r == "BackendNotFound")
        },
        "a Warning Event BackendNotFound about api-split",
    );
    // The good split is unaffected.
    wait_only(&client, &host, "web-v2", Duration::from_secs(10));

    // Fixing it clears the condition.
    let ghost = Backend::http("ghost");
    mesh.backend_service("ghost", ghost.addr);
    wait_for(
        Duration::from_secs(10),
        || mesh.has_condition("trafficsplit", "api-split", "ResolvedRefs", "True", None),
        "api-split: ResolvedRefs=True after the Service appears",
    );
    wait_only(
        &client,
        &format!("api.{}", mesh.ns()),
        "ghost",
        Duration::from_secs(10),
    );
}

#[test]
fn the_operator_killed_and_restarted_under_load_fails_no_request_and_resends_no_config() {
    let mut mesh = KubeMesh::start("restart");
    let (_backends, client) = canary_mesh(&mut mesh, ip(50));
    let host = format!("web.{}", mesh.ns());
    mesh.apply(&split_yaml(
        "v1alpha4",
        &[("web-v1", "50"), ("web-v2", "50")],
    ));
    wait_for(
        Duration::from_secs(10),
        || tally(&client, &host, 40).keys().eq(["web-v1", "web-v2"]),
        "the 50/50 split",
    );
    let load = Load::start(&client, host.clone());
    thread::sleep(Duration::from_millis(500));
    mesh.kill_operator(0);
    thread::sleep(Duration::from_secs(2));
    let during = load.mark();
    mesh.restart_operator(0);
    // The proxy reconnects (backoff up to a few seconds) holding the same configuration.
    wait_for(
        Duration::from_secs(20),
        || mesh.operators[0].metric("switchyard_xds_connected_proxies") >= 1,
        "the proxy to reconnect to the restarted operator",
    );
    thread::sleep(Duration::from_secs(1));
    let config_pushes = mesh.operators[0].metric("switchyard_xds_config_pushes_total");
    let secret_pushes = mesh.operators[0].metric("switchyard_xds_secret_pushes_total");
    // The client talks to unmeshed backends, so it holds no certificate; meshed proxies would
    // get new ones (the operator keeps issued certificates in memory only).
    println!("after restart: {config_pushes} config pushes, {secret_pushes} secret pushes");

    assert_eq!(
        config_pushes, 0,
        "unchanged listeners/routes/clusters/endpoints were sent again"
    );
    // Converges: an edit after the restart applies.
    mesh.apply(&split_yaml(
        "v1alpha4",
        &[("web-v1", "100"), ("web-v2", "0")],
    ));
    wait_only(&client, &host, "web-v1", Duration::from_secs(10));
    let answers = load.finish();
    assert!(answers.len() > during, "the load went on");
    let failed = failures(&answers);
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    println!("{} requests across the restart, 0 failed", answers.len());
}

#[test]
fn with_two_replicas_only_the_lease_holder_writes_status_and_a_kill_hands_over() {
    let mut mesh = KubeMesh::start("lease");
    let second = mesh.start_operator();
    wait_for(
        Duration::from_secs(10),
        || mesh.lease_holder() == "switchyard-0",
        "switchyard-0 to hold the lease",
    );
    let api = Backend::http("api");
    mesh.backend_service("api", api.addr);
    mesh.apply(
        "apiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\nmetadata: {name: one}\nspec:\n  service: api\n  backends:\n  - {service: nowhere, weight: 1}\n",
    );
    wait_for(
        Duration::from_secs(10),
        || mesh.has_condition("trafficsplit", "one", "ResolvedRefs", "False", None),
        "status of split one",
    );
    let ok = r#"switchyard_status_writes_total{result="ok"}"#;
    assert!(mesh.operators[0].metric_series(ok) >= 1);
    assert_eq!(
        mesh.operators[second].metric_series(ok),
        0,
        "the follower wrote status"
    );
    assert_eq!(mesh.operators[0].metric("switchyard_leader"), 1);
    assert_eq!(mesh.operators[second].metric("switchyard_leader"), 0);

    let killed = Instant::now();
    mesh.kill_operator(0);
    wait_for(
        Duration::from_secs(10),
        || mesh.lease_holder() == "switchyard-1",
        "switchyard-1 to take the lease",
    );
    let handover = killed.elapsed();
    println!("lease handed over {handover:?} after the kill (lease duration 4 s)");
    assert!(handover <= Duration::from_secs(4 + 2), "took {handover:?}");
    mesh.apply(
        "apiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\nmetadata: {name: two}\nspec:\n  service: api\n  backends:\n  - {service: nowhere-else, weight: 1}\n",
    );
    wait_for(
        Duration::from_secs(10),
        || mesh.has_condition("trafficsplit", "two", "ResolvedRefs", "False", None),
        "status of split two, written by the new leader",
    );
    assert!(mesh.operators[second].metric_series(ok) >= 1);
}

#[test]
fn the_operator_has_exactly_the_install_manifests_permissions() {
    let mesh = KubeMesh::start("rbac");
    let as_operator = |args: &[&str]| {
        let out = mesh
            .cluster
            .kubectl_as(mesh.operator_kubeconfig())
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // It cannot read Secrets outside its namespace (nor inside: its CA is mounted).
    mesh.cluster.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "private",
        "-n",
        mesh.ns(),
        "--from-literal=k=v",
    ]);
    let (ok, _, err) = as_operator(&["get", "secret", "private", "-n", mesh.ns()]);
    assert!(!ok && err.contains("Forbidden"), "read a Secret: {err}");
    let (ok, _, err) = as_operator(&["get", "secrets", "-n", "kube-system"]);
    assert!(!ok && err.contains("Forbidden"), "listed Secrets: {err}");
    let can = |verb: &str, resource: &str, ns: &str| {
        let (resource, sub) = match resource.split_once('/') {
            Some((r, s)) => (r, format!("--subresource={s}")),
            None => (resource, "--subresource=".to_owned()),
        };
        let mut args = vec!["auth", "can-i", verb, resource, "-n", ns];
        if sub != "--subresource=" {
            args.push(&sub);
        }
        let (_, out, _) = as_operator(&args);
        out == "yes"
    };
    let ns = mesh.ns();
    assert!(can("watch", "trafficsplits.split.smi-spec.io", ns));
    assert!(can("list", "endpointslices.discovery.k8s.io", ns));
    assert!(can("patch", "trafficsplits.split.smi-spec.io/status", ns));
    assert!(can("create", "tokenreviews.authentication.k8s.io", ns));
    assert!(can(
        "update",
        "leases.coordination.k8s.io",
        OPERATOR_NAMESPACE
    ));
    assert!(
        !can("update", "leases.coordination.k8s.io", ns),
        "leases outside its namespace"
    );
    assert!(
        !can("update", "trafficsplits.split.smi-spec.io", ns),
        "writes specs"
    );
    assert!(!can("delete", "pods", ns));
    assert!(!can("create", "secrets", OPERATOR_NAMESPACE));
    // And the operator started by the mesh runs with this very kubeconfig.
    assert!(mesh.operators[0].is_ready());
}

#[test]
fn switchyard_check_reports_a_healthy_install_and_says_how_to_fix_a_dead_operator() {
    let mut mesh = KubeMesh::start("check");
    let check = |mesh: &KubeMesh| {
        let out = std::process::Command::new(switchyard_e2e::switchyard_bin())
            .args(["check", "--namespace", OPERATOR_NAMESPACE, "--kubeconfig"])
            .arg(mesh.cluster.kubeconfig())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, text) = check(&mesh);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("ok   crd trafficsplits.split.smi-spec.io: established, conversion webhook"),
        "{text}"
    );
    assert!(text.contains("switchyard-0 leads"), "{text}");
    assert!(
        text.contains("ok   conversion webhook: converted a trafficsplit v1alpha1"),
        "{text}"
    );

    mesh.kill_operator(0);
    thread::sleep(Duration::from_secs(5));
    let (code, text) = check(&mesh);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("FAIL operator"), "{text}");
    assert!(text.contains("FAIL conversion webhook"), "{text}");
    assert!(text.matches("fix: ").count() >= 2, "{text}");
}
