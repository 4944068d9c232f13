//! The golden metrics of the real proxy process and of the real Envoy, for the same traffic
//! through the same xDS: an in-test control plane serves both over ADS (state of the world)
//! and takes their `MetricsService` streams (`stats_flush_interval: 1s`); 40 requests to one
//! cluster (4 answered 500, 3 slow to answer, 3 whose body comes slowly after the head), 3 to a
//! cluster whose endpoint refuses connections, 2 that no route takes; web's `/fail` and
//! `/slow*` routes and down's one route are counted on their own too (a `stat_prefix`). What
//! each pushes is summed over its flushes and must add up exactly, and the two proxies must
//! send the same stats with the same labels and counts.
//!
//! Envoy comes from `SWITCHYARD_ENVOY` (or the workspace's `.venv`); without it the test fails.

// Helpers outside `#[test]` functions are test code too: a panic there is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/parity.rs"]
mod parity;

use std::{
    collections::{BTreeMap, HashMap},
    io::{BufRead, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::Path,
    sync::{Arc, Mutex, atomic::Ordering},
    thread,
    time::{Duration, Instant},
};

use envoy_types::pb::{
    envoy::{
        config::{
            cluster::v3::Cluster,
            listener::v3::Listener,
            route::v3::{
                Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route,
                route_action, route_match,
            },
        },
        extensions::filters::network::http_connection_manager::v3::{
            HttpConnectionManager, http_connection_manager::RouteSpecifier,
        },
        service::metrics::v3::{
            StreamMetricsMessage, StreamMetricsResponse,
            metrics_service_server::{MetricsService, MetricsServiceServer},
        },
        r#type::matcher::v3::RegexMatcher,
    },
    google::protobuf::Any,
    io::prometheus::client::MetricType,
};
use parity::{BUNDLED, ControlPlane, ENVOY, Killed, PATIENCE, free_port, read_request};
use prost::Name;
use serde_json::{Value, json};
use switchyard_proxy_config::{
    metrics::{LATENCY_BUCKET_COUNT, RouteStatName, envoy, latency_buckets_millis},
    test_support::{any, chain, duration, router, socket, static_cluster_at, typed},
};
use tokio::sync::{mpsc, watch};
use tonic::{Request, Response, Status, Streaming, service::Routes};

/// The cluster the test's requests go to.
const WEB: &str = "demo/web|80";
/// A cluster whose one endpoint refuses connections.
const DOWN: &str = "demo/down|80";
/// The HTTP connection manager's `stat_prefix`.
const STAT_PREFIX: &str = "outbound_http";
/// How long `/slow` takes to answer.
const SLOW: Duration = Duration::from_millis(120);

// === the control plane: ADS and the metrics service ===

/// The resources of a type: the listener on `port`, the clusters; nothing else.
fn resources(type_url: &str, port: u16, app: SocketAddr, refused: SocketAddr) -> Vec<Any> {
    if type_url == Listener::type_url() {
        vec![any(&listener(port))]
    } else if type_url == Cluster::type_url() {
        [(WEB, app), (DOWN, refused)]
            .into_iter()
            .map(|(name, addr)| {
                any(&Cluster {
                    connect_timeout: Some(duration(Duration::from_secs(1))),
                    ..static_cluster_at(name, addr)
                })
            })
            .collect()
    } else {
        Vec::new()
    }
}

/// The `stat_prefix` of web's route that takes `/fail`.
fn fail_route() -> String {
    RouteStatName::new("web.routes", "fail").to_string()
}

/// The `stat_prefix` of web's route that takes `/slow` and `/slow-body`.
fn slow_route() -> String {
    RouteStatName::new("web.routes", "slow").to_string()
}

/// The `stat_prefix` of down's one route.
fn down_route() -> String {
    RouteStatName::new("down", "all").to_string()
}

fn listener(port: u16) -> Listener {
    // Counted routes (a `stat_prefix`) first, then a catch-all that counts in its cluster only.
    let vhost = |name: &str, cluster: &str, counted: &[(String, route_match::PathSpecifier)]| {
        let to = |name: String, path: route_match::PathSpecifier, stat_prefix: String| Route {
            name,
            r#match: Some(RouteMatch {
                path_specifier: Some(path),
                ..Default::default()
            }),
            action: Some(route::Action::Route(RouteAction {
                cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(
                    cluster.to_owned(),
                )),
                ..Default::default()
            })),
            stat_prefix,
            ..Default::default()
        };
        let mut routes: Vec<Route> = counted
            .iter()
            .map(|(prefix, path)| to(prefix.clone(), path.clone(), prefix.clone()))
            .collect();
        routes.push(to(
            "default".to_owned(),
            route_match::PathSpecifier::Prefix("/".to_owned()),
            String::new(),
        ));
        VirtualHost {
            name: name.to_owned(),
            domains: vec![name.to_owned()],
            routes,
            ..Default::default()
        }
    };
    let regex = |r: &str| {
        route_match::PathSpecifier::SafeRegex(RegexMatcher {
            regex: r.to_owned(),
            ..Default::default()
        })
    };
    let web = vhost(
        "web",
        WEB,
        &[
            (
                fail_route(),
                route_match::PathSpecifier::Path("/fail".to_owned()),
            ),
            (slow_route(), regex("/slow.*")),
        ],
    );
    let down = vhost(
        "down",
        DOWN,
        &[(
            down_route(),
            route_match::PathSpecifier::Prefix("/".to_owned()),
        )],
    );
    let hcm = HttpConnectionManager {
        stat_prefix: STAT_PREFIX.to_owned(),
        route_specifier: Some(RouteSpecifier::RouteConfig(RouteConfiguration {
            name: STAT_PREFIX.to_owned(),
            virtual_hosts: vec![web, down],
            ..Default::default()
        })),
        http_filters: vec![router()],
        ..Default::default()
    };
    Listener {
        name: STAT_PREFIX.to_owned(),
        address: Some(socket("127.0.0.1", port)),
        filter_chains: vec![chain(
            "http",
            None,
            typed("envoy.filters.network.http_connection_manager", &hcm),
        )],
        ..Default::default()
    }
}

/// One message of a metrics stream, with the node its stream's first message named.
#[derive(Debug)]
struct Pushed {
    node: String,
    /// Whether it is its stream's first message.
    first: bool,
    message: StreamMetricsMessage,
}

/// Hands every message to the test; a change of `stop` ends the streams open then.
struct Sink {
    pushed: mpsc::UnboundedSender<Pushed>,
    stop: watch::Receiver<()>,
}

#[tonic::async_trait]
impl MetricsService for Sink {
    async fn stream_metrics(
        &self,
        request: Request<Streaming<StreamMetricsMessage>>,
    ) -> Result<Response<StreamMetricsResponse>, Status> {
        let mut stop = self.stop.clone();
        stop.borrow_and_update();
        let mut stream = request.into_inner();
        let mut node = None;
        loop {
            let message = tokio::select! {
                message = stream.message() => message?,
                _ = stop.changed() => return Err(Status::unavailable("going away")),
            };
            let Some(message) = message else { break };
            let first = node.is_none();
            if first {
                let id = message.identifier.as_ref().and_then(|i| i.node.as_ref());
                node = Some(id.map(|n| n.id.clone()).unwrap_or_default());
            }
            let pushed = Pushed {
                node: node.clone().unwrap_or_default(),
                first,
                message,
            };
            if self.pushed.send(pushed).is_err() {
                break;
            }
        }
        Ok(Response::new(StreamMetricsResponse {}))
    }
}

/// The control plane: the resources of [`resources`] and the metrics service.
async fn start_control_plane(
    ports: HashMap<String, u16>,
    app: SocketAddr,
    refused: SocketAddr,
) -> ControlPlane<(), Pushed> {
    ControlPlane::start(
        ports,
        (),
        move |type_url, port, _: &()| resources(type_url, port, app, refused),
        |pushed, stop| Routes::new(MetricsServiceServer::new(Sink { pushed, stop })),
    )
    .await
}

// === the application ===

/// An HTTP/1.1 server on 127.0.0.1 answering by path: `/fail` 500, `/slow` 200 after
/// [`SLOW`], `/slow-body` 200 at once but its body after [`SLOW`], anything else 200; every
/// response closes its connection.
fn start_app() -> SocketAddr {
    parity::start_app(answer)
}

fn answer(mut conn: TcpStream) {
    let Some((path, _)) = read_request(&conn) else {
        return;
    };
    let status = if path == "/fail" {
        500
    } else {
        if path == "/slow" {
            thread::sleep(SLOW);
        }
        200
    };
    let response = app_response(status);
    if path == "/slow-body" {
        // The head now, the body later: a request's time runs to the end of its response.
        let (head, body) = response.split_at(response.len() - 2);
        let _ = conn.write_all(head.as_bytes());
        let _ = conn.flush();
        thread::sleep(SLOW);
        let _ = conn.write_all(body.as_bytes());
        return;
    }
    let _ = conn.write_all(response.as_bytes());
}

/// The app's response, byte for byte.
fn app_response(status: u16) -> String {
    let reason = if status == 500 {
        "500 Internal Server Error"
    } else {
        "200 OK"
    };
    format!("HTTP/1.1 {reason}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
}

/// `GET path` with `Host: host`; the response's status.
fn get(to: SocketAddr, host: &str, path: &str) -> u16 {
    let mut conn = TcpStream::connect_timeout(&to, Duration::from_secs(3)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    // The head, then the body by its length: not waiting for the close.
    let mut reader = BufReader::new(conn);
    let mut head = String::new();
    let mut length = 0;
    loop {
        let mut line = String::new();
        let read = reader.read_line(&mut line).unwrap();
        if read == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap();
        }
        head.push_str(&line);
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    head.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status: {head:?}"))
}

/// The test's traffic; returns the bytes the app answered with.
fn traffic(to: SocketAddr) -> u64 {
    let mut answered = 0;
    for i in 0..40 {
        let path = match i % 10 {
            3 => "/fail",
            5 if i < 30 => "/slow",
            7 if i < 30 => "/slow-body",
            _ => "/ok",
        };
        let expected = if path == "/fail" { 500 } else { 200 };
        assert_eq!(get(to, "web", path), expected, "{path} through {to}");
        answered += app_response(expected).len() as u64;
    }
    for _ in 0..3 {
        assert_eq!(get(to, "down", "/"), 503, "a refused connection");
    }
    for _ in 0..2 {
        assert_eq!(get(to, "nowhere", "/"), 404, "no route");
    }
    answered
}

// === the proxies ===

/// A bootstrap for either proxy: the base one and the metrics service sink to the control
/// plane.
fn bootstrap(node: &str, admin: u16, control_plane: SocketAddr, envoy_only: bool) -> Value {
    let mut bootstrap = parity::bootstrap(node, admin, control_plane);
    bootstrap["stats_flush_interval"] = json!("1s");
    bootstrap["stats_sinks"] = json!([{
        "name": "envoy.stat_sinks.metrics_service",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.config.metrics.v3.MetricsServiceConfig",
            "transport_api_version": "V3",
            "report_counters_as_deltas": true,
            "emit_tags_as_labels": true,
            "histogram_emit_mode": "HISTOGRAM",
            "grpc_service": {"envoy_grpc": {"cluster_name": "xds"}},
        },
    }]);
    if envoy_only {
        // Envoy's side of the contract (the bundled proxy keeps only these stats anyway).
        let buckets: Vec<f64> = latency_buckets_millis().collect();
        bootstrap["stats_config"] = json!({
            "stats_matcher": {"inclusion_list": {"patterns": envoy::STATS_INCLUSION
                .iter()
                .map(|regex| json!({"safe_regex": {"regex": regex}}))
                .collect::<Vec<_>>()}},
            "histogram_bucket_settings": [
                {"match": {"safe_regex": {"regex": ".*"}}, "buckets": buckets},
            ],
        });
    }
    bootstrap
}

fn start(node: &str, admin: u16, control_plane: SocketAddr, dir: &Path) -> Killed {
    let bootstrap = bootstrap(node, admin, control_plane, node == ENVOY);
    parity::start(node, admin, &bootstrap, &[], dir)
}

// === what arrives ===

/// A series: its name, its type and its labels in the order sent.
type Key = (String, i32, Vec<(String, String)>);

/// What one proxy pushed, summed over its messages: counters' increases, gauges' last values,
/// histograms' interval buckets (not cumulative; the last is `+Inf`).
#[derive(Debug, Default)]
struct Tally {
    counters: BTreeMap<Key, f64>,
    gauges: BTreeMap<Key, f64>,
    histograms: BTreeMap<Key, [u64; LATENCY_BUCKET_COUNT]>,
    messages: usize,
}

impl Tally {
    fn add(&mut self, message: &StreamMetricsMessage) {
        self.messages += 1;
        let bounds: Vec<f64> = latency_buckets_millis().collect();
        for family in &message.envoy_metrics {
            assert_eq!(family.metric.len(), 1, "one metric per family: {family:?}");
            let metric = &family.metric[0];
            assert!(metric.timestamp_ms.is_some());
            let labels = metric
                .label
                .iter()
                .map(|l| (l.name().to_owned(), l.value().to_owned()))
                .collect();
            let key = (family.name().to_owned(), family.r#type.unwrap_or(0), labels);
            match family.r#type() {
                MetricType::Counter => {
                    *self.counters.entry(key).or_default() +=
                        metric.counter.as_ref().unwrap().value();
                }
                MetricType::Gauge => {
                    self.gauges
                        .insert(key, metric.gauge.as_ref().unwrap().value());
                }
                MetricType::Histogram => {
                    let h = metric.histogram.clone().unwrap();
                    let got: Vec<f64> = h.bucket.iter().map(|b| b.upper_bound()).collect();
                    assert_eq!(got, bounds, "{key:?}");
                    let sums = self.histograms.entry(key).or_default();
                    let mut below = 0;
                    for (i, b) in h.bucket.iter().enumerate() {
                        sums[i] += b.cumulative_count() - below;
                        below = b.cumulative_count();
                    }
                    sums[LATENCY_BUCKET_COUNT - 1] += h.sample_count() - below;
                }
                other => panic!("unexpected type {other:?}"),
            }
        }
    }

    /// The series about the test's clusters and connection manager (Envoy also reports its
    /// own ADS cluster and admin interface).
    fn ours(&self) -> Vec<(&'static str, Key)> {
        // Clusters, the connection manager, and the virtual hosts of the routes.
        let about = |key: &Key| {
            key.2.iter().any(|(_, v)| {
                v == WEB || v == DOWN || v == STAT_PREFIX || v == "web" || v == "down"
            })
        };
        let kinds: [(&'static str, Vec<&Key>); 3] = [
            (
                "counter",
                self.counters.keys().filter(|k| about(k)).collect(),
            ),
            ("gauge", self.gauges.keys().filter(|k| about(k)).collect()),
            (
                "histogram",
                self.histograms.keys().filter(|k| about(k)).collect(),
            ),
        ];
        kinds
            .into_iter()
            .flat_map(|(kind, keys)| keys.into_iter().map(move |k| (kind, k.clone())))
            .collect()
    }

    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.counters
            .get(&key(name, MetricType::Counter, labels))
            .copied()
            .unwrap_or_else(|| panic!("no {name} {labels:?}: {self:#?}"))
    }

    fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.gauges
            .get(&key(name, MetricType::Gauge, labels))
            .copied()
            .unwrap_or_else(|| panic!("no {name} {labels:?}: {self:#?}"))
    }

    fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> [u64; LATENCY_BUCKET_COUNT] {
        self.histograms
            .get(&key(name, MetricType::Histogram, labels))
            .copied()
            .unwrap_or_else(|| panic!("no {name} {labels:?}: {self:#?}"))
    }

    /// Requests to the test's cluster and through its connection manager so far.
    fn requests(&self) -> (f64, f64) {
        let sum = |name: &str, subject: &str| {
            self.counters
                .iter()
                .filter(|(k, _)| k.0 == name && k.2.iter().any(|(_, v)| v == subject))
                .map(|(_, v)| v)
                .sum()
        };
        (
            sum(envoy::UPSTREAM_RQ_XX, WEB),
            sum(envoy::DOWNSTREAM_RQ_XX, STAT_PREFIX),
        )
    }
}

fn key(name: &str, kind: MetricType, labels: &[(&str, &str)]) -> Key {
    (
        name.to_owned(),
        kind as i32,
        labels
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect(),
    )
}

/// The labels of a requests counter, in the order Envoy sends them.
fn by_class<'a>(subject: (&'a str, &'a str), class: &'a str) -> [(&'a str, &'a str); 2] {
    [(envoy::RESPONSE_CODE_CLASS, class), subject]
}

/// Checks one proxy's numbers against the traffic.
fn check(node: &str, t: &Tally, answered: u64) {
    let web = (envoy::CLUSTER_NAME, WEB);
    let down = (envoy::CLUSTER_NAME, DOWN);
    let hcm = (envoy::HTTP_CONN_MANAGER_PREFIX, STAT_PREFIX);
    let rq = |labels: [(&str, &str); 2]| t.counter(envoy::UPSTREAM_RQ_XX, &labels);
    assert_eq!(rq(by_class(web, "2")), 36.0, "{node}");
    assert_eq!(rq(by_class(web, "5")), 4.0, "{node}");
    // The router's own 503s (connection refused) are the cluster's.
    assert_eq!(rq(by_class(down, "5")), 3.0, "{node}");
    let drq = |labels: [(&str, &str); 2]| t.counter(envoy::DOWNSTREAM_RQ_XX, &labels);
    assert_eq!(drq(by_class(hcm, "2")), 36.0, "{node}");
    // The connection manager's own 404s count too.
    assert_eq!(drq(by_class(hcm, "4")), 2.0, "{node}");
    assert_eq!(drq(by_class(hcm, "5")), 7.0, "{node}");

    // Every response closed its connection: one connection per request; a refused one counts.
    assert_eq!(t.counter(envoy::UPSTREAM_CX_TOTAL, &[web]), 40.0, "{node}");
    assert_eq!(t.counter(envoy::UPSTREAM_CX_TOTAL, &[down]), 3.0, "{node}");
    assert_eq!(t.gauge(envoy::UPSTREAM_CX_ACTIVE, &[web]), 0.0, "{node}");
    let rx = t.counter(envoy::UPSTREAM_CX_RX_BYTES_TOTAL, &[web]);
    assert_eq!(rx, answered as f64, "{node}: bytes from the app");
    // Each proxy sends its own request heads (Envoy adds `x-request-id` and more): not
    // compared.
    assert!(
        t.counter(envoy::UPSTREAM_CX_TX_BYTES_TOTAL, &[web]) > 0.0,
        "{node}"
    );

    // Times: 6 of the 40 in (100, 250] ms, the rest below 100 ms; the refused ones have none
    // (the proxy answered them, not the cluster).
    let upstream = t.histogram(envoy::UPSTREAM_RQ_TIME, &[web]);
    assert_eq!(upstream.iter().sum::<u64>(), 40, "{node}: {upstream:?}");
    assert_eq!(upstream[8], 6, "{node}: {upstream:?}");
    assert_eq!(
        upstream[..8].iter().sum::<u64>(),
        34,
        "{node}: {upstream:?}"
    );
    let downstream = t.histogram(envoy::DOWNSTREAM_RQ_TIME, &[hcm]);
    assert_eq!(downstream.iter().sum::<u64>(), 45, "{node}: {downstream:?}");
    assert_eq!(downstream[8], 6, "{node}: {downstream:?}");

    // The counted routes: a part of their cluster's requests and times, labelled by virtual
    // host and `stat_prefix`; the catch-all counts nowhere but in the cluster.
    let route = |vhost: &'static str, prefix: String| {
        [(envoy::VIRTUAL_HOST, vhost), (envoy::ROUTE, prefix.leak())]
    };
    let rrq = |[vhost, prefix]: [(&'static str, &'static str); 2], class: &'static str| {
        t.counter(
            envoy::ROUTE_UPSTREAM_RQ_XX,
            &[(envoy::RESPONSE_CODE_CLASS, class), vhost, prefix],
        )
    };
    assert_eq!(rrq(route("web", fail_route()), "5"), 4.0, "{node}");
    assert_eq!(rrq(route("web", slow_route()), "2"), 6.0, "{node}");
    // The router's own 503s are the route's too.
    assert_eq!(rrq(route("down", down_route()), "5"), 3.0, "{node}");
    let slow = t.histogram(envoy::ROUTE_UPSTREAM_RQ_TIME, &route("web", slow_route()));
    assert_eq!(slow.iter().sum::<u64>(), 6, "{node}: {slow:?}");
    assert_eq!(slow[8], 6, "{node}: {slow:?}");
    let fail = t.histogram(envoy::ROUTE_UPSTREAM_RQ_TIME, &route("web", fail_route()));
    assert_eq!(fail.iter().sum::<u64>(), 4, "{node}: {fail:?}");
    let routes = t
        .counters
        .keys()
        .filter(|k| k.0 == envoy::ROUTE_UPSTREAM_RQ_XX)
        .count();
    assert_eq!(routes, 3, "{node}: only the counted routes: {t:#?}");
}

// === the test ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_pushes_the_golden_metrics_envoy_pushes() {
    let app = start_app();
    let refused = {
        let closed = TcpListener::bind("127.0.0.1:0").unwrap();
        closed.local_addr().unwrap()
    };
    let (bundled_port, envoy_port) = (free_port(), free_port());
    let ports = HashMap::from([
        (BUNDLED.to_owned(), bundled_port),
        (ENVOY.to_owned(), envoy_port),
    ]);
    let cp = start_control_plane(ports, app, refused).await;
    let (control_plane, mut rx) = (cp.address, cp.received);
    let dir = tempfile::tempdir().unwrap();
    let _bundled = start(BUNDLED, free_port(), control_plane, dir.path());
    let _envoy = start(ENVOY, free_port(), control_plane, dir.path());

    let answered = Arc::new(Mutex::new(Vec::new()));
    let traffic = {
        let answered = answered.clone();
        tokio::task::spawn_blocking(move || {
            for port in [bundled_port, envoy_port] {
                let bytes = traffic(SocketAddr::from(([127, 0, 0, 1], port)));
                answered.lock().unwrap().push(bytes);
            }
        })
    };
    traffic.await.unwrap();
    let answered = answered.lock().unwrap()[0];

    // Until both have pushed all of it, then 2.5 s more (two or three flushes): with
    // increases and interval histograms, nothing may count twice.
    let mut tallies: HashMap<String, Tally> = HashMap::new();
    let started = Instant::now();
    let mut done_at = None;
    while done_at.is_none_or(|at: Instant| at.elapsed() < Duration::from_millis(2_500)) {
        let left = (started + PATIENCE).saturating_duration_since(Instant::now());
        let Ok(Some(pushed)) = tokio::time::timeout(left, rx.recv()).await else {
            panic!("after {:?}: {tallies:#?}", started.elapsed());
        };
        // The node on a stream's first message only.
        let identified = pushed.message.identifier.is_some();
        assert_eq!(identified, pushed.first, "{pushed:?}");
        tallies
            .entry(pushed.node.clone())
            .or_default()
            .add(&pushed.message);
        let all_in = [BUNDLED, ENVOY].iter().all(|node| {
            tallies
                .get(*node)
                .is_some_and(|t| t.requests() == (40.0, 45.0))
        });
        if all_in && done_at.is_none() {
            done_at = Some(Instant::now());
        }
    }
    cp.server.abort();

    let bundled = &tallies[BUNDLED];
    let envoy = &tallies[ENVOY];
    assert!(bundled.messages >= 3, "{bundled:#?}");
    check(BUNDLED, bundled, answered);
    check(ENVOY, envoy, answered);

    // The same stats, names, types and labels (in Envoy's order), and the same numbers but
    // the bytes sent upstream (each proxy adds its own request headers) and times within a
    // bucket's jitter.
    assert_eq!(bundled.ours(), envoy.ours(), "bundled vs Envoy");
    let ours = bundled.ours();
    for (key, value) in &envoy.counters {
        if ours.iter().any(|(_, k)| k == key) && key.0 != envoy::UPSTREAM_CX_TX_BYTES_TOTAL {
            assert_eq!(bundled.counters[key], *value, "{key:?}");
        }
    }
    for (key, value) in &envoy.gauges {
        if ours.iter().any(|(_, k)| k == key) {
            assert_eq!(bundled.gauges[key], *value, "{key:?}");
        }
    }
    for (key, buckets) in &envoy.histograms {
        if ours.iter().any(|(_, k)| k == key) {
            let count = |b: &[u64; LATENCY_BUCKET_COUNT]| b.iter().sum::<u64>();
            assert_eq!(count(&bundled.histograms[key]), count(buckets), "{key:?}");
            // The slow requests in the same bucket.
            assert_eq!(bundled.histograms[key][8], buckets[8], "{key:?}");
        }
    }
    // For `--nocapture`: the two tallies side by side.
    println!("bundled: {bundled:#?}\nenvoy: {envoy:#?}");
}

/// The control plane goes away (the stream ends, new connections are closed) while requests
/// keep coming, and comes back: the proxy opens a new stream, names its node again, and the
/// requests of the outage arrive in it, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_fails_is_reopened_and_nothing_is_lost_or_counted_twice() {
    let app = start_app();
    let port = free_port();
    let mut cp = start_control_plane(HashMap::from([(BUNDLED.to_owned(), port)]), app, app).await;
    let dir = tempfile::tempdir().unwrap();
    let _bundled = start(BUNDLED, free_port(), cp.address, dir.path());
    let to = SocketAddr::from(([127, 0, 0, 1], port));
    let requests = |n: usize| {
        tokio::task::spawn_blocking(move || {
            for _ in 0..n {
                assert_eq!(get(to, "web", "/ok"), 200);
            }
        })
    };
    let mut tally = Tally::default();
    let mut streams = 0;
    let mut receive = async |tally: &mut Tally, until: Instant| {
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, cp.received.recv()).await {
            Ok(Some(pushed)) => {
                assert_eq!(pushed.message.identifier.is_some(), pushed.first);
                streams += usize::from(pushed.first);
                tally.add(&pushed.message);
                true
            }
            _ => false,
        }
    };

    requests(10).await.unwrap();
    let deadline = Instant::now() + PATIENCE;
    while tally.requests().0 < 10.0 {
        assert!(receive(&mut tally, deadline).await, "{tally:#?}");
    }
    // Just after a flush: none is in flight.
    cp.refusing.store(true, Ordering::Relaxed);
    cp.stop.send(()).unwrap();
    requests(10).await.unwrap();
    // Three flushes or so while it is away: nothing can arrive.
    let away = Instant::now() + Duration::from_secs(3);
    while receive(&mut tally, away).await {}
    assert_eq!(tally.requests().0, 10.0, "{tally:#?}");

    cp.refusing.store(false, Ordering::Relaxed);
    let deadline = Instant::now() + PATIENCE;
    while tally.requests().0 < 20.0 {
        assert!(receive(&mut tally, deadline).await, "{tally:#?}");
    }
    // Two flushes more: nothing counted twice.
    let after = Instant::now() + Duration::from_millis(2_500);
    while receive(&mut tally, after).await {}
    assert_eq!(tally.requests(), (20.0, 20.0), "{tally:#?}");
    assert_eq!(streams, 2, "a new stream, with the node");
    cp.server.abort();
}
