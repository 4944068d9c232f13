//! `StreamMetricsMessage` → golden [`Sample`]s, keyed by meaning (sans-IO).
//!
//! Only the names of [`switchyard_proxy_config::metrics::envoy`] are decoded; anything else
//! (another name, a missing, malformed or over-long label, a negative or non-finite value, a
//! wrong type)
//! is counted in [`Decoded::ignored`] and skipped, never an error: a proxy's newer version
//! must not break the operator. A message is read up to [`MAX_FAMILIES`] metric families and
//! [`MAX_SERIES`] metrics in all; the metrics left unread are counted in
//! [`Decoded::truncated`].

use std::fmt;

use envoy_types::pb::{
    envoy::service::metrics::v3::StreamMetricsMessage,
    io::prometheus::client::{Metric, MetricFamily, MetricType},
};
use switchyard_proxy_config::metrics::{
    LATENCY_BUCKET_COUNT, LATENCY_BUCKETS_MICROS, RouteStatName, envoy,
};

/// The most metric families read from one message. Envoy sends one family per stat, and
/// every stat it uses (the bootstrap keeps them all for users who scrape `/metrics`), in
/// batches of 1,000 families (`batch_size`); the bundled proxy sends only the golden ones. The
/// 4 MiB message bound of the server limits the work before this does.
pub const MAX_FAMILIES: usize = 65_536;

/// The most metrics (series) read from one message, over all its families.
pub const MAX_SERIES: usize = 65_536;

/// The longest name a series is kept under (a cluster, `stat_prefix`, virtual host or route
/// label value), in bytes; a metric with a longer one is malformed. The mesh's names are far
/// shorter (a cluster `<namespace>/<service>|<port>` is at most 133 bytes), and the store keeps
/// a name per series: without a bound one proxy could pin megabytes of names in it.
pub const MAX_NAME_BYTES: usize = 1_024;

/// An upstream cluster's name as the proxy reports it (`envoy.cluster_name`): the xDS cluster
/// name, e.g. `demo/web|80`. Untrusted: it is whatever the proxy sent.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UpstreamCluster(Box<str>);

/// An HTTP connection manager's `stat_prefix` as the proxy reports it
/// (`envoy.http_conn_manager_prefix`), e.g. `outbound_http` or `inbound_8080`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StatPrefix(Box<str>);

macro_rules! name {
    ($ty:ident) => {
        impl $ty {
            pub fn new(name: impl Into<Box<str>>) -> Self {
                $ty(name.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

/// A virtual host's name as the proxy reports it (`envoy.virtual_host`), e.g. `inbound|8080`.
/// Untrusted.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VirtualHost(Box<str>);

name!(UpstreamCluster);
name!(StatPrefix);
name!(VirtualHost);

/// What a series is about, within one proxy.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subject {
    /// An upstream cluster (outbound to a backend, or inbound to the local application).
    Upstream(UpstreamCluster),
    /// An HTTP connection manager (a listener's HTTP chain), by `stat_prefix`.
    Listener(StatPrefix),
    /// A route counted on its own (a named match of an HTTPRouteGroup, on an inbound virtual
    /// host): a part of its cluster's requests and times. Route stats whose `stat_prefix` is
    /// not a [`RouteStatName`] are not the mesh's, and are ignored.
    Route(VirtualHost, RouteStatName),
}

/// An HTTP status class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StatusClass {
    /// 1xx.
    Informational,
    /// 2xx.
    Success,
    /// 3xx.
    Redirection,
    /// 4xx.
    ClientError,
    /// 5xx.
    ServerError,
}

impl StatusClass {
    pub const ALL: [StatusClass; 5] = [
        StatusClass::Informational,
        StatusClass::Success,
        StatusClass::Redirection,
        StatusClass::ClientError,
        StatusClass::ServerError,
    ];

    /// From Envoy's `envoy.response_code_class` label, `1` to `5`.
    pub fn from_label(digit: &str) -> Option<StatusClass> {
        Some(match digit {
            "1" => StatusClass::Informational,
            "2" => StatusClass::Success,
            "3" => StatusClass::Redirection,
            "4" => StatusClass::ClientError,
            "5" => StatusClass::ServerError,
            _ => return None,
        })
    }

    /// 0 for 1xx to 4 for 5xx.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Request durations per bucket of [`LATENCY_BUCKETS_MICROS`] (not cumulative; the last is
/// `+Inf`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Latency {
    pub buckets: [u64; LATENCY_BUCKET_COUNT],
}

impl Latency {
    /// How many durations.
    pub fn count(&self) -> u64 {
        super::window::saturating_sum(&self.buckets)
    }

    /// Counts one duration of `micros` microseconds.
    pub fn observe_micros(&mut self, micros: u64) {
        self.buckets[bucket_of(micros)] += 1;
    }
}

/// The bucket of a duration in microseconds: the first whose bound is at least it.
pub(crate) fn bucket_of(micros: u64) -> usize {
    LATENCY_BUCKETS_MICROS.partition_point(|&bound| bound < micros)
}

/// One golden value of one [`Subject`], as reported for one flush interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value {
    /// Requests answered in the interval with a status of this class.
    Requests(StatusClass, u64),
    /// Durations of the requests answered in the interval.
    Latency(Latency),
    /// Connections opened in the interval.
    ConnectionsOpened(u64),
    /// Connections open at the flush (a gauge).
    ConnectionsActive(u64),
    /// Bytes received from the subject's peer in the interval (for an upstream, from it).
    BytesReceived(u64),
    /// Bytes sent to the subject's peer in the interval.
    BytesSent(u64),
}

impl Value {
    /// Whether recording it changes nothing (a zero increase; a gauge always counts).
    pub fn is_nothing(&self) -> bool {
        match *self {
            Value::Requests(_, n)
            | Value::ConnectionsOpened(n)
            | Value::BytesReceived(n)
            | Value::BytesSent(n) => n == 0,
            Value::Latency(l) => l.count() == 0,
            Value::ConnectionsActive(_) => false,
        }
    }
}

/// One golden value and what it is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    pub subject: Subject,
    pub value: Value,
}

/// What one message decoded to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decoded {
    pub samples: Vec<Sample>,
    /// Metrics skipped: not golden, or malformed.
    pub ignored: u64,
    /// Metrics not read: those of the families after the first [`MAX_FAMILIES`], and those
    /// after the first [`MAX_SERIES`].
    pub truncated: u64,
}

/// The golden samples of `message`.
pub fn decode(message: &StreamMetricsMessage) -> Decoded {
    let mut out = Decoded::default();
    let mut budget = MAX_SERIES;
    for (i, family) in message.envoy_metrics.iter().enumerate() {
        if i >= MAX_FAMILIES {
            out.truncated += message.envoy_metrics[i..]
                .iter()
                .map(|f| f.metric.len() as u64)
                .sum::<u64>();
            break;
        }
        let take = family.metric.len().min(budget);
        out.truncated += (family.metric.len() - take) as u64;
        budget -= take;
        decode_family(family, &family.metric[..take], &mut out);
    }
    out
}

/// The kinds of golden families.
#[derive(Clone, Copy)]
enum Kind {
    UpstreamRequests,
    UpstreamTime,
    UpstreamOpened,
    UpstreamActive,
    UpstreamReceived,
    UpstreamSent,
    ListenerRequests,
    ListenerTime,
    RouteRequests,
    RouteTime,
}

impl Kind {
    fn of(family: &MetricFamily) -> Option<Kind> {
        let kind = match family.name() {
            envoy::UPSTREAM_RQ_XX => Kind::UpstreamRequests,
            envoy::UPSTREAM_RQ_TIME => Kind::UpstreamTime,
            envoy::UPSTREAM_CX_TOTAL => Kind::UpstreamOpened,
            envoy::UPSTREAM_CX_ACTIVE => Kind::UpstreamActive,
            envoy::UPSTREAM_CX_RX_BYTES_TOTAL => Kind::UpstreamReceived,
            envoy::UPSTREAM_CX_TX_BYTES_TOTAL => Kind::UpstreamSent,
            envoy::DOWNSTREAM_RQ_XX => Kind::ListenerRequests,
            envoy::DOWNSTREAM_RQ_TIME => Kind::ListenerTime,
            envoy::ROUTE_UPSTREAM_RQ_XX => Kind::RouteRequests,
            envoy::ROUTE_UPSTREAM_RQ_TIME => Kind::RouteTime,
            _ => return None,
        };
        let expected = match kind {
            Kind::UpstreamTime | Kind::ListenerTime | Kind::RouteTime => MetricType::Histogram,
            Kind::UpstreamActive => MetricType::Gauge,
            _ => MetricType::Counter,
        };
        // `type` unset reads as COUNTER (proto2 default 0).
        (family.r#type() == expected).then_some(kind)
    }

    fn subject_label(self) -> &'static str {
        match self {
            Kind::ListenerRequests | Kind::ListenerTime => envoy::HTTP_CONN_MANAGER_PREFIX,
            Kind::RouteRequests | Kind::RouteTime => envoy::VIRTUAL_HOST,
            _ => envoy::CLUSTER_NAME,
        }
    }
}

fn decode_family(family: &MetricFamily, metrics: &[Metric], out: &mut Decoded) {
    let Some(kind) = Kind::of(family) else {
        out.ignored += metrics.len() as u64;
        return;
    };
    for metric in metrics {
        match decode_metric(kind, metric) {
            Some(sample) => out.samples.push(sample),
            None => out.ignored += 1,
        }
    }
}

fn decode_metric(kind: Kind, metric: &Metric) -> Option<Sample> {
    let label = |name: &str| {
        metric
            .label
            .iter()
            .find(|l| l.name() == name)
            .map(|l| l.value())
    };
    let bounded = |n: &&str| n.len() <= MAX_NAME_BYTES;
    let name = label(kind.subject_label()).filter(|n| !n.is_empty() && bounded(n))?;
    let subject = match kind {
        Kind::ListenerRequests | Kind::ListenerTime => Subject::Listener(StatPrefix::new(name)),
        Kind::RouteRequests | Kind::RouteTime => Subject::Route(
            VirtualHost::new(name),
            RouteStatName::parse(label(envoy::ROUTE).filter(bounded)?)?,
        ),
        _ => Subject::Upstream(UpstreamCluster::new(name)),
    };
    let counter = || whole(metric.counter.as_ref()?.value?);
    let value = match kind {
        Kind::UpstreamRequests | Kind::ListenerRequests | Kind::RouteRequests => {
            let class = StatusClass::from_label(label(envoy::RESPONSE_CODE_CLASS)?)?;
            Value::Requests(class, counter()?)
        }
        Kind::UpstreamOpened => Value::ConnectionsOpened(counter()?),
        Kind::UpstreamReceived => Value::BytesReceived(counter()?),
        Kind::UpstreamSent => Value::BytesSent(counter()?),
        Kind::UpstreamActive => Value::ConnectionsActive(whole(metric.gauge.as_ref()?.value?)?),
        Kind::UpstreamTime | Kind::ListenerTime | Kind::RouteTime => {
            Value::Latency(latency(metric)?)
        }
    };
    Some(Sample { subject, value })
}

/// A count sent as a double: finite and not negative, rounded to the nearest whole number.
fn whole(value: f64) -> Option<u64> {
    (value.is_finite() && value >= 0.0).then(|| value.round() as u64)
}

/// An Envoy histogram (bounds in milliseconds, cumulative counts) into [`Latency`]. A bound
/// that is not one of [`LATENCY_BUCKETS_MICROS`] counts in the first bucket whose bound is at
/// least it (so a proxy with other bounds over-reports, never under-reports, a duration).
/// Counts that decrease along the buckets, or exceed `sample_count`, make it malformed.
fn latency(metric: &Metric) -> Option<Latency> {
    let histogram = metric.histogram.as_ref()?;
    let mut out = Latency::default();
    let mut below = 0u64;
    for bucket in &histogram.bucket {
        let bound_ms = bucket.upper_bound();
        if !bound_ms.is_finite() {
            // An explicit `+Inf` bucket: the remainder below covers it.
            continue;
        }
        if bound_ms < 0.0 {
            return None;
        }
        let cumulative = bucket.cumulative_count();
        let here = cumulative.checked_sub(below)?;
        below = cumulative;
        out.buckets[bucket_of((bound_ms * 1e3).round() as u64)] += here;
    }
    let rest = histogram.sample_count().checked_sub(below)?;
    out.buckets[LATENCY_BUCKET_COUNT - 1] += rest;
    Some(out)
}
