use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use envoy_types::pb::{
    envoy::{
        config::core::v3::{Address, RequestMethod, SocketAddress, address, socket_address},
        data::accesslog::v3::{
            AccessLogCommon, HttpAccessLogEntry, HttpRequestProperties, HttpResponseProperties,
            TlsProperties,
            tls_properties::{
                CertificateProperties,
                certificate_properties::{SubjectAltName, subject_alt_name::San},
            },
        },
    },
    google::protobuf::{Duration as PbDuration, Timestamp, UInt32Value},
};
use switchyard_adapters::{
    envoy::{self, TapRate},
    model::{
        Cluster, ClusterName, ClusterPolicy, Endpoint, Identity, Protocol, ProxyId, ServiceName,
    },
};

use super::{Direction, Hub, SESSION_QUEUE, TapEvent, TapFilter, events_of};
use crate::edges::Peers;

fn proxy(pod: &str) -> ProxyId {
    ProxyId {
        namespace: "demo".to_owned(),
        pod: pod.to_owned(),
    }
}

fn filter(query: &str) -> TapFilter {
    TapFilter::parse(Some(query)).unwrap()
}

/// An inbound request to web-0, answered 200 (the other suites' events start from it).
pub(crate) fn event(method: &str, path: &str) -> TapEvent {
    TapEvent {
        proxy: "demo/web-0".to_owned(),
        direction: Direction::Inbound,
        source: None,
        source_identity: None,
        destination: None,
        destination_identity: None,
        cluster: "inbound|8080".to_owned(),
        method: method.to_owned(),
        scheme: "http".to_owned(),
        authority: "web.demo".to_owned(),
        path: path.to_owned(),
        status: 200,
        grpc_status: None,
        start_micros: 0,
        latency_micros: 1,
        request_bytes: 0,
        response_bytes: 0,
    }
}

// === filter ===

#[test]
fn a_query_names_the_namespace_and_may_narrow_it() {
    let f = filter(
        "namespace=demo&pod=web-0&method=post&authority=web.demo&path=%2Fapi%2Fv1&max_rps=5",
    );
    assert_eq!(
        f,
        TapFilter {
            namespace: "demo".to_owned(),
            pod: Some("web-0".to_owned()),
            method: Some("POST".to_owned()),
            authority: Some("web.demo".to_owned()),
            path_prefix: Some("/api/v1".to_owned()),
            max_rps: 5,
        }
    );
    assert!(f.selects(&proxy("web-0")));
    assert!(!f.selects(&proxy("web-1")));
    assert!(!f.selects(&ProxyId {
        namespace: "other".to_owned(),
        pod: "web-0".to_owned()
    }));
    assert!(f.matches(&event("POST", "/api/v1/orders")));
    assert!(!f.matches(&event("GET", "/api/v1/orders")));
    assert!(!f.matches(&event("POST", "/api/v2")));
    assert!(filter("namespace=demo").matches(&event("DELETE", "/")));
}

#[test]
fn a_bad_query_names_its_parameter() {
    for (query, want) in [
        ("pod=web-0", "namespace: required"),
        ("namespace=demo&max_rps=0", "max_rps=0"),
        ("namespace=demo&max_rps=1001", "max_rps=1001"),
        (
            "namespace=demo&header=authorization",
            "header: not a tap parameter",
        ),
    ] {
        let err = TapFilter::parse(Some(query)).unwrap_err();
        assert!(err.starts_with(want), "{query}: {err}");
    }
}

// === hub ===

#[tokio::test]
async fn events_reach_the_sessions_that_select_them_within_their_rate() {
    let hub = Arc::new(Hub::default());
    let mut changes = hub.changes();
    let mut web = hub
        .open(filter("namespace=demo&pod=web-0&max_rps=2"))
        .unwrap();
    let mut posts = hub.open(filter("namespace=demo&method=POST")).unwrap();
    assert!(changes.has_changed().unwrap());
    changes.mark_unchanged();
    assert!(hub.selects(&proxy("web-0")) && hub.selects(&proxy("api-0")));

    let now = Instant::now();
    let sent = [event("GET", "/1"), event("POST", "/2"), event("GET", "/3")];
    // web takes two of three (its rate), posts the one POST.
    assert_eq!(hub.publish(&proxy("web-0"), &sent, now), 1);
    assert_eq!(web.next().await.unwrap().path, "/1");
    assert_eq!(web.next().await.unwrap().path, "/2");
    assert_eq!(posts.next().await.unwrap().path, "/2");
    // A second later the bucket is full again.
    assert_eq!(
        hub.publish(&proxy("web-0"), &sent[2..], now + Duration::from_secs(1)),
        0
    );
    assert_eq!(web.next().await.unwrap().path, "/3");

    drop(web);
    assert!(changes.has_changed().unwrap());
    assert_eq!(hub.sessions(), 1);
    drop(posts);
    assert_eq!(hub.sessions(), 0);
    assert!(!hub.selects(&proxy("web-0")));
}

#[test]
fn a_proxy_is_asked_for_its_sessions_rates_together_and_each_match_on_its_own() {
    let hub = Arc::new(Hub::default());
    let every = |p: &str| hub.tap(&proxy(p)).map(|t| t.every.map(TapRate::per_second));
    let matching = |p: &str| {
        hub.tap(&proxy(p)).map(|t| {
            (t.matching.iter())
                .map(|m| {
                    let cond = |c: &Option<String>| c.clone().unwrap_or_default();
                    let conditions = [&m.method, &m.authority, &m.path_prefix].map(cond);
                    (m.bucket(), conditions, m.rate.per_second())
                })
                .collect::<Vec<_>>()
        })
    };
    assert_eq!(every("web-0"), None, "no session: not tapped");
    let web = hub
        .open(filter("namespace=demo&pod=web-0&max_rps=30"))
        .unwrap();
    assert_eq!(every("web-0"), Some(Some(30)));
    assert_eq!(every("api-0"), None);
    let all = hub.open(filter("namespace=demo&max_rps=5")).unwrap();
    assert_eq!(every("web-0"), Some(Some(35)), "both sessions' rates");
    assert_eq!(every("api-0"), Some(Some(5)));
    assert_eq!(matching("web-0"), Some(vec![]));
    // A session that shows only some requests gets its own bucket, drawn on by its matches
    // only: behind one all requests draw on, a quiet match would starve.
    let posts = hub
        .open(filter("namespace=demo&method=post&path=/orders&max_rps=1"))
        .unwrap();
    let slow = hub
        .open(filter(
            "namespace=demo&pod=api-0&authority=api:80&max_rps=7",
        ))
        .unwrap();
    let [posts_bucket, slow_bucket] = [3, 4].map(|id| format!("{}-{id}", envoy::TAP_BUCKET));
    assert_eq!(
        every("web-0"),
        Some(Some(35)),
        "the shared bucket unchanged"
    );
    assert_eq!(
        matching("web-0"),
        Some(vec![(
            posts_bucket.clone(),
            ["POST".into(), String::new(), "/orders".into()],
            1
        )])
    );
    assert_eq!(
        matching("api-0"),
        Some(vec![
            (
                posts_bucket,
                ["POST".into(), String::new(), "/orders".into()],
                1
            ),
            (
                slow_bucket,
                [String::new(), "api:80".into(), String::new()],
                7
            ),
        ])
    );
    drop((all, web));
    assert_eq!(every("api-0"), Some(None), "only matches: no shared bucket");
    drop((posts, slow));
    assert_eq!(every("api-0"), None);
    assert_eq!(every("web-0"), None);
}

fn started(path: &str, start_micros: u64) -> TapEvent {
    TapEvent {
        start_micros,
        ..event("GET", path)
    }
}

#[tokio::test]
async fn a_session_shows_events_in_the_order_their_requests_started() {
    let hub = Arc::new(Hub::default());
    let mut session = hub.open(filter("namespace=demo")).unwrap();
    // Two workers' flushes: the second request's event arrives first.
    let now = Instant::now();
    hub.publish(&proxy("web-0"), &[started("/2", 2_000)], now);
    hub.publish(
        &proxy("web-0"),
        &[started("/1", 1_000), started("/3", 3_000)],
        now,
    );
    let t0 = tokio::time::Instant::now();
    let paths = [(); 3].map(|()| {
        let next = session.next();
        futures_util::FutureExt::now_or_never(next)
    });
    assert!(paths.iter().all(Option::is_none), "held for the window");
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(session.next().await.unwrap().path);
    }
    assert_eq!(seen, ["/1", "/2", "/3"]);
    assert!(t0.elapsed() >= super::reorder::WINDOW);
}

#[test]
fn reorder_holds_each_event_for_the_window_and_at_most_max() {
    use super::reorder::{Reorder, WINDOW};
    let t0 = tokio::time::Instant::now();
    let mut r = Reorder::new(2);
    assert_eq!(r.deadline(), None);
    r.push(started("/late", 5), t0);
    r.push(started("/early", 1), t0 + Duration::from_millis(100));
    // The earliest start goes first, once it has been held for the window.
    assert_eq!(r.deadline(), Some(t0 + Duration::from_millis(100) + WINDOW));
    assert!(r.pop(t0 + WINDOW).is_none());
    assert_eq!(
        r.pop(t0 + Duration::from_millis(100) + WINDOW)
            .unwrap()
            .path,
        "/early"
    );
    assert_eq!(
        r.pop(t0 + Duration::from_millis(100) + WINDOW)
            .unwrap()
            .path,
        "/late"
    );
    assert!(r.pop(t0 + WINDOW * 10).is_none());
    // Past `max`, the earliest goes at once.
    for (i, path) in ["/a", "/b", "/c"].into_iter().enumerate() {
        r.push(started(path, i as u64), t0);
    }
    assert_eq!(r.pop(t0).unwrap().path, "/a");
    assert!(r.pop(t0).is_none());
}

#[test]
fn a_session_that_is_not_read_drops_past_its_queue() {
    let hub = Arc::new(Hub::default());
    let _session = hub.open(filter("namespace=demo&max_rps=1000")).unwrap();
    let burst =
        |n: usize| -> Vec<TapEvent> { (0..n).map(|i| event("GET", &format!("/{i}"))).collect() };
    let now = Instant::now();
    // A second's worth of the rate, all queued.
    assert_eq!(hub.publish(&proxy("web-0"), &burst(1_000), now), 0);
    // A second later the rate allows 100 more, but the queue holds only 24 of them.
    let later = now + Duration::from_secs(1);
    assert_eq!(
        hub.publish(&proxy("web-0"), &burst(100), later),
        100 - (SESSION_QUEUE - 1_000)
    );
}

#[test]
fn sessions_are_bounded() {
    let hub = Arc::new(Hub::default());
    let open: Vec<_> = (0..super::MAX_SESSIONS)
        .map(|_| hub.open(filter("namespace=demo")).unwrap())
        .collect();
    let err = hub.open(filter("namespace=demo")).unwrap_err();
    assert!(err.contains("64 taps are open"), "{err}");
    drop(open);
    assert!(hub.open(filter("namespace=demo")).is_ok());
}

// === events ===

fn socket(ip: &str, port: u32) -> Option<Address> {
    Some(Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.to_owned(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    })
}

fn entry(cluster: &str, upstream: &str, san: Option<&str>) -> HttpAccessLogEntry {
    HttpAccessLogEntry {
        common_properties: Some(AccessLogCommon {
            downstream_remote_address: socket("10.0.0.9", 41000),
            upstream_remote_address: socket(upstream, 8080),
            upstream_cluster: cluster.to_owned(),
            tls_properties: san.map(|uri| TlsProperties {
                peer_certificate_properties: Some(CertificateProperties {
                    subject_alt_name: vec![SubjectAltName {
                        san: Some(San::Uri(uri.to_owned())),
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            start_time: Some(Timestamp {
                seconds: 1_800_000_000,
                nanos: 250_000_999,
            }),
            time_to_last_downstream_tx_byte: Some(PbDuration {
                seconds: 0,
                nanos: 1_500_000,
            }),
            ..Default::default()
        }),
        request: Some(HttpRequestProperties {
            request_method: RequestMethod::Post as i32,
            scheme: "http".to_owned(),
            authority: "web.demo".to_owned(),
            path: "/orders".to_owned(),
            request_body_bytes: 12,
            ..Default::default()
        }),
        response: Some(HttpResponseProperties {
            response_code: Some(UInt32Value { value: 200 }),
            response_body_bytes: 34,
            response_trailers: std::collections::HashMap::from([(
                "grpc-status".to_owned(),
                "0".to_owned(),
            )]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn peers() -> Peers {
    let service = ServiceName::new("demo", "web");
    let cluster = Cluster {
        name: ClusterName::new(&service, 80),
        service,
        port: 80,
        protocol: Protocol::Http,
        endpoints: vec![
            Endpoint {
                address: "10.0.0.2:8080".parse().unwrap(),
                identity: Some(Identity::new("demo", "web")),
            },
            Endpoint {
                address: "10.0.0.3:8080".parse().unwrap(),
                identity: None,
            },
        ],
        policy: ClusterPolicy::default(),
    };
    let clusters = Arc::new(BTreeMap::from([(cluster.name.clone(), Arc::new(cluster))]));
    let mut peers = Peers::new("cluster.local", []);
    peers.insert(proxy("client-0"), Identity::new("demo", "client"), clusters);
    peers.insert(proxy("web-0"), Identity::new("demo", "web"), Arc::default());
    peers
}

#[test]
fn an_inbound_entry_names_the_client_by_its_certificate() {
    let client = "spiffe://cluster.local/ns/demo/sa/client";
    let [e] = events_of(
        &proxy("web-0"),
        &[entry("inbound|8080", "10.0.0.2", Some(client))],
        &peers(),
    )
    .try_into()
    .unwrap();
    assert_eq!(e.direction, Direction::Inbound);
    assert_eq!(e.source_identity.as_deref(), Some(client));
    assert_eq!(
        e.destination_identity.as_deref(),
        Some("spiffe://cluster.local/ns/demo/sa/web")
    );
    assert_eq!(
        (e.method.as_str(), e.path.as_str(), e.status),
        ("POST", "/orders", 200)
    );
    assert_eq!(
        (e.request_bytes, e.response_bytes, e.latency_micros),
        (12, 34, 1_500)
    );
    assert_eq!(e.start_micros, 1_800_000_000_250_000);
    assert_eq!(e.grpc_status.as_deref(), Some("0"));
    assert_eq!(e.source, Some("10.0.0.9:41000".parse().unwrap()));
    assert!(e.tls());
    let line = e.line();
    assert!(
        line.starts_with("proxy=in pod=demo/web-0 src=10.0.0.9:41000 src_id=spiffe://"),
        "{line}"
    );
    assert!(
        line.ends_with(":status=200 latency=1500µs response-length=34B grpc-status=0"),
        "{line}"
    );

    // Plaintext (permissive mode): no client identity, not TLS.
    let [e] = events_of(
        &proxy("web-0"),
        &[entry("inbound|8080", "10.0.0.2", None)],
        &peers(),
    )
    .try_into()
    .unwrap();
    assert_eq!(e.source_identity, None);
    assert!(!e.tls());
}

#[test]
fn an_outbound_entry_names_the_endpoint_by_what_the_control_plane_compiled() {
    let events = events_of(
        &proxy("client-0"),
        &[
            entry("demo/web|80", "10.0.0.2", None),
            entry("demo/web|80", "10.0.0.3", None),
        ],
        &peers(),
    );
    let client = Some("spiffe://cluster.local/ns/demo/sa/client");
    assert_eq!(events[0].direction, Direction::Outbound);
    assert_eq!(events[0].source_identity.as_deref(), client);
    assert_eq!(
        events[0].destination_identity.as_deref(),
        Some("spiffe://cluster.local/ns/demo/sa/web")
    );
    // The unmeshed endpoint: no identity, so no TLS.
    assert_eq!(events[1].destination_identity, None);
    assert!(!events[1].tls());
}

/// A client's long path (Envoy takes request heads up to 60 KiB) made an event line longer than
/// a tap's reader takes, which ended the tap (the `access_log` fuzz target's line bound; its
/// seed `raw-long-path`).
#[test]
fn an_entrys_long_strings_are_cut_so_its_event_fits_a_line() {
    use super::event::{MAX_FIELD_BYTES, MAX_PATH_BYTES};
    use super::stream::{Lines, MAX_LINE_BYTES};

    // Control characters: 6 bytes each in JSON. `é` is 2 bytes: the cut falls inside one.
    let long = |n: usize| "\u{1}".repeat(n);
    let mut e = entry(&"x".repeat(70_000), "10.0.0.2", None);
    let request = e.request.as_mut().unwrap();
    request.path = format!("/{}", "é".repeat(40_000));
    request.authority = long(20_000);
    request.scheme = long(20_000);
    let response = e.response.as_mut().unwrap();
    response
        .response_trailers
        .insert("grpc-status".to_owned(), long(20_000));
    let mut inbound = entry("inbound|8080", "10.0.0.1", Some(&long(20_000)));
    inbound.request = e.request.clone();
    inbound.response = e.response.clone();

    let events = events_of(&proxy("web-0"), &[e, inbound], &peers());
    assert_eq!(events[0].cluster.len(), MAX_FIELD_BYTES);
    assert_eq!(events[1].direction, Direction::Inbound);
    assert_eq!(
        events[1].source_identity.as_ref().unwrap().len(),
        MAX_FIELD_BYTES
    );
    for event in events {
        // 2,047 `é` after the `/`: the next one would end past the bound.
        assert_eq!(event.path.len(), MAX_PATH_BYTES - 1);
        assert!(event.path.starts_with("/é"));
        for field in [&event.authority, &event.scheme] {
            assert_eq!(field.len(), MAX_FIELD_BYTES);
        }
        assert_eq!(event.grpc_status.as_ref().unwrap().len(), MAX_FIELD_BYTES);
        let mut line = serde_json::to_vec(&event).unwrap();
        assert!(line.len() <= MAX_LINE_BYTES, "{} bytes", line.len());
        line.push(b'\n');
        // As a reader gets it: in pieces.
        let mut lines = Lines::default();
        let mut read = Vec::new();
        for chunk in line.chunks(16 * 1024) {
            read.extend(lines.push(chunk).unwrap());
        }
        assert_eq!(read.len(), 1);
        assert_eq!(serde_json::from_slice::<TapEvent>(&read[0]).unwrap(), event);
    }
}

// === reading a stream ===

#[test]
fn a_stream_reader_takes_whole_lines_and_skips_heartbeats() {
    let mut lines = super::stream::Lines::default();
    assert_eq!(lines.push(b"{\"a\"").unwrap(), Vec::<Vec<u8>>::new());
    assert_eq!(
        lines.push(b":1}\n\n \n{\"b\":2}\n{").unwrap(),
        [b"{\"a\":1}".to_vec(), b"{\"b\":2}".to_vec()]
    );
    assert_eq!(lines.push(b"}\n").unwrap(), [b"{}".to_vec()]);
    // A peer that never ends its line is not buffered without bound.
    let long = vec![b'x'; super::stream::MAX_LINE_BYTES + 1];
    assert!(lines.push(&long).is_err());
    // Nor is a line past the bound taken because its end came in the same piece.
    let mut lines = super::stream::Lines::default();
    let mut whole = vec![b'x'; super::stream::MAX_LINE_BYTES + 1];
    whole.push(b'\n');
    assert!(lines.push(&whole).is_err());
    let mut longest = vec![b'x'; super::stream::MAX_LINE_BYTES];
    longest.push(b'\n');
    assert_eq!(lines.push(&longest).unwrap().len(), 1);
}

#[test]
fn a_filter_survives_its_own_query() {
    let f = filter(
        "namespace=a%20b&pod=web-0&method=get&authority=web.demo%3A80&path=%2Fx%3Fy&max_rps=7",
    );
    assert_eq!(TapFilter::parse(Some(&f.query())).unwrap(), f);
    let f = filter("namespace=demo");
    assert_eq!(f.query(), "namespace=demo&max_rps=100");
}

#[tokio::test]
async fn a_refusal_reads_as_its_status_message_or_its_text() {
    use http_body_util::Full;
    let status = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"pods \"web-0\" is forbidden: User \"bob\" cannot watch resource \"pods/tap\"","code":403}"#;
    assert_eq!(
        super::stream::refusal(Full::new(bytes::Bytes::from(status))).await,
        r#"pods "web-0" is forbidden: User "bob" cannot watch resource "pods/tap""#
    );
    assert_eq!(
        super::stream::refusal(Full::new(bytes::Bytes::from("max_rps=0: a number\n"))).await,
        "max_rps=0: a number"
    );
}

#[tokio::test]
async fn a_merged_stream_keeps_the_sessions_rate_over_all_replicas() {
    use http_body_util::BodyExt;
    const MAX_RPS: u32 = 5;
    let hub = Arc::new(Hub::default());
    let session = hub
        .open(filter(&format!("namespace=demo&max_rps={MAX_RPS}")))
        .unwrap();
    // Two other replicas, each within the rate for its own proxies: twice it together.
    let (tx, rx) = tokio::sync::mpsc::channel(SESSION_QUEUE);
    for i in 0..2 * MAX_RPS {
        tx.send(event("GET", &format!("/{i}"))).await.unwrap();
    }
    let mut body = super::stream::merged(session, Some(rx), ());
    let mut shown = Vec::new();
    // Until the first heartbeat: everything sent has arrived by then.
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("a heartbeat within 5 s")
            .unwrap()
            .unwrap();
        let data = frame.into_data().unwrap();
        if data.as_ref() == b"\n" {
            break;
        }
        shown.push(serde_json::from_slice::<serde_json::Value>(&data).unwrap());
    }
    let paths: Vec<_> = shown
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_owned())
        .collect();
    // One second's worth at most (the bucket starts full), the first ones, in order.
    assert_eq!(
        paths,
        (0..MAX_RPS).map(|i| format!("/{i}")).collect::<Vec<_>>()
    );
}
