//! Golden metrics collection at 1,000 proxies: the operator's CPU per collection round (every
//! proxy's `StreamMetricsMessage` decoded from the wire, decoded into samples and recorded in
//! the windows), a query over all proxies, and the windows' memory per proxy. The proxies are
//! in-process fakes: each message is what Envoy 1.40 sends for a sidecar with [`CLUSTERS`]
//! clusters and [`LISTENERS`] HTTP connection managers, every series busy.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "benchmark harness"
)]

use std::{
    hint::black_box,
    time::{Duration, Instant},
};

use envoy_types::pb::{
    envoy::service::metrics::v3::StreamMetricsMessage,
    io::prometheus::client::{
        Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
    },
};
use prost::Message;
use switchyard::telemetry::{Store, Subject, decode};
use switchyard_adapters::model::ProxyId;
use switchyard_proxy_config::metrics::{envoy, latency_buckets_millis};

const PROXIES: usize = 1_000;
const CLUSTERS: usize = 20;
const LISTENERS: usize = 4;
/// Envoy's default `stats_flush_interval`: one round per proxy every 5 s.
const FLUSH: Duration = Duration::from_secs(5);
/// Rounds measured: 2 minutes of flushes, so every slot of the fine and mid rings is reused.
const ROUNDS: usize = 24;

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

fn counter(labels: Vec<LabelPair>, value: f64, ts: i64) -> Metric {
    Metric {
        label: labels,
        counter: Some(Counter {
            value: Some(value),
            ..Counter::default()
        }),
        timestamp_ms: Some(ts),
        ..Metric::default()
    }
}

fn histogram(labels: Vec<LabelPair>, seed: u64, ts: i64) -> Metric {
    // A plausible spread: most requests within a few ms, a tail.
    let mut cumulative = 0;
    let bucket: Vec<Bucket> = latency_buckets_millis()
        .enumerate()
        .map(|(i, bound)| {
            cumulative += (seed + i as u64 * 7) % 40 + if i < 5 { 100 } else { 0 };
            Bucket {
                upper_bound: Some(bound),
                cumulative_count: Some(cumulative),
                ..Bucket::default()
            }
        })
        .collect();
    Metric {
        label: labels,
        histogram: Some(Histogram {
            sample_count: Some(cumulative + 3),
            sample_sum: Some(cumulative as f64 * 4.2),
            bucket,
            ..Histogram::default()
        }),
        timestamp_ms: Some(ts),
        ..Metric::default()
    }
}

/// One sidecar's flush, as Envoy sends it (one family per name, every series in it).
fn message(proxy: usize) -> StreamMetricsMessage {
    let ts = 1_796_589_273_548;
    let clusters: Vec<String> = (0..CLUSTERS)
        .map(|c| {
            format!(
                "ns-{}/svc-{}|8080",
                (proxy + c) % 50,
                (proxy * 7 + c) % 1000
            )
        })
        .collect();
    let listeners: Vec<String> = (0..LISTENERS)
        .map(|l| {
            if l == 0 {
                "outbound_http".to_owned()
            } else {
                format!("inbound_{}", 8080 + l)
            }
        })
        .collect();
    let per_cluster = |f: &dyn Fn(&str, usize) -> Metric| {
        clusters
            .iter()
            .enumerate()
            .map(|(i, c)| f(c, i))
            .collect::<Vec<_>>()
    };
    let seed = proxy as u64;
    let mut families = vec![
        family(
            envoy::UPSTREAM_RQ_XX,
            MetricType::Counter,
            clusters
                .iter()
                .flat_map(|c| {
                    (1..=5).map(move |class| {
                        counter(
                            vec![
                                label(envoy::RESPONSE_CODE_CLASS, &class.to_string()),
                                label(envoy::CLUSTER_NAME, c),
                            ],
                            (seed % 13 + class) as f64,
                            ts,
                        )
                    })
                })
                .collect(),
        ),
        family(
            envoy::UPSTREAM_RQ_TIME,
            MetricType::Histogram,
            per_cluster(&|c, i| {
                histogram(vec![label(envoy::CLUSTER_NAME, c)], seed + i as u64, ts)
            }),
        ),
        family(
            envoy::UPSTREAM_CX_ACTIVE,
            MetricType::Gauge,
            per_cluster(&|c, i| Metric {
                label: vec![label(envoy::CLUSTER_NAME, c)],
                gauge: Some(Gauge {
                    value: Some((i % 4) as f64),
                }),
                timestamp_ms: Some(ts),
                ..Metric::default()
            }),
        ),
    ];
    for name in [
        envoy::UPSTREAM_CX_TOTAL,
        envoy::UPSTREAM_CX_RX_BYTES_TOTAL,
        envoy::UPSTREAM_CX_TX_BYTES_TOTAL,
    ] {
        families.push(family(
            name,
            MetricType::Counter,
            per_cluster(&|c, i| {
                counter(
                    vec![label(envoy::CLUSTER_NAME, c)],
                    (1 + i * 100) as f64,
                    ts,
                )
            }),
        ));
    }
    families.push(family(
        envoy::DOWNSTREAM_RQ_XX,
        MetricType::Counter,
        listeners
            .iter()
            .flat_map(|l| {
                (1..=5).map(move |class| {
                    counter(
                        vec![
                            label(envoy::RESPONSE_CODE_CLASS, &class.to_string()),
                            label(envoy::HTTP_CONN_MANAGER_PREFIX, l),
                        ],
                        (seed % 11 + class) as f64,
                        ts,
                    )
                })
            })
            .collect(),
    ));
    families.push(family(
        envoy::DOWNSTREAM_RQ_TIME,
        MetricType::Histogram,
        listeners
            .iter()
            .enumerate()
            .map(|(i, l)| {
                histogram(
                    vec![label(envoy::HTTP_CONN_MANAGER_PREFIX, l)],
                    seed + i as u64,
                    ts,
                )
            })
            .collect(),
    ));
    StreamMetricsMessage {
        identifier: None,
        envoy_metrics: families,
    }
}

fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<usize>().ok()
        })
        .map_or(0, |kb| kb * 1024)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let proxies: Vec<ProxyId> = (0..PROXIES)
        .map(|i| ProxyId {
            namespace: format!("ns-{}", i % 50),
            pod: format!("web-{i}-7c9f8d6b5-x2k4q"),
        })
        .collect();
    let wire: Vec<Vec<u8>> = (0..PROXIES).map(|i| message(i).encode_to_vec()).collect();
    let sample = decode(&message(0));
    let metrics: usize = message(0)
        .envoy_metrics
        .iter()
        .map(|f| f.metric.len())
        .sum();
    println!(
        "=== golden metrics collection: {PROXIES} proxies, each {CLUSTERS} clusters + {LISTENERS} listeners: {metrics} metrics, {} samples, {} bytes on the wire per flush ===",
        sample.samples.len(),
        wire[0].len()
    );

    let rss_before = rss_bytes();
    let mut store = Store::default();
    let (mut wire_decode, mut golden_decode, mut record, mut round) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for r in 0..ROUNDS {
        let at = FLUSH * (r as u32 + 1);
        let (mut t_wire, mut t_golden, mut t_record) =
            (Duration::ZERO, Duration::ZERO, Duration::ZERO);
        let started = Instant::now();
        for (proxy, bytes) in proxies.iter().zip(&wire) {
            let t0 = Instant::now();
            let message = StreamMetricsMessage::decode(bytes.as_slice()).unwrap();
            let t1 = Instant::now();
            let decoded = decode(&message);
            let t2 = Instant::now();
            store.record(proxy, at, &decoded.samples);
            let t3 = Instant::now();
            t_wire += t1 - t0;
            t_golden += t2 - t1;
            t_record += t3 - t2;
            black_box(&message);
        }
        round.push(started.elapsed().as_secs_f64());
        wire_decode.push(t_wire.as_secs_f64());
        golden_decode.push(t_golden.as_secs_f64());
        record.push(t_record.as_secs_f64());
    }
    let rss_after = rss_bytes();
    let per_proxy_us = |s: f64| s * 1e6 / PROXIES as f64;
    let (round_m, wire_m, golden_m, record_m) = (
        median(&mut round),
        median(&mut wire_decode),
        median(&mut golden_decode),
        median(&mut record),
    );
    println!(
        "collection round (median of {ROUNDS}, one flush of every proxy): {:.2} ms, {:.1} µs per proxy",
        round_m * 1e3,
        per_proxy_us(round_m)
    );
    println!(
        "  protobuf decode {:.1} µs + golden decode {:.1} µs + record {:.1} µs per proxy",
        per_proxy_us(wire_m),
        per_proxy_us(golden_m),
        per_proxy_us(record_m)
    );
    println!(
        "  at a {} s flush interval: {:.2} % of one core",
        FLUSH.as_secs(),
        round_m / FLUSH.as_secs_f64() * 100.0
    );

    let now = FLUSH * ROUNDS as u32;
    // As an answer reads: a snapshot of the window, then sums over it.
    let mut queries = Vec::new();
    let mut requests = 0;
    let mut snapshot = store.snapshot(now, Duration::from_secs(60), |_| true);
    for _ in 0..20 {
        let started = Instant::now();
        snapshot = store.snapshot(now, Duration::from_secs(60), |_| true);
        let g = snapshot.query(snapshot.proxies(), |s| matches!(s, Subject::Upstream(_)));
        queries.push(started.elapsed().as_secs_f64());
        requests = g.request_count();
        black_box(g.latency_quantile(0.99));
    }
    println!(
        "snapshot and query, 1 m over all {PROXIES} proxies' clusters ({} series, {requests} requests): {:.2} ms (median of 20)",
        PROXIES * CLUSTERS,
        median(&mut queries) * 1e3
    );
    let workload: Vec<ProxyId> = proxies.iter().take(10).cloned().collect();
    let started = Instant::now();
    for _ in 0..1_000 {
        black_box(snapshot.query(&workload, |s| matches!(s, Subject::Listener(_))));
    }
    println!(
        "query of that snapshot, one workload of 10 proxies' listeners: {:.1} µs",
        started.elapsed().as_secs_f64() * 1e6 / 1_000.0
    );

    let counted = store.memory_bytes();
    println!(
        "windows memory: {:.1} KB per proxy counted from the data structures ({} series × {} B of slots + maps and names), {:.1} MB for {PROXIES}",
        counted as f64 / PROXIES as f64 / 1e3,
        CLUSTERS + LISTENERS,
        switchyard::telemetry::window::SERIES_BYTES,
        counted as f64 / 1e6
    );
    println!(
        "  RSS grew {:.1} MB while recording ({:.1} KB per proxy, allocator and the bench's own buffers included)",
        rss_after.saturating_sub(rss_before) as f64 / 1e6,
        rss_after.saturating_sub(rss_before) as f64 / PROXIES as f64 / 1e3
    );
    println!("store stats: {:?}", store.stats());
}
