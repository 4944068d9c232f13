//! The metrics service client: Envoy's golden stats, pushed to the control plane over
//! `envoy.service.metrics.v3.MetricsService/StreamMetrics` every `stats_flush_interval`, as
//! Envoy's `envoy.stat_sinks.metrics_service` sink sends them (`report_counters_as_deltas`,
//! `emit_tags_as_labels`, `histogram_emit_mode: HISTOGRAM`). This module builds the messages
//! from [`Registry::golden`](crate::metrics::Registry::golden) snapshots (sans-IO);
//! [`stream`] sends them.
//!
//! # What is sent
//!
//! Every flush sends one `StreamMetricsMessage`, as Envoy: one `MetricFamily` per stat, named
//! by [`envoy`]'s constants (the tag-extracted names), holding one `Metric` whose labels are
//! the extracted tags and whose `timestamp_ms` is the flush's wall-clock time. Counters first,
//! then the gauge, then the histograms. A stat is sent from the first flush after it was first
//! used, and at every flush after that, with a zero increase if nothing happened (Envoy's
//! `used` flag, which never clears): a status class once it had a request, a histogram once it
//! had a time, a cluster's connection stats once it had a connection. The first message of a
//! stream carries the node (`identifier`), as Envoy's.
//!
//! - `cluster.upstream_rq_xx` {`envoy.cluster_name`, `envoy.response_code_class`} (counter,
//!   increase): requests routed to the cluster by the class of their answer: the cluster's
//!   response, or the proxy's own 503 or 504 when no endpoint could be picked, the connection
//!   failed or was reset before a response, or the upstream timeout expired. Envoy's router
//!   counts those in the cluster's `upstream_rq_<class>` too (`chargeUpstreamAbort`, and the
//!   503 of "no healthy upstream"). A retried attempt is not counted (Envoy counts it in
//!   `cluster.<name>.retry.upstream_rq_<class>`, another stat), only the final answer. A route
//!   to a cluster the proxy does not have counts nowhere here, as in Envoy, which has no stats
//!   for a cluster it does not know.
//! - `cluster.upstream_rq_time` {`envoy.cluster_name`} (histogram, ms): the requests the
//!   cluster answered (not the proxy's own 503/504), from the request's head to the end of the
//!   response (its last byte written to the client, or the response abandoned), recorded then
//!   (so a long response's time lands in the flush after it ends, as in Envoy).
//! - `cluster.upstream_cx_total` {`envoy.cluster_name`} (counter, increase): connections
//!   opened to the cluster's endpoints (HTTP pooled connections, TCP proxy connections),
//!   counted from the attempt, so a refused connection counts, as in Envoy.
//! - `cluster.upstream_cx_active` {`envoy.cluster_name`} (gauge): those open at the flush.
//! - `cluster.upstream_cx_rx_bytes_total`, `cluster.upstream_cx_tx_bytes_total`
//!   {`envoy.cluster_name`} (counters, increase): bytes received from and sent to the
//!   cluster's endpoints on those connections, after TLS (plaintext, as Envoy counts them),
//!   as they are read and written.
//! - `http.downstream_rq_xx` {`envoy.http_conn_manager_prefix`, `envoy.response_code_class`}
//!   (counter, increase): every response an HTTP connection manager (by `stat_prefix`) sent,
//!   its own answers (404 no route, 403 denied, 400, 431, 503, 504) included.
//! - `http.downstream_rq_time` {`envoy.http_conn_manager_prefix`} (histogram, ms): the same
//!   requests' times, from the request's head to the end of the response, as above.
//! - `vhost.route.upstream_rq_xx` {`envoy.response_code_class`, `envoy.virtual_host`,
//!   `envoy.route`} (counter, increase) and `vhost.route.upstream_rq_time` {`envoy.virtual_host`,
//!   `envoy.route`} (histogram, ms): for each route with a `stat_prefix` (`envoy.route`), what
//!   its cluster's `upstream_rq_xx` and `upstream_rq_time` count of the requests it routed.
//!
//! Histograms are Envoy's interval histograms: one bucket per bound of
//! [`latency_buckets_millis`], `cumulative_count` cumulative over the buckets but counting only
//! the requests of the flush interval, no `+Inf` bucket (`sample_count` minus the last bucket),
//! `sample_sum` in milliseconds. Times are whole milliseconds, bucketed as Envoy buckets them
//! ([`time_bucket`](crate::config::metrics::envoy::time_bucket)).
//!
//! # Where it differs from Envoy
//!
//! - Times start when the proxy has the request's head; Envoy's `downstream_rq_time` starts
//!   with the head's first byte and its `upstream_rq_time` once the whole request is received
//!   (the same for a request without a body), and ends when the cluster's response is
//!   complete rather than when it is written to the client.
//! - `sample_sum` is the exact sum of the whole milliseconds; Envoy's is circllhist's estimate
//!   (each time counted as the middle of its bin, up to 5% more).
//! - Only the mesh's clusters and connection managers are reported: the bootstrap's own
//!   clusters (ADS, this sink) and the admin and health listeners, which Envoy reports too,
//!   are not.
//! - A request whose client went away before the answer counts nowhere; Envoy counts its time
//!   in `downstream_rq_time`.
//! - Delivery: a message is taken as sent once the stream takes it. While no stream is up,
//!   flushes replace the one pending message with one that covers the increases since the last
//!   message sent, so nothing is lost or counted twice; Envoy drops a flush it could not send.
//!   A new stream sends from the first flush after it opened (up to one interval later than
//!   Envoy, which opens its stream at a flush and sends at once), so a server that refuses the
//!   stream straight away loses nothing. A message in flight when a connection breaks is lost,
//!   as Envoy's (the protocol has no acknowledgement).
//! - A request ended by the stream idle timeout (504) counts in its connection manager, not in
//!   its cluster (Envoy's router charges the cluster).
//! - `stats_config` is not read: the proxy keeps only these stats, over
//!   [`LATENCY_BUCKETS_MICROS`](crate::config::metrics::LATENCY_BUCKETS_MICROS), and sends only
//!   those whose Envoy name [`envoy::STATS_INCLUSION`] keeps, as the Envoy bootstrap's matcher
//!   does (so a cluster with a dot in its name is left out by both).
//! - A message holds at most [`MAX_MESSAGE_BYTES`], and at most the sink's `batch_size`
//!   families; clusters and connection managers that do not fit wait for the next flush (their
//!   increases carried, not lost), those waiting longest first. Envoy sends all of a flush at
//!   once, in as many messages of `batch_size` families as it takes.

#[cfg(test)]
mod tests;

pub mod stream;

use std::{
    collections::HashMap,
    time::{Duration, SystemTime},
};

use envoy_types::pb::{
    envoy::{
        config::core::v3::Node,
        service::metrics::v3::{StreamMetricsMessage, stream_metrics_message::Identifier},
    },
    io::prometheus::client::{
        Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
    },
};
use prost::Message as _;

use crate::{
    config::metrics::{envoy, latency_buckets_millis},
    metrics::{
        GoldenSnapshot, HttpManagerValues, RouteKey, RouteValues, TimesValues, UpstreamValues,
    },
};

/// The most a message may encode to: 1 MiB, a quarter of gRPC's usual 4 MiB limit on what a
/// server reads (tonic's and grpc-go's default), which leaves room for the node. About 5,000
/// series (a cluster has up to 10, a connection manager up to 6).
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// Room kept for the node (`identifier`) and the message's own framing.
const RESERVED_BYTES: usize = 16 * 1024;

/// `stats_flush_interval` when the bootstrap has none: Envoy's default.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(5);

/// The status classes' digits, as `envoy.response_code_class` carries them.
const CLASSES: [&str; 5] = ["1", "2", "3", "4", "5"];

/// What a series is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Subject {
    Upstream(String),
    HttpManager(String),
    /// A route with a `stat_prefix`: its virtual host and `stat_prefix`.
    Route(RouteKey),
}

/// The flushes of one proxy: what was sent so far, from which each flush's increases follow.
#[derive(Debug)]
pub struct Flusher {
    node: Node,
    /// [`envoy::STATS_INCLUSION`]: the stats an Envoy with the contract's bootstrap keeps.
    included: regex::RegexSet,
    /// The values the last message sent covered, per subject.
    sent: GoldenSnapshot,
    /// Per subject, the flush that last sent it: who waits longest goes first when a message
    /// is full.
    sent_at: HashMap<Subject, u64>,
    flushes: u64,
    /// The most families in one message (the sink's `batch_size`).
    max_families: usize,
}

/// One message, and the values it covers: once sent, [`Flusher::sent`] takes them.
#[derive(Clone, Debug)]
pub struct Flush {
    pub message: StreamMetricsMessage,
    covers: GoldenSnapshot,
    /// Subjects left out for the size limit.
    pub left_out: usize,
}

/// The families of one subject, by kind (the message puts kinds in Envoy's order).
#[derive(Default)]
struct Families {
    counters: Vec<MetricFamily>,
    gauges: Vec<MetricFamily>,
    histograms: Vec<MetricFamily>,
}

impl Families {
    fn len(&self) -> usize {
        self.counters.len() + self.gauges.len() + self.histograms.len()
    }

    fn encoded_len(&self) -> usize {
        // A family's field tag and length prefix: at most 4 bytes for these sizes.
        [&self.counters, &self.gauges, &self.histograms]
            .into_iter()
            .flatten()
            .map(|f| f.encoded_len() + 4)
            .sum()
    }
}

// === impl Flusher ===

impl Flusher {
    /// A flusher for `node`, which the first message of every stream carries.
    pub fn new(node: Node) -> Self {
        Flusher {
            node,
            // Constant patterns, checked by the tests; a failure would leave every stat out.
            included: regex::RegexSet::new(envoy::STATS_INCLUSION)
                .unwrap_or_else(|_| regex::RegexSet::empty()),
            sent: GoldenSnapshot::default(),
            sent_at: HashMap::new(),
            flushes: 0,
            max_families: usize::MAX,
        }
    }

    /// At most `families` metric families in one message (the sink's `batch_size`); the
    /// subjects that do not fit wait for the next flush, as for the size bound.
    pub fn with_batch_size(mut self, families: Option<usize>) -> Self {
        self.max_families = families.unwrap_or(usize::MAX);
        self
    }

    /// The message for `now`, with the increases since the last message sent; `at` is its
    /// wall-clock time. Nothing changes until it is [`sent`](Flusher::sent).
    pub fn flush(&self, now: &GoldenSnapshot, at: SystemTime) -> Flush {
        let timestamp_ms = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let mut subjects: Vec<Subject> = now
            .upstreams
            .keys()
            .map(|name| Subject::Upstream(name.clone()))
            .chain(
                now.http_managers
                    .keys()
                    .map(|prefix| Subject::HttpManager(prefix.clone())),
            )
            .chain(now.routes.keys().map(|key| Subject::Route(key.clone())))
            .filter(|subject| self.includes(subject))
            .collect();
        // Never sent (0) first, then those sent longest ago; by name within.
        subjects.sort_by_key(|s| self.sent_at.get(s).copied().unwrap_or(0));

        let mut all = Families::default();
        let mut covers = GoldenSnapshot::default();
        let mut room = MAX_MESSAGE_BYTES - RESERVED_BYTES;
        let mut left_out = 0;
        for subject in subjects {
            let families = match &subject {
                Subject::Upstream(name) => {
                    let values = now.upstreams[name];
                    let base = self.sent.upstreams.get(name).copied().unwrap_or_default();
                    upstream_families(name, &values, &base, timestamp_ms)
                }
                Subject::HttpManager(prefix) => {
                    let values = now.http_managers[prefix];
                    let base = self
                        .sent
                        .http_managers
                        .get(prefix)
                        .copied()
                        .unwrap_or_default();
                    http_manager_families(prefix, &values, &base, timestamp_ms)
                }
                Subject::Route(key) => {
                    let values = now.routes[key];
                    let base = self.sent.routes.get(key).copied().unwrap_or_default();
                    route_families(key, &values, &base, timestamp_ms)
                }
            };
            let len = families.encoded_len();
            let count = all.len() + families.len();
            if len > room || count > self.max_families {
                left_out += 1;
                continue;
            }
            room -= len;
            match subject {
                Subject::Upstream(name) => {
                    covers.upstreams.insert(name.clone(), now.upstreams[&name]);
                }
                Subject::HttpManager(prefix) => {
                    covers
                        .http_managers
                        .insert(prefix.clone(), now.http_managers[&prefix]);
                }
                Subject::Route(key) => {
                    covers.routes.insert(key.clone(), now.routes[&key]);
                }
            }
            all.counters.extend(families.counters);
            all.gauges.extend(families.gauges);
            all.histograms.extend(families.histograms);
        }
        let mut envoy_metrics = all.counters;
        envoy_metrics.extend(all.gauges);
        envoy_metrics.extend(all.histograms);
        Flush {
            message: StreamMetricsMessage {
                identifier: None,
                envoy_metrics,
            },
            covers,
            left_out,
        }
    }

    /// `flush` was sent: its values are the base of the next increases.
    pub fn sent(&mut self, flush: &Flush) {
        self.flushes += 1;
        for (name, values) in &flush.covers.upstreams {
            self.sent.upstreams.insert(name.clone(), *values);
            self.sent_at
                .insert(Subject::Upstream(name.clone()), self.flushes);
        }
        for (prefix, values) in &flush.covers.http_managers {
            self.sent.http_managers.insert(prefix.clone(), *values);
            self.sent_at
                .insert(Subject::HttpManager(prefix.clone()), self.flushes);
        }
        for (key, values) in &flush.covers.routes {
            self.sent.routes.insert(key.clone(), *values);
            self.sent_at
                .insert(Subject::Route(key.clone()), self.flushes);
        }
    }

    /// Whether Envoy's matcher keeps the subject's stats: its name is one segment of a stat
    /// name (no dot), which every golden stat of it then shares.
    fn includes(&self, subject: &Subject) -> bool {
        let name = match subject {
            Subject::Upstream(name) => format!("cluster.{name}.upstream_rq_time"),
            Subject::HttpManager(prefix) => format!("http.{prefix}.downstream_rq_time"),
            Subject::Route((vhost, prefix)) => {
                format!("vhost.{vhost}.route.{prefix}.upstream_rq_time")
            }
        };
        self.included.is_match(&name)
    }

    /// The identifier the first message of a stream carries.
    pub fn identifier(&self) -> Identifier {
        Identifier {
            node: Some(self.node.clone()),
        }
    }
}

fn upstream_families(
    name: &str,
    now: &UpstreamValues,
    base: &UpstreamValues,
    timestamp_ms: i64,
) -> Families {
    let cluster = || label(envoy::CLUSTER_NAME, name);
    let mut out = Families::default();
    out.counters.extend(request_counters(
        envoy::UPSTREAM_RQ_XX,
        cluster,
        &now.requests,
        &base.requests,
        timestamp_ms,
    ));
    for (stat, now, base) in [
        (envoy::UPSTREAM_CX_TOTAL, now.cx_opened, base.cx_opened),
        (
            envoy::UPSTREAM_CX_RX_BYTES_TOTAL,
            now.rx_bytes,
            base.rx_bytes,
        ),
        (
            envoy::UPSTREAM_CX_TX_BYTES_TOTAL,
            now.tx_bytes,
            base.tx_bytes,
        ),
    ] {
        if now > 0 {
            out.counters.push(counter(
                stat,
                vec![cluster()],
                now.saturating_sub(base),
                timestamp_ms,
            ));
        }
    }
    // The gauge is used from the cluster's first connection.
    if now.cx_opened > 0 {
        out.gauges.push(family(
            envoy::UPSTREAM_CX_ACTIVE,
            MetricType::Gauge,
            Metric {
                label: vec![cluster()],
                gauge: Some(Gauge {
                    value: Some(now.cx_active.max(0) as f64),
                }),
                timestamp_ms: Some(timestamp_ms),
                ..Default::default()
            },
        ));
    }
    out.histograms.extend(histogram(
        envoy::UPSTREAM_RQ_TIME,
        vec![cluster()],
        &now.times,
        &base.times,
        timestamp_ms,
    ));
    out
}

fn http_manager_families(
    prefix: &str,
    now: &HttpManagerValues,
    base: &HttpManagerValues,
    timestamp_ms: i64,
) -> Families {
    let manager = || label(envoy::HTTP_CONN_MANAGER_PREFIX, prefix);
    let mut out = Families::default();
    out.counters.extend(request_counters(
        envoy::DOWNSTREAM_RQ_XX,
        manager,
        &now.requests,
        &base.requests,
        timestamp_ms,
    ));
    out.histograms.extend(histogram(
        envoy::DOWNSTREAM_RQ_TIME,
        vec![manager()],
        &now.times,
        &base.times,
        timestamp_ms,
    ));
    out
}

fn route_families(
    (vhost, prefix): &RouteKey,
    now: &RouteValues,
    base: &RouteValues,
    timestamp_ms: i64,
) -> Families {
    // Envoy's order: the virtual host, then the route (after the class for the counters).
    let labels = || {
        vec![
            label(envoy::VIRTUAL_HOST, vhost),
            label(envoy::ROUTE, prefix),
        ]
    };
    let mut out = Families::default();
    out.counters
        .extend((0..5).filter(|&i| now.requests[i] > 0).map(|i| {
            let mut with_class = vec![label(envoy::RESPONSE_CODE_CLASS, CLASSES[i])];
            with_class.extend(labels());
            counter(
                envoy::ROUTE_UPSTREAM_RQ_XX,
                with_class,
                now.requests[i].saturating_sub(base.requests[i]),
                timestamp_ms,
            )
        }));
    out.histograms.extend(histogram(
        envoy::ROUTE_UPSTREAM_RQ_TIME,
        labels(),
        &now.times,
        &base.times,
        timestamp_ms,
    ));
    out
}

/// One counter per status class that has had a request.
fn request_counters(
    stat: &str,
    subject: impl Fn() -> LabelPair,
    now: &[u64; 5],
    base: &[u64; 5],
    timestamp_ms: i64,
) -> Vec<MetricFamily> {
    (0..5)
        .filter(|&i| now[i] > 0)
        .map(|i| {
            // Envoy's order: the class, then the subject.
            let labels = vec![label(envoy::RESPONSE_CODE_CLASS, CLASSES[i]), subject()];
            counter(stat, labels, now[i].saturating_sub(base[i]), timestamp_ms)
        })
        .collect()
}

fn counter(stat: &str, labels: Vec<LabelPair>, increase: u64, timestamp_ms: i64) -> MetricFamily {
    family(
        stat,
        MetricType::Counter,
        Metric {
            label: labels,
            counter: Some(Counter {
                value: Some(increase as f64),
                ..Default::default()
            }),
            timestamp_ms: Some(timestamp_ms),
            ..Default::default()
        },
    )
}

/// The interval histogram of the times since `base`, once there has been a time.
fn histogram(
    stat: &str,
    labels: Vec<LabelPair>,
    now: &TimesValues,
    base: &TimesValues,
    timestamp_ms: i64,
) -> Option<MetricFamily> {
    if now.count() == 0 {
        return None;
    }
    let mut cumulative = 0u64;
    let bucket = latency_buckets_millis()
        .zip(now.buckets.iter().zip(&base.buckets))
        .map(|(bound, (now, base))| {
            cumulative += now.saturating_sub(*base);
            Bucket {
                cumulative_count: Some(cumulative),
                upper_bound: Some(bound),
                ..Default::default()
            }
        })
        .collect();
    let count = now.count().saturating_sub(base.count());
    let sum = now.sum_millis.saturating_sub(base.sum_millis);
    Some(family(
        stat,
        MetricType::Histogram,
        Metric {
            label: labels,
            histogram: Some(Histogram {
                sample_count: Some(count),
                sample_sum: Some(sum as f64),
                bucket,
                ..Default::default()
            }),
            timestamp_ms: Some(timestamp_ms),
            ..Default::default()
        },
    ))
}

fn family(name: &str, kind: MetricType, metric: Metric) -> MetricFamily {
    MetricFamily {
        name: Some(name.to_owned()),
        r#type: Some(kind as i32),
        metric: vec![metric],
        ..Default::default()
    }
}

fn label(name: &str, value: &str) -> LabelPair {
    LabelPair {
        name: Some(name.to_owned()),
        value: Some(value.to_owned()),
    }
}
