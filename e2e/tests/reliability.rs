//! Reliability under constant load, on whichever data plane `SWITCHYARD_DATA_PLANE` selects:
//! a canary walked from 0 to 100 % by live TrafficSplit edits, a control plane killed and
//! restarted (with a new CA) while traffic flows, and an endpoint killed behind a Service.
//! Every test counts failed requests: a client of the mesh must not see any, but across the
//! CA change of a restarted control plane (counted and printed there).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: a panic is the failure report"
)]

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    thread,
    time::{Duration, Instant},
};

use switchyard_e2e::mesh::{
    AccessMode, Answer, Backend, Load, Mesh, Sidecar, canary_backends, canary_services,
    endpoint_slice, failures, http_request, http_service, meshed_http_service, pod, split,
    wait_for,
};

/// Answers counted by body; failures are counted under `<failed>`.
fn tally(answers: &[Answer]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for a in answers {
        let key = a.clone().unwrap_or_else(|_| "<failed>".to_owned());
        *out.entry(key).or_default() += 1;
    }
    out
}

/// Waits until 20 requests in a row to `host` through client-0's sidecar are answered by
/// `name`; on time-out, says what they got instead.
fn only(mesh: &Mesh, host: &str, name: &str, within: Duration) {
    let start = Instant::now();
    loop {
        let last = mesh.tally(host, 20, &[]);
        if last.keys().eq([name]) {
            return;
        }
        assert!(
            start.elapsed() < within,
            "{host} did not go only to {name} within {within:?}: {last:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the last `window` answers after `mark` all succeeded and `name` has `share`
/// of them, ± `tolerance`; returns how long that took from `since`.
fn converge(
    load: &Load,
    mark: usize,
    since: Instant,
    (name, share, tolerance): (&str, f64, f64),
    window: usize,
    within: Duration,
) -> Duration {
    let mut last = BTreeMap::new();
    loop {
        let answers = load.since(mark);
        if answers.len() >= window {
            let recent = &answers[answers.len() - window..];
            last = tally(recent);
            let got = *last.get(name).unwrap_or(&0) as f64 / window as f64;
            if !last.contains_key("<failed>") && (got - share).abs() <= tolerance {
                return since.elapsed();
            }
        }
        assert!(
            since.elapsed() < within,
            "the last {window} answers never gave {name} {share}±{tolerance} within {within:?}: {last:?}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_canary_walks_from_zero_to_all_without_a_failed_request() {
    let backends = canary_backends();
    let services = canary_services(backends.each_ref().map(Some));
    let mesh = Mesh::start(
        Ipv4Addr::new(127, 0, 61, 1),
        &[("services.yaml", services), ("split.yaml", canary_split(0))],
    );
    only(&mesh, "web.demo", "v1", Duration::from_secs(10));
    let load = Load::start(&mesh.client(), "web.demo");

    // Windows of 400 answers (about 1.5 s of load, which dominates the time to converge): the
    // tolerance is about 3.3 standard deviations of the share.
    let steps = [(0, 0.0), (10, 0.05), (50, 0.08), (100, 0.0)];
    let mut took = Vec::new();
    for (canary, tolerance) in steps {
        let (mark, written) = (load.mark(), Instant::now());
        mesh.write("split.yaml", &canary_split(canary));
        let share = f64::from(canary) / 100.0;
        took.push(converge(
            &load,
            mark,
            written,
            ("v2", share, tolerance),
            400,
            Duration::from_secs(8),
        ));
    }
    let answers = load.finish();
    eprintln!(
        "{} requests; steps 0/10/50/100 % converged after {took:?}; {:?}",
        answers.len(),
        tally(&answers)
    );
    assert_eq!(failures(&answers), Vec::<&String>::new(), "failed requests");
    assert_eq!(
        tally(&answers).get("root"),
        None,
        "the root's own endpoint gets nothing while the split is active"
    );
}

/// Pods and services of the control-plane test: client-0 (`127.0.<subnet>.1`) calls `web`,
/// split between `web-v1` (Pod web-v1-0, `.2`) and `web-v2` (Pod web-v2-0, `.3`), both meshed
/// and running as ServiceAccount `web`, which a TrafficTarget opens to `client` (strict mode).
/// Both servers' sidecars close each connection after one response.
struct MeshedCanary {
    mesh: Mesh,
    servers: [Sidecar; 2],
    /// Bind it (not `..`): the backends stop when this is dropped.
    _backends: [Backend; 3],
}

fn meshed_canary(subnet: u8, canary: u32) -> MeshedCanary {
    let ip = |host| Ipv4Addr::new(127, 0, subnet, host);
    let backends = canary_backends();
    let mut files = vec![http_service("web", Some(&backends[0]))];
    for (i, version) in ["v1", "v2"].into_iter().enumerate() {
        let (name, pod_name, host) = (
            format!("web-{version}"),
            format!("web-{version}-0"),
            ip(2 + i as u8),
        );
        files.push(pod(&pod_name, "web", &[("app", &name)], host));
        files.push(meshed_http_service(
            &name,
            &pod_name,
            host,
            backends[1 + i].addr.port(),
        ));
    }
    let access = "apiVersion: specs.smi-spec.io/v1alpha4\nkind: HTTPRouteGroup\nmetadata: {name: all, namespace: demo}\nspec:\n  matches: [{name: all, pathRegex: '.*', methods: ['*']}]\n---\napiVersion: access.smi-spec.io/v1alpha3\nkind: TrafficTarget\nmetadata: {name: web-access, namespace: demo}\nspec:\n  destination: {kind: ServiceAccount, name: web, namespace: demo}\n  rules: [{kind: HTTPRouteGroup, name: all, matches: [all]}]\n  sources: [{kind: ServiceAccount, name: client, namespace: demo}]\n";
    let mut mesh = Mesh::builder(ip(1))
        .access_mode(AccessMode::Strict)
        .file("services.yaml", files.join("---\n"))
        .file("access.yaml", access)
        .file("split.yaml", canary_split(canary))
        .start();
    let servers = [mesh.sidecar("web-v1-0"), mesh.sidecar("web-v2-0")];
    // Both servers answer through their sidecars before the test starts.
    for version in ["v1", "v2"] {
        only(
            &mesh,
            &format!("web-{version}.demo"),
            version,
            Duration::from_secs(15),
        );
    }
    for s in &servers {
        handshake_per_request(s);
    }
    MeshedCanary {
        mesh,
        servers,
        _backends: backends,
    }
}

fn canary_split(canary: u32) -> String {
    split(
        "v1alpha4",
        &[
            ("web-v1", &(100 - canary).to_string()),
            ("web-v2", &canary.to_string()),
        ],
    )
}

/// Serial numbers of the certificates a sidecar holds (admin `/certs`), its own and the CA's.
fn serials(sidecar: &Sidecar) -> BTreeSet<String> {
    let Ok(r) = sidecar.admin_get("/certs") else {
        return BTreeSet::new();
    };
    let certs: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
    let mut out = BTreeSet::new();
    for context in certs["certificates"].as_array().into_iter().flatten() {
        for field in ["cert_chain", "ca_cert"] {
            for cert in context[field].as_array().into_iter().flatten() {
                if let Some(serial) = cert["serial_number"].as_str() {
                    out.insert(serial.to_owned());
                }
            }
        }
    }
    out
}

/// Fails the health check of a server's sidecar: it then closes every inbound connection
/// after one response, so each request through it is a new mTLS handshake with the
/// certificates both sides hold at that moment (pooled connections would hide a bad one).
fn handshake_per_request(server: &Sidecar) {
    let r = http_request(server.admin, "POST", "admin", "/healthcheck/fail", &[], "");
    assert_eq!(r.unwrap().status, 200, "{}: /healthcheck/fail", server.pod);
}

fn connected(sidecar: &Sidecar) -> bool {
    sidecar.stats("control_plane.").get("connected_state") == Some(&1)
}

#[test]
fn traffic_flows_on_the_last_configuration_while_the_control_plane_is_dead() {
    let MeshedCanary {
        mut mesh,
        servers,
        _backends,
    } = meshed_canary(62, 0);
    let client = mesh.client();
    only(&mesh, "web.demo", "v1", Duration::from_secs(10));
    let load = Load::start(&client, "web.demo");
    thread::sleep(Duration::from_millis(300));

    let killed = load.mark();
    mesh.kill_control_plane();
    for s in [&client, &servers[0], &servers[1]] {
        wait_for(
            Duration::from_secs(5),
            || !connected(s),
            &format!("{} to notice that the control plane is gone", s.pod),
        );
    }
    // An edit nobody serves: the proxies keep the split they have.
    mesh.write("split.yaml", &canary_split(100));
    thread::sleep(Duration::from_secs(3));
    let while_dead = load.since(killed);
    let answers = load.finish();
    eprintln!(
        "{} requests while the control plane was dead: {:?}",
        while_dead.len(),
        tally(&while_dead)
    );
    assert_eq!(failures(&answers), Vec::<&String>::new(), "failed requests");
    assert!(while_dead.len() > 300, "only {} requests", while_dead.len());
    assert_eq!(
        tally(&while_dead).keys().collect::<Vec<_>>(),
        ["v1"],
        "the last configuration stays"
    );
}

/// The restarted control plane has a new CA (local mode keeps it in memory): until every
/// proxy holds the new bundle and its new certificate, handshakes between one that has them
/// and one that does not fail, so requests may fail in that window (they are counted, not
/// asserted); before the restart and once the new certificates are in place, none may.
#[test]
fn a_restarted_control_plane_with_a_new_ca_takes_over_the_running_proxies() {
    let MeshedCanary {
        mut mesh,
        servers,
        _backends,
    } = meshed_canary(63, 0);
    let client = mesh.client();
    only(&mesh, "web.demo", "v1", Duration::from_secs(10));
    let sidecars = [&client, &servers[0], &servers[1]];
    let before: Vec<BTreeSet<String>> = sidecars.iter().map(|s| serials(s)).collect();
    assert!(
        before.iter().all(|s| s.len() >= 2),
        "own certificate and CA: {before:?}"
    );
    let load = Load::start(&client, "web.demo");
    thread::sleep(Duration::from_millis(300));

    mesh.kill_control_plane();
    let dead = load.mark();
    // Edited while nothing serves it: applied by the next control plane.
    mesh.write("split.yaml", &canary_split(100));
    thread::sleep(Duration::from_secs(1));
    let restarted = load.mark();
    let restarted_at = Instant::now();
    mesh.restart_control_plane();
    let took = converge(
        &load,
        restarted,
        restarted_at,
        ("v2", 1.0, 0.0),
        200,
        Duration::from_secs(20),
    );
    // Every sidecar holds a new certificate and trusts only the new CA.
    let mut after = Vec::new();
    for (s, old) in sidecars.iter().zip(&before) {
        let mut now = BTreeSet::new();
        wait_for(
            Duration::from_secs(10),
            || {
                now = serials(s);
                now.len() >= 2 && now.is_disjoint(old)
            },
            &format!("{} to hold only new certificates", s.pod),
        );
        after.push(now);
    }
    // mTLS with the new certificates: every request is a new handshake on both servers.
    let checked = load.mark();
    thread::sleep(Duration::from_secs(1));
    let mesh_edit = load.mark();
    mesh.write("split.yaml", &canary_split(50));
    let both = converge(
        &load,
        mesh_edit,
        Instant::now(),
        ("v2", 0.5, 0.1),
        300,
        Duration::from_secs(10),
    );
    let answers = load.finish();
    let transition = &answers[restarted..checked];
    eprintln!(
        "{} requests; while dead: {:?}; the restart converged after {took:?} with {} failures in {} requests ({:?}); 50/50 after {both:?}; certificates before {before:?}, after {after:?}",
        answers.len(),
        tally(&answers[dead..restarted]),
        failures(transition).len(),
        transition.len(),
        failures(transition).into_iter().collect::<BTreeSet<_>>(),
    );
    assert_eq!(
        failures(&answers[..restarted]),
        Vec::<&String>::new(),
        "failed requests before the restart"
    );
    assert_eq!(
        failures(&answers[checked..]),
        Vec::<&String>::new(),
        "failed requests once the new certificates are in place"
    );
    assert_eq!(
        tally(&answers[dead..restarted]).keys().collect::<Vec<_>>(),
        ["v1"],
        "the old split while the control plane is dead"
    );
}

/// `web` with two endpoints, backends `a` and `b`, outside the mesh (the client's sidecar
/// connects to them directly). The one that answered most of the load is stopped: a
/// latency-aware balancer may send (nearly) everything to one endpoint under light load, and
/// stopping one that gets nothing would prove nothing.
#[test]
fn a_dead_endpoint_is_retried_around_then_ejected() {
    let backends = [Backend::http("a"), Backend::http("b")];
    // Two endpoints on different ports: one slice each.
    let service = format!(
        "{}{}",
        http_service("web", Some(&backends[0])),
        endpoint_slice("web", "http", backends[1].addr).replace("name: web-1", "name: web-2")
    );
    let mesh = Mesh::start(Ipv4Addr::new(127, 0, 64, 1), &[("web.yaml", service)]);
    let client = mesh.client();
    wait_for(
        Duration::from_secs(10),
        || {
            let t = mesh.tally("web.demo", 20, &[]);
            t.keys().all(|k| k == "a" || k == "b")
        },
        "the endpoints to answer",
    );
    let cluster = "cluster.demo/web|80.";
    let stat = |name: &str| client.stats(cluster).get(name).copied().unwrap_or(0);
    let load = Load::start(&client, "web.demo");
    thread::sleep(Duration::from_millis(500));

    let stopped = load.mark();
    let before = tally(&load.since(0));
    let (victim, survivor) = if before.get("a") >= before.get("b") {
        (&backends[0], &backends[1])
    } else {
        (&backends[1], &backends[0])
    };
    let retries_before = stat("upstream_rq_retry");
    // The load is sequential: the one request that can be in flight on the victim as it dies
    // is answered at an index in `dying`.
    let dying_from = load.mark();
    victim.stop();
    let stopped_at = Instant::now();
    let dying = dying_from..=load.mark();
    // Envoy keeps sending the dead endpoint its share until the third failure in a row ejects
    // it, within a fraction of a second. The bundled proxy's latency-aware balancer avoids it
    // after the first failure and tries it again only once its latency estimate has decayed
    // below the survivor's: the third failure, and the ejection, can take over ten seconds.
    let ejected = client.wait_for_stat(
        cluster,
        "outlier_detection.ejections_enforced_total",
        Duration::from_secs(20),
    );
    let ejected_after = stopped_at.elapsed();
    // Once ejected, the dead endpoint is not even tried: no more retries.
    thread::sleep(Duration::from_millis(300));
    let (retries_ejected, mark_ejected) = (stat("upstream_rq_retry"), load.mark());
    thread::sleep(Duration::from_secs(2));
    let retries_after = stat("upstream_rq_retry");
    let answers = load.finish();
    eprintln!(
        "{} requests: before {} stopped {:?}, after {:?}; {} retries until the ejection ({ejected}, after {ejected_after:?}), {} after it",
        answers.len(),
        victim.name,
        tally(&answers[..stopped]),
        tally(&answers[stopped..]),
        retries_ejected - retries_before,
        retries_after - retries_ejected,
    );
    // A request the victim had already taken when it died is lost, as on a Pod killed under
    // it: the mesh retries only what cannot have reached the application (the default retry
    // policy), never a delivered request. Every other request must be answered.
    let failed: Vec<(usize, &String)> = answers
        .iter()
        .enumerate()
        .filter_map(|(i, a)| a.as_ref().err().map(|e| (i, e)))
        .collect();
    assert!(
        failed.is_empty()
            || matches!(&failed[..], [(i, e)] if dying.contains(i) && e.contains("disconnect/reset before headers")),
        "failed requests (only the one in flight at {dying:?} as the victim died may be): {failed:?}"
    );
    assert!(
        tally(&answers[..stopped]).get(&victim.name) > Some(&0),
        "{} answered before it stopped",
        victim.name
    );
    assert_eq!(
        tally(&answers[mark_ejected..]).keys().collect::<Vec<_>>(),
        [&survivor.name]
    );
    assert!(
        retries_ejected > retries_before,
        "requests to the dead endpoint were retried"
    );
    assert_eq!(
        retries_after, retries_ejected,
        "the ejected endpoint is still tried"
    );
}
