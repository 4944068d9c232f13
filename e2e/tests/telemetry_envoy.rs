//! The golden metrics contract with the real Envoy: a static bootstrap with the
//! `envoy.stat_sinks.metrics_service` sink pushing to an in-test `MetricsService`, known traffic
//! through one listener to two clusters, and what the operator's decoding and windows make of it.
//!
//! Envoy comes from `SWITCHYARD_ENVOY` (or `.venv`, or `PATH`); without it the test fails.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "test: a panic is the failure report"
)]

use std::{
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use envoy_types::pb::envoy::service::metrics::v3::{
    StreamMetricsMessage, StreamMetricsResponse,
    metrics_service_server::{MetricsService, MetricsServiceServer},
};
use serde_json::json;
use switchyard::telemetry::{StatPrefix, StatusClass, Store, Subject, UpstreamCluster, decode};
use switchyard_adapters::model::ProxyId;
use switchyard_e2e::mesh::{DataPlane, Killed, free_ports, http_get, start_proxy, wait_for};
use switchyard_proxy_config::metrics::{envoy, latency_buckets_millis};
use tokio::sync::mpsc;
use tokio_stream::wrappers::TcpListenerStream;

/// The HTTP cluster the test's requests go to (a Service port's name in the adapters' form).
const WEB: &str = "demo/web|80";
/// A headless Service endpoint's cluster: its name has dots, where Envoy's tag extraction cuts
/// it (`envoy.cluster_name=demo/db|80|127`); the stats matcher leaves it out.
const DB: &str = "demo/db|80|127.0.0.1";
/// The HTTP connection manager's `stat_prefix`.
const STAT_PREFIX: &str = "outbound_http";
/// The node's id.
const NODE: &str = "sidecar~127.0.0.1~web-0.demo~demo.svc.cluster.local";
/// The names the matcher lets through.
const GOLDEN: [&str; 8] = [
    envoy::UPSTREAM_RQ_XX,
    envoy::UPSTREAM_RQ_TIME,
    envoy::UPSTREAM_CX_TOTAL,
    envoy::UPSTREAM_CX_ACTIVE,
    envoy::UPSTREAM_CX_RX_BYTES_TOTAL,
    envoy::UPSTREAM_CX_TX_BYTES_TOTAL,
    envoy::DOWNSTREAM_RQ_XX,
    envoy::DOWNSTREAM_RQ_TIME,
];
/// How long `/slow` takes to answer.
const SLOW: Duration = Duration::from_millis(120);

/// Forwards every message of every stream to the test.
struct Sink(mpsc::UnboundedSender<StreamMetricsMessage>);

#[tonic::async_trait]
impl MetricsService for Sink {
    async fn stream_metrics(
        &self,
        request: tonic::Request<tonic::Streaming<StreamMetricsMessage>>,
    ) -> Result<tonic::Response<StreamMetricsResponse>, tonic::Status> {
        let mut stream = request.into_inner();
        while let Some(message) = stream.message().await? {
            if self.0.send(message).is_err() {
                break;
            }
        }
        Ok(tonic::Response::new(StreamMetricsResponse {}))
    }
}

/// An HTTP/1.1 server on 127.0.0.1 answering by path: `/fail*` 500, `/slow*` 200 after
/// [`SLOW`], anything else 200; every response closes its connection.
struct App {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl App {
    fn start() -> App {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                thread::spawn(move || answer(conn));
            }
        });
        App { addr, stop }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

fn answer(mut conn: TcpStream) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
    // The rest of the head.
    loop {
        let mut header = String::new();
        match reader.read_line(&mut header) {
            Ok(0) | Err(_) => return,
            Ok(_) if header == "\r\n" => break,
            Ok(_) => {}
        }
    }
    let status = if path.contains("/fail") {
        "500"
    } else {
        if path.contains("/slow") {
            thread::sleep(SLOW);
        }
        "200"
    };
    let _ = conn.write_all(response(if status.starts_with("500") { 500 } else { 200 }).as_bytes());
}

/// The app's response with `status` (200 or 500), byte for byte.
fn response(status: u16) -> String {
    let reason = if status == 500 {
        "500 Internal Server Error"
    } else {
        "200 OK"
    };
    format!("HTTP/1.1 {reason}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
}

/// Checks the shape of what Envoy sent (see `switchyard::telemetry`'s doc) and prints the first
/// message's metrics.
fn observe(message: &StreamMetricsMessage, first: bool) {
    let node = message.identifier.as_ref().and_then(|i| i.node.as_ref());
    assert_eq!(
        node.map(|n| n.id.as_str()),
        first.then_some(NODE),
        "identifier only on the first message"
    );
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    for family in &message.envoy_metrics {
        assert!(GOLDEN.contains(&family.name()), "not golden: {family:?}");
        for metric in &family.metric {
            let at = metric.timestamp_ms.unwrap();
            assert!(
                (now_ms - at).abs() < 60_000,
                "timestamp_ms {at}, now {now_ms}"
            );
            if first {
                let labels: Vec<String> = metric
                    .label
                    .iter()
                    .map(|l| format!("{}={}", l.name(), l.value()))
                    .collect();
                println!(
                    "{} {:?} [{}]",
                    family.name(),
                    family.r#type(),
                    labels.join(",")
                );
            }
        }
    }
}

fn static_cluster(name: &str, addr: SocketAddr, http2: bool) -> serde_json::Value {
    let mut cluster = json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                "address": addr.ip().to_string(), "port_value": addr.port(),
            }}}}]}],
        },
    });
    if http2 {
        cluster["typed_extension_protocol_options"] = json!({
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            },
        });
    }
    cluster
}

fn bootstrap(admin: u16, listener: u16, app: SocketAddr, sink: SocketAddr) -> serde_json::Value {
    let buckets: Vec<f64> = latency_buckets_millis().collect();
    json!({
        "node": {"id": NODE, "cluster": "web"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "stats_flush_interval": "1s",
        "stats_config": {
            "stats_matcher": {"inclusion_list": {"patterns": envoy::STATS_INCLUSION
                .iter()
                .map(|regex| json!({"safe_regex": {"regex": regex}}))
                .collect::<Vec<_>>()}},
            "histogram_bucket_settings": [{"match": {"safe_regex": {"regex": ".*"}}, "buckets": buckets}],
        },
        "stats_sinks": [{
            "name": "envoy.stat_sinks.metrics_service",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.config.metrics.v3.MetricsServiceConfig",
                "transport_api_version": "V3",
                "report_counters_as_deltas": true,
                "emit_tags_as_labels": true,
                "histogram_emit_mode": "HISTOGRAM",
                "grpc_service": {"envoy_grpc": {"cluster_name": "switchyard_metrics"}},
            },
        }],
        "static_resources": {
            "listeners": [{
                "name": "outbound_http",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": listener}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": STAT_PREFIX,
                        "route_config": {"virtual_hosts": [{
                            "name": "web", "domains": ["*"],
                            "routes": [
                                {"match": {"prefix": "/db/"}, "route": {"cluster": DB}},
                                {"match": {"prefix": "/"}, "route": {"cluster": WEB}},
                            ],
                        }]},
                        "http_filters": [{
                            "name": "envoy.filters.http.router",
                            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
                        }],
                    },
                }]}],
            }],
            "clusters": [
                static_cluster(WEB, app, false),
                static_cluster(DB, app, false),
                static_cluster("switchyard_metrics", sink, true),
            ],
        },
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_pushes_golden_metrics() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink_addr = grpc.local_addr().unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(MetricsServiceServer::new(Sink(tx)))
            .serve_with_incoming(TcpListenerStream::new(grpc)),
    );
    let app = App::start();
    let dir = tempfile::tempdir().unwrap();
    let [admin, listener] = free_ports();
    let bootstrap = bootstrap(admin, listener, app.addr, sink_addr);
    let path = dir.path().join("envoy.json");
    std::fs::write(&path, bootstrap.to_string()).unwrap();
    let (sidecar, child) = start_proxy(
        "web-0",
        &path,
        &bootstrap,
        DataPlane::Envoy,
        &dir.path().join("envoy.log"),
    );
    let _envoy = Killed(child);
    wait_for(
        Duration::from_secs(20),
        || sidecar.admin_get("/ready").is_ok_and(|r| r.status == 200),
        "Envoy ready",
    );
    let to = SocketAddr::from(([127, 0, 0, 1], listener));
    let traffic = tokio::task::spawn_blocking(move || {
        // 40 to web: 4 answered 500, 6 slow; 5 to db, all 200.
        for i in 0..40 {
            let path = match i % 10 {
                3 => "/fail",
                5 if i < 30 => "/slow",
                7 if i < 30 => "/slow",
                _ => "/ok",
            };
            let r = http_get(to, "web", path, &[]).unwrap();
            assert_eq!(r.status, if path == "/fail" { 500 } else { 200 }, "{path}");
        }
        for _ in 0..5 {
            let r = http_get(to, "db", "/db/ok", &[]).unwrap();
            assert_eq!(r.status, 200);
        }
    });
    traffic.await.unwrap();
    // What Envoy answered, as the upstream sent it: what the cluster received.
    let received: usize = (0..40)
        .map(|i| {
            if i % 10 == 3 {
                response(500).len()
            } else {
                response(200).len()
            }
        })
        .sum();

    // Feed every message into the operator's windows until the traffic is all there, then two
    // more flushes: with counters and histograms as deltas, nothing may count twice.
    let started = Instant::now();
    let mut store = Store::default();
    let proxy = ProxyId {
        namespace: "demo".to_owned(),
        pod: "web-0".to_owned(),
    };
    let web = Subject::Upstream(UpstreamCluster::new(WEB));
    let listener = Subject::Listener(StatPrefix::new(STAT_PREFIX));
    // As an answer reads the windows: a snapshot, then its sums.
    let sums = |store: &Store, include: &dyn Fn(&Subject) -> bool| {
        let snapshot = store.snapshot(started.elapsed(), Duration::from_secs(60), |_| true);
        snapshot.query(snapshot.proxies(), include)
    };
    let query = |store: &Store, subject: &Subject| sums(store, &|s| s == subject);
    let mut messages = 0;
    let mut done_at = None;
    let deadline = started + Duration::from_secs(20);
    while done_at.is_none_or(|at: Instant| at.elapsed() < Duration::from_millis(2_500)) {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(Some(message)) = tokio::time::timeout(left, rx.recv()).await else {
            panic!(
                "after {messages} messages in {:?}: web {:?}, {STAT_PREFIX} {:?}",
                started.elapsed(),
                query(&store, &web),
                query(&store, &listener)
            );
        };
        messages += 1;
        observe(&message, messages == 1);
        let decoded = decode(&message);
        assert_eq!((decoded.ignored, decoded.truncated), (0, 0), "{message:#?}");
        store.record(&proxy, started.elapsed(), &decoded.samples);
        let (w, l) = (query(&store, &web), query(&store, &listener));
        if done_at.is_none() && w.request_count() >= 40 && l.request_count() >= 45 {
            done_at = Some(Instant::now());
        }
    }

    let w = query(&store, &web);
    assert_eq!((w.success_count(), w.failure_count()), (36, 4), "{w:?}");
    assert_eq!(w.requests[StatusClass::Success.index()], 36);
    assert_eq!(w.latency.count(), 40, "{w:?}");
    // Every response closed its connection: one upstream connection per request.
    assert_eq!(w.connections_opened, 40);
    assert_eq!(w.connections_active, 0);
    assert_eq!(w.bytes_received, received as u64);
    assert!(w.bytes_sent > 40 * 40, "{w:?}");
    // 6 of 40 took 120 ms: p90 and up are in the (100, 250] ms bucket, the median is not.
    let slow_bucket = Duration::from_millis(100)..=Duration::from_millis(250);
    for q in [0.9, 0.95, 0.99] {
        let p = w.latency_quantile(q).unwrap();
        assert!(slow_bucket.contains(&p), "p{q}: {p:?} ({w:?})");
    }
    let p50 = w.latency_quantile(0.5).unwrap();
    assert!(p50 < Duration::from_millis(100), "p50 {p50:?}");

    // The listener saw the 5 db requests too.
    let l = query(&store, &listener);
    assert_eq!((l.success_count(), l.failure_count()), (41, 4), "{l:?}");
    assert_eq!(l.latency.count(), 45);

    // The headless endpoint's cluster (dots in its name) is left out by the matcher, rather
    // than counted under the name Envoy's tag extraction cuts at its first dot.
    let db = sums(
        &store,
        &|s| matches!(s, Subject::Upstream(c) if c.as_str().starts_with("demo/db")),
    );
    assert_eq!(db.request_count(), 0, "{db:?}");
    server.abort();
    drop(app);
}
