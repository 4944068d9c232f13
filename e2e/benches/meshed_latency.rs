//! Added latency of the intercepted, mTLS path between two meshed Pods on the real node, for
//! each data plane, against the direct Pod-to-Pod call, in one run.
//!
//! ```text
//!  direct:   client Pod ───────────────────────────────────────────▶ server Pod (no mesh)
//!  bundled:  client Pod ─iptables─▶ switchyard-proxy ─mTLS─▶ switchyard-proxy ─▶ server Pod
//!  envoy:    client Pod ─iptables─▶ envoy ─────────────mTLS─▶ envoy ──────────▶ server Pod
//! ```
//!
//! Every client is the echo workload's `load` (constant rate, latency from the scheduled send
//! time, one keep-alive connection per in-flight request), run with `kubectl exec` in an
//! unmodified client Pod that calls `http://<service>.<namespace>/` by DNS name. Each round
//! runs the three paths in turn at each rate; added latency is a round's meshed percentile
//! minus the same round's direct one, and the figures are medians over rounds. The machine is
//! shared and noisy, so only same-run ratios mean anything.
//!
//! `cargo bench -p switchyard-e2e --bench meshed_latency` (or `make bench-meshed`); needs root,
//! like the real-node suites.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "benchmark harness"
)]

use std::time::Duration;

use serde_json::Value;
use switchyard_e2e::{images::node_images, kube_mesh::KubeMesh};

const ROUNDS: usize = 3;
const RATES: [u32; 2] = [100, 400];
const SECONDS: u32 = 8;

/// A server Deployment and Service `name` (port 80 → 8080) and a sleeping client `name-client`,
/// both with `annotations` on their Pod templates.
fn pair(name: &str, annotations: &str) -> String {
    let image = &node_images().echo;
    format!(
        r#"apiVersion: v1
kind: ServiceAccount
metadata: {{name: {name}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}, annotations: {{{annotations}}}}}
    spec:
      serviceAccountName: {name}
      containers:
      - {{name: echo, image: {image}, imagePullPolicy: IfNotPresent, args: [serve, --http, "8080"]}}
---
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: http, port: 80, targetPort: 8080}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}-client}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {name}-client}}}}
  template:
    metadata: {{labels: {{app: {name}-client}}, annotations: {{{annotations}}}}}
    spec:
      serviceAccountName: {name}
      terminationGracePeriodSeconds: 1
      containers:
      - {{name: app, image: {image}, imagePullPolicy: IfNotPresent, args: [sleep]}}
"#
    )
}

/// `(p50, p99)` in milliseconds of `load` at `rate` from the client of `name` to its Service.
fn run(mesh: &KubeMesh, ns: &str, name: &str, rate: u32) -> (f64, f64) {
    let list = mesh
        .cluster
        .get_json(&["pods", "-n", ns, "-l", &format!("app={name}-client")]);
    let pod = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["metadata"]["deletionTimestamp"].is_null())
        .and_then(|p| p["metadata"]["name"].as_str())
        .unwrap()
        .to_owned();
    let url = format!("http://{name}.{ns}/");
    let rate = rate.to_string();
    let duration = format!("{SECONDS}s");
    let out = mesh.cluster.kubectl_ok(&[
        "exec",
        &pod,
        "-n",
        ns,
        "-c",
        "app",
        "--",
        "switchyard-echo",
        "load",
        &url,
        "--rate",
        &rate,
        "--duration",
        &duration,
        "-o",
        "json",
    ]);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["failed"], 0, "{name} at {rate}/s: {v}");
    (v["p50_ms"].as_f64().unwrap(), v["p99_ms"].as_f64().unwrap())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mesh = KubeMesh::start("bench");
    let ns = mesh.ns().to_owned();
    // The direct pair in a namespace of its own, which is not enrolled.
    let direct = mesh.cluster.namespace("bench-direct");
    mesh.cluster.apply_yaml(direct.name(), &pair("direct", ""));
    mesh.cluster.kubectl_ok(&[
        "annotate",
        "namespace",
        &ns,
        "switchyard.dev/inject=enabled",
    ]);
    mesh.apply(&pair("bundled", r#""switchyard.dev/data-plane": bundled"#));
    mesh.apply(&pair("envoy", r#""switchyard.dev/data-plane": envoy"#));
    // Strict mode: each client may call its server, every request.
    mesh.apply(
        r#"apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: everything}
spec:
  matches: [{name: all, pathRegex: ".*"}]
"#,
    );
    for name in ["bundled", "envoy"] {
        mesh.apply(&format!(
            r#"apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {{name: {name}-http}}
spec:
  destination: {{kind: ServiceAccount, name: {name}}}
  sources: [{{kind: ServiceAccount, name: {name}}}]
  rules: [{{kind: HTTPRouteGroup, name: everything}}]
"#
        ));
    }
    for (n, d) in [
        (direct.name(), "direct"),
        (direct.name(), "direct-client"),
        (ns.as_str(), "bundled"),
        (ns.as_str(), "bundled-client"),
        (ns.as_str(), "envoy"),
        (ns.as_str(), "envoy-client"),
    ] {
        mesh.cluster
            .wait_deployment_available(n, d, Duration::from_secs(120));
    }
    // Warm up every path (and let the TrafficTargets arrive).
    for (n, name) in [
        (direct.name(), "direct"),
        (ns.as_str(), "bundled"),
        (ns.as_str(), "envoy"),
    ] {
        let mut ok = false;
        for _ in 0..30 {
            let list =
                mesh.cluster
                    .get_json(&["pods", "-n", n, "-l", &format!("app={name}-client")]);
            let pod = list["items"][0]["metadata"]["name"]
                .as_str()
                .unwrap()
                .to_owned();
            let out = mesh
                .cluster
                .kubectl()
                .args([
                    "exec",
                    &pod,
                    "-n",
                    n,
                    "-c",
                    "app",
                    "--",
                    "switchyard-echo",
                    "get",
                    &format!("http://{name}.{n}/"),
                ])
                .output()
                .unwrap();
            if String::from_utf8_lossy(&out.stdout).starts_with("200") {
                ok = true;
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        assert!(ok, "{name} never answered");
        run(&mesh, n, name, 50);
    }

    println!(
        "meshed_latency: {ROUNDS} rounds × {} rates × {SECONDS} s per path",
        RATES.len()
    );
    for rate in RATES {
        let mut added: [[Vec<f64>; 2]; 2] = Default::default();
        let mut direct_p = [Vec::new(), Vec::new()];
        for _ in 0..ROUNDS {
            let (d50, d99) = run(&mesh, direct.name(), "direct", rate);
            direct_p[0].push(d50);
            direct_p[1].push(d99);
            for (i, name) in ["bundled", "envoy"].into_iter().enumerate() {
                let (p50, p99) = run(&mesh, &ns, name, rate);
                added[i][0].push(p50 - d50);
                added[i][1].push(p99 - d99);
            }
        }
        let [bundled, envoy] = added.map(|[p50, p99]| (median(p50), median(p99)));
        println!(
            "rate {rate}/s: direct p50 {:.3} ms p99 {:.3} ms; added p50/p99: bundled {:.3}/{:.3} ms, envoy {:.3}/{:.3} ms; bundled/envoy added p99 {:.2}",
            median(direct_p[0].clone()),
            median(direct_p[1].clone()),
            bundled.0,
            bundled.1,
            envoy.0,
            envoy.1,
            bundled.1 / envoy.1,
        );
    }
}
