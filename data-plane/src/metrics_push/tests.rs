use std::{
    sync::Arc,
    task::{Context, Poll, Waker},
    time::{Duration, SystemTime},
};

use envoy_types::pb::{
    envoy::{config::core::v3::Node, service::metrics::v3::StreamMetricsMessage},
    io::prometheus::client::{Metric, MetricType},
};
use tokio_stream::Stream as _;

use super::{stream::Outbox, *};
use crate::metrics::Registry;

// === Utils ===

const WEB: &str = "demo/web|80";
const DB: &str = "demo/db|5432";
const PREFIX: &str = "outbound_http";

fn node() -> Node {
    Node {
        id: "sidecar~web-0".to_owned(),
        ..Default::default()
    }
}

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

/// Label names and values, in the order sent.
type Labels = Vec<(String, String)>;

/// Every metric of `message` as (name, type, labels, metric).
fn series(message: &StreamMetricsMessage) -> Vec<(String, MetricType, Labels, Metric)> {
    message
        .envoy_metrics
        .iter()
        .map(|family| {
            // One metric per family, as Envoy sends them.
            assert_eq!(family.metric.len(), 1, "{family:?}");
            let metric = family.metric[0].clone();
            let labels = metric
                .label
                .iter()
                .map(|l| (l.name().to_owned(), l.value().to_owned()))
                .collect();
            (family.name().to_owned(), family.r#type(), labels, metric)
        })
        .collect()
}

/// The metric named `name` whose labels are `labels`; panics if not exactly one.
fn find(message: &StreamMetricsMessage, name: &str, labels: &[(&str, &str)]) -> Metric {
    let labels: Labels = labels
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect();
    let found: Vec<Metric> = series(message)
        .into_iter()
        .filter(|(n, _, l, _)| n == name && *l == labels)
        .map(|(_, _, _, m)| m)
        .collect();
    assert_eq!(found.len(), 1, "{name} {labels:?} in {message:#?}");
    found[0].clone()
}

fn counter(message: &StreamMetricsMessage, name: &str, labels: &[(&str, &str)]) -> f64 {
    find(message, name, labels).counter.unwrap().value()
}

/// A requests counter's increase: `subject_label` = `subject`, status class `digit`.
fn rq(
    message: &StreamMetricsMessage,
    name: &str,
    subject_label: &str,
    subject: &str,
    digit: &str,
) -> f64 {
    counter(
        message,
        name,
        &[
            (envoy::RESPONSE_CODE_CLASS, digit),
            (subject_label, subject),
        ],
    )
}

/// `(upper_bound ms, cumulative_count)` of a histogram, and its count and sum.
fn buckets(metric: &Metric) -> (Vec<(f64, u64)>, u64, f64) {
    let h = metric.histogram.clone().unwrap();
    let buckets = h
        .bucket
        .iter()
        .map(|b| (b.upper_bound(), b.cumulative_count()))
        .collect();
    (buckets, h.sample_count(), h.sample_sum())
}

fn flush_and_send(flusher: &mut Flusher, registry: &Registry, secs: u64) -> StreamMetricsMessage {
    let flush = flusher.flush(&registry.golden(), at(secs));
    flusher.sent(&flush);
    flush.message
}

// === Tests ===

#[test]
fn counters_are_increases_since_the_last_message_sent() {
    let registry = Registry::default();
    let web = registry.upstream(WEB);
    for _ in 0..9 {
        web.record(200, Some(Duration::from_millis(3)));
    }
    web.record(500, Some(Duration::from_millis(3)));
    let mut flusher = Flusher::new(node());

    let first = flush_and_send(&mut flusher, &registry, 0);
    let name = envoy::UPSTREAM_RQ_XX;
    assert_eq!(rq(&first, name, envoy::CLUSTER_NAME, WEB, "2"), 9.0);
    assert_eq!(rq(&first, name, envoy::CLUSTER_NAME, WEB, "5"), 1.0);

    web.record(204, Some(Duration::from_millis(3)));
    let second = flush_and_send(&mut flusher, &registry, 5);
    assert_eq!(rq(&second, name, envoy::CLUSTER_NAME, WEB, "2"), 1.0);
    // Used once, sent every flush after: a zero increase, as Envoy sends it.
    assert_eq!(rq(&second, name, envoy::CLUSTER_NAME, WEB, "5"), 0.0);

    let third = flush_and_send(&mut flusher, &registry, 10);
    assert_eq!(rq(&third, name, envoy::CLUSTER_NAME, WEB, "2"), 0.0);
    let times = find(
        &third,
        envoy::UPSTREAM_RQ_TIME,
        &[(envoy::CLUSTER_NAME, WEB)],
    );
    assert_eq!(buckets(&times).1, 0, "no time in the third interval");
    // Every metric has the flush's time.
    for (_, _, _, metric) in series(&third) {
        assert_eq!(metric.timestamp_ms, Some(1_700_000_010_000));
    }
}

#[test]
fn histograms_count_the_interval_cumulatively_over_bounds_in_milliseconds() {
    let registry = Registry::default();
    let manager = registry.http_manager(PREFIX);
    // 0.7 ms is 0 whole ms (the 0.5 ms bucket); 1 ms goes under 2.5 ms; 120 ms under 250 ms;
    // 20 s past the last bound.
    for ms in [
        Duration::from_micros(700),
        Duration::from_millis(1),
        Duration::from_millis(120),
    ] {
        manager.record(200, ms);
    }
    manager.record(503, Duration::from_secs(20));
    let mut flusher = Flusher::new(node());
    let first = flush_and_send(&mut flusher, &registry, 0);
    let times = find(
        &first,
        envoy::DOWNSTREAM_RQ_TIME,
        &[(envoy::HTTP_CONN_MANAGER_PREFIX, PREFIX)],
    );
    let (got, count, sum) = buckets(&times);
    let bounds: Vec<f64> = latency_buckets_millis().collect();
    assert_eq!(
        got.iter().map(|b| b.0).collect::<Vec<_>>(),
        bounds,
        "no +Inf bucket"
    );
    let cumulative: Vec<u64> = got.iter().map(|b| b.1).collect();
    // 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000 ms.
    assert_eq!(cumulative, [1, 1, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3]);
    assert_eq!(count, 4, "the +Inf one is count minus the last bucket");
    assert_eq!(sum, (1 + 120 + 20_000) as f64);
    assert_eq!(
        rq(
            &first,
            envoy::DOWNSTREAM_RQ_XX,
            envoy::HTTP_CONN_MANAGER_PREFIX,
            PREFIX,
            "2"
        ),
        3.0
    );

    manager.record(200, Duration::from_millis(7));
    let second = flush_and_send(&mut flusher, &registry, 5);
    let times = find(
        &second,
        envoy::DOWNSTREAM_RQ_TIME,
        &[(envoy::HTTP_CONN_MANAGER_PREFIX, PREFIX)],
    );
    let (got, count, sum) = buckets(&times);
    let cumulative: Vec<u64> = got.iter().map(|b| b.1).collect();
    assert_eq!(
        cumulative,
        [0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
        "this interval only"
    );
    assert_eq!((count, sum), (1, 7.0));
}

#[test]
fn only_used_stats_are_sent_with_envoys_names_types_and_labels() {
    let registry = Registry::default();
    let mut flusher = Flusher::new(node());
    // Nothing used yet: an empty message (Envoy sends one too).
    assert!(
        flush_and_send(&mut flusher, &registry, 0)
            .envoy_metrics
            .is_empty()
    );

    // A cluster looked up but never used, one with a refused connection and a proxy's 503
    // (no time), one with a connection and bytes.
    let _idle = registry.upstream("demo/idle|80");
    let db = registry.upstream(DB);
    drop(db.connecting());
    db.record(503, None);
    let web = registry.upstream(WEB);
    let connection = web.connecting();
    connection.stats().received(100);
    connection.stats().sent(40);

    let message = flush_and_send(&mut flusher, &registry, 5);
    let mut got: Vec<(String, MetricType, Labels)> = series(&message)
        .into_iter()
        .map(|(n, t, l, _)| (n, t, l))
        .collect();
    let kinds: Vec<MetricType> = got.iter().map(|s| s.1).collect();
    let mut sorted = kinds.clone();
    sorted.sort_by_key(|t| match t {
        MetricType::Counter => 0,
        MetricType::Gauge => 1,
        _ => 2,
    });
    assert_eq!(kinds, sorted, "counters, then gauges, then histograms");
    got.sort();
    let l = |pairs: &[(&str, &str)]| -> Labels {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    };
    let cluster = |c| l(&[(envoy::CLUSTER_NAME, c)]);
    let mut expected = vec![
        (
            envoy::UPSTREAM_CX_ACTIVE.to_owned(),
            MetricType::Gauge,
            cluster(DB),
        ),
        (
            envoy::UPSTREAM_CX_ACTIVE.to_owned(),
            MetricType::Gauge,
            cluster(WEB),
        ),
        (
            envoy::UPSTREAM_CX_RX_BYTES_TOTAL.to_owned(),
            MetricType::Counter,
            cluster(WEB),
        ),
        (
            envoy::UPSTREAM_CX_TOTAL.to_owned(),
            MetricType::Counter,
            cluster(DB),
        ),
        (
            envoy::UPSTREAM_CX_TOTAL.to_owned(),
            MetricType::Counter,
            cluster(WEB),
        ),
        (
            envoy::UPSTREAM_CX_TX_BYTES_TOTAL.to_owned(),
            MetricType::Counter,
            cluster(WEB),
        ),
        (
            envoy::UPSTREAM_RQ_XX.to_owned(),
            MetricType::Counter,
            l(&[(envoy::RESPONSE_CODE_CLASS, "5"), (envoy::CLUSTER_NAME, DB)]),
        ),
    ];
    expected.sort();
    assert_eq!(got, expected);
    let active = |m: &StreamMetricsMessage, c| {
        find(m, envoy::UPSTREAM_CX_ACTIVE, &[(envoy::CLUSTER_NAME, c)])
            .gauge
            .unwrap()
            .value()
    };
    assert_eq!(active(&message, WEB), 1.0);
    assert_eq!(active(&message, DB), 0.0);
    let bytes = |m: &StreamMetricsMessage, name| counter(m, name, &[(envoy::CLUSTER_NAME, WEB)]);
    assert_eq!(bytes(&message, envoy::UPSTREAM_CX_RX_BYTES_TOTAL), 100.0);
    assert_eq!(bytes(&message, envoy::UPSTREAM_CX_TX_BYTES_TOTAL), 40.0);

    drop(connection);
    let message = flush_and_send(&mut flusher, &registry, 10);
    assert_eq!(
        active(&message, WEB),
        0.0,
        "a gauge is its value, not an increase"
    );
    assert_eq!(bytes(&message, envoy::UPSTREAM_CX_RX_BYTES_TOTAL), 0.0);
}

#[test]
fn a_flush_not_sent_is_carried_into_the_next_once() {
    let registry = Registry::default();
    let web = registry.upstream(WEB);
    let mut flusher = Flusher::new(node());
    web.record(200, Some(Duration::from_millis(30)));
    // Not sent: the stream was down.
    let lost = flusher.flush(&registry.golden(), at(0));
    assert_eq!(
        rq(
            &lost.message,
            envoy::UPSTREAM_RQ_XX,
            envoy::CLUSTER_NAME,
            WEB,
            "2"
        ),
        1.0
    );

    web.record(200, Some(Duration::from_millis(30)));
    let second = flush_and_send(&mut flusher, &registry, 5);
    assert_eq!(
        rq(
            &second,
            envoy::UPSTREAM_RQ_XX,
            envoy::CLUSTER_NAME,
            WEB,
            "2"
        ),
        2.0
    );
    let times = find(
        &second,
        envoy::UPSTREAM_RQ_TIME,
        &[(envoy::CLUSTER_NAME, WEB)],
    );
    assert_eq!(buckets(&times).1, 2);

    let third = flush_and_send(&mut flusher, &registry, 10);
    assert_eq!(
        rq(&third, envoy::UPSTREAM_RQ_XX, envoy::CLUSTER_NAME, WEB, "2"),
        0.0
    );
}

#[test]
fn a_full_message_leaves_the_rest_for_the_next_flush() {
    let registry = Registry::default();
    // Names long enough that a few hundred clusters pass the size limit.
    let names: Vec<String> = (0..2_000).map(|i| format!("demo/{i:0>200}|80")).collect();
    for name in &names {
        registry
            .upstream(name)
            .record(200, Some(Duration::from_millis(1)));
    }
    let mut flusher = Flusher::new(node());
    let first = flusher.flush(&registry.golden(), at(0));
    assert!(first.left_out > 0);
    assert!(first.message.encoded_len() <= MAX_MESSAGE_BYTES);
    flusher.sent(&first);
    let sent_first = first.message.envoy_metrics.len();

    // The next flush starts with those left out; together, every cluster once.
    let mut counted = 0.0;
    let second = flusher.flush(&registry.golden(), at(5));
    flusher.sent(&second);
    for message in [&first.message, &second.message] {
        for (name, _, _, metric) in series(message) {
            if name == envoy::UPSTREAM_RQ_XX {
                counted += metric.counter.unwrap().value();
            }
        }
    }
    assert!(!second.message.envoy_metrics.is_empty() && sent_first > 0);
    let remaining: f64 = (0..10)
        .map(|i| {
            let flush = flusher.flush(&registry.golden(), at(10 + i));
            flusher.sent(&flush);
            series(&flush.message)
                .into_iter()
                .filter(|s| s.0 == envoy::UPSTREAM_RQ_XX)
                .map(|s| s.3.counter.unwrap().value())
                .sum::<f64>()
        })
        .sum();
    assert_eq!(counted + remaining, names.len() as f64, "each request once");
}

#[test]
fn a_batch_size_bounds_the_families_of_a_message_and_the_rest_follow() {
    let registry = Registry::default();
    for i in 0..5 {
        registry
            .upstream(&format!("demo/s{i}|80"))
            .record(200, Some(Duration::from_millis(1)));
    }
    // A cluster with one request sends 3 families (class counter, connections, times).
    let mut flusher = Flusher::new(node()).with_batch_size(Some(7));
    let mut counted = 0.0;
    for i in 0..3 {
        let flush = flusher.flush(&registry.golden(), at(i));
        assert!(flush.message.envoy_metrics.len() <= 7, "{i}: {flush:?}");
        flusher.sent(&flush);
        counted += series(&flush.message)
            .into_iter()
            .filter(|s| s.0 == envoy::UPSTREAM_RQ_XX)
            .map(|s| s.3.counter.unwrap().value())
            .sum::<f64>();
    }
    assert_eq!(
        counted, 5.0,
        "each cluster's request once, over the flushes"
    );
}

#[test]
fn a_streams_first_message_carries_the_node_and_one_message_waits_at_most() {
    let registry = Registry::default();
    let web = registry.upstream(WEB);
    let outbox = Arc::new(Outbox::new(Flusher::new(node())));
    let mut cx = Context::from_waker(Waker::noop());
    let mut poll = |stream: &mut stream::Outgoing| std::pin::Pin::new(stream).poll_next(&mut cx);

    let mut first = outbox.open();
    assert!(poll(&mut first).is_pending(), "nothing flushed yet");
    web.record(200, None);
    outbox.flush(&registry.golden(), at(0));
    web.record(200, None);
    // Replaces the pending one, covering both requests.
    outbox.flush(&registry.golden(), at(5));
    let Poll::Ready(Some(message)) = poll(&mut first) else {
        panic!("a message");
    };
    assert_eq!(
        message.identifier.clone().unwrap().node.unwrap().id,
        "sidecar~web-0"
    );
    assert_eq!(
        rq(
            &message,
            envoy::UPSTREAM_RQ_XX,
            envoy::CLUSTER_NAME,
            WEB,
            "2"
        ),
        2.0
    );
    assert!(poll(&mut first).is_pending(), "one message for two flushes");

    web.record(200, None);
    outbox.flush(&registry.golden(), at(10));
    let Poll::Ready(Some(message)) = poll(&mut first) else {
        panic!("a message");
    };
    assert!(
        message.identifier.is_none(),
        "the node only on a stream's first message"
    );
    assert_eq!(
        rq(
            &message,
            envoy::UPSTREAM_RQ_XX,
            envoy::CLUSTER_NAME,
            WEB,
            "2"
        ),
        1.0
    );

    // A new stream: the old one ends, the node comes again.
    let mut second = outbox.open();
    assert!(matches!(poll(&mut first), Poll::Ready(None)));
    outbox.flush(&registry.golden(), at(15));
    let Poll::Ready(Some(message)) = poll(&mut second) else {
        panic!("a message");
    };
    assert!(message.identifier.is_some());
    assert_eq!(
        rq(
            &message,
            envoy::UPSTREAM_RQ_XX,
            envoy::CLUSTER_NAME,
            WEB,
            "2"
        ),
        0.0
    );

    // A flush no stream took, then a new stream (a server may refuse it at once): it waits
    // for the next flush, which carries both requests.
    web.record(200, None);
    outbox.flush(&registry.golden(), at(20));
    let mut third = outbox.open();
    assert!(
        poll(&mut third).is_pending(),
        "a flush from before the stream"
    );
    web.record(200, None);
    outbox.flush(&registry.golden(), at(25));
    let Poll::Ready(Some(message)) = poll(&mut third) else {
        panic!("a message");
    };
    assert!(message.identifier.is_some());
    let requests = rq(
        &message,
        envoy::UPSTREAM_RQ_XX,
        envoy::CLUSTER_NAME,
        WEB,
        "2",
    );
    assert_eq!(requests, 2.0);
}

#[test]
fn what_envoys_matcher_leaves_out_is_not_sent() {
    assert!(regex::RegexSet::new(envoy::STATS_INCLUSION).is_ok());
    let registry = Registry::default();
    // A headless Service endpoint's cluster: Envoy's tag extraction would cut its name at the
    // first dot, and the contract's matcher leaves it out.
    registry
        .upstream("demo/db|80|127.0.0.1")
        .record(200, Some(Duration::from_millis(1)));
    registry
        .http_manager("inbound.8080")
        .record(200, Duration::ZERO);
    registry
        .upstream(WEB)
        .record(200, Some(Duration::from_millis(1)));
    let mut flusher = Flusher::new(node());
    let message = flush_and_send(&mut flusher, &registry, 0);
    let subjects: std::collections::BTreeSet<String> = series(&message)
        .into_iter()
        .flat_map(|(_, _, labels, _)| labels)
        .filter(|(name, _)| name != envoy::RESPONSE_CODE_CLASS)
        .map(|(_, value)| value)
        .collect();
    assert_eq!(subjects, [WEB.to_owned()].into());
}
