//! Golden metrics pushes, as a proxy that controls its bytes sends them, through the operator:
//! decoded, recorded for several proxies at times that go forward, stand still, jump and go
//! back, then snapshotted, queried, merged and sent between replicas. Nothing may panic, and:
//! every metric is a sample, ignored or truncated; an accepted histogram keeps its count and
//! never puts a duration below a bound the proxy reported it above; the store keeps no more
//! proxies, series per proxy or bytes than its limits allow, and no name past
//! `MAX_NAME_BYTES`; a window never holds more than was recorded, and exactly that when nothing
//! was dropped, late or saturated; quantiles rise with `q` and stay in the bucket of their
//! rank; merging two halves gives the whole, and a snapshot survives its JSON.
//!
//! Input: a mode byte, then either the raw bytes of one `StreamMetricsMessage` (pushed twice, a
//! second apart), or a few steps
//! that each mutate a real sidecar flush (names, labels, values, histogram shapes, series
//! counts) and push it for one of five proxies at a time relative to the last step's.

#![no_main]

use std::{collections::HashMap, time::Duration};

use envoy_types::pb::{
    envoy::service::metrics::v3::StreamMetricsMessage,
    io::prometheus::client::{Bucket, Histogram, LabelPair, Metric, MetricFamily},
};
use libfuzzer_sys::{
    arbitrary::{Result, Unstructured},
    fuzz_target,
};
use prost::Message;
use switchyard::telemetry::{
    Golden, Limits, MAX_NAME_BYTES, Snapshot, SnapshotError, Store, StoreStats, Subject, Value,
    decode,
    window::{MAX_WINDOW, SERIES_BYTES},
};
use switchyard_adapters::model::ProxyId;
use switchyard_fuzz::{CLUSTERS, LISTENERS, label, metrics_message, route_stat_name};
use switchyard_proxy_config::metrics::{LATENCY_BUCKET_COUNT, LATENCY_BUCKETS_MICROS, envoy};

/// Every name the operator decodes, and one it does not.
const NAMES: [&str; 11] = [
    envoy::UPSTREAM_RQ_XX,
    envoy::UPSTREAM_RQ_TIME,
    envoy::UPSTREAM_CX_TOTAL,
    envoy::UPSTREAM_CX_ACTIVE,
    envoy::UPSTREAM_CX_RX_BYTES_TOTAL,
    envoy::UPSTREAM_CX_TX_BYTES_TOTAL,
    envoy::DOWNSTREAM_RQ_XX,
    envoy::DOWNSTREAM_RQ_TIME,
    envoy::ROUTE_UPSTREAM_RQ_XX,
    envoy::ROUTE_UPSTREAM_RQ_TIME,
    "cluster.upstream_rq_retry",
];

const LABELS: [&str; 5] = [
    envoy::CLUSTER_NAME,
    envoy::RESPONSE_CODE_CLASS,
    envoy::HTTP_CONN_MANAGER_PREFIX,
    envoy::VIRTUAL_HOST,
    envoy::ROUTE,
];

/// Doubles a proxy sends where counts belong: the edges of `whole` numbers, of `u32` slots,
/// of `u64`, and what is not a count at all.
const NUMBERS: [f64; 21] = [
    f64::NAN,
    f64::INFINITY,
    f64::NEG_INFINITY,
    -1.0,
    -0.0,
    0.0,
    0.4,
    0.5,
    1.0,
    2.5,
    4_294_967_295.0,
    4_294_967_296.0,
    1e15,
    9_007_199_254_740_993.0,
    1e19,
    18_446_744_073_709_551_615.0,
    1e300,
    f64::MAX,
    f64::MIN_POSITIVE,
    5e-324,
    -1e300,
];

const COUNTS: [u64; 7] = [
    0,
    1,
    2,
    4_294_967_295,
    4_294_967_296,
    u64::MAX - 1,
    u64::MAX,
];

const WINDOWS: [u64; 10] = [0, 1, 7, 10, 11, 45, 60, 61, 600, 3_600];

const PROXIES: usize = 5;

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let mode = u.arbitrary::<u8>()?;
    let proxies: Vec<ProxyId> = (0..PROXIES)
        .map(|i| ProxyId {
            namespace: "demo".to_owned(),
            pod: format!("web-{i}"),
        })
        .collect();
    if mode & 1 == 0 {
        let Ok(message) = StreamMetricsMessage::decode(u.bytes(u.len())?) else {
            return Ok(());
        };
        // Two flushes a second apart: two slots of every ring but the coarse one.
        let mut h = Harness::new(Limits::default());
        h.push(&proxies[0], Duration::from_secs(1), &message);
        h.push(&proxies[0], Duration::from_secs(2), &message);
        h.check(Duration::from_secs(2), Duration::from_secs(10));
        h.check(Duration::from_secs(2), Duration::from_secs(60));
        h.check_exact();
        return Ok(());
    }
    let limits = if u.ratio(1, 4)? {
        Limits::default()
    } else {
        Limits {
            max_series_per_proxy: u.int_in_range(1..=12)?,
            max_proxies: u.int_in_range(1..=PROXIES)?,
            silence: Duration::from_secs(*u.choose(&[5, 60, 600])?),
        }
    };
    let mut h = Harness::new(limits);
    let mut at = Duration::from_millis(u.int_in_range(0..=120_000)?);
    let mut steps = 0;
    while steps < 8 && !u.is_empty() {
        steps += 1;
        at = match u.choose_index(8)? {
            // Standing still: two flushes within one slot.
            0 => at,
            // Back in time: a late message, or a clock that is not monotonic.
            1 => at.saturating_sub(Duration::from_millis(u.int_in_range(1..=700_000)?)),
            // A long silence.
            2 => at + Duration::from_millis(u.int_in_range(1..=2_000_000)?),
            // The flush interval, more or less.
            _ => at + Duration::from_millis(u.int_in_range(0..=6_000)?),
        };
        let proxy = &proxies[u.choose_index(PROXIES)?];
        let mut message = metrics_message(u.int_in_range(0..=50)?);
        for _ in 0..u.int_in_range(0..=6)? {
            mutate(u, &mut message)?;
        }
        h.push(proxy, at, &message);
        let window = Duration::from_secs(*u.choose(&WINDOWS)?);
        h.check(at, window);
    }
    h.check_exact();
    Ok(())
}

// === mutations ===

fn number(u: &mut Unstructured<'_>) -> Result<f64> {
    if u.ratio(3, 4)? {
        Ok(*u.choose(&NUMBERS)?)
    } else {
        u.arbitrary()
    }
}

fn count(u: &mut Unstructured<'_>) -> Result<u64> {
    if u.ratio(3, 4)? {
        Ok(*u.choose(&COUNTS)?)
    } else {
        u.arbitrary()
    }
}

/// A label value: a real one, one at the name bound, or anything.
fn value(u: &mut Unstructured<'_>) -> Result<String> {
    Ok(match u.choose_index(6)? {
        0 => (*u.choose(&CLUSTERS)?).to_owned(),
        1 => (*u.choose(&LISTENERS)?).to_owned(),
        2 => route_stat_name(),
        3 => u.int_in_range(0..=6u8)?.to_string(),
        4 => "n".repeat(MAX_NAME_BYTES - 2 + u.choose_index(5)?),
        _ => u.arbitrary()?,
    })
}

fn metric<'m>(
    u: &mut Unstructured<'_>,
    message: &'m mut StreamMetricsMessage,
) -> Result<Option<&'m mut Metric>> {
    if message.envoy_metrics.is_empty() {
        return Ok(None);
    }
    let f = u.choose_index(message.envoy_metrics.len())?;
    let family = &mut message.envoy_metrics[f];
    if family.metric.is_empty() {
        return Ok(None);
    }
    let m = u.choose_index(family.metric.len())?;
    Ok(Some(&mut family.metric[m]))
}

fn family<'m>(
    u: &mut Unstructured<'_>,
    message: &'m mut StreamMetricsMessage,
) -> Result<Option<&'m mut MetricFamily>> {
    if message.envoy_metrics.is_empty() {
        return Ok(None);
    }
    let f = u.choose_index(message.envoy_metrics.len())?;
    Ok(Some(&mut message.envoy_metrics[f]))
}

fn mutate(u: &mut Unstructured<'_>, message: &mut StreamMetricsMessage) -> Result<()> {
    match u.choose_index(10)? {
        0 => {
            if let Some(f) = family(u, message)? {
                f.name = Some(if u.ratio(3, 4)? {
                    (*u.choose(&NAMES)?).to_owned()
                } else {
                    u.arbitrary()?
                });
            }
        }
        1 => {
            if let Some(f) = family(u, message)? {
                f.r#type = if u.ratio(1, 8)? {
                    None
                } else {
                    Some(u.int_in_range(-1..=5)?)
                };
            }
        }
        2 => {
            if let Some(m) = metric(u, message)? {
                labels(u, &mut m.label)?;
            }
        }
        3 => {
            if let Some(m) = metric(u, message)? {
                let v = number(u)?;
                match u.choose_index(3)? {
                    0 => m.counter.get_or_insert_default().value = Some(v),
                    1 => m.gauge.get_or_insert_default().value = Some(v),
                    _ => {
                        m.counter = None;
                        m.gauge = None;
                    }
                }
            }
        }
        4 | 5 => {
            if let Some(m) = metric(u, message)? {
                histogram(u, m.histogram.get_or_insert_default())?;
            }
        }
        6 => {
            // More series: copies of a metric under new names, past a proxy's series limit.
            if let Some(f) = family(u, message)?
                && let Some(template) = f.metric.first().cloned()
            {
                let name = u.choose(&LABELS)?;
                for i in 0..u.int_in_range(1..=40)? {
                    let mut m = template.clone();
                    for l in &mut m.label {
                        if l.name() == *name {
                            l.value = Some(format!("demo/svc-{i}|80"));
                        }
                    }
                    f.metric.push(m);
                }
            }
        }
        7 => {
            // A family twice, or gone.
            if !message.envoy_metrics.is_empty() {
                let i = u.choose_index(message.envoy_metrics.len())?;
                if u.arbitrary()? {
                    let copy = message.envoy_metrics[i].clone();
                    message.envoy_metrics.push(copy);
                } else {
                    message.envoy_metrics.remove(i);
                }
            }
        }
        8 => {
            // A metric twice (counted twice), or gone.
            if let Some(f) = family(u, message)?
                && !f.metric.is_empty()
            {
                let i = u.choose_index(f.metric.len())?;
                if u.arbitrary()? {
                    let copy = f.metric[i].clone();
                    f.metric.push(copy);
                } else {
                    f.metric.remove(i);
                }
            }
        }
        _ => {
            if let Some(m) = metric(u, message)? {
                m.histogram = None;
            }
        }
    }
    Ok(())
}

fn labels(u: &mut Unstructured<'_>, labels: &mut Vec<LabelPair>) -> Result<()> {
    match u.choose_index(4)? {
        0 if !labels.is_empty() => {
            let i = u.choose_index(labels.len())?;
            labels[i].value = if u.ratio(1, 8)? {
                None
            } else {
                Some(value(u)?)
            };
        }
        1 if !labels.is_empty() => {
            let i = u.choose_index(labels.len())?;
            labels.remove(i);
        }
        2 => {
            // Another label, first: the decoder reads the first of a name.
            let name = if u.ratio(3, 4)? {
                (*u.choose(&LABELS)?).to_owned()
            } else {
                u.arbitrary()?
            };
            labels.insert(0, label(&name, &value(u)?));
        }
        _ => {
            if !labels.is_empty() {
                let i = u.choose_index(labels.len())?;
                labels[i].name = Some((*u.choose(&LABELS)?).to_owned());
            }
        }
    }
    Ok(())
}

fn histogram(u: &mut Unstructured<'_>, h: &mut Histogram) -> Result<()> {
    match u.choose_index(8)? {
        0 => h.bucket.reverse(),
        1 if h.bucket.len() >= 2 => {
            let a = u.choose_index(h.bucket.len())?;
            let b = u.choose_index(h.bucket.len())?;
            h.bucket.swap(a, b);
        }
        2 if !h.bucket.is_empty() => {
            let i = u.choose_index(h.bucket.len())?;
            h.bucket[i].upper_bound = Some(number(u)?);
        }
        3 if !h.bucket.is_empty() => {
            let i = u.choose_index(h.bucket.len())?;
            h.bucket[i].cumulative_count = Some(count(u)?);
        }
        4 => h.sample_count = Some(count(u)?),
        5 if !h.bucket.is_empty() => {
            let i = u.choose_index(h.bucket.len())?;
            h.bucket.remove(i);
        }
        6 => {
            let at = u.choose_index(h.bucket.len() + 1)?;
            h.bucket.insert(
                at,
                Bucket {
                    upper_bound: Some(number(u)?),
                    cumulative_count: Some(count(u)?),
                    ..Bucket::default()
                },
            );
        }
        _ => {
            // One shape the proxy may pick: anything.
            h.bucket.clear();
            for _ in 0..u.int_in_range(0..=20)? {
                h.bucket.push(Bucket {
                    upper_bound: Some(number(u)?),
                    cumulative_count: Some(count(u)?),
                    ..Bucket::default()
                });
            }
            h.sample_count = Some(count(u)?);
        }
    }
    Ok(())
}

// === the model ===

/// What was recorded of one series, summed without bounds.
#[derive(Default)]
struct Totals {
    requests: [u128; 5],
    latency: [u128; LATENCY_BUCKET_COUNT],
    opened: u128,
    received: u128,
    sent: u128,
    /// Every gauge recorded, as a slot keeps it.
    gauges: Vec<u64>,
}

struct Harness {
    store: Store,
    limits: Limits,
    recorded: HashMap<(ProxyId, Subject), Totals>,
    stats: StoreStats,
    first: Option<Duration>,
    last: Duration,
    in_order: bool,
}

impl Harness {
    fn new(limits: Limits) -> Self {
        Harness {
            store: Store::new(limits),
            limits,
            recorded: HashMap::new(),
            stats: StoreStats::default(),
            first: None,
            last: Duration::ZERO,
            in_order: true,
        }
    }

    fn push(&mut self, proxy: &ProxyId, at: Duration, message: &StreamMetricsMessage) {
        let decoded = decode(message);
        let metrics: usize = message.envoy_metrics.iter().map(|f| f.metric.len()).sum();
        assert_eq!(
            decoded.samples.len() as u64 + decoded.ignored + decoded.truncated,
            metrics as u64,
            "every metric is a sample, ignored or truncated"
        );
        for sample in &decoded.samples {
            check_name(&sample.subject);
        }
        check_histograms(message);

        if self.first.is_some() && at < self.last {
            self.in_order = false;
        }
        self.first.get_or_insert(at);
        self.last = at;
        self.store.record(proxy, at, &decoded.samples);
        for sample in &decoded.samples {
            let t = self
                .recorded
                .entry((proxy.clone(), sample.subject.clone()))
                .or_default();
            match sample.value {
                Value::Requests(class, n) => t.requests[class.index()] += u128::from(n),
                Value::Latency(l) => {
                    for (sum, &n) in t.latency.iter_mut().zip(&l.buckets) {
                        *sum += u128::from(n);
                    }
                }
                Value::ConnectionsOpened(n) => t.opened += u128::from(n),
                Value::ConnectionsActive(n) => {
                    // A slot holds a gauge below its "none" marker.
                    t.gauges.push(n.min(u64::from(u32::MAX - 1)));
                }
                Value::BytesReceived(n) => t.received += u128::from(n),
                Value::BytesSent(n) => t.sent += u128::from(n),
            }
        }
        let stats = self.store.stats();
        assert!(
            stats.dropped_series_samples >= self.stats.dropped_series_samples
                && stats.dropped_proxy_records >= self.stats.dropped_proxy_records
                && stats.evicted_proxies >= self.stats.evicted_proxies,
            "stats went back: {:?} then {stats:?}",
            self.stats
        );
        self.stats = stats;
    }

    /// The store's bounds, and a snapshot of `window` at `now`: what it holds, its queries, its
    /// merges and its JSON.
    fn check(&self, now: Duration, window: Duration) {
        assert!(self.store.proxies() <= self.limits.max_proxies);
        let memory = self.store.memory_bytes();
        let bound = memory_bound(&self.limits, self.store.proxies());
        assert!(memory <= bound, "{memory} bytes held, more than {bound}");

        let all = self.store.snapshot(now, window, |_| true);
        assert!(all.window() >= window.min(MAX_WINDOW).max(Duration::from_secs(1)));
        assert!(all.window() <= MAX_WINDOW);
        assert!(all.proxies().count() <= self.limits.max_proxies);
        for proxy in all.proxies() {
            let subjects: Vec<&Subject> = all.subjects(proxy).collect();
            assert!(
                subjects.len() <= self.limits.max_series_per_proxy,
                "{proxy}: {} series, limit {}",
                subjects.len(),
                self.limits.max_series_per_proxy
            );
            for subject in subjects {
                check_name(subject);
                let g = all.query([proxy], |s| s == subject);
                let Some(t) = self.recorded.get(&(proxy.clone(), subject.clone())) else {
                    panic!("{proxy}: {subject:?} was never recorded");
                };
                check_within(&g, t, proxy, subject);
            }
        }
        let golden = all.query(all.proxies(), |_| true);
        check_golden(&golden);

        // Two halves of the proxies merged are the whole.
        let even = |p: &ProxyId| p.pod.ends_with(['0', '2', '4']);
        let mut halves = self.store.snapshot(now, window, even);
        let odd = self.store.snapshot(now, window, |p| !even(p));
        halves.merge(odd).expect("the same window");
        assert_eq!(halves, all, "two halves merged differ from the whole");

        // A proxy seen by two replicas: counts add up, the gauge stays.
        let mut twice = all.clone();
        twice.merge(all.clone()).expect("the same window");
        let doubled = twice.query(twice.proxies(), |_| true);
        for (d, g) in doubled.requests.iter().zip(&golden.requests) {
            assert_eq!(*d, g.saturating_mul(2));
        }
        for (d, g) in doubled.latency.buckets.iter().zip(&golden.latency.buckets) {
            assert_eq!(*d, g.saturating_mul(2));
        }
        assert_eq!(doubled.connections_active, golden.connections_active);
        check_golden(&doubled);

        // Windows rounded to other rings do not merge, and leave the snapshot as it was.
        for other in [Duration::from_secs(10), Duration::from_secs(60), MAX_WINDOW] {
            let theirs = self.store.snapshot(now, other, |_| true);
            if theirs.window() != all.window() {
                let mut ours = all.clone();
                assert!(matches!(
                    ours.merge(theirs),
                    Err(SnapshotError::WindowMismatch { .. })
                ));
                assert_eq!(ours, all);
            }
        }

        // What one replica sends another reads back as it was, and never past its cap.
        let json = all.to_json(usize::MAX).expect("no cap");
        assert_eq!(Snapshot::from_json(&json).expect("its own JSON"), all);
        let cap = json.len() / 2;
        match all.to_json(cap) {
            Ok(short) => assert!(short.len() <= cap),
            Err(SnapshotError::TooLarge { limit }) => assert_eq!(limit, cap),
            Err(e) => panic!("{e}"),
        }
    }

    /// With every record in order within 9 minutes, nothing dropped or evicted and no slot
    /// saturated, the 10-minute window at the last record holds exactly what was recorded.
    fn check_exact(&self) {
        let Some(first) = self.first else {
            return;
        };
        let fits_slots = self.recorded.values().all(|t| {
            let slot = u128::from(u32::MAX);
            t.requests.iter().all(|&n| n <= slot)
                && t.latency.iter().all(|&n| n <= slot)
                && t.opened <= slot
                && t.received <= u128::from(u64::MAX)
                && t.sent <= u128::from(u64::MAX)
        });
        if !self.in_order
            || self.last - first > Duration::from_secs(540)
            || self.stats != StoreStats::default()
            || !fits_slots
        {
            return;
        }
        let all = self.store.snapshot(self.last, MAX_WINDOW, |_| true);
        for ((proxy, subject), t) in &self.recorded {
            let g = all.query([proxy], |s| s == subject);
            let held = all.subjects(proxy).any(|s| s == subject);
            let something = t.requests.iter().any(|&n| n > 0)
                || t.latency.iter().any(|&n| n > 0)
                || t.opened > 0
                || t.received > 0
                || t.sent > 0
                || !t.gauges.is_empty();
            assert_eq!(held, something, "{proxy} {subject:?}: held {held}");
            for (g, t) in g.requests.iter().zip(&t.requests) {
                assert_eq!(u128::from(*g), *t, "{proxy} {subject:?}: requests");
            }
            for (g, t) in g.latency.buckets.iter().zip(&t.latency) {
                assert_eq!(u128::from(*g), *t, "{proxy} {subject:?}: latency");
            }
            assert_eq!(u128::from(g.connections_opened), t.opened);
            assert_eq!(u128::from(g.bytes_received), t.received);
            assert_eq!(u128::from(g.bytes_sent), t.sent);
            // The latest gauge in the window: the last recorded (the records are in order).
            assert_eq!(g.connections_active, t.gauges.last().copied().unwrap_or(0));
        }
    }
}

// === invariants ===

fn check_name(subject: &Subject) {
    let names: Vec<&str> = match subject {
        Subject::Upstream(c) => vec![c.as_str()],
        Subject::Listener(p) => vec![p.as_str()],
        Subject::Route(v, r) => vec![v.as_str(), &r.group, &r.name],
    };
    for name in names {
        assert!(
            name.len() <= MAX_NAME_BYTES,
            "a name of {} bytes kept",
            name.len()
        );
    }
}

/// One series' window never holds more than was recorded of it.
fn check_within(g: &Golden, t: &Totals, proxy: &ProxyId, subject: &Subject) {
    let ctx = || format!("{proxy} {subject:?}");
    for (g, t) in g.requests.iter().zip(&t.requests) {
        assert!(u128::from(*g) <= *t, "{}: {g} requests of {t}", ctx());
    }
    for (g, t) in g.latency.buckets.iter().zip(&t.latency) {
        assert!(u128::from(*g) <= *t, "{}: {g} durations of {t}", ctx());
    }
    assert!(u128::from(g.connections_opened) <= t.opened, "{}", ctx());
    assert!(u128::from(g.bytes_received) <= t.received, "{}", ctx());
    assert!(u128::from(g.bytes_sent) <= t.sent, "{}", ctx());
    assert!(
        g.connections_active == 0 || t.gauges.contains(&g.connections_active),
        "{}: gauge {} never recorded",
        ctx(),
        g.connections_active
    );
}

/// What the store's limits let it hold: every map at four buckets an entry at most, every
/// series' slots, and names within the bound (a route keeps two: its virtual host, its group
/// and match).
fn memory_bound(limits: &Limits, proxies: usize) -> usize {
    let entry = |size: usize| 4 * (size + 1) + 16;
    let per_series = SERIES_BYTES + 2 * MAX_NAME_BYTES + entry(size_of::<(Subject, Box<u8>)>());
    let per_proxy = 64 + 128 + limits.max_series_per_proxy * per_series;
    size_of::<Store>()
        + limits.max_proxies * entry(size_of::<ProxyId>() + 128)
        + proxies * per_proxy
}

fn check_golden(g: &Golden) {
    assert_eq!(
        u128::from(g.request_count()),
        g.requests.iter().map(|&n| u128::from(n)).sum::<u128>()
    );
    assert_eq!(g.request_count(), g.success_count() + g.failure_count());
    let rps = g.requests_per_second();
    assert!(rps.is_finite() && rps >= 0.0, "{rps} requests a second");

    let last = Duration::from_micros(LATENCY_BUCKETS_MICROS[LATENCY_BUCKETS_MICROS.len() - 1]);
    let total: u128 = g.latency.buckets.iter().map(|&n| u128::from(n)).sum();
    let mut previous = Duration::ZERO;
    for q in [0.0, 0.001, 0.25, 0.5, 0.9, 0.99, 0.999, 1.0] {
        let Some(d) = g.latency_quantile(q) else {
            assert_eq!(total, 0, "no quantile {q} of {total} durations");
            continue;
        };
        assert!(total > 0, "a quantile of nothing");
        assert!(d <= last, "quantile {q}: {d:?}");
        assert!(d >= previous, "quantile {q}: {d:?}, below {previous:?}");
        previous = d;
        // The bucket the rank falls in: the first with durations that reaches it.
        let rank = q * total as f64;
        let mut cumulative = 0u128;
        let bucket = g.latency.buckets.iter().position(|&n| {
            cumulative += u128::from(n);
            n > 0 && cumulative as f64 >= rank
        });
        let Some(i) = bucket else {
            panic!("quantile {q}: no bucket holds rank {rank}");
        };
        let (lower, upper) = match LATENCY_BUCKETS_MICROS.get(i) {
            Some(&upper) => (
                i.checked_sub(1).map_or(0, |p| LATENCY_BUCKETS_MICROS[p]),
                upper,
            ),
            None => (last.as_micros() as u64, last.as_micros() as u64),
        };
        let slack = Duration::from_micros(1);
        assert!(
            d + slack >= Duration::from_micros(lower) && d <= Duration::from_micros(upper) + slack,
            "quantile {q}: {d:?} outside bucket {i} ({lower}..={upper} µs)"
        );
    }
    for q in [f64::NAN, -0.5, 1.5, f64::INFINITY] {
        assert_eq!(g.latency_quantile(q), None, "quantile {q}");
    }
}

/// Every golden histogram of `message`, decoded alone: a histogram accepted keeps its count,
/// and puts no more durations at or below one of the mesh's bounds than the proxy reported at
/// or below it (rounded to the microsecond, the decoder's resolution).
fn check_histograms(message: &StreamMetricsMessage) {
    for family in &message.envoy_metrics {
        for metric in &family.metric {
            let Some(h) = &metric.histogram else {
                continue;
            };
            let alone = StreamMetricsMessage {
                identifier: None,
                envoy_metrics: vec![MetricFamily {
                    metric: vec![metric.clone()],
                    ..family.clone()
                }],
            };
            let decoded = decode(&alone);
            let Some(Value::Latency(latency)) = decoded.samples.first().map(|s| s.value) else {
                continue;
            };
            assert_eq!(latency.count(), h.sample_count(), "{h:?}");
            let mut decoded_below = 0u128;
            for (i, &bound) in LATENCY_BUCKETS_MICROS.iter().enumerate() {
                decoded_below += u128::from(latency.buckets[i]);
                let reported_below = h
                    .bucket
                    .iter()
                    .filter(|b| {
                        let ms = b.upper_bound();
                        ms.is_finite() && ms >= 0.0 && (ms * 1e3).round() as u64 <= bound
                    })
                    .map(|b| u128::from(b.cumulative_count()))
                    .max()
                    .unwrap_or(0);
                assert!(
                    decoded_below <= reported_below,
                    "{decoded_below} durations at or below {bound} µs, {reported_below} reported: {h:?}"
                );
            }
        }
    }
}
