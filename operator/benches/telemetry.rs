//! Golden metrics collection at 1,000 proxies: the operator's CPU per collection round (every
//! proxy's `StreamMetricsMessage` decoded from the wire, decoded into samples and recorded in
//! the windows), a query over all proxies, and the windows' memory per proxy. The proxies are
//! in-process fakes: each message is what Envoy 1.40 sends for a sidecar with [`CLUSTERS`]
//! clusters and [`LISTENERS`] HTTP connection managers, every series busy.
//!
//! Then the locks: the longest any one lock a push needs is held by a full query, and how long
//! pushes take (waiting for the lock included) while another thread runs full queries back to
//! back for [`CONTENDED`], against the same pushes with no query running.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "benchmark harness"
)]

use std::{
    hint::black_box,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use envoy_types::pb::{
    envoy::service::metrics::v3::StreamMetricsMessage,
    io::prometheus::client::{
        Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
    },
};
use prost::Message;
use switchyard::telemetry::{Limits, Sample, Shards, Snapshot, StoreStats, Subject, decode};
use switchyard_adapters::model::ProxyId;
use switchyard_proxy_config::metrics::{envoy, latency_buckets_millis};

const PROXIES: usize = 1_000;
const CLUSTERS: usize = 20;
const LISTENERS: usize = 4;
/// Envoy's default `stats_flush_interval`: one round per proxy every 5 s.
const FLUSH: Duration = Duration::from_secs(5);
/// Rounds measured: 2 minutes of flushes, so every slot of the fine and mid rings is reused.
const ROUNDS: usize = 24;
/// How long pushes are timed while another thread queries (and again without it).
const CONTENDED: Duration = Duration::from_secs(5);
/// The pause between two timed pushes: about 7,000 pushes a second, each measured.
const PUSH_PAUSE: Duration = Duration::from_micros(100);

// === the design under test: the windows in shards, each behind its own lock, as `Telemetry` holds them ===

struct Windows(Shards);

impl Windows {
    const DESIGN: &str = "shards, each behind its own lock";

    fn new() -> Self {
        Windows(Shards::new(Limits::default()))
    }

    fn record(&self, proxy: &ProxyId, at: Duration, samples: &[Sample]) {
        self.0.record(proxy, at, samples);
    }

    /// A snapshot of every proxy, and the longest any lock was held for it (its acquisition
    /// included): [`Shards::snapshot`], a shard at a time, each shard's part timed.
    fn query(&self, now: Duration, window: Duration) -> (Snapshot, Duration) {
        let mut longest = Duration::ZERO;
        let mut out: Option<Snapshot> = None;
        for shard in 0..self.0.shard_count() {
            let started = Instant::now();
            let part = self.0.snapshot_shard(shard, now, window, |_| true).unwrap();
            longest = longest.max(started.elapsed());
            match out.as_mut() {
                Some(out) => out.merge(part).unwrap(),
                None => out = Some(part),
            }
        }
        (out.unwrap(), longest)
    }

    fn memory_bytes(&self) -> usize {
        self.0.memory_bytes()
    }

    fn stats(&self) -> StoreStats {
        self.0.stats()
    }
}

// === the harness ===

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

/// The `q` quantile (0 to 1) of `v`, sorting it.
fn quantile(v: &mut [Duration], q: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * q).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Pushes every proxy's samples in turn, one every [`PUSH_PAUSE`], for [`CONTENDED`], at times
/// following `from`; how long each push took.
fn time_pushes(
    windows: &Windows,
    proxies: &[ProxyId],
    samples: &[Vec<Sample>],
    from: Duration,
) -> Vec<Duration> {
    let started = Instant::now();
    let mut took = Vec::new();
    for (proxy, samples) in proxies.iter().zip(samples).cycle() {
        let elapsed = started.elapsed();
        if elapsed >= CONTENDED {
            break;
        }
        let t0 = Instant::now();
        windows.record(proxy, from + elapsed, samples);
        took.push(t0.elapsed());
        std::thread::sleep(PUSH_PAUSE);
    }
    took
}

fn report_pushes(what: &str, took: &mut [Duration]) {
    println!(
        "  push {what}: {} pushes, p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        took.len(),
        ms(quantile(took, 0.5)),
        ms(quantile(took, 0.99)),
        ms(quantile(took, 1.0)),
    );
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

    println!("design: {}", Windows::DESIGN);

    let rss_before = rss_bytes();
    let windows = Windows::new();
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
            windows.record(proxy, at, &decoded.samples);
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
    let mut holds = Vec::new();
    let mut requests = 0;
    let (mut snapshot, _) = windows.query(now, Duration::from_secs(60));
    for _ in 0..20 {
        let started = Instant::now();
        let held;
        (snapshot, held) = windows.query(now, Duration::from_secs(60));
        let g = snapshot.query(snapshot.proxies(), |s| matches!(s, Subject::Upstream(_)));
        queries.push(started.elapsed().as_secs_f64());
        holds.push(held);
        requests = g.request_count();
        black_box(g.latency_quantile(0.99));
    }
    println!(
        "snapshot and query, 1 m over all {PROXIES} proxies' clusters ({} series, {requests} requests): {:.2} ms (median of 20)",
        PROXIES * CLUSTERS,
        median(&mut queries) * 1e3
    );
    println!(
        "  the longest any one lock was held by that query: {:.3} ms (median of 20; max {:.3} ms)",
        ms(quantile(&mut holds, 0.5)),
        ms(quantile(&mut holds, 1.0)),
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

    let samples: Vec<Vec<Sample>> = wire
        .iter()
        .map(|bytes| decode(&StreamMetricsMessage::decode(bytes.as_slice()).unwrap()).samples)
        .collect();
    println!(
        "pushes while full queries (1 m, every proxy) run back to back on another thread, {} s, one push every {} µs:",
        CONTENDED.as_secs(),
        PUSH_PAUSE.as_micros()
    );
    let mut alone = time_pushes(&windows, &proxies, &samples, now);
    let stop = AtomicBool::new(false);
    let (mut contended, mut holds, queries) = std::thread::scope(|s| {
        let querying = s.spawn(|| {
            let (mut holds, mut queries) = (Vec::new(), 0);
            let started = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let at = now + CONTENDED + started.elapsed();
                let (snapshot, held) = windows.query(at, Duration::from_secs(60));
                black_box(snapshot);
                holds.push(held);
                queries += 1;
            }
            (holds, queries)
        });
        let took = time_pushes(&windows, &proxies, &samples, now + CONTENDED);
        stop.store(true, Ordering::Relaxed);
        let (holds, queries) = querying.join().unwrap();
        (took, holds, queries)
    });
    report_pushes("with no query running", &mut alone);
    report_pushes(&format!("while {queries} full queries ran"), &mut contended);
    println!(
        "  those queries held one lock at most {:.3} ms (p99 {:.3} ms)",
        ms(quantile(&mut holds, 1.0)),
        ms(quantile(&mut holds, 0.99)),
    );

    let counted = windows.memory_bytes();
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
    println!("store stats: {:?}", windows.stats());
}
