//! The access logs of the real proxy process and of the real Envoy, for the same requests
//! through the same xDS: an in-test control plane serves both over ADS (state of the world) a
//! listener whose HTTP connection manager carries the tap's access log (the Envoy adapter's
//! `envoy.access_loggers.http_grpc` configuration, `adapters/src/envoy/tap.rs`, to the
//! control plane's `xds` cluster), and takes their `StreamAccessLogs` streams. Six requests: a
//! GET answered 200 with a `grpc-status` header and a cookie, a POST with a body, a 500, a GET
//! with an `Authorization` header, one to a cluster whose endpoint refuses connections (503),
//! one no route takes (404). Both proxies must log them in order with the same method,
//! authority, path, status, body byte counts, cluster and response flags, log no header but
//! `grpc-status`, and never send the authorization value or the cookie. With the tap's rate
//! limit (a `process_ratelimit` filter and its `TokenBucket` over ADS) both log the same first
//! requests and no more; with filtered sessions (header conditions, each before its own
//! bucket, under an `or`) both log the same matching requests, each session within its bucket.
//!
//! Envoy comes from `SWITCHYARD_ENVOY` (or the workspace's `.venv`); without it the test fails.

// Helpers outside `#[test]` functions are test code too: a panic there is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/parity.rs"]
mod parity;

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::Path,
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use envoy_types::pb::{
    envoy::{
        config::{
            accesslog::v3::{AccessLog, AccessLogFilter, access_log},
            cluster::v3::Cluster,
            core::v3::{ApiVersion, GrpcService, RequestMethod, grpc_service},
            listener::v3::Listener,
            route::v3::{
                Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route,
                route_action, route_match,
            },
        },
        data::accesslog::v3::HttpAccessLogEntry,
        extensions::{
            access_loggers::grpc::v3::{CommonGrpcAccessLogConfig, HttpGrpcAccessLogConfig},
            filters::network::http_connection_manager::v3::{
                HttpConnectionManager, http_connection_manager::RouteSpecifier,
            },
        },
        service::accesslog::v3::{
            StreamAccessLogsMessage, StreamAccessLogsResponse,
            access_log_service_server::{AccessLogService, AccessLogServiceServer},
            stream_access_logs_message::LogEntries,
        },
        service::discovery::v3::Resource as Wrapper,
        r#type::matcher::v3::string_matcher::MatchPattern,
    },
    google::protobuf::{Any, UInt32Value},
};
use parity::{BUNDLED, ControlPlane, ENVOY, Killed, PATIENCE, free_port, read_request};
use prost::{Message as _, Name};
use switchyard_adapters::envoy::{
    ACCESS_LOGGER, TAP_BUFFER_BYTES, TAP_FLUSH_INTERVAL, TAP_LOG_NAME, TAP_RESPONSE_HEADERS,
};
use switchyard_proxy_config::{
    TypeUrl,
    test_support::{
        and_filter, any, chain, duration, header_filter, or_filter, port_match, rate_limit_filter,
        router, socket, static_cluster_at, tls_inspector, token_bucket, typed,
    },
};
use tokio::sync::{mpsc, watch};
use tonic::{Request, Response, Status, Streaming, service::Routes};

const WEB: &str = "demo/web|80";
const DOWN: &str = "demo/down|80";
const STAT_PREFIX: &str = "outbound_http";
/// What must never leave a proxy: the request's credentials, the response's cookie.
const SECRET: &str = "Bearer s3cr3t-t0ken-4711";
const COOKIE: &str = "session=hunter2-cookie";
const BODY: &str = "name=switchyard&answer=42";
/// The token bucket of the rate-limited tap.
const BUCKET: &str = "switchyard-tap";
/// The filtered tap's buckets: one per session, with its size.
const SESSION_BUCKETS: [(&str, u32); 2] = [("switchyard-tap-1", 3), ("switchyard-tap-2", 2)];

/// What the listener's connection manager logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tap {
    Off,
    /// Every request.
    On,
    /// At most this many requests: a bucket that never refills during a test.
    Limited(u32),
    /// Two filtered sessions, each on its own bucket of [`SESSION_BUCKETS`] ([`sessions`]).
    Filtered,
}

// === the control plane: ADS and the access log service ===

fn resources(
    type_url: &str,
    port: u16,
    app: SocketAddr,
    refused: SocketAddr,
    tap: Tap,
) -> Vec<Any> {
    if type_url == Listener::type_url() {
        vec![any(&listener(port, tap))]
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
    } else if type_url == TypeUrl::TokenBucket.type_url() {
        let buckets = match tap {
            Tap::Off | Tap::On => Vec::new(),
            Tap::Limited(max_tokens) => vec![(BUCKET, max_tokens)],
            Tap::Filtered => SESSION_BUCKETS.to_vec(),
        };
        buckets
            .into_iter()
            .map(|(name, max_tokens)| {
                // A token bucket has no name of its own: named by its wrapper, as Envoy reads
                // it.
                let bucket = token_bucket(max_tokens, 1, Duration::from_secs(3600));
                any(&Wrapper {
                    name: name.to_owned(),
                    resource: Some(any(&bucket)),
                    ..Default::default()
                })
            })
            .collect()
    } else {
        Vec::new()
    }
}

/// The filter of a tap with two filtered sessions, as the control plane writes it: requests
/// whose path starts with `/a`, at most [`SESSION_BUCKETS`]`[0]`'s, or POSTs, at most
/// [`SESSION_BUCKETS`]`[1]`'s; each session's bucket after its condition.
fn sessions() -> AccessLogFilter {
    let [(paths, _), (posts, _)] = SESSION_BUCKETS;
    or_filter(vec![
        and_filter(vec![
            header_filter(":path", MatchPattern::Prefix("/a".to_owned())),
            rate_limit_filter(paths),
        ]),
        and_filter(vec![
            header_filter(":method", MatchPattern::Exact("POST".to_owned())),
            rate_limit_filter(posts),
        ]),
    ])
}

/// The tap's access log as `switchyard_adapters::envoy::tap` writes it, but to the `xds`
/// cluster of the test's plaintext control plane (the adapter's `google_grpc` target carries
/// the control plane's TLS credentials), with `filter`.
fn tap_log(filter: Option<AccessLogFilter>) -> AccessLog {
    let config = HttpGrpcAccessLogConfig {
        common_config: Some(CommonGrpcAccessLogConfig {
            log_name: TAP_LOG_NAME.to_owned(),
            grpc_service: Some(GrpcService {
                target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                    grpc_service::EnvoyGrpc {
                        cluster_name: "xds".to_owned(),
                        ..Default::default()
                    },
                )),
                ..Default::default()
            }),
            transport_api_version: ApiVersion::V3 as i32,
            buffer_flush_interval: Some(duration(TAP_FLUSH_INTERVAL)),
            buffer_size_bytes: Some(UInt32Value {
                value: TAP_BUFFER_BYTES,
            }),
            ..Default::default()
        }),
        additional_response_headers_to_log: TAP_RESPONSE_HEADERS.map(str::to_owned).to_vec(),
        additional_response_trailers_to_log: TAP_RESPONSE_HEADERS.map(str::to_owned).to_vec(),
        ..Default::default()
    };
    AccessLog {
        name: ACCESS_LOGGER.to_owned(),
        filter,
        config_type: Some(access_log::ConfigType::TypedConfig(any(&config))),
    }
}

fn listener(port: u16, tap: Tap) -> Listener {
    let vhost = |name: &str, cluster: &str| VirtualHost {
        name: name.to_owned(),
        domains: vec![name.to_owned()],
        routes: vec![Route {
            name: format!("{name}-route"),
            r#match: Some(RouteMatch {
                path_specifier: Some(route_match::PathSpecifier::Prefix("/".to_owned())),
                ..Default::default()
            }),
            action: Some(route::Action::Route(RouteAction {
                cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(
                    cluster.to_owned(),
                )),
                ..Default::default()
            })),
            ..Default::default()
        }],
        ..Default::default()
    };
    let hcm = HttpConnectionManager {
        stat_prefix: STAT_PREFIX.to_owned(),
        route_specifier: Some(RouteSpecifier::RouteConfig(RouteConfiguration {
            name: STAT_PREFIX.to_owned(),
            virtual_hosts: vec![vhost("web", WEB), vhost("down", DOWN)],
            ..Default::default()
        })),
        http_filters: vec![router()],
        access_log: match tap {
            Tap::Off => Vec::new(),
            Tap::On => vec![tap_log(None)],
            Tap::Limited(_) => vec![tap_log(Some(rate_limit_filter(BUCKET)))],
            Tap::Filtered => vec![tap_log(Some(sessions()))],
        },
        ..Default::default()
    };
    // The chain is for plaintext only, so choosing it waits for the client's first bytes (as
    // an intercepting listener's does): a tap can start while a connection waits there.
    Listener {
        name: STAT_PREFIX.to_owned(),
        address: Some(socket("127.0.0.1", port)),
        listener_filters: vec![tls_inspector()],
        filter_chains: vec![chain(
            "http",
            Some(port_match(port, "raw_buffer")),
            typed("envoy.filters.network.http_connection_manager", &hcm),
        )],
        ..Default::default()
    }
}

/// One message of an access log stream.
#[derive(Debug)]
struct Logged {
    node: String,
    log_name: String,
    /// Whether it is its stream's first message.
    first: bool,
    message: StreamAccessLogsMessage,
}

/// Hands every message to the test; a change of `stop` ends the streams open then.
struct Sink {
    logged: mpsc::UnboundedSender<Logged>,
    stop: watch::Receiver<()>,
}

#[tonic::async_trait]
impl AccessLogService for Sink {
    async fn stream_access_logs(
        &self,
        request: Request<Streaming<StreamAccessLogsMessage>>,
    ) -> Result<Response<StreamAccessLogsResponse>, Status> {
        let mut stop = self.stop.clone();
        stop.borrow_and_update();
        let mut stream = request.into_inner();
        let mut identified: Option<(String, String)> = None;
        loop {
            let message = tokio::select! {
                message = stream.message() => message?,
                _ = stop.changed() => return Err(Status::unavailable("going away")),
            };
            let Some(message) = message else { break };
            let first = identified.is_none();
            if first {
                let id = message.identifier.clone().unwrap_or_default();
                identified = Some((id.node.map(|n| n.id).unwrap_or_default(), id.log_name));
            }
            let (node, log_name) = identified.clone().unwrap_or_default();
            let logged = Logged {
                node,
                log_name,
                first,
                message,
            };
            if self.logged.send(logged).is_err() {
                break;
            }
        }
        Ok(Response::new(StreamAccessLogsResponse {}))
    }
}

/// The control plane: the resources of [`resources`] (tapped or not, by its state) and the
/// access log service.
async fn start_control_plane(
    ports: HashMap<String, u16>,
    app: SocketAddr,
    refused: SocketAddr,
    tap: Tap,
) -> ControlPlane<Tap, Logged> {
    ControlPlane::start(
        ports,
        tap,
        move |type_url, port, tap: &Tap| resources(type_url, port, app, refused, *tap),
        |logged, stop| Routes::new(AccessLogServiceServer::new(Sink { logged, stop })),
    )
    .await
}

// === the application ===

/// HTTP/1.1 on 127.0.0.1, by path: `/fail` 500, `/grpc` 200 with `grpc-status: 0` and a
/// cookie, anything else 200; a body is read by its length; every response closes.
fn start_app() -> SocketAddr {
    parity::start_app(answer)
}

fn answer(mut conn: TcpStream) {
    let Some((path, body)) = read_request(&conn) else {
        return;
    };
    let response = match path.as_str() {
        "/fail" => "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\nconnection: close\r\n\r\nfail".to_owned(),
        "/grpc" => format!(
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\ngrpc-status: 0\r\nset-cookie: {COOKIE}\r\nconnection: close\r\n\r\nok"
        ),
        _ => format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\nok{}",
            2 + body.len(),
            String::from_utf8_lossy(&body)
        ),
    };
    let _ = conn.write_all(response.as_bytes());
}

/// Sends `head` (and `body`) to `to`; the response's status.
fn send(to: SocketAddr, head: &str, body: &str) -> u16 {
    let mut conn = TcpStream::connect_timeout(&to, Duration::from_secs(3)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(conn, "{head}connection: close\r\n\r\n{body}").unwrap();
    let mut reader = BufReader::new(conn);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status: {status_line:?}"))
}

/// One request of the test: method, host, path, extra head lines, body, the status expected.
struct Req {
    method: &'static str,
    host: &'static str,
    path: &'static str,
    extra: String,
    body: &'static str,
    status: u16,
}

fn requests() -> Vec<Req> {
    let req = |method, host, path, status| Req {
        method,
        host,
        path,
        extra: String::new(),
        body: "",
        status,
    };
    vec![
        Req {
            extra: "user-agent: tap-test/1\r\n".to_owned(),
            ..req("GET", "web", "/grpc", 200)
        },
        Req {
            extra: format!(
                "content-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\n",
                BODY.len()
            ),
            body: BODY,
            ..req("POST", "web", "/submit?x=1", 200)
        },
        req("GET", "web", "/fail", 500),
        Req {
            extra: format!("authorization: {SECRET}\r\n"),
            ..req("GET", "web", "/private", 200)
        },
        req("GET", "down", "/", 503),
        req("GET", "nowhere", "/", 404),
    ]
}

fn traffic(to: SocketAddr) {
    for r in requests() {
        let head = format!(
            "{} {} HTTP/1.1\r\nhost: {}\r\n{}",
            r.method, r.path, r.host, r.extra
        );
        assert_eq!(
            send(to, &head, r.body),
            r.status,
            "{} {} through {to}",
            r.method,
            r.path
        );
    }
}

// === the proxies ===

/// Either proxy on the base bootstrap: the tap's access log comes over LDS.
fn start(node: &str, admin: u16, control_plane: SocketAddr, dir: &Path) -> Killed {
    let bootstrap = parity::bootstrap(node, admin, control_plane);
    // One worker: Envoy's gRPC loggers are per worker, one stream each, and the entries of
    // two streams have no order between them.
    parity::start(node, admin, &bootstrap, &["--concurrency", "1"], dir)
}

/// How `/proc/<pid>/task/<tid>/stat` writes `SCHED_IDLE` (sched(7)).
const SCHED_IDLE: u32 = 5;

/// The name, nice value and scheduling policy of each of process `pid`'s threads
/// (`/proc/<pid>/task`), by thread id (the main thread's is `pid`).
fn thread_priorities(pid: u32) -> HashMap<u32, (String, i32, u32)> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|task| {
            let dir = task.unwrap().path();
            let tid = dir.file_name().unwrap().to_str().unwrap().parse().unwrap();
            let name = std::fs::read_to_string(dir.join("comm")).unwrap();
            let stat = std::fs::read_to_string(dir.join("stat")).unwrap();
            // After the `(comm)`: state is field 3, nice field 19 and policy field 41 of proc(5).
            let after: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
            let nice = after[16].parse().unwrap();
            let policy = after[38].parse().unwrap();
            (tid, (name.trim().to_owned(), nice, policy))
        })
        .collect()
}

/// The body of `GET path` on the admin port.
fn admin_get(admin: u16, path: &str) -> String {
    let mut conn = TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], admin)),
        Duration::from_secs(3),
    )
    .unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).unwrap();
    response
}

// === what arrives ===

/// What one proxy logged: its entries in order, every message's bytes.
#[derive(Debug, Default)]
struct Log {
    entries: Vec<HttpAccessLogEntry>,
    bytes: Vec<u8>,
    messages: usize,
    streams: usize,
}

fn flags(e: &HttpAccessLogEntry) -> Vec<&'static str> {
    let f = e
        .common_properties
        .as_ref()
        .and_then(|c| c.response_flags)
        .unwrap_or_default();
    [
        (f.no_route_found, "NR"),
        (f.no_cluster_found, "NC"),
        (f.no_healthy_upstream, "UH"),
        (f.upstream_connection_failure, "UF"),
        (f.upstream_remote_reset, "UR"),
        (f.upstream_request_timeout, "UT"),
        (f.stream_idle_timeout, "SI"),
    ]
    .into_iter()
    .filter_map(|(set, name)| set.then_some(name))
    .collect()
}

/// The fields both proxies must agree on.
#[derive(Debug, PartialEq)]
struct Compared {
    method: i32,
    scheme: String,
    authority: String,
    path: String,
    user_agent: String,
    status: Option<u32>,
    request_body_bytes: u64,
    /// Of the application's answers only: each proxy words its own replies.
    response_body_bytes: Option<u64>,
    upstream_cluster: String,
    flags: Vec<&'static str>,
    request_headers: Vec<(String, String)>,
    response_headers: Vec<(String, String)>,
    response_trailers: Vec<(String, String)>,
    protocol: i32,
    has_upstream_address: bool,
}

fn compared(e: &HttpAccessLogEntry) -> Compared {
    let common = e.common_properties.clone().unwrap_or_default();
    let request = e.request.clone().unwrap_or_default();
    let response = e.response.clone().unwrap_or_default();
    let sorted = |m: &HashMap<String, String>| {
        let mut v: Vec<_> = m.clone().into_iter().collect();
        v.sort();
        v
    };
    Compared {
        method: request.request_method,
        scheme: request.scheme,
        authority: request.authority,
        path: request.path,
        user_agent: request.user_agent,
        status: response.response_code.map(|c| c.value),
        request_body_bytes: request.request_body_bytes,
        response_body_bytes: (response.response_code_details == "via_upstream")
            .then_some(response.response_body_bytes),
        // Envoy names no cluster for a request no route takes; nor does the proxy.
        upstream_cluster: common.upstream_cluster,
        flags: flags(e),
        request_headers: sorted(&request.request_headers),
        response_headers: sorted(&response.response_headers),
        response_trailers: sorted(&response.response_trailers),
        protocol: e.protocol_version,
        has_upstream_address: common.upstream_remote_address.is_some(),
    }
}

// === the test ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_logs_the_requests_envoy_logs() {
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
    let cp = start_control_plane(ports, app, refused, Tap::On).await;
    let (control_plane, mut rx, server) = (cp.address, cp.received, cp.server);
    let dir = tempfile::tempdir().unwrap();
    let bundled_admin = free_port();
    let bundled_proxy = start(BUNDLED, bundled_admin, control_plane, dir.path());
    let _envoy = start(ENVOY, free_port(), control_plane, dir.path());

    tokio::task::spawn_blocking(move || {
        for port in [bundled_port, envoy_port] {
            traffic(SocketAddr::from(([127, 0, 0, 1], port)));
        }
    })
    .await
    .unwrap();
    // The entries are made and sent on a thread of the lowest priority (SCHED_IDLE, nice 19);
    // the proxy's own thread keeps the policy and priority it was started with (this test's).
    let pid = bundled_proxy.0.id();
    let threads = thread_priorities(pid);
    let mine = thread_priorities(std::process::id())[&std::process::id()].clone();
    assert!(
        threads
            .values()
            .any(|(name, nice, policy)| name == "access-log"
                && *nice == 19
                && *policy == SCHED_IDLE),
        "{threads:?}"
    );
    assert_eq!(threads[&pid].1, mine.1, "the main thread: {threads:?}");
    assert_eq!(threads[&pid].2, mine.2, "the main thread: {threads:?}");

    let expected = requests().len();
    let mut logs: HashMap<String, Log> = HashMap::new();
    let deadline = Instant::now() + PATIENCE;
    let mut done_at = None;
    // Until both logged every request, then half a second more: nothing logged twice.
    while done_at.is_none_or(|at: Instant| at.elapsed() < Duration::from_millis(500)) {
        let left = deadline.saturating_duration_since(Instant::now());
        let wait = match done_at {
            Some(at) => Duration::from_millis(500).saturating_sub(at.elapsed()),
            None => left,
        };
        match tokio::time::timeout(wait, rx.recv()).await {
            Ok(Some(logged)) => {
                assert_eq!(
                    logged.message.identifier.is_some(),
                    logged.first,
                    "the identifier on a stream's first message only: {logged:?}"
                );
                assert_eq!(logged.log_name, TAP_LOG_NAME);
                let log = logs.entry(logged.node.clone()).or_default();
                log.messages += 1;
                log.streams += usize::from(logged.first);
                log.bytes.extend(logged.message.encode_to_vec());
                let Some(LogEntries::HttpLogs(http)) = logged.message.log_entries else {
                    panic!("not HTTP entries: {logged:?}");
                };
                log.entries.extend(http.log_entry);
            }
            Ok(None) => panic!("the access log service stopped"),
            Err(_) if done_at.is_some() => break,
            Err(_) => panic!(
                "after {PATIENCE:?}: {:?}",
                logs.iter()
                    .map(|(node, log)| (
                        node,
                        log.entries
                            .iter()
                            .map(|e| e.request.clone().unwrap_or_default().path)
                            .collect::<Vec<_>>()
                    ))
                    .collect::<Vec<_>>()
            ),
        }
        let all_in = [BUNDLED, ENVOY]
            .iter()
            .all(|node| logs.get(*node).is_some_and(|l| l.entries.len() >= expected));
        if all_in && done_at.is_none() {
            done_at = Some(Instant::now());
        }
    }
    server.abort();

    let bundled = &logs[BUNDLED];
    let envoy = &logs[ENVOY];
    for (node, log) in [(BUNDLED, bundled), (ENVOY, envoy)] {
        assert_eq!(log.entries.len(), expected, "{node}: {:#?}", log.entries);
        assert_eq!(log.streams, 1, "{node}: one stream");
        for secret in [SECRET, "s3cr3t-t0ken", COOKIE, "hunter2"] {
            assert!(
                !log.bytes
                    .windows(secret.len())
                    .any(|w| w == secret.as_bytes()),
                "{node} sent {secret:?}"
            );
        }
    }
    for (i, (r, (b, e))) in requests()
        .iter()
        .zip(bundled.entries.iter().zip(&envoy.entries))
        .enumerate()
    {
        let (ours, theirs) = (compared(b), compared(e));
        println!(
            "request {i} {} {}:\n  bundled {:?}\n  envoy   {:?}",
            r.method, r.path, b, e
        );
        assert_eq!(ours, theirs, "request {i}: {} {}", r.method, r.path);
        assert_eq!(ours.path, r.path);
        assert_eq!(ours.authority, r.host);
        assert_eq!(ours.status, Some(u32::from(r.status)));
        assert_eq!(ours.request_body_bytes, r.body.len() as u64);
        let b_common = b.common_properties.clone().unwrap_or_default();
        let e_common = e.common_properties.clone().unwrap_or_default();
        assert_eq!(
            b_common.downstream_remote_address.is_some(),
            e_common.downstream_remote_address.is_some()
        );
        assert!(
            b_common.start_time.is_some() && b_common.time_to_last_downstream_tx_byte.is_some()
        );
        assert!(
            b_common.time_to_last_rx_byte.is_some(),
            "request {i}: {b_common:?}"
        );
        // Head sizes: each proxy counts its own map (Envoy's has the headers it added).
        let b_req = b.request.clone().unwrap_or_default();
        let e_req = e.request.clone().unwrap_or_default();
        let b_resp = b.response.clone().unwrap_or_default();
        let e_resp = e.response.clone().unwrap_or_default();
        println!(
            "  head bytes: request bundled {} envoy {}, response bundled {} envoy {}",
            b_req.request_headers_bytes,
            e_req.request_headers_bytes,
            b_resp.response_headers_bytes,
            e_resp.response_headers_bytes
        );
        assert!(b_req.request_headers_bytes > 0 && b_resp.response_headers_bytes > 0);
    }
    // Nothing dropped, and the proxy says so.
    let metrics = admin_get(bundled_admin, "/metrics");
    assert!(
        metrics.contains("access_log_entries_dropped_total{log_name=\"switchyard-tap\"} 0"),
        "{metrics}"
    );
    // The cookie's response: of its headers, only `grpc-status`.
    assert_eq!(
        compared(&bundled.entries[0]).response_headers,
        [("grpc-status".to_owned(), "0".to_owned())]
    );
}

/// The control plane goes away (the stream ends, new connections are closed) while requests
/// keep coming, and comes back: the proxy drops (and counts) what it could not send, rather
/// than keep it, opens a new stream that names its node and log again, and logs on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_fails_is_reopened_and_what_could_not_be_sent_is_dropped() {
    let app = start_app();
    let port = free_port();
    let mut cp = start_control_plane(
        HashMap::from([(BUNDLED.to_owned(), port)]),
        app,
        app,
        Tap::On,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let admin = free_port();
    let _bundled = start(BUNDLED, admin, cp.address, dir.path());
    let to = SocketAddr::from(([127, 0, 0, 1], port));
    let requests = |path: &'static str, n: usize| {
        tokio::task::spawn_blocking(move || {
            for _ in 0..n {
                let head = format!("GET {path} HTTP/1.1\r\nhost: web\r\n");
                assert_eq!(send(to, &head, ""), 200);
            }
        })
    };
    let mut paths: Vec<String> = Vec::new();
    let mut streams = 0;
    let mut receive = async |paths: &mut Vec<String>, until: Instant| {
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, cp.received.recv()).await {
            Ok(Some(logged)) => {
                assert_eq!(logged.message.identifier.is_some(), logged.first);
                assert_eq!(logged.log_name, TAP_LOG_NAME);
                streams += usize::from(logged.first);
                let Some(LogEntries::HttpLogs(http)) = logged.message.log_entries else {
                    panic!("not HTTP entries");
                };
                paths.extend(http.log_entry.into_iter().map(|e| e.request.unwrap().path));
                true
            }
            _ => false,
        }
    };

    requests("/before", 2).await.unwrap();
    let deadline = Instant::now() + PATIENCE;
    while paths.len() < 2 {
        assert!(receive(&mut paths, deadline).await, "{paths:?}");
    }
    cp.refusing.store(true, Ordering::Relaxed);
    cp.stop.send(()).unwrap();
    // Let the proxy see its stream end before the requests of the outage.
    tokio::time::sleep(Duration::from_millis(100)).await;
    requests("/away", 3).await.unwrap();
    // A few flushes while it is away: nothing can arrive, and nothing waits for long.
    let away = Instant::now() + Duration::from_secs(1);
    while receive(&mut paths, away).await {}
    let dropped =
        "switchyard_proxy_access_log_entries_dropped_total{log_name=\"switchyard-tap\"} 3";
    let metrics = admin_get(admin, "/metrics");
    assert!(metrics.contains(dropped), "{metrics}");

    cp.refusing.store(false, Ordering::Relaxed);
    // The backoff is at most 5 s; then requests are logged again.
    let deadline = Instant::now() + PATIENCE;
    let mut after = 0;
    while !paths.iter().any(|p| p == "/after") {
        assert!(Instant::now() < deadline, "{paths:?}");
        requests("/after", 1).await.unwrap();
        after += 1;
        while receive(&mut paths, Instant::now() + Duration::from_millis(500)).await {}
    }
    assert_eq!(&paths[..2], ["/before", "/before"]);
    assert!(!paths.iter().any(|p| p == "/away"), "{paths:?}");
    assert!(paths.len() >= 3 && paths.len() <= 2 + after, "{paths:?}");
    assert_eq!(streams, 2, "a new stream, with the identifier");
    cp.server.abort();
}

/// A tap starts while a client keeps a connection open: the proxy closes the idle connection
/// (it was opened under the untapped chain), so the client's next request takes a new one and
/// is logged, as Envoy drains a changed chain's connections. Without the drain the old
/// connection would stay open, unlogged, for as long as the client keeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_opened_before_the_tap_is_drained() {
    let app = start_app();
    let port = free_port();
    let mut cp = start_control_plane(
        HashMap::from([(BUNDLED.to_owned(), port)]),
        app,
        app,
        Tap::Off,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let _bundled = start(BUNDLED, free_port(), cp.address, dir.path());
    let to = SocketAddr::from(([127, 0, 0, 1], port));

    // A keep-alive connection and its first request, untapped.
    let mut kept = TcpStream::connect_timeout(&to, Duration::from_secs(3)).unwrap();
    kept.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(kept, "GET /early HTTP/1.1\r\nhost: web\r\n\r\n").unwrap();
    let mut reader = BufReader::new(kept.try_clone().unwrap());
    let mut length = 0;
    loop {
        let mut line = String::new();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "the connection closed"
        );
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();

    cp.state.send(Tap::On).unwrap();
    // The proxy closes the idle connection once it has the tapped listener.
    let closed = tokio::task::spawn_blocking(move || {
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).map(|_| rest)
    })
    .await
    .unwrap();
    assert!(
        matches!(&closed, Ok(rest) if rest.is_empty()),
        "the connection opened before the tap was not closed: {closed:?}"
    );

    // The next request, on a new connection, is logged; the first was not.
    tokio::task::spawn_blocking(move || {
        assert_eq!(send(to, "GET /late HTTP/1.1\r\nhost: web\r\n", ""), 200);
    })
    .await
    .unwrap();
    let logged = tokio::time::timeout(PATIENCE, cp.received.recv())
        .await
        .unwrap()
        .unwrap();
    let Some(LogEntries::HttpLogs(http)) = logged.message.log_entries else {
        panic!("not HTTP entries");
    };
    let paths: Vec<_> = http
        .log_entry
        .into_iter()
        .map(|e| e.request.unwrap().path)
        .collect();
    assert_eq!(paths, ["/late"]);
    cp.server.abort();
}

/// A tap starts while a connection is being accepted (its chain is chosen when the client's
/// first bytes arrive, as behind a TLS inspector or a TLS handshake): the connection serves
/// under the tapped chain, so its requests are logged. Had it kept the configuration it was
/// accepted under, no request on it would ever be, and no later change would drain it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_accepted_as_the_tap_starts_is_logged() {
    let app = start_app();
    let port = free_port();
    let admin = free_port();
    let mut cp = start_control_plane(
        HashMap::from([(BUNDLED.to_owned(), port)]),
        app,
        app,
        Tap::Off,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let _bundled = start(BUNDLED, admin, cp.address, dir.path());
    let to = SocketAddr::from(([127, 0, 0, 1], port));
    let tapped = |admin| admin_get(admin, "/config_dump").contains("switchyard-tap");
    let deadline = Instant::now() + PATIENCE;
    while !admin_get(admin, "/config_dump").contains(STAT_PREFIX) {
        assert!(Instant::now() < deadline, "no listener after {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!tapped(admin));

    // Accepted untapped; nothing sent yet, so its chain is not chosen.
    let mut waiting = TcpStream::connect_timeout(&to, Duration::from_secs(3)).unwrap();
    waiting.set_read_timeout(Some(PATIENCE)).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    cp.state.send(Tap::On).unwrap();
    while !tapped(admin) {
        assert!(Instant::now() < deadline, "not tapped after {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let head = tokio::task::spawn_blocking(move || {
        write!(waiting, "GET /accepted HTTP/1.1\r\nhost: web\r\n\r\n").unwrap();
        let mut status = String::new();
        BufReader::new(waiting).read_line(&mut status).unwrap();
        status
    })
    .await
    .unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head:?}");
    let logged = tokio::time::timeout(PATIENCE, cp.received.recv())
        .await
        .expect("the request on the connection accepted as the tap started was not logged")
        .unwrap();
    let Some(LogEntries::HttpLogs(http)) = logged.message.log_entries else {
        panic!("not HTTP entries");
    };
    let paths: Vec<_> = http
        .log_entry
        .into_iter()
        .map(|e| e.request.unwrap().path)
        .collect();
    assert_eq!(paths, ["/accepted"]);
    cp.server.abort();
}

/// The entries each proxy logged, by node, as `describe` writes them: until both logged
/// `expected` of them, then two flush intervals and more, so that an entry past what the
/// filter allows would be seen.
async fn logged_by_both(
    received: &mut mpsc::UnboundedReceiver<Logged>,
    expected: usize,
    describe: fn(HttpAccessLogEntry) -> String,
) -> HashMap<String, Vec<String>> {
    let mut logged: HashMap<String, Vec<String>> = HashMap::new();
    let deadline = Instant::now() + PATIENCE;
    let mut done_at: Option<Instant> = None;
    let linger = TAP_FLUSH_INTERVAL * 2 + Duration::from_millis(500);
    loop {
        let wait = match done_at {
            Some(at) => linger.saturating_sub(at.elapsed()),
            None => deadline.saturating_duration_since(Instant::now()),
        };
        match tokio::time::timeout(wait, received.recv()).await {
            Ok(Some(logged_message)) => {
                assert_eq!(logged_message.log_name, TAP_LOG_NAME);
                let Some(LogEntries::HttpLogs(http)) = logged_message.message.log_entries else {
                    panic!("not HTTP entries: {logged_message:?}");
                };
                logged
                    .entry(logged_message.node)
                    .or_default()
                    .extend(http.log_entry.into_iter().map(describe));
            }
            Ok(None) => panic!("the access log service stopped"),
            Err(_) if done_at.is_some() => return logged,
            Err(_) => panic!("after {PATIENCE:?}: {logged:?}"),
        }
        let all_in = [BUNDLED, ENVOY]
            .iter()
            .all(|node| logged.get(*node).is_some_and(|l| l.len() >= expected));
        if all_in && done_at.is_none() {
            done_at = Some(Instant::now());
        }
    }
}

/// The tap's rate limit, as the control plane sends it to both data planes: the access log's
/// `process_ratelimit` filter and a bucket of 3 tokens that refills once an hour. Of 10
/// requests in a row, each proxy logs the first 3, the same ones, and nothing more; the
/// bundled proxy counts the other 7.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_tap_logs_what_its_bucket_allows_as_envoy_does() {
    const TOKENS: usize = 3;
    const SENT: usize = 10;
    let app = start_app();
    let (bundled_port, envoy_port) = (free_port(), free_port());
    let ports = HashMap::from([
        (BUNDLED.to_owned(), bundled_port),
        (ENVOY.to_owned(), envoy_port),
    ]);
    let tap = Tap::Limited(TOKENS as u32);
    let mut cp = start_control_plane(ports, app, app, tap).await;
    let dir = tempfile::tempdir().unwrap();
    let bundled_admin = free_port();
    let _bundled = start(BUNDLED, bundled_admin, cp.address, dir.path());
    let _envoy = start(ENVOY, free_port(), cp.address, dir.path());

    let paths: Vec<String> = (0..SENT).map(|i| format!("/r{i}")).collect();
    let sent = paths.clone();
    tokio::task::spawn_blocking(move || {
        for port in [bundled_port, envoy_port] {
            let to = SocketAddr::from(([127, 0, 0, 1], port));
            for path in &sent {
                let head = format!("GET {path} HTTP/1.1\r\nhost: web\r\n");
                assert_eq!(send(to, &head, ""), 200, "{path} through {to}");
            }
        }
    })
    .await
    .unwrap();

    let logged = logged_by_both(&mut cp.received, TOKENS, |e| {
        e.request.unwrap_or_default().path
    })
    .await;
    cp.server.abort();

    let first = &paths[..TOKENS];
    assert_eq!(logged[ENVOY], first, "Envoy");
    assert_eq!(logged[BUNDLED], first, "the bundled proxy");
    let metrics = admin_get(bundled_admin, "/metrics");
    assert!(
        metrics.contains(&format!(
            "access_log_entries_rate_limited_total{{log_name=\"{TAP_LOG_NAME}\"}} {}",
            SENT - TOKENS
        )),
        "{metrics}"
    );
}

/// A filtered tap, as the control plane sends it to both data planes: two sessions, each a
/// header condition then its own bucket, under an `or` ([`sessions`]: `/a…` at most 3, POSTs at
/// most 2). Of 10 GETs of `/b…`, then 10 of `/a…`, then 10 POSTs of `/b…`, each proxy logs the
/// same 3 GETs of `/a…` and 2 POSTs, and nothing else: a request no condition takes draws on no
/// bucket, and the POSTs find their bucket untouched by the GETs before them. Both count the
/// same 5 entries written; the bundled proxy counts the 15 its buckets refused (7 GETs of
/// `/a…`, 8 POSTs) and none of the GETs of `/b…`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_tap_logs_only_matching_requests_within_its_own_bucket_as_envoy_does() {
    const SENT: usize = 10;
    let app = start_app();
    let (bundled_port, envoy_port) = (free_port(), free_port());
    let ports = HashMap::from([
        (BUNDLED.to_owned(), bundled_port),
        (ENVOY.to_owned(), envoy_port),
    ]);
    let mut cp = start_control_plane(ports, app, app, Tap::Filtered).await;
    let dir = tempfile::tempdir().unwrap();
    let (bundled_admin, envoy_admin) = (free_port(), free_port());
    let _bundled = start(BUNDLED, bundled_admin, cp.address, dir.path());
    let _envoy = start(ENVOY, envoy_admin, cp.address, dir.path());

    let sent: Vec<(&str, String)> = [("GET", "/b"), ("GET", "/a"), ("POST", "/b")]
        .into_iter()
        .flat_map(|(method, path)| (0..SENT).map(move |i| (method, format!("{path}/{i}"))))
        .collect();
    let requests = sent.clone();
    tokio::task::spawn_blocking(move || {
        for port in [bundled_port, envoy_port] {
            let to = SocketAddr::from(([127, 0, 0, 1], port));
            for (method, path) in &requests {
                let head = format!("{method} {path} HTTP/1.1\r\nhost: web\r\n");
                assert_eq!(send(to, &head, ""), 200, "{method} {path} through {to}");
            }
        }
    })
    .await
    .unwrap();

    let expected: Vec<String> = ["GET /a/0", "GET /a/1", "GET /a/2", "POST /b/0", "POST /b/1"]
        .map(str::to_owned)
        .to_vec();
    let logged = logged_by_both(&mut cp.received, expected.len(), |e| {
        let request = e.request.unwrap_or_default();
        let method = match request.request_method {
            m if m == RequestMethod::Get as i32 => "GET",
            m if m == RequestMethod::Post as i32 => "POST",
            other => panic!("method {other}"),
        };
        format!("{method} {}", request.path)
    })
    .await;
    cp.server.abort();

    assert_eq!(logged[ENVOY], expected, "Envoy");
    assert_eq!(logged[BUNDLED], expected, "the bundled proxy");
    let written = expected.len();
    let envoy_stats = admin_get(envoy_admin, "/stats?filter=grpc_access_log");
    assert!(
        envoy_stats.contains(&format!(
            "access_logs.grpc_access_log.logs_written: {written}"
        )),
        "{envoy_stats}"
    );
    let metrics = admin_get(bundled_admin, "/metrics");
    for (name, value) in [
        ("access_log_entries_written_total", written),
        (
            "access_log_entries_rate_limited_total",
            sent.len() - SENT - written,
        ),
    ] {
        assert!(
            metrics.contains(&format!("{name}{{log_name=\"{TAP_LOG_NAME}\"}} {value}")),
            "{name}: {metrics}"
        );
    }
}
