use std::time::Duration;

use envoy_types::pb::{
    envoy::service::metrics::v3::StreamMetricsMessage,
    io::prometheus::client::{
        Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
    },
};
use proptest::prelude::*;
use switchyard_adapters::model::ProxyId;
use switchyard_proxy_config::metrics::{LATENCY_BUCKET_COUNT, LATENCY_BUCKETS_MICROS, envoy};

use super::{
    Golden, Latency, Limits, MAX_FAMILIES, MAX_NAME_BYTES, MAX_SERIES, Sample, StatPrefix,
    StatusClass, Store, Subject, UpstreamCluster, Value, VirtualHost, decode, decode::bucket_of,
    window::SERIES_BYTES,
};

// === fixtures: messages as Envoy 1.40 sends them (see the module doc) ===

/// Everything `store` holds over the `window` ending at `now`, summed: what an answer over
/// every proxy and subject reads ([`Store::snapshot`], then [`Snapshot::query`]).
fn query(store: &Store, now: Duration, window: Duration) -> Golden {
    let snapshot = store.snapshot(now, window, |_| true);
    snapshot.query(snapshot.proxies(), |_| true)
}

fn label(name: &str, value: &str) -> LabelPair {
    LabelPair {
        name: Some(name.to_owned()),
        value: Some(value.to_owned()),
    }
}

fn family(name: &str, r#type: MetricType, metric: Vec<Metric>) -> MetricFamily {
    MetricFamily {
        name: Some(name.to_owned()),
        r#type: Some(r#type as i32),
        metric,
        ..MetricFamily::default()
    }
}

fn counter(labels: Vec<LabelPair>, value: f64) -> Metric {
    Metric {
        label: labels,
        counter: Some(Counter {
            value: Some(value),
            ..Counter::default()
        }),
        timestamp_ms: Some(1_796_589_273_548),
        ..Metric::default()
    }
}

/// Envoy's histogram of `millis` durations: cumulative counts per bound in milliseconds.
fn histogram(labels: Vec<LabelPair>, millis: &[f64]) -> Metric {
    let bucket = LATENCY_BUCKETS_MICROS
        .iter()
        .map(|&micros| {
            let bound = micros as f64 / 1e3;
            Bucket {
                upper_bound: Some(bound),
                cumulative_count: Some(millis.iter().filter(|&&m| m <= bound).count() as u64),
                ..Bucket::default()
            }
        })
        .collect();
    Metric {
        label: labels,
        histogram: Some(Histogram {
            sample_count: Some(millis.len() as u64),
            sample_sum: Some(millis.iter().sum()),
            bucket,
            ..Histogram::default()
        }),
        ..Metric::default()
    }
}

fn cluster(name: &str) -> LabelPair {
    label(envoy::CLUSTER_NAME, name)
}

fn class(digit: &str) -> LabelPair {
    label(envoy::RESPONSE_CODE_CLASS, digit)
}

fn web() -> Subject {
    Subject::Upstream(UpstreamCluster::new("demo/web|80"))
}

fn outbound() -> Subject {
    Subject::Listener(StatPrefix::new("outbound_http"))
}

fn proxy(pod: &str) -> ProxyId {
    ProxyId {
        namespace: "demo".to_owned(),
        pod: pod.to_owned(),
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn requests(subject: Subject, class: StatusClass, n: u64) -> Sample {
    Sample {
        subject,
        value: Value::Requests(class, n),
    }
}

// === decode ===

#[test]
fn decodes_what_envoy_sends() {
    let message = StreamMetricsMessage {
        identifier: None,
        envoy_metrics: vec![
            family(
                envoy::UPSTREAM_RQ_XX,
                MetricType::Counter,
                vec![
                    counter(vec![class("5"), cluster("demo/web|80")], 4.0),
                    counter(vec![class("2"), cluster("demo/web|80")], 36.0),
                ],
            ),
            // Envoy's internal/external split of the same requests: not golden.
            family(
                "cluster.external.upstream_rq_xx",
                MetricType::Counter,
                vec![counter(vec![class("2"), cluster("demo/web|80")], 36.0)],
            ),
            family(
                envoy::UPSTREAM_CX_ACTIVE,
                MetricType::Gauge,
                vec![Metric {
                    label: vec![cluster("demo/web|80")],
                    gauge: Some(Gauge { value: Some(3.0) }),
                    ..Metric::default()
                }],
            ),
            family(
                envoy::UPSTREAM_CX_TX_BYTES_TOTAL,
                MetricType::Counter,
                vec![counter(vec![cluster("demo/web|80")], 5900.0)],
            ),
            family(
                envoy::DOWNSTREAM_RQ_TIME,
                MetricType::Histogram,
                vec![histogram(
                    vec![label(envoy::HTTP_CONN_MANAGER_PREFIX, "outbound_http")],
                    &[0.0, 0.0, 3.0, 120.0, 20_000.0],
                )],
            ),
        ],
    };
    let decoded = decode(&message);
    assert_eq!(decoded.ignored, 1);
    assert_eq!(decoded.truncated, 0);
    let mut latency = Latency::default();
    for micros in [0, 0, 3_000, 120_000, 20_000_000] {
        latency.observe_micros(micros);
    }
    assert_eq!(
        decoded.samples,
        vec![
            requests(web(), StatusClass::ServerError, 4),
            requests(web(), StatusClass::Success, 36),
            Sample {
                subject: web(),
                value: Value::ConnectionsActive(3)
            },
            Sample {
                subject: web(),
                value: Value::BytesSent(5900)
            },
            Sample {
                subject: outbound(),
                value: Value::Latency(latency)
            },
        ]
    );
    // 20 s is over the last bound: `+Inf`.
    assert_eq!(latency.buckets[LATENCY_BUCKET_COUNT - 1], 1);
}

#[test]
fn malformed_metrics_are_ignored_and_counted() {
    let message = StreamMetricsMessage {
        identifier: None,
        envoy_metrics: vec![
            family(
                envoy::UPSTREAM_RQ_XX,
                MetricType::Counter,
                vec![
                    // No class; class 6; no cluster; an empty cluster; negative; NaN.
                    counter(vec![cluster("a")], 1.0),
                    counter(vec![class("6"), cluster("a")], 1.0),
                    counter(vec![class("2")], 1.0),
                    counter(vec![class("2"), cluster("")], 1.0),
                    counter(vec![class("2"), cluster("a")], -1.0),
                    counter(vec![class("2"), cluster("a")], f64::NAN),
                    // A gauge where a counter belongs.
                    Metric {
                        label: vec![class("2"), cluster("a")],
                        gauge: Some(Gauge { value: Some(1.0) }),
                        ..Metric::default()
                    },
                ],
            ),
            // The right name with the wrong type.
            family(
                envoy::UPSTREAM_RQ_TIME,
                MetricType::Counter,
                vec![counter(vec![cluster("a")], 1.0)],
            ),
            // Cumulative counts that decrease.
            family(
                envoy::UPSTREAM_RQ_TIME,
                MetricType::Histogram,
                vec![Metric {
                    label: vec![cluster("a")],
                    histogram: Some(Histogram {
                        sample_count: Some(2),
                        bucket: vec![
                            Bucket {
                                upper_bound: Some(1.0),
                                cumulative_count: Some(2),
                                ..Bucket::default()
                            },
                            Bucket {
                                upper_bound: Some(2.5),
                                cumulative_count: Some(1),
                                ..Bucket::default()
                            },
                        ],
                        ..Histogram::default()
                    }),
                    ..Metric::default()
                }],
            ),
        ],
    };
    let decoded = decode(&message);
    assert_eq!(decoded.samples, vec![]);
    assert_eq!(decoded.ignored, 9);
}

/// A name of any length was kept per series, so one proxy could pin megabytes of names in the
/// store (the `metrics_push` fuzz target's name bound; its seed `raw-long-name`).
#[test]
fn names_longer_than_the_bound_are_ignored() {
    let longest = "c".repeat(MAX_NAME_BYTES);
    let longer = "c".repeat(MAX_NAME_BYTES + 1);
    let route = |vhost: &str, route: &str| {
        counter(
            vec![
                class("2"),
                label(envoy::VIRTUAL_HOST, vhost),
                label(envoy::ROUTE, route),
            ],
            1.0,
        )
    };
    let message = StreamMetricsMessage {
        identifier: None,
        envoy_metrics: vec![
            family(
                envoy::UPSTREAM_RQ_XX,
                MetricType::Counter,
                vec![
                    counter(vec![class("2"), cluster(&longest)], 1.0),
                    counter(vec![class("2"), cluster(&longer)], 1.0),
                ],
            ),
            family(
                envoy::ROUTE_UPSTREAM_RQ_XX,
                MetricType::Counter,
                vec![
                    route(
                        "inbound|8080",
                        &format!("g__{}", "n".repeat(MAX_NAME_BYTES - 3)),
                    ),
                    route(
                        "inbound|8080",
                        &format!("g__{}", "n".repeat(MAX_NAME_BYTES - 2)),
                    ),
                    route(&longer, "g__n"),
                ],
            ),
        ],
    };
    let decoded = decode(&message);
    assert_eq!(decoded.ignored, 3);
    assert_eq!(
        decoded
            .samples
            .iter()
            .map(|s| &s.subject)
            .collect::<Vec<_>>(),
        [
            &Subject::Upstream(UpstreamCluster::new(longest)),
            &Subject::Route(
                VirtualHost::new("inbound|8080"),
                switchyard_proxy_config::metrics::RouteStatName::new(
                    "g",
                    "n".repeat(MAX_NAME_BYTES - 3)
                )
            ),
        ]
    );
}

#[test]
fn oversized_messages_are_truncated_and_counted() {
    let one = |i: usize| counter(vec![class("2"), cluster(&format!("c{i}"))], 1.0);
    // More families than read: the rest's metrics are counted.
    let many_families = StreamMetricsMessage {
        identifier: None,
        envoy_metrics: (0..MAX_FAMILIES + 3)
            .map(|i| family(envoy::UPSTREAM_RQ_XX, MetricType::Counter, vec![one(i)]))
            .collect(),
    };
    let decoded = decode(&many_families);
    assert_eq!(decoded.samples.len(), MAX_FAMILIES);
    assert_eq!(decoded.truncated, 3);
    // More metrics than read, over two families.
    let many_series = StreamMetricsMessage {
        identifier: None,
        envoy_metrics: vec![
            family(
                envoy::UPSTREAM_RQ_XX,
                MetricType::Counter,
                (0..MAX_SERIES - 1).map(one).collect(),
            ),
            family(
                envoy::UPSTREAM_RQ_XX,
                MetricType::Counter,
                (0..5).map(one).collect(),
            ),
        ],
    };
    let decoded = decode(&many_series);
    assert_eq!(decoded.samples.len(), MAX_SERIES);
    assert_eq!(decoded.truncated, 4);
}

#[test]
fn other_bounds_count_in_the_bucket_that_holds_them() {
    // 0.7 ms is within (0.5, 1] ms; 3 ms within (2.5, 5] ms.
    let message = StreamMetricsMessage {
        identifier: None,
        envoy_metrics: vec![family(
            envoy::UPSTREAM_RQ_TIME,
            MetricType::Histogram,
            vec![Metric {
                label: vec![cluster("a")],
                histogram: Some(Histogram {
                    sample_count: Some(3),
                    bucket: vec![
                        Bucket {
                            upper_bound: Some(0.7),
                            cumulative_count: Some(1),
                            ..Bucket::default()
                        },
                        Bucket {
                            upper_bound: Some(3.0),
                            cumulative_count: Some(3),
                            ..Bucket::default()
                        },
                    ],
                    ..Histogram::default()
                }),
                ..Metric::default()
            }],
        )],
    };
    let decoded = decode(&message);
    let Value::Latency(latency) = decoded.samples[0].value else {
        panic!("{decoded:?}");
    };
    let mut expected = [0; LATENCY_BUCKET_COUNT];
    expected[1] = 1;
    expected[3] = 2;
    assert_eq!(latency.buckets, expected);
}

// === windows ===

#[test]
fn counts_over_each_window_with_an_injected_clock() {
    let mut store = Store::default();
    let p = proxy("web-0");
    // 1 request a second, 2xx, for 10 minutes; every 10th a 5xx.
    for s in 0..600 {
        let class = if s % 10 == 0 {
            StatusClass::ServerError
        } else {
            StatusClass::Success
        };
        store.record(&p, secs(s), &[requests(web(), class, 1)]);
    }
    let now = secs(599) + Duration::from_millis(500);
    let ten = query(&store, now, secs(10));
    assert_eq!((ten.success_count(), ten.failure_count()), (9, 1));
    assert_eq!(ten.window, secs(10));
    assert!((ten.requests_per_second() - 1.0).abs() < 1e-9);
    let minute = query(&store, now, secs(60));
    assert_eq!((minute.success_count(), minute.failure_count()), (54, 6));
    let ten_minutes = query(&store, now, secs(600));
    assert_eq!(ten_minutes.request_count(), 600);
    assert_eq!(ten_minutes.failure_count(), 60);
    // Longer than 10 m answers 10 m.
    assert_eq!(query(&store, now, secs(3600)), ten_minutes);
    // Rounded up: 45 s is 5 ten-second slots, 50 s; 90 s is 2 minutes.
    let rounded = query(&store, now, secs(45));
    assert_eq!((rounded.window, rounded.request_count()), (secs(50), 50));
    let rounded = query(&store, now, secs(90));
    assert_eq!((rounded.window, rounded.request_count()), (secs(120), 120));
    // 3 s: slots 597, 598, 599.
    assert_eq!(query(&store, now, secs(3)).request_count(), 3);
}

#[test]
fn slots_roll_over_and_old_samples_are_excluded() {
    let mut store = Store::default();
    let p = proxy("web-0");
    store.record(&p, secs(5), &[requests(web(), StatusClass::Success, 7)]);
    assert_eq!(query(&store, secs(5), secs(10)).request_count(), 7);
    assert_eq!(query(&store, secs(14), secs(10)).request_count(), 7);
    // 10 s later the slot has left the 10 s window, not the minute.
    assert_eq!(query(&store, secs(15), secs(10)).request_count(), 0);
    assert_eq!(query(&store, secs(15), secs(60)).request_count(), 7);
    // The same ring position, 10 s later: the slot is reused, not added to.
    store.record(&p, secs(15), &[requests(web(), StatusClass::Success, 2)]);
    assert_eq!(query(&store, secs(15), secs(10)).request_count(), 2);
    assert_eq!(query(&store, secs(15), secs(60)).request_count(), 9);
    // A sample older than the fine ring (its slot now holds 15 s) is not counted there, but
    // is in the minute.
    store.record(&p, secs(5), &[requests(web(), StatusClass::Success, 100)]);
    assert_eq!(query(&store, secs(15), secs(10)).request_count(), 2);
    assert_eq!(query(&store, secs(15), secs(60)).request_count(), 109);
    // Ten minutes later, nothing is left.
    assert_eq!(query(&store, secs(700), secs(600)).request_count(), 0);
}

#[test]
fn connections_bytes_and_the_latest_gauge() {
    let mut store = Store::default();
    let value = |value| Sample {
        subject: web(),
        value,
    };
    for (pod, active) in [("web-0", 3), ("web-1", 4)] {
        let p = proxy(pod);
        store.record(
            &p,
            secs(1),
            &[
                value(Value::ConnectionsOpened(5)),
                value(Value::ConnectionsActive(9)),
                value(Value::BytesReceived(100)),
            ],
        );
        store.record(
            &p,
            secs(2),
            &[
                value(Value::ConnectionsActive(active)),
                value(Value::BytesSent(10)),
            ],
        );
    }
    let g = query(&store, secs(2), secs(10));
    assert_eq!(g.connections_opened, 10);
    assert_eq!(g.connections_active, 7);
    assert_eq!((g.bytes_received, g.bytes_sent), (200, 20));
}

/// A proxy that reported a byte count near `u64::MAX` in two slots overflowed the window's sum:
/// a panic with overflow checks, a count that wrapped to nearly nothing without (the
/// `metrics_push` fuzz target's seed `raw-huge-bytes`).
#[test]
fn byte_sums_saturate() {
    let mut store = Store::default();
    for at in [1, 2, 3] {
        store.record(
            &proxy("p"),
            secs(at),
            &[
                Sample {
                    subject: web(),
                    value: Value::BytesReceived(u64::MAX - 1),
                },
                Sample {
                    subject: web(),
                    value: Value::BytesSent(u64::MAX / 2),
                },
            ],
        );
    }
    for window in [secs(10), secs(60), secs(600)] {
        let g = query(&store, secs(3), window);
        assert_eq!((g.bytes_received, g.bytes_sent), (u64::MAX, u64::MAX));
    }
}

#[test]
fn aggregates_over_proxies_and_subjects() {
    let mut store = Store::default();
    let mut latency = Latency::default();
    latency.observe_micros(200);
    for pod in ["web-0", "web-1", "db-0"] {
        store.record(
            &proxy(pod),
            secs(1),
            &[
                requests(web(), StatusClass::Success, 10),
                requests(outbound(), StatusClass::Success, 1),
                Sample {
                    subject: web(),
                    value: Value::Latency(latency),
                },
            ],
        );
    }
    let workload = [proxy("web-0"), proxy("web-1"), proxy("gone")];
    let g = store
        .snapshot(secs(1), secs(10), |p| workload.contains(p))
        .query(&workload, |s| *s == web());
    assert_eq!(g.request_count(), 20);
    assert_eq!(g.latency.count(), 2);
    let webs = store.snapshot(secs(1), secs(10), |p| p.pod.starts_with("web"));
    let g = webs.query(webs.proxies(), |s| *s == web());
    assert_eq!(g.request_count(), 20);
    let g = query(&store, secs(1), secs(10));
    assert_eq!(g.request_count(), 33);
}

#[test]
fn caps_eviction_and_forget() {
    let limits = Limits {
        max_series_per_proxy: 2,
        max_proxies: 2,
        ..Limits::default()
    };
    let mut store = Store::new(limits);
    let a = |i: u32| {
        requests(
            Subject::Upstream(UpstreamCluster::new(format!("c{i}"))),
            StatusClass::Success,
            1,
        )
    };
    store.record(&proxy("p0"), secs(1), &[a(0), a(1), a(2), a(3)]);
    assert_eq!(store.stats().dropped_series_samples, 2);
    // Nothing samples create no series.
    store.record(
        &proxy("p1"),
        secs(1),
        &[requests(web(), StatusClass::Success, 0)],
    );
    store.record(&proxy("p1"), secs(1), &[a(0)]);
    store.record(&proxy("p2"), secs(1), &[a(0)]);
    assert_eq!(store.stats().dropped_proxy_records, 1);
    assert_eq!(store.proxies(), 2);
    assert_eq!(query(&store, secs(1), secs(10)).request_count(), 3);
    // p1 keeps reporting; p0 falls silent and is evicted after 10 m, on a record.
    store.record(&proxy("p1"), secs(500), &[a(0)]);
    store.record(&proxy("p1"), secs(602), &[a(0)]);
    assert_eq!(store.proxies(), 1);
    assert_eq!(store.stats().evicted_proxies, 1);
    store.forget(&proxy("p1"));
    assert_eq!(store.proxies(), 0);
    assert_eq!(
        query(&store, secs(602), secs(600)),
        Golden {
            window: secs(600),
            ..Golden::default()
        }
    );
}

#[test]
fn memory_is_counted_per_series() {
    let mut store = Store::default();
    store.record(
        &proxy("p0"),
        secs(1),
        &[requests(web(), StatusClass::Success, 1)],
    );
    let one = store.memory_bytes();
    assert!(one > SERIES_BYTES, "{one}");
    // The series' slots dominate: 26 slots of 112 bytes.
    assert_eq!(SERIES_BYTES, 26 * 112);
}

#[test]
fn quantiles_interpolate_within_the_bucket() {
    let mut g = Golden::default();
    // 100 durations in (1, 2.5] ms: the median is halfway, 1.75 ms.
    g.latency.buckets[2] = 100;
    assert_eq!(g.latency_quantile(0.5), Some(Duration::from_micros(1_750)));
    assert_eq!(g.latency_quantile(1.0), Some(Duration::from_micros(2_500)));
    // One in +Inf: the 100th percentile answers the last bound.
    g.latency.buckets[LATENCY_BUCKET_COUNT - 1] = 1;
    assert_eq!(g.latency_quantile(1.0), Some(Duration::from_secs(10)));
    assert_eq!(Golden::default().latency_quantile(0.5), None);
}

proptest! {
    /// Percentiles of known durations land in the bucket of the true percentile (Prometheus'
    /// rule: within one bucket of the truth).
    #[test]
    fn quantiles_within_one_bucket(
        micros in proptest::collection::vec(0u64..12_000_000, 1..400),
        q in prop::sample::select(vec![0.5, 0.9, 0.95, 0.99]),
    ) {
        let mut store = Store::default();
        let mut latency = Latency::default();
        for &m in &micros {
            latency.observe_micros(m);
        }
        store.record(&proxy("p"), secs(1), &[Sample { subject: web(), value: Value::Latency(latency) }]);
        let g = query(&store, secs(1), secs(60));
        let estimate = g.latency_quantile(q).unwrap();
        let mut sorted = micros.clone();
        sorted.sort_unstable();
        // The true quantile: the smallest value with at least q × n values at or below it.
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        let truth = sorted[rank - 1];
        let estimate_bucket = bucket_of(u64::try_from(estimate.as_micros()).unwrap());
        let truth_bucket = bucket_of(truth).min(LATENCY_BUCKETS_MICROS.len() - 1);
        prop_assert!(
            estimate_bucket.abs_diff(truth_bucket) <= 1,
            "q {q}: estimate {estimate:?} (bucket {estimate_bucket}), truth {truth} µs (bucket {truth_bucket})"
        );
    }
}

#[test]
fn decodes_route_stats_of_the_mesh_and_ignores_others() {
    use switchyard_proxy_config::metrics::RouteStatName;
    let books = RouteStatName::new("web.routes", "books");
    let vhost = || label(envoy::VIRTUAL_HOST, "inbound|8080");
    let route = |prefix: &str| label(envoy::ROUTE, prefix);
    let message = StreamMetricsMessage {
        identifier: None,
        envoy_metrics: vec![
            family(
                envoy::ROUTE_UPSTREAM_RQ_XX,
                MetricType::Counter,
                vec![
                    counter(vec![class("5"), vhost(), route(&books.to_string())], 4.0),
                    // Not a route name the mesh writes: another's stats.
                    counter(vec![class("2"), vhost(), route("web.routes")], 1.0),
                    counter(vec![class("2"), vhost()], 1.0),
                ],
            ),
            family(
                envoy::ROUTE_UPSTREAM_RQ_TIME,
                MetricType::Histogram,
                vec![histogram(
                    vec![vhost(), route(&books.to_string())],
                    &[120.0],
                )],
            ),
        ],
    };
    let decoded = decode(&message);
    let subject = Subject::Route(super::VirtualHost::new("inbound|8080"), books);
    assert_eq!(decoded.ignored, 2, "{decoded:?}");
    assert_eq!(
        decoded.samples[0],
        Sample {
            subject: subject.clone(),
            value: Value::Requests(StatusClass::ServerError, 4),
        }
    );
    let Value::Latency(latency) = decoded.samples[1].value else {
        panic!("{decoded:?}");
    };
    assert_eq!(decoded.samples[1].subject, subject);
    assert_eq!(latency.buckets[8], 1, "{latency:?}");
}

#[test]
fn without_subtracts_a_part_of_the_same_traffic() {
    let mut all = Golden {
        requests: [0, 10, 0, 1, 5],
        connections_active: 3,
        ..Golden::default()
    };
    all.latency.buckets[2] = 11;
    all.latency.buckets[8] = 5;
    let mut part = Golden {
        requests: [0, 4, 0, 2, 5],
        ..Golden::default()
    };
    part.latency.buckets[8] = 5;
    part.latency.buckets[2] = 1;
    let rest = all.without(&part);
    // Never below zero.
    assert_eq!(rest.requests, [0, 6, 0, 0, 0]);
    assert_eq!(rest.latency.count(), 10);
    assert_eq!(rest.connections_active, 3);
}

/// Totals over counts near `u64::MAX` (another replica's JSON may hold any) saturate: they
/// wrapped (or panicked where overflow is checked, as in these tests).
#[test]
fn totals_saturate_instead_of_wrapping() {
    let mut latency = Latency::default();
    latency.buckets[0] = u64::MAX;
    latency.buckets[1] = 2;
    let golden = Golden {
        window: Duration::from_secs(10),
        requests: [u64::MAX, 1, 0, 0, 3],
        latency,
        ..Golden::default()
    };
    assert_eq!(golden.success_count(), u64::MAX);
    assert_eq!(golden.failure_count(), 3);
    assert_eq!(golden.request_count(), u64::MAX);
    assert_eq!(golden.latency.count(), u64::MAX);
    // Every rank falls in the first bucket, which holds nearly all of them.
    let p99 = golden.latency_quantile(0.99).expect("requests");
    assert!(
        p99 <= Duration::from_micros(LATENCY_BUCKETS_MICROS[0]),
        "{p99:?}"
    );
}
