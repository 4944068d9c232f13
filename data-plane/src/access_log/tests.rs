use std::task::Waker;

use envoy_types::pb::envoy::{
    config::core::v3::Node,
    data::accesslog::v3::tls_properties::certificate_properties::subject_alt_name::San,
    service::accesslog::v3::{
        StreamAccessLogsMessage,
        stream_access_logs_message::{HttpAccessLogEntries, Identifier, LogEntries},
    },
};
use http::HeaderValue;
use prost::Message as _;

use super::{
    sink::{MAX_PENDING_BYTES, Outbox, Sink},
    *,
};
use crate::{
    config::{
        BucketName, HeaderMatch, HttpManager, LogFilter, RouteSource, StringMatch,
        TokenBucketConfig,
    },
    metrics::{Counter, Registry},
};

fn log(name: &str, buffer_bytes: u32) -> AccessLog {
    AccessLog {
        log_name: name.to_owned(),
        flush_interval: Duration::from_millis(200),
        buffer_bytes,
        request_headers: vec!["x-tenant".to_owned()],
        response_headers: vec!["grpc-status".to_owned()],
        response_trailers: vec!["grpc-status".to_owned()],
        filter: None,
    }
}

fn node() -> Node {
    Node {
        id: "web-0".to_owned(),
        ..Default::default()
    }
}

/// The message `outbox` hands stream `stream`, decoded.
fn take(outbox: &Outbox, stream: u64) -> Poll<Option<StreamAccessLogsMessage>> {
    outbox
        .take(stream, &node(), Waker::noop())
        .map(|m| m.map(|m| StreamAccessLogsMessage::decode(m.to_bytes()).unwrap()))
}

fn entries(message: &StreamAccessLogsMessage) -> &[HttpAccessLogEntry] {
    match &message.log_entries {
        Some(LogEntries::HttpLogs(h)) => &h.log_entry,
        other => panic!("{other:?}"),
    }
}

fn downstream(tls: bool) -> Arc<Downstream> {
    Arc::new(Downstream::new(
        "10.0.0.7:50123".parse().unwrap(),
        "10.0.0.9:8080".parse().unwrap(),
        tls,
        tls.then_some("spiffe://cluster.local/ns/demo/sa/client"),
    ))
}

#[test]
fn an_entry_holds_the_request_its_response_and_the_configured_headers_only() {
    let dropped = Arc::new(Counter::default());
    let (sink, outbox) = Sink::detached(&log("tap", 0), dropped.clone());
    let loggers = Arc::new(Loggers::new(vec![(log("tap", 0), sink)], Arc::default()));
    let request = Request::post("/orders?id=7")
        .version(Version::HTTP_11)
        .header(header::HOST, "web.demo:80")
        .header(header::USER_AGENT, "curl/8")
        .header("x-tenant", "a")
        .header("x-tenant", "b")
        .header(header::AUTHORIZATION, "Bearer secret")
        .body(http_body_util::Full::new(Bytes::from_static(b"hello")))
        .unwrap();
    let mut pending = Pending::start(loggers, downstream(true), &request, Instant::now());
    let mut body = pending.count(request).into_body();
    // The proxy reads the body as it forwards it.
    let mut cx = Context::from_waker(Waker::noop());
    while let Poll::Ready(Some(Ok(_))) = Pin::new(&mut body).poll_frame(&mut cx) {}
    pending.routed.cluster = "demo/web|80".to_owned();
    pending.routed.route_name = "default".to_owned();
    pending.routed.upstream = Some("10.0.1.4:8080".parse().unwrap());
    pending.routed.attempts = 1;
    pending.routed.details = "via_upstream";
    let mut head = HeaderMap::new();
    head.insert("grpc-status", HeaderValue::from_static("0"));
    head.insert(header::SET_COOKIE, HeaderValue::from_static("session=1"));
    pending.respond(200, &head);
    pending.sent(&Frame::data(Bytes::from_static(b"0123456789")));
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    trailers.insert("grpc-message", HeaderValue::from_static("fine"));
    pending.sent(&Frame::trailers(trailers));
    pending.finished();
    drop(pending);

    outbox.open(node());
    let Poll::Ready(Some(message)) = take(&outbox, 1) else {
        panic!("buffer_size_bytes 0: sent at once")
    };
    let [entry] = entries(&message) else {
        panic!("{message:?}")
    };
    let common = entry.common_properties.clone().unwrap();
    let request = entry.request.clone().unwrap();
    let response = entry.response.clone().unwrap();
    assert_eq!(request.request_method, RequestMethod::Post as i32);
    assert_eq!(request.scheme, "https");
    assert_eq!(request.authority, "web.demo:80");
    assert_eq!(request.path, "/orders?id=7");
    assert_eq!(request.user_agent, "curl/8");
    assert_eq!(request.request_body_bytes, 5);
    assert_eq!(
        request.request_headers,
        HashMap::from([("x-tenant".to_owned(), "a,b".to_owned())])
    );
    assert_eq!(response.response_code.unwrap().value, 200);
    assert_eq!(response.response_body_bytes, 10);
    assert_eq!(response.response_code_details, "via_upstream");
    let status = HashMap::from([("grpc-status".to_owned(), "0".to_owned())]);
    assert_eq!(response.response_headers, status);
    assert_eq!(response.response_trailers, status);
    assert_eq!(common.upstream_cluster, "demo/web|80");
    assert_eq!(common.route_name, "default");
    assert_eq!(common.upstream_request_attempt_count, 1);
    assert_eq!(
        common.upstream_remote_address,
        Some(socket("10.0.1.4:8080".parse().unwrap()))
    );
    assert_eq!(
        common.downstream_remote_address,
        Some(socket("10.0.0.7:50123".parse().unwrap()))
    );
    assert_eq!(
        common.downstream_local_address,
        Some(socket("10.0.0.9:8080".parse().unwrap()))
    );
    let san = common
        .tls_properties
        .and_then(|t| t.peer_certificate_properties)
        .map(|p| p.subject_alt_name);
    assert_eq!(
        san.unwrap()[0].san,
        Some(San::Uri(
            "spiffe://cluster.local/ns/demo/sa/client".to_owned()
        ))
    );
    assert!(common.time_to_last_rx_byte.is_some());
    assert!(common.time_to_last_downstream_tx_byte.is_some());
    assert!(common.response_flags.is_none());
    assert_eq!(
        entry.protocol_version,
        http_access_log_entry::HttpVersion::Http11 as i32
    );
    // No header but the configured ones, whatever the request and response carried.
    let bytes = message.encode_to_vec();
    for secret in [&b"Bearer secret"[..], b"session=1", b"grpc-message"] {
        assert!(!bytes.windows(secret.len()).any(|w| w == secret));
    }
    assert_eq!(dropped.get(), 0);
}

#[test]
fn a_request_without_a_response_is_logged_with_its_flag() {
    let (sink, outbox) = Sink::detached(&log("tap", 0), Arc::default());
    let loggers = Arc::new(Loggers::new(vec![(log("tap", 0), sink)], Arc::default()));
    let request = Request::get("http://down/").body(()).unwrap();
    let mut pending = Pending::start(loggers, downstream(false), &request, Instant::now());
    pending.routed.flag = Some(Flag::UpstreamRequestTimeout);
    drop(pending);
    outbox.open(node());
    let Poll::Ready(Some(message)) = take(&outbox, 1) else {
        panic!()
    };
    let entry = &entries(&message)[0];
    let common = entry.common_properties.clone().unwrap();
    assert!(common.response_flags.unwrap().upstream_request_timeout);
    assert!(common.tls_properties.is_none());
    assert_eq!(entry.response.clone().unwrap().response_code, None);
    assert_eq!(entry.request.clone().unwrap().authority, "down");
}

fn entry(path: &str) -> HttpAccessLogEntry {
    HttpAccessLogEntry {
        request: Some(HttpRequestProperties {
            path: path.to_owned(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn entries_wait_for_the_interval_or_the_buffer_size_and_the_buffer_is_bounded() {
    let dropped = Arc::new(Counter::default());
    let written = Arc::new(Counter::default());
    let outbox = Outbox::new(&log("tap", 100), dropped.clone()).counting_written(written.clone());

    // No stream: a flush drops what waits, and counts it.
    outbox.push(&entry("/a"));
    outbox.push(&entry("/b"));
    assert_eq!(written.get(), 2, "taken into the buffer");
    outbox.flush();
    assert_eq!(dropped.get(), 2);

    let outbox = Arc::new(outbox);
    let _outgoing = outbox.open(node());
    // Under the buffer size: nothing until the flush.
    outbox.push(&entry("/c"));
    assert!(take(&outbox, 1).is_pending());
    outbox.flush();
    let Poll::Ready(Some(first)) = take(&outbox, 1) else {
        panic!()
    };
    let id = first.identifier.clone().unwrap();
    assert_eq!(
        (id.node.unwrap().id.as_str(), id.log_name.as_str()),
        ("web-0", "tap")
    );
    assert_eq!(entries(&first).len(), 1);
    assert!(take(&outbox, 1).is_pending());

    // The buffer size reached: at once, without the identifier.
    let long = "/".repeat(120);
    outbox.push(&entry(&long));
    let Poll::Ready(Some(second)) = take(&outbox, 1) else {
        panic!()
    };
    assert!(second.identifier.is_none());
    assert_eq!(entries(&second)[0].request.as_ref().unwrap().path, long);

    // An older stream ends; the new one names itself again.
    let _newer = outbox.open(node());
    assert_eq!(take(&outbox, 1), Poll::Ready(None));
    outbox.push(&entry("/d"));
    outbox.flush();
    let Poll::Ready(Some(third)) = take(&outbox, 2) else {
        panic!()
    };
    assert!(third.identifier.is_some());

    // Never more than MAX_PENDING_BYTES waiting: the rest is dropped and counted.
    let outbox = Outbox::new(&log("tap", u32::MAX), dropped.clone());
    let big = "/".repeat(64 * 1024);
    let fit = MAX_PENDING_BYTES / (64 * 1024 + 16);
    for _ in 0..fit + 5 {
        outbox.push(&entry(&big));
    }
    assert_eq!(dropped.get(), 2 + 5);
}

/// The buffer is sent as it was encoded when the entries were queued: the bytes are those
/// prost writes for the same message, identifier and all.
#[test]
fn a_message_is_the_bytes_prost_writes_for_it() {
    let outbox = Arc::new(Outbox::new(&log("tap", u32::MAX), Arc::default()));
    let _outgoing = outbox.open(node());
    let sent = [entry("/a"), entry(&"/".repeat(300)), entry("/c")];
    for e in &sent {
        outbox.push(e);
    }
    let expected = |identifier| StreamAccessLogsMessage {
        identifier,
        log_entries: Some(LogEntries::HttpLogs(HttpAccessLogEntries {
            log_entry: sent.to_vec(),
        })),
    };
    outbox.flush();
    let Poll::Ready(Some(first)) = outbox.take(1, &node(), Waker::noop()) else {
        panic!()
    };
    let identifier = Identifier {
        node: Some(node()),
        log_name: "tap".to_owned(),
    };
    assert_eq!(first.to_bytes(), expected(Some(identifier)).encode_to_vec());
    for e in &sent {
        outbox.push(e);
    }
    outbox.flush();
    let Poll::Ready(Some(second)) = outbox.take(1, &node(), Waker::noop()) else {
        panic!()
    };
    assert_eq!(second.to_bytes(), expected(None).encode_to_vec());
}

#[test]
fn a_connection_manager_without_an_access_log_has_no_loggers() {
    let sinks = Sinks::new(None, Arc::new(Registry::default()));
    let manager = HttpManager {
        stat_prefix: "outbound_http".into(),
        routes: RouteSource::Rds("r".into()),
        rbac: None,
        denied: crate::config::DeniedReply {
            status: 403,
            body: String::new(),
        },
        forward_client_cert: Default::default(),
        timeouts: Default::default(),
        access_logs: Vec::new(),
    };
    assert!(sinks.loggers(&manager, &Buckets::default()).is_none());
}

/// The sink lives while the configuration names its log or a connection holds it; then its
/// stream closes.
#[tokio::test]
async fn a_sink_lives_while_configured_or_held() {
    let sinks = Sinks::new(None, Arc::new(Registry::default()));
    let manager = HttpManager {
        stat_prefix: "outbound_http".into(),
        routes: RouteSource::Rds("r".into()),
        rbac: None,
        denied: crate::config::DeniedReply {
            status: 403,
            body: String::new(),
        },
        forward_client_cert: Default::default(),
        timeouts: Default::default(),
        access_logs: vec![log("tap", 0)],
    };
    let first = sinks.loggers(&manager, &Buckets::default()).unwrap();
    let second = sinks.loggers(&manager, &Buckets::default()).unwrap();
    assert!(
        Arc::ptr_eq(&first.logs[0].1, &second.logs[0].1),
        "one sink per log_name"
    );
    let weak = Arc::downgrade(&first.logs[0].1);
    drop((first, second));
    assert!(weak.upgrade().is_none(), "neither configured nor held");
}

/// Every tapped request yields exactly one entry, and what the proxy spends on it short of
/// the socket is printed: gathered, its body counted, its response noted, built, encoded and
/// queued on the request path, then taken in messages of the tap's 16 KiB and copied out as
/// the stream's codec does. `SWITCHYARD_COST_ROUNDS=200000 cargo test -p switchyard-proxy
/// --lib access_log::tests::cost -- --nocapture` (with `CARGO_PROFILE_DEV_OPT_LEVEL=2`, or
/// `--release`, for a meaningful figure; CI runs 2,000 rounds for the count only).
#[test]
fn cost() {
    // `buffer_size_bytes` as the tap sets it (`TAP_BUFFER_BYTES`).
    let outbox_log = log("tap", 16_384);
    let (sink, outbox) = Sink::detached(&outbox_log, Arc::default());
    let _outgoing = outbox.open(node());
    let loggers = Arc::new(Loggers::new(vec![(outbox_log, sink)], Arc::default()));
    let downstream = downstream(true);
    let mut head = HeaderMap::new();
    head.insert("grpc-status", HeaderValue::from_static("0"));
    head.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    let rounds: u32 = std::env::var("SWITCHYARD_COST_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(2_000);
    let mut sent = Vec::new();
    let mut wire = bytes::BytesMut::new();
    let started = Instant::now();
    for _ in 0..rounds {
        let request = Request::get("/api/orders?id=7")
            .header(header::HOST, "web.demo:80")
            .header(header::USER_AGENT, "curl/8")
            .header(header::ACCEPT, "*/*")
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap();
        let mut pending = Pending::start(
            loggers.clone(),
            downstream.clone(),
            &request,
            Instant::now(),
        );
        let _request = pending.count(request);
        pending.routed.cluster = "demo/web|80".to_owned();
        pending.routed.upstream = Some("10.0.1.4:8080".parse().unwrap());
        pending.routed.details = "via_upstream";
        pending.respond(200, &head);
        pending.sent(&Frame::data(Bytes::from_static(b"ok")));
        pending.finished();
        drop(pending);
        // The stream's side: polled, it takes a message once 16 KiB wait.
        if let Poll::Ready(Some(message)) = outbox.take(1, &node(), Waker::noop()) {
            wire.clear();
            message.write_to(&mut wire);
            sent.push(message);
        }
    }
    outbox.flush();
    if let Poll::Ready(Some(message)) = outbox.take(1, &node(), Waker::noop()) {
        sent.push(message);
    }
    let per_request = started.elapsed() / rounds;
    let logged: usize = sent
        .iter()
        .map(|m| entries(&StreamAccessLogsMessage::decode(m.to_bytes()).unwrap()).len())
        .sum();
    assert_eq!(logged, rounds as usize, "one entry per tapped request");
    // The same requests, built and dropped without a log: what to subtract.
    let started = Instant::now();
    for _ in 0..rounds {
        let request = Request::get("/api/orders?id=7")
            .header(header::HOST, "web.demo:80")
            .header(header::USER_AGENT, "curl/8")
            .header(header::ACCEPT, "*/*")
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap();
        std::hint::black_box(request);
    }
    let baseline = started.elapsed() / rounds;
    println!(
        "tapped request path: {per_request:?} per request, of which building the request \
         {baseline:?}: the log's share {:?}",
        per_request.saturating_sub(baseline)
    );
}

/// A finished request of `path`, its `Pending` handed to `loggers`' deferred queue.
fn finish(loggers: &Arc<Loggers>, path: &str) {
    let request = Request::get(path)
        .header(header::HOST, "web.demo:80")
        .body(())
        .unwrap();
    let mut pending = Pending::start(loggers.clone(), downstream(false), &request, Instant::now());
    pending.respond(200, &HeaderMap::new());
    pending.finished();
    pending.defer();
}

/// The paths of the entries `outbox` holds now (`buffer_bytes` 0: all of them at once).
fn logged_paths(outbox: &Outbox) -> Vec<String> {
    match take(outbox, 1) {
        Poll::Pending => Vec::new(),
        Poll::Ready(Some(message)) => entries(&message)
            .iter()
            .map(|e| e.request.as_ref().unwrap().path.clone())
            .collect(),
        Poll::Ready(None) => panic!("the stream ended"),
    }
}

/// What `outbox` holds after the runtime ran its other tasks 16 times, no time passing.
async fn logged_after_yielding(outbox: &Outbox) -> Vec<String> {
    for _ in 0..16 {
        tokio::task::yield_now().await;
    }
    logged_paths(outbox)
}

/// A deferred queue drained on this test's runtime, and loggers on it as `deferred_loggers`.
fn started() -> (Arc<Deferred>, Arc<Loggers>, Arc<Outbox>, Arc<Counter>) {
    let deferred = Arc::new(Deferred::default());
    deferred.start(&tokio::runtime::Handle::current());
    let (loggers, outbox, dropped) = deferred_loggers(&deferred);
    (deferred, loggers, outbox, dropped)
}

/// A sink of `buffer_bytes` 0 with a stream open, behind loggers on `deferred`.
fn deferred_loggers(deferred: &Arc<Deferred>) -> (Arc<Loggers>, Arc<Outbox>, Arc<Counter>) {
    let dropped = Arc::new(Counter::default());
    let (sink, outbox) = Sink::detached(&log("tap", 0), dropped.clone());
    outbox.open(node());
    let loggers = Arc::new(Loggers::new(vec![(log("tap", 0), sink)], deferred.clone()));
    (loggers, outbox, dropped)
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn finished_requests_entries_are_made_by_the_drain_task_every_interval() {
    let (_deferred, loggers, outbox, _) = started();

    finish(&loggers, "/a");
    finish(&loggers, "/b");
    // Not on the request path, and a request wakes nothing.
    assert_eq!(logged_paths(&outbox), Vec::<String>::new());
    assert_eq!(logged_after_yielding(&outbox).await, Vec::<String>::new());
    tokio::time::sleep(deferred::DRAIN_INTERVAL).await;
    assert_eq!(logged_after_yielding(&outbox).await, ["/a", "/b"]);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn enough_waiting_requests_wake_the_drain_task_before_its_interval() {
    let (_deferred, loggers, outbox, _) = started();

    for i in 1..deferred::WAKE_AT {
        finish(&loggers, &format!("/{i}"));
    }
    assert_eq!(logged_after_yielding(&outbox).await, Vec::<String>::new());
    finish(&loggers, "/last");
    let logged = logged_after_yielding(&outbox).await;
    assert_eq!(logged.len(), deferred::WAKE_AT);
    assert_eq!(logged.last().map(String::as_str), Some("/last"));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn past_the_bound_entries_are_dropped_and_counted_and_without_a_task_made_inline() {
    // Never started: made where the request finishes.
    let (loggers, outbox, _) = deferred_loggers(&Arc::default());
    finish(&loggers, "/inline");
    assert_eq!(logged_paths(&outbox), ["/inline"]);

    // Started, with the queue full: the next one is dropped and counted, not made here.
    let (_deferred, loggers, outbox, dropped) = started();
    for i in 0..deferred::MAX_DEFERRED {
        finish(&loggers, &format!("/queued/{i}"));
    }
    finish(&loggers, "/over");
    assert_eq!(dropped.get(), 1);
    assert_eq!(logged_paths(&outbox), Vec::<String>::new());
    tokio::time::sleep(deferred::DRAIN_INTERVAL).await;
    let queued = logged_after_yielding(&outbox).await;
    assert_eq!(queued.len(), deferred::MAX_DEFERRED);
    assert_eq!(queued[0], "/queued/0");
    assert!(!queued.iter().any(|p| p == "/over"));
    assert_eq!(dropped.get(), 1);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn closing_makes_what_waits_ends_the_task_and_later_entries_are_made_inline() {
    let (deferred, loggers, outbox, _) = started();
    finish(&loggers, "/before");
    deferred.close();
    finish(&loggers, "/after");
    // `/after` was made at once; `/before` waits for the task, which the close woke.
    assert_eq!(logged_paths(&outbox), ["/after"]);
    assert_eq!(logged_after_yielding(&outbox).await, ["/before"]);
    // The task let go of the queue: only this test and the loggers hold it.
    assert_eq!(Arc::strong_count(&deferred), 2);
}

#[tokio::test(flavor = "current_thread")]
async fn dropping_the_sinks_closes_their_queue() {
    let sinks = Sinks::new(None, Arc::new(Registry::default()));
    let deferred = sinks.deferred.clone();
    deferred.start(&tokio::runtime::Handle::current());
    drop(sinks);
    // Closed: a request now is made where it finishes.
    let (loggers, outbox, _) = deferred_loggers(&deferred);
    finish(&loggers, "/late");
    assert_eq!(logged_paths(&outbox), ["/late"]);
}

#[test]
fn requests_finished_on_many_threads_while_the_queue_closes_are_all_made_or_counted() {
    const THREADS: usize = 4;
    // More than the queue holds, so some are dropped and counted as well.
    const EACH: usize = 600;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let deferred = Arc::new(Deferred::default());
    deferred.start(runtime.handle());
    let (loggers, outbox, dropped) = deferred_loggers(&deferred);
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let loggers = loggers.clone();
            std::thread::spawn(move || {
                for i in 0..EACH {
                    finish(&loggers, &format!("/{t}/{i}"));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(2));
    deferred.close();
    for thread in threads {
        thread.join().unwrap();
    }
    // Every request's entry is made, by the task or where it finished, or dropped and
    // counted; none is left waiting in a queue nothing drains.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut made = 0;
    while made + dropped.get() as usize != THREADS * EACH {
        match take(&outbox, 1) {
            Poll::Ready(Some(message)) => made += entries(&message).len(),
            Poll::Ready(None) => panic!("the stream ended"),
            Poll::Pending => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "made {made}, dropped {}, of {}",
                    dropped.get(),
                    THREADS * EACH
                );
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    assert!(made > 0);
}

// === filters: process_ratelimit buckets and header conditions ===

/// Buckets of these names and sizes, that never refill during a test.
fn buckets_of(sizes: &[(&str, u32)]) -> Buckets {
    let buckets = Buckets::default();
    buckets.configure(
        &sizes
            .iter()
            .map(|(name, max_tokens)| {
                let config = TokenBucketConfig {
                    max_tokens: *max_tokens,
                    tokens_per_fill: 1,
                    fill_interval: Duration::from_secs(3600),
                };
                ((*name).to_owned(), Arc::new(config))
            })
            .collect(),
    );
    buckets
}

/// The tokens left in bucket `name`.
fn tokens(buckets: &Buckets, name: &str) -> u32 {
    let bucket = buckets.slot(name).bucket().unwrap();
    bucket.available_at(Instant::now())
}

/// A sink of `log` with its stream open.
fn sink_of(log: &AccessLog) -> (Arc<Sink>, Arc<Outbox>) {
    let (sink, outbox) = Sink::detached(log, Arc::new(Counter::default()));
    outbox.open(node());
    (sink, outbox)
}

/// Starts and finishes a request to `path` if `loggers` admit it; whether they did.
fn finish_admitted(loggers: &Arc<Loggers>, path: &str) -> bool {
    let request = Request::get(path)
        .header(header::HOST, "web.demo:80")
        .body(())
        .unwrap();
    let Some(mut pending) =
        Pending::admitted(loggers, &downstream(false), &request, Instant::now())
    else {
        return false;
    };
    pending.respond(200, &HeaderMap::new());
    pending.finished();
    drop(pending);
    true
}

#[test]
fn a_logger_whose_bucket_is_empty_skips_the_request_and_counts_it() {
    let buckets = buckets_of(&[("switchyard-tap", 2)]);
    let limited = AccessLog {
        filter: Some(LogFilter::Bucket(BucketName("switchyard-tap".to_owned()))),
        ..log("tap", 0)
    };
    // One logger, limited: the third request is not even started.
    let (sink, outbox) = sink_of(&limited);
    let one = Arc::new(
        Loggers::new(vec![(limited.clone(), sink.clone())], Arc::default()).limited(&buckets),
    );
    let admitted: Vec<bool> = ["/1", "/2", "/3"]
        .iter()
        .map(|p| finish_admitted(&one, p))
        .collect();
    assert_eq!(admitted, [true, true, false]);
    assert_eq!(logged_paths(&outbox), ["/1", "/2"]);
    assert_eq!(sink.rate_limited_total(), 1);

    // A limited logger (its bucket now empty, shared by name) beside an unlimited one: the
    // request is made for the second only.
    let (sink, limited_outbox) = sink_of(&limited);
    let (other_sink, other_outbox) = sink_of(&log("audit", 0));
    let two = Arc::new(
        Loggers::new(
            vec![(limited, sink.clone()), (log("audit", 0), other_sink)],
            Arc::default(),
        )
        .limited(&buckets),
    );
    assert!(finish_admitted(&two, "/4"));
    assert_eq!(logged_paths(&limited_outbox), Vec::<String>::new());
    assert_eq!(logged_paths(&other_outbox), ["/4"]);
    assert_eq!(sink.rate_limited_total(), 1);
}

/// `method path` with `host`, started and finished if `loggers` admit it; whether they did.
fn sent(loggers: &Arc<Loggers>, tls: bool, method: &str, path: &str, host: &str) -> bool {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, host)
        .body(())
        .unwrap();
    let Some(mut pending) = Pending::admitted(loggers, &downstream(tls), &request, Instant::now())
    else {
        return false;
    };
    pending.respond(200, &HeaderMap::new());
    pending.finished();
    drop(pending);
    true
}

fn exact(name: &str, value: &str) -> LogFilter {
    LogFilter::Header(HeaderMatch {
        name: name.to_owned(),
        matcher: StringMatch::Exact(value.to_owned()),
        invert: false,
    })
}

fn prefix(name: &str, value: &str) -> LogFilter {
    LogFilter::Header(HeaderMatch {
        name: name.to_owned(),
        matcher: StringMatch::Prefix(value.to_owned()),
        invert: false,
    })
}

fn bucket(name: &str) -> LogFilter {
    LogFilter::Bucket(BucketName(name.to_owned()))
}

/// One logger `tap` with `filter`, its buckets from `buckets`: the loggers, its sink and its
/// stream.
fn filtered(filter: LogFilter, buckets: &Buckets) -> (Arc<Loggers>, Arc<Sink>, Arc<Outbox>) {
    let log = AccessLog {
        filter: Some(filter),
        ..log("tap", 0)
    };
    let (sink, outbox) = sink_of(&log);
    let loggers = Loggers::new(vec![(log, sink.clone())], Arc::default()).limited(buckets);
    (Arc::new(loggers), sink, outbox)
}

#[test]
fn a_bucket_after_a_failing_header_condition_keeps_its_tokens() {
    let buckets = buckets_of(&[("a", 2)]);
    let (loggers, sink, outbox) = filtered(
        LogFilter::And(vec![prefix(":path", "/a"), bucket("a")]),
        &buckets,
    );
    for _ in 0..5 {
        assert!(!sent(&loggers, false, "GET", "/b", "web.demo:80"));
    }
    assert_eq!(tokens(&buckets, "a"), 2, "no request reached the bucket");
    assert_eq!(
        sink.rate_limited_total(),
        0,
        "a request the conditions refuse is not rate limited"
    );
    let admitted: Vec<bool> = ["/a/1", "/a/2", "/a/3"]
        .iter()
        .map(|p| sent(&loggers, false, "GET", p, "web.demo:80"))
        .collect();
    assert_eq!(admitted, [true, true, false]);
    assert_eq!(logged_paths(&outbox), ["/a/1", "/a/2"]);
    assert_eq!(sink.rate_limited_total(), 1);
}

#[test]
fn an_or_does_not_draw_on_a_later_bucket_once_an_earlier_term_passed() {
    let buckets = buckets_of(&[("a", 3), ("b", 2)]);
    let (loggers, sink, outbox) = filtered(
        LogFilter::Or(vec![
            LogFilter::And(vec![prefix(":path", "/a"), bucket("a")]),
            bucket("b"),
        ]),
        &buckets,
    );
    for _ in 0..3 {
        assert!(sent(&loggers, false, "GET", "/a", "web"));
    }
    assert_eq!((tokens(&buckets, "a"), tokens(&buckets, "b")), (0, 2));
    // `a` is empty: the `or` goes on to `b`, which lets the request through, uncounted.
    assert!(sent(&loggers, false, "GET", "/a", "web"));
    assert!(sent(&loggers, false, "GET", "/b", "web"));
    assert_eq!(tokens(&buckets, "b"), 0);
    assert_eq!(sink.rate_limited_total(), 0);
    // Both reached and empty: refused and counted.
    assert!(!sent(&loggers, false, "GET", "/a", "web"));
    assert!(!sent(&loggers, false, "GET", "/b", "web"));
    assert_eq!(sink.rate_limited_total(), 2);
    assert_eq!(logged_paths(&outbox), ["/a", "/a", "/a", "/a", "/b"]);
}

/// The filter of the parity test against Envoy (`tests/access_log.rs`), which checks the same
/// sequence end to end: each term's bucket is drawn on by its own requests only; a request
/// one term's bucket refused and no later term took is counted, one no condition took is not.
#[test]
fn each_session_logs_within_its_own_bucket_and_counts_what_its_bucket_refused() {
    let buckets = buckets_of(&[("a", 3), ("b", 2)]);
    let (loggers, sink, outbox) = filtered(
        LogFilter::Or(vec![
            LogFilter::And(vec![prefix(":path", "/a"), bucket("a")]),
            LogFilter::And(vec![exact(":method", "POST"), bucket("b")]),
        ]),
        &buckets,
    );
    let mut admitted = Vec::new();
    for (method, path) in [("GET", "/b"), ("GET", "/a"), ("POST", "/b")] {
        for i in 0..10 {
            if sent(&loggers, false, method, &format!("{path}/{i}"), "web") {
                admitted.push(format!("{method} {path}/{i}"));
            }
        }
    }
    assert_eq!(
        admitted,
        ["GET /a/0", "GET /a/1", "GET /a/2", "POST /b/0", "POST /b/1"]
    );
    assert_eq!(logged_paths(&outbox).len(), 5);
    // 7 GETs of /a that found `a` empty, 8 POSTs that found `b` empty; none of the GETs of /b.
    assert_eq!(sink.rate_limited_total(), 15);
}

/// A header condition reads the request as routing does: the path normalized and without its
/// query, the authority (`Host`) in lower case, the scheme of the connection.
#[test]
fn header_conditions_see_the_request_as_routing_sees_it() {
    let buckets = Buckets::default();
    let by = |filter: LogFilter| filtered(filter, &buckets).0;
    let path = by(prefix(":path", "/a"));
    assert!(sent(&path, false, "GET", "/b/../a/x", "web"));
    assert!(!sent(&path, false, "GET", "/a/../b", "web"));
    let exact_path = by(exact(":path", "/a"));
    assert!(sent(&exact_path, false, "GET", "/a?x=1", "web"));
    let authority = by(exact(":authority", "web.demo:80"));
    assert!(sent(&authority, false, "GET", "/", "Web.Demo:80"));
    assert!(!sent(&authority, false, "GET", "/", "web.demo:8080"));
    let scheme = by(exact(":scheme", "https"));
    assert!(sent(&scheme, true, "GET", "/", "web"));
    assert!(!sent(&scheme, false, "GET", "/", "web"));
    let method = by(LogFilter::And(vec![
        exact(":method", "PUT"),
        exact("host", "web"),
    ]));
    assert!(sent(&method, false, "PUT", "/", "web"));
    assert!(!sent(&method, false, "GET", "/", "web"));
}

/// A filter of buckets only (today's rate-limited tap) never works out the request's path and
/// authority: its request pays for the token only.
#[test]
fn a_filter_of_buckets_only_never_looks_at_the_target() {
    let buckets = buckets_of(&[("a", 1)]);
    let request = Request::get("/a/../b")
        .header(header::HOST, "WEB")
        .body(())
        .unwrap();
    let (only_buckets, _, _) = filtered(LogFilter::Or(vec![bucket("a"), bucket("b")]), &buckets);
    let seen = Seen::new(&request, false);
    assert!(only_buckets.admit(&seen).is_some());
    assert!(
        only_buckets.admit(&seen).is_none(),
        "both buckets are empty now"
    );
    assert!(seen.target.get().is_none());

    let (with_header, _, _) = filtered(prefix(":path", "/b"), &buckets);
    let seen = Seen::new(&request, false);
    assert!(with_header.admit(&seen).is_some());
    assert_eq!(
        seen.target.get().map(|(p, a)| (p.as_ref(), a.as_ref())),
        Some(("/b", "web"))
    );
}
