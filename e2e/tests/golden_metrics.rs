//! Golden metrics end to end on the suite's data plane: both sidecars push to local mode's
//! control plane over its `MetricsService`, and the SMI Traffic Metrics API on the admin port
//! and `switchyard stat` show known traffic: exact success and failure counts on the server's
//! side and on the client's edge, latency percentiles (the spec's, and Switchyard's p95
//! annotation) in the bucket of the truth; the Deployment and the Service of the serving Pod,
//! and the split's backend, show the same counts; a meshed TCP server holding a known number of
//! client connections shows that many open connections, and one fewer once one closes; and per
//! route (`switchyard stat routes`), the named matches a TrafficTarget to the server uses and
//! `[DEFAULT]` show their exact counts and their own p50, a used match no request took shows
//! exactly zero, and a match no TrafficTarget uses is not listed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    io::{BufRead, BufReader, Write},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    process::Command,
    time::Duration,
};

use serde_json::Value;
use switchyard_e2e::{
    mesh::{
        Backend, Mesh, Sidecar, deployment_pod, http_get, meshed_http_service, split, wait_for,
    },
    switchyard_bin,
    traffic_metrics::{metric, seconds_quantity},
};

const API: &str = "/apis/metrics.smi-spec.io/v1alpha1";

/// `GET path` on the control plane's admin address: status and JSON.
fn api(mesh: &Mesh, path: &str) -> (u16, Value) {
    let r = http_get(mesh.admin, "admin", &format!("{API}{path}"), &[]).unwrap();
    let json = serde_json::from_str(&r.body).unwrap_or(Value::Null);
    (r.status, json)
}

fn count(item: &Value, name: &str) -> u64 {
    metric(item, name).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// A latency quantity of seconds (`12m`, `250u`, `2`) as a duration.
fn latency(item: &Value, name: &str) -> Duration {
    quantity(metric(item, name).unwrap_or_else(|| panic!("no {name}: {item}")))
}

/// An annotation of a TrafficMetrics item.
fn annotation<'a>(item: &'a Value, name: &str) -> Option<&'a str> {
    item["metadata"]["annotations"][name].as_str()
}

const P95: &str = "metrics.switchyard.dev/p95-response-latency";
const TCP_OPEN: &str = "metrics.switchyard.dev/tcp-open-connections";

/// An item's open TCP connections.
fn open_connections(item: &Value) -> Option<u64> {
    annotation(item, TCP_OPEN)?.parse().ok()
}

/// A stat latency cell (`235ms`, `0.28ms`) as a duration.
fn cell_millis(cell: &str) -> Duration {
    let ms: f64 = cell
        .strip_suffix("ms")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a latency: {cell:?}"));
    Duration::from_secs_f64(ms / 1e3)
}

/// A quantity of seconds as a duration.
fn quantity(q: &str) -> Duration {
    seconds_quantity(q).unwrap_or_else(|| panic!("not a quantity of seconds: {q:?}"))
}

/// The TCP port of the `db` Service, on client-0's IP.
const DB_PORT: u16 = 5432;

/// A connection to `db` through `client`'s outbound TCP listener, answered once: its echo
/// of a line proves it reached db-0's application through both proxies.
fn db_connection(client: &Sidecar) -> Option<TcpStream> {
    let mut conn =
        TcpStream::connect_timeout(&SocketAddr::new(client.ip, DB_PORT), Duration::from_secs(2))
            .ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    conn.write_all(b"hello\n").ok()?;
    let mut line = String::new();
    BufReader::new(conn.try_clone().ok()?)
        .read_line(&mut line)
        .ok()?;
    (line == "db: hello\n").then_some(conn)
}

/// web's routes: an HTTPRouteGroup whose `slow`, `errors` and `idle` matches a TrafficTarget
/// to web uses (`unused` it does not), counted per route in the permissive mesh too; no request
/// takes `idle`.
const ROUTES: &str = "apiVersion: specs.smi-spec.io/v1alpha4\nkind: HTTPRouteGroup\nmetadata: {name: web-routes, namespace: demo}\nspec:\n  matches:\n  - {name: slow, pathRegex: '/delay/.*', methods: [GET]}\n  - {name: errors, pathRegex: '/status/5[0-9]+'}\n  - {name: idle, pathRegex: '/idle/.*'}\n  - {name: unused, pathRegex: '/never'}\n---\napiVersion: access.smi-spec.io/v1alpha3\nkind: TrafficTarget\nmetadata: {name: web-access, namespace: demo}\nspec:\n  destination: {kind: ServiceAccount, name: web, namespace: demo}\n  rules:\n  - {kind: HTTPRouteGroup, name: web-routes, matches: [slow, errors, idle]}\n  sources:\n  - {kind: ServiceAccount, name: client, namespace: demo}\n";

/// The item of `route` in a `/routes` list.
fn route_item<'a>(list: &'a Value, route: &str) -> Option<&'a Value> {
    list["items"]
        .as_array()?
        .iter()
        .find(|i| annotation(i, "metrics.switchyard.dev/route") == Some(route))
}

/// Sends `n` GETs of `path` to web through `client`; how many were answered 200.
fn send(client: &Sidecar, path: &str, n: usize) -> u64 {
    (0..n)
        .filter(|_| {
            client
                .request("GET", "web.demo", path)
                .is_ok_and(|r| r.status == 200)
        })
        .count() as u64
}

#[test]
fn known_traffic_shows_exact_counts_and_percentiles_in_the_api_and_stat() {
    let ip = |host| Ipv4Addr::new(127, 0, 61, host);
    let web = Backend::http("web");
    let port = web.addr.port();
    // db-0 (Deployment db) serves TCP behind the meshed Service db: an echo server that keeps
    // every connection until its client closes it.
    let db = Backend::tcp_echo("db");
    let db_target = db.addr.port();
    let mut mesh = Mesh::builder(ip(1))
        .file(
            "web.yaml",
            format!(
                "{}---\n{}---\n{}",
                deployment_pod("web-0", "web", &[("app", "web")], ip(2), "web"),
                meshed_http_service("web", "web-0", ip(2), port),
                // The root as its own backend (90), and web-v2 that does not exist (10): all
                // of web's traffic goes to the web backend, none to web-v2.
                split("v1alpha4", &[("web", "90"), ("web-v2", "10")]),
            ),
        )
        .file("routes.yaml", ROUTES)
        .file(
            "db.yaml",
            format!(
                "{}---\napiVersion: v1\nkind: Service\nmetadata: {{name: db, namespace: demo}}\nspec:\n  selector: {{app: db}}\n  ports: [{{name: tcp, port: {DB_PORT}, targetPort: {db_target}}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: db-1, namespace: demo, labels: {{kubernetes.io/service-name: db}}}}\naddressType: IPv4\nports: [{{name: tcp, port: {db_target}}}]\nendpoints:\n- addresses: ['{}']\n  conditions: {{ready: true}}\n  targetRef: {{kind: Pod, name: db-0, namespace: demo}}\n",
                deployment_pod("db-0", "db", &[("app", "db")], ip(3), "db"),
                ip(3)
            ),
        )
        .start();
    let _server = mesh.sidecar("web-0");
    let _db_server = mesh.sidecar("db-0");
    let client = mesh.client();

    // Until the route is there; every 200 reached web-0's sidecar and counts.
    let mut warmup = 0;
    wait_for(
        Duration::from_secs(15),
        || {
            let ok = send(&client, "/", 1);
            warmup += ok;
            ok == 1
        },
        "a first 200 from web through the client's sidecar",
    );
    // 160 fast, 20 that take 150 ms, 20 answered 500: the truth is p50 fast, p99 ~150 ms.
    let fast = send(&client, "/", 160);
    let slow = send(&client, "/delay/150", 20);
    let failed = 20 - send(&client, "/status/500", 20);
    assert_eq!(
        (fast, slow, failed),
        (160, 20, 20),
        "every request answered"
    );
    let ok = warmup + fast + slow;

    // The pushes arrive every 5 s (the bootstrap's default interval).
    let server = "/namespaces/demo/pods/web-0?t=1m";
    let mut item = Value::Null;
    wait_for(
        Duration::from_secs(30),
        || {
            let (status, json) = api(&mesh, server);
            item = json;
            status == 200
                && count(&item, "success_count") == ok
                && count(&item, "failure_count") == 20
        },
        "web-0's pushed counts to reach the traffic sent",
    );
    assert_eq!(item["kind"], "TrafficMetrics", "{item}");
    assert_eq!(item["edge"]["direction"], "from", "{item}");
    assert_eq!(item["edge"]["side"], "server", "{item}");
    assert_eq!(item["window"], "1m0s", "{item}");
    // Within the bucket of the truth: 150 ms is in (100 ms, 250 ms]; the fast ones below.
    let p99 = latency(&item, "p99_response_latency");
    assert!(
        p99 > Duration::from_millis(100) && p99 <= Duration::from_millis(250),
        "p99 {p99:?}: {item}"
    );
    assert!(
        latency(&item, "p50_response_latency") < Duration::from_millis(100),
        "{item}"
    );
    // The p95 too: 20 of 201 took 150 ms, so the 191st is slow, while the spec's p90 (the
    // 181st) is not: a p95 computed as any lower percentile fails here.
    let p95 = quantity(annotation(&item, P95).unwrap_or_else(|| panic!("no p95: {item}")));
    assert!(
        p95 > Duration::from_millis(100) && p95 <= Duration::from_millis(250),
        "p95 {p95:?}: {item}"
    );
    assert!(
        latency(&item, "p90_response_latency") < Duration::from_millis(100),
        "{item}"
    );
    // Per route, on the server's side: the 20 slow requests in `web-routes/slow`, the 20
    // answered 500 in `web-routes/errors`, none in `web-routes/idle` (configured, not taken),
    // the rest (no named match) in `[DEFAULT]`, exactly; each route's p50 in the bucket of its
    // own truth.
    let routes = "/namespaces/demo/deployments/web/routes?t=1m";
    let mut list = Value::Null;
    wait_for(
        Duration::from_secs(30),
        || {
            list = api(&mesh, routes).1;
            let counts = |route| {
                route_item(&list, route)
                    .map(|i| (count(i, "success_count"), count(i, "failure_count")))
            };
            counts("web-routes/slow") == Some((20, 0))
                && counts("web-routes/errors") == Some((0, 20))
                && counts("web-routes/idle") == Some((0, 0))
                && counts("[DEFAULT]") == Some((ok - 20, 0))
        },
        "web's routes to reach the traffic sent",
    );
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| annotation(i, "metrics.switchyard.dev/route"))
        .collect();
    // `unused`, which no TrafficTarget names, is not a route of web's.
    assert_eq!(
        names,
        [
            "web-routes/errors",
            "web-routes/idle",
            "web-routes/slow",
            "[DEFAULT]"
        ],
        "the used matches by name, then the default: {list}"
    );
    // The idle route: exactly zero, and no latency (nothing measured), as a Pod without
    // traffic.
    let idle = route_item(&list, "web-routes/idle").unwrap();
    assert_eq!(
        (
            metric(idle, "success_count"),
            metric(idle, "failure_count"),
            metric(idle, "p50_response_latency"),
            annotation(idle, P95)
        ),
        (Some("0"), Some("0"), None, None),
        "{idle}"
    );
    let slow_p50 = latency(
        route_item(&list, "web-routes/slow").unwrap(),
        "p50_response_latency",
    );
    assert!(
        slow_p50 > Duration::from_millis(100) && slow_p50 <= Duration::from_millis(250),
        "slow p50 {slow_p50:?}: {list}"
    );
    for route in ["web-routes/errors", "[DEFAULT]"] {
        let p50 = latency(route_item(&list, route).unwrap(), "p50_response_latency");
        assert!(
            p50 < Duration::from_millis(100),
            "{route} p50 {p50:?}: {list}"
        );
    }
    let rows = stat(&mesh, &["routes", "deploy/web"]);
    assert_eq!(
        rows[0],
        [
            "ROUTE",
            "SUCCESS",
            "RPS",
            "LATENCY_P50",
            "LATENCY_P95",
            "LATENCY_P99"
        ],
        "{rows:?}"
    );
    let rps = |n: u64| format!("{:.1}rps", n as f64 / 60.0);
    assert_eq!(
        rows[1][..3],
        ["web-routes/errors", "0.00%", rps(20).as_str()],
        "{rows:?}"
    );
    assert_eq!(
        rows[2],
        ["web-routes/idle", "-", "0.0rps", "-", "-", "-"],
        "the idle route as a row without traffic: {rows:?}"
    );
    assert_eq!(
        rows[3][..3],
        ["web-routes/slow", "100.00%", rps(20).as_str()],
        "{rows:?}"
    );
    let p50 = cell_millis(&rows[3][3]);
    assert!(
        p50 > Duration::from_millis(100) && p50 <= Duration::from_millis(250),
        "slow LATENCY_P50: {rows:?}"
    );
    assert_eq!(
        rows[4][..3],
        ["[DEFAULT]", "100.00%", rps(ok - 20).as_str()],
        "{rows:?}"
    );
    assert!(
        cell_millis(&rows[4][3]) < Duration::from_millis(100),
        "[DEFAULT] LATENCY_P50: {rows:?}"
    );
    assert_eq!(rows.len(), 5, "no row for `unused`: {rows:?}");
    // The Pod's routes are its Deployment's (its one Pod).
    assert_eq!(
        stat(&mesh, &["rt", "po/web-0"])[1..],
        rows[1..],
        "the Pod's routes"
    );

    // web-0's proxy's connections to its application (Envoy pools them per worker, the
    // bundled proxy in one pool; either way the application counts them too).
    wait_for(
        Duration::from_secs(20),
        || {
            let (_, item) = api(&mesh, server);
            open_connections(&item) == Some(web.open_connections() as u64)
        },
        "web-0's open connections to its application as web counts them",
    );

    // The client's side: one edge, to the web Service, the same counts.
    let (status, edges) = api(&mesh, "/namespaces/demo/pods/client-0/edges?t=1m");
    assert_eq!(status, 200, "{edges}");
    let items = edges["items"].as_array().unwrap();
    let to_web = items
        .iter()
        .find(|i| i["edge"]["resource"]["name"] == "web")
        .unwrap_or_else(|| panic!("no edge to web: {edges}"));
    assert_eq!(to_web["edge"]["direction"], "to", "{to_web}");
    assert_eq!(to_web["edge"]["side"], "client", "{to_web}");
    assert_eq!(
        (
            count(to_web, "success_count"),
            count(to_web, "failure_count")
        ),
        (ok, 20),
        "{to_web}"
    );

    // The namespace sums its Pods' served traffic: only web-0 served any.
    let (_, ns) = api(&mesh, "/namespaces/demo?t=1m");
    assert_eq!(
        (count(&ns, "success_count"), count(&ns, "failure_count")),
        (ok, 20),
        "{ns}"
    );
    // web-0's Deployment (through its ReplicaSet) and the Service in front of it: web-0's
    // counts, one meshed Pod of one.
    for path in [
        "/namespaces/demo/deployments/web?t=1m",
        "/namespaces/demo/services/web?t=1m",
    ] {
        let (status, item) = api(&mesh, path);
        assert_eq!(status, 200, "{path}: {item}");
        assert_eq!(
            (count(&item, "success_count"), count(&item, "failure_count")),
            (ok, 20),
            "{path}: {item}"
        );
        let annotations = &item["metadata"]["annotations"];
        assert_eq!(
            (
                &annotations["metrics.switchyard.dev/meshed-pods"],
                &annotations["metrics.switchyard.dev/pods"]
            ),
            (&Value::from("1"), &Value::from("1")),
            "{path}: {item}"
        );
    }
    // The split: one item per backend, counted by the client's proxy.
    let (status, list) = api(&mesh, "/namespaces/demo/trafficsplits/web-split?t=1m");
    assert_eq!(status, 200, "{list}");
    let backends: Vec<(Value, u64, u64)> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["backend"].clone(),
                count(i, "success_count"),
                count(i, "failure_count"),
            )
        })
        .collect();
    assert_eq!(
        backends,
        [
            (
                serde_json::json!({"apex": "web", "name": "web", "weight": 90}),
                ok,
                20
            ),
            (
                serde_json::json!({"apex": "web", "name": "web-v2", "weight": 10}),
                0,
                0
            ),
        ],
        "{list}"
    );
    // An object the mesh does not know, and a bad window, say so.
    let (status, body) = api(&mesh, "/namespaces/demo/deployments/nope");
    assert_eq!(status, 404, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("not known"),
        "{body}"
    );
    let (status, body) = api(&mesh, "/namespaces/demo/pods/web-0?t=1h");
    assert_eq!(status, 400, "{body}");

    // TCP: three connections from client-0 to db, each answered and kept open; db-0's proxy
    // holds three to its application, client-0's three to db's endpoint.
    let mut conns: Vec<TcpStream> = Vec::new();
    wait_for(
        Duration::from_secs(20),
        || {
            if let Some(c) = db_connection(&client) {
                conns.push(c);
            }
            conns.len() == 3
        },
        "three connections to db answered through both proxies",
    );
    assert_eq!(db.open_connections(), 3, "db's own count");
    let db_pod = "/namespaces/demo/pods/db-0?t=1m";
    let mut item = Value::Null;
    wait_for(
        Duration::from_secs(20),
        || {
            item = api(&mesh, db_pod).1;
            open_connections(&item) == Some(3)
        },
        "db-0's 3 open connections in its item",
    );
    // No HTTP there: no requests, no latency.
    assert_eq!(
        (count(&item, "success_count"), count(&item, "failure_count")),
        (0, 0),
        "{item}"
    );
    assert_eq!(annotation(&item, P95), None, "{item}");
    // client-0's proxy pushes on its own schedule: its edge to db may come a push later.
    let mut edges = Value::Null;
    let to_db = |edges: &Value| {
        edges["items"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|i| i["edge"]["resource"]["name"] == "db")
            .cloned()
    };
    wait_for(
        Duration::from_secs(20),
        || {
            edges = api(&mesh, "/namespaces/demo/pods/client-0/edges?t=1m").1;
            to_db(&edges).is_some_and(|e| open_connections(&e) == Some(3))
        },
        "client-0's edge to db with its 3 open connections",
    );
    assert!(to_db(&edges).is_some(), "{edges}");

    // `switchyard stat`: the same numbers in the table, for the Pod and its Deployment.
    let success = format!("{:.2}%", 100.0 * ok as f64 / (ok + 20) as f64);
    let rps = format!("{:.1}rps", (ok + 20) as f64 / 60.0);
    let head = [
        "NAME",
        "MESHED",
        "SUCCESS",
        "RPS",
        "LATENCY_P50",
        "LATENCY_P95",
        "LATENCY_P99",
        "TCP_CONN",
    ];
    // The p95 cell in the bucket of the truth, (100, 250] ms.
    let slow = |cell: &str| {
        let d = cell_millis(cell);
        d > Duration::from_millis(100) && d <= Duration::from_millis(250)
    };
    let rows = stat(&mesh, &["pods", "web-0"]);
    assert_eq!(rows[0], head, "{rows:?}");
    assert_eq!(
        rows[1][..4],
        ["demo/web-0", "1/1", success.as_str(), rps.as_str()],
        "{rows:?}"
    );
    assert!(slow(&rows[1][5]), "LATENCY_P95: {rows:?}");
    // Every Deployment of demo: db and web (client-0 has no owner).
    let rows = stat(&mesh, &["deploy"]);
    assert_eq!(rows[0], head, "{rows:?}");
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(
        rows[1],
        ["demo/db", "1/1", "-", "0.0rps", "-", "-", "-", "3"],
        "{rows:?}"
    );
    assert_eq!(
        rows[2][..4],
        ["demo/web", "1/1", success.as_str(), rps.as_str()],
        "{rows:?}"
    );
    assert!(slow(&rows[2][5]), "LATENCY_P95: {rows:?}");
    let rows = stat(&mesh, &["ts", "web-split"]);
    assert_eq!(
        rows[0][..5],
        ["NAME", "APEX", "BACKEND", "WEIGHT", "SUCCESS"],
        "{rows:?}"
    );
    assert_eq!(
        rows[1][..5],
        ["demo/web-split", "web", "web", "90", success.as_str()],
        "{rows:?}"
    );
    assert_eq!(
        rows[2][..6],
        ["demo/web-split", "web", "web-v2", "10", "-", "0.0rps"],
        "{rows:?}"
    );

    // One closed: the connections open at the end of the window, not those opened in it.
    drop(conns.pop());
    wait_for(
        Duration::from_secs(20),
        || stat_quiet(&mesh, &["pods", "db-0"])[1][7] == "2",
        "db-0's TCP_CONN to drop to 2 once a connection closed",
    );
    assert_eq!(db.open_connections(), 2, "db's own count");
}

/// `switchyard stat <args> -n demo -t 1m` against the mesh's admin address: the table's rows,
/// split into columns; the table is printed.
fn stat(mesh: &Mesh, args: &[&str]) -> Vec<Vec<String>> {
    let (table, rows) = stat_table(mesh, args);
    eprintln!("switchyard stat {}:\n{table}", args.join(" "));
    rows
}

/// [`stat`] without printing (for polling).
fn stat_quiet(mesh: &Mesh, args: &[&str]) -> Vec<Vec<String>> {
    stat_table(mesh, args).1
}

fn stat_table(mesh: &Mesh, args: &[&str]) -> (String, Vec<Vec<String>>) {
    let out = Command::new(switchyard_bin())
        .arg("stat")
        .args(args)
        .args(["-n", "demo", "-t", "1m", "--admin"])
        .arg(mesh.admin.to_string())
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stat {args:?}: {table}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = table
        .lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect();
    (table.into_owned(), rows)
}
