use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use super::*;
use crate::config::Direction;

// === Utils ===

fn http_labels(route: &str, peer: &str) -> HttpLabels {
    HttpLabels {
        direction: Direction::Outbound,
        listener: "outbound_http".to_owned(),
        route: route.to_owned(),
        destination: "web.demo".to_owned(),
        backend: "demo/web-v1|80".to_owned(),
        peer: peer.to_owned(),
    }
}

fn lines_with<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.starts_with(prefix)).collect()
}

const HTTP_LABELS: &str = "direction=\"outbound\",listener=\"outbound_http\",route=\"web/default\",\
                           destination=\"web.demo\",backend=\"demo/web-v1|80\",peer=\"\"";

// === Tests ===

#[test]
fn renders_http_requests_and_histogram() {
    let registry = Registry::default();
    let stats = registry.http(&http_labels("web/default", ""));
    stats.record(200, Duration::from_micros(1_500));
    stats.record(204, Duration::from_micros(400));
    stats.record(503, Duration::from_secs(20));

    let text = registry.render();
    let requests = lines_with(&text, "switchyard_proxy_requests_total");
    assert_eq!(
        requests,
        vec![
            format!("switchyard_proxy_requests_total{{{HTTP_LABELS},status_class=\"2xx\"}} 2"),
            format!("switchyard_proxy_requests_total{{{HTTP_LABELS},status_class=\"5xx\"}} 1"),
        ]
    );
    assert!(text.contains(
        "# HELP switchyard_proxy_requests_total HTTP requests answered, by status class.\n\
         # TYPE switchyard_proxy_requests_total counter\n"
    ));
    assert!(text.contains("# TYPE switchyard_proxy_request_duration_seconds histogram\n"));

    let buckets = lines_with(&text, "switchyard_proxy_request_duration_seconds_bucket");
    let expected: Vec<String> = [
        ("0.0005", 1),
        ("0.001", 1),
        ("0.0025", 2),
        ("0.005", 2),
        ("0.01", 2),
        ("0.025", 2),
        ("0.05", 2),
        ("0.1", 2),
        ("0.25", 2),
        ("0.5", 2),
        ("1", 2),
        ("2.5", 2),
        ("5", 2),
        ("10", 2),
        ("+Inf", 3),
    ]
    .iter()
    .map(|(le, n)| {
        format!("switchyard_proxy_request_duration_seconds_bucket{{{HTTP_LABELS},le=\"{le}\"}} {n}")
    })
    .collect();
    assert_eq!(buckets, expected);
    assert_eq!(
        lines_with(&text, "switchyard_proxy_request_duration_seconds_sum"),
        vec![format!(
            "switchyard_proxy_request_duration_seconds_sum{{{HTTP_LABELS}}} 20.0019"
        )]
    );
    assert_eq!(
        lines_with(&text, "switchyard_proxy_request_duration_seconds_count"),
        vec![format!(
            "switchyard_proxy_request_duration_seconds_count{{{HTTP_LABELS}}} 3"
        )]
    );
}

#[test]
fn bucket_bounds_are_inclusive() {
    let histogram = Histogram::default();
    histogram.observe(Duration::from_micros(500));
    histogram.observe(Duration::from_micros(501));
    let mut out = String::new();
    histogram.render(&mut out, "h", "");
    assert!(
        out.contains("switchyard_proxy_h_bucket{le=\"0.0005\"} 1\n"),
        "{out}"
    );
    assert!(
        out.contains("switchyard_proxy_h_bucket{le=\"0.001\"} 2\n"),
        "{out}"
    );
    assert!(out.contains("switchyard_proxy_h_sum 0.001001\n"), "{out}");
}

#[test]
fn same_labels_share_stats() {
    let registry = Registry::default();
    let a = registry.http(&http_labels("r", "spiffe://cluster.local/ns/demo/sa/web"));
    let b = registry.http(&http_labels("r", "spiffe://cluster.local/ns/demo/sa/web"));
    let other = registry.http(&http_labels("r", ""));
    assert!(Arc::ptr_eq(&a, &b));
    assert!(!Arc::ptr_eq(&a, &other));

    a.record(404, Duration::ZERO);
    assert_eq!(b.requests(4), 1);
    assert_eq!(other.requests(4), 0);
}

#[test]
fn odd_statuses_count_in_the_nearest_class() {
    let stats = HttpStats::default();
    stats.record(0, Duration::ZERO);
    stats.record(99, Duration::ZERO);
    stats.record(600, Duration::ZERO);
    assert_eq!(stats.requests(1), 2);
    assert_eq!(stats.requests(5), 1);
    assert_eq!(stats.latency().count(), 3);
}

#[test]
fn label_values_are_escaped() {
    let registry = Registry::default();
    let labels = http_labels("a\\b\"c\nd", "");
    registry.http(&labels).record(200, Duration::ZERO);
    let text = registry.render();
    assert!(
        text.contains("route=\"a\\\\b\\\"c\\nd\""),
        "escaped route missing in:\n{text}"
    );
    // Every sample stays on one line.
    assert!(
        text.lines()
            .all(|l| l.starts_with('#') || l.starts_with("switchyard_proxy_")),
        "{text}"
    );
}

#[test]
fn help_text_is_escaped() {
    let mut out = String::new();
    header(&mut out, "x", "counter", "back\\slash\nnew line");
    assert_eq!(
        out,
        "# HELP switchyard_proxy_x back\\\\slash\\nnew line\n# TYPE switchyard_proxy_x counter\n"
    );
}

#[test]
fn renders_tcp_connections_and_bytes() {
    let registry = Registry::default();
    let stats = registry.tcp(&TcpLabels {
        direction: Direction::Inbound,
        listener: "inbound|5432".to_owned(),
        backend: "inbound|5432".to_owned(),
        peer: "spiffe://cluster.local/ns/demo/sa/client".to_owned(),
    });
    let first = stats.open();
    {
        let _second = stats.open();
        assert_eq!(stats.active(), 2);
    }
    stats.bytes(100, 2048);
    stats.bytes(1, 0);
    assert_eq!((stats.opened(), stats.active()), (2, 1));

    let labels = "{direction=\"inbound\",listener=\"inbound|5432\",backend=\"inbound|5432\",\
                  peer=\"spiffe://cluster.local/ns/demo/sa/client\"}";
    let text = registry.render();
    for line in [
        format!("switchyard_proxy_tcp_connections_opened_total{labels} 2"),
        format!("switchyard_proxy_tcp_connections_active{labels} 1"),
        format!("switchyard_proxy_tcp_received_bytes_total{labels} 101"),
        format!("switchyard_proxy_tcp_sent_bytes_total{labels} 2048"),
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line} missing in:\n{text}"
        );
    }
    drop(first);
    assert_eq!(stats.active(), 0);
}

#[test]
fn renders_xds_state() {
    let registry = Registry::default();
    let text = registry.render();
    assert!(text.contains("switchyard_proxy_xds_connected 0\n"));
    assert!(
        lines_with(
            &text,
            "switchyard_proxy_xds_last_accepted_timestamp_seconds "
        )
        .is_empty()
    );

    let xds = registry.xds();
    xds.stream_opened();
    xds.set_connected(true);
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    xds.response(true, at);
    xds.response(true, at);
    xds.response(false, at + Duration::from_secs(5));
    let text = registry.render();
    let xds_lines = lines_with(&text, "switchyard_proxy_xds_");
    assert_eq!(
        xds_lines,
        vec![
            "switchyard_proxy_xds_connected 1",
            "switchyard_proxy_xds_synced 0",
            "switchyard_proxy_xds_streams_total 1",
            "switchyard_proxy_xds_responses_total{result=\"accepted\"} 2",
            "switchyard_proxy_xds_responses_total{result=\"rejected\"} 1",
            "switchyard_proxy_xds_last_accepted_timestamp_seconds 1700000000",
        ]
    );

    xds.set(&XdsSnapshot {
        connected: false,
        synced: true,
        streams: 4,
        accepted: 10,
        rejected: 2,
        last_accepted: None,
    });
    let text = registry.render();
    assert!(text.contains("switchyard_proxy_xds_synced 1\n"));
    assert!(text.contains("switchyard_proxy_xds_responses_total{result=\"accepted\"} 10\n"));
    assert!(
        lines_with(
            &text,
            "switchyard_proxy_xds_last_accepted_timestamp_seconds "
        )
        .is_empty()
    );
}

#[test]
fn renders_generic_counters_and_gauges_sorted() {
    let registry = Registry::default();
    registry.retry("demo/web|80");
    registry.retry("demo/web|80");
    registry.retry("demo/api|80");
    registry.denied("inbound|8080");
    registry
        .gauge("endpoints", "Endpoints per cluster.", &[("cluster", "c")])
        .set(3);
    // A name used for a counter cannot become a gauge.
    registry.gauge("retries_total", "wrong", &[]).set(99);

    let text = registry.render();
    let tail: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.contains("switchyard_proxy_denied_total"))
        .collect();
    assert_eq!(
        tail,
        vec![
            "# HELP switchyard_proxy_denied_total Requests and connections denied by RBAC.",
            "# TYPE switchyard_proxy_denied_total counter",
            "switchyard_proxy_denied_total{listener=\"inbound|8080\"} 1",
            "# HELP switchyard_proxy_endpoints Endpoints per cluster.",
            "# TYPE switchyard_proxy_endpoints gauge",
            "switchyard_proxy_endpoints{cluster=\"c\"} 3",
            "# HELP switchyard_proxy_retries_total Retried requests, by upstream cluster.",
            "# TYPE switchyard_proxy_retries_total counter",
            "switchyard_proxy_retries_total{cluster=\"demo/api|80\"} 1",
            "switchyard_proxy_retries_total{cluster=\"demo/web|80\"} 2",
        ]
    );
}

#[test]
fn every_family_has_help_and_type_once() {
    let registry = Registry::default();
    registry
        .http(&http_labels("r", ""))
        .record(200, Duration::ZERO);
    registry.ejected("c");
    let text = registry.render();
    let types: Vec<&str> = lines_with(&text, "# TYPE ")
        .into_iter()
        .map(|l| l.split(' ').nth(2).unwrap_or_default())
        .collect();
    let mut unique = types.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(types.len(), unique.len(), "{types:?}");
    assert_eq!(
        lines_with(&text, "# HELP ").len(),
        types.len(),
        "one HELP per TYPE"
    );
    assert!(text.ends_with('\n'));
}

#[test]
fn concurrent_recording_sums_up() {
    let registry = Arc::new(Registry::default());
    std::thread::scope(|scope| {
        for thread in 0..4u64 {
            let registry = Arc::clone(&registry);
            scope.spawn(move || {
                for i in 0..5000u64 {
                    // Half the threads share a label set, and each looks it up every time.
                    let route = if thread % 2 == 0 { "shared" } else { "own" };
                    let stats = registry.http(&http_labels(route, &thread.to_string()));
                    stats.record(200, Duration::from_micros(i % 3));
                    registry.retry("c");
                }
            });
        }
    });
    let total: u64 = (0..4u64)
        .map(|thread| {
            let route = if thread % 2 == 0 { "shared" } else { "own" };
            registry
                .http(&http_labels(route, &thread.to_string()))
                .requests(2)
        })
        .sum();
    assert_eq!(total, 20_000);
    let stats = registry.http(&http_labels("shared", "0"));
    assert_eq!(stats.latency().count(), 5000);
    // i % 3 over 0..5000 sums to 4999.
    assert_eq!(stats.latency().sum_micros(), 4999);
    assert!(
        registry
            .render()
            .contains("switchyard_proxy_retries_total{cluster=\"c\"} 20000\n")
    );
}

#[test]
fn a_response_timer_records_when_the_response_is_done() {
    let registry = Registry::default();
    let manager = registry.http_manager("outbound_http");
    let web = registry.upstream("demo/web|80");
    manager.count(200);
    web.count(200);
    let started = std::time::Instant::now() - Duration::from_millis(120);
    let timer = manager.timer(started, Some(web.clone().into()));
    // Counted at the head; timed at the end.
    assert_eq!(manager.values().times.count(), 0);
    drop(timer);
    for times in [manager.values().times, web.values().times] {
        assert_eq!(times.count(), 1);
        // 120 ms and a bit: under the 250 ms bound.
        assert_eq!(times.buckets[8], 1, "{times:?}");
    }
    assert_eq!(manager.values().requests, [0, 1, 0, 0, 0]);
    // A proxy's own answer times its connection manager only.
    drop(manager.timer(started, None));
    assert_eq!(manager.values().times.count(), 2);
    assert_eq!(web.values().times.count(), 1);
}

#[test]
fn a_route_with_a_stat_prefix_is_timed_with_its_cluster() {
    let registry = Registry::default();
    let manager = registry.http_manager("inbound_8080");
    let cluster = registry.upstream("inbound|8080");
    let route = registry.route("inbound|8080", "web__books");
    route.count(500);
    let started = std::time::Instant::now() - Duration::from_millis(120);
    drop(manager.timer(
        started,
        Some(Answered {
            upstream: cluster.clone(),
            route: Some(route.clone()),
        }),
    ));
    // Another route's request: the cluster's only.
    drop(manager.timer(started, Some(cluster.clone().into())));
    assert_eq!(route.values().requests, [0, 0, 0, 0, 1]);
    assert_eq!(route.values().times.count(), 1);
    assert_eq!(route.values().times.buckets[8], 1);
    assert_eq!(cluster.values().times.count(), 2);
    // The same stats by the same key; in the snapshot under it.
    assert!(Arc::ptr_eq(
        &route,
        &registry.route("inbound|8080", "web__books")
    ));
    let golden = registry.golden();
    assert_eq!(
        golden.routes[&("inbound|8080".to_owned(), "web__books".to_owned())],
        route.values()
    );
}
