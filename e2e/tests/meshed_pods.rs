//! Meshed Pods on the real node, exactly as a user runs them: a namespace annotated
//! `switchyard.dev/inject: enabled`, Deployments whose Pods the operator's webhook injects
//! (interception init container, native-sidecar proxy of the mesh's data plane), and unmodified
//! clients that call `http://<service>.<namespace>/` by DNS name. Every connection is
//! redirected to the proxy, which routes it by its original destination (the Service's
//! ClusterIP and port), whatever `Host` says.
//!
//! ```text
//!  client Pod: app ─iptables─▶ proxy :15001 ─mTLS─▶ web Pod: iptables ─▶ proxy :15006 ─▶ app (Pod IP)
//!                                  └─ unknown destination ─▶ passthrough (DNS, API server, unmeshed Pods)
//! ```
//!
//! The same manifests and assertions run on both data planes (`SWITCHYARD_DATA_PLANE`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::BTreeMap, process::Output, time::Duration};

use serde_json::Value;
use switchyard_e2e::{
    assert_share,
    images::node_images,
    kube_mesh::{
        KubeMesh, OPERATOR_ADMIN_PORT, OPERATOR_NAMESPACE, OPERATOR_REPLICAS, OPERATOR_SELECTOR,
    },
    mesh::wait_for,
    traffic_metrics::{metric, seconds_quantity},
};
use switchyard_proxy_config::metrics::LATENCY_BUCKETS_MICROS;

/// The echo server's ports: HTTP (declared), a second HTTP port behind an undeclared Service
/// port, gRPC (declared), the Redis-like banner (server-first, declared TCP), and the line
/// echo (client-first, undeclared).
const HTTP: u16 = 8080;
const HTTP_UNDECLARED: u16 = 8081;
const GRPC: u16 = 9090;
const BANNER: u16 = 6379;
const LINE: u16 = 9000;

/// A Deployment `name` of echo servers running as ServiceAccount `name`, labelled
/// `app: <app>, version: <name>`, with every listener of the suite.
fn server(name: &str, app: &str) -> String {
    server_with(name, app, 1, "0s")
}

/// [`server`] with `replicas` Pods that keep serving for `shutdown_delay` after SIGTERM (as
/// a well-behaved application does while its endpoint is withdrawn).
fn server_with(name: &str, app: &str, replicas: u32, shutdown_delay: &str) -> String {
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
  replicas: {replicas}
  selector: {{matchLabels: {{app: {app}, version: {name}}}}}
  template:
    metadata: {{labels: {{app: {app}, version: {name}}}}}
    spec:
      serviceAccountName: {name}
      terminationGracePeriodSeconds: 10
      containers:
      - name: echo
        image: {image}
        imagePullPolicy: IfNotPresent
        args: [serve, --http, "{HTTP}", --http, "{HTTP_UNDECLARED}", --grpc, "{GRPC}", --banner, "{BANNER}", --tcp, "{LINE}", --shutdown-delay, "{shutdown_delay}"]
        env:
        - name: POD_NAME
          valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}
"#
    )
}

/// Service `name` selecting `selector` with every port of the suite: `http` 80, `grpc` 9090,
/// `tcp-banner` 6379 (declared opaque), `line` 9000 and `web` 8081 (undeclared).
fn service(name: &str, selector: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  selector: {{{selector}}}
  ports:
  - {{name: http, port: 80, targetPort: {HTTP}}}
  - {{name: grpc, port: {GRPC}, targetPort: {GRPC}}}
  - {{name: tcp-banner, port: {BANNER}, targetPort: {BANNER}}}
  - {{name: line, port: {LINE}, targetPort: {LINE}}}
  - {{name: web, port: {HTTP_UNDECLARED}, targetPort: {HTTP_UNDECLARED}}}
"#
    )
}

/// Headless Service `name` (no ClusterIP) selecting `selector`: its clients dial the Pods
/// themselves, on the HTTP and banner ports.
fn headless_service(name: &str, selector: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  clusterIP: None
  selector: {{{selector}}}
  ports:
  - {{name: http, port: {HTTP}}}
  - {{name: tcp-banner, port: {BANNER}}}
"#
    )
}

/// A client Deployment `client` (ServiceAccount `client`) that only sleeps; the suite runs
/// the echo workload's clients in it with `kubectl exec`.
fn client() -> String {
    let image = &node_images().echo;
    format!(
        r#"apiVersion: v1
kind: ServiceAccount
metadata: {{name: client}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: client}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: client}}}}
  template:
    metadata: {{labels: {{app: client}}}}
    spec:
      serviceAccountName: client
      terminationGracePeriodSeconds: 1
      containers:
      - name: app
        image: {image}
        imagePullPolicy: IfNotPresent
        args: [sleep]
"#
    )
}

/// Everything the suite's TrafficTargets refer to: all HTTP requests, `GET /allowed…` only,
/// `GET /headers` (the echo server's report of the request it saw), and every TCP port.
fn routes() -> &'static str {
    r#"apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: web-routes}
spec:
  matches:
  - {name: allowed, pathRegex: "/allowed.*", methods: [GET]}
  - {name: headers, pathRegex: "/headers", methods: [GET]}
  - {name: health, pathRegex: "/grpc[.]health[.]v1[.]Health/.*", methods: [POST]}
  - {name: everything, pathRegex: ".*"}
---
apiVersion: specs.smi-spec.io/v1alpha4
kind: TCPRoute
metadata: {name: web-tcp}
spec:
  matches: {ports: []}
"#
}

/// TrafficTarget `name`: ServiceAccount `client` may call ServiceAccount `to` with the
/// HTTPRouteGroup matches `http_matches` and every TCP port.
fn traffic_target(name: &str, to: &str, http_matches: &[&str]) -> String {
    let matches = serde_json::to_string(http_matches).unwrap();
    format!(
        r#"apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {{name: {name}}}
spec:
  destination: {{kind: ServiceAccount, name: {to}}}
  sources: [{{kind: ServiceAccount, name: client}}]
  rules:
  - {{kind: HTTPRouteGroup, name: web-routes, matches: {matches}}}
  - {{kind: TCPRoute, name: web-tcp}}
"#
    )
}

/// The test namespace enrolled for injection, the client and the servers rolled out with
/// their sidecars, and ready endpoints behind every Service.
struct Scenario {
    mesh: KubeMesh,
}

impl Scenario {
    /// Enrols the namespace, then applies `manifests` and the client, and waits for every
    /// Deployment of `deployments` (and the client) to be available.
    fn start(prefix: &str, manifests: &[String], deployments: &[&str]) -> Scenario {
        let mesh = KubeMesh::start(prefix);
        mesh.cluster.kubectl_ok(&[
            "annotate",
            "namespace",
            mesh.ns(),
            "switchyard.dev/inject=enabled",
        ]);
        mesh.apply(&client());
        for m in manifests {
            mesh.apply(m);
        }
        for d in deployments.iter().chain(&["client"]) {
            mesh.cluster
                .wait_deployment_available(mesh.ns(), d, Duration::from_secs(120));
        }
        let scenario = Scenario { mesh };
        for d in deployments.iter().chain(&["client"]) {
            let pod = scenario.pod_of(d);
            let inits = scenario
                .mesh
                .cluster
                .get_json(&["pod", &pod, "-n", scenario.ns()]);
            let names: Vec<&str> = inits["spec"]["initContainers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["name"].as_str())
                .collect();
            assert_eq!(
                names,
                ["switchyard-init", "switchyard-proxy"],
                "deployment {d} was not injected"
            );
        }
        scenario
    }

    fn ns(&self) -> &str {
        self.mesh.ns()
    }

    /// The name of the (first running) Pod of Deployment `app`.
    fn pod_of(&self, deployment: &str) -> String {
        let list = self.mesh.cluster.get_json(&["pods", "-n", self.ns()]);
        list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .filter(|p| p["status"]["phase"] == "Running")
            .filter_map(|p| p["metadata"]["name"].as_str())
            .find(|n| {
                n.strip_prefix(deployment)
                    .and_then(|rest| rest.strip_prefix('-'))
                    .is_some_and(|rest| rest.matches('-').count() == 1)
            })
            .unwrap_or_else(|| panic!("no running pod of deployment {deployment}: {list}"))
            .to_owned()
    }

    /// Runs `switchyard-echo <args>` in the client Pod's app container.
    fn client(&self, args: &[&str]) -> Output {
        let pod = self.pod_of("client");
        let mut all = vec!["exec", pod.as_str(), "-n", self.ns(), "-c", "app", "--"];
        all.push("switchyard-echo");
        all.extend_from_slice(args);
        self.mesh
            .cluster
            .kubectl()
            .args(&all)
            .output()
            .expect("kubectl exec")
    }

    fn client_text(&self, args: &[&str]) -> String {
        let out = self.client(args);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// `GET url` from the client: `(status, body)`, or `(0, error)` when no response came.
    fn get(&self, url: &str) -> (u16, String) {
        self.get_with(url, &[])
    }

    /// Like [`Scenario::get`], with request headers `NAME:VALUE`.
    fn get_with(&self, url: &str, headers: &[&str]) -> (u16, String) {
        let mut args = vec!["get", url, "--timeout", "5s"];
        for h in headers {
            args.extend(["--header", h]);
        }
        let text = self.client_text(&args);
        let line = text.lines().next().unwrap_or_default().to_owned();
        match line.split_once(' ') {
            Some((status, body)) if status.parse::<u16>().is_ok() => {
                (status.parse().unwrap(), body.to_owned())
            }
            _ => (0, text),
        }
    }

    /// `count` GETs of `url` from the client, one after another, every one answered: the
    /// client's summary (`by_status`, `by_body`).
    fn summary(&self, url: &str, count: u64) -> Value {
        let count = count.to_string();
        let out = self.client(&["get", url, "--count", &count, "-o", "json"]);
        let text = String::from_utf8_lossy(&out.stdout);
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{e}: {text}{}", String::from_utf8_lossy(&out.stderr)));
        assert_eq!(v["errors"], 0, "{url}: {v}");
        v
    }

    /// `count` GETs of `url` from the client: the statuses and how often each came.
    fn statuses(&self, url: &str, count: u64) -> BTreeMap<u16, u64> {
        let v = self.summary(url, count);
        v["by_status"]
            .as_object()
            .unwrap_or_else(|| panic!("{url}: {v}"))
            .iter()
            .map(|(k, n)| (k.parse().unwrap(), n.as_u64().unwrap()))
            .collect()
    }

    /// `count` GETs of `url` from the client: the bodies (server names) and how often each came.
    fn spread(&self, url: &str, count: u32) -> BTreeMap<String, u64> {
        let v = self.summary(url, count.into());
        let statuses = v["by_status"].as_object().cloned().unwrap_or_default();
        assert_eq!(
            statuses.keys().map(String::as_str).collect::<Vec<_>>(),
            ["200"],
            "{url}: {v}"
        );
        v["by_body"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, n)| (k.clone(), n.as_u64().unwrap()))
            .collect()
    }

    /// Waits until `GET url` from the client answers `status`.
    fn wait_status(&self, url: &str, status: u16, what: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let last = self.get(url);
            if last.0 == status {
                return;
            }
            if std::time::Instant::now() >= deadline {
                panic!("timed out waiting for {what} (GET {url} → {status}); last: {last:?}");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// The aggregated APIs' APIServices (the Traffic Metrics API's and the tap API's), which the
/// operator registers while it serves.
const API_SERVICES: [&str; 2] = [
    "v1alpha1.metrics.smi-spec.io",
    "v1alpha1.tap.switchyard.dev",
];
const METRICS_API: &str = "/apis/metrics.smi-spec.io/v1alpha1";

impl Scenario {
    /// `kubectl get --raw path` (as `user` when given): stdout on success, else stderr.
    fn raw(&self, path: &str, user: Option<&str>) -> Result<String, String> {
        let mut cmd = self.mesh.cluster.kubectl();
        cmd.args(["get", "--raw", path]);
        if let Some(user) = user {
            cmd.arg(format!("--as={user}"));
        }
        let out = cmd.output().expect("kubectl get --raw");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Whether APIService `name` is `Available=True`, and its conditions.
    fn api_service_available(&self, name: &str) -> (bool, String) {
        let out = self
            .mesh
            .cluster
            .kubectl()
            .args(["get", "apiservice", name, "-o", "json"])
            .output()
            .expect("kubectl get apiservice");
        if !out.status.success() {
            return (false, String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let conditions = &v["status"]["conditions"];
        let available = conditions
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Available" && c["status"] == "True");
        (available, conditions.to_string())
    }

    fn wait_api_services_available(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        for name in API_SERVICES {
            loop {
                let (available, conditions) = self.api_service_available(name);
                if available {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "APIService {name} not Available after 90 s: {conditions}"
                );
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
}

/// A count (`success_count`, `failure_count`) a `TrafficMetrics` object carries.
fn count(metrics: &Value, name: &str) -> Option<u64> {
    metric(metrics, name)?.parse().ok()
}

/// The success count a `TrafficMetrics` object carries.
fn success_count(metrics: &Value) -> Option<u64> {
    count(metrics, "success_count")
}

/// `kubectl get --raw` of the web Pod's `TrafficMetrics` over the last 10 minutes (see
/// [`resource_metrics`]).
fn web_metrics(s: &Scenario, web: &str, user: Option<&str>) -> Value {
    resource_metrics(s, &format!("pods/{web}"), user)
}

/// `kubectl get --raw` of the `TrafficMetrics` of `resource` (`pods/web-…`, `deployments/web`)
/// in the test namespace over the last 10 minutes. The API server picks a replica per request,
/// and that replica merges every replica's windows, so any of them answers for the whole mesh:
/// never 404 for a known object, never a replica left out (no
/// `metrics.switchyard.dev/partial`).
fn resource_metrics(s: &Scenario, resource: &str, user: Option<&str>) -> Value {
    let path = format!("{METRICS_API}/namespaces/{}/{resource}?t=10m", s.ns());
    let body = s
        .raw(&path, user)
        .unwrap_or_else(|err| panic!("GET {path} as {user:?}: {err}"));
    let item: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert!(
        item["metadata"]["annotations"]["metrics.switchyard.dev/partial"].is_null(),
        "GET {path}: a replica did not answer: {item}"
    );
    item
}

/// The aggregated Traffic Metrics API on the real cluster: Available, discovery lists the
/// resources, a user without the metrics reader role is refused by the API server (403), and
/// a user with it reads the web Pod's success count, which grows by exactly the requests sent.
fn check_aggregated_metrics_api(s: &Scenario, web: &str, url: &str) {
    s.wait_api_services_available();
    let discovery: Value = serde_json::from_str(&s.raw(METRICS_API, None).unwrap()).unwrap();
    assert_eq!(discovery["kind"], "APIResourceList", "{discovery}");
    let names: Vec<&str> = discovery["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    for name in ["pods", "pods/edges", "namespaces"] {
        assert!(
            names.contains(&name),
            "{name} not in discovery: {discovery}"
        );
    }

    // RBAC on metrics.smi-spec.io, by the API server before it proxies: a user without the
    // role is refused; bound to switchyard-metrics-reader, the same user reads.
    let path = format!("{METRICS_API}/namespaces/{}/pods/{web}", s.ns());
    let err = s.raw(&path, Some("someone")).unwrap_err();
    assert!(
        err.contains("Forbidden") && err.contains("metrics.smi-spec.io"),
        "a user without the metrics reader role: {err}"
    );
    s.mesh.cluster.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        &format!("metrics-reader-{}", s.ns()),
        "--clusterrole=switchyard-metrics-reader",
        "--user=metrics-reader",
    ]);

    // Exact counts: wait until every push has landed (the count stays put over a flush
    // interval, 5 s), send a known number of requests, and see the count grow by exactly it.
    let read = || success_count(&web_metrics(s, web, Some("metrics-reader"))).unwrap();
    let mut before = read();
    wait_for(
        Duration::from_secs(60),
        || {
            std::thread::sleep(Duration::from_secs(7));
            let now = read();
            std::mem::replace(&mut before, now) == now
        },
        "the web Pod's success count to settle",
    );
    const SENT: u64 = 25;
    let answered = s.spread(url, SENT as u32);
    assert_eq!(answered.values().sum::<u64>(), SENT);
    let mut after = 0;
    wait_for(
        Duration::from_secs(60),
        || {
            after = read();
            after >= before + SENT
        },
        "the sent requests in the web Pod's success count",
    );
    std::thread::sleep(Duration::from_secs(7));
    let settled = read();
    assert_eq!(
        (after - before, settled - before),
        (SENT, SENT),
        "the aggregated API's success count for {web} grew by the {SENT} requests sent"
    );
    let metrics = web_metrics(s, web, None);
    assert_eq!(metrics["kind"], "TrafficMetrics", "{metrics}");
    assert_eq!(metrics["resource"]["name"], web, "{metrics}");
}

/// The known backend's delay, milliseconds: 150 ms sits well inside the (100 ms, 250 ms]
/// latency bucket, whatever the proxies add (a few milliseconds) or take off (Envoy truncates
/// to whole milliseconds).
const KNOWN_DELAY_MS: u64 = 150;
/// Requests to the known backend answered 200 after [`KNOWN_DELAY_MS`], and answered 500 at once.
const KNOWN_OK: u64 = 180;
const KNOWN_FAILED: u64 = 20;
/// Clients sending the delayed requests at once (180 × 150 ms one after another is 27 s).
const KNOWN_CLIENTS: u64 = 3;

/// The latency bucket holding `d`: its bounds, exclusive below and inclusive above, as the
/// operator's windows count a duration (the first bound at least it).
fn latency_bucket(d: Duration) -> (Duration, Duration) {
    let micros = u64::try_from(d.as_micros()).unwrap();
    let i = LATENCY_BUCKETS_MICROS.partition_point(|&bound| bound < micros);
    let lower = i.checked_sub(1).map_or(0, |p| LATENCY_BUCKETS_MICROS[p]);
    let upper = *LATENCY_BUCKETS_MICROS
        .get(i)
        .unwrap_or_else(|| panic!("{d:?} is above the last finite bucket"));
    (Duration::from_micros(lower), Duration::from_micros(upper))
}

/// Known traffic through the aggregated API on the real cluster: Deployment `known` (one
/// Pod, no probes, called by nothing else) gets 180 requests to `/delay/150` and 20 to
/// `/status/500` from the meshed client, and `kubectl get --raw …/deployments/known` shows
/// exactly 180 successes and 20 failures, and p50, p90 and p99 in the bucket of the truth.
fn check_known_traffic(s: &Scenario) {
    let ns = s.ns().to_owned();
    s.mesh
        .apply(&traffic_target("client-to-known", "known", &["everything"]));
    // Wait for the policy over TCP, whose connections count no request: an HTTP probe here
    // would be a request in known's window (a 403 until the policy lands).
    let banner = format!("known.{ns}:{BANNER}");
    wait_for(
        Duration::from_secs(30),
        || {
            let ok = s
                .client_text(&["banner", &banner, "--timeout", "3s"])
                .contains("+OK");
            if !ok {
                std::thread::sleep(Duration::from_millis(500));
            }
            ok
        },
        "the TrafficTarget to known to take effect (its banner port)",
    );

    let delayed = format!("http://known.{ns}/delay/{KNOWN_DELAY_MS}");
    let failing = format!("http://known.{ns}/status/500");
    let statuses = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..KNOWN_CLIENTS)
            .map(|_| scope.spawn(|| s.statuses(&delayed, KNOWN_OK / KNOWN_CLIENTS)))
            .collect();
        let mut all = s.statuses(&failing, KNOWN_FAILED);
        for c in clients {
            for (status, n) in c.join().unwrap() {
                *all.entry(status).or_default() += n;
            }
        }
        all
    });
    assert_eq!(
        statuses,
        BTreeMap::from([(200, KNOWN_OK), (500, KNOWN_FAILED)]),
        "the statuses the client saw from known"
    );

    // Every request counted (pushes come every 5 s), then nothing more over a flush interval:
    // the counts read are settled, not a push short.
    let counts = |item: &Value| {
        (
            count(item, "success_count").unwrap_or(0),
            count(item, "failure_count").unwrap_or(0),
        )
    };
    wait_for(
        Duration::from_secs(60),
        || {
            let (ok, failed) = counts(&resource_metrics(s, "deployments/known", None));
            let all_in = ok + failed >= KNOWN_OK + KNOWN_FAILED;
            if !all_in {
                std::thread::sleep(Duration::from_millis(500));
            }
            all_in
        },
        "known's requests in the known Deployment's counts",
    );
    std::thread::sleep(Duration::from_secs(7));
    // Each read goes to a replica the API server picks at random; known's proxy pushes to one
    // of the two. Every read must give the same exact counts: the replica without known's
    // stream asks the other (before the merge it answered 404). Eight reads all landing on
    // the holder by chance: 1 in 256.
    for read in 0..8 {
        let item = resource_metrics(s, "deployments/known", None);
        assert_eq!(
            counts(&item),
            (KNOWN_OK, KNOWN_FAILED),
            "read {read} of deployments/known: {item}"
        );
    }
    // Per route, through the same API (Switchyard's `/routes`): known's one TrafficTarget names
    // the match `everything`, so that route holds every request and `[DEFAULT]` none.
    let routes = resource_metrics(s, "deployments/known/routes", None);
    let by_route: BTreeMap<&str, (u64, u64)> = routes["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items: {routes}"))
        .iter()
        .map(|item| {
            let route = item["metadata"]["annotations"]["metrics.switchyard.dev/route"]
                .as_str()
                .unwrap_or_else(|| panic!("an item without its route: {routes}"));
            (route, counts(item))
        })
        .collect();
    assert_eq!(
        by_route,
        BTreeMap::from([
            ("web-routes/everything", (KNOWN_OK, KNOWN_FAILED)),
            ("[DEFAULT]", (0, 0)),
        ]),
        "deployments/known/routes: {routes}"
    );
    let item = resource_metrics(s, "deployments/known", None);
    eprintln!("deployments/known: {item:#}");
    assert_eq!(item["kind"], "TrafficMetrics", "{item}");
    assert_eq!(item["resource"]["kind"], "Deployment", "{item}");
    assert_eq!(item["resource"]["name"], "known", "{item}");
    assert_eq!(
        counts(&item),
        (KNOWN_OK, KNOWN_FAILED),
        "(success_count, failure_count) of deployments/known: {item}"
    );

    // The truth: the 20 failures are the fastest (answered at once), the 180 others take
    // 150 ms. Sorted, ranks 21 to 200 are the delayed ones, so the p50 (rank 100), p90 (180)
    // and p99 (198) are all 150 ms: p99 is not above it because nothing was slower than the
    // delay, and not below because the fast ones are only the first 10 %. The API interpolates
    // within the bucket that holds the rank, so each must lie in 150 ms's bucket.
    let (lower, upper) = latency_bucket(Duration::from_millis(KNOWN_DELAY_MS));
    for name in [
        "p50_response_latency",
        "p90_response_latency",
        "p99_response_latency",
    ] {
        let value = metric(&item, name).unwrap_or_else(|| panic!("no {name}: {item}"));
        let latency = seconds_quantity(value).unwrap_or_else(|| panic!("{name} {value:?}: {item}"));
        assert!(
            latency > lower && latency <= upper,
            "{name} {latency:?} is outside the truth's bucket ({lower:?}, {upper:?}]: {item}"
        );
    }
}

/// `switchyard tap pod/<web>` through the tap API (the API server, then whichever replica it
/// picks, which merges every replica's stream) while the client calls `url` (`path` on web):
/// as the kubeconfig's admin, the first request shown is one of those, inbound at the web Pod,
/// from the client's identity to the web Pod's, over mTLS, whichever replica the web Pod's
/// access-log stream and each tap landed on (three taps, two replicas). A user without
/// `switchyard-tap` is refused by the API server with 403; bound to it in the namespace, the
/// same user taps.
fn check_tap(s: &Scenario, web: &str, url: &str, path: &str) {
    s.wait_api_services_available();
    for _ in 0..2 {
        check_tap_event(&tap(s, web, url, None).unwrap(), s, web, path);
    }

    let err = tap(s, web, url, Some("someone-without-rbac")).unwrap_err();
    assert!(
        err.contains("403")
            && err.contains("forbidden")
            && err.contains("someone-without-rbac")
            && err.contains("tap.switchyard.dev"),
        "a user without switchyard-tap: {err}"
    );
    s.mesh.cluster.kubectl_ok(&[
        "create",
        "rolebinding",
        "tapper",
        "-n",
        s.ns(),
        "--clusterrole=switchyard-tap",
        "--user=tapper",
    ]);
    // RBAC applies at once, but the binding reaches the API server's cache a moment later.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let event = loop {
        match tap(s, web, url, Some("tapper")) {
            Ok(event) => break event,
            Err(err) if err.contains("forbidden") => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "tapper, bound to switchyard-tap, still refused: {err}"
                );
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(err) => panic!("switchyard tap as tapper: {err}"),
        }
    };
    check_tap_event(&event, s, web, path);
}

/// One `switchyard tap pod/<web> --count 1` through the kubeconfig (as `user` when given)
/// while the client calls `url`: the event shown, or the CLI's output when it fails.
fn tap(s: &Scenario, web: &str, url: &str, user: Option<&str>) -> Result<Value, String> {
    use std::io::Read as _;
    let mut cmd = std::process::Command::new(switchyard_e2e::switchyard_bin());
    cmd.args(["tap", &format!("pod/{web}"), "-n", s.ns()])
        .args([
            "-o",
            "json",
            "--count",
            "1",
            "--duration",
            "60s",
            "--kubeconfig",
        ])
        .arg(s.mesh.cluster.kubeconfig());
    if let Some(user) = user {
        cmd.args(["--as", user]);
    }
    let mut tap = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let exited = loop {
        if let Some(status) = tap.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() >= deadline {
            let _ = tap.kill();
            let _ = tap.wait();
            panic!("switchyard tap showed no request in 60 s");
        }
        s.spread(url, 1);
        std::thread::sleep(Duration::from_millis(500));
    };
    let (mut out, mut err) = (String::new(), String::new());
    tap.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    tap.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    if !exited.success() {
        return Err(format!("{exited}: {out}{err}"));
    }
    serde_json::from_str(out.trim()).map_err(|e| format!("{e}: {out}{err}"))
}

fn check_tap_event(event: &Value, s: &Scenario, web: &str, path: &str) {
    assert_eq!(event["path"], path, "{event}");
    assert_eq!(event["status"], 200, "{event}");
    assert_eq!(event["direction"], "inbound", "{event}");
    assert_eq!(event["proxy"], format!("{}/{web}", s.ns()), "{event}");
    for end in ["sourceIdentity", "destinationIdentity"] {
        assert!(
            event[end]
                .as_str()
                .is_some_and(|id| id.starts_with("spiffe://")),
            "{end}: {event}"
        );
    }
}

/// Runs `switchyard-echo <args>` in a bare Pod of namespace `ns` until it exits; its output.
impl Scenario {
    /// `switchyard ARGS -o json` through the cluster's kubeconfig, as a user runs it: exit 0
    /// and its JSON.
    fn cli_json(&self, args: &[&str]) -> Value {
        let out = std::process::Command::new(switchyard_e2e::switchyard_bin())
            .args(args)
            .args(["-o", "json", "--kubeconfig"])
            .arg(self.mesh.cluster.kubeconfig())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "switchyard {args:?}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("switchyard {args:?}: {e}: {text}"))
    }
}

fn run_to_completion(s: &Scenario, ns: &str, args: &[&str]) -> String {
    let pod = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "once"},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "app",
                "image": node_images().echo,
                "imagePullPolicy": "IfNotPresent",
                "command": ["switchyard-echo"],
                "args": args,
            }],
        },
    });
    // One at a time per namespace: the last one goes first.
    s.mesh.cluster.kubectl_ok(&[
        "delete",
        "pod",
        "once",
        "-n",
        ns,
        "--ignore-not-found",
        "--wait",
    ]);
    s.mesh.cluster.apply_yaml(ns, &pod.to_string());
    wait_for(
        Duration::from_secs(60),
        || {
            let p = s.mesh.cluster.get_json(&["pod", "once", "-n", ns]);
            matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
        },
        "the one-off pod to finish",
    );
    s.mesh.cluster.kubectl_ok(&["logs", "once", "-n", ns])
}

#[test]
fn strict_access_applies_to_unmodified_clients_on_every_protocol() {
    let s = Scenario::start(
        "meshed",
        &[
            server("web", "web"),
            service("web", "app: web"),
            headless_service("web-pods", "app: web"),
            // Called only by check_known_traffic, so its window holds only the known traffic.
            server("known", "known"),
            service("known", "app: known"),
        ],
        &["web", "known"],
    );
    let ns = s.ns().to_owned();
    let web = s.pod_of("web");
    let url = |path: &str| format!("http://web.{ns}{path}");
    let web_ip = s.mesh.cluster.get_json(&["pod", &web, "-n", &ns])["status"]["podIP"]
        .as_str()
        .unwrap()
        .to_owned();
    // The headless Service's Pod, by the address its DNS name gives and by that name.
    let pod_urls = [
        format!("http://{web_ip}:{HTTP}"),
        format!("http://web-pods.{ns}:{HTTP}"),
    ];

    // No TrafficTarget: every port of `web` is closed to `client` (strict mode), by its
    // ClusterIP and as a Pod of the headless Service. A 403 (rather than a refused handshake)
    // shows the headless call went through the mesh: mTLS as `client`, then the policy.
    let (status, body) = s.get(&url("/allowed"));
    assert_eq!((status, body.as_str()), (403, "denied by mesh policy"));
    for pod_url in &pod_urls {
        let (status, body) = s.get(&format!("{pod_url}/allowed"));
        assert_eq!(
            (status, body.as_str()),
            (403, "denied by mesh policy"),
            "{pod_url}"
        );
    }
    for addr in [format!("web.{ns}:{BANNER}"), format!("{web_ip}:{BANNER}")] {
        let banner = s.client_text(&["banner", &addr, "--timeout", "3s"]);
        assert!(
            !banner.contains("+OK"),
            "banner port {addr} open without a TrafficTarget: {banner}"
        );
    }

    // A TrafficTarget allowing `GET /allowed…` and every TCP port.
    s.mesh.apply(routes());
    s.mesh.apply(&traffic_target(
        "client-to-web",
        "web",
        &["allowed", "headers", "health"],
    ));
    s.wait_status(&url("/allowed/x"), 200, "the TrafficTarget to take effect");
    let (status, body) = s.get(&url("/allowed/x"));
    assert_eq!(
        (status, body.as_str()),
        (200, web.as_str()),
        "routed to the web pod"
    );
    // `Host` does not matter: the ClusterIP and port decide, as for any intercepted connection.
    let out = s.client_text(&[
        "get",
        &url("/allowed/host"),
        "--header",
        "host:elsewhere.example",
    ]);
    assert_eq!(out.trim(), format!("200 {web}"), "a foreign Host header");
    let (status, _) = s.get(&url("/forbidden"));
    assert_eq!(status, 403, "a path the TrafficTarget does not name");
    // The headless Service's Pod: the same policy, over mTLS (its strict port takes nothing
    // else), and the Pod dialled is the Pod that answers.
    for pod_url in &pod_urls {
        let (status, body) = s.get(&format!("{pod_url}/allowed/pod"));
        assert_eq!((status, body.as_str()), (200, web.as_str()), "{pod_url}");
        let (status, _) = s.get(&format!("{pod_url}/forbidden"));
        assert_eq!(status, 403, "{pod_url}/forbidden");
    }
    let banner = s.client_text(&["banner", &format!("{web_ip}:{BANNER}"), "--ping"]);
    assert_eq!(
        banner.lines().collect::<Vec<_>>(),
        [format!("+OK {web}"), format!("+PONG {web}")],
        "banner on the headless Service's Pod"
    );

    // The server's application sees who calls: the client's SPIFFE ID, set by web's sidecar
    // from the certificate it verified (`x-forwarded-client-cert`), never what the client
    // wrote there itself.
    let (status, body) = s.get_with(
        &url("/headers"),
        &["x-forwarded-client-cert:URI=spiffe://cluster.local/ns/kube-system/sa/admin"],
    );
    assert_eq!(status, 200, "{body}");
    let seen: Value = serde_json::from_str(&body).unwrap();
    let xfcc = &seen["headers"]["x-forwarded-client-cert"];
    let [xfcc] = xfcc.as_array().map(Vec::as_slice).unwrap_or_default() else {
        panic!("x-forwarded-client-cert: {xfcc}")
    };
    let xfcc = xfcc.as_str().unwrap();
    assert!(
        xfcc.starts_with(&format!("By=spiffe://cluster.local/ns/{ns}/sa/web;Hash="))
            && xfcc.ends_with(&format!(";URI=spiffe://cluster.local/ns/{ns}/sa/client")),
        "x-forwarded-client-cert: {xfcc}"
    );

    // gRPC (declared HTTP/2), unary and streaming.
    let grpc = s.client_text(&["grpc", &format!("web.{ns}:{GRPC}")]);
    assert_eq!(grpc.trim(), format!("SERVING {web}"), "grpc unary");
    let watch = s.client_text(&["grpc", &format!("web.{ns}:{GRPC}"), "--watch", "1"]);
    assert_eq!(watch.trim(), format!("SERVING {web}"), "grpc streaming");

    // A server-first protocol on a declared TCP port: the greeting comes at once.
    let banner = s.client_text(&["banner", &format!("web.{ns}:{BANNER}"), "--ping"]);
    assert_eq!(
        banner.lines().collect::<Vec<_>>(),
        [format!("+OK {web}"), format!("+PONG {web}")],
        "banner"
    );
    // A client-first protocol on an undeclared port: detection finds no HTTP, TCP it is.
    let line = s.client_text(&["tcp", &format!("web.{ns}:{LINE}"), "--send", "hello"]);
    assert_eq!(line.trim(), format!("{web}: hello"), "line echo");
    // HTTP on an undeclared port is detected; the TCPRoute authorizes that port.
    let (status, body) = s.get(&format!("http://web.{ns}:{HTTP_UNDECLARED}/anything"));
    assert_eq!(
        (status, body.as_str()),
        (200, web.as_str()),
        "detected HTTP"
    );

    // The web Pod's ports take only mTLS from the mesh: a plaintext client outside the mesh
    // (a namespace not enrolled) is refused at the very port the meshed client reached.
    let outside = s.mesh.cluster.namespace("plaintext");
    let text = run_to_completion(
        &s,
        outside.name(),
        &[
            "get",
            &format!("http://{web_ip}:{HTTP}/allowed"),
            "--timeout",
            "3s",
        ],
    );
    assert!(
        text.starts_with("ERR"),
        "plaintext from outside the mesh reached the meshed app: {text}"
    );

    // The operator's admin port, which any Pod can reach, answers probes but lists no proxy
    // and shows no proxy's configuration: those are on its loopback debug port.
    let admin = format!("http://switchyard.{OPERATOR_NAMESPACE}:{OPERATOR_ADMIN_PORT}");
    for (path, expected) in [
        ("/healthz".to_owned(), "200 ok"),
        ("/proxies".to_owned(), "404 "),
        (format!("/proxies/{ns}%2F{web}/config"), "404 "),
    ] {
        let text = run_to_completion(
            &s,
            outside.name(),
            &["get", &format!("{admin}{path}"), "--timeout", "3s"],
        );
        assert!(
            text.starts_with(expected),
            "GET {path} from another Pod: {text}"
        );
    }

    // `switchyard proxy-status` through the user's kubeconfig (a port-forward by the API server
    // to each operator replica): both meshed Pods, every type synced, on the suite's data plane.
    let status = |pod: &str| -> Value {
        let list = s.cli_json(&["proxy-status"]);
        let name = format!("{ns}/{pod}");
        list.as_array()
            .into_iter()
            .flatten()
            .find(|p| p["proxy"] == name.as_str())
            .cloned()
            .unwrap_or_else(|| panic!("{name} is not listed: {list}"))
    };
    let expected_plane = match switchyard_e2e::DataPlane::from_env() {
        switchyard_e2e::DataPlane::Envoy => "envoy ",
        switchyard_e2e::DataPlane::Bundled => "switchyard-proxy ",
    };
    for pod in [s.pod_of("client"), web.clone()] {
        let listed = status(&pod);
        assert!(
            listed["data_plane"]
                .as_str()
                .is_some_and(|d| d.starts_with(expected_plane)),
            "{listed}"
        );
        for t in ["CDS", "EDS", "LDS", "RDS", "SDS"] {
            assert_eq!(listed["types"][t]["state"], "SYNCED", "{t}: {listed}");
        }
        assert!(
            listed["control_plane"]
                .as_str()
                .is_some_and(|c| c.starts_with("switchyard-")),
            "{listed}"
        );
    }

    // `switchyard proxy-config` the same way: what the client's proxy ACKed, every type synced,
    // the web Service's cluster among its clusters, and no private key in the answer.
    let client = s.pod_of("client");
    let config = s.cli_json(&["proxy-config", &client, "-n", &ns]);
    assert_eq!(config["proxy"], format!("{ns}/{client}"), "{config}");
    for t in ["CDS", "EDS", "LDS", "RDS", "SDS"] {
        assert_eq!(config["types"][t]["state"], "SYNCED", "{t}: {config}");
    }
    let web_cluster = format!("{ns}/web|");
    assert!(
        config["types"]["CDS"]["resources"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["name"]
                .as_str()
                .is_some_and(|n| n.starts_with(&web_cluster)))),
        "no {web_cluster}* cluster: {config}"
    );
    assert!(!config.to_string().contains("PRIVATE KEY"), "{config}");

    // `switchyard stat` through the Traffic Metrics API (the user's kubeconfig, no
    // port-forward): the web Pod's proxy pushed what it served (the requests above) to the
    // replica its metrics stream landed on, and whichever replica answers merges the others'.
    let served = |item: &Value| {
        item["metrics"].as_array().is_some_and(|ms| {
            ms.iter().any(|m| {
                m["name"] == "success_count"
                    && m["value"].as_str().and_then(|v| v.parse::<u64>().ok()) > Some(0)
            })
        })
    };
    let mut stat = Value::Null;
    wait_for(
        Duration::from_secs(30),
        || {
            stat = s.cli_json(&["stat", "pods", "-n", &ns, "-t", "10m"]);
            stat["items"].as_array().is_some_and(|items| {
                items
                    .iter()
                    .any(|i| i["resource"]["name"] == web.as_str() && served(i))
            })
        },
        "the web Pod's served requests in switchyard stat",
    );

    // `switchyard edges` the same way: the client Pod's calls to web, over mTLS, with both
    // identities.
    let client_pod = s.pod_of("client");
    let mut edges = Value::Null;
    wait_for(
        Duration::from_secs(30),
        || {
            edges = s.cli_json(&["edges", "-n", &ns, "-t", "10m"]);
            edges.as_array().is_some_and(|all| {
                all.iter().any(|e| {
                    e["src"]["name"] == client_pod.as_str()
                        && e["dst"]["kind"] == "service"
                        && e["dst"]["name"] == "web"
                        && e["secured"] == "mtls"
                        && e["successCount"].as_u64() > Some(0)
                })
            })
        },
        "the client's calls to web in switchyard edges",
    );

    // `switchyard tap` the same way: the web Pod's proxy, tapped over the channel and token of
    // its injected bootstrap, shows a request sent now, with both identities, over mTLS.
    check_tap(&s, &web, &url("/allowed/tapped"), "/allowed/tapped");

    // The same API as the aggregated APIService, as any user with the metrics reader role
    // reads it: exact counts for the web Pod, discovery, RBAC enforced by the API server.
    check_aggregated_metrics_api(&s, &web, &url("/allowed/metrics"));
    // Known traffic to a Deployment nothing else calls: exact counts and latency percentiles
    // in the bucket of the truth, through the API server.
    check_known_traffic(&s);

    // Deleting the TrafficTarget denies again.
    s.mesh
        .kubectl(&["delete", "traffictarget", "client-to-web"]);
    s.wait_status(&url("/allowed/x"), 403, "the deletion to take effect");
}

#[test]
fn traffic_splits_move_intercepted_requests_by_weight() {
    let s = Scenario::start(
        "split",
        &[
            server("web-v1", "web"),
            server("web-v2", "web"),
            service("web", "app: web"),
            service("web-v1", "version: web-v1"),
            service("web-v2", "version: web-v2"),
        ],
        &["web-v1", "web-v2"],
    );
    let ns = s.ns().to_owned();
    let (v1, v2) = (s.pod_of("web-v1"), s.pod_of("web-v2"));
    s.mesh.apply(routes());
    s.mesh
        .apply(&traffic_target("to-v1", "web-v1", &["everything"]));
    s.mesh
        .apply(&traffic_target("to-v2", "web-v2", &["everything"]));
    let url = format!("http://web.{ns}/");
    s.wait_status(&url, 200, "the TrafficTargets to take effect");

    // No split: both versions answer through the root Service. A version whose proxy was not
    // ready for the first requests may sit out an outlier ejection (30 s) first.
    let mut both = BTreeMap::new();
    wait_for(
        Duration::from_secs(60),
        || {
            both = s.spread(&url, 40);
            both.len() == 2
        },
        "both versions to answer through the root Service",
    );
    assert_eq!(both.keys().collect::<Vec<_>>(), [&v1, &v2], "{both:?}");

    let split = |w1: u32, w2: u32| {
        s.mesh.apply(&format!(
            r#"apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {{name: web}}
spec:
  service: web
  backends: [{{service: web-v1, weight: {w1}}}, {{service: web-v2, weight: {w2}}}]
"#
        ));
    };
    for (w1, w2, only) in [(1, 0, &v1), (0, 1, &v2)] {
        split(w1, w2);
        wait_for(
            Duration::from_secs(30),
            || s.spread(&url, 10).keys().collect::<Vec<_>>() == [only],
            &format!("weights {w1}/{w2} to send everything to {only}"),
        );
        let all = s.spread(&url, 50);
        assert_eq!(all, BTreeMap::from([(only.clone(), 50)]), "{w1}/{w2}");
    }
    for (w1, w2) in [(75, 25), (25, 75)] {
        split(w1, w2);
        // The new weights are in place once the other version answers again.
        let heavier = if w1 > w2 { &v1 } else { &v2 };
        let lighter = if w1 > w2 { &v2 } else { &v1 };
        wait_for(
            Duration::from_secs(30),
            || s.spread(&url, 20).contains_key(lighter),
            &format!("weights {w1}/{w2} to take effect"),
        );
        assert_share(&s.spread(&url, 200), heavier, 0.75);
    }

    // The same object as tools that write older versions send it: v1alpha1's quantity
    // weights (converted by the webhook), v1alpha2's and v1alpha3's integers.
    for (version, w1, w2, only) in [
        ("v1alpha1", "\"1\"", "\"0\"", &v1),
        ("v1alpha2", "0", "1", &v2),
        ("v1alpha3", "1", "0", &v1),
    ] {
        s.mesh.apply(&format!(
            r#"apiVersion: split.smi-spec.io/{version}
kind: TrafficSplit
metadata: {{name: web}}
spec:
  service: web
  backends: [{{service: web-v1, weight: {w1}}}, {{service: web-v2, weight: {w2}}}]
"#
        ));
        wait_for(
            Duration::from_secs(30),
            || s.spread(&url, 10).keys().collect::<Vec<_>>() == [only],
            &format!("{version} weights {w1}/{w2} to send everything to {only}"),
        );
        let all = s.spread(&url, 50);
        assert_eq!(all, BTreeMap::from([(only.clone(), 50)]), "{version}");
    }
    // A v1alpha1 split in milli-units, 750m/250m: three to one, as 75/25 above.
    s.mesh.apply(
        r#"apiVersion: split.smi-spec.io/v1alpha1
kind: TrafficSplit
metadata: {name: web}
spec:
  service: web
  backends: [{service: web-v1, weight: 750m}, {service: web-v2, weight: 250m}]
"#,
    );
    wait_for(
        Duration::from_secs(30),
        || s.spread(&url, 20).contains_key(&v2),
        "v1alpha1 weights 750m/250m to take effect",
    );
    assert_share(&s.spread(&url, 200), &v1, 0.75);
}

#[test]
fn destinations_outside_the_mesh_pass_through_unchanged_and_a_job_completes() {
    let s = Scenario::start("egress", &[], &[]);
    let ns = s.ns().to_owned();
    // An unmeshed server in a namespace of its own.
    let outside = s.mesh.cluster.namespace("outside");
    s.mesh.cluster.apply_yaml(
        outside.name(),
        &switchyard_e2e::kube_mesh::echo_deployment("plain", 1, &["--name", "plain"]),
    );
    s.mesh.cluster.apply_yaml(
        outside.name(),
        &switchyard_e2e::kube_mesh::service_yaml("plain", "plain"),
    );
    s.mesh
        .cluster
        .wait_deployment_available(outside.name(), "plain", Duration::from_secs(60));
    s.mesh
        .cluster
        .wait_ready_endpoints(outside.name(), "plain", 1, Duration::from_secs(30));
    let (status, body) = s.get(&format!("http://plain.{}/", outside.name()));
    assert_eq!(
        (status, body.as_str()),
        (200, "plain"),
        "an unmeshed Service"
    );

    // The API server, through its Service: Go's TLS server answers plaintext HTTP with 400,
    // which proves the connection reached it unchanged (and DNS resolved, over UDP, which
    // interception never touches).
    let (status, body) = s.get("http://kubernetes.default.svc:443/");
    assert_eq!(status, 400, "the API server: {body}");

    // A Job in the enrolled namespace runs with its sidecar, and completes: the native sidecar
    // stops once the Job's container has exited, so the Pod terminates.
    s.mesh.apply(&format!(
        r#"apiVersion: batch/v1
kind: Job
metadata: {{name: once}}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 1
      containers:
      - name: app
        image: {}
        imagePullPolicy: IfNotPresent
        command: [switchyard-echo]
        args: [get, "http://plain.{}/"]
"#,
        node_images().echo,
        outside.name()
    ));
    let mut job = Value::Null;
    wait_for(
        Duration::from_secs(90),
        || {
            job = s.mesh.cluster.get_json(&["job", "once", "-n", &ns]);
            job["status"]["succeeded"].as_u64() == Some(1)
                || job["status"]["failed"].as_u64() > Some(0)
        },
        "the Job to finish",
    );
    assert_eq!(job["status"]["succeeded"], 1, "{job}");
    let pods = s
        .mesh
        .cluster
        .get_json(&["pods", "-n", &ns, "-l", "job-name=once"]);
    let pod = &pods["items"][0];
    assert_eq!(pod["status"]["phase"], "Succeeded", "{pod}");
    let inits: Vec<&str> = pod["spec"]["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(
        inits,
        ["switchyard-init", "switchyard-proxy"],
        "the Job's Pod was injected"
    );
}

#[test]
fn a_rolling_update_under_load_fails_no_request_and_a_pod_swaps_its_data_plane() {
    let s = Scenario::start(
        "rollout",
        &[
            server_with("web", "web", 2, "3s"),
            service("web", "app: web"),
        ],
        &["web"],
    );
    let ns = s.ns().to_owned();
    s.mesh.apply(routes());
    s.mesh
        .apply(&traffic_target("to-web", "web", &["everything"]));
    let url = format!("http://web.{ns}/");
    s.wait_status(&url, 200, "the TrafficTarget to take effect");

    // Constant load from the client while every server Pod is replaced.
    let pod = s.pod_of("client");
    let load = s
        .mesh
        .cluster
        .kubectl()
        .args([
            "exec",
            &pod,
            "-n",
            &ns,
            "-c",
            "app",
            "--",
            "switchyard-echo",
            "load",
            &url,
            "--rate",
            "20",
            "--duration",
            "30s",
            "-o",
            "json",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl exec load");
    let old_pods: Vec<String> = s
        .mesh
        .kubectl(&["get", "pods", "-l", "app=web", "-o", "name"])
        .lines()
        .map(|l| l.trim_start_matches("pod/").to_owned())
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    s.mesh.kubectl(&["rollout", "restart", "deployment/web"]);
    s.mesh
        .kubectl(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    let out = load.wait_with_output().expect("load");
    let text = String::from_utf8_lossy(&out.stdout);
    let summary: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{e}: {text}{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(
        summary["failed"], 0,
        "failed requests during the rollout: {summary}"
    );
    assert!(summary["sent"].as_u64().unwrap() >= 500, "{summary}");
    let servers = summary["by_body"].as_object().unwrap();
    let from_old = servers.keys().filter(|n| old_pods.contains(n)).count();
    assert!(
        from_old >= 1 && from_old < servers.len(),
        "old ({old_pods:?}) and new Pods both answered: {summary}"
    );

    // The client moves to the other data plane by annotation and rollout; no SMI object
    // changes, and the same request still goes through.
    let other = match s.mesh.data_plane.as_str() {
        "envoy" => "bundled",
        _ => "envoy",
    };
    let patch = format!(
        r#"{{"spec":{{"template":{{"metadata":{{"annotations":{{"switchyard.dev/data-plane":"{other}"}}}}}}}}}}"#
    );
    s.mesh
        .kubectl(&["patch", "deployment/client", "--type=merge", "-p", &patch]);
    s.mesh
        .kubectl(&["rollout", "status", "deployment/client", "--timeout=120s"]);
    let client = s
        .mesh
        .cluster
        .get_json(&["pod", &s.pod_of("client"), "-n", &ns]);
    let image = client["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "switchyard-proxy")
        .and_then(|c| c["image"].as_str())
        .unwrap()
        .to_owned();
    let expected = match other {
        "envoy" => &node_images().envoy,
        _ => &node_images().proxy,
    };
    assert_eq!(&image, expected, "the client's proxy after the swap");
    s.wait_status(&url, 200, "the swapped client to reach web");
    let answers = s.spread(&url, 20);
    assert_eq!(answers.values().sum::<u64>(), 20, "{answers:?}");
}

/// The aggregated Traffic Metrics API does not hold up namespace deletion while the operator
/// is down (kubernetes #75788: an unavailable APIService fails the namespace controller's
/// discovery, and the namespace stays Terminating): the last replica to stop unregisters it,
/// and the replicas register it again when they serve.
#[test]
fn namespaces_go_away_while_the_operator_is_down_and_the_metrics_api_comes_back() {
    let s = Scenario {
        mesh: KubeMesh::start("apiservice"),
    };
    let cluster = &s.mesh.cluster;
    s.wait_api_services_available();

    let scale = |n: &str| {
        cluster.kubectl_ok(&[
            "scale",
            "deployment",
            "switchyard",
            "-n",
            OPERATOR_NAMESPACE,
            &format!("--replicas={n}"),
        ]);
    };
    scale("0");
    wait_for(
        Duration::from_secs(90),
        || {
            cluster.get_json(&["pods", "-n", OPERATOR_NAMESPACE, "-l", OPERATOR_SELECTOR])["items"]
                .as_array()
                .is_some_and(Vec::is_empty)
        },
        "every operator Pod to be gone",
    );
    for name in API_SERVICES {
        let (_, gone) = s.api_service_available(name);
        assert!(
            gone.contains("NotFound"),
            "the last replica to stop left APIService {name} registered: {gone}"
        );
    }

    // A namespace with something in it, deleted while no operator runs.
    let doomed = format!("doomed-{}", s.ns());
    cluster.kubectl_ok(&["create", "namespace", &doomed]);
    cluster.kubectl_ok(&[
        "create",
        "configmap",
        "x",
        "-n",
        &doomed,
        "--from-literal=a=b",
    ]);
    cluster.kubectl_ok(&["delete", "namespace", &doomed, "--wait=false"]);
    wait_for(
        Duration::from_secs(60),
        || {
            let out = cluster
                .kubectl()
                .args(["get", "namespace", &doomed])
                .output()
                .unwrap();
            !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("NotFound")
        },
        "the namespace deleted while the operator is down to go away",
    );

    scale(&OPERATOR_REPLICAS.to_string());
    s.mesh
        .wait_operators_ready(OPERATOR_REPLICAS, Duration::from_secs(120));
    s.wait_api_services_available();
    let discovery = s.raw(METRICS_API, None).unwrap();
    assert!(discovery.contains("APIResourceList"), "{discovery}");
}
